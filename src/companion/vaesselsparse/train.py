"""Training loops for the sparse VAE and the dense baseline -- plain PyTorch, and the same under torchrun.

One *epoch* is one pass over the training volumes in a seeded order.  Under ``torchrun`` (``torch.distributed``
initialised) the model is wrapped in ``DistributedDataParallel`` and rank ``r`` of ``w`` takes every ``w``-th
volume of that order; every rank runs the same number of steps, and DDP averages the gradients, so all ranks hold
identical weights after every step.  Nothing else changes between one process and many.

Command line (what the DDP test and multi-GPU users run)::

    torchrun --nproc_per_node 2 -m companion.vaesselsparse.train --scale ci --epochs 1 --out /tmp/ddp
    # GPUs: add --device cuda (each rank uses cuda:LOCAL_RANK); CPU: gloo backend
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..sparse import from_masks
from ..training import distributed, epoch_batches, run_epoch, state_digest, world, wrap_distributed  # noqa: F401
from .dense import sample_patches
from .loss import dense_vae_loss, sparse_vae_loss


def sparse_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, volumes: list[np.ndarray], *,
                 batch_size: int, beta: float, seed: int, device: str = "cpu",
                 support: str = "union") -> Callable[[int], dict[str, float]]:
    """``run(epoch) -> mean losses``: one epoch of VAEsselSparse training (Eq. 5-6, teacher-forced pruning)."""

    def loss_of(idx: list[int], rng: np.random.Generator):
        x = from_masks([volumes[i] for i in idx], device)
        return sparse_vae_loss(model(x, x), x, beta, support)

    return lambda epoch: run_epoch(model, optimizer, len(volumes), batch_size, seed, epoch, loss_of)


def dense_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, volumes: list[np.ndarray], *,
                batch_size: int, beta: float, patch: int, seed: int, device: str = "cpu",
                dice_weight: float = 1.0) -> Callable[[int], dict[str, float]]:
    """``run(epoch) -> mean losses``: one epoch of dense-VAE training on random ``patch``-cubed patches."""

    def loss_of(idx: list[int], rng: np.random.Generator):
        x = sample_patches(volumes, idx, patch, rng).to(device)
        recon, mu, sigma = model(x)
        return dense_vae_loss(recon, mu, sigma, x, beta, dice_weight)

    return lambda epoch: run_epoch(model, optimizer, len(volumes), batch_size, seed, epoch, loss_of)


def main(argv: list[str] | None = None) -> int:
    """Train with the chapter's own functions (``chapter.train_sparse`` / ``train_dense``): the same code the
    notebook runs, here under torchrun.  Checkpoints go to the usual cache (``$COMPANION_CHECKPOINTS``), so an
    interrupted run resumes; each rank writes ``rank<r>.json`` (its weights' digest and loss history) to ``--out``."""
    from ..chapter import start
    from . import chapter as ch

    ap = argparse.ArgumentParser(prog="python -m companion.vaesselsparse.train",
                                 description="Train the VAEsselSparse model (or the dense baseline); torchrun-ready.")
    ap.add_argument("--scale", default="ci", choices=["ci", "laptop", "paper"])
    ap.add_argument("--model", default="sparse", choices=["sparse", "dense"])
    ap.add_argument("--epochs", type=int, default=None, help="default: the scale preset's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="default", choices=["default", "synthetic", "consolidated"],
                    help="offline stand-in trees, or the paper's set from `companion data consolidate`")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    ap.add_argument("--out", required=True, help="folder for the per-rank JSON files")
    args = ap.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")

    with distributed(args.device) as device:
        overrides = {} if args.epochs is None else {"epochs": args.epochs, "dense_epochs": args.epochs}
        run = start("vaesselsparse", scale=args.scale, data=args.data, device=device, seed=args.seed,
                    output_dir=args.out, overrides=overrides)
        data = ch.load_data(run)
        state = ch.train_sparse(run, data) if args.model == "sparse" else ch.train_dense(run, data)
        rank, size = world()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "world_size": size, "digest": state_digest(state.model), "source": state.source,
             "checkpoint": str(state.path), "history": state.history}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
