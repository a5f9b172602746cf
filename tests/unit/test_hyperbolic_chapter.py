"""Chapter 3's settings checks, its torchrun entry point and its real-data refusal (companion.hyperbolic)."""
import json
import os
import subprocess
import sys

import pytest

from companion.chapter import start
from companion.hyperbolic import chapter as hc


@pytest.mark.parametrize("overrides,message", [
    ({"size": 20}, "too small for anchors"),
    ({"infer_patch": 4}, "must be odd"),
    ({"figure_volume": 5}, "not a test volume"),
    ({"sampler": {"r_min": 6, "r_max": 10, "l_min": 5, "r_gap": 3}}, "l_min"),
    ({"anchors_per_epoch": 4}, "no step would run"),
])
def test_impossible_settings_fail_before_training(tmp_path, overrides, message):
    run = start("hyperbolic", scale="ci", output_dir=str(tmp_path), overrides=overrides)
    with pytest.raises(ValueError, match=message):
        hc.check(run)


def test_ci_settings_pass_the_check(tmp_path):
    hc.check(start("hyperbolic", scale="ci", output_dir=str(tmp_path)))


def test_real_brain_data_not_on_disk_is_refused_with_what_to_do(tmp_path, monkeypatch):
    from companion.data.download import DataAccessError

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "data"))
    with pytest.raises(DataAccessError, match="companion data"):
        start("hyperbolic", scale="ci", data="msd_task01_braintumour", output_dir=str(tmp_path / "res"))


def test_torchrun_two_ranks_train_identical_models(tmp_path):
    """The full model and the two patch baselines (whose unused heads DDP must be told about) under torchrun with 2
    CPU ranks: identical weights on both ranks, and rank 0 alone wrote the checkpoints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPANION_CHECKPOINTS": str(tmp_path / "ck"), "TQDM_DISABLE": "1"}
    methods = f"{hc.OURS},{hc.tr.MORIYA.name},{hc.tr.NALEPA.name}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "companion.hyperbolic", "--scale", "ci", "--methods", methods, "--set", "epochs=1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert set(ranks[0]["digests"]) == {f"synthetic {m}" for m in methods.split(",")}
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(list((tmp_path / "ck").rglob("*.pt"))) == 3
    assert not list((tmp_path / "ck").rglob("*.partial.pt"))
