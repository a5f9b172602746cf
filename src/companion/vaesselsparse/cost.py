"""Cost of one training step, sparse VAE vs dense VAE of equal compression, as the grid grows.

Each measurement runs in a fresh Python process (``python -m companion.vaesselsparse.cost``) so that its peak
memory is its own: the process builds the model, the optimizer and one input volume, notes its resident memory,
runs one warm-up step and ``steps`` timed steps (what a training step does: the sparse tensor and its neighbour
tables built from the map, forward, loss, backward, optimizer step), and reports the median
step time, the peak tensor memory of a step (CUDA: ``max_memory_allocated``; CPU: PyTorch's ``MemTracker`` on one
extra step) and, on the CPU, the peak resident memory above the pre-step level.

The input is a vessel map at a chosen occupancy: trees of the three presets (airway, cerebral, pulmonary; seeded)
are overlaid until the target fraction of voxels is vessel -- an organ-level map with several trees, like the
paper's arteries-plus-veins volumes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np


def benchmark_volume(grid: int, occupancy: float, seed: int = 0) -> np.ndarray:
    from ..data.vessels import KINDS, generate_tree

    if not 0 < occupancy < 0.2:
        raise ValueError(f"occupancy must be in (0, 0.2), got {occupancy}")
    vol = np.zeros((grid,) * 3, dtype=bool)
    i = 0
    while vol.mean() < occupancy:
        if i >= 60:
            raise RuntimeError(f"could not reach occupancy {occupancy} at grid {grid} with 60 trees")
        vol |= generate_tree(KINDS[i % len(KINDS)], grid=grid, seed=seed + i).volume
        i += 1
    return vol


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 20


class _PeakRSS:
    """Highest resident memory seen while the block runs, polled every ``interval`` seconds on a thread (the
    lifetime peak ``ru_maxrss`` would include the imports and the data generation before the block)."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0.0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss / 2 ** 20)
            time.sleep(self.interval)

    def __enter__(self) -> "_PeakRSS":
        self.peak = self.proc.memory_info().rss / 2 ** 20
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss / 2 ** 20)


def _tensor_peak_mb(model, opt, step) -> float:
    """Peak memory of the tensors alive during one more training step (parameters, gradients, optimizer state,
    activations, temporaries), tracked op by op by PyTorch's ``MemTracker`` -- on the CPU, the counterpart of
    ``torch.cuda.max_memory_allocated``, free of the C allocator's retention that inflates the resident set size."""
    import torch

    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # a private tool of PyTorch; absent from some builds
        return float("nan")
    mt = MemTracker()
    mt.track_external(model, opt)
    with warnings.catch_warnings():  # its module hooks warn about modules without backward hooks; harmless here
        warnings.simplefilter("ignore", UserWarning)
        with mt:
            loss = step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return float(mt.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]) / 2 ** 20


def measure_step(model_kind: str, grid: int, occupancy: float, cfg: dict[str, Any], steps: int = 2,
                 device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Run in *this* process; prefer :func:`measure` (fresh process).

    ``peak_mb``: peak tensor memory of a training step (CUDA: ``max_memory_allocated``; CPU: PyTorch's
    ``MemTracker``).  ``rss_peak_mb`` (CPU): the highest resident set size during the timed steps minus the one before
    them (polled every 2 ms) -- what the operating system sees, allocator retention included."""
    import torch

    from . import chapter as ch
    from ..sparse import from_masks
    from .loss import dense_vae_loss, sparse_vae_loss

    torch.manual_seed(seed)
    vol = benchmark_volume(grid, occupancy, seed)
    if model_kind == "sparse":
        model = ch.build_sparse(cfg).to(device)

        def step():  # as in training: a fresh sparse tensor, so the neighbour tables are built anew every step
            x = from_masks([vol], device)
            loss, _ = sparse_vae_loss(model(x, x), x, cfg["beta"])
            return loss
    elif model_kind == "dense":
        model = ch.build_dense(cfg).to(device)
        x = torch.as_tensor(vol, dtype=torch.float32, device=device)[None, None]

        def step():
            recon, mu, sigma = model(x)
            return dense_vae_loss(recon, mu, sigma, x, cfg["beta"])[0]
    else:
        raise ValueError(f"model_kind must be 'sparse' or 'dense', got {model_kind!r}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2 ** 20
    else:
        base = _rss_mb()
    times = []
    with _PeakRSS() as rss:
        for i in range(steps + 1):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()
            if i:  # the first step warms up (allocator, kernel maps)
                times.append(time.perf_counter() - t0)
    if cuda:
        tensor_peak = torch.cuda.max_memory_allocated() / 2 ** 20
        rss_peak = float("nan")
    else:
        tensor_peak = _tensor_peak_mb(model, opt, step)
        rss_peak = max(0.0, rss.peak - base)
    return {"model": model_kind, "grid": grid, "active_voxels": int(vol.sum()), "occupancy": float(vol.mean()),
            "step_s": float(np.median(times)), "peak_mb": tensor_peak, "rss_peak_mb": rss_peak, "steps": steps,
            "params": sum(p.numel() for p in model.parameters()), "device": device,
            "threads": torch.get_num_threads()}


def measure(model_kind: str, grid: int, occupancy: float, cfg: dict[str, Any], steps: int = 2,
            device: str = "cpu", seed: int = 0, timeout: float = 1800) -> dict[str, Any]:
    """:func:`measure_step` in a fresh process (clean peak memory)."""
    cmd = [sys.executable, "-m", "companion.vaesselsparse.cost", "--model", model_kind, "--grid", str(grid),
           "--occupancy", str(occupancy), "--steps", str(steps), "--device", device, "--seed", str(seed),
           "--config", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"cost measurement {model_kind} at {grid}^3 failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m companion.vaesselsparse.cost")
    ap.add_argument("--model", required=True, choices=["sparse", "dense"])
    ap.add_argument("--grid", type=int, required=True)
    ap.add_argument("--occupancy", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", required=True, help="the chapter configuration as JSON")
    a = ap.parse_args(argv)
    print(json.dumps(measure_step(a.model, a.grid, a.occupancy, json.loads(a.config), a.steps, a.device, a.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
