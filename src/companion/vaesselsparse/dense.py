"""The dense baseline: MONAI's AutoencoderKL (the MAISI autoencoder family the paper's dense VAE comes from).

MAISI's configuration compresses 4x per axis; VAEsselSparse compresses 8x, so the baseline gets one more level
(four channel entries = three downsamplings).  No attention (as in the paper's "three encoder-decoder blocks"), one
residual block per level, and channel widths chosen by :func:`matched_dense_channels` so that its parameter count
is as close as possible to the sparse model's.  Like the paper's, it is trained on patches (its memory grows with
the grid volume) and, being fully convolutional, reconstructs whole volumes at evaluation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DenseVAEConfig:
    channels: tuple[int, int, int, int] = (16, 32, 64, 64)
    latent_channels: int = 8
    num_res_blocks: int = 1
    norm_num_groups: int = 8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_dense_vae(cfg: DenseVAEConfig) -> torch.nn.Module:
    from monai.networks.nets import AutoencoderKL

    if any(c % cfg.norm_num_groups for c in cfg.channels):
        raise ValueError(f"dense VAE channels {cfg.channels} must be multiples of norm_num_groups "
                         f"({cfg.norm_num_groups})")
    return AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=cfg.channels,
                         latent_channels=cfg.latent_channels, num_res_blocks=(cfg.num_res_blocks,) * 4,
                         attention_levels=(False,) * 4, norm_num_groups=cfg.norm_num_groups,
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def dense_parameters(cfg: DenseVAEConfig) -> int:
    return sum(p.numel() for p in build_dense_vae(cfg).parameters())


def matched_dense_channels(target_params: int, latent_channels: int, groups: int = 8,
                           widths: tuple[float, ...] = (1, 2, 4, 4)) -> DenseVAEConfig:
    """The dense configuration with channels ``base * widths`` (multiples of ``groups``) whose parameter count is
    closest to ``target_params``."""
    best = None
    for base in range(1, 257):
        ch = tuple(max(1, int(round(base * w / groups))) * groups for w in widths)
        cfg = DenseVAEConfig(ch, latent_channels, 1, groups)  # type: ignore[arg-type]
        n = dense_parameters(cfg)
        if best is None or abs(n - target_params) < abs(best[0] - target_params):
            best = (n, cfg)
        if n > target_params:
            break
    return best[1]


def sample_patches(volumes: list[np.ndarray], idx: list[int], patch: int, rng: np.random.Generator,
                   foreground_fraction: float = 0.67) -> torch.Tensor:
    """``(B, 1, p, p, p)`` float patches; with probability ``foreground_fraction`` a patch is centred on a random
    vessel voxel (so that most patches see vessels), otherwise placed uniformly."""
    out = []
    for i in idx:
        v = volumes[i]
        shape = np.array(v.shape)
        if patch > shape.min():
            raise ValueError(f"patch size {patch} exceeds the volume shape {tuple(shape)}")
        if rng.random() < foreground_fraction and v.any():
            fg = np.argwhere(v)
            centre = fg[rng.integers(len(fg))]
            lo = np.clip(centre - patch // 2, 0, shape - patch)
        else:
            lo = rng.integers(0, shape - patch + 1)
        sl = tuple(slice(int(a), int(a) + patch) for a in lo)
        out.append(torch.as_tensor(v[sl], dtype=torch.float32))
    return torch.stack(out)[:, None]
