"""A sparse voxel tensor: integer coordinates of the active voxels plus one feature row per voxel.

Conventions (those of torchsparse, so that switching backends changes nothing for a model):

* ``coords``: ``(N, 4)`` int64 tensor ``(batch, x, y, z)`` in *full-resolution* voxel units;
* ``stride``: the tensor stride ``s``; every spatial coordinate is a multiple of ``s`` (1 at full resolution, 8 at
  the bottleneck of a model that halves the resolution three times);
* ``feats``: ``(N, C)`` float tensor, row ``i`` belongs to voxel ``coords[i]``;
* ``spatial_shape``: the full-resolution grid ``(D, H, W)``; coordinates lie in ``[0, D) x [0, H) x [0, W)``.

Neighbour lookups hash a coordinate to one integer key (row-major over ``(batch, x, y, z)``), sort the keys once and
answer queries with ``torch.searchsorted``: no Python loops over voxels, O(N log N), the same on CPU, CUDA and MPS.
Kernel maps built from a coordinate set are cached on the tensor and travel with every tensor that shares its
coordinates (``replace_feats``), so all convolutions at one level reuse one neighbour table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


@dataclass
class SparseTensor:
    coords: torch.Tensor
    feats: torch.Tensor
    stride: int = 1
    spatial_shape: tuple[int, int, int] = (0, 0, 0)
    batch_size: int = 1
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.coords.ndim != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must have shape (N, 4) = (batch, x, y, z), got {tuple(self.coords.shape)}")
        if self.feats.ndim != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats must have shape (N, C) with N = {self.coords.shape[0]}, "
                             f"got {tuple(self.feats.shape)}")
        if self.coords.dtype != torch.int64:
            self.coords = self.coords.long()
        self.spatial_shape = tuple(int(s) for s in self.spatial_shape)

    # ------------------------------------------------------------------ basics
    @property
    def n(self) -> int:
        return int(self.coords.shape[0])

    @property
    def channels(self) -> int:
        return int(self.feats.shape[1])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def replace_feats(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates (and cached kernel maps), new features."""
        return SparseTensor(self.coords, feats, self.stride, self.spatial_shape, self.batch_size, self.cache)

    def select(self, keep: torch.Tensor) -> "SparseTensor":
        """The voxels where the boolean mask ``keep`` is true (a new coordinate set: no cache carried over)."""
        return SparseTensor(self.coords[keep], self.feats[keep], self.stride, self.spatial_shape, self.batch_size)

    def batch_index(self) -> torch.Tensor:
        return self.coords[:, 0]

    def to(self, device) -> "SparseTensor":
        return SparseTensor(self.coords.to(device), self.feats.to(device), self.stride, self.spatial_shape,
                            self.batch_size)

    def keys(self) -> torch.Tensor:
        """One int64 key per voxel (cached)."""
        if "keys" not in self.cache:
            self.cache["keys"] = coord_keys(self.coords, self.spatial_shape)
        return self.cache["keys"]

    def sorted_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted keys, permutation) of this coordinate set (cached)."""
        if "sorted" not in self.cache:
            k = self.keys()
            sk, perm = torch.sort(k)
            self.cache["sorted"] = (sk, perm)
        return self.cache["sorted"]

    def __repr__(self) -> str:
        return (f"SparseTensor(n={self.n}, channels={self.channels}, stride={self.stride}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size})")


# ---------------------------------------------------------------------------------------------- hashing
def coord_keys(coords: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Row-major key of (batch, x, y, z); coordinates must lie inside the grid."""
    d, h, w = (int(s) for s in spatial_shape)
    c = coords.long()
    return ((c[:, 0] * d + c[:, 1]) * h + c[:, 2]) * w + c[:, 3]


def inside(coords: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    shape = torch.as_tensor([int(s) for s in spatial_shape], device=coords.device)
    xyz = coords[:, 1:]
    return ((xyz >= 0) & (xyz < shape)).all(dim=1)


def lookup(sorted_keys: tuple[torch.Tensor, torch.Tensor], query: torch.Tensor,
           spatial_shape: Sequence[int]) -> torch.Tensor:
    """Index of every query coordinate in the coordinate set whose sorted keys are given; -1 where absent."""
    sk, perm = sorted_keys
    out = torch.full((query.shape[0],), -1, dtype=torch.long, device=query.device)
    if sk.numel() == 0 or query.shape[0] == 0:
        return out
    ok = inside(query, spatial_shape)
    qk = coord_keys(query[ok], spatial_shape)
    pos = torch.searchsorted(sk, qk).clamp_(max=sk.numel() - 1)
    hit = sk[pos] == qk
    idx = torch.where(hit, perm[pos], torch.full_like(pos, -1))
    out[ok] = idx
    return out


def unique_coords(coords: torch.Tensor, spatial_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique coordinates sorted by key, inverse index of each input row)."""
    k = coord_keys(coords, spatial_shape)
    uk, inv = torch.unique(k, sorted=True, return_inverse=True)
    first = torch.full((uk.numel(),), coords.shape[0], dtype=torch.long, device=coords.device)
    first.scatter_reduce_(0, inv, torch.arange(coords.shape[0], device=coords.device), reduce="amin")
    return coords[first], inv


def parent_coords(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """Each voxel's containing voxel at tensor stride ``stride`` (row by row, duplicates kept)."""
    c = coords.clone()
    c[:, 1:] = torch.div(c[:, 1:], stride, rounding_mode="floor") * stride
    return c


def coarsen(coords: torch.Tensor, stride: int, spatial_shape: Sequence[int]) -> torch.Tensor:
    """The distinct voxels at tensor stride ``stride`` that contain the given voxels."""
    return unique_coords(parent_coords(coords, stride), spatial_shape)[0]


def contains(reference: torch.Tensor, query: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Boolean per query coordinate: is it one of the reference coordinates?"""
    sk, perm = torch.sort(coord_keys(reference, spatial_shape))
    return lookup((sk, perm), query, spatial_shape) >= 0


# ---------------------------------------------------------------------------------------------- dense <-> sparse
def from_dense(x: torch.Tensor, threshold: float = 0.0, feats: str = "values") -> SparseTensor:
    """Active voxels of a dense batch.

    ``x`` is ``(B, D, H, W)`` (a mask or occupancy volume) or ``(B, C, D, H, W)``; a voxel is active where any
    channel's absolute value exceeds ``threshold``.  ``feats="values"`` keeps the voxel values as features,
    ``"ones"`` gives every active voxel the single feature 1 (the usual input of a segmentation-map encoder).
    """
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5:
        raise ValueError(f"expected a (B, D, H, W) or (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    active = (x.abs() > threshold).any(dim=1)
    coords = torch.nonzero(active, as_tuple=False)  # row-major order = sorted keys
    if feats == "ones":
        f = torch.ones(coords.shape[0], 1, dtype=torch.float32, device=x.device)
    elif feats == "values":
        f = x.permute(0, 2, 3, 4, 1)[active]
    else:
        raise ValueError(f"feats must be 'values' or 'ones', got {feats!r}")
    return SparseTensor(coords, f.float() if not f.is_floating_point() else f, 1, tuple(x.shape[2:]), x.shape[0])


def from_masks(masks: Sequence[np.ndarray | torch.Tensor], device: str | torch.device = "cpu") -> SparseTensor:
    """Batch a list of same-shaped binary volumes into one sparse tensor with feature 1 per active voxel,
    without ever allocating the dense batch."""
    if not len(masks):
        raise ValueError("need at least one mask")
    shape = tuple(np.shape(masks[0]))
    if len(shape) != 3:
        raise ValueError(f"masks must be 3D volumes, got shape {shape}")
    parts = []
    for b, m in enumerate(masks):
        if tuple(np.shape(m)) != shape:
            raise ValueError(f"all masks must share one shape; mask 0 is {shape}, mask {b} is {tuple(np.shape(m))}")
        if hasattr(m, "coords"):  # a coordinates-only volume (companion.data.derived.LazyMask)
            idx = np.asarray(m.coords)
        elif torch.is_tensor(m):
            idx = torch.nonzero(m > 0).cpu().numpy()
        else:
            idx = np.argwhere(np.asarray(m) > 0)
        parts.append(np.concatenate([np.full((len(idx), 1), b), idx], axis=1))
    coords = torch.as_tensor(np.concatenate(parts), dtype=torch.long, device=device)
    feats = torch.ones(coords.shape[0], 1, device=device)
    return SparseTensor(coords, feats, 1, shape, len(masks))


def to_dense(st: SparseTensor, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``(B, C, D/s, H/s, W/s)`` dense tensor holding the features at their voxels (zeros elsewhere);
    differentiable with respect to the features."""
    s = st.stride
    shape = tuple(int(v) for v in (shape or [-(-d // s) for d in st.spatial_shape]))
    out = st.feats.new_zeros((st.batch_size, *shape, st.channels))
    c = st.coords
    out[c[:, 0], c[:, 1] // s, c[:, 2] // s, c[:, 3] // s] = st.feats
    return out.permute(0, 4, 1, 2, 3).contiguous()


def masks_of(st: SparseTensor, values: torch.Tensor | None = None) -> list[np.ndarray]:
    """One boolean numpy volume per batch entry, True at the voxels where ``values`` (default: all) is true."""
    keep = torch.ones(st.n, dtype=torch.bool, device=st.coords.device) if values is None else values.bool()
    c = st.coords[keep].cpu().numpy()
    out = []
    for b in range(st.batch_size):
        m = np.zeros(st.spatial_shape, dtype=bool)
        cb = c[c[:, 0] == b]
        m[cb[:, 1], cb[:, 2], cb[:, 3]] = True
        out.append(m)
    return out
