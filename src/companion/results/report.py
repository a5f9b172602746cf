"""The reproduction report and the readable scoreboard: every chapter's claims with their verdicts, the evidence
the verdicts rest on, and the committed reference run's verdict beside this build's."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from .contract import results_root
from .format import OUTCOME_BADGE, fmt_evidence, fmt_value, outcome, outcome_text
from .reference import reference_dir

KIND_TEXT = {"paper": "Claims of the paper", "check": "The book's own checks (not claims of the paper)"}


def collect_scoreboards(root: str | os.PathLike | None = None, scale: str | None = None) -> list[dict[str, Any]]:
    """All scoreboard.json files under the results root (optionally one scale), sorted by chapter and scale."""
    base = results_root(root)
    pattern = f"*/{scale}/scoreboard.json" if scale else "*/*/scoreboard.json"
    return [json.loads(p.read_text()) for p in sorted(base.glob(pattern))]


def _tally(claims: list[dict[str, Any]]) -> list[str]:
    words = [outcome(c) for c in claims]
    held = words.count("holds")
    against = words.count("reversed") + words.count("does not hold")
    parts = [f"{held} hold", f"{against} do not"]
    for w, text in (("equivalent", "equivalent"), ("indicative", "indicative (single run)")):
        if words.count(w):
            parts.append(f"{words.count(w)} {text}")
    rest = len(words) - held - against - words.count("equivalent") - words.count("indicative")
    parts.append(f"{rest} undecided")
    return parts


def counts(claims: list[dict[str, Any]]) -> str:
    parts = _tally(claims)
    held = parts[0].split()[0]
    return f"{held} of {len(claims)} hold, " + ", ".join(parts[1:])


def _reference_board(chapter: str, scale: str, reference_root: Path | None) -> tuple[dict | None, str]:
    """The committed reference scoreboard of `chapter` at `scale` (else at laptop scale), with its scale."""
    for s in dict.fromkeys([scale, "laptop"]):
        p = reference_dir(chapter, s, reference_root) / "scoreboard.json"
        if p.exists():
            return json.loads(p.read_text()), s
    return None, ""


def _counts_short(claims: list[dict[str, Any]]) -> str:
    return ", ".join(_tally(claims))


def _claim_block(c: dict[str, Any], ref: dict | None, ref_scale: str) -> list[str]:
    """One claim as a narrow block that wraps at any width: the verdict badge, the id and paper against ours on
    the first line; the statement, reason and evidence folded below."""
    earlier = ", earlier rules" if ref and "outcome" not in ref else ""  # written before outcomes and margins
    ref_text = f" · reference ({ref_scale}{earlier}): {outcome_text(ref)}" if ref else ""
    word = outcome(c)
    lines = [f"{{bdg-{OUTCOME_BADGE[word]}}}`{outcome_text(c)}` `{c['id']}` · "
             f"paper {fmt_value(c['paper'])} · ours {fmt_value(c['reproduced'])}{ref_text}", "",
             f":::{{dropdown}} {fmt_value(c['statement'])}"]
    if c.get("reason") and c["holds"] is not True:
        lines.append(f"**Why {word}:** {fmt_value(c['reason'])}")
        lines.append("")
    lines += [f"**Evidence:** {fmt_evidence(c.get('evidence'), short=True)}", ""]
    ev = c.get("evidence") or {}
    if "margin" in ev:
        seeds = ev.get("runs") or (f"{ev['seeds']} seeds" if ev.get("seeds") else "no training involved")
        conv = ev.get("converged") or {}
        conv_text = ("; ".join(f"{m}: {'yes' if v else 'no' if v is False else 'cannot tell'}"
                               for m, v in conv.items()) if conv else
                     ("not recorded" if ev.get("trained", True) else "no training involved"))
        lines += [f"**Margin:** ±{ev['margin']:g}" + (f" ({fmt_value(c['margin_reason'])})"
                                                       if c.get("margin_reason") else ""), "",
                  f"**Seeds:** {seeds}", "", f"**Converged:** {conv_text}", "",
                  f"**Implementation checked against:** {fmt_value(ev.get('implementation')) if ev.get('implementation') else 'no note yet (a reversal needs one)'}",
                  ""]
    lines += [":::", ""]
    return lines


def report_markdown(root: str | os.PathLike | None = None, scale: str | None = None, *,
                    reference_root: str | os.PathLike | None = None,
                    chapter_docs: dict[str, str] | None = None) -> str:
    """The reproduction report. It opens with one line per chapter (claims that hold, do not hold, are undecided;
    a link to the chapter where `chapter_docs` maps chapter ids to documents), then one section per chapter and
    scale: paper claims and the book's own checks apart, one compact block per claim (verdict badge, paper against
    ours, the committed reference run's verdict) with the statement and evidence folded."""
    boards = collect_scoreboards(root, scale)
    if not boards:
        where = results_root(root)
        return (f"No scoreboards found under `{where}`"
                + (f" for scale `{scale}`" if scale else "") + ". Run the chapters first (`make book`).\n")
    ref_root = Path(reference_root) if reference_root else None
    docs = chapter_docs or {}
    boards.sort(key=lambda b: list(docs).index(b["chapter"]) if b["chapter"] in docs else len(docs))
    lines = ["**At a glance.**", ""]
    for b in boards:
        paper = [c for c in b["claims"] if c.get("kind", "paper") == "paper"]
        checks = [c for c in b["claims"] if c.get("kind", "paper") != "paper"]
        name = f"{{doc}}`{b['title']} <{docs[b['chapter']]}>`" if b["chapter"] in docs else b["title"]
        parts = [f"claims of the paper: {_counts_short(paper)}"] if paper else []
        parts += [f"own checks: {_counts_short(checks)}"] if checks else []
        lines.append(f"* {name} (scale `{b['scale']}`): {'; '.join(parts) or 'no claims'}.")
    lines.append("")
    for b in boards:
        ref, ref_scale = _reference_board(b["chapter"], b["scale"], ref_root)
        ref_recs = {c["id"]: c for c in ref["claims"]} if ref else {}
        paper = [c for c in b["claims"] if c.get("kind", "paper") == "paper"]
        checks = [c for c in b["claims"] if c.get("kind", "paper") != "paper"]
        lines += [f"## {b['title']} (`{b['chapter']}`, scale `{b['scale']}`)", "",
                  f"Every verdict in this section holds at scale `{b['scale']}` on this data only: {b['data']}.", ""]
        summary = []
        if paper:
            summary.append(f"Claims of the paper: {counts(paper)}.")
        if checks:
            summary.append(f"The book's own checks: {counts(checks)}.")
        lines += [" ".join(summary), ""]
        if not ref:
            lines += ["No committed reference run for this chapter (`book/reference/`).", ""]
        for kind, group in (("paper", paper), ("check", checks)):
            if not group:
                continue
            lines += [f"**{KIND_TEXT[kind]}**", ""]
            for c in group:
                lines += _claim_block(c, ref_recs.get(c["id"]), ref_scale)
    return "\n".join(lines)
