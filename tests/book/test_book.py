"""The book at ci scale: every chapter notebook executed with papermill, results contract checked, HTML built with
Sphinx warnings as errors.  Runs last (testpaths order) because it takes minutes."""
import json
import time

import pandas as pd
import pytest

from companion.build import CHAPTERS, REPO, build
from companion.results import load_claims

SCALE = "ci"
BUDGET_S = 4 * 60  # ci scale: at most 4 minutes per chapter on 2 cores


@pytest.fixture(scope="module")
def built():
    results = REPO / "results"
    t0 = time.perf_counter()
    html = build(SCALE, strict=True, results=results)
    return html, results, time.perf_counter() - t0


def test_book_html_built(built):
    html, _, _ = built
    assert (html / "index.html").exists()
    for page in ("book/intro", "book/datasets", "book/report", "book/references"):
        assert (html / f"{page}.html").exists(), page
    for nb in CHAPTERS.values():
        page = html / (nb.removesuffix(".ipynb") + ".html")
        text = page.read_text()
        assert "Traceback" not in text
        assert "Scale: ci" in text or "scale: ci" in text.lower()


def test_pages_carry_no_build_machine_path_and_no_progress_widgets(built):
    """Pages and the downloadable notebooks hold no absolute path of this checkout, and the executed notebooks hold
    no tqdm widgets (they would need scripts from the network in the static book)."""
    html, _, _ = built
    pages = [p for p in html.rglob("*") if p.is_file() and p.suffix in (".html", ".ipynb", ".md", ".txt")]
    assert any(p.suffix == ".ipynb" for p in pages)
    leaks = [str(p.relative_to(html)) for p in pages if str(REPO) in p.read_text(errors="ignore")]
    assert not leaks, f"absolute build paths in {leaks}"
    for nb in CHAPTERS.values():
        assert "application/vnd.jupyter.widget-view+json" not in (REPO / "_build" / "stage" / nb).read_text()


def test_executed_notebooks_are_build_outputs_not_sources(built):
    for nb in CHAPTERS.values():
        src = json.loads((REPO / nb).read_text())
        assert all(c.get("outputs", []) == [] for c in src["cells"] if c["cell_type"] == "code")
        executed = json.loads((REPO / "_build" / "stage" / nb).read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_results_contract(built, chapter):
    _, results, _ = built
    d = results / chapter / SCALE
    claims = load_claims(chapter)
    board = json.loads((d / "scoreboard.json").read_text())
    ids = [c["id"] for c in board["claims"]]
    assert ids == list(claims.claims), "one record per claim, in the claims file's order"
    for c in board["claims"]:
        assert set(c) >= {"id", "statement", "paper", "reproduced", "holds", "reason"}
        assert c["holds"] is True or c["reason"], f"{c['id']}: a false or undecided claim needs a reason"
        assert c["reason"] != "not evaluated in this run", f"{c['id']} was not evaluated at ci scale"
        assert c["scope"] == f"scale {SCALE}; data: {board['data']}", "every record states its scale and data"
        if c["holds"] is not None:
            assert c["evidence"]["test"], f"{c['id']}: a decided claim names the rule it was decided by"
    prov = json.loads((d / "provenance.json").read_text())
    assert prov["scale"] == SCALE and prov["data_sources"] and prov["wall_time_s"] <= BUDGET_S
    assert all(s.get("checksum") for s in prov["data_sources"]), "every data source has a checksum"
    index = json.loads((d / "index.json").read_text())
    for n in claims.tables:
        assert f"table-{n}.csv" in index, f"paper table {n} missing"
    for n in claims.figures:
        assert f"fig-{n}.png" in index, f"paper figure {n} missing"
    for name, entry in index.items():
        assert (d / name).stat().st_size > 0
        assert f"Scale: {SCALE}" in entry["caption"] and "Data: " in entry["caption"]
        if name.endswith(".csv"):
            assert len(pd.read_csv(d / name)) > 0
    assert not [p for p in d.iterdir() if ".tmp" in p.name], "half-written files left behind"


def test_table1_verdicts_carry_intervals(built):
    """Chapter 1's Table 1 claims are decided by the paired bootstrap rule, with n, the interval and the test."""
    _, results, _ = built
    board = json.loads((results / "vaesselsparse" / SCALE / "scoreboard.json").read_text())
    recs = {c["id"]: c for c in board["claims"]}
    n_test = len(pd.read_csv(results / "vaesselsparse" / SCALE / "table-data.csv").query("split == 'test'"))
    for cid in ("sparse-beats-dense-dice", "sparse-beats-dense-cldice"):
        ev = recs[cid]["evidence"]
        assert ev["n"] >= 2 and len(ev["ci"]) == 2 and ev["ci"][0] <= ev["effect"] <= ev["ci"][1], cid
        assert ev["test"].startswith("paired bootstrap 95 % CI"), cid
        if recs[cid]["holds"] is None:  # at ci: 2 test volumes, and the dense model may collapse
            assert recs[cid]["reason"].startswith(("inconclusive", "degenerate")), cid
    assert n_test > 0


def test_report_page_lists_every_chapter(built):
    html, _, _ = built
    text = (html / "book" / "report.html").read_text()
    for chapter in CHAPTERS:
        assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{chapter}</span></code>" in text


def test_chapter_determinism_same_tables(built, tmp_path):
    """Re-running the cheapest chapter at ci scale gives byte-identical tables."""
    from companion.build import execute_chapter

    _, results, _ = built
    execute_chapter("vessel_data", SCALE, tmp_path / "again.ipynb", results=tmp_path / "res")
    first, second = results / "vessel_data" / SCALE, tmp_path / "res" / "vessel_data" / SCALE
    tables = sorted(p.name for p in first.glob("table-*.csv"))
    assert tables and tables == sorted(p.name for p in second.glob("table-*.csv"))
    for name in tables:
        if name == "table-dataset-access.csv":  # depends on this machine's data folder, not on the run
            continue
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_training_chapter_determinism(built, tmp_path, monkeypatch):
    """VAEsselSparse at ci scale, trained again from scratch (empty checkpoint cache), gives byte-identical tables
    -- all but the cost tables, whose cells are wall-clock timings and memory readings."""
    from companion.build import execute_chapter

    _, results, _ = built
    monkeypatch.setenv("COMPANION_CHECKPOINTS", str(tmp_path / "checkpoints"))
    execute_chapter("vaesselsparse", SCALE, tmp_path / "again.ipynb", results=tmp_path / "res")
    assert list((tmp_path / "checkpoints").rglob("*.pt")), "the re-run trained anew"
    first, second = results / "vaesselsparse" / SCALE, tmp_path / "res" / "vaesselsparse" / SCALE
    tables = sorted(p.name for p in first.glob("table-*.csv"))
    assert "table-1.csv" in tables and tables == sorted(p.name for p in second.glob("table-*.csv"))
    compared = [name for name in tables if not name.startswith("table-cost")]
    assert "table-fragments.csv" in compared and "table-compression.csv" in compared
    for name in compared:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
