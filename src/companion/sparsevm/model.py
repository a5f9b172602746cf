"""The registration network: VoxelMorph from the ``voxelmorph`` package, used as is.

Paper facts
-----------
* SparseVM keeps VoxelMorph's network ``g_theta(f, m) = phi`` (Section 2: "We use the architecture proposed in the
  original VoxelMorph paper", Balakrishnan et al. 2018a) and changes only the loss (Section 2.2).  The moved image is
  ``m o phi`` (Section 2); atlas-based registration moves the atlas onto each subject (Section 3).
* VoxelMorph 2018a predicts a displacement field directly (no integration of a velocity field).

Our choices
-----------
* The network is ``voxelmorph.nn.models.VxmPairwise`` (voxelmorph 0.3.4, the PyTorch rewrite; its own loss classes
  raise ``NotImplementedError``, so the losses are :mod:`.losses`).  ``integration_steps=0`` gives the 2018a
  displacement model.  We did not use MONAI's ``VoxelMorph`` because the voxelmorph package is the authors' own code
  base and its 0.3 model is the one the book's readers will meet; both are U-Nets plus a flow convolution.
* ``source`` is the moving image (the atlas) and ``target`` the fixed image (the subject).  The displacement is in
  voxels and follows the pull-back convention ``(m o phi)(p) = m(p + u(p))`` (checked in the tests).
* Encoder widths default to ``(16, 32, 32, 32)`` (the 2018a encoder); the U-Net halves the grid once per level,
  so every spatial size must be a multiple of ``2 ** len(features)`` (checked with a clear error).
* Labels are moved with nearest-neighbour sampling of the same displacement (:func:`warp_labels`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["build", "check_shape", "register", "warp_labels", "FEATURES"]

FEATURES = (16, 32, 32, 32)


def check_shape(shape: Sequence[int], features: Sequence[int] = FEATURES) -> None:
    """Raise ``ValueError`` when the U-Net cannot take volumes of ``shape`` (each size a multiple of 2^levels)."""
    step = 2 ** len(features)
    bad = [int(s) for s in shape if int(s) % step]
    if len(shape) != 3 or bad:
        raise ValueError(f"volume shape {tuple(shape)}: VoxelMorph's U-Net with {len(features)} levels needs every "
                         f"spatial size to be a multiple of {step}; pad or crop the working box (the `shape` "
                         f"parameter) to e.g. {tuple(int(np.ceil(int(s) / step) * step) for s in shape)}")


def build(features: Sequence[int] = FEATURES, seed: int = 0) -> torch.nn.Module:
    """A fresh VoxelMorph displacement network (seeded initialisation)."""
    from voxelmorph.nn.models import VxmPairwise

    torch.manual_seed(seed)
    return VxmPairwise(ndim=3, source_channels=1, target_channels=1, nb_features=list(features),
                       integration_steps=0)


def register(model: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(displacement (B, 3, D, H, W), moved image (B, 1, D, H, W))`` for atlas ``moving`` onto subject ``fixed``."""
    flow, moved = model(moving, fixed, return_warped_source=True, return_field_type="displacement")
    return flow, moved


def warp_labels(labels: np.ndarray, flow: torch.Tensor) -> np.ndarray:
    """Move an integer label map ``(D, H, W)`` with ``flow`` ``(1, 3, D, H, W)`` by nearest-neighbour sampling."""
    from voxelmorph.nn.modules import SpatialTransformer

    lab = torch.as_tensor(np.asarray(labels), dtype=torch.float32, device=flow.device)[None, None]
    out = SpatialTransformer("nearest")(lab, flow.detach().float())
    return out[0, 0].round().cpu().numpy().astype(np.asarray(labels).dtype)
