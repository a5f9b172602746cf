"""Checkpoint cache: load a trained model when a valid checkpoint exists, else train it, saving as it goes.

A checkpoint is keyed by chapter, model name, a hash of the training configuration and the ``companion`` version,
so changing any hyper-parameter (or the code's version) trains anew instead of loading a stale model.

* Files: ``<root>/<chapter>/<model>/<key>.pt`` (final) and ``<key>.partial.pt`` (resumable, written every
  `save_every` epochs).  Root: ``$COMPANION_CHECKPOINTS`` or ``<results root>/checkpoints``.
* Every write is atomic (temporary file, then rename): a run killed mid-save leaves the previous file intact.
* Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
* :data:`REGISTRY` may list downloadable checkpoints (URL + sha256); none are hosted yet, so it is empty.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .results import atomic_write_bytes, results_root

# (chapter, model, key) -> {"url": ..., "sha256": ...}.  Invent no URLs: add entries only for hosted files.
REGISTRY: dict[tuple[str, str, str], dict[str, str]] = {}


def _version() -> str:
    try:
        return metadata.version("companion")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def config_key(config: Mapping[str, Any]) -> str:
    """Stable 16-hex key of a JSON-serialisable configuration plus the package version."""
    blob = json.dumps({"config": config, "companion": _version()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def array_checksum(arrays) -> str:
    """``"sha256:<hex>"`` of the bytes of ``arrays`` in order (C order): what a chapter records for its data and puts
    into a checkpoint's configuration key."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


def checkpoint_root(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("COMPANION_CHECKPOINTS")
    return Path(env) if env else results_root() / "checkpoints"


@dataclass
class TrainState:
    """What `train_or_load` hands back: the model (trained or loaded), the per-epoch history, and where from."""

    model: torch.nn.Module
    history: list[dict[str, float]]
    source: str  # "loaded", "trained" or "resumed"
    path: Path


class CheckpointStore:
    def __init__(self, chapter: str, root: str | os.PathLike | None = None):
        self.chapter = chapter
        self.root = checkpoint_root(root)

    def path(self, model_name: str, config: Mapping[str, Any], partial: bool = False) -> Path:
        key = config_key(config)
        return self.root / self.chapter / model_name / (f"{key}.partial.pt" if partial else f"{key}.pt")

    def save(self, path: Path, payload: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, buf.getvalue())

    def load(self, path: Path) -> dict[str, Any] | None:
        """The checkpoint's payload, or None when absent or unreadable (a corrupt file is renamed aside)."""
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated or corrupt: keep it for inspection, train anew
            path.rename(path.with_suffix(path.suffix + ".corrupt"))
            return None


def train_or_load(store: CheckpointStore, model_name: str, config: Mapping[str, Any], model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, train_epoch: Callable[[int], dict[str, float]], epochs: int,
                  *, save_every: int = 1, progress: bool = True, writer: bool = True) -> TrainState:
    """Return a trained `model`: loaded if a final checkpoint for (chapter, model, config) exists, else trained for
    `epochs` epochs by calling ``train_epoch(epoch) -> metrics``, resuming from a partial checkpoint if one exists.

    RNG states are saved with each partial checkpoint so a resumed run continues the same random stream.  Under
    distributed training every rank loads and resumes alike, and only the rank with ``writer=True`` (rank 0) writes.
    """
    from .progress import progress as progress_bar

    final = store.path(model_name, config)
    hosted = REGISTRY.get((store.chapter, model_name, config_key(config)))
    if hosted and not final.exists():
        from .data.download import download_file
        from .data.manifests import RemoteFile

        download_file(RemoteFile(hosted["url"], final.name, "sha256:" + hosted["sha256"]), final.parent)
    payload = store.load(final)
    if payload is not None and payload.get("config_key") == config_key(config):
        model.load_state_dict(payload["model"])
        return TrainState(model, payload.get("history", []), "loaded", final)
    partial = store.path(model_name, config, partial=True)
    start, history, source = 0, [], "trained"
    payload = store.load(partial)
    if payload is not None and payload.get("config_key") == config_key(config):
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        start, history, source = int(payload["epoch"]), list(payload["history"]), "resumed"
    bar = progress_bar(range(start, epochs), desc=f"train {model_name}", initial=start, total=epochs,
                       disable=not (progress and writer))
    for epoch in bar:
        metrics = {k: float(v) for k, v in train_epoch(epoch).items()}
        history.append({"epoch": epoch, **metrics})
        bar.set_postfix(metrics)
        if writer and (epoch + 1) % save_every == 0 and epoch + 1 < epochs:
            store.save(partial, {"config_key": config_key(config), "epoch": epoch + 1, "history": history,
                                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "torch_rng": torch.get_rng_state()})
    if writer:
        store.save(final, {"config_key": config_key(config), "history": history, "model": model.state_dict()})
        partial.unlink(missing_ok=True)
    return TrainState(model, history, source, final)
