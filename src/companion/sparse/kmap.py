"""Kernel maps: for every output voxel, the row of each input voxel under each kernel offset.

A kernel map is a ``(N_out, K)`` int64 *neighbour table*: entry ``[i, k]`` is the input row seen by output ``i``
through kernel offset ``k``, or ``N_in`` (the index of an appended zero row) where that neighbour is inactive.  One
table feeds one gather and one matrix product (:func:`companion.sparse.conv.gather_gemm`); it is built once per
coordinate set and cached on the tensor, so every convolution at one resolution level reuses it.

Offsets are ordered like the weights of ``torch.nn.Conv3d``: ``k = (i * K + j) * K + l`` for kernel indices
``(i, j, l)`` along ``(x, y, z)``, and a ``K = 3`` kernel index ``i`` looks at offset ``i - 1``.
"""
from __future__ import annotations

import itertools

import torch

from .tensor import SparseTensor, lookup, parent_coords, unique_coords


def offsets(kernel_size: int, device=None) -> torch.Tensor:
    """``(K^3, 3)`` offsets in kernel-index order; centred for odd sizes, ``0..K-1`` for even ones."""
    r = range(kernel_size)
    shift = (kernel_size - 1) // 2 if kernel_size % 2 else 0
    return torch.tensor([(i - shift, j - shift, l - shift) for i, j, l in itertools.product(r, r, r)],
                        dtype=torch.long, device=device)


def submanifold_table(st: SparseTensor, kernel_size: int = 3) -> torch.Tensor:
    """Neighbour table of a stride-1 (submanifold) convolution: outputs are exactly the input voxels."""
    key = ("subm", kernel_size)
    if key not in st.cache:
        off = offsets(kernel_size, st.coords.device) * st.stride  # (K, 3)
        table = torch.empty(st.n, off.shape[0], dtype=torch.long, device=st.coords.device)
        q = st.coords.clone()
        for k in range(off.shape[0]):  # one offset at a time: temporaries of N rows, not 27 N
            q[:, 1:] = st.coords[:, 1:] + off[k]
            table[:, k] = lookup(st.sorted_keys(), q, st.spatial_shape)
        st.cache[key] = table.masked_fill_(table < 0, st.n)
    return st.cache[key]


def child_offset_index(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """Which of the 8 children (0..7, x-major) of its stride-``2*stride`` parent each voxel is."""
    bits = (coords[:, 1:] // stride) % 2
    return (bits[:, 0] * 4 + bits[:, 1] * 2 + bits[:, 2]).long()


def downsample_map(st: SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output coordinates (stride ``2s``) and ``(N_out, 8)`` neighbour table of a kernel-2, stride-2 convolution.

    Every active input has exactly one parent, so the output set is the set of parents of active voxels and the
    result equals dense ``conv3d(kernel_size=2, stride=2)`` at those parents (elsewhere the dense result is the bias).
    Cached on the input tensor.
    """
    if "down" not in st.cache:
        out, inv = unique_coords(parent_coords(st.coords, st.stride * 2), st.spatial_shape)
        table = torch.full((out.shape[0], 8), st.n, dtype=torch.long, device=st.coords.device)
        table[inv, child_offset_index(st.coords, st.stride)] = torch.arange(st.n, device=st.coords.device)
        st.cache["down"] = (out, table)
    return st.cache["down"]


def children(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """The 8 children (stride ``stride // 2``) of every voxel, in ``(N * 8, 4)`` row order (parent-major,
    child index as in :func:`child_offset_index`)."""
    if stride < 2 or stride % 2:
        raise ValueError(f"cannot subdivide voxels of stride {stride}; the stride must be an even number >= 2")
    half = stride // 2
    off = offsets(2, coords.device) * half
    out = coords[:, None, :].repeat(1, 8, 1)
    out[:, :, 1:] += off[None]
    return out.reshape(-1, 4)
