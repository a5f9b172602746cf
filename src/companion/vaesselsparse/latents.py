"""Latent codes of both VAEs as arrays on one bottleneck grid, and back.

VAEsselSparse stores its latent as a sparse tensor: ``C`` posterior-mean values at each *occupied* bottleneck
position, plus the position.  A classifier or a generative U-Net needs a fixed-length input, so the book writes
both latents on the same dense bottleneck grid of ``d = D / 8`` voxels per axis (equal spatial compression):

* **sparse latent -> grid** (:func:`sparse_to_grid`): ``C`` feature channels holding the posterior mean at the
  occupied positions and 0 elsewhere, plus one **occupancy channel** (1 at occupied positions, 0 elsewhere) that
  keeps *where* the latent is, the part of the sparse latent a zero feature could not tell apart from an absent
  position.  ``C + 1`` channels.  Nothing is pooled or cropped: position matters for a vessel map (an aneurysm is
  a local change at one bifurcation; a missing circle-of-Willis segment is a missing piece at one place).
* **grid -> sparse latent** (:func:`grid_to_sparse`): the inverse; a position is occupied where the occupancy channel
  exceeds ``threshold`` (0.5 by default), so a generated grid decodes through the sparse decoder.
* **dense latent** (:func:`encode_dense`): the dense VAE's posterior mean, ``C`` channels on the same grid, used as
  it is (flattened for a classifier).

The paper says the generative U-Net works on the sparse latents; how they become an array is not stated: the rule
above is ours.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..sparse import SparseTensor, from_masks, masks_of, to_dense
from .model import SparseVAE


@torch.no_grad()
def encode_sparse(model: SparseVAE, volumes: Sequence[Any], device: str = "cpu") -> list[SparseTensor]:
    """Posterior means of VAEsselSparse, one sparse tensor per volume (on the CPU)."""
    was = model.training
    model.eval()
    try:
        return [model.encode(from_masks([v], device))[0].to("cpu") for v in volumes]
    finally:
        model.train(was)


def sparse_to_grid(mu: SparseTensor) -> np.ndarray:
    """``(C + 1, d, d, d)`` float32: the latent's features at their bottleneck positions (0 elsewhere) and the
    occupancy channel last."""
    if mu.batch_size != 1:
        raise ValueError(f"one volume at a time, got a batch of {mu.batch_size}")
    feats = to_dense(mu)[0]
    occ = to_dense(mu.replace_feats(torch.ones(mu.n, 1)))[0]
    return torch.cat([feats, occ]).numpy().astype(np.float32)


def grid_to_sparse(grid: np.ndarray | torch.Tensor, stride: int, spatial_shape: Sequence[int],
                   threshold: float = 0.5) -> SparseTensor:
    """The sparse latent of a ``(C + 1, d, d, d)`` grid: positions whose occupancy channel exceeds ``threshold``,
    with the ``C`` feature channels there; coordinates in input voxels (multiples of ``stride``)."""
    g = torch.as_tensor(np.asarray(grid), dtype=torch.float32)
    if g.ndim != 4:
        raise ValueError(f"expected a (C + 1, d, d, d) grid, got shape {tuple(g.shape)}")
    d = [int(s) // int(stride) for s in spatial_shape]
    if list(g.shape[1:]) != d:
        raise ValueError(f"grid of {tuple(g.shape[1:])} positions does not match spatial shape {tuple(spatial_shape)}"
                         f" at stride {stride} ({tuple(d)})")
    pos = torch.nonzero(g[-1] > threshold)
    feats = g[:-1][:, pos[:, 0], pos[:, 1], pos[:, 2]].T.contiguous()
    coords = torch.cat([torch.zeros(len(pos), 1, dtype=torch.long), pos * int(stride)], dim=1)
    return SparseTensor(coords, feats, int(stride), tuple(int(s) for s in spatial_shape), 1)


@torch.no_grad()
def decode_sparse(model: SparseVAE, z: SparseTensor, device: str = "cpu") -> np.ndarray:
    """Binary map (probability > 0.5) decoded from a sparse latent, without teacher forcing."""
    was = model.training
    model.eval()
    try:
        if z.n == 0:
            return np.zeros(z.spatial_shape, dtype=bool)
        logits = model.decoder(z.to(device))["logits"]
        return masks_of(logits, logits.feats[:, 0] > 0)[0]
    finally:
        model.train(was)


@torch.no_grad()
def encode_dense(model: torch.nn.Module, volumes: Sequence[Any], device: str = "cpu") -> np.ndarray:
    """Posterior means of the dense VAE, ``(N, C, d, d, d)`` float32."""
    was = model.training
    model.eval()
    try:
        out = [model.encode(torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device)[None, None])[0]
               for v in volumes]
        return torch.cat(out).cpu().numpy().astype(np.float32)
    finally:
        model.train(was)


@torch.no_grad()
def decode_dense(model: torch.nn.Module, z: np.ndarray | torch.Tensor, device: str = "cpu") -> np.ndarray:
    """Binary maps (probability > 0.5) decoded from ``(N, C, d, d, d)`` dense latents."""
    was = model.training
    model.eval()
    try:
        zt = torch.as_tensor(np.asarray(z), dtype=torch.float32, device=device)
        return np.stack([(model.decode(zt[i:i + 1])[0, 0] > 0).cpu().numpy() for i in range(len(zt))])
    finally:
        model.train(was)


def latent_vectors(sparse_grids: np.ndarray, dense_latents: np.ndarray) -> dict[str, np.ndarray]:
    """Fixed-length vectors for the classifiers: each grid flattened (sparse: ``(C + 1) d³`` values, dense:
    ``C d³``)."""
    return {"sparse": sparse_grids.reshape(len(sparse_grids), -1), "dense": dense_latents.reshape(len(dense_latents), -1)}
