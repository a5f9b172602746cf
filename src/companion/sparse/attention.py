"""Windowed self-attention over the active voxels of a sparse tensor (after Swin / Direct3D-S2's sparse attention).

The grid (in units of the tensor stride) is cut into cubic windows of ``window`` voxels per axis; every active voxel
attends to the active voxels of its own window and sample only.  Alternate blocks shift the window grid by half a
window (``shift=True``), so information crosses window borders over two blocks.  Tokens are sorted by window and
packed into a ``(windows, longest window, C)`` batch with a padding mask, so the cost is the number of windows times
the square of the tokens per window -- it grows with the active voxels, never with the grid volume.

Position enters once, through :func:`sinusoidal_3d`, a fixed 3D coordinate encoding added to the tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor


def sinusoidal_3d(coords: torch.Tensor, channels: int, stride: int = 1, max_period: float = 256.0) -> torch.Tensor:
    """Fixed 3D positional encoding of voxel coordinates ``(N, 4)`` = (batch, x, y, z): for each axis, sines and
    cosines of the coordinate (in units of ``stride``) at ``channels // 6`` geometric frequencies; zero-padded to
    ``channels``."""
    per_axis = channels // 6
    xyz = coords[:, 1:].to(torch.float32) / stride
    out = torch.zeros(coords.shape[0], channels, device=coords.device)
    if per_axis == 0:
        return out
    freqs = torch.exp(-math.log(max_period) * torch.arange(per_axis, device=coords.device) / per_axis)
    ang = xyz[:, :, None] * freqs[None, None, :]  # (N, 3, F)
    enc = torch.cat([torch.sin(ang), torch.cos(ang)], dim=2).reshape(coords.shape[0], 6 * per_axis)
    out[:, : 6 * per_axis] = enc
    return out


def window_partition(coords: torch.Tensor, stride: int, window: int, shift: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                            torch.Tensor, int]:
    """Group tokens by window.  Returns (order, window id per sorted token, slot within its window, longest window):
    token ``order[j]`` goes to window ``wid[j]``, slot ``slot[j]``."""
    g = torch.div(coords[:, 1:], stride, rounding_mode="floor")
    if shift:
        g = g + window // 2
    w = torch.div(g, window, rounding_mode="floor")
    key = torch.cat([coords[:, :1], w], dim=1)
    _, wid_unsorted = torch.unique(key, dim=0, return_inverse=True)
    wid_sorted, order = torch.sort(wid_unsorted, stable=True)
    counts = torch.bincount(wid_sorted)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(wid_sorted), device=coords.device) - starts[wid_sorted]
    return order, wid_sorted, slot, int(counts.max().item()) if counts.numel() else 0


class SparseWindowAttention(nn.Module):
    """Multi-head self-attention restricted to the active voxels of each (optionally shifted) window."""

    def __init__(self, channels: int, heads: int, window: int, shift: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        if window < 1:
            raise ValueError(f"window must be >= 1 voxel, got {window}")
        self.channels, self.heads, self.window, self.shift = channels, heads, window, shift
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        n, c = x.feats.shape
        if n == 0:
            return x.replace_feats(self.proj(x.feats))
        key = ("window", self.window, self.shift)
        if key not in x.cache:
            x.cache[key] = window_partition(x.coords, x.stride, self.window, self.shift)
        order, wid, slot, longest = x.cache[key]
        n_win = int(wid[-1].item()) + 1
        h, d = self.heads, c // self.heads
        qkv = self.qkv(x.feats)[order]
        packed = qkv.new_zeros(n_win, longest, 3 * c)
        packed[wid, slot] = qkv
        valid = torch.zeros(n_win, longest, dtype=torch.bool, device=qkv.device)
        valid[wid, slot] = True
        q, k, v = packed.view(n_win, longest, 3, h, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        out = out.permute(0, 2, 1, 3).reshape(n_win, longest, c)[wid, slot]
        y = torch.empty_like(out)
        y[order] = out
        return x.replace_feats(self.proj(y))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, window={self.window}, shift={self.shift}"


class SparseTransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (MLP ratio 4, GELU)."""

    def __init__(self, channels: int, heads: int, window: int, shift: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn = SparseWindowAttention(channels, heads, window, shift)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        f = x.feats + self.attn(x.replace_feats(self.norm1(x.feats))).feats
        f = f + self.mlp(self.norm2(f))
        return x.replace_feats(f)
