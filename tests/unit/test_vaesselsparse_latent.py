"""Chapter 1 part 2: latents on the bottleneck grid, cross-validated classifiers, generation metrics, flow matching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import metrics
from companion.sparse import SparseTensor
from companion.vaesselsparse import classify, generate, latents


# ----------------------------------------------------------------------------------------------- latents
def _random_latent(n: int, c: int = 4, stride: int = 8, grid: int = 48, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    d = grid // stride
    pos = torch.randperm(d ** 3, generator=g)[:n]
    xyz = torch.stack([pos // (d * d), (pos // d) % d, pos % d], 1) * stride
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.long), xyz], 1)
    return SparseTensor(coords, torch.randn(n, c, generator=g), stride, (grid,) * 3, 1)


def _sorted(st: SparseTensor):
    order = torch.argsort(st.keys())
    return st.coords[order], st.feats[order]


@pytest.mark.parametrize("n", [1, 7, 60, 216])
def test_sparse_latent_survives_the_grid_exactly(n):
    mu = _random_latent(n)
    grid = latents.sparse_to_grid(mu)
    assert grid.shape == (5, 6, 6, 6)  # C + 1 channels on the 6³ bottleneck of a 48³ map, whatever n is
    assert grid[-1].sum() == n  # the occupancy channel counts the positions
    back = latents.grid_to_sparse(grid, mu.stride, mu.spatial_shape)
    (ca, fa), (cb, fb) = _sorted(mu), _sorted(back)
    assert torch.equal(ca, cb) and torch.equal(fa, fb)


def test_a_zero_feature_is_not_an_absent_position():
    mu = _random_latent(5)
    mu = mu.replace_feats(torch.zeros_like(mu.feats))  # all features exactly 0: only occupancy tells where
    back = latents.grid_to_sparse(latents.sparse_to_grid(mu), mu.stride, mu.spatial_shape)
    assert back.n == 5
    # without the occupancy channel the positions would be lost: a counter-example
    grid = latents.sparse_to_grid(mu)
    assert np.count_nonzero(grid[:-1]) == 0


def test_latent_vectors_have_one_length_for_any_occupancy():
    grids = np.stack([latents.sparse_to_grid(_random_latent(n, seed=n)) for n in (3, 50, 200)])
    dense = np.random.default_rng(0).normal(size=(3, 4, 6, 6, 6)).astype(np.float32)
    vec = latents.latent_vectors(grids, dense)
    assert vec["sparse"].shape == (3, 5 * 216) and vec["dense"].shape == (3, 4 * 216)


def test_grid_to_sparse_rejects_a_grid_of_the_wrong_size():
    with pytest.raises(ValueError, match="does not match"):
        latents.grid_to_sparse(np.zeros((5, 4, 4, 4)), 8, (48, 48, 48))


# ----------------------------------------------------------------------------------------------- classifiers
def test_balanced_contributions_average_to_the_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30, int), np.ones(10, int), np.full(5, 2)]
    pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, 3, len(y)))
    assert classify.balanced_contributions(y, pred).mean() == pytest.approx(100 * metrics.balanced_accuracy(y, pred))


def test_folds_are_stratified_and_too_small_classes_fail_early():
    y = np.repeat(np.arange(3), 6)
    fold = classify.folds_of(y, 3, seed=0)
    for f in range(3):
        assert np.bincount(y[fold == f], minlength=3).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="at least 3 samples"):
        classify.folds_of(np.r_[y, 3, 3], 3, seed=0)


def test_pca_rf_finds_a_signal_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 40))
    x[:, 0] += 4 * y  # one informative direction
    fold = classify.folds_of(y, 3, seed=0)
    good = classify.pca_rf(x, y, fold, components=5, trees=50, seed=0, method="rf")
    assert 100 * metrics.balanced_accuracy(y, good.pred) > 80
    shuffled = rng.permutation(y)  # the counter-example: labels unrelated to x
    bad = classify.pca_rf(x, shuffled, classify.folds_of(shuffled, 3, seed=0), components=5, trees=50, seed=0,
                          method="rf")
    assert 100 * metrics.balanced_accuracy(shuffled, bad.pred) < 60


def test_mlp_learns_a_separable_task_and_a_collapse_is_flagged():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(2), 15)
    x = rng.normal(size=(30, 8)) + 3 * y[:, None]
    res = classify.mlp(x, y, classify.folds_of(y, 3, seed=0), hidden=16, epochs=100, lr=1e-2, seed=0, method="mlp")
    assert 100 * metrics.balanced_accuracy(y, res.pred) > 90
    assert classify.collapsed(res, 2) is None
    flat = classify.CVResult("flat", np.zeros(30, int), res.fold)
    assert "predicts one class" in classify.collapsed(flat, 2)
    assert set(res.losses) == {0, 1, 2} and len(res.losses[0]) == 100 and res.losses[0][-1] < res.losses[0][0]


def test_vit_head_is_linear_and_constant_features_do_not_explode():
    """Two defects found by review: MONAI's ViT caps its logits with a Tanh by default, and dividing by sd + 1e-6
    turned features constant within a training fold into test inputs of about 10⁶."""
    import torch

    cfg = {"resnet_widen": 0.25, "vit_hidden": 16, "vit_layers": 1, "vit_heads": 2, "vit_patch": 8}
    vit = classify.voxel_network("ViT", 16, 2, cfg)
    assert not any(isinstance(m, torch.nn.Tanh) for m in vit.modules())
    with torch.no_grad():
        for p in vit.classification_head.parameters():
            p.fill_(3.0)
        logits, _ = vit(torch.ones(1, 1, 16, 16, 16))
    assert logits.abs().max() > 1  # not capped at ±1
    x_tr = np.c_[np.random.default_rng(0).normal(size=(20, 2)), np.full(20, 5.0)]  # third feature constant
    mu, sd = classify.standardiser(x_tr)
    z = (np.array([[0.0, 0.0, 6.0]]) - mu) / sd
    assert np.all(np.isfinite(z)) and abs(z[0, 2]) == 0 and np.abs(z).max() < 10


def test_a_classifier_at_chance_cannot_win():
    """Chance-level floor of the classification claims: a method whose balanced accuracy is no better than 100/K %
    makes its comparisons degenerate, even when its rival is worse still."""
    from companion.vaesselsparse.latent_chapter import Task, classification_guards

    y = np.repeat(np.arange(2), 20)
    task = Task("toy", "toy", np.zeros((40, 4, 4, 4), bool), y, ("a", "b"))
    fold = np.tile(np.arange(2), 20)
    at_chance = np.where(np.arange(40) % 4 < 2, y, 1 - y)  # half right in each class: 50 % balanced accuracy
    worse = np.where(np.arange(40) % 4 < 1, y, 1 - y)  # 25 %
    results = {"mlp": classify.CVResult("mlp", at_chance, fold), "resnet": classify.CVResult("resnet", worse, fold)}
    found = [g for g in classification_guards(task, results, "mlp", "resnet") if g]
    assert found and "no better than chance" in found[0]
    results["mlp"] = classify.CVResult("mlp", y.copy(), fold)  # perfect
    assert not any(classification_guards(task, results, "mlp", "resnet"))


def test_voxel_networks_run_on_a_tiny_grid():
    cfg = {"resnet_widen": 0.25, "vit_hidden": 16, "vit_layers": 1, "vit_heads": 2, "vit_patch": 8,
           "voxel_epochs": 1, "voxel_lr": 1e-3, "voxel_batch": 4}
    vols = np.random.default_rng(0).random((6, 16, 16, 16)) > 0.9
    y = np.array([0, 1] * 3)
    for kind in ("ResNet", "ViT"):
        res = classify.voxel_cv(kind, vols, y, classify.folds_of(y, 3, seed=0), cfg, seed=0, method=kind)
        assert res.pred.shape == (6,) and set(res.pred) <= {0, 1}
    with pytest.raises(ValueError, match="must divide"):
        classify.voxel_network("ViT", 20, 2, cfg)


# ----------------------------------------------------------------------------------------------- generation metrics
def _blob_maps(n, centre, seed, grid=24, r=3):
    rng = np.random.default_rng(seed)
    out = []
    zz, yy, xx = np.mgrid[:grid, :grid, :grid]
    for _ in range(n):
        c = np.asarray(centre) + rng.normal(0, 1.5, 3)
        out.append((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2 <= r * r)
    return out


def _scores(gen, ref):
    pg = [metrics.point_cloud(m, 128, seed=i) for i, m in enumerate(gen)]
    pr = [metrics.point_cloud(m, 128, seed=100 + i) for i, m in enumerate(ref)]
    return metrics.generation_metrics(metrics.chamfer_matrix(pg, pr), metrics.chamfer_matrix(pg, pg),
                                      metrics.chamfer_matrix(pr, pr))


def test_point_cloud_lives_in_the_unit_cube_and_empty_maps_have_none():
    m = np.zeros((10, 10, 10), bool)
    assert metrics.point_cloud(m, 5) is None
    m[0, 0, 0] = m[9, 9, 9] = True
    p = metrics.point_cloud(m, 50)
    assert p.shape == (50, 3) and p.min() == pytest.approx(0.05) and p.max() == pytest.approx(0.95)
    assert metrics.chamfer(p, p) == 0.0


def test_generation_metrics_tell_a_good_generator_from_a_bad_one():
    ref = _blob_maps(12, (12, 12, 12), seed=0)
    same = _scores(_blob_maps(12, (12, 12, 12), seed=1), ref)  # same distribution
    off = _scores(_blob_maps(12, (6, 6, 6), seed=2), ref)  # shifted: a bad generator
    assert 25 <= same["1-NNA"] <= 75 and off["1-NNA"] > 95
    assert same["MMD"] < off["MMD"] and same["COV"] > off["COV"]
    assert len(same["mmd_per_reference"]) == 12 and np.mean(same["mmd_per_reference"]) == pytest.approx(same["MMD"])
    assert 100 * same["covered_per_reference"].mean() == pytest.approx(same["COV"])
    assert 100 * same["nna_correct"].mean() == pytest.approx(same["1-NNA"])


def test_empty_generated_maps_count_against_the_generator():
    ref = _blob_maps(6, (12, 12, 12), seed=0)
    empty = _scores([np.zeros((24, 24, 24), bool)] * 6, ref)
    assert empty["COV"] == 0 and empty["1-NNA"] == 100 and not np.isfinite(empty["MMD"])


# ----------------------------------------------------------------------------------------------- flow matching
def test_standardiser_inverts_and_keeps_occupancy():
    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, size=(5, 3, 4, 4, 4)).astype(np.float32)
    x[:, -1] = rng.random((5, 4, 4, 4)) > 0.7
    x[:, :-1] *= x[:, -1:]
    st = generate.Standardiser.fit(x, occupancy=True)
    z = st.forward(x)
    assert set(np.unique(z[:, -1])) == {-1.0, 1.0}
    np.testing.assert_allclose(st.inverse(z), x, atol=1e-5)
    dense = generate.Standardiser.fit(x[:, :-1], occupancy=False)
    np.testing.assert_allclose(dense.inverse(dense.forward(x[:, :-1])), x[:, :-1], atol=1e-5)


def test_flow_matching_learns_a_shifted_distribution():
    torch.manual_seed(0)
    data = 2.0 + 0.1 * torch.randn(32, 2, 4, 4, 4)  # every latent near 2: the flow must move noise there
    model = generate.build_unet(2, [8, 8, 16])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = generate.flow_epoch(model, opt, data, batch=16, epoch=0, seed=0)["loss"]
    for e in range(1, 40):
        last = generate.flow_epoch(model, opt, data, batch=16, epoch=e, seed=0)["loss"]
    assert last < 0.5 * first
    x = generate.sample(model, 8, (2, 4, 4, 4), steps=20, seed=0, d=4)
    assert x.shape == (8, 2, 4, 4, 4) and abs(float(x.mean()) - 2.0) < 0.5  # noise alone has mean 0


def test_the_unet_has_three_levels():
    with pytest.raises(ValueError, match="three encoder and decoder blocks"):
        generate.build_unet(2, [8, 16])


def test_flow_matching_under_torchrun_keeps_ranks_identical(tmp_path):
    """Two gloo ranks train the flow U-Net with the chapter's epoch function: DDP keeps their weights identical,
    and each rank sees its own share of the data (different losses)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_flow.py"
    script.write_text(
        "import json, sys, torch, torch.distributed as dist\n"
        "from companion.vaesselsparse import generate\n"
        "from companion.vaesselsparse.train import state_digest, world, wrap_distributed\n"
        "dist.init_process_group('gloo')\n"
        "torch.manual_seed(0)\n"
        "model = generate.build_unet(2, [8, 8, 16])\n"
        "ddp = wrap_distributed(model)\n"
        "opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)\n"
        "data = torch.randn(16, 2, 4, 4, 4, generator=torch.Generator().manual_seed(1))\n"
        "loss = [generate.flow_epoch(ddp, opt, data, batch=4, epoch=e, seed=0)['loss'] for e in range(2)]\n"
        "rank, size = world()\n"
        f"open(r'{tmp_path}' + f'/rank{{rank}}.json', 'w').write(json.dumps({{'size': size, "
        "'digest': state_digest(model), 'loss': loss}))\n"
        "dist.destroy_process_group()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["loss"] != ranks[1]["loss"]


def test_vesselmnist3d_replaces_the_insted_stand_in(tmp_path, monkeypatch):
    """The real-data option: VesselMNIST3D's 64³ maps (a fixture in the published layout), a balanced subset,
    resampled to part 1's grid; the run refuses the dataset before any compute when it is not on disk."""
    from companion import chapter
    from companion.vaesselsparse import latent_chapter as vl

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "data"))
    with pytest.raises(Exception, match="not ready"):
        chapter.start("vaesselsparse_latent", scale="ci", data="vesselmnist3d", output_dir=tmp_path / "r0")
    root = tmp_path / "data" / "vesselmnist3d"
    root.mkdir(parents=True)
    cube = np.zeros((64, 64, 64), np.uint8)
    cube[16:48, 16:48, 16:48] = 1
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.stack([cube] * 10)
        arrays[f"{split}_labels"] = np.array([[0]] * 7 + [[1]] * 3)
    np.savez(root / "vesselmnist3d_64.npz", **arrays)
    monkeypatch.setattr(chapter, "verify", lambda _id: [])  # the fixture cannot match the published md5
    run = chapter.start("vaesselsparse_latent", scale="ci", data="vesselmnist3d", output_dir=tmp_path / "r")
    task = vl.vesselmnist_task(run)
    g = vl.grid_of(run)
    assert task.volumes.shape == (run.cfg["n_insted"], g, g, g) and task.classes == ("vessel", "aneurysm")
    assert np.bincount(task.labels).tolist() == [9, 9]  # 9 of the 9 aneurysms, 9 of the 21 vessels
    assert task.volumes[0].sum() == (g // 2) ** 3  # the 32³ cube at half the resolution
