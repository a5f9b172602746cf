"""The light-sheet stand-in (chapter 2): determinism, labels, each appearance effect, preprocessing, speed."""
from __future__ import annotations

import time

import numpy as np
import pytest

from companion.data import lightsheet as L
from companion.data.vessels import generate_tree

# everything off except what a test switches on
QUIET = dict(sigma_xy=0.0, attenuation=0.0, stripes_per_64=0.0, background=0.0, background_variation=0.0,
             texture=0.0, vessel_brightness_variation=0.0, photons=None, read_noise=0.0)


def test_deterministic_and_seed_dependent():
    a, b = L.generate_lightsheet(32, seed=3), L.generate_lightsheet(32, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    c = L.generate_lightsheet(32, seed=4)
    assert not np.array_equal(a.image, c.image)
    s1 = L.generate_lightsheet_set(2, 1, grid=32, seed=7)
    s2 = L.generate_lightsheet_set(2, 1, grid=32, seed=7)
    assert len(s1.labeled) == 2 and len(s1.unlabeled) == 1
    for u, v in zip(s1.labeled + s1.unlabeled, s2.labeled + s2.unlabeled):
        assert np.array_equal(u.image, v.image) and np.array_equal(u.label, v.label)
    assert len({v.seed for v in s1.labeled + s1.unlabeled}) == 3


def test_label_is_the_generators_map_and_image_is_preprocessed():
    v = L.generate_lightsheet(32, seed=1)
    tree = generate_tree("cerebral", 32, 1, **L.CAPILLARY_BED)
    assert v.label.dtype == bool and np.array_equal(v.label, tree.volume)
    assert v.image.dtype == np.float32 and v.image.shape == (32, 32, 32)
    assert v.image.min() == 0.0 and v.image.max() == 1.0
    assert tree.n_loops >= 3 and 0.02 < v.label.mean() < 0.12  # a dense bed with loops


def test_vessels_brighter_than_background():
    v = L.generate_lightsheet(40, seed=2)
    assert v.image[v.label].mean() > v.image[~v.label].mean() + 0.3


def _width(profile: np.ndarray) -> float:
    c = np.arange(len(profile), dtype=float)
    w = profile / profile.sum()
    mu = (w * c).sum()
    return float(np.sqrt((w * (c - mu) ** 2).sum()))


def test_blur_is_anisotropic():
    lab = np.zeros((33, 33, 33), bool)
    lab[16, 16, 16] = True
    psf = L.render(lab, 0, **{**QUIET, "sigma_xy": 0.8, "z_blur_ratio": 4.0})
    wx, wy, wz = _width(psf[:, 16, 16]), _width(psf[16, :, 16]), _width(psf[16, 16, :])
    assert wx == pytest.approx(0.8, rel=0.05) and wy == pytest.approx(wx, rel=1e-6)
    assert wz / wx == pytest.approx(4.0, rel=0.05)
    # on a whole scan: the autocorrelation decays more slowly along z than along x
    img = L.render(generate_tree("cerebral", 40, 0, **L.CAPILLARY_BED).volume, 0)
    d = img - img.mean()
    ac = lambda ax: float((d * np.roll(d, 2, axis=ax)).mean() / (d * d).mean())  # noqa: E731
    assert ac(2) > ac(0) + 0.1


def test_attenuation_decreases_intensity_with_depth():
    lab = generate_tree("cerebral", 32, 0, **L.CAPILLARY_BED).volume
    on = L.render(lab, 5, **{**QUIET, "background": 0.1, "attenuation": 1.0})
    off = L.render(lab, 5, **{**QUIET, "background": 0.1})
    ratio = on.mean(axis=(0, 1)) / off.mean(axis=(0, 1))
    assert np.all(np.diff(ratio) < 0)
    assert ratio[-1] == pytest.approx(np.exp(-1.0), rel=1e-3)
    full = L.render(lab, 5)  # with everything on, the deep third is darker than the shallow third
    assert full[:, :, -10:].mean() < full[:, :, :10].mean()


def test_stripes_run_along_the_illumination_axis():
    lab = np.zeros((48, 48, 48), bool)
    img = L.render(lab, 3, **{**QUIET, "background": 1.0, "stripes_per_64": 12.0})
    assert img.max() <= 1.0 + 1e-6 and img.min() < 0.9  # shadows only remove light
    far = img[36:]  # behind every absorber (they sit in the first half along x)
    across = far.mean(axis=0).std(axis=0).mean()  # variation across the illumination direction (y)
    along = far.std(axis=0).mean()  # variation along it (x)
    assert across > 0.02 and along < 0.01 * across + 1e-4


def test_preprocess_clips_at_the_95th_percentile():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, size=(20, 20, 20)) + 5.0
    y = L.preprocess(x)
    assert y.dtype == np.float32 and y.min() == 0.0 and y.max() == 1.0
    assert np.percentile(y, 95) == pytest.approx(1.0, abs=1e-3)
    assert np.mean(y == 1.0) == pytest.approx(0.05, abs=0.002)
    below = x < np.percentile(x, 95)
    assert np.allclose(y[below], (x[below] - x.min()) / (np.percentile(x, 95) - x.min()), atol=1e-5)
    assert np.array_equal(L.preprocess(np.full((4, 4), 2.0)), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        L.preprocess(np.array([1.0, np.nan]))


def test_bad_arguments():
    with pytest.raises(TypeError, match="unknown LightSheetParams"):
        L.generate_lightsheet(32, 0, blur=1.0)
    with pytest.raises(ValueError):
        L.LightSheetParams(sigma_xy=-1.0)
    with pytest.raises(ValueError):
        L.generate_lightsheet_set(-1, 0, grid=32)


def test_generation_time_budget():
    L.generate_lightsheet(32, 0)  # warm up imports and caches
    t = time.perf_counter()
    v = L.generate_lightsheet(64, 0)
    dt = time.perf_counter() - t
    assert v.image.shape == (64, 64, 64)
    assert dt < 2.0, f"one 64^3 volume took {dt:.2f} s"


def test_the_stand_in_matches_the_vessap_manifest():
    """The manifest of the real data (data_manifests/vessap.yaml) and the stand-in tell the same story."""
    import inspect

    from companion.data import get_manifest

    m = get_manifest("vessap")
    assert "vpbsd" in m.chapters and m.loader == "nifti_pairs" and m.loader_args.get("images")
    assert m.published_stats["n_annotated"].startswith("11 ")
    assert inspect.signature(L.generate_lightsheet_set).parameters["n_labeled"].default == 11
    assert m.published_stats["voxel_size_um"] == "1.625 x 1.625 x 3.0"
    assert "1.625 x 1.625 x 3.0" in L.__doc__ and "500 x 500 x 50" in L.__doc__


def test_render_keeps_a_non_cubic_shape():
    lab = np.zeros((50, 40, 10), bool)  # real patches are flat (500 x 500 x 50)
    lab[5:45, 20, 5] = True
    img = L.render(lab, 0)
    assert img.shape == lab.shape and img.dtype == np.float32
    assert img[lab].mean() > img[~lab].mean()
    with pytest.raises(ValueError):
        L.render(np.zeros((8, 8), bool))
