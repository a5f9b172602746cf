"""Multi-scale patches: the triplets of the hierarchical loss and the dense patches of inference.

Paper facts
-----------
- Section 3.2: patches of size ``r x r x r`` with ``r`` random, resized to the encoder's ``m x m x m``.
- Section 4: anchor centres are sampled uniformly; ``r`` is uniform for small inputs (the synthetic data) and
  log-uniform for large ones (BraTS).  The positive child lies inside the anchor with
  ``r_child ~ U(l_min, r - r_gap)``; the negative child has the same size and does not overlap the anchor.
- Inference: the ``p x p x p`` patch centred at every voxel (``p = 5``), resized to ``m``, is encoded.

Our choices
-----------
- Boxes have integer corners and sizes, inside the volume.  A box ``[lo, lo + r)`` is read at ``m`` points per
  axis, ``lo - 1/2 + (i + 1/2) r / m`` in voxel coordinates (cell centres of an ``m``-grid laid over the box), by
  trilinear interpolation (``grid_sample``); this is the resize.  There is no anti-aliasing filter when
  ``r > m``.
- The negative child is drawn uniformly among the positions that do not overlap the anchor (rejection, up to 100
  tries, after which the anchor is drawn again).
- Dense inference reads the patch of every ``stride``-th voxel along each axis (``stride = 1`` is the paper's
  every voxel); the labels of the other voxels are those of the nearest encoded voxel (see
  :func:`upsample_labels`).  Near the border the patch reads the border value (``padding_mode="border"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def read_boxes(volumes: torch.Tensor, index: torch.Tensor, lo: torch.Tensor, size: torch.Tensor, m: int) -> torch.Tensor:
    """Patches ``(B, 1, m, m, m)`` of ``volumes (N, 1, D, H, W)``: box ``b`` is ``[lo_b, lo_b + size_b)`` in volume
    ``index_b`` (all axes in (D, H, W) order)."""
    if volumes.ndim != 5 or volumes.shape[1] != 1:
        raise ValueError(f"volumes must be (N, 1, D, H, W), got {tuple(volumes.shape)}")
    shape = torch.tensor(volumes.shape[2:], dtype=torch.float32)
    steps = (torch.arange(m, dtype=torch.float32) + 0.5) / m  # (m,)
    lo = lo.float() - 0.5
    coords = lo[:, None, :] + steps[None, :, None] * size.float()[:, None, None]  # (B, m, 3) voxel coordinates
    norm = 2 * coords / (shape - 1).clamp_min(1) - 1  # align_corners=True convention
    zd, yh, xw = norm[..., 0], norm[..., 1], norm[..., 2]
    B = lo.shape[0]
    grid = torch.stack(torch.broadcast_tensors(
        xw[:, None, None, :], yh[:, None, :, None], zd[:, :, None, None]), dim=-1)  # (B, m, m, m, 3) as (x, y, z)
    grid = grid.to(volumes.dtype)
    if volumes.shape[0] == 1:  # one volume (dense inference): one call, no copies of the volume
        out = F.grid_sample(volumes, grid.reshape(1, B * m, m, m, 3), mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.reshape(B, 1, m, m, m)
    return F.grid_sample(volumes[index], grid, mode="bilinear", padding_mode="border", align_corners=True)


@dataclass(frozen=True)
class SamplerConfig:
    r_min: int = 8  # anchor size range (voxels)
    r_max: int = 24
    log_uniform: bool = False
    l_min: int = 5  # smallest child
    r_gap: int = 3  # anchor size - largest child size

    def __post_init__(self):
        if not 1 <= self.l_min <= self.r_min - self.r_gap:
            raise ValueError(f"need 1 <= l_min <= r_min - r_gap (a child must fit in the smallest anchor); got "
                             f"l_min={self.l_min}, r_min={self.r_min}, r_gap={self.r_gap}")
        if self.r_max < self.r_min:
            raise ValueError("r_max must be at least r_min")


class TripletSampler:
    """Anchor, positive child and negative child boxes (Section 4) in volumes of one ``shape``."""

    def __init__(self, shape: tuple[int, int, int], cfg: SamplerConfig):
        self.shape = np.asarray(shape)
        self.cfg = cfg
        if cfg.r_max + cfg.r_max - cfg.r_gap > int(self.shape.max()) or cfg.r_max > int(self.shape.min()):
            raise ValueError(f"volume {tuple(shape)} too small for anchors up to r_max={cfg.r_max} and a "
                             "non-overlapping negative beside them")

    def _size(self, rng: np.random.Generator) -> int:
        c = self.cfg
        if c.log_uniform:
            return int(round(math.exp(rng.uniform(math.log(c.r_min), math.log(c.r_max)))))
        return int(rng.integers(c.r_min, c.r_max + 1))

    def one(self, rng: np.random.Generator) -> tuple:
        S = self.shape
        while True:
            r = self._size(rng)
            a = rng.integers(0, S - r + 1)
            rc = int(rng.integers(self.cfg.l_min, r - self.cfg.r_gap + 1))
            p = a + rng.integers(0, r - rc + 1, size=3)
            for _ in range(100):
                n = rng.integers(0, S - rc + 1)
                if np.any((n + rc <= a) | (n >= a + r)):
                    return a, r, p, rc, n
            # no room beside this anchor: draw another

    def sample(self, index: list[int] | np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Boxes for one triplet in each volume of ``index``."""
        rows = [self.one(rng) for _ in index]
        col = lambda k: torch.as_tensor(np.stack([r[k] for r in rows]))
        return {"index": torch.as_tensor(np.asarray(index)), "anchor_lo": col(0), "anchor_size": col(1),
                "pos_lo": col(2), "child_size": col(3), "neg_lo": col(4)}


def grid_centres(shape: tuple[int, int, int], stride: int) -> np.ndarray:
    """Voxel indices ``(n, 3)`` of every ``stride``-th voxel (from 0) along each axis."""
    axes = [np.arange(0, s, stride) for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def dense_patches(volume: torch.Tensor, centres: np.ndarray, p: int, m: int) -> torch.Tensor:
    """The ``p³`` patches centred at ``centres`` of ``volume (1, 1, D, H, W)``, resized to ``m³``."""
    lo = torch.as_tensor(centres) - p // 2
    size = torch.full((lo.shape[0],), p)
    return read_boxes(volume, torch.zeros(lo.shape[0], dtype=torch.long), lo, size, m)


def upsample_labels(labels: np.ndarray, shape: tuple[int, int, int], stride: int) -> np.ndarray:
    """Labels on the ``stride`` grid ``(ceil(D/s), ceil(H/s), ceil(W/s))`` to every voxel (nearest grid voxel
    at or before it, i.e. repeat)."""
    out = labels
    for ax in range(3):
        out = np.repeat(out, stride, axis=ax)
    return out[: shape[0], : shape[1], : shape[2]]
