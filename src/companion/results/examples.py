"""The verdict rules' worked examples: one small case per outcome, computed by the rules themselves.

The book's report page shows them (``companion book`` writes ``_generated/verdict-examples.md``), so every number
on that page comes from :func:`companion.results.comparison.comparison_verdict` run on the toy data below, and
``tests/unit/test_verdict.py`` checks that each example lands on the outcome it is there to show.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .comparison import comparison_verdict
from .convergence import converged
from .verdict import Verdict

MARGIN = 0.01  # one Dice point, as the chapters' Dice claims state it
N_CASES = 20


@dataclass(frozen=True)
class Example:
    outcome: str  # the outcome this example is there to show
    setting: str  # what the toy data are
    verdict: Verdict


def _cases(effects: list[float], noise: float = 0.01, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.6, 0.8, N_CASES)
    a = np.stack([b + e + rng.normal(0, noise, N_CASES) for e in effects])
    return a, b


def worked_examples() -> list[Example]:
    """One toy comparison per outcome ("method A has a higher Dice than method B", margin ±0.01)."""
    epochs = np.arange(30)
    done = [converged(0.2 + np.exp(-epochs / 4), "A"), converged(0.25 + np.exp(-epochs / 4), "B")]
    falling = [done[0], converged(np.linspace(1.0, 0.4, 30), "B")]
    note = "the paper's Eqs. 1-3 and the authors' public code"

    def case(outcome, setting, effects, noise=0.01, **kw):
        a, b = _cases(effects, noise)
        kw.setdefault("convergence", done)
        v = comparison_verdict(a if len(effects) > 1 else a[0], b, better="higher", margin=MARGIN,
                               names=("A", "B"), metric="Dice", **kw)
        return Example(outcome, setting, v)

    return [
        case("holds", "3 seeds, each about +0.04 Dice; both models converged", [0.04, 0.035, 0.045]),
        case("equivalent", "3 seeds, each about +0.002 Dice: clearly above 0, but inside the ±0.01 margin",
             [0.002, 0.0025, 0.0015], noise=0.001),
        case("inconclusive", "3 seeds of +0.04, +0.04 and -0.03 Dice: the seed moves the result more than the "
                             "method does", [0.04, 0.04, -0.03], noise=0.003),
        case("indicative", "one training run of about +0.04 Dice", [0.04]),
        case("under-trained", "3 seeds of about +0.04 Dice, but B's loss was still falling when training stopped",
             [0.04, 0.035, 0.045], convergence=falling),
        case("undecided", "3 seeds of about -0.04 Dice, both converged, and no note of what the implementation was "
                          "checked against", [-0.04, -0.035, -0.045]),
        case("reversed", "the same numbers, with the implementation checked against the paper and the authors' code",
             [-0.04, -0.035, -0.045], implementation=note),
        case("degenerate", "3 seeds of about +0.04 Dice, but B predicts empty maps on most cases",
             [0.04, 0.035, 0.045], guards=["B predicts 15 empty maps on 20 of 20 cases"]),
    ]


def examples_markdown() -> str:
    """The worked examples as a short list for the report page: setting, interval, per-seed effects, outcome."""
    lines = [f"Each example decides \"A has a higher Dice than B\" on {N_CASES} toy test cases with the margin "
             f"±{MARGIN:g} (one Dice point), by the rules of `companion.results.comparison`:", ""]
    for ex in worked_examples():
        ev = ex.verdict.evidence
        lo, hi = ev["ci"]
        seeds = ev.get("per_seed_effects")
        seed_text = (f"; per seed {', '.join(f'{x:+.3f}' for x in seeds)}" if seeds else "; one run")
        why = f" — {ex.verdict.reason}" if ex.verdict.reason else ""
        lines.append(f"* **{ex.verdict.outcome}.** {ex.setting}. Mean difference {ev['effect']:+.3f}, 95 % CI "
                     f"[{lo:+.3f}, {hi:+.3f}]{seed_text}{why}.")
    return "\n".join(lines) + "\n"
