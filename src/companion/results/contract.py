"""The results contract shared by every chapter.

Running chapter ``C`` at scale ``S`` writes ``<results root>/C/S/``:

* ``table-<n>.csv``  -- each table of the paper, the paper's value beside each reproduced value;
* ``fig-<n>.png``    -- each figure (plus beyond-the-paper figures named for what they show);
* ``scoreboard.json``-- one record per claim (schema: :meth:`Results.record`);
* ``provenance.json``-- git commit, package versions, scale, seed, data sources with checksums, wall time, peak memory;
* ``index.json``     -- every table and figure with its caption, scale and data source.

The paper's numbers come only from the chapter's claims file ``companion/claims/<C>.yaml`` (transcribed from the
paper); reproduced values come only from code that ran.  Every file is written atomically (temporary file, then
rename), so an interrupted run never leaves half a table behind.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from .convergence import Convergence
from .format import fmt_value, scoreboard_frame
from .verdict import Verdict

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "claims"
TRACKED_PACKAGES = ("companion", "torch", "numpy", "scipy", "monai", "scikit-image", "scikit-learn",
                    "connected-components-3d", "pyvista", "vtk", "nibabel", "nilearn", "dipy", "pooch", "papermill",
                    "jupyter-book")


def results_root(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$COMPANION_RESULTS``, else ``./results``."""
    if override:
        return Path(override)
    return Path(os.environ.get("COMPANION_RESULTS", "results"))


# ----------------------------------------------------------------------------------------------- claims file
@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper_value: Any = None
    kind: str = "paper"  # "paper": a claim the paper makes; "check": the book's own check
    margin: float | None = None  # δ of a comparison claim, stated before any run (units of the compared values)
    margin_reason: str | None = None  # why this δ (e.g. "0.01 Dice ≈ one voxel layer on our structures")
    implementation: str | None = None  # what the compared implementations were checked against (a reversal needs it)


@dataclass(frozen=True)
class ClaimsFile:
    chapter: str
    title: str
    paper: str | None
    claims: dict[str, Claim]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)


def load_claims(chapter: str) -> ClaimsFile:
    """Read ``claims/<chapter>.yaml``.  Schema (values transcribed from the paper, never computed)::

        chapter: vaesselsparse
        title: "..."
        paper: "citation of the paper"
        claims:                       # one per statement the scoreboard evaluates
          - id: sparse-beats-dense-dice
            kind: paper               # paper (the paper claims it) | check (the book's own check)
            statement: "..."
            paper_value: {method A: <number from the paper>, method B: <number>}   # any YAML value, or null
            margin: 0.01              # comparison claims: δ, in the units the chapter compares in, stated before
            margin_reason: "..."      #   any run, with its reason (required with margin)
            implementation: "..."     # optional: what the implementation was checked against (paper Eqs., the
                                      #   authors' code); a comparison can be recorded reversed only with it
        tables:                       # table n of the paper: rows -> columns -> value
          "1": {caption: "...", columns: [Dice, clDice], values: {method A: {Dice: <number>, clDice: <number>}}}
        figures:                      # figure n of the paper: what it shows
          "2": "3D renders of reference, dense and sparse reconstructions"
    """
    path = CLAIMS_DIR / f"{chapter}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CLAIMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no claims file for chapter {chapter!r} ({path}); known chapters: {known}")
    raw = yaml.safe_load(path.read_text())
    claims = {}
    for c in raw.get("claims", []):
        if c["id"] in claims:
            raise ValueError(f"{path}: duplicate claim id {c['id']!r}")
        margin = c.get("margin")
        if margin is not None:
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) \
                    or margin < 0:
                raise ValueError(f"{path}: claim {c['id']!r}: margin must be a non-negative number, got {margin!r}")
            if not str(c.get("margin_reason") or "").strip():
                raise ValueError(f"{path}: claim {c['id']!r}: a margin needs its margin_reason (why this δ)")
        claims[c["id"]] = Claim(c["id"], c["statement"].strip(), c.get("paper_value"), c.get("kind", "paper"),
                                None if margin is None else float(margin),
                                (c.get("margin_reason") or "").strip() or None,
                                (c.get("implementation") or "").strip() or None)
    return ClaimsFile(raw["chapter"], raw["title"], raw.get("paper"), claims, raw.get("tables") or {},
                      raw.get("figures") or {})


# ----------------------------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) else (str(x) if math.isinf(x) else x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


# ----------------------------------------------------------------------------------------------- provenance
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB), from getrusage (kilobytes on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ----------------------------------------------------------------------------------------------- display
def readable_number(x: Any) -> str:
    """A cell as a reader should see it: integers without decimals, numbers from 1 to 10⁶ with 2, 1 or 0 decimals
    (below 100, 1000, beyond), numbers from 0.001 to 1 to 3 significant digits, very small or large ones as
    ``5.8 × 10⁻¹⁶``; missing values as an en dash; dicts, lists and booleans without Python syntax."""
    if x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}".replace(",", " ") if abs(int(x)) >= 10_000 else str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if x == 0:
            return "0"
        if x.is_integer() and abs(x) < 1e12:
            return readable_number(int(x))
        if 1 <= abs(x) < 1e6:
            return f"{x:.{2 if abs(x) < 100 else 1 if abs(x) < 1000 else 0}f}"
        if 1e-3 <= abs(x) < 1:
            return f"{x:.3g}"
        mant, exp = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.2g}", "0")
        sup = str(int(exp)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
        return f"{mant} × 10{sup}"
    return fmt_value(x)


def style_table(df: pd.DataFrame, caption: str):
    """``df`` styled for a notebook page: its caption and :func:`readable_number` in every cell."""
    return df.style.set_caption(caption).format(readable_number)


# ----------------------------------------------------------------------------------------------- writer
class Results:
    """Writes one chapter run's tables, figures, scoreboard and provenance into ``root/chapter/scale/``."""

    def __init__(self, chapter: str, scale: str, *, root: str | os.PathLike | None = None, seed: int = 0,
                 data_label: str = "", params: Mapping[str, Any] | None = None):
        self.chapter, self.scale, self.seed = chapter, scale, seed
        self.claims = load_claims(chapter)
        self.dir = results_root(root) / chapter / scale
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_label = data_label
        self.params = dict(params or {})
        self.sources: list[dict[str, Any]] = []
        self.records: dict[str, dict[str, Any]] = {}
        self.index: dict[str, dict[str, Any]] = {}
        self.curves: dict[str, dict[str, Any]] = {}
        self._t0 = time.perf_counter()

    # -- captions
    def caption(self, text: str, data: str | None = None) -> str:
        """`text` followed by the scale and data source, as every table and figure of the book states them.
        `data` overrides the run's data label for a table or figure drawn from other data."""
        return f"{text.rstrip('.')}. Scale: {self.scale}. Data: {data or self.data_label}."

    def add_source(self, name: str, kind: str, checksum: str | None = None, **details: Any) -> None:
        """Record a data source for provenance (checksum as 'algorithm:hex')."""
        self.sources.append({"name": name, "kind": kind, "checksum": checksum, **details})

    # -- tables
    def paper_table(self, n: int | str, reproduced: pd.DataFrame) -> pd.DataFrame:
        """Side-by-side table n: for every row and column the claims file transcribes, the paper value and the
        reproduced value (``NaN`` where not reproduced). Rows/columns the paper lacks are kept (paper = NaN)."""
        spec = self.claims.tables.get(str(n))
        if spec is None:
            raise KeyError(f"claims file of {self.chapter!r} transcribes no table {n}")
        paper = pd.DataFrame(spec["values"]).T  # rows: methods, columns: metrics
        rows = list(dict.fromkeys(list(paper.index) + list(reproduced.index)))
        cols = list(dict.fromkeys(list(spec.get("columns", paper.columns)) + list(reproduced.columns)))
        out = pd.DataFrame(index=pd.Index(rows, name=reproduced.index.name or "row"))
        for c in cols:
            out[f"{c} (paper)"] = paper[c].reindex(rows) if c in paper else np.nan
            out[f"{c} (reproduced)"] = reproduced[c].reindex(rows) if c in reproduced else np.nan
        return out

    def table(self, name: str, df: pd.DataFrame, caption: str, data: str | None = None,
              hide: tuple[str, ...] = ()):
        """Write ``<name>.csv`` (e.g. ``table-1``), index it with its caption, and return the table styled with
        that caption (scale and data source included) for display in the notebook; columns in ``hide`` (long
        notes, say) stay in the file but are left out of the display."""
        path = self.dir / f"{name}.csv"
        atomic_write_bytes(path, df.to_csv(float_format="%.6g").encode())
        full = self.caption(caption, data)
        self.index[path.name] = {"type": "table", "caption": full}
        return style_table(df.drop(columns=list(hide)), f"{name}: {full}")

    # -- figures
    def figure(self, name: str, fig, caption: str, data: str | None = None, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``<name>.png`` with the scale and data source stamped in its footer."""
        import io

        full = self.caption(caption, data)
        fig.text(0.005, 0.003, f"scale: {self.scale} | data: {data or self.data_label}", fontsize=7, color="0.35",
                 ha="left", va="bottom")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        path = self.dir / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        self.index[path.name] = {"type": "figure", "caption": full}
        return path

    # -- training curves and comparisons
    def training_curve(self, model: str, *, train: Sequence[float], val: Sequence[float] | None = None,
                       **rule: Any) -> Convergence:
        """Record ``model``'s loss per epoch (training, and validation where the chapter computes it) for
        ``curves.json`` and return its :func:`~companion.results.convergence.converged` outcome, read on the
        validation curve when there is one and on the training curve otherwise (named in the outcome).  ``rule``:
        the check's settings (``tail``, ``threshold``, ``smooth``), stated where a chapter departs from them."""
        from .convergence import converged

        train = [float(x) for x in train]
        val = None if val is None else [float(x) for x in val]
        conv = converged(val if val else train, model, curve_kind="validation" if val else "training", **rule)
        self.curves[model] = {"train": train, "val": val, "convergence": conv.as_record()}
        return conv

    def margin(self, claim_id: str) -> float:
        """δ of a comparison claim, as its claims file states it (an error if it states none)."""
        c = self._claim(claim_id)
        if c.margin is None:
            raise ValueError(f"claim {claim_id!r} of {self.chapter!r} is decided as a comparison but its claims file "
                             f"states no margin: add `margin:` and `margin_reason:` before running")
        return c.margin

    def compare(self, claim_id: str, a, b, **kwargs: Any) -> Verdict:
        """:func:`~companion.results.comparison.comparison_verdict` with the claim's margin and implementation note
        from the claims file (an ``implementation`` keyword adds to the file's note)."""
        from .comparison import comparison_verdict

        c = self._claim(claim_id)
        note = "; ".join(x for x in (c.implementation, kwargs.pop("implementation", None)) if x) or None
        return comparison_verdict(a, b, margin=self.margin(claim_id), implementation=note, **kwargs)

    def _claim(self, claim_id: str) -> Claim:
        if claim_id not in self.claims.claims:
            raise KeyError(f"claim {claim_id!r} not in claims file of {self.chapter!r}: "
                           f"{', '.join(self.claims.claims)}")
        return self.claims.claims[claim_id]

    def _check_comparison(self, claim_id: str, evidence: Mapping[str, Any]) -> None:
        """A comparison (a paired interval) must carry its claim's stated margin and its seed count."""
        for ev in [evidence, *(evidence.get("parts") or [])]:
            test = str(ev.get("test", ""))
            if not (test.startswith("paired bootstrap") or test.startswith("non-inferiority")):
                continue
            if "margin" not in ev or "seeds" not in ev:
                raise ValueError(f"claim {claim_id!r}: a comparison is recorded through Results.compare (margin from "
                                 f"the claims file, seeds, convergence), not a bare paired interval")
            stated = self.margin(claim_id)
            if not math.isclose(float(ev["margin"]), stated, rel_tol=1e-12, abs_tol=0.0):
                raise ValueError(f"claim {claim_id!r}: decided with margin {ev['margin']!r}, but the claims file "
                                 f"states {stated!r}")

    # -- scoreboard
    def record(self, claim_id: str, *, reproduced: Any, verdict: Verdict | None = None,
               reason: str | None = None) -> dict:
        """Record the outcome of a claim from the claims file.  A scoreboard record reads::

            id, statement        from the claims file
            kind                 "paper" (the paper claims it) | "check" (the book's own check, not a paper claim)
            paper                the paper's value(s), from the claims file
            reproduced           what this run measured
            holds                true | false | null (undecided)
            outcome              holds | reversed | does not hold | equivalent | inconclusive | indicative |
                                 under-trained | undecided | degenerate | not measured (companion.results.verdict)
            reason               why not true: "inconclusive: ...", "indicative (single run ...)", "reversed: ..."
            evidence             {n, effect, ci: [low, high] | null, test, ...}: what the verdict rests on (null if
                                 not evaluated); a comparison adds margin, claim, seeds, per_seed_effects,
                                 trained, converged {model: true | false | null}, convergence (details), leaning,
                                 implementation, and "runs": "single run" where one run decided
            margin_reason        a comparison's stated reason for its margin, from the claims file
            scale, data, scope   where the verdict holds: every record, holding or not, carries its scale and data

        A decided claim comes from a verdict rule of :mod:`companion.results.verdict` (interval or stated
        threshold); a comparison between methods comes from :meth:`compare`; a claim this run cannot evaluate
        passes ``verdict=None`` and a ``reason``."""
        c = self._claim(claim_id)
        if verdict is None:
            if not reason:
                raise ValueError(f"claim {claim_id!r}: give a verdict (companion.results.verdict) or, when it cannot "
                                 f"be evaluated, a reason")
            verdict = Verdict(None, reason, {})
        elif reason is not None:
            raise ValueError(f"claim {claim_id!r}: the reason comes from the verdict; do not pass both")
        if verdict.holds is not True and not verdict.reason:
            raise ValueError(f"claim {claim_id!r}: a reason is required when holds is {verdict.holds!r}")
        if verdict.holds is not None and not (verdict.evidence or {}).get("test"):
            raise ValueError(f"claim {claim_id!r}: a decided claim needs evidence with its test; use a rule of "
                             f"companion.results.verdict")
        self._check_comparison(claim_id, verdict.evidence or {})
        rec = {"id": c.id, "statement": c.statement, "kind": c.kind, "paper": c.paper_value,
               "reproduced": reproduced, "holds": verdict.holds, "outcome": verdict.outcome, "reason": verdict.reason,
               "evidence": dict(verdict.evidence) or None, "scale": self.scale, "data": self.data_label,
               "scope": f"scale {self.scale}; data: {self.data_label}"}
        if c.margin is not None:
            rec["margin_reason"] = c.margin_reason
        self.records[claim_id] = rec
        return rec

    def scoreboard(self) -> pd.DataFrame:
        """The claims recorded so far as a readable table (verdict, evidence, reason)."""
        return scoreboard_frame(self.records.values())

    def finish(self) -> dict[str, Any]:
        """Write scoreboard.json, provenance.json and index.json. Claims never evaluated are recorded as
        holds=None with the reason 'not evaluated in this run' so that nothing disappears silently."""
        for cid, c in self.claims.claims.items():
            if cid not in self.records:
                self.record(cid, reproduced=None, reason="not evaluated in this run")
        ordered = [self.records[c] for c in self.claims.claims]
        atomic_write_json(self.dir / "scoreboard.json",
                          {"chapter": self.chapter, "title": self.claims.title, "scale": self.scale,
                           "data": self.data_label, "claims": ordered})
        prov = {
            "chapter": self.chapter, "scale": self.scale, "seed": self.seed, "git_commit": git_commit(),
            "packages": package_versions(), "platform": platform.platform(), "params": self.params,
            "data_sources": self.sources, "wall_time_s": round(time.perf_counter() - self._t0, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1),
        }
        atomic_write_json(self.dir / "provenance.json", prov)
        atomic_write_json(self.dir / "index.json", self.index)
        if self.curves:
            atomic_write_json(self.dir / "curves.json", self.curves)
        return prov
