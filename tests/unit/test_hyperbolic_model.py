"""Chapter 3's model, patches, training loops and clustering segmentation (companion.hyperbolic)."""
import numpy as np
import pytest
import torch

from companion.hyperbolic import segment as sg
from companion.hyperbolic import train as tr
from companion.hyperbolic.model import ModelConfig, PatchVAE, triplet_loss
from companion.hyperbolic.patches import (SamplerConfig, TripletSampler, dense_patches, grid_centres, read_boxes,
                                          upsample_labels)
from companion.training import state_digest

SMALL = (4, 8, 8, 8)


@pytest.mark.parametrize("kind,gyro", [("euclidean", False), ("hyperbolic", False), ("hyperbolic", True),
                                       ("ae", False)])
def test_vae_shapes_and_terms(kind, gyro):
    torch.manual_seed(0)
    m = PatchVAE(ModelConfig(kind=kind, gyroconv=gyro, channels=SMALL))
    x = torch.rand(3, 1, 10, 10, 10)
    out = m(x)
    assert out["recon"].shape == x.shape
    assert out["mu"].shape == (3, 2) and out["rec"].shape == (3,) and out["kl"].shape == (3,)
    assert torch.isfinite(out["kl"]).all()
    if kind == "hyperbolic":
        assert float(out["mu"].detach().norm(dim=-1).max()) < 1 and float(out["z"].detach().norm(dim=-1).max()) < 1
    if kind == "ae":
        assert float(out["kl"].detach().abs().max()) == 0 and torch.equal(out["z"], out["mu"])
    (out["rec"] + out["kl"]).mean().backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]  # geoopt keeps c as a frozen parameter
    assert all(p.grad is not None for n, p in trainable if not (kind == "ae" and n.startswith("encoder.scale")))


def test_config_rejects_impossible_models():
    with pytest.raises(ValueError, match="hyperbolic latent"):
        ModelConfig(kind="euclidean", gyroconv=True)
    with pytest.raises(ValueError, match="patch"):
        ModelConfig(patch=12)
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="spherical")


def test_triplet_loss_is_eq8():
    m = PatchVAE(ModelConfig(kind="hyperbolic", channels=SMALL))
    a = torch.tensor([[0.1, 0.0]])
    assert float(triplet_loss(m, a, a, a, 0.2)) == pytest.approx(0.2)  # all equal: the margin
    far = torch.tensor([[-0.9, 0.0]])
    assert float(triplet_loss(m, a, a, far, 0.2)) == 0.0  # child on the anchor, negative far away
    d_ap, d_an = float(m.distance(a, far)), float(m.distance(a, a))
    assert float(triplet_loss(m, a, far, a, 0.2)) == pytest.approx(d_ap - d_an + 0.2)  # inverted: penalised
    e = PatchVAE(ModelConfig(kind="euclidean", channels=SMALL))
    assert float(e.distance(a, far)) == pytest.approx(1.0)


def test_read_boxes_is_a_crop_when_the_box_has_m_voxels():
    v = torch.rand(2, 1, 20, 21, 22)
    out = read_boxes(v, torch.tensor([1, 0]), torch.tensor([[3, 4, 5], [0, 0, 0]]), torch.tensor([10, 10]), 10)
    assert torch.allclose(out[0, 0], v[1, 0, 3:13, 4:14, 5:15], atol=1e-5)
    assert torch.allclose(out[1, 0], v[0, 0, :10, :10, :10], atol=1e-5)
    c = torch.full((1, 1, 12, 12, 12), 0.7)
    assert torch.allclose(dense_patches(c, np.array([[0, 0, 0], [6, 6, 6]]), 5, 10), torch.tensor(0.7))
    # a 10-voxel patch centred at (10, 10, 10) is the crop 5..14 read at its own resolution
    w = torch.rand(1, 1, 20, 20, 20)
    assert torch.allclose(dense_patches(w, np.array([[10, 10, 10]]), 10, 10)[0, 0], w[0, 0, 5:15, 5:15, 5:15],
                          atol=1e-5)


@pytest.mark.parametrize("log_uniform", [False, True])
def test_triplet_sampler_geometry(log_uniform):
    cfg = SamplerConfig(r_min=8, r_max=20, log_uniform=log_uniform, l_min=5, r_gap=3)
    s = TripletSampler((48, 48, 48), cfg)
    b = s.sample(list(range(200)), np.random.default_rng(0))
    a, r = b["anchor_lo"].numpy(), b["anchor_size"].numpy()[:, None]
    p, n, rc = b["pos_lo"].numpy(), b["neg_lo"].numpy(), b["child_size"].numpy()[:, None]
    assert (r >= 8).all() and (r <= 20).all() and (a >= 0).all() and (a + r <= 48).all()
    assert (rc >= 5).all() and (rc <= r - 3).all()
    assert ((p >= a) & (p + rc <= a + r)).all()  # the child lies inside its anchor
    assert ((n + rc <= a) | (n >= a + r)).any(axis=1).all()  # the negative does not overlap it
    assert (n >= 0).all() and (n + rc <= 48).all()


def test_sampler_rejects_volumes_too_small():
    with pytest.raises(ValueError, match="too small"):
        TripletSampler((20, 20, 20), SamplerConfig(r_min=8, r_max=16))
    with pytest.raises(ValueError, match="l_min"):
        SamplerConfig(r_min=6, l_min=5, r_gap=3)


def test_upsample_labels_repeats_the_grid():
    lab = np.arange(27).reshape(3, 3, 3)
    up = upsample_labels(lab, (5, 6, 5), 2)
    assert up.shape == (5, 6, 5)
    assert up[0, 0, 0] == 0 and up[1, 1, 1] == 0 and up[2, 0, 0] == lab[1, 0, 0] and up[4, 5, 4] == lab[2, 2, 2]
    assert grid_centres((5, 6, 5), 2).shape == (3 * 3 * 3, 3)


@pytest.mark.parametrize("geometry", ["hyperbolic", "euclidean"])
def test_cluster_recovers_separated_groups_and_matching_is_label_free(geometry):
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    pts = torch.cat([c + 0.03 * torch.randn(40, 2, generator=g, dtype=torch.float64) for c in centres])
    truth = np.repeat(np.arange(3), 40)
    lab = sg.cluster(pts, 3, geometry, seed=0, fit_points=60)
    assert sg.level_dice(lab, truth) == 1.0
    assert sg.level_dice((lab + 1) % 3, truth) == 1.0  # renaming clusters changes nothing
    assert sg.level_dice(np.zeros_like(truth), truth) < 0.5  # one cluster for all: far from 1
    with pytest.raises(ValueError, match="geometry"):
        sg.cluster(pts, 3, "spherical")


def _tiny_run(name, seed=0, epochs=2):
    rng = np.random.default_rng(0)
    vols = [rng.random((24, 24, 24)).astype(np.float32) for _ in range(3)]
    tcfg = tr.TrainConfig(epochs=epochs, anchors_per_epoch=16, batch=8, lr=1e-3,
                          sampler=SamplerConfig(r_min=8, r_max=12, l_min=5, r_gap=3))
    method = tr.METHODS[name]
    torch.manual_seed(seed)
    model = tr.build(method, tr.model_config(method, SMALL, 2, 10), tcfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ep = tr.epoch_fn(method, model, opt, vols, tcfg, 10, seed)
    return model, [ep(e) for e in range(epochs)]


@pytest.mark.parametrize("name", [tr.OURS, "Euclidean + triplet", tr.NALEPA.name, tr.MORIYA.name])
def test_training_runs_and_repeats(name):
    m1, h1 = _tiny_run(name)
    m2, h2 = _tiny_run(name)
    assert state_digest(m1) == state_digest(m2) and h1 == h2  # seeded: the same run twice is bit-identical
    assert all(np.isfinite(h["loss"]) for h in h1)
    assert ("triplet" in h1[0]) == tr.METHODS[name].triplet
    mu = tr.encoder_of(m1)(torch.rand(5, 1, 10, 10, 10))
    assert mu.shape == ((5, SMALL[-1]) if name == tr.MORIYA.name else (5, 2))


def test_segment_volume_gives_a_map_per_k():
    model, _ = _tiny_run(tr.OURS, epochs=1)
    vol = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    maps, mu = sg.segment_volume(tr.encoder_of(model), vol, (2, 3), "hyperbolic", p=5, m=10, stride=2,
                                 fit_points=100)
    assert set(maps) == {2, 3} and maps[3].shape == vol.shape and mu.shape == (6 ** 3, 2)
    assert set(np.unique(maps[3])) <= {0, 1, 2}


def test_kmeans_on_fewer_distinct_points_than_clusters():
    """Patches of an empty background encode to one point: k-means must still return (with empty clusters)."""
    pts = torch.zeros(50, 2, dtype=torch.float64)
    pts[:10] = 0.3
    for geometry in ("hyperbolic", "euclidean"):
        lab = sg.cluster(pts, 4, geometry, seed=0)
        assert len(np.unique(lab)) == 2 and (lab[:10] == lab[0]).all() and (lab[10:] == lab[10]).all()


def test_moriya_clusters_deep_features():
    model, hist = _tiny_run(tr.MORIYA.name)
    feats = tr.encoder_of(model)(torch.rand(4, 1, 10, 10, 10))
    assert feats.shape == (4, SMALL[-1])  # the last convolution's channels, not the 2-d bottleneck
