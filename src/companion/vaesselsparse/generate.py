"""Unconditional generation in a VAE's latent space with flow matching (Lipman et al. 2023).

The network is MONAI's ``DiffusionModelUNet`` with three encoder and three decoder levels (the paper: "a denoising
U-Net with three encoder and decoder blocks", from MONAI's generative models, ref. [9]); the path and the sampler are
MONAI's rectified-flow scheduler (``RFlowScheduler``): a training latent ``x0`` and Gaussian noise ``e`` are mixed as
``x_t = (1 - t) x0 + t e`` and the U-Net regresses the velocity ``x0 - e`` with a squared error (the flow-matching
loss); sampling integrates that velocity from noise to ``t = 0`` with Euler steps.

Ours: latents are standardised per channel with the training set's mean and standard deviation (the occupancy
channel of a sparse grid is mapped to -1 / +1) and zero-padded to a multiple of 4 positions per axis (two
down-samplings); the widths, the number of sampling steps and, below paper scale, the schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..progress import progress


def _per_channel(v: np.ndarray) -> np.ndarray:
    """A per-channel vector shaped to broadcast over ``(N, C, d, d, d)``."""
    return v[:, None, None, None]


@dataclass
class Standardiser:
    """Per-channel affine map of latent grids ``(N, C, d, d, d)`` to zero mean and unit variance; with
    ``occupancy=True`` the last channel (0/1) is mapped to -1/+1 instead and back by thresholding at 0."""
    mean: np.ndarray
    std: np.ndarray
    occupancy: bool

    @classmethod
    def fit(cls, x: np.ndarray, occupancy: bool) -> "Standardiser":
        feats = x[:, :-1] if occupancy else x
        if occupancy:  # statistics over occupied positions only: the zeros elsewhere are not values
            occ = x[:, -1:] > 0.5
            vals = [feats[:, c][occ[:, 0]] for c in range(feats.shape[1])]
            mean = np.array([v.mean() if v.size else 0.0 for v in vals])
            std = np.array([v.std() + 1e-6 if v.size else 1.0 for v in vals])
        else:
            mean, std = feats.mean(axis=(0, 2, 3, 4)), feats.std(axis=(0, 2, 3, 4)) + 1e-6
        return cls(mean.astype(np.float32), std.astype(np.float32), occupancy)

    def forward(self, x: np.ndarray) -> np.ndarray:
        mean, std = _per_channel(self.mean), _per_channel(self.std)
        if not self.occupancy:
            return ((x - mean) / std).astype(np.float32)
        feats = (x[:, :-1] - mean) / std
        occ = x[:, -1:] > 0.5
        return np.concatenate([feats * occ, np.where(occ, 1.0, -1.0)], axis=1).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        mean, std = _per_channel(self.mean), _per_channel(self.std)
        if not self.occupancy:
            return (z * std + mean).astype(np.float32)
        occ = (z[:, -1:] > 0).astype(np.float32)
        feats = (z[:, :-1] * std + mean) * occ
        return np.concatenate([feats, occ], axis=1).astype(np.float32)


def padded(d: int, multiple: int = 4) -> int:
    return -(-d // multiple) * multiple


def build_unet(channels: int, widths: list[int]) -> torch.nn.Module:
    """MONAI's DiffusionModelUNet, 3D, three levels of ``widths`` (one residual block each, no attention)."""
    from monai.networks.nets import DiffusionModelUNet

    if len(widths) != 3:
        raise ValueError(f"the paper's U-Net has three encoder and decoder blocks: give 3 widths, got {widths}")
    groups = min(8, min(widths))
    return DiffusionModelUNet(spatial_dims=3, in_channels=channels, out_channels=channels, channels=tuple(widths),
                              attention_levels=(False, False, False), num_res_blocks=1, norm_num_groups=groups)


def scheduler():
    from monai.networks.schedulers import RFlowScheduler

    return RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=False, sample_method="uniform")


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    d = x.shape[-1]
    return torch.nn.functional.pad(x, (0, size - d) * 3) if size != d else x


def flow_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor, *, batch: int, epoch: int,
               seed: int) -> dict[str, float]:
    """One epoch of the flow-matching loss over standardised, padded latents ``data``: ``{"loss": mean}``.
    Under torchrun (``model`` wrapped in DistributedDataParallel) each rank takes its share of the epoch's batches
    (part 1's :func:`~companion.vaesselsparse.train.epoch_batches`) and draws its own noise and times."""
    from .train import epoch_batches, world

    sched = scheduler()
    rank, _ = world()
    gen = torch.Generator().manual_seed((seed * 100003 + epoch) * 1009 + rank)
    losses = []
    model.train()
    dev = next(model.parameters()).device
    for idx in epoch_batches(len(data), min(batch, len(data)), epoch, seed):
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.rand(len(x0), generator=gen) * sched.num_train_timesteps
        xt = sched.add_noise(x0, noise, t)
        x0, noise, xt, t = x0.to(dev), noise.to(dev), xt.to(dev), t.to(dev)
        loss = torch.nn.functional.mse_loss(model(xt, timesteps=t), x0 - noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"loss": float(np.mean(losses))}


@torch.no_grad()
def sample(model: torch.nn.Module, n: int, shape: tuple[int, ...], steps: int, seed: int, d: int,
           batch: int = 16) -> np.ndarray:
    """``n`` latents of ``shape = (C, D, D, D)`` (padded size) from noise by ``steps`` Euler steps of the learned
    velocity, cropped back to ``d`` positions per axis: ``(n, C, d, d, d)``."""
    sched = scheduler()
    sched.set_timesteps(steps)
    ts = list(sched.timesteps) + [torch.tensor(0.0)]
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in progress(range(0, n, batch), desc="sampling", leave=False):
        x = torch.randn((min(batch, n - i), *shape), generator=gen).to(dev)
        for t, t_next in zip(ts[:-1], ts[1:]):
            v = model(x, timesteps=torch.full((len(x),), float(t), device=dev))
            x, _ = sched.step(v, float(t), x, float(t_next))
        out.append(x[..., :d, :d, :d].cpu())
    return torch.cat(out).numpy()


def prepare(latents: np.ndarray, occupancy: bool) -> tuple[torch.Tensor, Standardiser, int]:
    """Standardise and pad training latents: (tensor, standardiser, padded size)."""
    st = Standardiser.fit(latents, occupancy)
    size = padded(latents.shape[-1])
    return _pad(torch.as_tensor(st.forward(latents)), size), st, size



def main(argv: list[str] | None = None) -> int:
    """Train both flow-matching U-Nets with the chapter's own function (``latent_chapter.train_flows``), under
    torchrun at paper scale: ``torchrun --nproc_per_node 4 -m companion.vaesselsparse.generate --scale paper
    --device cuda``.  Part 1's VAEs come from the checkpoint cache (trained first if missing); the flows' weights
    go to the same cache, which the notebook then loads."""
    import argparse

    from ..chapter import start
    from . import latent_chapter as vl
    from .train import distributed

    ap = argparse.ArgumentParser(prog="python -m companion.vaesselsparse.generate",
                                 description="Train the flow-matching U-Nets of chapter 1 part 2; torchrun-ready.")
    ap.add_argument("--scale", default="ci", choices=["ci", "laptop", "paper"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    ap.add_argument("--out", default=None, help="results root (default: $COMPANION_RESULTS or ./results)")
    args = ap.parse_args(argv)
    with distributed(args.device) as device:
        run = start("vaesselsparse_latent", scale=args.scale, device=device, seed=args.seed, output_dir=args.out)
        vl.check(run)
        flows = vl.train_flows(run, vl.load_vaes(run), vl.generation_data(run))
        for name, f in flows.items():
            print(f"{name}: {f['state'].source}, last loss {f['state'].history[-1]['loss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
