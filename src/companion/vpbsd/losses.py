"""The VpbSD objectives: teacher pretraining (Eqs. 4-6), teacher fine-tuning (Eq. 7) and the student's semi-supervised
distillation loss (Eqs. 10-12), with the ramp-up of beta.

Paper facts
    * L_pre = MSE(X, X') + alpha L_cb, alpha = 0.1 (Eq. 4-5; Eq. 6 then writes mean |x_i - y_i|, an L1 -- we follow
      the text and Eq. 5: MSE).
    * L_seg^T: the Dice loss (Eq. 7 prints the Dice coefficient; as a loss it is 1 - Dice).
    * L_stu = DICE(Y_stu, Y_gt) + beta DICE(Y_stu, Y_pse) + gamma L1(Z_stu, Z'_tea), gamma = 1; beta follows "a
      commonly employed warming-up function [47]" (Laine & Aila 2017, temporal ensembling), the Gaussian ramp
      exp(-5 (1 - t/T)^2) also used by Mean Teacher (Tarvainen & Valpola 2017) and UA-MT (Yu et al. 2019).
    * The ground-truth term uses the labeled volumes, the pseudo-label term the unlabeled ones; the distillation
      term compares the student's deepest features with the teacher's codebook output.

Our choices
    * Dice = MONAI ``DiceLoss`` (sigmoid for one output channel, softmax + one-hot-free targets for several), mean
      over items and channels.  Items of a batch are split by a ``labeled`` mask: Y_gt on labeled items, Y_pse on
      the others; the distillation term on every item.  A term whose weight is 0 (or whose items are absent) is
      skipped and reported as 0.
    * beta's maximum and ramp length are not given; both are parameters (``beta_max`` defaults to 1).
    * Fine-tuning the teacher uses the Dice loss alone (Eq. 7), as the paper writes: no codebook term.
    * Spatial mismatch of Z_stu and Z'_tea: SwinUNETR's codebook map is at 1/32 of the input per axis, the student's
      bottleneck at 1/16 (default student).  The paper does not say how it matches them.  We upsample Z'_tea with
      *nearest* neighbours to Z_stu's grid (each student voxel must reproduce the code of the teacher token whose
      block contains it; nearest keeps every target a codebook vector, trilinear would blend codes); the factor
      must be an integer, else a ``ValueError`` says to choose patch sizes divisible by 32.  ``resize="pool"``
      instead average-pools Z_stu down to the teacher's grid; ``resize="none"`` demands equal shapes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALPHA = 0.1  # paper, Section 4.1.3
GAMMA = 1.0  # paper, Section 4.1.3
RESIZE = ("nearest", "pool", "none")


def sigmoid_rampup(step: float, length: float) -> float:
    """exp(-5 (1 - t/T)^2) for 0 <= t < T, 1 from T on (Laine & Aila 2017; Mean Teacher; UA-MT).

    0 at t = 0 would be exact only in the limit: the ramp starts at exp(-5) ~ 0.0067."""
    if length <= 0:
        return 1.0
    p = min(max(step / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - p) ** 2))


def beta_at(step: float, length: float, beta_max: float = 1.0) -> float:
    """beta(t) = beta_max * sigmoid_rampup(t, T)."""
    return beta_max * sigmoid_rampup(step, length)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice (MONAI ``DiceLoss``): sigmoid for one channel, softmax for several (``target`` one-hot)."""
    from monai.losses import DiceLoss

    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    if logits.shape[1] == 1:
        return DiceLoss(sigmoid=True)(logits, target)
    return DiceLoss(softmax=True)(logits, target)


def finetune_loss(logits: torch.Tensor, y_gt: torch.Tensor) -> torch.Tensor:
    """L_seg^T (Eq. 7) as a loss: 1 - Dice(Y_tea, Y_gt)."""
    return dice_loss(logits, y_gt)


def pretrain_loss(recon: torch.Tensor, x: torch.Tensor, cb_loss: torch.Tensor,
                  alpha: float = ALPHA) -> tuple[torch.Tensor, dict[str, float]]:
    """L_pre^T = MSE(X, X') + alpha L_cb^T (Eqs. 4-5)."""
    if recon.shape != x.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and input {tuple(x.shape)} differ")
    rec = F.mse_loss(recon, x)
    loss = rec + alpha * cb_loss
    return loss, {"loss": float(loss.detach()), "rec": float(rec.detach()), "cb": float(cb_loss.detach())}


def match_codes(z_stu: torch.Tensor, z_tea: torch.Tensor, resize: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring Z_stu and Z'_tea to one grid (see the module docstring); returns the pair to compare."""
    if resize not in RESIZE:
        raise ValueError(f"resize must be one of {RESIZE}, got {resize!r}")
    if z_stu.shape[:2] != z_tea.shape[:2]:
        raise ValueError(f"Z_stu {tuple(z_stu.shape)} and Z'_tea {tuple(z_tea.shape)} differ in batch or channels: "
                         "the student's last width (channels[-1]) must equal the codebook's code_dim M")
    s, t = tuple(z_stu.shape[2:]), tuple(z_tea.shape[2:])
    if s == t:
        return z_stu, z_tea
    if resize == "none" or any(a % b for a, b in zip(s, t)):
        raise ValueError(f"Z_stu grid {s} is not an integer multiple of Z'_tea grid {t} (resize={resize!r}); "
                         "use patch sizes divisible by 32 so the teacher (1/32) and student (1/16) grids nest")
    if resize == "nearest":
        return z_stu, F.interpolate(z_tea, size=s, mode="nearest")
    return F.avg_pool3d(z_stu, kernel_size=tuple(a // b for a, b in zip(s, t))), z_tea


def distillation_loss(z_stu: torch.Tensor, z_tea: torch.Tensor, resize: str = "nearest") -> torch.Tensor:
    """L_dis^S = L1(Z_stu, Z'_tea) (mean absolute error); the teacher side carries no gradient."""
    a, b = match_codes(z_stu, z_tea.detach(), resize)
    return F.l1_loss(a, b)


def student_loss(logits: torch.Tensor, z_stu: torch.Tensor, *, y_gt: torch.Tensor | None = None,
                 y_pse: torch.Tensor | None = None, z_tea: torch.Tensor | None = None,
                 labeled: torch.Tensor | None = None, beta: float = 0.0, gamma: float = GAMMA,
                 resize: str = "nearest") -> tuple[torch.Tensor, dict[str, float]]:
    """L_stu = Dice(Y_stu, Y_gt) + beta Dice(Y_stu, Y_pse) + gamma L1(Z_stu, Z'_tea) (Eqs. 10-12).

    ``labeled``: bool (B,), which items have ground truth; default: all items if ``y_gt`` is given, none otherwise.
    ``y_gt`` and ``y_pse`` cover the whole batch (entries of the items a term does not use are ignored)."""
    b = logits.shape[0]
    if labeled is None:
        labeled = torch.full((b,), y_gt is not None, dtype=torch.bool, device=logits.device)
    labeled = labeled.to(device=logits.device, dtype=torch.bool)
    if labeled.shape != (b,):
        raise ValueError(f"labeled must have shape ({b},), got {tuple(labeled.shape)}")
    zero = logits.new_zeros(())
    seg = semi = dis = zero
    if labeled.any():
        if y_gt is None:
            raise ValueError("labeled items but no y_gt")
        seg = dice_loss(logits[labeled], y_gt[labeled])
    if beta and (~labeled).any():
        if y_pse is None:
            raise ValueError("beta > 0 and unlabeled items but no y_pse (teacher pseudo labels)")
        semi = dice_loss(logits[~labeled], y_pse[~labeled])
    if gamma:
        if z_tea is None:
            raise ValueError("gamma > 0 but no z_tea (teacher codes)")
        dis = distillation_loss(z_stu, z_tea, resize)
    loss = seg + beta * semi + gamma * dis
    return loss, {"loss": float(loss.detach()), "seg": float(seg.detach()), "semi": float(semi.detach()),
                  "dis": float(dis.detach()), "beta": float(beta), "labeled": int(labeled.sum())}
