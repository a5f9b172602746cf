"""The patch VAE of Hsu, Gu et al. (2021) and its Euclidean and autoencoder relatives.

Paper facts
-----------
- Section 3.2: a 3-D convolutional VAE takes an ``m x m x m`` patch; the encoder's output is mapped onto the
  Poincaré ball with the exponential map (after Mathieu et al. 2019); prior and posterior are wrapped normals;
  the decoder's first layer is the gyroplane convolution.
- Section 4 ("Implementation details"): encoder of four 3-D convolutions with kernel 5 and 16/32/64/128 filters;
  the decoder mirrors it with decreasing depth; latent dimension ``d = 2``; Adam.
- Table 2's ablations: a Euclidean VAE (same network, Gaussian latent), the hyperbolic VAE without the gyroplane
  layer, and with it.

Our choices
-----------
- Stride 2 and padding 2 in every encoder convolution, so a ``10³`` patch becomes ``5³, 3³, 2³, 1³``; two linear
  maps give the posterior's mean (a tangent vector at the origin, then ``expmap0`` on the ball) and its scale
  (softplus, one value per coordinate).  The decoder mirrors this with transposed convolutions of kernel 5
  (``1³ -> 2³ -> 3³ -> 5³ -> 10³`` for ``m = 10``; other ``m`` are rejected).
- The decoder's first layer maps the latent point to 128 channels at one voxel:

  * Euclidean latent: a linear map;
  * hyperbolic latent without gyroplane layer: a linear map of ``logmap0(z)`` (Mathieu et al.'s "wrapped" decoder);
  * hyperbolic latent with the gyroplane layer: :class:`~companion.hyperbolic.gyroplane.GyroplaneConv3d` on the
    one-voxel latent map.  On a single voxel Eq. 7's window sum has one term, so the layer is Ganea et al.'s
    gyroplane layer (Eq. 5) with one ``(a, p)`` per output channel.
- Reconstruction term: the summed squared error over the patch's voxels (a Gaussian likelihood with fixed variance
  ``1/2``, up to a constant).  KL term: analytic for the Euclidean VAE; a one-sample Monte Carlo estimate
  ``log q(z|x) - log p(z)`` with the wrapped normals of :mod:`.wrapped_normal` for the hyperbolic one (as Mathieu
  et al. do), prior the wrapped normal at the origin with unit scale.
- ``kind="ae"`` is a deterministic autoencoder with the same network (Nalepa et al. 2020's baseline: no sampling,
  no KL term).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from geoopt import PoincareBall
from torch import nn

from . import wrapped_normal as wn
from .gyroplane import GyroplaneConv3d

KINDS = ("euclidean", "hyperbolic", "ae")
PAPER_CHANNELS = (16, 32, 64, 128)
_OUTPUT_PADDING = {10: (1, 0, 0, 1)}  # m -> output_padding of the 4 transposed convs (1 -> 2 -> 3 -> 5 -> 10)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "hyperbolic"  # one of KINDS
    gyroconv: bool = False  # first decoder layer: gyroplane convolution (hyperbolic only)
    latent_dim: int = 2
    channels: tuple[int, ...] = PAPER_CHANNELS
    patch: int = 10  # m, the encoder's input size
    c: float = 1.0  # curvature -c of the ball

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.gyroconv and self.kind != "hyperbolic":
            raise ValueError("the gyroplane layer needs a hyperbolic latent (kind='hyperbolic')")
        if self.patch not in _OUTPUT_PADDING:
            raise ValueError(f"patch (m) must be one of {sorted(_OUTPUT_PADDING)}; got {self.patch}")
        if len(self.channels) != 4:
            raise ValueError(f"channels must list the 4 encoder widths (paper: {PAPER_CHANNELS}), got {self.channels}")
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be positive")

    @property
    def geometry(self) -> str:
        return "hyperbolic" if self.kind == "hyperbolic" else "euclidean"


class Encoder(nn.Module):
    def __init__(self, channels: tuple[int, ...], latent_dim: int):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv3d(c_in, c, 5, stride=2, padding=2), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.mean = nn.Linear(c_in, latent_dim)
        self.scale = nn.Linear(c_in, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        if h.shape[1] != self.mean.in_features:
            raise ValueError(f"encoder input {tuple(x.shape[2:])} does not reduce to one voxel")
        return self.mean(h), F.softplus(self.scale(h)) + 1e-4


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch = list(reversed(cfg.channels))  # 128, 64, 32, 16
        self.cfg = cfg
        if cfg.gyroconv:
            self.first = GyroplaneConv3d(cfg.latent_dim, ch[0], kernel_size=1, c=cfg.c)
        else:
            self.first = nn.Linear(cfg.latent_dim, ch[0])
        ups, pads = [], _OUTPUT_PADDING[cfg.patch]
        outs = ch[1:] + [1]
        for i, (c_in, c_out) in enumerate(zip(ch, outs)):
            ups.append(nn.ConvTranspose3d(c_in, c_out, 5, stride=2, padding=2, output_padding=pads[i]))
            if i < len(outs) - 1:
                ups.append(nn.ReLU())
        self.up = nn.Sequential(*ups)
        self.manifold = PoincareBall(c=cfg.c)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.gyroconv:
            h = self.first(z[:, :, None, None, None])
        else:
            if self.cfg.kind == "hyperbolic":
                z = self.manifold.logmap0(z)
            h = self.first(z)[:, :, None, None, None]
        return self.up(F.relu(h))


class PatchVAE(nn.Module):
    """Encoder, latent distribution and decoder for ``(B, 1, m, m, m)`` patches."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.channels, cfg.latent_dim)
        self.decoder = Decoder(cfg)
        self.manifold = PoincareBall(c=cfg.c)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean (on the ball for ``kind='hyperbolic'``) and scale."""
        mu, scale = self.encoder(x)
        if self.cfg.kind == "hyperbolic":
            mu = self.manifold.projx(self.manifold.expmap0(mu))
        return mu, scale

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The latent space's metric: Poincaré distance (Eq. 1) or Euclidean distance."""
        if self.cfg.kind == "hyperbolic":
            return self.manifold.dist(a, b)
        return (a - b).norm(dim=-1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, scale = self.encode(x)
        if self.cfg.kind == "ae":
            z, kl = mu, mu.new_zeros(mu.shape[0])
        elif self.cfg.kind == "euclidean":
            z = mu + scale * torch.randn_like(mu)
            kl = 0.5 * (mu ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum(-1)
        else:
            z = wn.rsample(mu, scale, self.manifold)
            z = self.manifold.projx(z)
            log_q = wn.log_prob(z, mu, scale, self.manifold)
            log_p = wn.log_prob(z, torch.zeros_like(mu), 1.0, self.manifold)
            kl = log_q - log_p
        recon = self.decoder(z)
        rec = ((recon - x) ** 2).flatten(1).sum(1)
        return {"mu": mu, "scale": scale, "z": z, "recon": recon, "rec": rec, "kl": kl}


def triplet_loss(model: PatchVAE, mu_anchor: torch.Tensor, mu_pos: torch.Tensor, mu_neg: torch.Tensor,
                 margin: float) -> torch.Tensor:
    """Eq. 8: ``max(0, d(mu_p, mu_pos) - d(mu_p, mu_neg) + margin)`` per triplet, with the latent metric."""
    return F.relu(model.distance(mu_anchor, mu_pos) - model.distance(mu_anchor, mu_neg) + margin)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
