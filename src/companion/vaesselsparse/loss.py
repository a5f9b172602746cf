"""The VAEsselSparse training objective (paper Eqs. 5-6) and the dense baseline's.

Eq. 5: L = L_rec + beta * KL(q(z|x) || N(0, I)).
Eq. 6: L_rec is the binary cross-entropy over the *union* of the ground-truth active voxels and the voxels the
sparse decoder evaluated, never over the full grid.  A ground-truth voxel the decoder did not evaluate counts as
predicted empty (a fixed logit of ``MISSED_LOGIT``; with teacher forcing this never happens in training).

``support="gt"`` supervises only the ground-truth voxels -- the broken variant of the chapter's exercise: every
label is 1, nothing teaches the decoder to leave a voxel empty.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..sparse import SparseTensor
from ..sparse.tensor import coarsen, contains

MISSED_LOGIT = -10.0
SUPPORTS = ("union", "gt")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent channels, averaged over latent positions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1).mean()


def union_bce(logits: SparseTensor, target: SparseTensor, support: str = "union") -> tuple[torch.Tensor, dict]:
    """BCE over V_gt ∪ V_dec (Eq. 6).  ``logits``: one logit per evaluated voxel; ``target``: ground-truth voxels."""
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    shape = target.spatial_shape
    labels = contains(target.coords, logits.coords, shape).float()
    x = logits.feats[:, 0]
    missed = ~contains(logits.coords, target.coords, shape)  # ground truth the decoder never evaluated
    n_missed = int(missed.sum())
    if support == "gt":
        x, labels = x[labels > 0], labels[labels > 0]
    x = torch.cat([x, x.new_full((n_missed,), MISSED_LOGIT)])
    labels = torch.cat([labels, labels.new_ones(n_missed)])
    if x.numel() == 0:
        return logits.feats.sum() * 0.0, {"evaluated": 0, "missed": 0}
    return F.binary_cross_entropy_with_logits(x, labels), {"evaluated": int(logits.n), "missed": n_missed}


def sparse_vae_loss(out: dict[str, Any], target: SparseTensor, beta: float, support: str = "union",
                    level_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 5 with the Eq. 6 reconstruction term, plus the BCE of every pruning head (labels: the ground truth at
    that resolution, over all voxels the level created)."""
    rec, info = union_bce(out["logits"], target, support)
    level = rec.new_zeros(())
    for coords, logits, stride in out["levels"]:
        lab = contains(coarsen(target.coords, stride, target.spatial_shape), coords, target.spatial_shape).float()
        if support == "gt":
            logits, lab = logits[lab > 0], lab[lab > 0]
        if logits.numel():
            level = level + F.binary_cross_entropy_with_logits(logits, lab) / len(out["levels"])
    kl = kl_divergence(out["mu"].feats, out["logvar"].feats)
    loss = rec + level_weight * level + beta * kl
    return loss, {"loss": float(loss.detach()), "bce": float(rec.detach()), "level_bce": float(level.detach()),
                  "kl": float(kl.detach()), "evaluated": info["evaluated"], "missed": info["missed"]}


def dense_vae_loss(logits: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor, target: torch.Tensor,
                   beta: float, dice_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Dense baseline: BCE over every voxel + soft Dice (MONAI; counters the 1-2 % foreground) + beta * KL."""
    from monai.losses import DiceLoss

    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = DiceLoss(sigmoid=True)(logits, target) if dice_weight else bce.new_zeros(())
    logvar = 2.0 * torch.log(z_sigma.clamp_min(1e-12))
    kl = kl_divergence(z_mu.movedim(1, -1), logvar.movedim(1, -1))
    loss = bce + dice_weight * dice + beta * kl
    return loss, {"loss": float(loss.detach()), "bce": float(bce.detach()), "dice_loss": float(dice.detach()),
                  "kl": float(kl.detach())}
