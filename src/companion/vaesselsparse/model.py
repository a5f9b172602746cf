"""The VAEsselSparse model (paper Section 3, Eqs. 1-4): a sparse convolutional + sparse-attention VAE for binary
vessel segmentation maps.

Encoder (Eq. 1-2)
    input projection (submanifold conv) -> three residual sparse down blocks [submanifold conv, group norm, ReLU,
    submanifold conv, group norm, skip, ReLU; then a stride-2 sparse conv] -> 8x per axis ->
    bottleneck tokens + 3D sinusoidal positional encoding -> sparse windowed self-attention blocks (shifted windows
    on alternate blocks) -> two linear heads: mu and log sigma^2 -> z = mu + sigma * eps on the bottleneck voxels.
Decoder (Eq. 3-4)
    linear lift + positional encoding -> attention blocks -> three sparse up blocks [stride-2 transposed conv that
    creates the 8 children of every voxel, residual refinement block] -> final submanifold conv -> occupancy logits.

The paper does not say how the decoder decides which created voxels to keep.  We use the standard device of
generative sparse decoders (GSDN, XCube): after each up block but the last, a linear head predicts the occupancy of
every created voxel and only voxels with logit > 0 are kept; during training the voxels of the ground truth at that
resolution are kept as well (teacher forcing), so the full-resolution voxels the decoder evaluates always contain
the ground-truth ones.  The loss (:mod:`.loss`) supervises every head.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..sparse import (SparseDownsample, SparseGroupNorm, SparseReLU, SparseTensor, SparseTransformerBlock,
                      SparseUpsample, SubMConv3d, sinusoidal_3d)
from ..sparse.tensor import coarsen, contains


#: prior probability that a created child voxel is occupied (initial bias of the occupancy logits)
PRIOR_OCCUPANCY = 0.1


@dataclass(frozen=True)
class SparseVAEConfig:
    #: feature channels at full resolution, 1/2 and 1/4 (three down blocks -> bottleneck at 1/8 per axis)
    channels: tuple[int, int, int] = (16, 32, 64)
    #: token width of the bottleneck transformer (paper: 384)
    model_channels: int = 128
    #: latent features per bottleneck voxel
    latent_channels: int = 8
    #: transformer blocks in the encoder and, again, in the decoder (paper: six in all)
    blocks: int = 2
    #: attention heads (paper: 8)
    heads: int = 4
    #: attention window, in bottleneck voxels per axis
    window: int = 4
    #: group-norm groups
    groups: int = 8
    #: "transposed" (learned) or "subdivide" (copy to the 8 children) upsampling
    upsample: str = "transposed"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def factor(self) -> int:
        return 2 ** len(self.channels)


class SparseResBlock(nn.Module):
    """x -> ReLU(x + GN(conv(ReLU(GN(conv(x))))))  (sparsity preserving)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        g = min(groups, channels)
        self.conv1, self.norm1 = SubMConv3d(channels, channels), SparseGroupNorm(g, channels)
        self.conv2, self.norm2 = SubMConv3d(channels, channels), SparseGroupNorm(g, channels)
        self.act = SparseReLU()

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return x.replace_feats(torch.relu(x.feats + h.feats))


class SparseEncoder(nn.Module):
    def __init__(self, cfg: SparseVAEConfig):
        super().__init__()
        c = list(cfg.channels)
        self.stem = SubMConv3d(1, c[0])
        self.res = nn.ModuleList([SparseResBlock(ci, cfg.groups) for ci in c])
        self.down = nn.ModuleList([SparseDownsample(ci, co) for ci, co in zip(c, c[1:] + [cfg.model_channels])])
        self.blocks = nn.ModuleList([SparseTransformerBlock(cfg.model_channels, cfg.heads, cfg.window, shift=i % 2 == 1)
                                     for i in range(cfg.blocks)])
        self.norm = nn.LayerNorm(cfg.model_channels)
        self.mu = nn.Linear(cfg.model_channels, cfg.latent_channels)
        self.logvar = nn.Linear(cfg.model_channels, cfg.latent_channels)

    def forward(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        h = self.stem(x)
        for res, down in zip(self.res, self.down):
            h = down(res(h))
        h = h.replace_feats(h.feats + sinusoidal_3d(h.coords, h.channels, h.stride))
        for blk in self.blocks:
            h = blk(h)
        f = self.norm(h.feats)
        return h.replace_feats(self.mu(f)), h.replace_feats(self.logvar(f).clamp(-30.0, 20.0))


class SparseDecoder(nn.Module):
    def __init__(self, cfg: SparseVAEConfig):
        super().__init__()
        c = list(cfg.channels)
        self.lift = nn.Linear(cfg.latent_channels, cfg.model_channels)
        self.blocks = nn.ModuleList([SparseTransformerBlock(cfg.model_channels, cfg.heads, cfg.window, shift=i % 2 == 1)
                                     for i in range(cfg.blocks)])
        self.norm = nn.LayerNorm(cfg.model_channels)
        ins = [cfg.model_channels] + c[::-1][:-1]
        self.up = nn.ModuleList([SparseUpsample(ci, co, cfg.upsample) for ci, co in zip(ins, c[::-1])])
        self.res = nn.ModuleList([SparseResBlock(co, cfg.groups) for co in c[::-1]])
        # occupancy heads that prune the created voxels after every up block but the last
        self.prune = nn.ModuleList([nn.Linear(co, 1) for co in c[::-1][:-1]])
        self.out = SubMConv3d(c[0], 1)
        # prior-probability initialisation of every occupancy logit (as in RetinaNet's classification head):
        # a thin vessel fills only a fraction PRIOR_OCCUPANCY of the children it creates, and an untrained decoder
        # that kept half of them at every level would evaluate ~64x more full-resolution voxels than a trained one
        prior = -math.log((1 - PRIOR_OCCUPANCY) / PRIOR_OCCUPANCY)
        for head in self.prune:
            nn.init.constant_(head.bias, prior)
        nn.init.constant_(self.out.bias, prior)

    def forward(self, z: SparseTensor, target: SparseTensor | None = None) -> dict[str, Any]:
        h = z.replace_feats(self.lift(z.feats))
        h = h.replace_feats(h.feats + sinusoidal_3d(h.coords, h.channels, h.stride))
        for blk in self.blocks:
            h = blk(h)
        h = h.replace_feats(self.norm(h.feats))
        levels = []
        for i, (up, res) in enumerate(zip(self.up, self.res)):
            h = res(up(h))
            if i < len(self.prune):
                logits = self.prune[i](h.feats)[:, 0]
                levels.append((h.coords, logits, h.stride))
                keep = logits.detach() > 0
                if target is not None:
                    keep |= contains(coarsen(target.coords, h.stride, target.spatial_shape), h.coords,
                                     h.spatial_shape)
                h = h.select(keep)
        out = self.out(h)
        return {"logits": out, "levels": levels}


class SparseVAE(nn.Module):
    """VAEsselSparse.  ``forward(x, target)`` returns the full-resolution occupancy logits on the evaluated voxels,
    the pruning-head logits of every level, and the posterior (``mu``, ``logvar``) on the bottleneck voxels."""

    def __init__(self, cfg: SparseVAEConfig = SparseVAEConfig()):
        super().__init__()
        if cfg.upsample not in ("transposed", "subdivide"):
            raise ValueError(f"upsample must be 'transposed' or 'subdivide', got {cfg.upsample!r}")
        self.cfg = cfg
        self.encoder = SparseEncoder(cfg)
        self.decoder = SparseDecoder(cfg)

    def encode(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        return self.encoder(x)

    def sample(self, mu: SparseTensor, logvar: SparseTensor) -> SparseTensor:
        if not self.training:
            return mu
        eps = torch.randn_like(mu.feats)
        return mu.replace_feats(mu.feats + torch.exp(0.5 * logvar.feats) * eps)

    def forward(self, x: SparseTensor, target: SparseTensor | None = None) -> dict[str, Any]:
        mu, logvar = self.encode(x)
        out = self.decoder(self.sample(mu, logvar), target)
        out.update(mu=mu, logvar=logvar)
        return out

    @torch.no_grad()
    def reconstruct(self, x: SparseTensor) -> SparseTensor:
        """Occupied voxels (logit > 0) of the reconstruction, posterior mean, no teacher forcing."""
        was = self.training
        self.eval()
        try:
            logits = self.forward(x)["logits"]
        finally:
            self.train(was)
        return logits.select(logits.feats[:, 0] > 0)


# ------------------------------------------------------------------------------------------------ helpers
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
