"""Simulated clinical sparse acquisition of a full-resolution volume (the input SparseVM is built for).

Paper facts
-----------
* Clinical scans are acquired as thick, widely spaced slices (Section 3.1: in-plane 0.85 mm, 5-7 mm between
  slices); each is upsampled to isotropic resolution by *linearly interpolating between the acquired slices*
  (Section 2.2, Fig. 1 right).
* Masks: 1 on acquired voxels, 0 on interpolated ones "in the simplest form" (Section 2.2); the paper notes
  they become continuous once resampled (e.g. by the affine pre-alignment).

Our choices
-----------
* Input ``(D, H, W)`` float volume, axis 0 the axial (slice) axis with spacing ``spacing_mm``; we keep every
  k-th axial slice, ``k = round(slice_mm / spacing_mm)``, starting at a random offset in ``[0, k)`` drawn from
  ``numpy.random.default_rng(seed)``. No slab averaging (each acquired slice is an exact copy).
* ``image``: linear interpolation along axis 0 between acquired slices; outside the first/last acquired slice
  the nearest acquired slice is repeated (no extrapolation).
* ``mask``: a continuous confidence ``clip(1 - d / (k / 2), 0, 1)`` with d the axial distance (in voxels) to the
  nearest acquired slice: 1 exactly on acquired slices, falling linearly to 0 half-way between them (and 0
  beyond half a gap outside the acquired range). ``mask == 1`` is the paper's binary mask. With k = 1 every slice
  is acquired and the mask is all ones.
* ``nearest``: nearest-neighbour upsampling (each slice copies the nearest acquired slice; ties go to the lower
  one) -- the blocky view of the chapter's Figure 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SparseScan", "simulate_sparse"]


@dataclass(frozen=True)
class SparseScan:
    """A simulated sparse acquisition on the full-resolution grid (all arrays ``(D, H, W)`` float32)."""

    image: np.ndarray  # linear interpolation between acquired slices
    mask: np.ndarray  # confidence in [0, 1]; 1 exactly on acquired slices
    acquired: np.ndarray  # int indices (axis 0) of the kept slices, increasing
    nearest: np.ndarray  # nearest-neighbour interpolation between acquired slices
    k: int  # keep every k-th slice


def simulate_sparse(volume: np.ndarray, spacing_mm: float, slice_mm: float, seed: int) -> SparseScan:
    """Keep every ``k = round(slice_mm / spacing_mm)``-th axial slice (random offset) and resample to the full grid."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (D, H, W) with axis 0 axial, got shape {volume.shape}")
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be a positive number, got {spacing_mm!r}")
    if not np.isfinite(slice_mm) or slice_mm < spacing_mm:
        raise ValueError(f"slice_mm ({slice_mm!r}) must be >= spacing_mm ({spacing_mm!r}): cannot acquire finer than the grid")
    depth = volume.shape[0]
    k = max(1, int(round(slice_mm / spacing_mm)))
    if k > depth:
        raise ValueError(f"slice gap k={k} voxels exceeds the volume depth {depth}: no slice would be kept reliably")
    offset = int(np.random.default_rng(seed).integers(0, k))
    acquired = np.arange(offset, depth, k)
    vol = volume.astype(np.float32, copy=False)
    z = np.arange(depth)

    # linear interpolation along axis 0 (np.interp semantics: constant outside the acquired range)
    pos = np.clip(z, acquired[0], acquired[-1])
    lo_idx = np.clip(np.searchsorted(acquired, pos, side="right") - 1, 0, len(acquired) - 1)
    hi_idx = np.minimum(lo_idx + 1, len(acquired) - 1)
    lo, hi = acquired[lo_idx], acquired[hi_idx]
    t = np.where(hi > lo, (pos - lo) / np.maximum(hi - lo, 1), 0.0).astype(np.float32)[:, None, None]
    image = ((1 - t) * vol[lo] + t * vol[hi]).astype(np.float32)
    image[acquired] = vol[acquired]  # exact copies (no 1*x + 0*y rounding)

    dist = np.abs(z[:, None] - acquired[None, :])
    nearest_idx = acquired[np.argmin(dist, axis=1)]  # argmin: ties -> lower slice
    d = dist.min(axis=1).astype(np.float32)
    conf = np.ones(depth, np.float32) if k == 1 else np.clip(1 - d / (k / 2), 0, 1).astype(np.float32)
    mask = np.broadcast_to(conf[:, None, None], volume.shape).astype(np.float32)
    nearest = vol[nearest_idx].astype(np.float32)
    return SparseScan(image=image, mask=mask, acquired=acquired, nearest=nearest, k=k)
