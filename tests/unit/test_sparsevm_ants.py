"""ANTs baseline wrapper (companion.sparsevm.ants): tiny synthetic volumes, a few seconds in all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ants")

from companion.sparsevm import ants as A  # noqa: E402

N = 24


def _blob(shift=(0, 0, 0)):
    """A smooth ellipsoidal blob (image) and its label (two halves: labels 3 and 7), shifted by ``shift`` voxels."""
    z, y, x = np.meshgrid(*[np.arange(N, dtype=np.float32)] * 3, indexing="ij")
    c = np.array([N / 2, N / 2, N / 2]) + np.asarray(shift, dtype=float)
    r2 = ((z - c[0]) / 6.0) ** 2 + ((y - c[1]) / 5.0) ** 2 + ((x - c[2]) / 7.0) ** 2
    image = (1.0 / (1.0 + np.exp(8.0 * (np.sqrt(r2) - 1.0)))).astype(np.float32)
    labels = np.zeros((N, N, N), np.uint8)
    inside = r2 <= 1.0
    labels[inside & (x < c[2])] = 3
    labels[inside & (x >= c[2])] = 7
    return image, labels


def _dice(a, b):
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module", autouse=True)
def worker_tmp(tmp_path_factory):
    """Workers of this module start with TMPDIR pointing at an empty folder (checked at the end), then stop."""
    tmp = tmp_path_factory.mktemp("ants_tmp")
    A.shutdown_workers()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        yield tmp
    A.shutdown_workers()


@pytest.fixture(scope="module")
def pair():
    fixed, fixed_labels = _blob()
    moving, moving_labels = _blob(shift=(2, -2, 3))
    return fixed, moving, fixed_labels, moving_labels


@pytest.fixture(scope="module")
def result(pair):
    fixed, moving, _, moving_labels = pair
    return A.register(fixed, moving, moving_labels, spacing_mm=2.0, setting="syncc-fast", threads=1)


def test_settings_have_the_documented_keys():
    assert {"syncc", "syncc-fast", "syn"} <= set(A.SETTINGS)
    assert A.SETTINGS["syncc"].type_of_transform == "SyNCC"
    fast = A.SETTINGS["syncc-fast"]
    assert fast.type_of_transform == "SyNOnly" and fast.options["syn_metric"] == "CC"
    for key, s in A.SETTINGS.items():
        assert s.name and s.note and "\n" not in s.note, key
        assert not (A._RESERVED & set(s.options)), key


def test_registering_a_shifted_blob_improves_dice(pair, result):
    fixed, moving, fixed_labels, moving_labels = pair
    r = result
    assert r.warped_image.shape == fixed.shape and r.warped_image.dtype == np.float32
    assert r.warped_labels.shape == fixed.shape and r.warped_labels.dtype == np.uint8
    before, after = _dice(fixed_labels, moving_labels), _dice(fixed_labels, r.warped_labels)
    assert after > before + 0.15, (before, after)
    assert np.abs(r.warped_image - fixed).mean() < np.abs(moving - fixed).mean()
    assert r.threads == 1 and r.seconds > 0


def test_warped_labels_only_contain_input_label_values(result):
    assert set(np.unique(result.warped_labels)) <= {0, 3, 7}
    assert {3, 7} <= set(np.unique(result.warped_labels))


def test_one_thread_is_deterministic_across_thread_counts_and_calls(pair):
    """threads=1, then 2, then 1 again in one session: the two one-thread runs are bit-identical."""
    fixed, moving, _, moving_labels = pair
    kw = dict(spacing_mm=2.0, setting="syncc-fast", seed=3)
    a = A.register(fixed, moving, moving_labels, threads=1, **kw)
    b = A.register(fixed, moving, moving_labels, threads=2, **kw)
    c = A.register(fixed, moving, moving_labels, threads=1, **kw)
    assert (a.threads, b.threads, c.threads) == (1, 2, 1)
    np.testing.assert_array_equal(a.warped_image, c.warped_image)
    np.testing.assert_array_equal(a.warped_labels, c.warped_labels)
    np.testing.assert_allclose(b.warped_image, a.warped_image, atol=0.05)  # 2 threads: same result up to noise


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_thread_count_reaches_itk():
    """The worker for 2 threads runs ITK with one more pool thread than the worker for 1 thread."""
    fixed, labels = _blob()
    for t in (1, 2):
        if t not in A._WORKERS:  # normally started by the tests above
            A.register(fixed, fixed, labels, spacing_mm=2.0, threads=t)
    tasks = {t: len(os.listdir(f"/proc/{p.pid}/task")) for t, p in A._WORKERS.items()}
    assert tasks[2] > tasks[1], tasks


def test_unknown_ants_option_is_reported_and_the_worker_survives(pair):
    fixed, moving, _, moving_labels = pair
    bad = A.AntsSetting(name="typo", type_of_transform="SyNOnly", options={"syn_metrik": "CC"}, note="x")
    with pytest.raises(ValueError, match="syn_metrik"):
        A.register(fixed, moving, moving_labels, spacing_mm=2.0, setting=bad)
    assert A._WORKERS[1].poll() is None, "the worker must keep serving after an error"


def test_ants_temporary_files_are_removed(pair, result, worker_tmp):
    """Every worker of this module wrote its ANTs transforms under worker_tmp: nothing may be left there."""
    assert A._WORKERS, "a worker has run"
    assert list(worker_tmp.iterdir()) == []


_img, _lab = _blob()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(moving=_img[:-1]), "shape mismatch"),
        (dict(moving_labels=_lab[:, :-1]), "shape mismatch"),
        (dict(fixed=_img[0], moving=_img[0], moving_labels=_lab[0]), "3-D"),
        (dict(fixed=np.where(_img > 0.5, np.nan, _img)), "non-finite"),
        (dict(moving=_img.tolist()), "numpy array"),
        (dict(moving_labels=_lab.astype(np.float32) + 0.5), "integer-valued"),
        (dict(moving_labels=_lab.astype(np.int16) - 1), "0..255"),
        (dict(threads=0), "threads"),
        (dict(threads=1.5), "threads"),
        (dict(threads=True), "threads"),
        (dict(seed=-1), "seed"),
        (dict(spacing_mm=0.0), "spacing_mm"),
        (dict(spacing_mm=(1.0, 2.0)), "spacing_mm"),
        (dict(setting="syncc-slow"), "unknown ANTs setting"),
        (dict(setting=A.AntsSetting("x", "SyN", {"random_seed": 1}, "x")), "random_seed"),
    ],
)
def test_bad_inputs_raise_before_any_compute(change, match, monkeypatch):
    monkeypatch.setattr(A, "_call_worker", lambda *a, **k: pytest.fail("validation must happen before the worker"))
    kw = dict(fixed=_img, moving=_img, moving_labels=_lab, spacing_mm=2.0)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        A.register(kw.pop("fixed"), kw.pop("moving"), kw.pop("moving_labels"), **kw)
