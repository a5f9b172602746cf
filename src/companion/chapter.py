"""What every chapter notebook does in its first cells: validate the parameters, seed, pick the device, open the
results folder.  Wrong values fail here, before any long computation, with a message that lists the valid choices.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .data.download import DataAccessError, verify
from .data.manifests import load_manifests
from .results import Results
from .scales import CHAPTER_DATA, chapter_config, get_scale, run_settings

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA, then MPS, then CPU. Asking for an accelerator that is absent is an error."""
    import torch

    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)} (or cuda:N)")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda else ("mps" if mps else "cpu")
    if device.startswith("cuda") and not cuda:
        raise ValueError(f"device={device!r} but CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use device='auto' or 'cpu'")
    if device == "mps" and not mps:
        raise ValueError("device='mps' but MPS is not available; use device='auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def data_choices(chapter: str) -> dict[str, str]:
    """Valid values of a chapter's `data` parameter: its offline stand-ins, data derived from several manifest
    datasets (e.g. the VAEsselSparse consolidated set) and the manifest datasets it uses."""
    if chapter not in CHAPTER_DATA:
        raise ValueError(f"unknown chapter {chapter!r}; chapters: {', '.join(CHAPTER_DATA)}")
    out = dict(CHAPTER_DATA[chapter]["standins"])
    out.update(CHAPTER_DATA[chapter].get("derived", {}))
    if CHAPTER_DATA[chapter].get("manifests", True):
        for m in load_manifests().values():
            if chapter in m.chapters:
                out[m.id] = f"{m.title} ({m.access})"
    return out


def resolve_data(chapter: str, scale: str, data: str) -> tuple[str, str]:
    """Return (data id, human label). Unknown ids and datasets not present on this machine fail with what to do."""
    if data in (None, "default"):
        data = CHAPTER_DATA[chapter]["default"][scale]
    choices = data_choices(chapter)
    if data not in choices:
        listing = "\n".join(f"  {k}: {v}" for k, v in choices.items())
        raise ValueError(f"unknown data {data!r} for chapter {chapter!r}; valid choices:\n{listing}")
    standins = CHAPTER_DATA[chapter]["standins"]
    if data in standins:
        return data, standins[data]
    derived = CHAPTER_DATA[chapter].get("derived", {})
    if data in derived:
        from .data.derived import derived_problems

        problems = derived_problems(data)
        if problems:
            raise DataAccessError(f"data {data!r} is not ready on this machine:\n" + "\n".join(problems))
        return data, f"{derived[data]} (real data)"
    problems = verify(data)
    if problems:
        raise DataAccessError(f"dataset {data!r} is not ready on this machine:\n" + "\n".join(problems))
    return data, f"{load_manifests()[data].title} (real data)"


@dataclass
class ChapterRun:
    chapter: str
    scale: str
    data: str
    device: str
    seed: int
    cfg: dict[str, Any]
    results: Results
    seeds: tuple[int, ...] = (0,)  # training seeds of the headline comparisons (the first is ``seed``)
    threads: int | None = None  # torch's CPU threads (None: torch's default)

    def __repr__(self) -> str:  # shown in the notebook: what the chapter runs with, no path of this machine
        where = self.results.dir.resolve()
        try:
            where = where.relative_to(Path.cwd())
        except ValueError:
            where = Path("…") / where.relative_to(where.parents[2])  # <results root>/<chapter>/<scale>: its tail
        overrides = ", ".join(f"{k}={v!r}" for k, v in (self.results.params.get("overrides") or {}).items())
        seeds = ", ".join(map(str, self.seeds))
        return (f"chapter {self.chapter}: scale {self.scale}, data {self.data}, seed {self.seed} (training seeds "
                f"{seeds}), threads {self.threads or 'default'}, device {self.device}, overrides "
                f"{overrides or 'none'}; results in {where.as_posix()}")


def start(chapter: str, *, scale: str = "laptop", data: str = "default", device: str = "auto", seed: int = 0,
          output_dir: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> ChapterRun:
    """Validate every notebook parameter, seed all RNGs, set torch's thread count and open
    ``results/<chapter>/<scale>/``.  The training seeds and threads come from
    :func:`companion.scales.run_settings` (``$COMPANION_SEEDS``, ``$COMPANION_THREADS``, else the scale's); the
    first training seed is the run's ``seed``."""
    import torch

    get_scale(scale)
    cfg = chapter_config(chapter, scale, overrides)
    dev = resolve_device(device)
    seeds, threads = run_settings(scale, seed)
    seed = seeds[0]
    seed_everything(seed)
    if threads:
        torch.set_num_threads(threads)
    data_id, label = resolve_data(chapter, scale, data)
    params = {"scale": scale, "data": data_id, "device": dev, "seed": seed, "seeds": list(seeds),
              "threads": threads or torch.get_num_threads(), "overrides": dict(overrides or {}), "config": cfg}
    results = Results(chapter, scale, root=output_dir, seed=seed, data_label=label, params=params)
    return ChapterRun(chapter, scale, data_id, dev, seed, cfg, results, seeds, threads)


def training_arguments(ap: Any, methods: Mapping[str, Any]) -> None:
    """The options every chapter's ``python -m companion.<chapter>`` training entry point shares (torchrun-ready):
    ``--scale --data --seed --device --methods --set --out``; read them back with :func:`parse_training_arguments`."""
    ap.add_argument("--scale", default="ci", choices=["ci", "laptop", "paper"])
    ap.add_argument("--data", default="default", help="default, or one of the chapter's data choices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    ap.add_argument("--methods", default=",".join(methods), help="comma-separated names of the chapter's METHODS")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a preset knob")
    ap.add_argument("--out", required=True, help="folder for results and the per-rank JSON files")


def parse_training_arguments(ap: Any, methods: Mapping[str, Any], argv: list[str] | None = None
                             ) -> tuple[Any, list[str], dict[str, Any]]:
    """``(args, method names, overrides)``; unknown methods and values that are not JSON end in ``ap.error``."""
    import json

    args = ap.parse_args(argv)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in names if m not in methods]
    if bad:
        ap.error(f"unknown methods {bad}; valid: {', '.join(methods)}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            ap.error(f"--set {item!r}: the value must be JSON (e.g. 3, 0.01, [32, 64, 64])")
    return args, names, overrides
