"""What every generated *labelled* set shares (the classification stand-ins of ``companion.data.pathology`` and
``companion.data.cow``): argument checks, class sizes, and the seeded assignment of a label and a seed to each item."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def check_grid(grid: Any) -> int:
    """The grid size as an int in [32, 512] (the range of ``companion.data.vessels``), or a ValueError."""
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)):
        raise ValueError(f"grid must be an integer in [32, 512], got {grid!r}")
    if not 32 <= int(grid) <= 512:
        raise ValueError(f"grid must be in [32, 512], got {grid}")
    return int(grid)


def resolve_class_sizes(n: int, class_sizes: Sequence[int] | Mapping[str, int], classes: Sequence[str]) -> list[int]:
    """Counts per class from a sequence in ``classes`` order or a ``{class_name: count}`` mapping; they must be
    non-negative integers summing to ``n``."""
    if isinstance(class_sizes, Mapping):
        bad = sorted(set(class_sizes) - set(classes))
        if bad:
            raise ValueError(f"unknown class(es) {', '.join(map(repr, bad))}; valid classes: {', '.join(classes)}")
        sizes = [class_sizes.get(c, 0) for c in classes]
    else:
        sizes = list(class_sizes)
        if len(sizes) != len(classes):
            raise ValueError(f"class_sizes needs {len(classes)} entries ({', '.join(classes)}), got {len(sizes)}")
    for v in sizes:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"class sizes must be non-negative integers, got {sizes}")
    sizes = [int(v) for v in sizes]
    if sum(sizes) != n:
        raise ValueError(f"class sizes {sizes} sum to {sum(sizes)}, not n = {n}")
    return sizes


def check_count(n: Any, n_classes: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an integer >= {n_classes}, got {n!r}")
    if int(n) < n_classes:
        raise ValueError(f"n must be at least the number of classes ({n_classes}), got {n}")
    return int(n)


def labels_and_seeds(sizes: Sequence[int], seed: int) -> tuple[np.ndarray, list[int]]:
    """A label and a seed per item: item ``i`` takes child ``i`` of ``np.random.SeedSequence(seed).spawn(n + 1)``
    (its first 63-bit state word is the item's seed); child ``n`` shuffles the labels (``sizes[k]`` of class
    ``k``).  Deterministic."""
    n = int(sum(sizes))
    children = np.random.SeedSequence(int(seed)).spawn(n + 1)
    seeds = [int(ch.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for ch in children[:n]]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return labels[np.random.default_rng(children[n]).permutation(n)], seeds


def generate_labelled(n: int, grid: Any, seed: int, sizes_of, classes: Sequence[str], make, desc: str) -> list:
    """The common body of a labelled set: check ``n`` and ``grid``, draw labels and seeds
    (:func:`labels_and_seeds` over ``sizes_of(n)``), and call ``make(label_index, grid, seed)`` per item, with a
    progress bar above 8 items."""
    n = check_count(n, len(classes))
    grid = check_grid(grid)
    labels, seeds = labels_and_seeds(sizes_of(n), seed)
    it: Any = range(n)
    if n > 8:
        from ..progress import progress

        it = progress(it, total=n, desc=desc, leave=False)
    return [make(int(labels[i]), grid, seeds[i]) for i in it]
