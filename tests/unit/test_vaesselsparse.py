"""The VAEsselSparse model, its loss, the dense baseline, training (incl. torchrun/DDP) and the claim logic."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from companion.data.vessels import generate_dataset
from companion.scales import chapter_config
from companion.sparse import SparseTensor, from_masks
from companion.vaesselsparse import chapter as vs
from companion.vaesselsparse.cost import benchmark_volume, measure_step
from companion.vaesselsparse.loss import MISSED_LOGIT, kl_divergence, sparse_vae_loss, union_bce
from companion.sparse.tensor import coarsen
from companion.vaesselsparse.model import count_parameters
from companion.vaesselsparse.train import sparse_epoch, state_digest

CI = chapter_config("vaesselsparse", "ci")


@pytest.fixture(scope="module")
def volumes():
    return [t.volume for t in generate_dataset(6, grid=32, seed=3)]


def test_encoder_keeps_sparsity_and_compresses_8x(volumes):
    torch.manual_seed(0)
    model = vs.build_sparse(CI)
    x = from_masks(volumes[:2])
    mu, logvar = model.encode(x)
    assert mu.stride == 8 and mu.channels == CI["latent_channels"] and logvar.n == mu.n
    # the latent lives exactly on the 8x8x8 cells that contain vessel voxels
    expected = coarsen(x.coords, 8, x.spatial_shape)
    assert torch.equal(torch.sort(mu.keys())[0], torch.sort(SparseTensor(expected, torch.zeros(len(expected), 1), 8,
                                                                         x.spatial_shape, 2).keys())[0])
    assert mu.n < 32 ** 3 // 512 * 2  # fewer tokens than the dense latent grid of the batch


def test_teacher_forcing_evaluates_every_ground_truth_voxel(volumes):
    torch.manual_seed(0)
    model = vs.build_sparse(CI)
    x = from_masks(volumes[:2])
    out = model(x, x)
    _, info = sparse_vae_loss(out, x, 1e-3)
    assert info["missed"] == 0 and info["evaluated"] >= x.n
    rec = model.reconstruct(x)  # no teacher forcing: an untrained decoder keeps few voxels
    assert rec.stride == 1 and rec.n < info["evaluated"]


def test_union_bce_by_hand():
    shape = (4, 4, 4)
    gt = SparseTensor(torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 3, 3, 3]]), torch.ones(3, 1), 1, shape)
    # decoder evaluated (0,0,0) [gt], (0,1,1,1) [gt], (0,2,2,2) [not gt]; missed (0,3,3,3)
    logits = SparseTensor(torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 2, 2, 2]]),
                          torch.tensor([[2.0], [-1.0], [0.5]]), 1, shape)
    loss, info = union_bce(logits, gt)
    x = torch.tensor([2.0, -1.0, 0.5, MISSED_LOGIT])
    y = torch.tensor([1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(loss, torch.nn.functional.binary_cross_entropy_with_logits(x, y))
    assert info == {"evaluated": 3, "missed": 1}
    broken, _ = union_bce(logits, gt, support="gt")  # only positives: the empty voxel is never penalised
    x = torch.tensor([2.0, -1.0, MISSED_LOGIT])
    torch.testing.assert_close(broken, torch.nn.functional.binary_cross_entropy_with_logits(x, torch.ones(3)))
    with pytest.raises(ValueError, match="support"):
        union_bce(logits, gt, support="grid")


def test_kl_divergence():
    z = torch.zeros(5, 3)
    assert float(kl_divergence(z, z)) == 0.0
    mu, logvar = torch.ones(2, 3), torch.zeros(2, 3)
    assert math.isclose(float(kl_divergence(mu, logvar)), 1.5)  # 0.5 * sum(mu^2) over 3 channels


def test_dense_baseline_compresses_8x_and_matches_parameters():
    for scale in ("ci", "laptop"):
        cfg = chapter_config("vaesselsparse", scale)
        ns, nd = count_parameters(vs.build_sparse(cfg)), count_parameters(vs.build_dense(cfg))
        assert abs(nd - ns) / ns < 0.15, (scale, ns, nd)
    dense = vs.build_dense(CI)
    z = dense.encode(torch.zeros(1, 1, 32, 32, 32))[0]
    assert tuple(z.shape) == (1, CI["latent_channels"], 4, 4, 4)


def test_training_lowers_the_loss_and_is_deterministic(volumes):
    def train(epochs):
        torch.manual_seed(0)
        model = vs.build_sparse(CI)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        run = sparse_epoch(model, opt, volumes, batch_size=2, beta=1e-3, seed=0)
        return model, [run(e)["bce"] for e in range(epochs)]

    m1, h1 = train(4)
    m2, h2 = train(4)
    assert h1[-1] < h1[0]
    assert h1 == h2 and state_digest(m1) == state_digest(m2)


def test_torchrun_ddp_two_ranks_agree(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPANION_CHECKPOINTS": str(tmp_path / "ck")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "companion.vaesselsparse.train", "--scale", "ci", "--epochs", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["source"] for r in ranks] == ["trained"] * 2
    assert ranks[0]["digest"] == ranks[1]["digest"]  # identical weights on both ranks after training
    # each rank saw its own half of the data, so their losses differ
    assert ranks[0]["history"][0]["bce"] != ranks[1]["history"][0]["bce"]
    # rank 0 alone wrote the checkpoint, and the weights in it are the ones both ranks hold
    ckpts = list((tmp_path / "ck").rglob("*.pt"))
    assert len(ckpts) == 1 and str(ckpts[0]) == ranks[0]["checkpoint"]
    model = vs.build_sparse(CI)
    torch.manual_seed(0)
    assert state_digest(model) != ranks[0]["digest"]  # they did train
    model.load_state_dict(torch.load(ckpts[0], weights_only=True)["model"])
    assert state_digest(model) == ranks[0]["digest"]


def test_cost_measurement_follows_active_voxels_for_sparse_only():
    """Peak tensor memory (deterministic, unlike time) at one grid and 4x the occupancy: the sparse step's grows
    with the active voxels, the dense step's does not."""
    lo, hi = benchmark_volume(32, 0.01, seed=0), benchmark_volume(32, 0.04, seed=0)
    assert lo.mean() >= 0.01 and hi.mean() >= 0.04 and hi.sum() > 3 * lo.sum()
    r = {(kind, occ): measure_step(kind, 32, occ, CI, steps=1) for kind in ("sparse", "dense") for occ in (0.01, 0.04)}
    assert r[("sparse", 0.01)]["active_voxels"] == int(lo.sum())
    assert r[("dense", 0.04)]["active_voxels"] == int(hi.sum())
    assert all(x["step_s"] > 0 for x in r.values())
    def activations(x):  # peak minus the fixed state: parameters, gradients and AdamW's two moments (float32)
        return x["peak_mb"] - 4 * 4 * x["params"] / 2 ** 20

    assert activations(r[("sparse", 0.04)]) > 1.8 * activations(r[("sparse", 0.01)])
    assert activations(r[("dense", 0.04)]) == pytest.approx(activations(r[("dense", 0.01)]), rel=0.05)
    with pytest.raises(ValueError, match="occupancy"):
        benchmark_volume(32, 0.5)


class _Results:
    """Records claims as (holds, reproduced, reason, evidence); a single run's decided comparison reads
    "indicative holds" / "indicative reversed" in place of holds.  Margins and curves: the real Results'."""
    def __init__(self):
        import tempfile

        from companion.results import Results

        self.records = {}
        self._real = Results("vaesselsparse", "laptop", root=tempfile.mkdtemp())

    def compare(self, *args, **kwargs):
        return self._real.compare(*args, **kwargs)

    def training_curve(self, *args, **kwargs):
        return self._real.training_curve(*args, **kwargs)

    def record(self, cid, *, reproduced, verdict=None, reason=None):
        holds = verdict.holds if verdict else None
        if verdict is not None and verdict.outcome == "indicative":
            holds = "indicative " + verdict.evidence["leaning"]
        self.records[cid] = (holds, reproduced, verdict.reason if verdict else reason,
                             verdict.evidence if verdict else None)

    def scoreboard(self):
        return self.records


class _Run:
    scale, cfg = "laptop", {"grid": 64, "epochs": 3, "bench_grids": [64, 128, 256], "bench_dense_max": 128,
                            "bench_occupancy_grid": 128}

    def __init__(self):
        self.results = _Results()


def _per_volume(dice_shift, n=12):
    """Per-volume metrics of both models on `n` test volumes: sparse Dice = dense Dice + dice_shift (+ noise);
    clDice clearly better, β0 error clearly lower, β1 errors equal up to noise."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        base = rng.normal(65, 6)
        for m, shift in (("Dense VAE", 0.0), ("VAEsselSparse", 1.0)):
            rows.append({"method": m, "volume": i, "Dice": base + shift * (dice_shift + rng.normal(0, 1.5)),
                         "clDice": base + 10 * shift, "β0 error": 5 - 3 * shift + rng.normal(0, 0.5),
                         "β1 error": 2 + rng.normal(0, 1)})
    return pd.DataFrame(rows)


def _table1(per_volume):
    rep = per_volume.groupby("method")[["Dice", "clDice", "β0 error", "β1 error"]].mean()
    rep["# Params (M)"] = {"VAEsselSparse": 1.0, "Dense VAE": 1.05}
    return rep.rename(columns=lambda c: f"{c} (reproduced)")


def _cost(speedup128, mem128):
    return pd.DataFrame({"active voxels": [5e3, 4e4, 3e5], "sparse step (s)": [0.1, 0.8, 5.0],
                         "dense step (s)": [0.5, 0.5 * speedup128 * 10, np.nan],
                         "speed-up": [5.0, speedup128, np.nan], "memory ratio": [3.0, mem128, np.nan]},
                        index=pd.Index([64, 128, 256], name="grid"))


def _occupancy(sparse_times, dense_times=(15.0, 15.2, 14.9, 15.1)):
    active = [2e4, 4e4, 8e4, 1.6e5]
    return pd.DataFrame([{"model": m, "active_voxels": a, "step_s": t}
                         for m, ts in (("sparse", sparse_times), ("dense", dense_times)) for a, t in zip(active, ts)])


def _latents(sparse_positions, n=12, c=8, dense=4 ** 3 * 8):
    return pd.DataFrame({"volume": range(n), "sparse numbers stored": [(p + i % 3) * (c + 3) for i, p in
                                                                       enumerate([sparse_positions] * n)],
                         "dense numbers stored": [dense] * n})


def _claims(dice_shift, cost, occupancy=None, latents=None, guards=(None,), params=(1.0, 1.05)):
    run, pv = _Run(), _per_volume(dice_shift)
    t1 = _table1(pv)
    t1["# Params (M) (reproduced)"] = {"VAEsselSparse": params[0], "Dense VAE": params[1]}
    from types import SimpleNamespace

    done = SimpleNamespace(history=[{"loss": 0.2 + np.exp(-e / 3)} for e in range(20)])  # converged
    vs.record_claims(run, pv, t1, cost, _occupancy((0.2, 0.4, 0.8, 1.7)) if occupancy is None else occupancy,
                     _latents(10) if latents is None else latents, list(guards), (done, done))
    return run.results.records


def test_claim_logic_can_fail():
    rec = _claims(8.0, _cost(6.0, 12.0))
    # one training run per model: the comparisons are indicative, with their direction
    assert rec["sparse-beats-dense-dice"][0] == "indicative holds" and rec["sparse-beats-dense-dice"][3]["n"] == 12
    assert rec["sparse-beats-dense-dice"][3]["runs"] == "single run" and rec["sparse-beats-dense-dice"][3]["margin"] == 1
    assert rec["sparse-beats-dense-cldice"][0] == "indicative holds"
    assert rec["sparse-lower-betti0-error"][0] == "indicative holds"
    # β1 errors equal up to noise: inside the ±1 margin, no practical difference (and never a decided verdict)
    assert rec["sparse-lower-betti1-error"][0] == "indicative equivalent"
    assert rec["sparse-lower-betti1-error"][3]["leaning"] == "equivalent"
    assert rec["cost-at-128"][0] is True and rec["similar-parameter-counts"][0] is True
    assert rec["sparse-cost-follows-active-voxels"][0] is True  # time doubles with the active voxels: slope ~1
    assert rec["sparse-latent-smaller"][0] is True
    rec = _claims(-8.0, _cost(3.0, 12.0), params=(1.0, 1.5),
                  latents=_latents(60))  # 60-62 positions x 11 numbers > 512 dense values
    assert rec["sparse-beats-dense-dice"][0] == "indicative reversed"
    assert rec["sparse-beats-dense-dice"][2].startswith("indicative (single run")
    assert rec["cost-at-128"][0] is False and "speed-up at 128³ = 3" in rec["cost-at-128"][2]
    assert rec["similar-parameter-counts"][0] is False and "0.5, not <= 0.1" in rec["similar-parameter-counts"][2]
    assert rec["sparse-latent-smaller"][0] is False  # the coordinates count: more numbers than the dense latent
    rec = _claims(0.0, _cost(3.0, 12.0), occupancy=_occupancy((0.2, 0.9, 4.0, 18.0)))
    # no real difference: never decided for or against, whatever the mean's sign (equivalent within the margin here)
    assert rec["sparse-beats-dense-dice"][0] not in (True, False, "indicative holds", "indicative reversed")
    assert rec["sparse-cost-follows-active-voxels"][0] is False  # slope ~2.2: super-linear
    rec = _claims(0.0, _cost(3.0, 12.0), occupancy=_occupancy((1.0, 1.1, 1.2, 1.3)))
    assert rec["sparse-cost-follows-active-voxels"][0] is False  # flat: overhead, not voxels


def test_cost_check_fails_for_a_dense_model():
    """The check separates the two cost models: flat step times (a dense model at a fixed grid) fail it."""
    occ = _occupancy((0.2, 0.4, 0.8, 1.7))
    dense = occ[occ.model == "dense"]
    v = vs.follows_active_voxels(dense["active_voxels"], dense["step_s"])
    assert v.holds is False and "log-log slope" in v.reason
    assert abs(vs.cost_slope(dense["active_voxels"], dense["step_s"])) < 0.05
    sparse = occ[occ.model == "sparse"]
    assert vs.follows_active_voxels(sparse["active_voxels"], sparse["step_s"]).holds is True
    assert vs.follows_active_voxels([1e4, 2e4], [1.0, 2.0]).holds is None  # too few points to decide


def test_degenerate_dense_model_is_never_beaten():
    """At ci scale the dense VAE can collapse to empty maps; the Table 1 comparisons are then undecided."""
    class _State:
        def __init__(self, losses):
            self.history = [{"loss": x} for x in losses]

    empty = [np.zeros((8, 8, 8), bool)] * 3
    full = [np.pad(np.ones((2, 2, 2), bool), 3)] * 3
    guards = vs.degeneracy({"Dense VAE": empty, "VAEsselSparse": full}, _State([1.0, 0.2]), _State([1.0, 0.5]))
    assert guards[0] == "the dense VAE predicts 3 empty maps on 3 of 3 cases" and not any(guards[1:])
    rec = _claims(8.0, _cost(6.0, 12.0), guards=guards)
    for cid in ("sparse-beats-dense-dice", "sparse-beats-dense-cldice", "sparse-lower-betti0-error"):
        assert rec[cid][0] is None and rec[cid][2].startswith("degenerate: the dense VAE"), cid
        assert rec[cid][3]["ci"] is not None  # the interval is still reported
    assert rec["cost-at-128"][0] is True  # guards concern the Table 1 comparisons only


def _write_consolidated(root, shape=32):
    """A tiny folder in the layout `companion data consolidate` writes (see test_consolidate for the recipe)."""
    rows = []
    rng = np.random.default_rng(0)
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        coords = np.unique(rng.integers(0, shape, (60, 3)), axis=0).astype(np.uint16)
        f = f"{split}/atm22__case{i}.npz"
        (root / split).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(root / f, coords=coords, shape=np.array([shape] * 3), spacing_mm=np.array([0.5] * 3))
        rows.append({"dataset": "atm22", "kind": "airway", "case": f"case{i}", "split": split,
                     "original_shape": "8x8x8", "original_spacing": "1x1x1", "occupancy": len(coords) / shape ** 3,
                     "active_voxels": len(coords), "lost_voxels": 0, "file": f})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)


def test_consolidated_data_path(tmp_path, monkeypatch):
    from companion.chapter import start
    from companion.data.download import DataAccessError

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    with pytest.raises(DataAccessError, match="companion data consolidate"):
        start("vaesselsparse", scale="paper", output_dir=str(tmp_path / "res"))  # paper default: consolidated
    _write_consolidated(tmp_path / "consolidated")
    run = start("vaesselsparse", scale="ci", data="consolidated", output_dir=str(tmp_path / "res"))
    data = vs.load_data(run)
    assert [len(data[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    case = data["train"][0]
    x = from_masks([case.volume])  # straight from the stored coordinates
    assert x.n == case.volume.sum() and np.asarray(case.volume).sum() == x.n
    out = vs.build_sparse(run.cfg)(x, x)
    assert out["logits"].n >= x.n
    with pytest.raises(ValueError, match="consolidate --shape 64"):
        vs.make_dataset({**run.cfg, "grid": 64}, 0, "consolidated")


def test_fragment_origins_classifies_every_extra_component(monkeypatch):
    """Reference: a thin tube and a one-voxel branch stub.  Reconstruction: the tube cut in two (a broken vessel:
    two pieces overlapping the reference) and three specks overlapping nothing: one far from any vessel (its
    1/4-resolution ancestor holds no vessel: born at the 1/4 head), one whose 1/4 ancestor holds vessel but whose 1/2
    ancestor does not (born at the 1/2 head), one inside a vessel 1/2-voxel (born at the full-resolution output)."""
    from companion.vaesselsparse import fragments as F

    ref = np.zeros((32, 32, 32), bool)
    ref[4:28, 8, 8] = True  # tube along x
    ref[24, 8, 10] = True  # a second reference component (2 voxels from the tube)
    pred = ref.copy()
    pred[24, 8, 10] = False
    pred[15:17, 8, 8] = False  # the cut
    pred[28, 28, 28] = True  # 1/4 ancestor (7, 7, 7): no vessel
    pred[12, 11, 11] = True  # 1/4 ancestor (3, 2, 2): vessel; 1/2 ancestor (6, 5, 5): none
    pred[25, 9, 11] = True  # 1/2 ancestor (12, 4, 5) holds the stub (24, 8, 10)
    kept = {4: np.array([[28, 28, 28], [12, 8, 8]]), 2: np.array([[12, 10, 10], [12, 8, 8]])}
    levels = [{"stride": s, "created": kept[s], "kept": kept[s]} for s in (4, 2)]
    monkeypatch.setattr(F, "decode_levels", lambda model, vol, device="cpu": (pred, levels))
    row = F.fragment_origins(None, [ref]).iloc[0]
    assert row["reference components"] == 2 and row["reconstructed components"] == 5
    assert row["overlapping the reference"] == 2 and row["spurious fragments"] == 3 and row["spurious voxels"] == 3
    assert (row[F.ORIGINS[0]], row[F.ORIGINS[1]], row[F.ORIGINS[2]]) == (1, 1, 1)
    assert row["kept outside vessels at 1/4 (%)"] == 50.0 and row["kept outside vessels at 1/2 (%)"] == 50.0
    # missed reference voxels: the stub (24, 8, 10) and the cut (15, 8, 8), (16, 8, 8); the heads kept the 1/4 voxels
    # (7, 7, 7), (3, 2, 2) and the 1/2 voxels (6, 5, 5), (6, 4, 4), so (15, 8, 8) was pruned at 1/2 (its 1/4
    # ancestor (3, 2, 2) was kept, its 1/2 ancestor (7, 4, 4) not) and (16, 8, 8) and the stub at 1/4
    assert (row[F.LOSSES[0]], row[F.LOSSES[1]], row[F.LOSSES[2]]) == (2, 1, 0)
