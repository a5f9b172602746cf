"""Checks of companion.hyperbolic.baselines (IIC on slices, sparse 3D U-Net)."""
import math

import numpy as np
import pytest
import torch

from companion.hyperbolic import baselines as B
from companion.hyperbolic.matching import matched_dice


def _cube(n, lo, hi, seed):
    """Bright cube [lo, hi)^3 in a dark, noisy n^3 volume; returns (volume, labels)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n, n), np.int64)
    lab[lo:hi, lo:hi, lo:hi] = 1
    vol = (0.15 + 0.6 * lab + rng.normal(0, 0.05, lab.shape)).astype(np.float32)
    return vol, lab


def _random_cube(n, seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n, n), np.int64)
    s = rng.integers(10, 18)
    a = rng.integers(2, n - s - 2, size=3)
    lab[a[0]:a[0] + s, a[1]:a[1] + s, a[2]:a[2] + s] = 1
    vol = (0.15 + 0.6 * lab + rng.normal(0, 0.05, lab.shape)).astype(np.float32)
    return vol, lab


# ----------------------------------------------------------------------------- IIC
@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("radius", [0, 1])
def test_iic_loss_of_aligned_one_hot_is_minus_log_k(k, radius):
    # image b is entirely cluster b: every displacement sees the same diagonal joint
    p = torch.eye(k)[:, :, None, None].expand(k, k, 6, 7).contiguous()
    assert float(B.iic_loss(p, p.clone(), radius)) == pytest.approx(-math.log(k), abs=1e-5)
    # per-pixel balanced labels, no displacement
    lab = torch.arange(4 * k * 5) % k
    q = torch.nn.functional.one_hot(lab, k).T.reshape(k, 4, 5 * k)[None]  # (1, k, 4, 5k)
    q = q.float()
    assert float(B.iic_loss(q, q.clone(), 0)) == pytest.approx(-math.log(k), abs=1e-5)


def test_iic_loss_of_independent_maps_is_zero():
    p = torch.full((2, 4, 5, 5), 0.25)
    assert float(B.iic_loss(p, p.clone())) == pytest.approx(0.0, abs=1e-6)


def test_iic_loss_invariant_to_joint_cluster_permutation():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 5, 9, 8, generator=g).softmax(1)
    q = torch.randn(3, 5, 9, 8, generator=g).softmax(1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    for r in (0, 1, 2):
        assert float(B.iic_loss(p[:, perm], q[:, perm], r)) == pytest.approx(float(B.iic_loss(p, q, r)), abs=1e-6)
    # and symmetric in its arguments (P is symmetrised)
    assert float(B.iic_loss(q, p)) == pytest.approx(float(B.iic_loss(p, q)), abs=1e-6)


def test_iic_loss_rejects_bad_shapes():
    with pytest.raises(ValueError):
        B.iic_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError):
        B.iic_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), radius=-1)


def test_iic_learns_bright_cube():
    vols = [_cube(32, 4, 28, s)[0] for s in range(4)]
    model, hist = B.train_iic(vols, ks=(2, 4, 8), steps=120)
    assert len(hist) == 120 and all(np.isfinite(hist))
    assert np.mean(hist[-15:]) < np.mean(hist[:15]) - 0.5
    vol, lab = _cube(32, 4, 28, 99)
    for k in (2, 4, 8):
        seg = B.segment_iic(model, vol, k)
        assert seg.shape == vol.shape and seg.dtype == np.int64
        assert seg.min() >= 0 and seg.max() < k
    dice = matched_dice(B.segment_iic(model, vol, 2), lab)
    assert min(dice.values()) > 0.9, dice
    with pytest.raises(ValueError):
        B.segment_iic(model, vol, 3)


def test_iic_is_deterministic():
    vols = [_cube(16, 3, 12, s)[0] for s in range(2)]
    runs = [B.train_iic(vols, steps=4, batch=4, seed=3) for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(B.segment_iic(runs[0][0], vols[0], 4), B.segment_iic(runs[1][0], vols[0], 4))


# ------------------------------------------------------------------ sparse 3D U-Net
@pytest.mark.parametrize("how", ["random", "even"])
@pytest.mark.parametrize("shape,fraction", [((50, 50, 50), 0.02), ((32, 40, 100), 0.02),
                                            ((20, 30, 40), 0.1)])
def test_sparse_slice_mask_fraction_per_axis(shape, fraction, how):
    mask = B.sparse_slice_mask(shape, fraction, seed=1, how=how)
    assert mask.shape == shape and mask.dtype == bool
    for axis, n in enumerate(shape):
        others = tuple(a for a in range(3) if a != axis)
        full = mask.all(axis=others)  # slices annotated along this axis
        assert full.sum() == max(1, round(fraction * n))
    # nothing beyond the union of those slices
    union = np.zeros(shape, bool)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        sl = [slice(None)] * 3
        sl[axis] = np.flatnonzero(mask.all(axis=others))
        union[tuple(sl)] = True
    np.testing.assert_array_equal(mask, union)


def test_sparse_slice_mask_seed_and_errors():
    a = B.sparse_slice_mask((30, 30, 30), 0.1, seed=0)
    np.testing.assert_array_equal(a, B.sparse_slice_mask((30, 30, 30), 0.1, seed=0))
    assert not np.array_equal(a, B.sparse_slice_mask((30, 30, 30), 0.1, seed=5))
    for bad in [dict(shape=(3, 3)), dict(shape=(3, 3, 3), fraction=0), dict(shape=(3, 3, 3), how="x")]:
        with pytest.raises(ValueError):
            B.sparse_slice_mask(**bad)


def test_masked_cross_entropy_ignores_unannotated_voxels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g, requires_grad=True)
    target = torch.randint(3, (2, 4, 5, 6), generator=g)
    mask = torch.rand(2, 4, 5, 6, generator=g) < 0.3
    loss = B.masked_cross_entropy(logits, target, mask)
    loss.backward()
    loss = loss.detach()
    grad_norm = logits.grad.abs().sum(1)  # (2, 4, 5, 6)
    assert torch.all(grad_norm[~mask] == 0)
    assert torch.all(grad_norm[mask] > 0)
    ref = torch.nn.functional.cross_entropy(logits.detach().permute(0, 2, 3, 4, 1)[mask], target[mask])
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)
    # changing labels outside the mask changes nothing
    other = torch.where(mask, target, (target + 1) % 3)
    assert float(B.masked_cross_entropy(logits.detach(), other, mask)) == pytest.approx(float(loss), rel=1e-6)


def test_sparse_unet_learns_cubes_from_two_percent_slices():
    train = [_random_cube(32, s) for s in range(6)]
    model, hist = B.train_sparse_unet([v for v, _ in train], [lab for _, lab in train], 2, steps=80)
    assert len(hist) == 80 and np.mean(hist[-10:]) < np.mean(hist[:10])
    vol, lab = _random_cube(32, 99)
    seg = B.segment_unet(model, vol)
    assert seg.shape == vol.shape
    dice = matched_dice(seg, lab)
    assert dice[1] > 0.8, dice


def test_sparse_unet_pads_odd_shapes_and_is_deterministic():
    vols, labs = zip(*[_random_cube(30, s) for s in range(2)])
    vols = [v[:, :29, :27] for v in vols]
    labs = [lab[:, :29, :27] for lab in labs]
    runs = [B.train_sparse_unet(vols, labs, 2, steps=3, seed=4) for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    s0, s1 = (B.segment_unet(m, vols[0]) for m, _ in runs)
    assert s0.shape == (30, 29, 27)
    np.testing.assert_array_equal(s0, s1)
    with pytest.raises(ValueError):
        B.train_sparse_unet(vols, [labs[0] + 5, labs[1]], 2, steps=1)
