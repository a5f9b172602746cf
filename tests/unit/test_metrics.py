"""Unit tests for companion.metrics on shapes with known answers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from skimage.measure import euler_number

from companion import metrics as M

# ---------------------------------------------------------------------------
# Shape helpers
# ---------------------------------------------------------------------------


def _grid(shape):
    return np.indices(shape, dtype=np.float64)


def solid_torus(shape=(24, 40, 40), center=None, major=11.0, minor=4.0, axis=0):
    """Solid torus: (sqrt(u² + v²) − R)² + w² ≤ r², w along ``axis``."""
    center = np.array(shape, float) / 2 - 0.5 if center is None else np.asarray(center, float)
    coords = _grid(shape) - center.reshape(3, 1, 1, 1)
    w = coords[axis]
    u, v = (coords[a] for a in range(3) if a != axis)
    return (np.hypot(u, v) - major) ** 2 + w**2 <= minor**2


def ring(shape, center, major=8.0, minor=2.0, axis=0):
    """A thin ring (a torus with a small tube radius)."""
    return solid_torus(shape, center, major, minor, axis)


def hollow_sphere(shape=(32, 32, 32), inner=7.0, outer=11.0):
    """Spherical shell inner < |x − c| ≤ outer enclosing one cavity."""
    c = np.array(shape, float) / 2 - 0.5
    d = np.sqrt(((_grid(shape) - c.reshape(3, 1, 1, 1)) ** 2).sum(0))
    return (d > inner) & (d <= outer)


def cube(shape=(48, 48, 48), start=(10, 10, 10), size=20):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def tube(shape, axis, center, radius, lo=None, hi=None):
    """Straight cylinder along ``axis`` through ``center`` (the two other coords)."""
    g = _grid(shape)
    others = [a for a in range(3) if a != axis]
    d2 = sum((g[a] - c) ** 2 for a, c in zip(others, center))
    m = d2 <= radius**2
    lo = 0 if lo is None else lo
    hi = shape[axis] if hi is None else hi
    sl = [slice(None)] * 3
    sl[axis] = slice(0, lo)
    m[tuple(sl)] = False
    sl[axis] = slice(hi, None)
    m[tuple(sl)] = False
    return m


def vessel_tree(shape=(48, 48, 48)):
    """A few thick crossing tubes (vessel-like, contains loops)."""
    m = tube(shape, 0, (24, 24), 3.0, 4, 44)
    m |= tube(shape, 1, (20, 14), 2.5, 6, 42)
    m |= tube(shape, 2, (30, 30), 2.0, 8, 40)
    m |= tube(shape, 1, (36, 24), 2.0)
    return m


def closed_cube_euler(m):
    """Independent Euler characteristic of the union of closed unit cubes:
    χ = V − E + F − C over the cubical complex (26-adjacent foreground)."""
    m = np.pad(m.astype(bool), 1)

    def count(axes):
        out = m
        for ax in axes:
            grown = np.zeros([s + (ax == i) for i, s in enumerate(out.shape)], dtype=bool)
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax] = slice(0, -1)
            hi[ax] = slice(1, None)
            grown[tuple(lo)] |= out
            grown[tuple(hi)] |= out
            out = grown
        return int(out.sum())

    cubes = int(m.sum())
    faces = sum(count([a]) for a in range(3))
    edges = sum(count([b for b in range(3) if b != a]) for a in range(3))
    verts = count([0, 1, 2])
    return verts - edges + faces - cubes


# ---------------------------------------------------------------------------
# Betti numbers
# ---------------------------------------------------------------------------


def test_betti_solid_torus():
    assert M.betti_numbers(solid_torus()) == (1, 1, 0)


def test_betti_two_disjoint_rings():
    shape = (20, 48, 48)
    m = ring(shape, (10, 14, 14)) | ring(shape, (10, 34, 34))
    assert M.betti_numbers(m) == (2, 2, 0)


def test_betti_linked_rings_in_perpendicular_planes():
    shape = (40, 40, 56)
    a = ring(shape, (20, 20, 20), axis=0)
    b = ring(shape, (20, 20, 28), axis=1)  # passes through the hole of a
    assert not (a & b).any()
    assert M.betti_numbers(a | b) == (2, 2, 0)


def test_betti_hollow_sphere():
    assert M.betti_numbers(hollow_sphere()) == (1, 0, 1)


def test_betti_solid_cube_and_empty():
    assert M.betti_numbers(cube()) == (1, 0, 0)
    assert M.betti_numbers(np.zeros((8, 8, 8), dtype=bool)) == (0, 0, 0)


def test_betti_cube_touching_the_border():
    m = np.ones((6, 6, 6), dtype=np.uint8)
    assert M.betti_numbers(m) == (1, 0, 0)
    m[2:4, 2:4, 2:4] = 0  # internal cavity of a volume that fills the array
    assert M.betti_numbers(m) == (1, 0, 1)


def test_betti_adjacency_convention():
    # Foreground is 26-connected: voxels touching at a corner are one component.
    m = np.zeros((5, 5, 5), dtype=bool)
    m[1, 1, 1] = m[2, 2, 2] = True
    assert M.betti_numbers(m) == (1, 0, 0)
    # Background is 6-connected: a 3x3x3 shell missing a corner voxel still
    # encloses its centre (the centre only touches the missing corner at a vertex).
    shell = np.zeros((7, 7, 7), dtype=bool)
    shell[2:5, 2:5, 2:5] = True
    shell[3, 3, 3] = False
    assert M.betti_numbers(shell) == (1, 0, 1)
    shell[2, 2, 2] = False
    assert M.betti_numbers(shell) == (1, 0, 1)
    # ...but opening a face voxel connects the cavity to the outside.
    shell[2, 3, 3] = False
    assert M.betti_numbers(shell) == (1, 0, 0)


def test_euler_number_connectivity3_is_closed_cube_complex():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = rng.random((6, 7, 5)) < rng.uniform(0.2, 0.7)
        assert euler_number(np.pad(m, 1), connectivity=3) == closed_cube_euler(m)
        assert min(M.betti_numbers(m)) >= 0


@pytest.mark.parametrize("cells", [(1, 1), (2, 3), (4, 2)])
def test_betti1_counts_the_holes_of_a_lattice(cells):
    """b1 from an independent count: a planar lattice of one-voxel bars enclosing a x b square cells has exactly
    a * b independent loops (and one component, no cavity)."""
    a, b = cells
    m = np.zeros((3, 4 * a + 3, 4 * b + 3), dtype=bool)
    for i in range(a + 1):
        m[1, 1 + 4 * i, 1:4 * b + 2] = True
    for j in range(b + 1):
        m[1, 1:4 * a + 2, 1 + 4 * j] = True
    assert M.betti_numbers(m) == (1, a * b, 0)


def test_betti_requires_3d():
    with pytest.raises(ValueError, match="3D"):
        M.betti_numbers(np.zeros((4, 4), dtype=bool))


# ---------------------------------------------------------------------------
# Overlap metrics and HD95 on a shifted cube
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_shifted_cube_overlap_and_hd95(k):
    n = 20
    ref = cube(size=n)
    pred = np.roll(ref, k, axis=0)
    assert M.dice(pred, ref) == pytest.approx((n - k) / n)
    assert M.jaccard(pred, ref) == pytest.approx((n - k) / (n + k))
    assert M.voxel_accuracy(pred, ref) == pytest.approx(1 - 2 * n * n * k / ref.size)
    assert M.hd95(pred, ref) == pytest.approx(k, abs=1e-5)
    # Spacing is per array axis: only axis-0 spacing scales an axis-0 shift.
    assert M.hd95(pred, ref, spacing=(2.0, 1.0, 1.0)) == pytest.approx(2.0 * k, abs=1e-5)
    assert M.hd95(pred, ref, spacing=(1.0, 3.0, 3.0)) == pytest.approx(k, abs=1e-5)
    assert M.hd95(pred, ref, spacing=0.5) == pytest.approx(0.5 * k, abs=1e-5)
    shifted1 = np.roll(ref, k, axis=1)
    assert M.hd95(shifted1, ref, spacing=(2.0, 1.0, 1.0)) == pytest.approx(k, abs=1e-5)
    assert M.hd95(shifted1, ref, spacing=(1.0, 2.5, 1.0)) == pytest.approx(2.5 * k, abs=1e-5)


def test_hd95_identical_and_symmetric():
    a = vessel_tree()
    assert M.hd95(a, a) == 0.0
    b = np.roll(a, 2, axis=2)
    assert M.hd95(a, b) == pytest.approx(M.hd95(b, a))


def test_hd95_bad_spacing():
    a = cube()
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(a, a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(a, a, spacing=(1.0, 0.0, 1.0))


# ---------------------------------------------------------------------------
# clDice
# ---------------------------------------------------------------------------


def test_identical_vessels_perfect_scores():
    v = vessel_tree()
    assert M.dice(v, v) == 1.0
    assert M.jaccard(v, v) == 1.0
    assert M.cldice(v, v) == 1.0
    report = M.segmentation_report(v, v)
    assert report == {
        "dice": 1.0,
        "jaccard": 1.0,
        "accuracy": 1.0,
        "hd95": 0.0,
        "cldice": 1.0,
        "b0_error": 0,
        "b1_error": 0,
    }


def test_cut_tube_vs_intact_tube():
    shape = (48, 24, 24)
    intact = tube(shape, 0, (12, 12), 3.0, 4, 44)
    cut = intact.copy()
    cut[22:26] = False
    errs = M.betti_errors(cut, intact)
    assert errs["b0_error"] == 1
    assert errs["b1_error"] == 0
    assert (errs["pred_b0"], errs["ref_b0"]) == (2, 1)
    cl = M.cldice(cut, intact)
    assert 0.0 < cl < 1.0
    # The cut prediction lies inside the reference: topology precision is 1,
    # so clDice = 2·Ts/(1+Ts) with Ts < 1.
    assert M.dice(cut, intact) < 1.0


def test_cldice_thin_and_tiny_structures():
    line = np.zeros((16, 16, 16), dtype=bool)
    line[2:14, 8, 8] = True  # one voxel thin: its own skeleton
    assert M.cldice(line, line) == 1.0
    blob = np.zeros((8, 8, 8), dtype=bool)
    blob[3:5, 3:5, 3:5] = True  # 2x2x2: skimage's 3D skeleton of it is empty
    assert M.cldice(blob, blob) == 0.0  # Shit et al.: no centreline, nothing recovered
    assert M.cldice_kept_blobs(blob, blob) == 1.0  # the variant keeps the blob as its own skeleton
    other = np.zeros_like(blob)
    other[0, 0, 0] = True
    assert M.cldice(blob, other) == 0.0 and M.cldice_kept_blobs(blob, other) == 0.0


def _cldice_reference(p, r):
    """clDice written out from Shit et al.'s definition with skimage skeletons, independently of companion."""
    from skimage.morphology import skeletonize

    sp, sr = skeletonize(p), skeletonize(r)
    tprec, tsens = (sp & r).sum() / sp.sum(), (sr & p).sum() / sr.sum()
    return 2 * tprec * tsens / (tprec + tsens)


def test_cldice_is_shit_et_al_and_the_variant_is_separate():
    """A vessel tree with 20 isolated 2x2x2 specks: the paper's clDice ignores them (thinning deletes them), the
    book's kept-blobs variant counts them; a cut branch lowers both (non-trivial values, independent formula)."""
    from companion.data.vessels import generate_tree

    ref = generate_tree("cerebral", grid=64, seed=0).volume
    pred = ref.copy()
    rng = np.random.default_rng(0)
    free = np.argwhere(~np.pad(ref, 3)[3:-3, 3:-3, 3:-3])
    placed = 0
    for x, y, z in free[rng.permutation(len(free))]:
        if placed == 20:
            break
        box = (slice(max(x - 3, 0), x + 5), slice(max(y - 3, 0), y + 5), slice(max(z - 3, 0), z + 5))
        if x + 2 <= 64 and y + 2 <= 64 and z + 2 <= 64 and not ref[box].any() and not pred[box].any():
            pred[x:x + 2, y:y + 2, z:z + 2] = True
            placed += 1
    assert placed == 20
    standard, variant = M.cldice(pred, ref), M.cldice_kept_blobs(pred, ref)
    assert standard == pytest.approx(_cldice_reference(pred, ref), abs=1e-12)
    assert standard > 0.99 and variant < 0.95
    cut = ref.copy()
    cut[:, :, 28:36] = False  # a slab removed: sensitivity drops
    assert M.cldice(cut, ref) == pytest.approx(_cldice_reference(cut, ref), abs=1e-12)
    assert 0.3 < M.cldice(cut, ref) < 0.95


def test_cldice_variant_penalises_speck_false_positive():
    shape = (48, 24, 24)
    ref = tube(shape, 0, (12, 12), 3.0, 4, 44)
    pred = ref.copy()
    pred[1:3, 1:3, 1:3] = True  # far-away 2x2x2 speck, whose skeleton vanishes
    assert M.cldice(pred, ref) == 1.0  # the paper's definition does not see it
    assert M.cldice_kept_blobs(pred, ref) < 1.0


def test_cldice_2d():
    img = np.zeros((32, 32), dtype=bool)
    img[14:18, 2:30] = True
    assert M.cldice(img, img) == 1.0


# ---------------------------------------------------------------------------
# Empty-mask conventions
# ---------------------------------------------------------------------------


def test_empty_mask_conventions():
    empty = np.zeros((16, 16, 16), dtype=bool)
    full = cube((16, 16, 16), (4, 4, 4), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.dice(empty, empty) == 1.0
        assert M.jaccard(empty, empty) == 1.0
        assert M.cldice(empty, empty) == 1.0
        assert M.voxel_accuracy(empty, empty) == 1.0
        assert M.hd95(empty, empty) == 0.0
        for a, b in [(empty, full), (full, empty)]:
            assert M.dice(a, b) == 0.0
            assert M.jaccard(a, b) == 0.0
            assert M.cldice(a, b) == 0.0
            assert math.isnan(M.hd95(a, b))
            assert M.voxel_accuracy(a, b) == pytest.approx(1 - 216 / 16**3)
        report = M.segmentation_report(full, empty)
    assert report["dice"] == 0.0 and report["cldice"] == 0.0
    assert math.isnan(report["hd95"])
    assert report["b0_error"] == 1 and report["b1_error"] == 0
    assert M.betti_errors(empty, empty)["b0_error"] == 0


def test_hd95_emits_no_warnings():
    a = cube()
    b = np.roll(a, 2, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.hd95(a, b, spacing=(1.5, 1.0, 1.0))


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [M.dice, M.jaccard, M.voxel_accuracy, M.hd95, M.cldice, M.betti_errors, M.segmentation_report]
)
def test_shape_mismatch_raises(fn):
    a = np.zeros((8, 8, 8), dtype=bool)
    b = np.zeros((8, 8, 9), dtype=bool)
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(8, 8, 9\)"):
        fn(a, b)


def test_non_binary_values_raise():
    a = np.zeros((4, 4, 4))
    b = a.copy()
    b[0, 0, 0] = 0.7
    with pytest.raises(ValueError, match="binary"):
        M.dice(a, b)


def test_numeric_dtypes_and_torch_tensors():
    v = vessel_tree()
    shifted = np.roll(v, 1, axis=1)
    expected = M.segmentation_report(shifted, v)
    for cast in (
        lambda x: x.astype(np.uint8),
        lambda x: x.astype(np.float32),
        lambda x: x.astype(np.int64),
        lambda x: torch.from_numpy(x),
        lambda x: torch.from_numpy(x.astype(np.float32)).requires_grad_(True),
    ):
        assert M.segmentation_report(cast(shifted), cast(v)) == expected
    t = torch.from_numpy(solid_torus())
    assert M.betti_numbers(t) == (1, 1, 0)
    assert M.dice(torch.from_numpy(v), v) == 1.0
    assert M.hd95(torch.from_numpy(shifted), torch.from_numpy(v), spacing=torch.tensor([1.0, 1.0, 1.0])) == (
        pytest.approx(expected["hd95"])
    )


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def test_balanced_accuracy_and_macro_f1_hand_computed():
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1]
    # recalls: class 0 = 4/4, class 1 = 1/2  -> balanced accuracy 3/4
    assert M.balanced_accuracy(y_true, y_pred) == pytest.approx(3 / 4)
    # F1_0 = 2·4/(2·4+1+0) = 8/9, F1_1 = 2·1/(2·1+0+1) = 2/3 -> macro 7/9
    assert M.macro_f1(y_true, y_pred) == pytest.approx(7 / 9)
    assert M.balanced_accuracy(torch.tensor(y_true), np.array(y_pred)) == pytest.approx(3 / 4)
    assert M.macro_f1(np.array(y_true), torch.tensor(y_pred)) == pytest.approx(7 / 9)


def test_three_class_example():
    y_true = [0, 1, 2, 2, 2, 1]
    y_pred = [0, 2, 2, 2, 1, 1]
    # recalls 1, 1/2, 2/3; F1: class0 1, class1 2·1/(2+1+1)=1/2, class2 2·2/(4+1+1)=2/3
    assert M.balanced_accuracy(y_true, y_pred) == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    assert M.macro_f1(y_true, y_pred) == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)


# ---------------------------------------------------------------------------
# Size smoke test
# ---------------------------------------------------------------------------


def test_report_on_128_cubed_vessel_volume():
    shape = (128, 128, 128)
    ref = tube(shape, 0, (64, 64), 4.0, 8, 120)
    ref |= tube(shape, 1, (40, 64), 3.0, 10, 118)  # crosses the axis-0 tube
    ref |= tube(shape, 2, (90, 64), 2.5)  # crosses it too: a tree, no loop
    ref |= ring(shape, (64, 64, 64), major=30.0, minor=3.0, axis=0)
    pred = np.roll(ref, 1, axis=2)
    pred[60:63] = False
    report = M.segmentation_report(pred, ref, spacing=(0.8, 0.5, 0.5))
    assert 0.5 < report["dice"] < 1.0
    assert 0.5 < report["cldice"] < 1.0
    assert report["hd95"] > 0
    # tree of tubes + a separate ring around the axis-0 tube
    assert M.betti_numbers(ref) == (2, 1, 0)
