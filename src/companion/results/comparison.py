"""Comparisons between methods: the rule a reviewer can trust (:func:`comparison_verdict`).

A claim "method A is better than method B" is about the *methods* only when (1) the difference is larger than what
matters in practice, (2) it survives the training seed as well as the choice of test cases, (3) the models were
trained until they stopped improving, and (4) for a verdict against the paper, the implementation was checked
against the paper (and the authors' code where public).  Until then the verdict is undecided and says which of
these is missing.

**The interval.**  Per-case values come as one row per training seed (seed = initialisation + data order) and one
column per test case; a single run is one row.  The test cases are the same for every seed (a *crossed* design),
so a difference varies with the seed and with the case.  With one seed the interval is the paired BCa bootstrap of
:func:`companion.results.verdict.bootstrap_ci`.  With several seeds it is a two-way (crossed) percentile bootstrap
(Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)): each resample draws seeds with replacement *and*
cases with replacement, independently, and takes the mean of the differences over the drawn (seed, case) cells.
We chose it over the two simpler options because each of those drops one source of variance:

* a case bootstrap of the seed-averaged differences ignores how much a result moves with the seed (three seeds of
  +3, +3 and -4 points look like one confident +0.7);
* per-seed means with the seed as the only unit (a t-interval over three numbers) ignore the case variance of a
  finite test set and have two degrees of freedom.

Both failure modes are shown in ``tests/unit/test_verdict.py``.  Percentile rather than BCa: BCa's acceleration
needs a jackknife that is not defined for two-way resampling.  On top of the interval every seed's own mean
difference must lie on the side the interval decides (a seed that disagrees makes the claim inconclusive).

**The margin δ** is stated in the claims file before the run (``margin:`` with ``margin_reason:``), in the units the
chapter compares in.  With the effect oriented so that positive favours A:

* **holds**: the interval lies above 0 and not inside ±δ (a statistically clear gain that may matter);
* **equivalent**: the interval lies inside ±δ: no practical difference (checked before "holds", so a gain
  smaller than δ that is statistically clear reads "equivalent");
* **reversed**: the interval lies below -δ: A is worse by more than what matters.  The asymmetry (0 for a gain, -δ
  for a loss) is deliberate: a verdict against the paper must be earned;
* **inconclusive**: anything else (the interval spans 0, or lies below 0 but reaches inside the margin).

A *non-inferiority* claim ("A is at least as good as B", ``claim="noninferior"``) holds when the interval lies
above -δ and is reversed ("worse") when it lies below -δ.

**Training requirements** (``trained=True``, the default: a comparison that involves a trained model):
a decided outcome needs ``min_seeds`` (3) seeds, else it is **indicative** (its direction is kept in
``evidence.leaning``; the evidence says ``single run``); it needs every model's convergence recorded (else **undecided**) and true (else
**under-trained**); and a reversal needs an ``implementation`` note naming what the code was checked against,
else it is **undecided** with the missing item named.  A comparison between methods that involve no training
(``trained=False``: a formula, a classical registration, a data property) skips the seed and convergence items; a
reversal still needs its implementation note.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .convergence import Convergence
from .verdict import BETTER, BOOTSTRAP_SEED, CONFIDENCE, MIN_CASES, N_RESAMPLES, Verdict, _num, bootstrap_ci

MIN_SEEDS = 3
CLAIMS = ("superior", "noninferior")


def _as_runs(x: Any) -> np.ndarray:
    arr = np.asarray(x, float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"per-case values must be 1-D (cases) or 2-D (seeds x cases), got shape {arr.shape}")
    return arr


def crossed_bootstrap_ci(d: np.ndarray, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, tuple[float, float]]:
    """Mean of the seeds x cases differences ``d`` and its two-way (crossed) percentile bootstrap interval: every
    resample draws seeds and cases with replacement, independently (see the module docstring)."""
    d = np.asarray(d, float)
    s, n = d.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(s, np.full(s, 1.0 / s), size=n_resamples).astype(float)
    wc = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    stats = np.einsum("rs,sn,rn->r", ws, d, wc) / (s * n)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(d.mean()), (float(lo), float(hi))


def _convergence_record(convergence: Iterable[Convergence | None]) -> tuple[dict[str, Any], list[str], bool]:
    conv = [c for c in convergence if c is not None]
    per_model = {c.model: c.converged for c in conv}
    bad = [c.detail for c in conv if c.converged is not True]
    return per_model, bad, bool(conv)


def comparison_verdict(a: Sequence[float] | Sequence[Sequence[float]], b: Sequence[float] | Sequence[Sequence[float]],
                       *, better: str, margin: float, names: tuple[str, str] = ("A", "B"), metric: str = "",
                       claim: str = "superior", guards: Iterable[str | None] = (), trained: bool = True,
                       convergence: Iterable[Convergence | None] = (), implementation: str | None = None,
                       min_seeds: int = MIN_SEEDS, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED, min_cases: int = MIN_CASES) -> Verdict:
    """Decide "``names[0]`` is ``better`` (higher / lower) than ``names[1]`` on ``metric``" (``claim="superior"``)
    or "at least as good as" (``claim="noninferior"``), by the rules of this module's docstring.

    ``a``, ``b``: per-case values, 1-D (one run) or 2-D (one row per training seed, the same cases in every row);
    a 1-D ``b`` against a 2-D ``a`` is a baseline that does not depend on the seed (it is repeated).  Cases with a
    NaN in any row are dropped.  ``margin``: δ from the claims file, in the units of ``a`` and ``b``.  ``guards``:
    degeneracy findings (:mod:`.guards`).  ``convergence``: one :class:`~.convergence.Convergence` per trained model
    (every seed's, where each seed was trained).  ``implementation``: what the implementation was checked against."""
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
    if margin is None or not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a non-negative number stated in the claims file, got {margin!r}")
    A, B = _as_runs(a), _as_runs(b)
    if B.shape[0] == 1 and A.shape[0] > 1:
        B = np.repeat(B, A.shape[0], axis=0)
    if A.shape[0] == 1 and B.shape[0] > 1:
        A = np.repeat(A, B.shape[0], axis=0)
    if A.shape != B.shape:
        raise ValueError(f"paired values need the same seeds and cases, got shapes {A.shape} and {B.shape}")
    keep = np.all(np.isfinite(A) & np.isfinite(B), axis=0)
    A, B = A[:, keep], B[:, keep]
    n_seeds, n = A.shape
    sign = 1.0 if better == "higher" else -1.0
    label = f"{metric + ': ' if metric else ''}{names[0]} − {names[1]}"
    pct = f"{100 * confidence:g} %"
    per_model, not_converged, conv_recorded = _convergence_record(convergence)
    evidence: dict[str, Any] = {"n": n, "effect": None, "ci": None, "test": "", "margin": float(margin),
                                "claim": claim, "seeds": n_seeds if trained else None, "trained": trained,
                                "converged": per_model if trained else None,
                                "implementation": implementation}
    if trained:
        evidence["convergence"] = [c.as_record() for c in convergence if c is not None]
        if n_seeds == 1:
            evidence["runs"] = "single run"
    rule = (f"holds if the CI lies {'above' if sign > 0 else 'below'} 0 and not inside ±{margin:g}; equivalent if "
            f"inside ±{margin:g}; reversed if {'below' if sign > 0 else 'above'} {'-' if sign > 0 else '+'}{margin:g}"
            if claim == "superior" else
            f"non-inferiority: holds if the CI lies {'above' if sign > 0 else 'below'} {'-' if sign > 0 else '+'}"
            f"{margin:g}; worse if wholly beyond it")
    if n >= 2:
        if n_seeds == 1:
            effect, (lo, hi), method = bootstrap_ci(A[0], B[0], confidence=confidence, n_resamples=n_resamples,
                                                    seed=seed)
            how = f"paired bootstrap {pct} CI of mean({label}) over {n} cases ({method}, {n_resamples} resamples, " \
                  f"seed {seed})"
        else:
            effect, (lo, hi) = crossed_bootstrap_ci(A - B, confidence=confidence, n_resamples=n_resamples, seed=seed)
            evidence["per_seed_effects"] = [float(x) for x in (A - B).mean(axis=1)]
            how = (f"paired bootstrap {pct} CI of mean({label}) over {n_seeds} seeds x {n} cases (two-way: seeds and "
                   f"cases resampled independently, percentile, {n_resamples} resamples, seed {seed})")
        evidence.update(effect=effect, ci=[lo, hi], test=f"{how}; margin {margin:g} stated before the run; {rule}")
    else:
        evidence["test"] = f"paired bootstrap {pct} CI of mean({label}); not computed (n = {n})"

    def verdict(holds, outcome, reason, leaning=None):
        if leaning:
            evidence["leaning"] = leaning
        return Verdict(holds, reason, evidence, outcome)

    bad = [g for g in guards if g]
    if bad:
        return verdict(None, "degenerate", "degenerate: " + "; ".join(bad))
    if n < min_cases:
        return verdict(None, "inconclusive",
                       f"inconclusive: n = {n} cases, fewer than the {min_cases} a bootstrap interval needs")
    lo, hi = evidence["ci"]
    olo, ohi = sorted((sign * lo, sign * hi))  # oriented: positive favours A
    ci_text = f"{pct} CI [{_num(lo)}, {_num(hi)}] of mean({label})"
    if claim == "superior":
        if -margin <= olo and ohi <= margin:
            raw, side = "equivalent", f"lies inside ±{margin:g}"
        elif olo > 0:
            raw, side = "holds", f"lies on {names[0]}'s side of 0"
        elif ohi < -margin:
            raw, side = "reversed", f"lies beyond the margin on {names[1]}'s side"
        else:
            reach = "spans 0" if olo <= 0 <= ohi else f"favours {names[1]} but reaches inside the margin ±{margin:g}"
            return verdict(None, "inconclusive", f"inconclusive: {ci_text} {reach} (n = {n})")
    else:
        if olo > -margin:
            raw, side = "holds", f"lies on the good side of the margin {'-' if sign > 0 else '+'}{margin:g}"
        elif ohi < -margin:
            raw, side = "reversed", f"lies beyond the margin {'-' if sign > 0 else '+'}{margin:g}"
        else:
            return verdict(None, "inconclusive", f"inconclusive: {ci_text} straddles the margin "
                                                 f"{'-' if sign > 0 else '+'}{margin:g} (n = {n})")
    # every seed on the interval's side
    if n_seeds > 1:
        eff = sign * np.asarray(evidence["per_seed_effects"])
        agree = {"holds": eff > (0 if claim == "superior" else -margin), "reversed": eff < (0 if claim ==
                 "superior" else -margin), "equivalent": np.abs(eff) <= margin}[raw]
        if not agree.all():
            return verdict(None, "inconclusive", f"inconclusive: {ci_text} {side}, but {int((~agree).sum())} of "
                                                 f"{n_seeds} seeds' own effects do not", leaning=raw)
    # what a decided outcome needs
    word = {"holds": "holds", "reversed": "reversed" if claim == "superior" else "worse",
            "equivalent": "equivalent"}[raw]
    says = f"the interval says {word}: {ci_text} {side} (n = {n})"
    if trained:
        if not conv_recorded:
            return verdict(None, "undecided", f"undecided: no model's convergence was recorded; {says}", leaning=raw)
        if not_converged:
            return verdict(None, "under-trained", "under-trained: " + "; ".join(not_converged) + f"; {says}",
                           leaning=raw)
        if n_seeds < min_seeds:
            runs = "single run" if n_seeds == 1 else f"{n_seeds} seeds"
            return verdict(None, "indicative", f"indicative ({runs}; {min_seeds} seeds decide): {says}", leaning=raw)
    if raw == "reversed" and not (implementation or "").strip():
        return verdict(None, "undecided", f"undecided: {says}, but no implementation note names what the code was "
                                          f"checked against (the paper's equations, the authors' code)",
                       leaning=raw)
    if raw == "holds":
        return verdict(True, "holds", None)
    if raw == "equivalent":
        return verdict(None, "equivalent", f"equivalent: no practical difference; {says}")
    return verdict(False, "reversed", f"{word}: {ci_text} {side} (n = {n}); {names[0]} is worse than {names[1]}")
