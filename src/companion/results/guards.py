"""Degeneracy guards: findings that make a comparison undecided (``degenerate: ...``) whatever its interval says.

A guard returns a sentence when it finds a problem and ``None`` otherwise; the verdict rules of
:mod:`companion.results.verdict` take a list of them (``guards=``).  A contest between failures is never a win.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

BETTER = ("higher", "lower")


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def degenerate_predictions(masks: Iterable[np.ndarray], name: str, *, max_fraction: float = 0.5) -> str | None:
    """A finding when more than ``max_fraction`` of ``name``'s predicted binary maps are empty or all foreground
    (a collapsed model), else None."""
    masks = list(masks)
    empty = sum(1 for m in masks if not np.any(m))
    full = sum(1 for m in masks if np.all(m))
    if masks and (empty + full) > max_fraction * len(masks):
        parts = [f"{k} empty" for k in [empty] if k] + [f"{k} all-foreground" for k in [full] if k]
        return f"{name} predicts {' and '.join(parts)} maps on {empty + full} of {len(masks)} cases"
    return None


def stalled_loss(values: Sequence[float], name: str, *, min_drop: float = 0.05) -> str | None:
    """A finding when ``name``'s training loss never left its starting value, or a value is not finite.

    "Never left" means the loss fell by less than ``min_drop`` of its starting magnitude:
    ``(first - last) < min_drop * |first|`` (``|first|`` replaced by the largest magnitude on the curve when the
    first value is 0).  Written as a drop over a magnitude, it reads negative losses the right way round: IIC's
    mutual-information loss going from -1.0 to -0.96 has *risen*, and is flagged."""
    v = np.asarray(list(values), float)
    if len(v) == 0:
        return None
    if not np.all(np.isfinite(v)):
        return f"{name}'s training loss is not finite"
    if len(v) < 2:
        return None
    scale = abs(v[0]) if v[0] != 0 else float(np.max(np.abs(v)))
    if scale == 0 or (v[0] - v[-1]) < min_drop * scale:
        return f"{name}'s training loss never left its starting value ({_num(v[0])} → {_num(v[-1])})"
    return None


def no_better_than(values: Sequence[float], floor: Sequence[float], name: str, floor_name: str, *,
                   better: str = "higher") -> str | None:
    """A finding when ``name``'s mean score is not better than that of a trivial prediction on the same cases (e.g.
    "the whole brain marked as tumour", or chance-level balanced accuracy): the method has not found the structure,
    and a comparison between two such methods is a contest between failures, not a win."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    v, f = np.asarray(list(values), float), np.asarray(list(floor), float)
    if f.ndim == 0 or f.size == 1:
        f = np.full(v.shape, float(f.reshape(-1)[0]) if f.size else np.nan)
    if v.shape != f.shape:
        raise ValueError(f"values and floor need the same cases, got {v.shape} and {f.shape}")
    keep = np.isfinite(v) & np.isfinite(f)
    if not keep.any():
        return None
    mv, mf = float(v[keep].mean()), float(f[keep].mean())
    if (mv <= mf) if better == "higher" else (mv >= mf):
        return f"{name} is no better than {floor_name} (mean {_num(mv)} against {_num(mf)})"
    return None
