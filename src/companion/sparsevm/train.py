"""Training the three learned methods of Table 1: VoxelMorph CC, SparseVM SMSE and SparseVM SLCC, one loop.

Paper facts
-----------
* Eq. 1: ``L = L_sim(f, m o phi) + lambda L_smooth(phi)``; Eq. 4 smoothness for every method.
* VoxelMorph baseline: local cross-correlation (Eq. 3) on the linearly interpolated subject, with a 15^3 window
  instead of VoxelMorph's 9^3 ("CC15", Section 3.2).  SparseVM: SMSE (Eq. 5) or SLCC (Eqs. 6-8, n = 15) with the
  subject's mask ``m_f`` and the atlas mask ``m_m = 1`` everywhere (the atlas is isotropic, Section 3.1).
* Adam with learning rate 5e-4 and epsilon 5e-5 (Section 3.4); lambda chosen on the validation set starting from
  the VoxelMorph papers' values (Section 3.4; the value itself is not given).

Our choices
-----------
* lambda is *not* tuned here (no validation search; the paper's chosen value is not published): every method uses
  VoxelMorph's published value for its similarity family, lambda = 1 for correlation losses and 0.01 for squared
  error (intensities in [0, 1]; Balakrishnan et al. 2019), divided by 3 because :func:`.losses.smoothness` sums
  the three displacement components where VoxelMorph's gradient loss averages them.  Same tuning effort (none) for
  every method.
* One *epoch* is one pass over the training subjects in a seeded order, batch ``batch`` (atlas repeated); every
  method gets the same subjects, order, epochs, seeds and optimizer (:func:`companion.training.run_epoch`).
* The atlas mask is ``m_m = 1`` everywhere, as in the paper, and is not warped; the atlas is the moving
  image and each training subject the fixed one, as at test time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..training import run_epoch, wrap_distributed
from . import losses
from .model import register

PAPER_LR = 5e-4  # Section 3.4
PAPER_EPS = 5e-5
VXM_LAMBDA = {"correlation": 1.0, "squared": 0.01}  # Balakrishnan et al. 2019 (their gradient-loss normalisation)


@dataclass(frozen=True)
class Method:
    name: str
    similarity: str  # "cc" (unmasked LCC), "smse" or "slcc"
    citation: str
    lam_override: float | None = None  # an exercise's lambda (in our normalisation) instead of VoxelMorph's

    @property
    def family(self) -> str:
        return "squared" if self.similarity == "smse" else "correlation"

    @property
    def lam(self) -> float:
        """lambda in our smoothness normalisation (VoxelMorph's value / 3, see the module docstring)."""
        return self.lam_override if self.lam_override is not None else VXM_LAMBDA[self.family] / 3


VM_CC = Method("VoxelMorph CC15", "cc", "Balakrishnan et al. 2018a, window 15 as in the paper's baseline")
SMSE = Method("SparseVM SMSE", "smse", "Lewis et al. 2020, Eq. 5")
SLCC = Method("SparseVM SLCC", "slcc", "Lewis et al. 2020, Eqs. 6-8")
METHODS = {m.name: m for m in (VM_CC, SMSE, SLCC)}


def similarity(method: Method, fixed: torch.Tensor, moved: torch.Tensor, mask_fixed: torch.Tensor,
               window: int) -> torch.Tensor:
    """The method's image term of Eq. 1 (lower is better)."""
    if method.similarity == "cc":
        return losses.lcc(fixed, moved, window)
    ones = torch.ones_like(moved)
    if method.similarity == "smse":
        return losses.smse(fixed, moved, mask_fixed, ones)
    if method.similarity == "slcc":
        return losses.slcc(fixed, moved, mask_fixed, ones, window)

    raise ValueError(f"unknown similarity {method.similarity!r}; valid: cc, smse, slcc")


def loss_terms(method: Method, model: torch.nn.Module, atlas: torch.Tensor, fixed: torch.Tensor,
               mask_fixed: torch.Tensor, window: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 1 for a batch of subjects ``fixed`` (B, 1, D, H, W) and the atlas (1, 1, D, H, W)."""
    moving = atlas.expand(fixed.shape[0], -1, -1, -1, -1)
    flow, moved = register(model, moving, fixed)
    sim = similarity(method, fixed, moved, mask_fixed, window)
    smooth = losses.smoothness(flow)
    loss = sim + method.lam * smooth
    return loss, {"loss": float(loss.detach()), "similarity": float(sim.detach()), "smoothness": float(smooth.detach())}


def epoch_fn(method: Method, model: torch.nn.Module, opt: torch.optim.Optimizer, atlas: np.ndarray,
             images: np.ndarray, masks: np.ndarray, *, batch: int, window: int, seed: int,
             device: str) -> Callable[[int], dict[str, float]]:
    """``train_epoch(epoch)`` for :func:`companion.checkpoints.train_or_load`: one pass over the subjects."""
    if images.ndim != 4 or images.shape != masks.shape or atlas.shape != images.shape[1:]:
        raise ValueError(f"need subjects (N, D, H, W) with masks of the same shape and an atlas (D, H, W); got "
                         f"{images.shape}, {masks.shape}, {atlas.shape}")
    net = wrap_distributed(model)
    a = torch.as_tensor(atlas, dtype=torch.float32, device=device)[None, None]
    imgs = torch.as_tensor(images, dtype=torch.float32)
    msks = torch.as_tensor(masks, dtype=torch.float32)

    def loss_of(idx, rng):
        f = imgs[idx][:, None].to(device)
        mf = msks[idx][:, None].to(device)
        return loss_terms(method, net, a, f, mf, window)

    return lambda epoch: run_epoch(net, opt, len(images), batch, seed, epoch, loss_of)


def optimizer(model: torch.nn.Module, lr: float = PAPER_LR) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, eps=PAPER_EPS)
