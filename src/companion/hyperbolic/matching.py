"""Hungarian matching of cluster labels to ground-truth classes, then Dice.

Paper facts
-----------
- Hsu, Gu et al. (2021) score unsupervised segmentations (clusters of the
  representations) with Dice against ground-truth classes, which needs a
  one-to-one assignment of clusters to classes.

Our choices
-----------
- The assignment maximises the total voxel overlap (Kuhn 1955, Hungarian
  algorithm; ``scipy.optimize.linear_sum_assignment`` on the negative
  contingency table).  With more clusters than classes the unmatched
  clusters count for no class; with fewer, the unmatched classes score 0.
- Dice per ground-truth class: ``2 |P & R| / (|P| + |R|)``, 1 when both are
  empty.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def hungarian_match(pred: np.ndarray, ref: np.ndarray) -> dict[int, int]:
    """Map each predicted cluster label to a ground-truth label (maximal total overlap)."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    if pred.size == 0:
        raise ValueError("empty label arrays")
    p_lab, p_idx = np.unique(pred, return_inverse=True)
    r_lab, r_idx = np.unique(ref, return_inverse=True)
    table = np.zeros((p_lab.size, r_lab.size), dtype=np.int64)
    np.add.at(table, (p_idx.ravel(), r_idx.ravel()), 1)
    rows, cols = linear_sum_assignment(-table)
    return {int(p_lab[i]): int(r_lab[j]) for i, j in zip(rows, cols)}


def matched_dice(pred: np.ndarray, ref: np.ndarray) -> dict[int, float]:
    """Dice per ground-truth class after relabelling ``pred`` by :func:`hungarian_match`."""
    mapping = hungarian_match(pred, ref)
    pred, ref = np.asarray(pred), np.asarray(ref)
    out = {}
    for cls in np.unique(ref):
        clusters = [p for p, r in mapping.items() if r == int(cls)]
        pm = np.isin(pred, clusters)
        rm = ref == cls
        denom = pm.sum() + rm.sum()
        out[int(cls)] = 1.0 if denom == 0 else float(2 * np.logical_and(pm, rm).sum() / denom)
    return out
