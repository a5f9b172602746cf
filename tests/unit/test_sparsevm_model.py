"""Chapter 4's network wrapper, training loop, settings checks and torchrun entry point (companion.sparsevm)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from companion.chapter import start
from companion.sparsevm import chapter as sc
from companion.sparsevm import model as md
from companion.sparsevm import train as tr


def _smooth_flow(shape, amp, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 3, 3, 3, generator=g) * amp
    return torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)


def test_displacement_is_pull_back_in_voxels():
    """(m o phi)(p) = m(p + u(p)): a displacement of +1 along axis 0 moves a bright voxel from z to z - 1."""
    from voxelmorph.nn.modules import SpatialTransformer

    x = torch.zeros(1, 1, 8, 8, 8)
    x[0, 0, 4, 4, 4] = 1
    u = torch.zeros(1, 3, 8, 8, 8)
    u[:, 0] = 1.0
    y = SpatialTransformer("linear")(x, u)
    assert torch.nonzero(y[0, 0] > 0.99).tolist() == [[3, 4, 4]]
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[4, 4, 4] = 2
    assert np.argwhere(md.warp_labels(lab, u) == 2).tolist() == [[3, 4, 4]]


def test_warped_labels_stay_aligned_with_the_warped_image():
    """A label map and an image equal to it, moved by the same smooth field: wherever the (linearly) moved image is
    exactly a label value -- away from label borders -- the moved labels agree with it; and only input labels occur."""
    rng = np.random.default_rng(0)
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[4:14, 5:18, 6:16] = 1
    lab[12:20, 8:20, 3:12] = 2
    flow = _smooth_flow((24, 24, 24), 2.0)
    moved_lab = md.warp_labels(lab, flow)
    from voxelmorph.nn.modules import SpatialTransformer

    moved_img = SpatialTransformer("linear")(torch.as_tensor(lab, dtype=torch.float32)[None, None], flow)[0, 0].numpy()
    pure = np.isclose(moved_img, np.round(moved_img), atol=1e-4)
    assert pure.mean() > 0.5
    assert np.array_equal(moved_lab[pure], np.round(moved_img[pure]).astype(np.uint8))
    assert set(np.unique(moved_lab)) <= {0, 1, 2}
    assert not np.array_equal(moved_lab, lab)  # the field did move things
    del rng


def test_shape_check_names_the_multiple():
    md.check_shape((48, 64, 48))
    with pytest.raises(ValueError, match="multiple of 16"):
        md.check_shape((50, 64, 48))


def _toy(n=3, shape=(16, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    atlas = np.exp(-((z / 0.5) ** 2 + (y / 0.6) ** 2 + (x / 0.4) ** 2)).astype(np.float32)
    imgs = np.stack([np.roll(atlas, int(rng.integers(-2, 3)), axis=0) for _ in range(n)]).astype(np.float32)
    masks = np.zeros_like(imgs)
    masks[:, ::3] = 1.0
    return atlas, imgs, masks


@pytest.mark.parametrize("method", list(tr.METHODS.values()), ids=lambda m: m.similarity)
def test_each_method_trains_and_its_loss_falls(method):
    atlas, imgs, masks = _toy(n=2)
    model = md.build(seed=0)
    opt = tr.optimizer(model, 5e-3)
    fn = tr.epoch_fn(method, model, opt, atlas, imgs, masks, batch=1, window=5, seed=0, device="cpu")
    hist = [fn(e) for e in range(4)]
    assert all(np.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["similarity"] < hist[0]["similarity"]


def test_lambda_follows_voxelmorph_per_family_and_exercise_override():
    assert tr.SLCC.lam == tr.VM_CC.lam == pytest.approx(1 / 3)
    assert tr.SMSE.lam == pytest.approx(0.01 / 3)
    assert tr.Method("x", "slcc", "", lam_override=0.5).lam == 0.5
    with pytest.raises(ValueError, match="unknown similarity"):
        tr.similarity(tr.Method("x", "ncc", ""), *(torch.ones(1, 1, 8, 8, 8),) * 3, 3)


def test_sparse_losses_ignore_interpolated_voxels_in_training():
    """Changing the subject's values where its mask is 0 leaves SMSE and SLCC training losses unchanged; CC moves."""
    atlas, imgs, masks = _toy(n=1)
    model = md.build(seed=0)
    a = torch.as_tensor(atlas)[None, None]
    f = torch.as_tensor(imgs)[:, None]
    mf = torch.as_tensor(masks)[:, None]
    g = f.clone()
    g[mf == 0] = torch.rand(int((mf == 0).sum()), generator=torch.Generator().manual_seed(1))
    for method, same in ((tr.SMSE, True), (tr.SLCC, True), (tr.VM_CC, False)):
        with torch.no_grad():
            l1 = float(tr.loss_terms(method, model, a, f, mf, 5)[0])
            l2 = float(tr.loss_terms(method, model, a, g, mf, 5)[0])
        assert (abs(l1 - l2) < 1e-6) == same, method.name


@pytest.mark.parametrize("overrides,message", [
    ({"shape": [50, 64, 48]}, "multiple of 16"),
    ({"window": 4}, "odd"),
    ({"ants_setting": "fastest"}, "not an ANTs setting"),
    ({"bench_runs": [["syncc", 0]]}, "bench_runs item"),
    ({"bench_pairs": 9}, "bench_pairs"),
    ({"n_train": 0}, "no step would run"),
    ({"slice_mm": [7, 5]}, "slice_mm"),
])
def test_impossible_settings_fail_before_any_data(tmp_path, overrides, message):
    run = start("sparsevm", scale="ci", output_dir=str(tmp_path), overrides=overrides)
    with pytest.raises(ValueError, match=message):
        sc.check(run)


def test_ci_settings_pass_the_check(tmp_path):
    sc.check(start("sparsevm", scale="ci", output_dir=str(tmp_path)))


def test_real_data_not_on_disk_is_refused_with_what_to_do(tmp_path, monkeypatch):
    from companion.data.download import DataAccessError

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "data"))
    with pytest.raises(DataAccessError, match="companion data"):
        start("sparsevm", scale="ci", data="neurite_oasis", output_dir=str(tmp_path / "res"))


@pytest.mark.slow
def test_torchrun_two_ranks_train_identical_models(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPANION_CHECKPOINTS": str(tmp_path / "ck"), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "companion.sparsevm", "--scale", "ci", "--methods", tr.SLCC.name, "--set", "epochs=1", "--out",
           str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["digests"] == ranks[1]["digests"] and set(ranks[0]["digests"]) == {tr.SLCC.name}
    assert len(list((tmp_path / "ck").rglob("*.pt"))) == 1


def _fake_eval(n=8, seed=0, slcc_gain=0.05):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.4, 0.6, n)
    dice = {sc.NONE: base, sc.ANTS: base + 0.2 + rng.normal(0, 0.01, n), tr.VM_CC.name: base + 0.1,
            tr.SMSE.name: base + 0.08, tr.SLCC.name: base + 0.1 + slcc_gain + rng.normal(0, 0.005, n)}
    rows = [{"method": m, "subject": f"s{i}", "Dice": float(v[i]), "CPU s": 0.1} for m, v in dice.items()
            for i in range(n)]
    import pandas as pd

    ev = sc.Eval(pd.DataFrame(rows))
    ev.histories = {m: list(0.2 + np.exp(-np.arange(20) / 3)) for m in sc.LEARNED}  # converged curves
    return ev


def _bench(speedup, dice_gap=0.0):
    import pandas as pd

    return sc.Bench(pd.DataFrame([{"subject": "s0", "ANTs setting": "SyNCC", "setting": "syncc", "threads": 1,
                                   "SparseVM s": 1.0, "ANTs s": speedup, "speed-up": speedup,
                                   "SparseVM Dice": 0.7 + dice_gap, "ANTs Dice": 0.7}]))


def test_claims_decide_both_ways(tmp_path):
    """The scoreboard's rules on constructed per-subject results of one training run (so the comparisons are at
    most indicative): SLCC clearly better -> leans holds; worse -> leans reversed; a speed-up of 50x fails the 100x
    target, 500x passes; a reduced ANTs setting leaves the speed claims undecided."""
    def board(ev, bench):
        run = start("sparsevm", scale="ci", output_dir=str(tmp_path / str(len(list(tmp_path.iterdir())))))
        sc.record_claims(run, ev, bench)
        return {k: v["holds"] if v["holds"] is not None or v["outcome"] != "indicative" else
                "indicative " + v["evidence"]["leaning"] for k, v in run.results.records.items()}

    good = board(_fake_eval(), _bench(500))
    assert good["slcc-above-voxelmorph"] == "indicative holds" and good["slcc-above-smse"] == "indicative holds"
    assert good["slcc-not-below-ants"] == "indicative reversed"  # 0.05 below ANTs, beyond the 0.02 margin
    assert good["faster-than-ants"] is True and good["speedup-100x"] is True
    bad = board(_fake_eval(slcc_gain=-0.05), _bench(50))
    assert bad["slcc-above-voxelmorph"] == "indicative reversed" and bad["faster-than-ants"] is False
    assert board(_fake_eval(), _bench(500, dice_gap=-0.1))["speedup-100x"] is False
    fast = _bench(500)
    fast.per_pair["setting"] = "syncc-fast"
    assert board(_fake_eval(), fast)["faster-than-ants"] is None
    # a method no better than leaving the atlas unregistered makes its comparisons degenerate
    ev = _fake_eval()
    ev.per_subject.loc[ev.per_subject["method"] == tr.SLCC.name, "Dice"] = \
        ev.per_subject.loc[ev.per_subject["method"] == sc.NONE, "Dice"].to_numpy()
    assert board(ev, _bench(500))["slcc-above-voxelmorph"] is None
