"""VpbSD models and losses (chapter 2): codebook, teacher, student, L_stu, cost counters.  Tiny sizes only."""
import copy
import math

import pytest
import torch
from torch import nn

from companion.vpbsd.bench import count_flops, count_parameters, table2
from companion.vpbsd.codebook import VesselPatternCodebook, code_usage, codebook_loss, perplexity
from companion.vpbsd.losses import (beta_at, distillation_loss, match_codes, pretrain_loss, sigmoid_rampup,
                                    student_loss)
from companion.vpbsd.student import VpbStudent, bottleneck_module
from companion.vpbsd.teacher import VpbTeacher, freeze, pseudo_labels

TINY = dict(feature_size=12, code_dim=32, n_codes=16, depths=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return VpbTeacher(**TINY)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return VpbStudent()


# ---------------------------------------------------------------- codebook

def test_straight_through_gradients_reach_alignment_and_codes():
    torch.manual_seed(0)
    cb = VesselPatternCodebook(in_channels=24, code_dim=4, n_codes=8).train()
    z = torch.randn(2, 24, 3, 3, 3)
    out = cb(z)
    assert out.out.shape == z.shape and out.codes.shape == (2, 4, 3, 3, 3) and out.indices.shape == (2, 3, 3, 3)
    # forward value of the straight-through codes = the selected codebook vectors
    assert torch.allclose(out.codes.movedim(1, -1), cb.embedding[out.indices])
    # a decoder-side loss reaches the encoder-side alignment conv through the soft Gumbel probabilities
    out.out.pow(2).sum().backward(retain_graph=True)
    assert cb.down.weight.grad.abs().sum() > 0 and cb.up.weight.grad.abs().sum() > 0
    cb.zero_grad()
    # the codebook loss alone moves the codes (term 1) and the alignment conv (commitment term)
    out.loss.backward()
    assert cb.embedding.grad.abs().sum() > 0 and cb.down.weight.grad.abs().sum() > 0
    # only selected codes get codebook-loss gradient
    unused = torch.ones(8, dtype=torch.bool)
    unused[out.indices.unique()] = False
    assert cb.embedding.grad[unused].abs().sum() == 0


def test_eval_mode_is_deterministic_nearest_code():
    torch.manual_seed(1)
    cb = VesselPatternCodebook(in_channels=6, code_dim=3, n_codes=5).eval()
    z = torch.randn(1, 6, 4, 4, 4)
    a, b = cb(z), cb(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.out, b.out)
    flat = a.aligned.movedim(1, -1).reshape(-1, 3)
    assert torch.equal(a.indices.reshape(-1), torch.cdist(flat, cb.embedding).argmin(1))
    cb.train()
    c = [cb(z).indices for _ in range(3)]
    assert not (torch.equal(c[0], c[1]) and torch.equal(c[1], c[2]))  # Gumbel noise when training


def test_usage_and_perplexity_known_answers():
    for k in (1, 3, 8):
        idx = torch.arange(k).repeat(5)
        u = code_usage(idx, n_codes=16)
        assert u["perplexity"] == pytest.approx(k) and u["used"] == k and int(u["counts"].sum()) == 5 * k
    assert code_usage(torch.zeros(100, dtype=torch.long), 16)["perplexity"] == pytest.approx(1.0)  # collapse
    assert float(perplexity(torch.tensor([0.5, 0.25, 0.25]))) == pytest.approx(2 ** 1.5)


def test_codebook_loss_hand_example():
    aligned = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    selected = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # mean squared error = (1 + 4 + 9 + 16) / 4 = 7.5 for both terms
    assert float(codebook_loss(aligned, selected, commitment=0.25)) == pytest.approx(7.5 * 1.25)
    with pytest.raises(ValueError):
        codebook_loss(aligned, selected[:1])


# ---------------------------------------------------------------- teacher

def test_teacher_reconstruction_forward_backward(teacher):
    teacher.train()
    teacher.mode = "reconstruct"
    x = torch.rand(1, 1, 64, 32, 32)  # SwinUNETR's instance norm needs >= 2 voxels at 1/32: the smallest input
    res = teacher(x)
    assert res.out.shape == x.shape and res.codebook.codes.shape == (1, 32, 2, 1, 1)
    loss, parts = pretrain_loss(res.out, x, res.codebook.loss, alpha=0.1)
    assert parts["loss"] == pytest.approx(parts["rec"] + 0.1 * parts["cb"], rel=1e-5)
    teacher.zero_grad()
    loss.backward()
    for p in (teacher.codebook.embedding, teacher.codebook.down.weight, teacher.swin.swinViT.patch_embed.proj.weight,
              teacher.heads["reconstruct"].conv.conv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert teacher.heads["segment"].conv.conv.weight.grad is None
    with pytest.raises(ValueError):
        teacher.mode = "classify"


def test_teacher_codes_and_student_bottleneck_match(teacher, student):
    x = torch.rand(2, 1, 64, 32, 32)
    teacher.eval()
    teacher.mode = "reconstruct"
    z_tea = teacher.codes(x)
    assert z_tea.shape == (2, 32, 2, 1, 1)
    y_pse, codes = teacher.distillation_targets(x)  # one segment-mode pass, mode restored afterwards
    assert teacher.mode == "reconstruct" and y_pse.shape == (2, 1, 64, 32, 32)
    assert set(y_pse.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(codes, z_tea)  # codes() = the codes of the full pass, deterministic in eval mode
    twin = copy.deepcopy(teacher)  # the codebook hook follows the copy
    assert torch.equal(twin.codes(x), z_tea) and teacher._pass is None
    logits, z_stu = student(x)
    assert logits.shape == (2, 1, 64, 32, 32) and z_stu.shape == (2, 32, 4, 2, 2)
    a, b = match_codes(z_stu, z_tea)
    assert a.shape == b.shape == z_stu.shape
    assert torch.equal(b[..., 1, 0, 1], z_tea[..., 0, 0, 0]) and torch.equal(b[..., 2, 1, 0], z_tea[..., 1, 0, 0])
    a, b = match_codes(z_stu, z_tea, resize="pool")
    assert a.shape == b.shape == z_tea.shape
    with pytest.raises(ValueError, match="channels"):
        match_codes(z_stu[:, :16], z_tea)
    with pytest.raises(ValueError, match="divisible by 32"):
        match_codes(torch.zeros(2, 32, 3, 3, 3), torch.zeros(2, 32, 2, 2, 2))
    with pytest.raises(ValueError):
        match_codes(z_stu, z_tea, resize="none")


def test_pseudo_labels():
    assert pseudo_labels(torch.tensor([-1.0, 2.0, 0.5]).reshape(1, 1, 3)).tolist() == [[[0.0, 1.0, 1.0]]]
    two = torch.tensor([[1.0, 0.0], [0.0, 3.0]]).reshape(1, 2, 2)  # channels x voxels
    assert pseudo_labels(two).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]


# ---------------------------------------------------------------- student

def test_student_size_and_hooked_bottleneck(student):
    n = count_parameters(student)
    assert 0.10e6 <= n <= 0.14e6, n
    assert student.code_dim == 32 and student.stride == 16
    caught = []
    h = bottleneck_module(student.unet).register_forward_hook(lambda m, i, o: caught.append(o))
    _, z = student(torch.rand(1, 1, 32, 32, 32))
    h.remove()
    assert caught[0] is z
    norms = [m for m in student.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == math.gcd(4, m.num_channels) for m in norms)
    assert any(isinstance(m, nn.LeakyReLU) for m in student.modules())
    with pytest.raises(ValueError, match="divisible"):
        student(torch.rand(1, 1, 24, 24, 24))


# ---------------------------------------------------------------- losses

def test_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(3, 0) == 1.0
    assert beta_at(100, 100, beta_max=0.1) == pytest.approx(0.1)


def test_student_loss_terms_switch_off():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    z_stu = torch.randn(2, 4, 2, 2, 2, requires_grad=True)
    z_tea = torch.randn(2, 4, 1, 1, 1)
    y_gt = (torch.rand(2, 1, 8, 8, 8) > 0.7).float()
    y_pse = (torch.rand(2, 1, 8, 8, 8) > 0.7).float()
    labeled = torch.tensor([True, False])
    full, p = student_loss(logits, z_stu, y_gt=y_gt, y_pse=y_pse, z_tea=z_tea, labeled=labeled, beta=0.5, gamma=1.0)
    assert p["seg"] > 0 and p["semi"] > 0 and p["dis"] > 0
    assert p["loss"] == pytest.approx(p["seg"] + 0.5 * p["semi"] + p["dis"], rel=1e-5)
    assert p["dis"] == pytest.approx(float(distillation_loss(z_stu.detach(), z_tea)))
    _, q = student_loss(logits, z_stu, y_gt=y_gt, y_pse=y_pse, z_tea=z_tea, labeled=labeled, beta=0.0, gamma=0.0)
    assert q["semi"] == 0 and q["dis"] == 0 and q["loss"] == pytest.approx(p["seg"])
    # gamma = 0 needs no teacher codes; beta = 0 needs no pseudo labels
    _, q = student_loss(logits, z_stu, y_gt=y_gt, beta=0.0, gamma=0.0)
    assert q["labeled"] == 2 and q["loss"] == pytest.approx(q["seg"])
    # an unlabeled batch: no ground-truth term
    loss, q = student_loss(logits, z_stu, y_pse=y_pse, z_tea=z_tea, beta=1.0, gamma=1.0)
    assert q["seg"] == 0 and q["labeled"] == 0 and q["loss"] == pytest.approx(q["semi"] + q["dis"], rel=1e-5)
    loss.backward()
    assert logits.grad.abs().sum() > 0 and z_stu.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="y_pse"):
        student_loss(logits, z_stu, z_tea=z_tea, beta=1.0)
    with pytest.raises(ValueError, match="z_tea"):
        student_loss(logits, z_stu, y_gt=y_gt, gamma=1.0)


def test_frozen_teacher_gives_no_gradient(teacher):
    frozen = freeze(teacher)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    for p in frozen.parameters():
        p.requires_grad_(True)


# ---------------------------------------------------------------- cost

def test_conv3d_flops_match_formula():
    conv = nn.Conv3d(3, 5, kernel_size=3, padding=1, stride=2)
    x = torch.randn(2, 3, 8, 8, 8)
    out = 4 ** 3  # output voxels per item and channel
    assert count_flops(conv, x) == 2 * 2 * 5 * 3 * 27 * out  # 2 FLOPs per multiply-add, bias not counted


def test_model_cost_of_student(student):
    (cost,) = table2({"student": student}, size=32, repeats=1, warmup=0)
    assert cost["model"] == "student" and cost["block"] == "32x32x32"
    assert cost["params_M"] == pytest.approx(count_parameters(student) / 1e6)
    assert cost["GFLOPs"] == pytest.approx(2 * cost["GMACs"]) and cost["GFLOPs"] > 0 and cost["ms"] > 0
