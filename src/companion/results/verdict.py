"""Verdict rules: how every chapter decides whether a claim holds.  The one place where they are written.

A reproduced number moves between machines (floating-point reductions differ between CPUs, training drifts) and
between training seeds, so a verdict never rests on the sign of a small mean difference.

**Outcomes.**  Every verdict has ``holds`` (True / False / None) and an ``outcome`` word that says more:

==============  =======  ===============================================================================
outcome         holds    meaning
==============  =======  ===============================================================================
holds           True     the claim holds at this scale on this data
reversed        False    a comparison came out the other way, beyond the stated margin, *and* it was earned
                         (enough seeds, converged models, an implementation note: :mod:`.comparison`)
does not hold   False    a threshold or property rule failed (a cost ratio below its threshold, ...)
equivalent      None     no practical difference: the whole interval lies inside the stated margin ±δ
inconclusive    None     the interval is too wide to decide, or the seeds disagree
indicative      None     decided on a single training run (or fewer seeds than the rule needs): a
                         direction (``leaning``), not a verdict
under-trained   None     a model of the comparison had not converged (:mod:`.convergence`)
undecided       None     decided by the interval, but an item a reversal needs is missing (named)
degenerate      None     a method collapsed (:mod:`.guards`): a contest between failures is never a win
not measured    None     nothing to decide on at this scale
==============  =======  ===============================================================================

* **Comparisons between methods** (method A better than method B over the same test cases) are decided by
  :func:`companion.results.comparison.comparison_verdict`: a margin δ stated in the claims file before the run,
  the training seeds pooled with the cases in the interval, the models' convergence, and for a reversal an
  implementation note.  :func:`paired_verdict` below is its statistical core (the interval against zero, no
  margin, no training rules); :meth:`companion.results.Results.record` refuses a comparison recorded without a
  margin and a seed count.
* **Thresholds**: claims that are not per-case comparisons (a cost ratio, a slope, a property of the code) are
  decided by :func:`threshold_verdict` or :func:`property_verdict`, which say the rule they applied in
  ``evidence.test``.
* **Guards** (:mod:`.guards`): a comparison in which either method is degenerate is ``degenerate: ...``.

Each verdict carries ``evidence = {n, effect, ci, test, ...}``; :meth:`companion.results.Results.record` writes it
into the scoreboard beside ``holds``, ``outcome`` and ``reason``.
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


OUTCOMES = ("holds", "reversed", "does not hold", "equivalent", "inconclusive", "indicative", "under-trained",
            "undecided", "degenerate", "not measured")


def outcome_of(holds: bool | None, reason: str | None) -> str:
    """The outcome word of a verdict made without one: from ``holds`` and the first word of its reason."""
    if holds is True:
        return "holds"
    head = (reason or "").split(":", 1)[0].strip().lower()
    if holds is False:
        return "reversed" if head in ("reversed", "worse") else "does not hold"
    for word in OUTCOMES:
        if head == word or head.startswith(word):
            return word
    return "not measured" if head.startswith(("not ", "no ")) else "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """``holds`` (True / False / None for undecided), the ``reason`` (required unless it holds), the ``evidence``
    it rests on (``{n, effect, ci, test, ...}``; ``ci`` is None for threshold rules) and the ``outcome`` word
    (see this module's table; derived from ``holds`` and the reason when not given)."""
    holds: bool | None
    reason: str | None
    evidence: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", outcome_of(self.holds, self.reason))
        elif self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")


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



_UNDECIDED_ORDER = ("degenerate", "under-trained", "undecided", "inconclusive", "not measured", "equivalent",
                    "indicative")


def all_of(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several rules that must all hold: false if any is false, undecided if any is undecided.

    The parts' evidence is kept whole in ``evidence.parts`` (their intervals included); ``ci`` is the interval when
    exactly one part has one.  The outcome is ``holds``, the first false part's outcome, or the weakest undecided
    part's (degenerate, under-trained, undecided, inconclusive, not measured, equivalent, indicative, in that order);
    a combined ``leaning`` is "holds" only when every part holds or leans that way, "reversed" when any part is or
    leans reversed."""
    if not verdicts:
        raise ValueError("all_of needs at least one verdict")
    holds: bool | None = True
    if any(v.holds is False for v in verdicts):
        holds = False
    elif any(v.holds is None for v in verdicts):
        holds = None
    if holds is None:  # the weakest undecided part names the whole
        undecided = [v.outcome for v in verdicts if v.holds is None]
        outcome = next(w for w in _UNDECIDED_ORDER if w in undecided)
    else:
        outcome = "holds" if holds else next(v.outcome for v in verdicts if v.holds is holds)
    leanings = [("holds" if v.holds else "reversed") if v.holds is not None else v.evidence.get("leaning")
                for v in verdicts]
    reasons = list(dict.fromkeys(v.reason for v in verdicts if v.reason and v.holds is not True))  # each once
    effects = [v.evidence.get("effect") for v in verdicts]
    cis = [v.evidence.get("ci") for v in verdicts if v.evidence.get("ci") is not None]
    parts = [{"outcome": v.outcome, **dict(v.evidence)} for v in verdicts]
    evidence = {"n": verdicts[0].evidence.get("n"),
                "effect": effects[0] if all(e == effects[0] for e in effects) else effects,  # one quantity, two bounds
                "ci": cis[0] if len(cis) == 1 else None,
                "test": " and ".join(v.evidence.get("test", "") for v in verdicts),
                "parts": parts}
    if holds is None and outcome in ("indicative", "undecided", "under-trained"):
        if all(x == "holds" for x in leanings):
            evidence["leaning"] = "holds"
        elif "reversed" in leanings:
            evidence["leaning"] = "reversed"
    for key in ("margin", "seeds"):  # a comparison's fields, where every comparing part shares them
        vals = [p[key] for p in parts if key in p]
        if vals and all(x == vals[0] for x in vals):
            evidence[key] = vals[0]
    if any("converged" in p for p in parts):  # every model of every comparing part, once
        merged = {m: c for p in parts for m, c in (p.get("converged") or {}).items()}
        evidence["converged"] = merged or None
        notes = list(dict.fromkeys(p["implementation"] for p in parts if p.get("implementation")))
        evidence["implementation"] = "; ".join(notes) or None
    return Verdict(holds, "; ".join(reasons) or None, evidence, outcome)

