"""Chapter 2's training loops and chapter logic: methods, student steps, schedules, folds, summaries, verdicts,
the settings check, and the torchrun entry point."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from companion.chapter import start
from companion.scales import chapter_config
from companion.training import state_digest
from companion.vpbsd import chapter as ch
from companion.vpbsd import train as tr

CI = chapter_config("vpbsd", "ci")


def test_every_table_row_is_a_method_and_teacher_needs_are_right():
    assert set(tr.TABLE1) <= set(tr.METHODS) and set(tr.ABLATION) <= set(tr.METHODS)
    assert not tr.METHODS["Light UNet"].needs_teacher and not tr.METHODS["UA-MT"].needs_teacher
    assert all(tr.METHODS[m].needs_teacher for m in ("Vanilla KD", "FitNets", "VID", "AB", "VpbSD",
                                                     "Baseline + L_mid"))
    assert tr.METHODS["VpbSD"].terms == ("semi", "dis")
    assert tr.METHODS["VpbSD w/o L_dis"].terms == ("semi",) and tr.METHODS["VpbSD w/o L_semi"].terms == ("dis",)


def test_lr_schedule_and_crops():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert tr.set_lr(opt, 1e-2, 0.1, 0, 10) == pytest.approx(1e-2)
    assert tr.set_lr(opt, 1e-2, 0.1, 10, 10) == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    a = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    b = a * 2
    ca, cb = tr.random_crop([a, b], (2, 3, 4), np.random.default_rng(0))
    assert ca.shape == (2, 3, 4) and np.array_equal(cb, ca * 2)  # the same window in both
    with pytest.raises(ValueError, match="larger than the volume"):
        tr.random_crop([a], (5, 3, 4), np.random.default_rng(0))


def _toy(n_lab=2, n_unl=2, shape=(32, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    labels = [rng.random(shape) < 0.1 for _ in range(n_lab)]
    images = [(lab * 0.8 + 0.2 * rng.random(shape)).astype(np.float32) for lab in labels]
    unl = [rng.random(shape).astype(np.float32) for _ in range(n_unl)]
    return images, labels, unl


def _targets(n, shape=(32, 32, 32), d_t=8):
    g = torch.Generator().manual_seed(1)
    t = tr.Targets()
    for _ in range(n):
        logits = torch.randn(1, 1, *shape, generator=g)
        t.logits.append(logits)
        t.pseudo.append((logits > 0).float())
        t.codes.append(torch.randn(1, 32, *(s // 32 for s in shape), generator=g))
        t.features.append(torch.randn(1, d_t, *(s // 32 for s in shape), generator=g))
    return t


@pytest.mark.parametrize("name", list(tr.METHODS))
def test_every_method_trains_one_epoch_and_changes_the_student(name):
    """One epoch of each method on toy 32³ volumes: finite losses, the student moves, the method's extra modules
    exist (and only for the methods that need them), Mean Teacher's EMA copy follows the student."""
    method = tr.METHODS[name]
    images, labels, unl = _toy()
    cfg = {**CI, "student_epochs": 1}
    torch.manual_seed(0)
    model = tr.StudentWithExtras(method, cfg, teacher_channels=8)
    before = state_digest(model.student)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg["student_lr"])
    targets = _targets(len(images) + len(unl)) if method.needs_teacher else None
    stats = tr.student_epoch(method, model, opt, images, labels, unl, targets, cfg, seed=0, device="cpu")(0)
    assert np.isfinite(stats["loss"]) and stats["seg"] > 0
    assert state_digest(model.student) != before
    expected = {"fitnets", "mid", "vid", "ab"} & set(method.terms)
    assert set(model.extras) == expected
    if {"mt", "uamt"} & set(method.terms):
        assert model.ema is not None and not any(p.requires_grad for p in model.ema.parameters())
        assert state_digest(model.ema) != before  # updated from the trained student
    else:
        assert model.ema is None
    if name == "Light UNet":
        assert stats["extra"] == 0


def test_teacher_terms_need_targets():
    images, labels, unl = _toy()
    model = tr.StudentWithExtras(tr.METHODS["VpbSD"], CI, 8)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="needs the teacher's targets"):
        tr.student_epoch(tr.METHODS["VpbSD"], model, opt, images, labels, unl, None, CI, 0, "cpu")


def test_student_training_repeats_exactly():
    images, labels, unl = _toy()
    digests = []
    for _ in range(2):
        torch.manual_seed(3)
        model = tr.StudentWithExtras(tr.METHODS["UA-MT"], CI, 8)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        tr.student_epoch(tr.METHODS["UA-MT"], model, opt, images, labels, unl, None, CI, 0, "cpu")(0)
        digests.append(state_digest(model))
    assert digests[0] == digests[1]


def test_settings_check_fails_before_compute():
    run = start("vpbsd", scale="ci", output_dir="/tmp/companion-test-vpbsd-check")
    ch.check(run)  # the preset is valid
    for bad, match in (({"grid": 48}, "divisible by 32"), ({"folds": 9}, "folds=9"),
                       ({"teacher_crop": [32, 32, 32]}, "teacher_crop"), ({"teacher_features": 16}, "multiple of 12"),
                       ({"n_unlabeled": 1}, "n_unlabeled=1"), ({"figure_volume": 7}, "figure_volume=7")):
        r = start("vpbsd", scale="ci", output_dir="/tmp/companion-test-vpbsd-check", overrides=bad)
        with pytest.raises(ValueError, match=match):
            ch.check(r)


def test_folds_test_every_volume_once():
    run = start("vpbsd", scale="ci", output_dir="/tmp/companion-test-vpbsd-check", overrides={"folds": 3})
    data = ch.Data([np.zeros((2, 2, 2))] * 7, [np.zeros((2, 2, 2), bool)] * 7, [], [f"L{i}" for i in range(7)], "toy")
    splits = ch.fold_splits(run, data)
    tested = np.sort(np.concatenate([te for _, te in splits]))
    assert len(splits) == 3 and np.array_equal(tested, np.arange(7))
    assert all(len(np.intersect1d(a, b)) == 0 for a, b in splits)


def test_fold_summary_is_mean_and_sd_over_fold_means():
    rows = []
    for fold, vals in enumerate([[0.5, 0.7], [0.8], [0.9, 0.7]]):
        for k, v in enumerate(vals):
            rows.append({"method": "A", "volume": f"{fold}-{k}", "fold": fold, **{m: v for m in ch.METRICS}})
    s = ch.fold_summary(pd.DataFrame(rows))
    fold_means = [0.6, 0.8, 0.8]
    assert s.at["A", "DSC"] == pytest.approx(np.mean(fold_means))
    assert s.at["A", "DSC sd"] == pytest.approx(np.std(fold_means, ddof=1))


def _cv(a_dsc, b_dsc, a_pred_empty=False):
    rows, preds = [], {}
    for i, (a, b) in enumerate(zip(a_dsc, b_dsc)):
        for m, v in (("A", a), ("B", b)):
            rows.append({"method": m, "volume": f"V{i}", "fold": i % 2, **{k: v for k in ch.METRICS}})
            p = np.zeros((4, 4, 4), bool)
            if not (m == "A" and a_pred_empty):
                p[1:3, 1:3, 1:3] = True
            preds[(m, f"V{i}")] = p
    done = [{"loss": 0.2 + np.exp(-e / 3), "seg": 0.2 + np.exp(-e / 3)} for e in range(20)]  # converged
    return ch.CV(pd.DataFrame(rows), preds, {("A", 0): done, ("B", 0): done})


def test_compare_decides_from_paired_volumes_and_guards_degenerate_models(tmp_path):
    from companion.chapter import start

    run = start("vpbsd", scale="ci", output_dir=str(tmp_path))
    a = [0.80, 0.82, 0.81, 0.83, 0.79, 0.84]
    b = [0.70, 0.71, 0.72, 0.70, 0.69, 0.73]

    def lean(v):  # one training run: indicative, with the direction the interval points
        assert v.holds is None and v.outcome == "indicative" and v.evidence["margin"] == 0.01
        return v.evidence["leaning"]

    claim = "vpbsd-above-baseline"
    assert lean(ch.compare(run, claim, _cv(a, b), "A", "B", "DSC")) == "holds"
    assert lean(ch.compare(run, claim, _cv(b, a), "A", "B", "DSC")) == "reversed"
    # lower is better for GWD: A's larger values make "A better" false
    assert lean(ch.compare(run, claim, _cv(a, b), "A", "B", "GWD")) == "reversed"
    v = ch.compare(run, claim, _cv(a, b, a_pred_empty=True), "A", "B", "DSC")
    assert v.holds is None and v.reason.startswith("degenerate")


def test_score_gives_the_six_metrics_and_perfect_values_on_identity():
    ref = np.zeros((24, 24, 24), bool)
    ref[4:20, 11:14, 11:14] = True  # (skimage thins a 2-voxel-wide bar away entirely)
    s = ch.score(ref, ref, smd_points=100)
    assert set(s) == set(ch.METRICS)
    assert s["DSC"] == 1 and s["Jaccard"] == 1 and s["Accuracy"] == 1 and s["HD95"] == 0 and s["GWD"] == pytest.approx(0, abs=1e-6)
    assert s["clDice"] == 1
    shifted = np.roll(ref, 3, axis=1)
    s2 = ch.score(shifted, ref, smd_points=100)
    assert s2["DSC"] == 0 and s2["HD95"] == pytest.approx(3) and s2["GWD"] > 0


def test_torchrun_two_ranks_train_identical_teacher_and_student(tmp_path):
    """Pretraining, fine-tuning and one student (VpbSD, fold 0) under torchrun with 2 CPU ranks: every model's
    weights are identical on both ranks, and rank 0 alone wrote the checkpoints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPANION_CHECKPOINTS": str(tmp_path / "ck"), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "companion.vpbsd", "--scale", "ci", "--fold", "0", "--methods", "VpbSD",
           "--set", "n_labeled=8", "--set", "n_unlabeled=4", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert set(ranks[0]["digests"]) == {"teacher-pretrain", "teacher-finetune-fold0", "VpbSD fold0"}
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(list((tmp_path / "ck").rglob("*.pt"))) == 3
    assert not list((tmp_path / "ck").rglob("*.partial.pt"))


def test_vessap_volumes_load_padded_to_the_grid(tmp_path, monkeypatch):
    """The real-data path on a tiny fake VesSAP release (the manifest's layout): labeled pairs and unlabeled
    patches preprocessed, zero-padded to grid³, ids and spacing from the loader; an unfetched release is refused
    with the command that fixes it."""
    import nibabel as nib

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    root, train = tmp_path / "vessap", "software/data/real_training"

    def nii(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))

    rng = np.random.default_rng(0)
    for i in range(3):
        case = f"brain{i}_C00_x0_cube"
        nii(root / train / "prep" / f"prep_{case}.nii.gz", (rng.random((8, 8, 4)) * 100).astype(np.float32))
        nii(root / train / "gt_all" / f"{case}_DoG026.nii.gz", (rng.random((8, 8, 4)) > 0.8).astype(np.uint8))
    for i in range(2):
        nii(root / "unlabelled" / f"u{i}.nii.gz", rng.random((8, 8, 4)).astype(np.float32))
    from companion.data.download import DataAccessError, fetch

    with pytest.raises(DataAccessError, match="companion data fetch vessap"):
        start("vpbsd", scale="ci", data="vessap", output_dir=str(tmp_path / "res"), overrides={"n_labeled": 3})
    fetch("vessap")  # files extracted by hand (the release is a .7z): fetch only records them
    run = start("vpbsd", scale="ci", data="vessap", output_dir=str(tmp_path / "res"), overrides={"n_labeled": 3})
    data = ch.load_data(run)
    assert len(data.images) == 3 and len(data.unlabeled) == 2 and data.ids[0] == "brain0_C00_x0_cube"
    assert data.images[0].shape == (64, 64, 64) and data.labels[0].dtype == bool
    assert data.images[0].max() == pytest.approx(1.0) and not data.labels[0][8:].any()  # padding is background
    assert data.spacing == (1.625, 1.625, 3.0) and "VesSAP" in data.name
    assert run.results.sources[-1]["dataset"] == "vessap"


def test_position_share_tells_position_codes_from_content_codes():
    fixed = torch.tensor([[0, 1, 2, 3]] * 5)  # every volume picks the same code at each position
    assert tr.position_share(fixed) == 1.0
    varied = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])  # codes follow the volume
    assert tr.position_share(varied) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="volumes >= 2"):
        tr.position_share(torch.tensor([[0, 1]]))
