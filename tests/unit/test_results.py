import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import results as R  # noqa: E402


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
  - id: never-run
    statement: "Something this run does not evaluate."
tables:
  "1":
    caption: "Table 1 of the toy paper"
    columns: [Dice, clDice]
    values:
      A: {Dice: 0.9, clDice: 0.95}
      B: {Dice: 0.8, clDice: 0.85}
""")
    monkeypatch.setattr(R, "CLAIMS_DIR", d)
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
    res.record("a-beats-b", reproduced={"A": 0.7, "B": None}, holds=None, reason="B not run here")
    res.finish()
    d = tmp_path / "res" / "toy" / "ci"
    assert {p.name for p in d.iterdir()} == {"table-1.csv", "fig-2.png", "scoreboard.json", "provenance.json",
                                             "index.json"}
    board = json.loads((d / "scoreboard.json").read_text())
    recs = {c["id"]: c for c in board["claims"]}
    assert recs["a-beats-b"]["paper"] == {"A": 0.9, "B": 0.8}
    assert recs["never-run"]["holds"] is None and recs["never-run"]["reason"] == "not evaluated in this run"
    prov = json.loads((d / "provenance.json").read_text())
    for key in ("git_commit", "packages", "scale", "seed", "data_sources", "wall_time_s", "peak_memory_mb"):
        assert key in prov
    assert prov["seed"] == 3 and prov["packages"]["numpy"] == np.__version__
    index = json.loads((d / "index.json").read_text())
    assert "Scale: ci" in index["table-1.csv"]["caption"] and "offline stand-in: toy" in index["fig-2.png"]["caption"]


def test_record_rules(tmp_path, claims_dir):
    res = R.Results("toy", "ci", root=tmp_path)
    with pytest.raises(KeyError, match="a-beats-b"):
        res.record("unknown", reproduced=1, holds=True)
    with pytest.raises(ValueError, match="reason"):
        res.record("a-beats-b", reproduced=1, holds=False)
    with pytest.raises(KeyError):
        res.paper_table(7, pd.DataFrame())


def test_report_aggregates_scoreboards(tmp_path, claims_dir):
    for scale in ("ci", "laptop"):
        res = R.Results("toy", scale, root=tmp_path)
        res.record("a-beats-b", reproduced={"A": 0.91, "B": 0.7}, holds=True)
        res.finish()
    md = R.report_markdown(tmp_path, "ci")
    assert "Toy chapter" in md and "scale `ci`" in md and "scale `laptop`" not in md
    assert "1 of 2 claims hold" in md
    assert "No scoreboards" in R.report_markdown(tmp_path / "empty")


def test_json_handles_nan_and_numpy(tmp_path):
    R.atomic_write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": float("nan"), "c": np.int64(2),
                                              "d": np.array([1, 2]), "e": float("inf")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5, "b": None, "c": 2, "d": [1, 2], "e": "inf"}
    assert not list(tmp_path.glob(".*tmp*"))
