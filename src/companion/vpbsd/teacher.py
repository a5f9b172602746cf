"""The VpbSD teacher: MONAI's SwinUNETR with the vessel-pattern codebook at its deepest feature map (paper
Sections 3.3-3.4 and 4.1.2).

Paper facts
    * Teacher: a "modified Swin UNETR" (self-attention encoder, CNN decoder), first pretrained self-supervised on
      unlabeled volumes to reconstruct its input, L_pre = MSE(X, X') + alpha L_cb with alpha = 0.1 (Eqs. 4-6), then
      fine-tuned on the labeled volumes with the Dice loss (Eq. 7).  The codebook sits between encoder and decoder.
    * The codebook's output Z'_tea (M = d_s channels) is what the student distils from (Eq. 12); the fine-tuned
      teacher also provides the pseudo labels of the unlabeled volumes (Eq. 11).

Our choices
    * "Deepest feature map" = the output of SwinUNETR's ``encoder10`` (the residual block on the last Swin stage,
      16 x feature_size channels at 1/32 of the input per axis), i.e. the ``dec4`` that feeds ``decoder5``.  We do not
      copy MONAI's forward: a forward hook on ``encoder10`` replaces its output by the codebook's output, so the
      codebook is the only way from the bottleneck to the decoder (the skip connections of the shallower stages
      still bypass it, as they do in the paper's Fig. 3 sketch of an encoder-decoder with skips).
    * One trunk, two 1x1x1 output heads (MONAI's ``UnetOutBlock``, as in SwinUNETR): ``"reconstruct"`` (linear
      output, ``in_channels`` channels) for pretraining and ``"segment"`` (``seg_channels`` logits) for fine-tuning;
      ``teacher.mode`` picks one.  The codebook stays in place in both modes.
    * Pseudo labels are hard: sigmoid > 0.5 for one channel, arg-max one-hot for several.
    * Size constraints (MONAI): every spatial size must be divisible by 2**5 = 32, and the instance norms of the
      bottleneck block need more than one voxel at 1/32 -- in eval mode too -- so 32^3 fails and 64 x 32 x 32 is
      the smallest input.  The codebook sees a 2^3 map per 64^3 patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .codebook import COMMITMENT, CodebookOutput, VesselPatternCodebook

MODES = ("reconstruct", "segment")


@dataclass
class TeacherOutput:
    #: reconstruction X' (mode "reconstruct") or segmentation logits (mode "segment")
    out: torch.Tensor
    #: the codebook's pass: ``codebook.codes`` is Z'_tea, ``codebook.loss`` is L_cb (Eq. 9)
    codebook: CodebookOutput
    #: the deepest features before the codebook (encoder10's output, d_t channels at 1/32): what plain
    #: feature distillation (FitNets, VID, AB, the ablation's L_mid) imitates
    features: torch.Tensor


class VpbTeacher(nn.Module):
    """SwinUNETR + vessel-pattern codebook.  ``forward(x)`` -> :class:`TeacherOutput`; ``codes(x)`` -> Z'_tea only
    (encoder and codebook, no decoder)."""

    def __init__(self, in_channels: int = 1, seg_channels: int = 1, feature_size: int = 48, code_dim: int = 64,
                 n_codes: int = 512, tau: float = 1.0, commitment: float = COMMITMENT, mode: str = "reconstruct",
                 **swin_kwargs):
        super().__init__()
        from monai.networks.blocks.dynunet_block import UnetOutBlock
        from monai.networks.nets import SwinUNETR

        self.in_channels, self.feature_size, self.code_dim = in_channels, feature_size, code_dim
        self.swin = SwinUNETR(in_channels=in_channels, out_channels=in_channels, feature_size=feature_size,
                              spatial_dims=3, **swin_kwargs)
        self.swin.out = nn.Identity()  # the heads below take the decoder's feature_size channels
        self.heads = nn.ModuleDict({
            "reconstruct": UnetOutBlock(spatial_dims=3, in_channels=feature_size, out_channels=in_channels),
            "segment": UnetOutBlock(spatial_dims=3, in_channels=feature_size, out_channels=seg_channels),
        })
        self.codebook = VesselPatternCodebook(16 * feature_size, code_dim, n_codes, tau=tau, commitment=commitment)
        self.swin.encoder10.register_forward_hook(self._quantise)
        self._pass: CodebookOutput | None = None
        self._features: torch.Tensor | None = None
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value

    @property
    def bottleneck_channels(self) -> int:
        """d_t: channels of the feature map the codebook quantises."""
        return 16 * self.feature_size

    def _quantise(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        self._pass, self._features = self.codebook(output), output
        return self._pass.out

    def _take_pass(self) -> CodebookOutput:
        cb, self._pass = self._pass, None
        if cb is None:
            raise RuntimeError("the codebook hook did not run (was encoder10 bypassed?)")
        return cb

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        features = self.swin(x)  # MONAI's forward; the hook swaps encoder10's output for the codebook's
        out = self.heads[self.mode](features)
        deep, self._features = self._features, None
        return TeacherOutput(out=out, codebook=self._take_pass(), features=deep)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Z'_tea (B, M, D/32, H/32, W/32): the selected codes for ``x``, without running the decoder."""
        self.swin._check_input_size(x.shape[2:])
        hidden = self.swin.swinViT(x, self.swin.normalize)
        self.swin.encoder10(hidden[-1])
        self._features = None
        return self._take_pass().codes

    @torch.no_grad()
    def distillation_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hard pseudo labels Y_pse, Z'_tea) for ``x`` from one segment-mode pass (call on a frozen, ``eval()``
        teacher so the codes are the deterministic nearest ones)."""
        mode, self.mode = self.mode, "segment"
        try:
            res = self(x)
        finally:
            self.mode = mode
        return pseudo_labels(res.out), res.codebook.codes


def pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    """Hard labels from segmentation logits: sigmoid > 0.5 for one channel, one-hot arg-max for several."""
    if logits.shape[1] == 1:
        return (logits > 0).to(logits.dtype)
    return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).movedim(-1, 1).to(logits.dtype)


def freeze(model: nn.Module) -> nn.Module:
    """The distillation stage's teacher: every parameter frozen, eval mode (paper: "we freeze all parameters")."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
