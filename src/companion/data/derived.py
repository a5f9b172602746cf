"""Data sets derived from several manifest datasets, under ``$COMPANION_DATA/<id>/``.

``consolidated``: the VAEsselSparse training set, written by ``companion data consolidate --out
$COMPANION_DATA/consolidated`` (:mod:`companion.data.consolidate`).  :class:`Case` gives one of its volumes the
interface chapters use for stand-in trees (``volume``, ``kind``, ``occupancy``) while holding only the active voxel
coordinates: 1219 dense 512³ masks would need 160 GB, their coordinates a few GB.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .consolidate import INDEX_FILE, SPLITS, load_coords
from .download import data_root

DERIVED = {"consolidated": "companion data consolidate --out {path}"}


def derived_dir(data_id: str) -> Path:
    return data_root() / data_id


def derived_problems(data_id: str) -> list[str]:
    """What is missing for ``data_id`` on this machine (empty: ready)."""
    if data_id not in DERIVED:
        return [f"unknown derived data {data_id!r}; known: {', '.join(DERIVED)}"]
    path = derived_dir(data_id)
    if not (path / INDEX_FILE).exists():
        return [f"{path / INDEX_FILE} not found: fetch the source datasets, then run `"
                + DERIVED[data_id].format(path=path) + "` (it lists every missing source first)"]
    return []


class LazyMask:
    """A boolean volume stored as active voxel coordinates; becomes a dense array only when indexed or converted."""

    def __init__(self, coords: np.ndarray, shape: tuple[int, int, int]):
        self.coords, self.shape = coords, tuple(shape)

    def __array__(self, dtype=None, copy=None):
        m = np.zeros(self.shape, bool)
        m[tuple(self.coords.T)] = True
        return m if dtype is None else m.astype(dtype)

    def __getitem__(self, item):
        return np.asarray(self)[item]

    def any(self) -> bool:
        return len(self.coords) > 0

    def sum(self) -> int:
        return len(self.coords)

    def mean(self) -> float:
        return len(self.coords) / float(np.prod(self.shape))


@dataclass
class Case:
    case: str
    kind: str
    volume: LazyMask

    @property
    def occupancy(self) -> float:
        return self.volume.mean()


def load_consolidated_cases(data_id: str = "consolidated") -> dict[str, list[Case]]:
    """The consolidated set's cases by split (coordinates only)."""
    problems = derived_problems(data_id)
    if problems:
        from .download import DataAccessError

        raise DataAccessError("\n".join(problems))
    root = derived_dir(data_id)
    df = pd.read_csv(root / INDEX_FILE, dtype={"case": str, "file": str, "split": str})
    out: dict[str, list[Case]] = {s: [] for s in SPLITS}
    for row in df.itertuples(index=False):
        coords, shape = load_coords(root / row.file)
        out[row.split].append(Case(f"{row.dataset}__{row.case}", row.kind, LazyMask(coords, shape)))
    return out
