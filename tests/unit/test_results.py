import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import results as R  # noqa: E402
from companion.results import contract  # noqa: E402
from companion.results.verdict import paired_verdict, threshold_verdict  # noqa: E402


@pytest.fixture()
def claims_dir(tmp_path, monkeypatch):
    d = tmp_path / "claims"
    d.mkdir()
    (d / "toy.yaml").write_text("""
chapter: toy
title: Toy chapter
paper: "Toy paper"
claims:
  - id: a-beats-b
    statement: "A beats B on Dice."
    paper_value: {A: 0.9, B: 0.8}
    margin: 1.0
    margin_reason: "one Dice point"
    implementation: "toy formula, checked by hand"
  - id: never-run
    statement: "Something this run does not evaluate."
  - id: a-check
    kind: check
    statement: "A property of the book's own set-up."
tables:
  "1":
    caption: "Table 1 of the toy paper"
    columns: [Dice, clDice]
    values:
      A: {Dice: 0.9, clDice: 0.95}
      B: {Dice: 0.8, clDice: 0.85}
""")
    monkeypatch.setattr(contract, "CLAIMS_DIR", d)
    return d


def test_contract_files_and_side_by_side_table(tmp_path, claims_dir):
    res = R.Results("toy", "ci", root=tmp_path / "res", seed=3, data_label="offline stand-in: toy")
    reproduced = pd.DataFrame({"Dice": [0.7], "params": [12]}, index=pd.Index(["A"], name="method"))
    t = res.paper_table(1, reproduced)
    assert list(t.columns) == ["Dice (paper)", "Dice (reproduced)", "clDice (paper)", "clDice (reproduced)",
                               "params (paper)", "params (reproduced)"]
    assert t.loc["A", "Dice (paper)"] == 0.9 and t.loc["A", "Dice (reproduced)"] == 0.7
    assert np.isnan(t.loc["B", "Dice (reproduced)"])  # not reproduced: stays visible, with the paper's value
    res.table("table-1", t, "Reconstruction")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    res.figure("fig-2", fig, "A figure")
    res.record("a-beats-b", reproduced={"A": 0.7, "B": None}, reason="not run: B needs weights")
    res.finish()
    d = tmp_path / "res" / "toy" / "ci"
    assert {p.name for p in d.iterdir()} == {"table-1.csv", "fig-2.png", "scoreboard.json", "provenance.json",
                                             "index.json"}
    board = json.loads((d / "scoreboard.json").read_text())
    recs = {c["id"]: c for c in board["claims"]}
    assert recs["a-beats-b"]["paper"] == {"A": 0.9, "B": 0.8} and recs["a-beats-b"]["evidence"] is None
    assert recs["a-beats-b"]["scope"] == "scale ci; data: offline stand-in: toy"
    assert recs["never-run"]["holds"] is None and recs["never-run"]["reason"] == "not evaluated in this run"
    prov = json.loads((d / "provenance.json").read_text())
    for key in ("git_commit", "packages", "scale", "seed", "data_sources", "wall_time_s", "peak_memory_mb"):
        assert key in prov
    assert prov["seed"] == 3 and prov["packages"]["numpy"] == np.__version__
    index = json.loads((d / "index.json").read_text())
    assert "Scale: ci" in index["table-1.csv"]["caption"] and "offline stand-in: toy" in index["fig-2.png"]["caption"]


def test_record_rules(tmp_path, claims_dir):
    res = R.Results("toy", "ci", root=tmp_path)
    ok = threshold_verdict(2.0, ">", 1.0, what="ratio")
    with pytest.raises(KeyError, match="a-beats-b"):
        res.record("unknown", reproduced=1, verdict=ok)
    with pytest.raises(ValueError, match="reason"):
        res.record("a-beats-b", reproduced=1)  # neither a verdict nor a reason
    with pytest.raises(ValueError, match="evidence"):
        res.record("a-beats-b", reproduced=1, verdict=R.Verdict(True, None, {}))  # decided without a stated test
    with pytest.raises(ValueError, match="reason"):
        res.record("a-beats-b", reproduced=1, verdict=R.Verdict(False, None, {"test": "t"}))
    with pytest.raises(ValueError, match="both"):
        res.record("a-beats-b", reproduced=1, verdict=ok, reason="why")
    with pytest.raises(KeyError):
        res.paper_table(7, pd.DataFrame())
    # a comparison goes through Results.compare: a bare interval, or another margin than the claims file's, is refused
    a, b = np.arange(10.0) + 5, np.arange(10.0)
    with pytest.raises(ValueError, match="Results.compare"):
        res.record("a-beats-b", reproduced=1, verdict=paired_verdict(a, b, better="higher"))
    from companion.results.comparison import comparison_verdict

    with pytest.raises(ValueError, match="states 1.0"):
        res.record("a-beats-b", reproduced=1,
                   verdict=comparison_verdict(a, b, better="higher", margin=0.5, trained=False))
    rec = res.record("a-beats-b", reproduced=1, verdict=res.compare("a-beats-b", a, b, better="higher",
                                                                    trained=False))
    assert rec["outcome"] == "holds" and rec["evidence"]["margin"] == 1.0 and rec["margin_reason"] == "one Dice point"
    with pytest.raises(ValueError, match="states no margin"):
        res.compare("never-run", a, b, better="higher")


def test_claims_file_margin_needs_a_reason(tmp_path, claims_dir):
    (claims_dir / "bad.yaml").write_text("chapter: bad\ntitle: t\nclaims:\n  - id: x\n    statement: s\n"
                                         "    margin: 0.01\n")
    with pytest.raises(ValueError, match="margin_reason"):
        contract.load_claims("bad")
    (claims_dir / "bad.yaml").write_text("chapter: bad\ntitle: t\nclaims:\n  - id: x\n    statement: s\n"
                                         "    margin: -1\n    margin_reason: r\n")
    with pytest.raises(ValueError, match="non-negative"):
        contract.load_claims("bad")


def test_training_curves_are_recorded_with_their_convergence(tmp_path, claims_dir):
    res = R.Results("toy", "ci", root=tmp_path)
    c = res.training_curve("net", train=np.linspace(1, 0.2, 20), val=0.3 + np.exp(-np.arange(20) / 2))
    assert c.converged is True and c.curve == "validation"  # read on the validation curve where there is one
    assert res.training_curve("still", train=np.linspace(1, 0.2, 20)).converged is False
    res.finish()
    curves = json.loads((tmp_path / "toy" / "ci" / "curves.json").read_text())
    assert set(curves) == {"net", "still"} and len(curves["net"]["train"]) == 20
    assert curves["still"]["convergence"]["converged"] is False and curves["still"]["val"] is None


def _toy_run(root, scale="laptop", a_shift=5.0, table_value=0.7):
    rng = np.random.default_rng(1)
    b = rng.normal(70, 5, 12)
    a = b + a_shift + rng.normal(0, 1, 12)
    res = R.Results("toy", scale, root=root, data_label="offline stand-in: toy")
    res.record("a-beats-b", reproduced={"A": a.mean(), "B": b.mean()},
               verdict=res.compare("a-beats-b", a, b, better="higher", names=("A", "B"), metric="Dice",
                                   trained=False))
    res.record("never-run", reproduced=None, reason="not run: needs data we do not have")
    res.record("a-check", reproduced=1.2, verdict=threshold_verdict(1.2, "<=", 1.5, what="slope"))
    t = res.paper_table(1, pd.DataFrame({"Dice": [a.mean() / 100, table_value]},
                                        index=pd.Index(["A", "B"], name="method")))
    res.table("table-1", t, "Reconstruction")
    res.finish()
    return root / "toy" / scale


def test_report_separates_paper_claims_and_checks_and_shows_reference(tmp_path, claims_dir):
    run = _toy_run(tmp_path / "res", "ci")
    _toy_run(tmp_path / "ref", "laptop", a_shift=-5.0)
    from companion.results.reference import update_reference

    update_reference(tmp_path / "ref", scale="laptop", root=tmp_path / "reference")
    md = R.report_markdown(tmp_path / "res", "ci", reference_root=tmp_path / "reference")
    assert "Toy chapter" in md and "scale `ci`" in md
    assert "Claims of the paper: 1 of 2 hold, 0 do not, 1 undecided." in md
    assert "The book's own checks: 1 of 1 hold, 0 do not, 0 undecided." in md
    lines = md.splitlines()
    # the first lines: one per chapter with its counts, linking the chapter where a document is known
    assert lines[0] == "**At a glance.**"
    assert lines[2] == ("* Toy chapter (scale `ci`): claims of the paper: 1 hold, 0 do not, 1 undecided; own checks: "
                        "1 hold, 0 do not, 0 undecided.")
    linked = R.report_markdown(tmp_path / "res", "ci", reference_root=tmp_path / "reference",
                               chapter_docs={"toy": "../notebooks/99_toy"})
    assert linked.splitlines()[2].startswith("* {doc}`Toy chapter <../notebooks/99_toy>` (scale `ci`)")
    # one compact line per claim: the verdict badge first, then paper against ours and the reference's verdict;
    # the statement and the evidence folded below it
    i = next(k for k, line in enumerate(lines) if "`a-beats-b`" in line)
    assert lines[i].startswith("{bdg-success}`holds` `a-beats-b` · paper ")
    assert lines[i].endswith(" · reference (laptop): reversed")
    assert any(line.startswith("**Margin:** ±1 (one Dice point)") for line in lines[i:])
    assert lines[i + 2] == ":::{dropdown} A beats B on Dice."
    evidence = next(line for line in lines[i:] if line.startswith("**Evidence:**"))
    assert "n = 12" in evidence and "95 % CI [" in evidence and "paired bootstrap" in evidence
    assert "margin ±1" in evidence
    assert not any(line.startswith("|") for line in lines), "no wide tables"
    assert "at scale `ci` on this data only: offline stand-in: toy" in md
    # a reference written before outcomes and margins existed is marked as decided under the earlier rules
    ref_board = tmp_path / "reference" / "toy" / "laptop" / "scoreboard.json"
    old = json.loads(ref_board.read_text())
    for c in old["claims"]:
        c.pop("outcome", None)
    ref_board.write_text(json.dumps(old))
    md = R.report_markdown(tmp_path / "res", "ci", reference_root=tmp_path / "reference")
    assert " · reference (laptop, earlier rules): reversed" in md
    assert "No scoreboards" in R.report_markdown(tmp_path / "empty")
    assert run.exists()


def test_reference_refuses_incomplete_runs(tmp_path, claims_dir):
    from companion.results.reference import update_reference

    with pytest.raises(FileNotFoundError, match="make book SCALE=laptop"):
        update_reference(tmp_path / "nothing", root=tmp_path / "reference")
    res = R.Results("toy", "laptop", root=tmp_path / "res")
    res.finish()  # every claim "not evaluated in this run"
    with pytest.raises(ValueError, match="not evaluated"):
        update_reference(tmp_path / "res", root=tmp_path / "reference")
    assert not (tmp_path / "reference").exists()


def test_compare_identical_copy_passes(tmp_path, claims_dir):
    from companion.results.compare import compare

    run = _toy_run(tmp_path / "a")
    ref = _toy_run(tmp_path / "b")
    cmp = compare(run, ref)
    assert cmp.exit_code(strict=True) == 0 and not cmp.flagged and not cmp.changes and not cmp.problems
    assert len(cmp.cells) >= 4 and all(c["difference"] == 0 for c in cmp.cells if c["difference"] is not None)


def test_compare_catches_a_changed_value_and_a_flipped_verdict(tmp_path, claims_dir):
    import json
    import shutil

    from companion.cli import main
    from companion.results.compare import compare, comparison_text

    ref = _toy_run(tmp_path / "ref")
    run = tmp_path / "run" / "toy" / "laptop"
    shutil.copytree(ref, run)
    # one table value changed
    csv = (run / "table-1.csv").read_text().replace("0.7,", "0.95,")
    (run / "table-1.csv").write_text(csv)
    cmp = compare(run, ref)
    assert [(c["row"], c["column"]) for c in cmp.flagged] == [("B", "Dice (reproduced)")]
    assert cmp.exit_code() == 0  # a moved value is information, not a failure
    # one verdict flipped
    board = json.loads((run / "scoreboard.json").read_text())
    board["claims"][0].update(holds=False, reason="reversed: ...")
    board["claims"][0]["evidence"]["effect"] = -4.0
    (run / "scoreboard.json").write_text(json.dumps(board))
    cmp = compare(run, ref)
    assert [c["id"] for c in cmp.flips] == ["a-beats-b"] and cmp.exit_code() == 1
    assert "outside the reference's CI" in cmp.flips[0]["note"]
    text = comparison_text(cmp)
    assert "FLIPPED: a-beats-b" in text and "difference +0.25" in text
    assert main(["compare", str(run), str(ref)]) == 1
    # decided -> undecided is a change, not a flip: fails only with --strict
    board["claims"][0].update(holds=None, reason="inconclusive: ...")
    (run / "scoreboard.json").write_text(json.dumps(board))
    assert main(["compare", str(run), str(ref)]) == 0 and main(["compare", str(run), str(ref), "--strict"]) == 1
    assert main(["compare", str(tmp_path / "missing")]) == 2
    # a single run's direction reversing between two runs is a flip too (what a second machine did to chapter 1)
    board["claims"][0].update(holds=None, outcome="indicative", reason="indicative (single run ...)")
    board["claims"][0]["evidence"]["leaning"] = "reversed"
    (run / "scoreboard.json").write_text(json.dumps(board))
    refb = json.loads((ref / "scoreboard.json").read_text())
    refb["claims"][0].update(holds=None, outcome="indicative", reason="indicative (single run ...)")
    refb["claims"][0]["evidence"]["leaning"] = "holds"
    (ref / "scoreboard.json").write_text(json.dumps(refb))
    assert [c["id"] for c in compare(run, ref).flips] == ["a-beats-b"]
    board["claims"][0]["evidence"]["leaning"] = "holds"
    (run / "scoreboard.json").write_text(json.dumps(board))
    assert compare(run, ref).flips == []


def test_json_handles_nan_and_numpy(tmp_path):
    R.atomic_write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": float("nan"), "c": np.int64(2),
                                              "d": np.array([1, 2]), "e": float("inf")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5, "b": None, "c": 2, "d": [1, 2], "e": "inf"}
    assert not list(tmp_path.glob(".*tmp*"))


def test_readable_numbers_in_tables():
    from companion.results.contract import readable_number as r

    assert [r(x) for x in (np.int64(32), 12345, 81.45, 123.456, 0.042, 5.84e-16, 1.0, float("nan"), None)] == \
        ["32", "12 345", "81.45", "123.5", "0.042", "5.8 × 10⁻¹⁶", "1", "–", "–"]
    assert r(1552113.0) == "1 552 113" and r(3.0e7) == "30 000 000" and r(2.5e13) == "2.5 × 10¹³"
    assert r({"a": 1.5, "b": None}) == "a: 1.5; b: –" and r([1, 2]) == "1, 2" and r(True) == "yes"
    html = R.style_table(pd.DataFrame({"x": [np.int64(3), 0.5]}), "cap").to_html()
    assert "np.int64" not in html and ">0.5<" in html and "cap" in html
