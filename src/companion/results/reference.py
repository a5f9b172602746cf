"""Committed reference results: the text outputs of a laptop-scale build, kept in ``book/reference/<chapter>/<scale>/``
so that any later run can be laid beside them (``companion compare``) and the report can show both verdicts.

Refresh them with one command, after a laptop-scale build of the chapters::

    make reference            # = make book SCALE=laptop, then companion reference --scale laptop
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .contract import results_root

REFERENCE_ROOT = Path(__file__).resolve().parents[3] / "book" / "reference"
REFERENCE_SCALE = "laptop"
TEXT_OUTPUTS = ("scoreboard.json", "provenance.json", "table-*.csv")


def reference_dir(chapter: str, scale: str = REFERENCE_SCALE, root: str | os.PathLike | None = None) -> Path:
    return Path(root or REFERENCE_ROOT) / chapter / scale


def update_reference(results: str | os.PathLike | None = None, *, scale: str = REFERENCE_SCALE,
                     chapters: list[str] | None = None, root: str | os.PathLike | None = None) -> list[Path]:
    """Copy the text outputs of every chapter run at `scale` under the results root into the reference folder,
    replacing what was there.  Refuses, before copying anything, a run whose scoreboard left claims unevaluated."""
    base = results_root(results)
    found = sorted(p.parent.parent.name for p in base.glob(f"*/{scale}/scoreboard.json"))
    chapters = chapters or found
    missing = [c for c in chapters if c not in found]
    if missing or not chapters:
        raise FileNotFoundError(f"no {scale}-scale run of {missing or 'any chapter'} under {base}; run "
                                f"`make book SCALE={scale}` (or `companion run CHAPTER --scale {scale}`) first")
    for ch in chapters:
        board = json.loads((base / ch / scale / "scoreboard.json").read_text())
        skipped = [c["id"] for c in board["claims"] if c.get("reason") == "not evaluated in this run"]
        if skipped:
            raise ValueError(f"{ch} at {scale}: claims {skipped} were not evaluated; rerun the whole chapter")
    written = []
    for ch in chapters:
        src, dst = base / ch / scale, reference_dir(ch, scale, root)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for pattern in TEXT_OUTPUTS:
            for f in sorted(src.glob(pattern)):
                shutil.copy2(f, tmp / f.name)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        written.append(dst)
    return written
