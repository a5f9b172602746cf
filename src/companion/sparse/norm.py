"""Normalisation and point-wise layers on sparse tensors.

:class:`SparseGroupNorm` normalises each sample's features over its *active* voxels only, per group of channels --
the statistics ``torch.nn.GroupNorm`` would compute on a ``(1, C, N_b)`` tensor holding sample ``b``'s active voxels.
(Dense group norm on the zero-filled grid would count the empty voxels and wash the statistics out.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor


class SparseGroupNorm(nn.Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        f, b = x.feats, x.batch_index()
        n, c = f.shape
        if n and bool((b[1:] >= b[:-1]).all()):
            # voxels grouped by sample (what from_masks and every layer produce): PyTorch's fused group norm on
            # each sample's (1, C, N_b) block, which keeps only the input and two statistics for the backward
            counts = torch.bincount(b, minlength=x.batch_size).tolist()
            parts = [F.group_norm(p.T[None], self.num_groups, self.weight, self.bias, self.eps)[0].T
                     for p in torch.split(f, counts) if p.shape[0]]
            return x.replace_feats(torch.cat(parts))
        return x.replace_feats(self._by_index(f, b))

    def _by_index(self, f: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Any voxel order: per-sample statistics by index_add."""
        n, c = f.shape
        g = self.num_groups
        fg = f.reshape(n, g, c // g)
        batch = int(b.max()) + 1 if n else 1
        count = torch.zeros(batch, dtype=f.dtype, device=f.device).index_add_(
            0, b, torch.ones(n, dtype=f.dtype, device=f.device)).clamp_(min=1) * (c // g)
        mean = torch.zeros(batch, g, dtype=f.dtype, device=f.device).index_add_(0, b, fg.sum(-1)) / count[:, None]
        centred = fg - mean[b][:, :, None]
        var = torch.zeros(batch, g, dtype=f.dtype, device=f.device).index_add_(
            0, b, (centred ** 2).sum(-1)) / count[:, None]
        y = (centred / torch.sqrt(var[b][:, :, None] + self.eps)).reshape(n, c)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace_feats(torch.relu(x.feats))


class SparseLinear(nn.Linear):
    """A per-voxel linear map (a 1x1x1 convolution)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_feats(super().forward(x.feats))
