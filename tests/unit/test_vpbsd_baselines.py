"""Tests of companion.vpbsd.baselines: the losses of VpbSD's Table 1 baselines (small tensors, CPU)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from companion.vpbsd import baselines as B


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


# --- KD ---------------------------------------------------------------------------------------------------------

def test_kd_zero_for_equal_logits_positive_otherwise():
    z = _randn(2, 1, 4, 4, 4)
    assert B.kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert B.kd_loss(z, z + 1.0).item() > 1e-3
    z3 = _randn(2, 3, 4, 4, 4, seed=1)
    assert B.kd_loss(z3, z3.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert B.kd_loss(z3, _randn(2, 3, 4, 4, 4, seed=2)).item() > 1e-3


def test_kd_one_voxel_by_hand():
    t = 4.0
    zs, zt = 0.0, 2.0
    ps, pt = 1 / (1 + math.exp(-zs / t)), 1 / (1 + math.exp(-zt / t))
    expected = t * t * (pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps)))
    got = B.kd_loss(torch.full((1, 1, 1, 1, 1), zs), torch.full((1, 1, 1, 1, 1), zt), temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_one_channel_equals_two_channel_softmax():
    zs, zt = _randn(2, 1, 3, 3, 3, seed=3), _randn(2, 1, 3, 3, 3, seed=4)
    two = lambda z: torch.cat([torch.zeros_like(z), z], dim=1)  # noqa: E731  softmax([0, z]) = [1-sig, sig]
    assert B.kd_loss(zs, zt).item() == pytest.approx(B.kd_loss(two(zs), two(zt)).item(), rel=1e-5)


def test_kd_gradient_only_to_student():
    zs = _randn(1, 1, 2, 2, 2).requires_grad_()
    zt = _randn(1, 1, 2, 2, 2, seed=1).requires_grad_()
    B.kd_loss(zs, zt).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


# --- hint / L_mid -----------------------------------------------------------------------------------------------

def _identity_connector(channels: int) -> B.Connector:
    c = B.Connector(channels, channels)
    with torch.no_grad():
        c.conv.weight.zero_()
        c.conv.weight[:, :, 0, 0, 0] = torch.eye(channels)
        c.conv.bias.zero_()
    return c


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_hint_zero_for_exact_map_and_teacher_detached(kind):
    c = _identity_connector(3)
    f_tea = _randn(2, 3, 2, 2, 2).requires_grad_()
    z_stu = torch.nn.functional.interpolate(f_tea.detach(), scale_factor=2, mode="nearest").requires_grad_()
    assert B.hint_loss(c, z_stu, f_tea, kind=kind).item() == pytest.approx(0.0, abs=1e-7)
    loss = B.hint_loss(c, z_stu + 0.5, f_tea, kind=kind)
    assert loss.item() == pytest.approx(0.25 if kind == "l2" else 0.5, rel=1e-5)
    loss.backward()
    assert f_tea.grad is None
    assert c.conv.weight.grad is not None and z_stu.grad is not None


def test_hint_connector_maps_widths():
    c = B.Connector(4, 6)
    loss = B.hint_loss(c, _randn(1, 4, 4, 4, 4), _randn(1, 6, 2, 2, 2, seed=1))
    loss.backward()
    assert loss.item() > 0 and c.conv.weight.grad.abs().sum() > 0


# --- VID --------------------------------------------------------------------------------------------------------

def test_vid_initial_variance_and_loss_decreases_towards_target():
    vid = B.VIDLoss(2, 3, init_pred_var=5.0)
    assert torch.allclose(vid.variance(), torch.full((3,), 5.0), atol=1e-5)
    z = _randn(2, 2, 2, 2, 2).abs()
    with torch.no_grad():
        mu = vid.regressor(z)
    far, near, exact = vid(z, mu + 2.0), vid(z, mu + 0.5), vid(z, mu)
    assert far > near > exact
    assert exact.item() == pytest.approx(0.5 * math.log(5.0), rel=1e-4)


def test_vid_gradients_reach_regressor_and_variance():
    vid = B.VIDLoss(2, 3, mid_channels=4)
    f_tea = _randn(1, 3, 1, 1, 1, seed=1).requires_grad_()
    vid(_randn(1, 2, 2, 2, 2), f_tea).backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
               for m in vid.regressor if isinstance(m, nn.Conv3d))
    assert vid.log_scale.grad is not None and vid.log_scale.grad.abs().sum() > 0
    assert f_tea.grad is None


# --- AB ---------------------------------------------------------------------------------------------------------

def test_ab_zero_when_signs_agree_beyond_margin():
    ab = B.ABLoss(2, 2, margin=1.0)
    t = torch.tensor([1.0, -1.0, 0.3, -0.2]).view(1, 2, 2, 1, 1)
    s = torch.tensor([1.5, -2.0, 1.0, -1.0]).view(1, 2, 2, 1, 1)  # same side, |s| >= m
    assert ab(s, t).item() == 0.0


def test_ab_counter_example_by_hand():
    ab = B.ABLoss(1, 1, margin=1.0)
    t = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 1, 4, 1, 1)
    s = torch.tensor([0.5, -0.5, 2.0, -3.0]).view(1, 1, 4, 1, 1)  # inside the margin, inside, fine, fine
    expected = ((0.5 - 1.0) ** 2 + (-0.5 + 1.0) ** 2) / 4
    assert ab(s, t).item() == pytest.approx(expected)
    assert B.ab_criterion(s, t, reduction="batch").item() == pytest.approx(expected * 4)
    assert ab(-s, t).item() > 1.0  # wrong side of the boundary costs more


def test_ab_connector_trains():
    ab = B.ABLoss(2, 3)
    assert isinstance(ab.connector, nn.Sequential)
    f_tea = _randn(2, 3, 2, 2, 2, seed=1)
    ab(_randn(2, 2, 2, 2, 2), f_tea).backward()
    assert ab.connector[0].weight.grad.abs().sum() > 0


# --- Mean Teacher / UA-MT ---------------------------------------------------------------------------------------

def test_ema_update_copies_at_step0_then_mixes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(7.0)
    model[1].running_mean.fill_(3.0)
    assert B.ema_update(ema, model, decay=0.99, step=0) == 0.0
    for e, p in zip(ema.parameters(), model.parameters()):
        assert torch.equal(e, p)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)
    before = [e.clone() for e in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    a = B.ema_update(ema, model, decay=0.99, step=3)  # min(1 - 1/4, 0.99) = 0.75
    assert a == pytest.approx(0.75)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * p)
    assert B.ema_update(ema, model, decay=0.99, step=10_000) == pytest.approx(0.99)


def test_noisy_is_clipped_and_reproducible():
    x = torch.zeros(2, 1, 8, 8, 8)
    n1 = B.noisy(x, std=1.0, clip=0.2, generator=_gen(5))
    assert n1.abs().max().item() <= 0.2 + 1e-7 and n1.std() > 0.05
    assert torch.equal(n1, B.noisy(x, std=1.0, clip=0.2, generator=_gen(5)))
    assert torch.equal(B.noisy(x, std=0.0), x)


def test_consistency_zero_for_equal_and_gradient_only_to_student():
    z = _randn(2, 1, 3, 3, 3)
    assert B.consistency_loss(z, z.clone()).item() == 0.0
    zs, zt = z.clone().requires_grad_(), (z + 1).requires_grad_()
    loss = B.consistency_loss(zs, zt)
    loss.backward()
    assert loss.item() > 0 and zs.grad is not None and zt.grad is None


def test_consistency_mask_ignores_masked_out_voxels():
    zs = torch.zeros(1, 1, 4, 1, 1)
    zt = torch.tensor([0.0, 0.0, 10.0, -10.0]).view(1, 1, 4, 1, 1)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 4, 1, 1)
    assert B.consistency_loss(zs, zt, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert B.consistency_loss(zs, zt).item() > 0.1  # the unmasked mean sees the disagreeing voxels
    keep_one = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 4, 1, 1)
    d = (0.5 - torch.sigmoid(torch.tensor(10.0)).item()) ** 2
    assert B.consistency_loss(zs, zt, keep_one).item() == pytest.approx(d / 2, rel=1e-5)


def test_consistency_one_channel_equals_uamt_two_channel_formula():
    zs, zt = _randn(2, 1, 3, 3, 3, seed=1), _randn(2, 1, 3, 3, 3, seed=2)
    mask = (_randn(2, 1, 3, 3, 3, seed=3) > 0).float()
    two = lambda z: torch.cat([torch.zeros_like(z), z], dim=1)  # noqa: E731
    mse2 = (torch.softmax(two(zs), 1) - torch.softmax(two(zt), 1)) ** 2
    uamt = (mask * mse2).sum() / (2 * mask.sum() + 1e-16)  # UA-MT's normalisation
    assert B.consistency_loss(zs, zt, mask).item() == pytest.approx(uamt.item(), rel=1e-5)
    assert B.consistency_loss(two(zs), two(zt), mask).item() == pytest.approx(uamt.item(), rel=1e-5)


def test_uncertainty_ln2_at_zero_logits_and_zero_when_confident():
    x = _randn(2, 1, 4, 4, 4)
    u0 = B.uncertainty(lambda v: torch.zeros_like(v), x, passes=3, std=0.0)
    assert u0.shape == (2, 1, 4, 4, 4)
    assert torch.allclose(u0, torch.full_like(u0, math.log(2)))
    u1 = B.uncertainty(lambda v: torch.where(v >= 0, 50.0, -50.0), x, passes=3, std=0.0)
    assert u1.max().item() < 1e-6
    calls = []
    B.uncertainty(lambda v: calls.append(v) or v, x, passes=4, std=0.1, generator=_gen(0))
    assert len(calls) == 4 and not torch.equal(calls[0], calls[1])


def test_uncertainty_threshold_endpoints():
    ln2 = math.log(2)
    assert B.uncertainty_threshold(0, 6000) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * ln2)
    assert B.uncertainty_threshold(6000, 6000) == pytest.approx(ln2)
    assert B.uncertainty_threshold(9000, 6000) == pytest.approx(ln2)
    assert B.uncertainty_threshold(0, 6000) < B.uncertainty_threshold(3000, 6000) < ln2


# --- MinEnt -----------------------------------------------------------------------------------------------------

def test_entropy_loss_one_at_zero_logits_zero_when_confident():
    assert B.entropy_loss(torch.zeros(1, 1, 2, 2, 2)).item() == pytest.approx(1.0, rel=1e-6)
    assert B.entropy_loss(torch.zeros(1, 4, 2, 2, 2)).item() == pytest.approx(1.0, rel=1e-6)
    confident = torch.full((1, 1, 2, 2, 2), 30.0) * torch.tensor([1.0, -1.0]).view(1, 1, 2, 1, 1)
    assert B.entropy_loss(confident).item() < 1e-9
    z = torch.full((1, 1, 1, 1, 1), 1.0)
    p = 1 / (1 + math.exp(-1.0))
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)
    assert B.entropy_loss(z).item() == pytest.approx(h, rel=1e-5)


# --- errors -----------------------------------------------------------------------------------------------------

_Z = torch.zeros(1, 1, 2, 2, 2)
_ERROR_CASES = {
    "kd shapes differ": lambda: B.kd_loss(_Z, torch.zeros(1, 1, 2, 2, 1)),
    "kd no channel axis": lambda: B.kd_loss(torch.zeros(3), torch.zeros(3)),
    "kd temperature": lambda: B.kd_loss(_Z, _Z, temperature=0.0),
    "connector channels": lambda: B.Connector(0, 3),
    "hint student width": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 4, 2, 2, 2),
                                              torch.zeros(1, 3, 1, 1, 1)),
    "hint student not 5-D": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 2, 2, 2),
                                                torch.zeros(1, 3, 1, 1, 1)),
    "hint teacher width": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 2, 2, 2, 2),
                                              torch.zeros(1, 5, 1, 1, 1)),
    "hint batch": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(2, 2, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1)),
    "hint grids do not nest": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 2, 3, 3, 3),
                                                  torch.zeros(1, 3, 2, 2, 2)),
    "hint kind": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1),
                                     kind="l3"),
    "hint resize": lambda: B.hint_loss(B.Connector(2, 3), torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1),
                                       resize="cubic"),
    "vid init var": lambda: B.VIDLoss(2, 3, init_pred_var=0.0),
    "vid student width": lambda: B.VIDLoss(2, 3)(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2)),
    "ab margin": lambda: B.ABLoss(2, 3, margin=-1.0),
    "ab reduction": lambda: B.ABLoss(2, 3, reduction="sum"),
    "ab teacher width": lambda: B.ABLoss(2, 2)(torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2)),
    "ab criterion shapes": lambda: B.ab_criterion(_Z, torch.zeros(1, 1, 2, 2, 1)),
    "ema parameters": lambda: B.ema_update(nn.Conv3d(1, 2, 1), nn.Conv3d(1, 3, 1)),
    "ema buffers": lambda: B.ema_update(nn.BatchNorm3d(2, affine=False), nn.BatchNorm3d(3, affine=False)),
    "ema decay": lambda: B.ema_update(nn.Conv3d(1, 2, 1), nn.Conv3d(1, 2, 1), decay=1.5),
    "ema step": lambda: B.ema_update(nn.Conv3d(1, 2, 1), nn.Conv3d(1, 2, 1), step=-1),
    "noise std": lambda: B.noisy(_Z, std=-0.1),
    "consistency shapes": lambda: B.consistency_loss(_Z, torch.zeros(1, 2, 2, 2, 2)),
    "consistency mask": lambda: B.consistency_loss(_Z, _Z, mask=torch.ones(1, 1, 2, 2)),
    "uncertainty passes": lambda: B.uncertainty(lambda v: v, _Z, passes=0),
    "uncertainty logits": lambda: B.uncertainty(lambda v: v.flatten(), _Z, passes=1),
    "uncertainty batch": lambda: B.uncertainty(lambda v: torch.cat([v, v]), _Z, passes=1),
    "threshold low > high": lambda: B.uncertainty_threshold(0, 10, low=0.9, high=0.5),
    "threshold classes": lambda: B.uncertainty_threshold(0, 10, classes=1),
    "entropy no channel axis": lambda: B.entropy_loss(torch.zeros(4)),
}


@pytest.mark.parametrize("case", list(_ERROR_CASES), ids=list(_ERROR_CASES))
def test_value_errors(case):
    with pytest.raises(ValueError):
        _ERROR_CASES[case]()
