"""Verdict rules: how every chapter decides whether a claim holds.  The one place where they are written.

A reproduced number moves between machines (floating-point reductions differ between CPUs, training drifts) and
between seeds, so a verdict never rests on the sign of a small mean difference:

* **Per-case comparisons** (method A better than method B over the same test cases) are decided from the paired
  per-case differences ``d_i = A_i - B_i`` by :func:`paired_verdict`: a 95 % bootstrap confidence interval of their
  mean (``scipy.stats.bootstrap``, ``paired=True``, BCa, 9 999 resamples, fixed seed).  ``holds`` is ``True`` when
  the whole interval lies on the paper's side of zero, ``False`` when it lies on the other side, and ``None``
  (*inconclusive*) when it spans zero or there are fewer than :data:`MIN_CASES` cases.  Where a chapter trains
  several seeds, every seed's mean difference must also lie on the interval's side.
* **Guards**: a comparison in which either method is degenerate (:func:`degenerate_predictions`,
  :func:`stalled_loss`) is ``None`` with reason ``degenerate: ...`` -- never a win -- whatever the interval says.
* **Thresholds**: claims that are not per-case comparisons (a cost ratio, a slope, a property of the code) are
  decided by :func:`threshold_verdict` or :func:`property_verdict`, which say the rule they applied in
  ``evidence.test``.

Each verdict carries ``evidence = {n, effect, ci, test}``; :meth:`companion.results.Results.record` writes it into
the scoreboard beside ``holds`` and ``reason``.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
MIN_CASES = 5  # below this a bootstrap interval of a mean says little: inconclusive

BETTER = ("higher", "lower")
_OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                                   "<=": operator.le, "==": operator.eq}


@dataclass(frozen=True)
class Verdict:
    """``holds`` (True / False / None for undecided), the ``reason`` (required unless it holds) and the
    ``evidence`` it rests on: ``{n, effect, ci, test}`` (``ci`` is None for threshold rules)."""
    holds: bool | None
    reason: str | None
    evidence: dict[str, Any] = field(default_factory=dict)


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def bootstrap_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, tuple[float, float], str]:
    """Mean of ``a - b`` and its paired bootstrap interval.  Returns ``(effect, (low, high), method)``.

    BCa by default; where all differences are equal the interval is that value (no spread to resample), and where
    BCa is undefined (too little variety in the resamples) the percentile interval is used and named."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    effect = float(d.mean())
    if np.ptp(d) == 0:
        return effect, (effect, effect), "no spread (all differences equal)"
    stat = lambda x, y, axis: np.mean(x - y, axis=axis)  # noqa: E731
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((a, b), stat, paired=True, vectorized=True, n_resamples=n_resamples,
                            confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return effect, (lo, hi), method
    raise RuntimeError("bootstrap gave no finite interval")  # unreachable with a non-zero spread


def paired_verdict(a: Sequence[float], b: Sequence[float], *, better: str, names: tuple[str, str] = ("A", "B"),
                   metric: str = "", guards: Iterable[str | None] = (), per_seed_effects: Sequence[float] | None = None,
                   confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                   min_cases: int = MIN_CASES) -> Verdict:
    """Decide "``names[0]`` is ``better`` (higher / lower) than ``names[1]`` on ``metric``" from per-case values.

    ``a[i]`` and ``b[i]`` are the two methods' values on case ``i`` (NaN cases are dropped in pairs).  ``guards``
    are degeneracy findings (:func:`degenerate_predictions`, :func:`stalled_loss`): any non-empty one makes the
    verdict ``None`` with reason ``degenerate: ...``.  ``per_seed_effects``: the mean of ``a - b`` in each
    separately trained seed; they must all lie on the side the interval decides."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(len(a))
    label = f"{metric + ': ' if metric else ''}{names[0]} − {names[1]}"
    pct = f"{100 * confidence:g} %"
    evidence: dict[str, Any] = {"n": n, "effect": None, "ci": None, "test": ""}
    if n >= 2:
        effect, (lo, hi), method = bootstrap_ci(a, b, confidence=confidence, n_resamples=n_resamples, seed=seed)
        evidence.update(effect=effect, ci=[lo, hi],
                        test=f"paired bootstrap {pct} CI of mean({label}) over {n} cases ({method}, {n_resamples} "
                             f"resamples, seed {seed}); holds if the CI lies "
                             f"{'above' if better == 'higher' else 'below'} 0")
    else:
        evidence["test"] = f"paired bootstrap {pct} CI of mean({label}); not computed (n = {n})"
    if per_seed_effects is not None:
        evidence["per_seed_effects"] = [float(x) for x in per_seed_effects]
    bad = [g for g in guards if g]
    if bad:
        return Verdict(None, "degenerate: " + "; ".join(bad), evidence)
    if n < min_cases:
        return Verdict(None, f"inconclusive: n = {n} cases, fewer than the {min_cases} a bootstrap interval needs",
                       evidence)
    lo, hi = evidence["ci"]
    ci_text = f"{pct} CI [{_num(lo)}, {_num(hi)}] of mean({label})"
    sign = 1.0 if better == "higher" else -1.0
    if lo <= 0 <= hi:
        return Verdict(None, f"inconclusive: {ci_text} spans 0 (n = {n})", evidence)
    side = 1.0 if lo > 0 else -1.0
    if per_seed_effects is not None:
        against = [float(x) for x in per_seed_effects if np.sign(x) != side]
        if against:
            return Verdict(None, f"inconclusive: {ci_text} excludes 0 but {len(against)} of "
                                 f"{len(per_seed_effects)} seeds have the other sign", evidence)
    if side == sign:
        return Verdict(True, None, evidence)
    where = "below" if side < 0 else "above"
    return Verdict(False, f"reversed: {ci_text} lies {where} 0 (n = {n}); {names[0]} is "
                          f"{'lower' if side < 0 else 'higher'}", evidence)


def noninferior_verdict(a: Sequence[float], b: Sequence[float], *, margin: float, better: str,
                        names: tuple[str, str] = ("A", "B"), metric: str = "", guards: Iterable[str | None] = (),
                        confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        min_cases: int = MIN_CASES) -> Verdict:
    """Decide "``names[0]`` is at least as good as ``names[1]``" (equal or better) within a stated ``margin``.

    The same paired bootstrap interval as :func:`paired_verdict`; ``holds`` when the whole interval of
    ``mean(a - b)`` lies on the good side of ``-margin`` (``+margin`` when lower is better), ``False`` when it lies
    wholly beyond it on the bad side, ``None`` when it straddles it.  The margin is the chapter's stated choice,
    never fitted to the result."""
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a non-negative number, got {margin!r}")
    sign = 1.0 if better == "higher" else -1.0
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    # shift a by the margin towards "better" and reuse the superiority rule: mean(a - b) > -margin
    a_shift = np.asarray(a, float) + sign * margin
    v = paired_verdict(a_shift, b, better=better, names=(f"{names[0]} (+{margin:g} margin)", names[1]),
                       metric=metric, guards=guards, confidence=confidence, n_resamples=n_resamples, seed=seed,
                       min_cases=min_cases)
    ev = dict(v.evidence)
    if ev.get("effect") is not None:
        ev["effect"] = float(ev["effect"]) - sign * margin
        ev["ci"] = [float(x) - sign * margin for x in ev["ci"]]
        bound = f"{'-' if sign > 0 else '+'}{margin:g}"
        ev["test"] = (f"non-inferiority: paired bootstrap {100 * confidence:g} % CI of mean({metric + ': ' if metric else ''}"
                      f"{names[0]} − {names[1]}) over {ev['n']} cases; holds if the CI lies "
                      f"{'above' if sign > 0 else 'below'} {bound} (margin {margin:g}, stated before the run)")
    reason = v.reason
    if reason and (reason.startswith("reversed") or "spans 0" in reason) and ev.get("ci") is not None:
        lo, hi = ev["ci"]
        reason = (f"{'worse' if reason.startswith('reversed') else 'inconclusive'}: CI [{_num(lo)}, {_num(hi)}] of "
                  f"mean({names[0]} − {names[1]}) {'lies beyond' if reason.startswith('reversed') else 'straddles'} "
                  f"the margin {'-' if sign > 0 else '+'}{margin:g} (n = {ev['n']})")
    return Verdict(v.holds, reason, ev)


def threshold_verdict(value: float | Sequence[float] | None, op: str, threshold: float, *, what: str,
                      n: int | None = None) -> Verdict:
    """Decide ``value op threshold`` (every element, for a sequence): a claim with an explicit threshold rather
    than an interval (cost ratios, slopes, tolerances).  ``None`` or NaN values are undecided."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    test = f"threshold: {what} {op} {threshold:g}" + (" at every point" if isinstance(value, (list, tuple)) else "")
    vals = value if isinstance(value, (list, tuple)) else [value]
    if not vals or any(v is None or not np.isfinite(float(v)) for v in vals):
        return Verdict(None, f"not measured: {what} has no value at this scale",
                       {"n": n, "effect": None, "ci": None, "test": test})
    effect = [float(v) for v in vals] if isinstance(value, (list, tuple)) else float(vals[0])
    fails = [float(v) for v in vals if not _OPS[op](float(v), threshold)]
    if n is None and isinstance(value, (list, tuple)):
        n = len(vals)
    evidence = {"n": n, "effect": effect, "ci": None, "test": test}
    if not fails:
        return Verdict(True, None, evidence)
    return Verdict(False, f"{what} = {', '.join(_num(v) for v in fails)}, not {op} {threshold:g}", evidence)


def property_verdict(ok: bool | None, *, test: str, failure: str, n: int | None = None,
                     effect: Any = None) -> Verdict:
    """A property that must hold exactly (a formula the generator applies, a self-test, determinism); ``ok=None``
    when it could not be evaluated (``failure`` then says why)."""
    evidence = {"n": n, "effect": effect, "ci": None, "test": f"property: {test}"}
    if ok is None:
        return Verdict(None, failure, evidence)
    return Verdict(True, None, evidence) if ok else Verdict(False, failure, evidence)


# ----------------------------------------------------------------------------------------------- guards
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
    """A finding when ``name``'s training loss never left its starting value: the last value is within
    ``min_drop`` (relative) of the first, or a value is not finite."""
    v = np.asarray(list(values), float)
    if len(v) == 0:
        return None
    if not np.all(np.isfinite(v)):
        return f"{name}'s training loss is not finite"
    if len(v) >= 2 and v[-1] > v[0] * (1 - min_drop):
        return f"{name}'s training loss never left its starting value ({_num(v[0])} → {_num(v[-1])})"
    return None


def no_better_than(values: Sequence[float], floor: Sequence[float], name: str, floor_name: str, *,
                   better: str = "higher") -> str | None:
    """A finding when ``name``'s mean score is not better than that of a trivial prediction on the same cases (e.g.
    "the whole brain marked as tumour"): the method has not found the structure, and a comparison between two such
    methods is a contest between failures, not a win."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    v, f = np.asarray(list(values), float), np.asarray(list(floor), float)
    if v.shape != f.shape:
        raise ValueError(f"values and floor need the same cases, got {v.shape} and {f.shape}")
    keep = np.isfinite(v) & np.isfinite(f)
    if not keep.any():
        return None
    mv, mf = float(v[keep].mean()), float(f[keep].mean())
    if (mv <= mf) if better == "higher" else (mv >= mf):
        return f"{name} is no better than {floor_name} (mean {_num(mv)} against {_num(mf)})"
    return None


def all_of(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several rules that must all hold: false if any is false, undecided if any is undecided."""
    holds: bool | None = True
    if any(v.holds is False for v in verdicts):
        holds = False
    elif any(v.holds is None for v in verdicts):
        holds = None
    reasons = [v.reason for v in verdicts if v.reason and v.holds is not True]
    effects = [v.evidence.get("effect") for v in verdicts]
    evidence = {"n": verdicts[0].evidence.get("n"),
                "effect": effects[0] if all(e == effects[0] for e in effects) else effects,  # one quantity, two bounds
                "ci": None, "test": " and ".join(v.evidence.get("test", "") for v in verdicts)}
    return Verdict(holds, "; ".join(reasons) or None, evidence)
