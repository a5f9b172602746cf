"""The skeleton matching distance (SMD, the VpbSD paper's "GWD" column) on shapes with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from companion import metrics as M


def tube(shape=(40, 40, 40), y=20, z=20, r=2, x0=4, x1=36):
    g = np.indices(shape)
    return ((g[1] - y) ** 2 + (g[2] - z) ** 2 <= r * r) & (g[0] >= x0) & (g[0] < x1)


def test_two_points_give_the_normalised_log_cost():
    a = np.zeros((10, 10, 10), bool)
    b = a.copy()
    a[2, 2, 2] = True
    b[2, 2, 7] = True
    expected = math.log(1 + 5) / math.log(1 + 9 * math.sqrt(3))
    assert M.smd(a, b) == pytest.approx(expected, rel=1e-9)


def test_identical_skeletons_give_zero():
    t = tube()
    assert M.smd(t, t) < 1e-5
    from companion.data.lightsheet import CAPILLARY_BED
    from companion.data.vessels import generate_tree

    v = generate_tree("cerebral", 40, 0, **CAPILLARY_BED).volume
    assert M.smd(v, v) < 1e-5


def test_grows_with_the_shift_and_is_symmetric():
    ref = tube()
    vals = [M.smd(tube(y=20 + k), ref) for k in (0, 1, 2, 4, 8)]
    assert vals[0] < 1e-5
    assert all(b > a + 0.02 for a, b in zip(vals, vals[1:]))
    for k in (1, 4):
        assert M.smd(ref, tube(y=20 + k)) == pytest.approx(M.smd(tube(y=20 + k), ref), rel=1e-6)
    # symmetric up to the Sinkhorn iterations' tolerance (1000 iterations: about 1e-4 relative)
    bent = tube(y=22, x0=10) | tube(y=18, x1=12)
    assert M.smd(bent, ref) == pytest.approx(M.smd(ref, bent), rel=1e-3)


def test_empty_mask_conventions():
    t, e = tube(), np.zeros((40, 40, 40), bool)
    assert M.smd(e, e) == 0.0
    assert math.isnan(M.smd(e, t)) and math.isnan(M.smd(t, e))
    speck = e.copy()
    speck[5:7, 5:7, 5:7] = True  # thinning deletes a 2x2x2 block; it is kept whole as its own skeleton
    assert np.isfinite(M.smd(speck, t)) and M.smd(speck, speck) < 1e-6


def test_dice_blind_to_where_a_false_positive_is_smd_is_not():
    ref = tube()
    near = ref | tube(y=26, r=1, x0=14, x1=24)  # a false-positive vessel next to the true one
    far = ref | tube(y=36, z=36, r=1, x0=14, x1=24)  # the same vessel far away
    assert np.count_nonzero(near) == np.count_nonzero(far)
    assert M.dice(near, ref) == M.dice(far, ref)
    assert M.smd(far, ref) > M.smd(near, ref) + 0.01


def test_smd_blind_to_thickness_dice_is_not():
    thin, thick = tube(r=1), tube(r=3)
    assert M.dice(thick, thin) < 0.5
    assert M.smd(thick, thin) < 0.05


def test_pooling_of_large_skeletons_and_input_checks():
    from companion.data.lightsheet import CAPILLARY_BED
    from companion.data.vessels import generate_tree

    a = generate_tree("cerebral", 40, 0, **CAPILLARY_BED).volume
    b = np.roll(a, 2, axis=0)
    full = M.smd(a, b, max_points=10**6)
    assert 0.1 < full < 0.5
    pooled = M.smd(a, b, max_points=150)
    assert pooled == M.smd(a, b, max_points=150)  # deterministic
    assert pooled == pytest.approx(full, rel=0.15)  # the marginals are kept: no large bias
    assert M.smd(a, a, max_points=150) < 1e-5  # identical skeletons pool identically
    assert M.smd(b, a, max_points=150) == pytest.approx(pooled, rel=1e-3)
    with pytest.raises(ValueError):
        M.smd(a, b, reg=0.0)
    with pytest.raises(ValueError):
        M.smd(a, b, max_points=0)
    with pytest.raises(ValueError):
        M.smd(a * 0.5, b)
    with pytest.raises(ValueError):
        M.smd(a, b[:-1])
    flat = np.zeros((20, 20), bool)
    flat[5, 2:18] = True
    # 2D: every point moves by 3 (the entropic plan spreads a little mass to the neighbours, hence rel=0.03)
    assert M.smd(flat, np.roll(flat, 3, axis=0)) == pytest.approx(math.log(4) / math.log(1 + 19 * math.sqrt(2)),
                                                                 rel=0.03)
