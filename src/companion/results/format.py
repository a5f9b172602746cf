"""How a verdict reads: the outcome words and badges, values and evidence without Python reprs, the scoreboard as
a table.  Shared by the results writer (:mod:`.contract`), the report (:mod:`.report`) and the comparison of runs
(:mod:`.compare`), so none of them imports another for its formatting."""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from .verdict import outcome_of

VERDICT_TEXT = {True: "holds", False: "does not hold", None: "undecided"}
# the badge of each outcome (companion.results.verdict): green holds, red against, blue no practical difference,
# grey a single run's direction, amber undecided for a named reason
OUTCOME_BADGE = {"holds": "success", "reversed": "danger", "does not hold": "danger", "equivalent": "info",
                 "indicative": "secondary", "inconclusive": "warning", "under-trained": "warning",
                 "undecided": "warning", "degenerate": "warning", "not measured": "light"}


def outcome(rec: dict[str, Any]) -> str:
    """A scoreboard record's outcome word (records written before outcomes existed: derived from holds/reason)."""
    return rec.get("outcome") or outcome_of(rec.get("holds"), rec.get("reason"))


def outcome_text(rec: dict[str, Any]) -> str:
    """The outcome as a reader sees it; an indicative or undecided comparison names the way it leans."""
    word = outcome(rec)
    lean = (rec.get("evidence") or {}).get("leaning")
    return f"{word} ({'would hold' if lean == 'holds' else 'leans ' + lean})" if lean and word != lean else word
def fmt_value(v: Any, digits: int = 4) -> str:
    """A value as a reader should see it: no Python reprs, floats to `digits` significant digits."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "–" if v != v else f"{v:.{digits}g}"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {fmt_value(x, digits)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x, digits) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def fmt_evidence(ev: dict[str, Any] | None, short: bool = False) -> str:
    """``n = 24; mean difference +5.1, CI [2.0, 8.3]; <the rule>`` or the threshold rule that decided the claim;
    ``short`` leaves out the bootstrap's details (method, resamples, seed), which the scoreboard file keeps."""
    if not ev:
        return "–"
    parts = []
    if ev.get("n") is not None:
        parts.append(f"n = {ev['n']}")
    eff = ev.get("effect")
    if ev.get("ci"):
        lo, hi = ev["ci"]
        parts.append(f"mean difference {eff:+.3g}, 95 % CI [{lo:.3g}, {hi:.3g}]" if short else
                     f"mean difference {eff:+.3g}, CI [{lo:.3g}, {hi:.3g}]")
    elif eff is not None:
        parts.append(f"measured {fmt_value(eff, 3)}")
    if ev.get("per_seed_effects"):
        parts.append("per seed " + ", ".join(f"{x:+.3g}" for x in ev["per_seed_effects"]))
    if "margin" in ev:
        parts.append(f"margin ±{ev['margin']:g}")
        if ev.get("trained", True):
            parts.append(ev.get("runs") or f"{ev.get('seeds')} seeds")
        conv = ev.get("converged")
        if conv:
            parts.append("converged: " + ", ".join(f"{m} {fmt_value(c)}" for m, c in conv.items()))
        elif ev.get("trained", True):
            parts.append("convergence not recorded")
        if ev.get("implementation"):
            parts.append(f"implementation checked against: {ev['implementation']}")
    test = str(ev.get("test", ""))
    if short:
        test = "paired bootstrap" if test.startswith("paired bootstrap") else test
    parts.append(test)
    return "; ".join(p for p in parts if p).replace("|", "\\|")


def fmt_verdict(holds: bool | None, reason: str | None = None) -> str:
    text = VERDICT_TEXT[holds]
    return f"{text} ({reason})" if reason and holds is not True else text


def scoreboard_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The scoreboard as a readable table (for notebooks): one row per claim."""
    rows = [{"claim": r["id"], "kind": "paper claim" if r.get("kind", "paper") == "paper" else "book check",
             "paper": fmt_value(r.get("paper")), "reproduced": fmt_value(r.get("reproduced")),
             "verdict": outcome_text(r), "evidence": fmt_evidence(r.get("evidence")),
             "reason": r.get("reason") or ""} for r in records]
    return pd.DataFrame(rows).set_index("claim")
