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
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ..sparse import from_masks
from .dense import sample_patches
from .loss import dense_vae_loss, sparse_vae_loss


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_distributed(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under torchrun, else the model itself."""
    rank, size = world()
    if size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


@contextmanager
def distributed(device: str) -> Iterator[str]:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (nccl on CUDA, gloo on CPU), give each rank its
    own GPU (``cuda:LOCAL_RANK``), yield this rank's device, and leave the group on exit.  Otherwise yield
    ``device`` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield device
        return
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        yield device
    finally:
        dist.destroy_process_group()


def epoch_batches(n_items: int, batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    """This rank's batches for ``epoch``: a seeded permutation, dealt round-robin to the ranks, cut to the same
    number of full batches on every rank."""
    rank, size = world()
    perm = np.random.default_rng([seed, epoch]).permutation(n_items)
    per_rank = (n_items // size) // batch_size * batch_size
    if per_rank == 0:
        raise ValueError(f"{n_items} training volumes are too few for batch size {batch_size} on {size} rank(s)")
    mine = perm[rank::size][:per_rank]
    return [mine[i:i + batch_size].tolist() for i in range(0, per_rank, batch_size)]


def _mean(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]} if stats else {}


def _epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, n_items: int, batch_size: int, seed: int,
           epoch: int, loss_of: Callable) -> dict[str, float]:
    """One epoch: for each of this rank's batches, ``loss_of(indices, rng) -> (loss, stats)``, backward, step.
    Seeded per epoch (model noise from torch's generator, data sampling from ``rng``), so a resumed or repeated
    run takes the same steps."""
    model.train()
    torch.manual_seed(seed * 100_003 + epoch)
    rng = np.random.default_rng([seed, epoch, 7])
    stats = []
    for idx in epoch_batches(n_items, batch_size, epoch, seed):
        loss, info = loss_of(idx, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats.append(info)
    return _mean(stats)


def sparse_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, volumes: list[np.ndarray], *,
                 batch_size: int, beta: float, seed: int, device: str = "cpu",
                 support: str = "union") -> Callable[[int], dict[str, float]]:
    """``run(epoch) -> mean losses``: one epoch of VAEsselSparse training (Eq. 5-6, teacher-forced pruning)."""

    def loss_of(idx: list[int], rng: np.random.Generator):
        x = from_masks([volumes[i] for i in idx], device)
        return sparse_vae_loss(model(x, x), x, beta, support)

    return lambda epoch: _epoch(model, optimizer, len(volumes), batch_size, seed, epoch, loss_of)


def dense_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, volumes: list[np.ndarray], *,
                batch_size: int, beta: float, patch: int, seed: int, device: str = "cpu",
                dice_weight: float = 1.0) -> Callable[[int], dict[str, float]]:
    """``run(epoch) -> mean losses``: one epoch of dense-VAE training on random ``patch``-cubed patches."""

    def loss_of(idx: list[int], rng: np.random.Generator):
        x = sample_patches(volumes, idx, patch, rng).to(device)
        recon, mu, sigma = model(x)
        return dense_vae_loss(recon, mu, sigma, x, beta, dice_weight)

    return lambda epoch: _epoch(model, optimizer, len(volumes), batch_size, seed, epoch, loss_of)


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of all parameters and buffers (to compare ranks or runs bit for bit)."""
    m = model.module if hasattr(model, "module") else model
    h = hashlib.sha256()
    for name, t in sorted(m.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
