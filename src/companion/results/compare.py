"""``companion compare RUN_DIR [REFERENCE_DIR]``: lay a chapter run beside a reference run.

* every claim: this run's outcome beside the reference's; a **flip** is the two runs pointing opposite ways (holds in
  one, reversed or does not hold in the other -- a single run's *leaning* counts, since a second machine flipping
  a single-run direction is exactly what verdicts on one run cannot survive); a **change** is any other difference
  of outcome (decided in one and undecided in the other, equivalent against holds, ...).  A run's effect outside the
  reference's confidence interval is flagged.
* every table value: this run's, the reference's and the difference; a value further from the reference than
  ``atol + rtol * |reference|`` (or present in only one) is flagged.

Flips make the command exit with status 1 (``strict``: changes too).  Flags are information: timings, for
example, move with the machine's load, and the verdicts are what must agree.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .format import fmt_value, outcome, outcome_text
from .reference import reference_dir

RTOL = 0.10
ATOL = 1e-9


@dataclass
class Comparison:
    run: Path
    reference: Path
    claims: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # tables missing or reshaped

    @property
    def flips(self) -> list[dict[str, Any]]:
        return [c for c in self.claims if c["status"] == "flipped"]

    @property
    def changes(self) -> list[dict[str, Any]]:
        return [c for c in self.claims if c["status"] != "same"]

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [c for c in self.cells if c["flag"]]

    def exit_code(self, strict: bool = False) -> int:
        return 1 if self.flips or (strict and (self.changes or self.problems)) else 0


def _float(x: str) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def direction(rec: dict[str, Any]) -> int:
    """+1 for the paper's side (holds, or a single run / undecided comparison leaning that way), -1 against it
    (reversed, does not hold, or leaning reversed), 0 otherwise (equivalent, inconclusive, degenerate, ...)."""
    if rec.get("holds") is True:
        return 1
    if rec.get("holds") is False:
        return -1
    lean = (rec.get("evidence") or {}).get("leaning")
    return {"holds": 1, "reversed": -1}.get(lean, 0)


def _claim_status(run: dict[str, Any], ref: dict[str, Any]) -> str:
    """"flipped": the two runs point opposite ways (a decided verdict reversed, or a single run's direction
    reversed -- exactly what a second machine did to chapter 1); "changed": the outcome word differs otherwise."""
    if direction(run) * direction(ref) < 0:
        return "flipped"
    return "same" if outcome(run) == outcome(ref) and run.get("holds") == ref.get("holds") else "changed"


def compare_claims(run_board: dict, ref_board: dict, rtol: float = RTOL) -> list[dict[str, Any]]:
    run = {c["id"]: c for c in run_board["claims"]}
    ref = {c["id"]: c for c in ref_board["claims"]}
    rows = []
    for cid in dict.fromkeys(list(ref) + list(run)):
        a, b = run.get(cid), ref.get(cid)
        if a is None or b is None:
            rows.append({"id": cid, "run": None, "reference": None, "status": "changed",
                         "note": "only in the " + ("reference" if a is None else "run")})
            continue
        row = {"id": cid, "run": outcome_text(a), "reference": outcome_text(b), "status": _claim_status(a, b),
               "note": ""}
        ea, eb = a.get("evidence") or {}, b.get("evidence") or {}
        xa, xb = ea.get("effect"), eb.get("effect")
        if isinstance(xa, (int, float)) and isinstance(xb, (int, float)):
            if eb.get("ci"):
                lo, hi = eb["ci"]
                if not lo <= xa <= hi:
                    row["note"] = f"effect {xa:.3g} outside the reference's CI [{lo:.3g}, {hi:.3g}]"
            elif abs(xa - xb) > ATOL + rtol * abs(xb):
                row["note"] = f"measured {xa:.3g}, reference {xb:.3g}"
        rows.append(row)
    return rows


def compare_tables(run_dir: Path, ref_dir: Path, rtol: float = RTOL, atol: float = ATOL
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    cells, problems = [], []
    names = sorted({p.name for p in run_dir.glob("table-*.csv")} | {p.name for p in ref_dir.glob("table-*.csv")})
    for name in names:
        if not (run_dir / name).exists() or not (ref_dir / name).exists():
            problems.append(f"{name}: only in the {'reference' if (ref_dir / name).exists() else 'run'}")
            continue
        a = pd.read_csv(run_dir / name, dtype=str, keep_default_na=False)
        b = pd.read_csv(ref_dir / name, dtype=str, keep_default_na=False)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            problems.append(f"{name}: shape or columns differ (run {a.shape}, reference {b.shape})")
            continue
        for i in range(len(b)):
            # a row is named by its leading non-numeric cells (the index columns as written), at least the first
            label = [str(b.iat[i, 0])]
            for j in range(1, len(b.columns)):
                if _float(b.iat[i, j]) is not None or b.iat[i, j] == "":
                    break
                label.append(str(b.iat[i, j]))
            for j, col in enumerate(b.columns[1:], start=1):
                va, vb = a.iat[i, j], b.iat[i, j]
                fa, fb = _float(va), _float(vb)
                if fa is not None and fb is not None:
                    both_nan = math.isnan(fa) and math.isnan(fb)
                    diff = None if both_nan else fa - fb
                    flag = not both_nan and not (abs(diff) <= atol + rtol * abs(fb))  # NaN on one side: flagged
                    cells.append({"table": name, "row": " / ".join(label), "column": col, "run": fa, "reference": fb,
                                  "difference": diff, "flag": flag})
                elif va != vb:
                    cells.append({"table": name, "row": " / ".join(label), "column": col, "run": va,
                                  "reference": vb, "difference": None, "flag": True})
    return cells, problems


def compare(run_dir: str | Path, reference: str | Path | None = None, *, rtol: float = RTOL,
            atol: float = ATOL) -> Comparison:
    """Compare the run in `run_dir` (``results/<chapter>/<scale>``) with `reference` (default: the committed
    reference of the same chapter and scale, ``book/reference/<chapter>/<scale>``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "scoreboard.json").exists():
        raise FileNotFoundError(f"{run_dir} holds no scoreboard.json; pass a chapter run folder such as "
                                f"results/vaesselsparse/laptop")
    board = json.loads((run_dir / "scoreboard.json").read_text())
    ref_dir = Path(reference) if reference else reference_dir(board["chapter"], board["scale"])
    if not (ref_dir / "scoreboard.json").exists():
        raise FileNotFoundError(f"no reference scoreboard in {ref_dir}; the committed references are laptop-scale "
                                f"(book/reference/<chapter>/laptop): compare a laptop run, or pass REFERENCE_DIR")
    ref_board = json.loads((ref_dir / "scoreboard.json").read_text())
    if ref_board["chapter"] != board["chapter"]:
        raise ValueError(f"run is chapter {board['chapter']!r}, reference is {ref_board['chapter']!r}")
    cmp = Comparison(run_dir, ref_dir, compare_claims(board, ref_board, rtol))
    cmp.cells, cmp.problems = compare_tables(run_dir, ref_dir, rtol, atol)
    return cmp


def comparison_text(cmp: Comparison, *, all_cells: bool = True) -> str:
    lines = [f"run:       {cmp.run}", f"reference: {cmp.reference}", "",
             f"verdicts: {len(cmp.claims)} claims, {len(cmp.flips)} flipped, "
             f"{len(cmp.changes) - len(cmp.flips)} changed (another outcome, not the other way)"]
    w = max([len(c["id"]) for c in cmp.claims] + [5])
    for c in cmp.claims:
        mark = {"same": " ", "changed": "~", "flipped": "!"}[c["status"]]
        lines.append(f" {mark} {c['id']:<{w}}  run: {str(c['run'] or '–'):<22}  reference: "
                     f"{str(c['reference'] or '–'):<22}  {c['note']}")
    lines += ["", f"table values: {len(cmp.cells)} compared, {len(cmp.flagged)} flagged (beyond tolerance or "
                  f"present on one side only)"]
    for c in (cmp.cells if all_cells else cmp.flagged):
        diff = "" if c["difference"] is None else f"  difference {c['difference']:+.4g}"
        lines.append(f" {'!' if c['flag'] else ' '} {c['table']}  {c['row']}  {c['column']}: run "
                     f"{fmt_value(c['run'])}, reference {fmt_value(c['reference'])}{diff}")
    for p in cmp.problems:
        lines.append(f" ! {p}")
    lines += ["", "FLIPPED: " + ", ".join(c["id"] for c in cmp.flips) if cmp.flips else "no verdict flipped"]
    return "\n".join(lines)
