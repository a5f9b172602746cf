"""SparseVM foundation: the losses of Eqs. 4-8 and the simulated sparse acquisition (chapter 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.sparsevm.acquisition import simulate_sparse
from companion.sparsevm.losses import lcc, lcc_map, slcc, slcc_map, smoothness, smse

DT = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=DT)


def _slice_mask(shape, step, offset=0):
    m = torch.zeros(shape, dtype=DT)
    m[:, :, offset::step] = 1
    return m


# ---------------------------------------------------------------- (a) all-ones masks reduce to the plain losses
def test_smse_equals_mse_and_slcc_equals_lcc_with_ones_masks():
    f, w = _rand(2, 1, 7, 8, 9, seed=1), _rand(2, 1, 7, 8, 9, seed=2)
    ones = torch.ones_like(f)
    assert torch.allclose(smse(f, w, ones, ones), torch.mean((f - w) ** 2), rtol=1e-12)
    assert torch.allclose(slcc(f, w, ones, ones, window=5), lcc(f, w, window=5), rtol=1e-12)


def _slcc_loop(f, w, mf, mw, n, eps):
    """Eqs. 6-8 literally, one voxel and one neighbour at a time (truncated windows at the border)."""
    mc = mf * mw
    r = n // 2
    out = np.zeros_like(f)
    D, H, W = f.shape
    for z in range(D):
        for y in range(H):
            for x in range(W):
                sl = (slice(max(z - r, 0), z + r + 1), slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1))
                mu_f = (f[sl] * mf[sl]).sum() / max(mf[sl].sum(), eps)  # Eq. 6
                mu_w = (w[sl] * mw[sl]).sum() / max(mw[sl].sum(), eps)
                fh, wh = f[sl] - mu_f, w[sl] - mu_w  # Eq. 7
                num = (mc[sl] * fh * wh).sum() ** 2  # Eq. 8
                out[z, y, x] = num / ((mc[sl] * fh**2).sum() * (mc[sl] * wh**2).sum() + eps)
    return out


def test_slcc_map_matches_a_literal_loop_of_eqs_6_to_8():
    shape = (1, 1, 5, 6, 4)
    f, w = _rand(*shape, seed=3), _rand(*shape, seed=4)
    mf = _slice_mask(shape, 2) * 0.5 + _slice_mask(shape, 2) * _rand(*shape, seed=5) * 0.5  # continuous, sparse
    mw = _rand(*shape, seed=6)
    got = slcc_map(f, w, mf, mw, window=3, eps=1e-5)[0, 0].numpy()
    ref = _slcc_loop(*(t[0, 0].numpy() for t in (f, w, mf, mw)), n=3, eps=1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_lcc_matches_monai_in_the_interior_and_differs_only_at_the_border():
    monai_losses = pytest.importorskip("monai.losses")
    n, r = 5, 2
    f, w = _rand(1, 1, 12, 11, 10, seed=7), _rand(1, 1, 12, 11, 10, seed=8)
    w = 0.6 * f + 0.4 * w  # partially correlated
    ref = -monai_losses.LocalNormalizedCrossCorrelationLoss(
        spatial_dims=3, kernel_size=n, kernel_type="rectangular", reduction="none", smooth_dr=1e-12
    )(w, f)
    ours = lcc_map(f, w, window=n, eps=1e-12)
    inner = (slice(None), slice(None), slice(r, -r), slice(r, -r), slice(r, -r))
    torch.testing.assert_close(ours[inner], ref[inner], rtol=1e-9, atol=1e-12)
    # at the border MONAI divides the zero-padded sums by n^3, we by the in-volume count (Eq. 6 with ones)
    assert not torch.allclose(ours[:, :, 0], ref[:, :, 0], rtol=1e-6)


# ---------------------------------------------------------------- (b) unobserved voxels do not matter
def test_smse_gives_zero_gradient_where_combined_mask_is_zero():
    shape = (2, 1, 6, 5, 4)
    f = _rand(*shape, seed=9)
    w = _rand(*shape, seed=10).requires_grad_(True)
    mf = _slice_mask(shape, 3)
    mm = (_rand(*shape, seed=11) > 0.3).to(DT) * _rand(*shape, seed=12)
    smse(f, w, mf, mm).backward()
    mc = mf * mm
    assert torch.all(w.grad[mc == 0] == 0)
    assert torch.all(w.grad[mc > 0] != 0)


def test_slcc_ignores_values_at_unobserved_voxels():
    shape = (1, 1, 9, 8, 7)
    f, w = _rand(*shape, seed=13), _rand(*shape, seed=14)
    mf, mw = _slice_mask(shape, 3, 0), _slice_mask(shape, 2, 1) * 0.7
    base = slcc(f, w, mf, mw, window=5)
    f2 = torch.where(mf == 0, 100 * _rand(*shape, seed=15), f)
    w2 = torch.where(mw == 0, -50 * _rand(*shape, seed=16), w)
    assert torch.equal(slcc(f2, w2, mf, mw, window=5), base)
    # the check can fail: changing an observed voxel does change the loss
    w3 = w.clone()
    w3[mw > 0] += 1.0 * _rand(*shape, seed=17)[mw > 0]
    assert not torch.equal(slcc(f, w3, mf, mw, window=5), base)
    # autograd agrees: no gradient where the moved mask is 0 (Eq. 6 uses m_m for mu_w, Eq. 8 uses m_c)
    wg = w.clone().requires_grad_(True)
    slcc(f, wg, mf, mw, window=5).backward()
    assert torch.all(wg.grad[mw == 0] == 0)
    assert torch.any(wg.grad[mw > 0] != 0)


# ---------------------------------------------------------------- (c) perfect correlation
@pytest.mark.parametrize("kind", ["ones", "sparse"])
def test_slcc_is_minus_one_for_an_affine_intensity_map(kind):
    shape = (1, 1, 10, 9, 8)
    f = _rand(*shape, seed=18)
    w = 2.5 * f + 3.0
    m = {
        "ones": torch.ones(shape, dtype=DT),
        "sparse": _slice_mask(shape, 3, 1),
    }[kind]
    cc = slcc_map(f, w, m, m, window=5)
    assert torch.allclose(cc, torch.ones_like(cc), atol=1e-5)  # the image varies in every window
    assert abs(slcc(f, w, m, m, window=5).item() + 1) < 1e-5
    # and it can fail: an unrelated image is far from -1
    assert slcc(f, _rand(*shape, seed=20), m, m, window=5).item() > -0.5


def test_slcc_below_one_when_eq6_and_eq8_weights_differ():
    """Eq. 6 centres with m_f (m_m) but Eq. 8 weights with m_c = m_f * m_m: with continuous masks the two
    weighted means differ, so even a * f + b scores slightly below 1 (a property of the paper's definition)."""
    shape = (1, 1, 10, 9, 8)
    f = _rand(*shape, seed=18)
    m = _slice_mask(shape, 3, 1) * (0.2 + 0.8 * _rand(*shape, seed=19))
    cc = slcc_map(f, 2.5 * f + 3.0, m, m, window=5)
    assert cc.min() > 0.99 and cc.min() < 1 - 1e-5


def test_default_window_15_runs_in_float32():
    shape = (1, 1, 20, 20, 20)
    f = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    m = _slice_mask(shape, 5).float()
    assert abs(slcc(f, 3 * f - 1, m, m).item() + 1) < 1e-4


# ---------------------------------------------------------------- (d) invalid inputs
def test_invalid_inputs_raise_value_error():
    f = _rand(1, 1, 5, 5, 5)
    ones = torch.ones_like(f)
    with pytest.raises(ValueError, match="shape mismatch"):
        smse(f, _rand(1, 1, 5, 5, 4), ones, ones)
    with pytest.raises(ValueError, match="shape mismatch"):
        slcc(f, f, ones, torch.ones(1, 1, 5, 4, 5, dtype=DT), window=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        smse(f, f, ones * 1.5, ones)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        slcc(f, f, ones, ones - 2, window=3)
    with pytest.raises(ValueError, match="odd"):
        slcc(f, f, ones, ones, window=4)
    with pytest.raises(ValueError, match="odd"):
        lcc(f, f, window=0)
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        lcc(f[0], f[0], window=3)
    with pytest.raises(ValueError, match="displacement"):
        smoothness(_rand(1, 2, 5, 5, 5))


# ---------------------------------------------------------------- (e) continuous masks weight voxels
def test_smse_hand_computed_continuous_mask():
    f = torch.tensor([1.0, 3.0], dtype=DT).view(1, 1, 1, 1, 2)
    w = torch.zeros_like(f)
    mf = torch.tensor([1.0, 0.5], dtype=DT).view(1, 1, 1, 1, 2)
    mm = torch.ones_like(f)
    # Eq. 5: (1 * 1^2 + 0.5 * 3^2) / (1 + 0.5) = 5.5 / 1.5
    assert smse(f, w, mf, mm).item() == pytest.approx(11 / 3, rel=1e-12)
    assert smse(f, w, mm, mm).item() == pytest.approx(5.0)  # plain MSE differs


# ---------------------------------------------------------------- Eq. 4
# MONAI's own spatial_gradient indexes with a list (its warning, not ours)
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence for multidimensional indexing:UserWarning")
def test_smoothness_equals_monai_diffusion_loss_and_a_linear_field():
    monai_losses = pytest.importorskip("monai.losses")
    flow = _rand(2, 3, 6, 7, 5, seed=21)
    torch.testing.assert_close(smoothness(flow), monai_losses.DiffusionLoss()(flow), rtol=1e-12, atol=0)
    a = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, 0.1], [0.2, 0.0, -0.4]], dtype=DT)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=DT) for s in (6, 7, 5)), indexing="ij"))
    linear = torch.einsum("ij,jdhw->idhw", a, grid)[None]  # u(x) = A x, so grad u = A everywhere
    assert smoothness(linear).item() == pytest.approx((a**2).sum().item() / 3, rel=1e-12)
    assert smoothness(linear + 4.0).item() == pytest.approx((a**2).sum().item() / 3, rel=1e-12)
    assert smoothness(torch.full((1, 3, 4, 4, 4), 2.0)).item() == 0.0


# ---------------------------------------------------------------- acquisition
def _volume(depth=40, seed=0):
    return np.random.default_rng(seed).random((depth, 6, 5)).astype(np.float32)


def test_kept_fraction_and_exact_copies():
    vol = _volume()
    offsets = set()
    for seed in range(8):
        s = simulate_sparse(vol, spacing_mm=1.0, slice_mm=5.0, seed=seed)
        assert s.k == 5
        assert abs(len(s.acquired) - vol.shape[0] / 5) <= 1
        assert np.all(np.diff(s.acquired) == 5) and 0 <= s.acquired[0] < 5
        np.testing.assert_array_equal(s.image[s.acquired], vol[s.acquired])
        offsets.add(int(s.acquired[0]))
        assert s.image.dtype == s.mask.dtype == s.nearest.dtype == np.float32
    assert len(offsets) > 1  # the offset is random
    assert simulate_sparse(vol, spacing_mm=0.85, slice_mm=6.0, seed=0).k == 7  # round(7.06)


def test_linear_and_nearest_interpolation_by_hand():
    vol = _volume()
    s = simulate_sparse(vol, spacing_mm=1.0, slice_mm=5.0, seed=3)
    a = int(s.acquired[0])
    # two voxels past an acquired slice, five between slices: 3/5 of the lower + 2/5 of the upper
    assert s.image[a + 2, 1, 2] == pytest.approx(0.6 * vol[a, 1, 2] + 0.4 * vol[a + 5, 1, 2], rel=1e-6)
    np.testing.assert_array_equal(s.nearest[a + 1], vol[a])
    np.testing.assert_array_equal(s.nearest[a + 3], vol[a + 5])
    # before the first acquired slice the first one is repeated
    np.testing.assert_array_equal(s.image[:a], np.broadcast_to(vol[a], s.image[:a].shape))


def test_mask_is_one_exactly_on_acquired_slices():
    vol = _volume()
    s = simulate_sparse(vol, spacing_mm=1.0, slice_mm=4.0, seed=1)
    per_slice = s.mask[:, 0, 0]
    assert np.all((s.mask >= 0) & (s.mask <= 1))
    assert np.array_equal(np.flatnonzero(per_slice == 1), s.acquired)
    a = int(s.acquired[0])
    assert per_slice[a + 1] == pytest.approx(0.5) and per_slice[a + 2] == 0.0  # 1 - d / (k / 2), k = 4
    assert np.all(simulate_sparse(vol, 1.0, 1.0, seed=0).mask == 1)  # k = 1: everything acquired


def test_deterministic_per_seed_and_bad_inputs():
    vol = _volume()
    s1, s2 = simulate_sparse(vol, 1.0, 5.0, seed=4), simulate_sparse(vol, 1.0, 5.0, seed=4)
    for name in ("image", "mask", "acquired", "nearest"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    with pytest.raises(ValueError, match="slice_mm"):
        simulate_sparse(vol, spacing_mm=1.0, slice_mm=0.5, seed=0)
    with pytest.raises(ValueError, match="spacing_mm"):
        simulate_sparse(vol, spacing_mm=0.0, slice_mm=5.0, seed=0)
    with pytest.raises(ValueError, match="3-D"):
        simulate_sparse(vol[0], spacing_mm=1.0, slice_mm=5.0, seed=0)


@pytest.mark.parametrize("n", [1, 3, 5, 15])
def test_box_sums_by_cumulative_sums_equal_the_convolution(n):
    """The cumulative-sum box filter gives the separable convolution's numbers (zero padding, same size), also
    where the window is longer than an axis, and its gradient."""
    from companion.sparsevm.losses import _box_sum, _box_sum_conv

    x = torch.rand(3, 1, 9, 12, 7, dtype=torch.float32, requires_grad=True)
    a, b = _box_sum(x, n), _box_sum_conv(x, n)
    assert a.dtype == x.dtype and a.shape == x.shape
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-5)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-4)
    zeros = torch.zeros(1, 1, 6, 6, 6)
    assert torch.count_nonzero(_box_sum(zeros, n)) == 0  # empty regions stay exactly empty
