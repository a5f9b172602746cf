"""The vessel-pattern codebook of VpbSD (paper Section 3.4, Eqs. 8-9), inserted between the teacher's encoder and
decoder.

Paper facts
    * The teacher's deepest features z (d_t channels) are mapped by a *dimension alignment* DA to the width of the
      student's deepest layer, d_s = M (d_t >> d_s); DA is a 1x1(x1) convolution (the paper tried linear projection,
      1x1 convolution and channel selection and kept the convolution).
    * The codebook holds N vectors of M dimensions.  Selection uses Gumbel-softmax over the distances
      ||DA(z_i) - v_j||_2 (Eq. 8, following vq-wav2vec to fight codebook collapse).
    * Codebook loss (Eq. 9), VQ-VAE style with stop-gradients:
      L_cb = ||sg[DA(z)] - z'||^2 + lambda * ||DA(z) - sg[z']||^2.
    * The codebook output z' (M channels) is the distillation target Z'_tea of the student (Eq. 12).

Our choices (the paper does not say)
    * Logits are the *negative* distances (the nearest code is the most probable); the distance is the plain L2 norm
      of Eq. 8, not its square.  Temperature ``tau`` (default 1, vq-wav2vec anneals 2 -> 0.5) is an attribute.
    * Straight-through: the forward pass uses the hard one-hot (``F.gumbel_softmax(hard=True)``), the backward pass
      the soft probabilities.  In ``eval()`` mode there is no Gumbel noise: the nearest code (argmax of the logits)
      is taken, so evaluation and distillation targets are deterministic.
    * Eq. 8 multiplies the selection by "DA(V)"; we read it as: the selected M-dim code is aligned *back up* to d_t
      channels by a second 1x1x1 convolution (``up``) before the decoder, so the decoder keeps its original width.
    * In Eq. 9 z' is the selected code vector itself (the hard selection, no gradient through the Gumbel choice),
      squared errors averaged over voxels and channels (``F.mse_loss``).  The paper gives no lambda; we use
      VQ-VAE's commitment weight 0.25.
    * Usage statistics: per-code counts of the hard selections and perplexity = exp(entropy of the average
      assignment), i.e. the effective number of codes in use (k for uniform use of k codes, 1 for collapse).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: VQ-VAE's commitment weight (van den Oord et al. 2017); the paper's lambda is not given
COMMITMENT = 0.25


@dataclass
class CodebookOutput:
    """What one pass through the codebook returns (all tensors channel-first, spatial size of the input)."""

    #: the decoder's input: the selected codes aligned back up to d_t channels (B, d_t, ...)
    out: torch.Tensor
    #: z' = the selected codes, straight-through (B, M, ...); the student's distillation target Z'_tea
    codes: torch.Tensor
    #: DA(z), the teacher's features aligned down to M channels, before quantisation (B, M, ...)
    aligned: torch.Tensor
    #: index of the selected code per voxel (B, ...)
    indices: torch.Tensor
    #: Eq. 9 (scalar)
    loss: torch.Tensor


def codebook_loss(aligned: torch.Tensor, selected: torch.Tensor, commitment: float = COMMITMENT) -> torch.Tensor:
    """Eq. 9: ||sg[DA(z)] - z'||^2 + lambda ||DA(z) - sg[z']||^2, each a mean over all elements.

    The first term moves the codes towards the encoder's (aligned) output, the second commits the encoder to the
    codes.  ``selected`` must be the hard-selected code vectors (same shape as ``aligned``).
    """
    if aligned.shape != selected.shape:
        raise ValueError(f"aligned {tuple(aligned.shape)} and selected codes {tuple(selected.shape)} differ")
    return F.mse_loss(selected, aligned.detach()) + commitment * F.mse_loss(aligned, selected.detach())


def perplexity(probs: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of an average assignment ``probs`` (..., N), summing to 1 over the last axis; 0 log 0 = 0."""
    p = probs / probs.sum(dim=-1, keepdim=True)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)
    return entropy.exp()


def code_usage(indices: torch.Tensor, n_codes: int) -> dict[str, torch.Tensor | float]:
    """Per-code counts of the selections ``indices`` (any shape), their frequencies, the perplexity of the average
    (hard) assignment and the number of codes used at least once."""
    counts = torch.bincount(indices.reshape(-1).long(), minlength=n_codes)
    freq = counts.float() / max(int(counts.sum()), 1)
    return {"counts": counts, "freq": freq, "perplexity": float(perplexity(freq)), "used": int((counts > 0).sum())}


class VesselPatternCodebook(nn.Module):
    """DA_down (1x1x1 conv d_t -> M) -> Gumbel-softmax choice among N codes -> DA_up (1x1x1 conv M -> d_t).

    ``forward(z)`` takes channel-first features of any spatial rank (B, d_t, ...) and returns a
    :class:`CodebookOutput`.
    """

    def __init__(self, in_channels: int, code_dim: int, n_codes: int = 512, tau: float = 1.0,
                 commitment: float = COMMITMENT, spatial_dims: int = 3):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.in_channels, self.code_dim, self.n_codes = in_channels, code_dim, n_codes
        self.tau, self.commitment = tau, commitment
        self.down = conv(in_channels, code_dim, kernel_size=1)
        self.up = conv(code_dim, in_channels, kernel_size=1)
        self.embedding = nn.Parameter(torch.empty(n_codes, code_dim))
        nn.init.uniform_(self.embedding, -1.0 / n_codes, 1.0 / n_codes)  # VQ-VAE's initialisation

    def logits(self, aligned_flat: torch.Tensor) -> torch.Tensor:
        """-||DA(z_i) - v_j||_2 for every row i of (P, M) and code j: (P, N)."""
        d2 = (aligned_flat.pow(2).sum(1, keepdim=True) - 2.0 * aligned_flat @ self.embedding.t()
              + self.embedding.pow(2).sum(1)[None])
        return -d2.clamp_min(1e-12).sqrt()

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """One-hot (P, N): Gumbel-softmax straight-through when training, plain argmax in eval mode."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
        return F.one_hot(logits.argmax(dim=-1), self.n_codes).to(logits.dtype)

    def forward(self, z: torch.Tensor) -> CodebookOutput:
        if z.shape[1] != self.in_channels:
            raise ValueError(f"codebook expects {self.in_channels} channels, got {z.shape[1]} ({tuple(z.shape)})")
        aligned = self.down(z)
        b, m, *spatial = aligned.shape
        flat = aligned.movedim(1, -1).reshape(-1, m)
        onehot = self.select(self.logits(flat))
        indices = onehot.argmax(dim=-1)
        codes_flat = onehot @ self.embedding  # forward: the selected code; backward: through the soft probabilities
        loss = codebook_loss(flat, self.embedding[indices], self.commitment)

        def grid(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, *spatial, -1).movedim(-1, 1)

        codes = grid(codes_flat)
        return CodebookOutput(out=self.up(codes), codes=codes, aligned=aligned,
                              indices=indices.reshape(b, *spatial), loss=loss)
