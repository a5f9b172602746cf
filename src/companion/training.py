"""Training plumbing shared by the chapters: the same plain PyTorch loop on one process and under torchrun.

One *epoch* is one pass over the training items in a seeded order.  Under ``torchrun`` (``torch.distributed``
initialised) the model is wrapped in ``DistributedDataParallel`` and rank ``r`` of ``w`` takes every ``w``-th item
of that order; every rank runs the same number of steps, and DDP averages the gradients, so all ranks hold
identical weights after every step.  Nothing else changes between one process and many.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_distributed(model: torch.nn.Module, find_unused: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under torchrun, else the model itself.  ``find_unused``: some parameters
    take no part in a step (e.g. the head of another training stage), so DDP must look for them."""
    rank, size = world()
    if size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   find_unused_parameters=find_unused)


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


def mean_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]} if stats else {}


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, n_items: int, batch_size: int, seed: int,
           epoch: int, loss_of: Callable, after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One epoch: for each of this rank's batches, ``loss_of(indices, rng) -> (loss, stats)``, backward, step, then
    ``after_step()`` if given (e.g. Mean Teacher's EMA update).  Seeded per epoch (model noise from torch's
    generator, data sampling from ``rng``), so a resumed or repeated run takes the same steps."""
    model.train()
    torch.manual_seed(seed * 100_003 + epoch)
    rng = np.random.default_rng([seed, epoch, 7])
    stats = []
    for idx in epoch_batches(n_items, batch_size, epoch, seed):
        loss, info = loss_of(idx, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        stats.append(info)
    return mean_stats(stats)


def write_rank_report(out: str | os.PathLike, digests: dict[str, str], **extra) -> None:
    """Write this rank's ``rank<r>.json`` into ``out``: rank, world size, the trained models' weight digests
    (:func:`state_digest`) and ``extra`` -- what a chapter's torchrun entry point leaves for its tests to compare."""
    import json
    from pathlib import Path

    rank, size = world()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": size, "digests": digests,
                                                         **extra}, indent=1))


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of all parameters and buffers (to compare ranks or runs bit for bit)."""
    m = model.module if hasattr(model, "module") else model
    h = hashlib.sha256()
    for name, t in sorted(m.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
