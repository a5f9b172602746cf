"""Losses of the baselines of VpbSD's Table 1, for binary 3-D segmentation: knowledge distillation (KD, FitNets,
VID, AB), semi-supervised learning (Mean Teacher, UA-MT) and entropy minimisation (ADVENT's MinEnt).

Every loss takes (B, C, D, H, W) tensors.  C = 1 is the binary case of this book (one logit, sigmoid); C > 1 is
handled with a softmax where that is natural (KD, consistency, uncertainty, entropy).

Paper facts
    * KD (Hinton et al. 2015, "Distilling the knowledge in a neural network"): KL(p_T^tea || p_T^stu) between
      temperature-softened class distributions, scaled by T^2 so its gradients keep their size as T changes.
      RepDistiller (Tian et al., ICLR 2020, github HobbitLong/RepDistiller), ``distiller_zoo/KD.py``: ``DistillKL``
      sums the KL over classes and divides by the batch size; ``train_student.py``: ``--kd_T`` default 4, total loss
      ``gamma * CE + alpha * KL + beta * other`` with ``-r/--gamma`` default 1, ``-a/--alpha`` and ``-b/--beta``
      without defaults.  The weights below are those of ``scripts/run_cifar_distill.sh``:
      kd ``-r 0.1 -a 0.9 -b 0``; FitNet (``--distill hint``) ``-a 0 -b 100``; VID ``-a 0 -b 1``;
      AB (``--distill abound``) ``-a 0 -b 1`` (gamma left at its default 1 for the last three).
    * FitNets (Romero et al., ICLR 2015): a regressor on the student's hint layer predicts the teacher's guided
      layer; loss = squared error.  RepDistiller: ``distiller_zoo/FitNet.py`` ``HintLoss`` = ``nn.MSELoss`` (mean);
      its regressor ``models/util.py`` ``ConvReg`` is conv + BatchNorm + ReLU; hint layer ``--hint_layer`` 2.
    * VID (Ahn et al., CVPR 2019): the teacher feature t is modelled as a Gaussian whose mean mu(s) is regressed from
      the student feature and whose per-channel variance is learned; loss = -log q(t | s) up to constants.
      RepDistiller ``distiller_zoo/VID.py`` (credited to the authors' code, github ssahn0215/
      variational-information-distillation): regressor = 1x1 conv - ReLU - 1x1 conv - ReLU - 1x1 conv, all without
      bias; variance = softplus(log_scale) + eps with log_scale initialised to log(exp(init_pred_var - eps) - 1), so
      it starts at init_pred_var = 5.0, eps = 1e-5; loss = mean over all elements of 0.5 ((mu - t)^2 / var + log
      var); the larger of the two maps is adaptive-average-pooled to the smaller one.  ``train_student.py`` builds
      it with mid channels = teacher channels, on every intermediate block (``feat[1:-1]``).
    * AB (Heo et al., AAAI 2019, "Knowledge transfer via distillation of activation boundaries formed by hidden
      neurons"): the student must put each neuron on the same side of its activation boundary as the teacher; the
      "alternative" squared-hinge loss with margin m.  RepDistiller ``distiller_zoo/AB.py`` (credited to github
      bhheo/AB_distillation): per element (s + m)^2 [s > -m][t <= 0] + (s - m)^2 [s <= m][t > 0], margin default
      1.0; *summed* over all elements, divided by the batch size, times 3/1000 and a per-layer weight 2^(i - n + 1)
      (1 for the deepest of the n layers).  The connector (``models/util.py`` ``Connector``) is ``ConvReg`` without
      ReLU (conv + BatchNorm), or the identity where student and teacher maps already agree in shape.  Features are
      pre-activations (``preact=True``), and the AB loss is used only in an initialisation stage of
      ``--init_epochs`` 30 epochs (``helper/pretrain.py``); in the main stage ``helper/loops.py`` sets the AB term
      to 0, so there ``-b 1`` multiplies nothing.
    * Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) and UA-MT (Yu et al., MICCAI 2019, github yulequan/UA-MT,
      ``code/train_LA_meanteacher_certainty.py`` and ``..._unlabel.py``; ``code/utils/losses.py``):
      EMA teacher theta' <- a theta' + (1 - a) theta with a = min(1 - 1/(step + 1), ema_decay), ema_decay 0.99,
      parameters only (``update_ema_variables``); teacher input noise clamp(randn * 0.1, -0.2, 0.2); consistency =
      softmax MSE (``softmax_mse_loss``, element-wise) with weight 0.1 * sigmoid_rampup(iter // 150, 40); uncertainty
      = entropy -sum_c p_c log(p_c + 1e-6) (nats) of the mean softmax over T = 8 noisy teacher passes (run as T/2
      passes of the batch repeated twice); mask = [uncertainty < threshold], threshold = (0.75 + 0.25
      sigmoid_rampup(iter, max_iterations)) ln 2, max_iterations 6000; masked consistency
      sum(mask * mse) / (2 sum(mask) + 1e-16), with mask (B, 1, ...) broadcast over the 2 channels (num_classes = 2),
      i.e. the mean of the MSE over the kept voxels and both channels.
    * MinEnt (Vu et al., CVPR 2019, ADVENT, github valeoai/ADVENT): ``advent/utils/loss.py`` ``entropy_loss`` =
      -sum p log2(p + 1e-30) / (N H W log2 C), the mean over pixels of the entropy normalised to [0, 1];
      ``advent/domain_adaptation/config.py`` and ``advent/scripts/configs/minent.yml``: LAMBDA_ENT_MAIN = 0.001
      (LAMBDA_ENT_AUX = 0.0002 for DeepLab-v2's auxiliary head).

Our choices
    * Classification -> segmentation: KD's KL is taken per voxel (summed over classes, as ``DistillKL``) and
      averaged over voxels and items (``DistillKL`` averages over items, the one "voxel" of a classifier).  For one
      logit channel the per-voxel distribution is the Bernoulli [1 - sigmoid(z/T), sigmoid(z/T)], computed with
      ``logsigmoid`` -- the same numbers as a two-channel softmax over logits [0, z].  The teacher is detached.
    * Feature losses (hint, VID, AB) first map the student's features to the teacher's width (connector or
      regressor, as in RepDistiller, where it runs on the student side), then bring the teacher map to the student's
      grid with :func:`companion.vpbsd.losses.match_codes` (``resize="nearest"``: the teacher's 1/32 map is
      nearest-upsampled to the student's 1/16 grid, as for VpbSD's own L_dis; ``"pool"`` average-pools the student
      side to the teacher's grid, like RepDistiller's VID, except that it pools VID's *input* and we pool the
      predicted mean; RepDistiller's FitNet/AB ``ConvReg`` instead uses a stride-2 conv when the student map is twice
      the teacher's).  The teacher side is detached.
    * ``Connector`` is a plain 1x1x1 ``Conv3d`` with bias: FitNets' regressor, and the dimension alignment DA of
      VpbSD's L_mid = L1(DA(Z_stu), Z_tea) in its ablation (the paper does not describe DA further).  RepDistiller's
      FitNet regressor adds BatchNorm + ReLU; we keep the linear map, so ``hint_loss`` can be checked exactly.
    * VID: ``mid_channels`` defaults to the teacher's width, as ``train_student.py``.
    * AB: connector = 1x1x1 ``Conv3d`` + ``BatchNorm3d`` (identity when the widths agree, as RepDistiller).  Default
      reduction ``"mean"`` (over all elements), so the size of the term does not depend on the feature map's size;
      ``reduction="batch"`` gives RepDistiller's sum / batch size (without its 3/1000 and layer weight).  AB wants
      pre-activations; SwinUNETR's ``encoder10`` ends in a LeakyReLU, which keeps the sign, so the activation
      boundary (t > 0) of its output is that of its pre-activation.
    * ``ema_update`` also copies buffers (BatchNorm statistics) from the student; UA-MT copies nothing but runs its
      EMA model in train mode, so its BatchNorm keeps its own statistics.  Our student uses GroupNorm (no buffers).
    * ``consistency_loss`` normalises by the number of kept elements, i.e. sum(mask * mse) / (sum of the mask
      broadcast to the logits' shape + 1e-16); for UA-MT's (B, 1, ...) mask and 2 channels that is its
      2 sum(mask) + 1e-16.  For one sigmoid channel this is the same value as UA-MT's 2-channel softmax on logits
      [0, z] (both channels differ by the same amount).  Without a mask: the plain mean.
    * ``uncertainty`` uses the exact entropy (x log x = 0 at x = 0) instead of UA-MT's log(p + 1e-6) (differs by
      about 1e-6 nats), one forward pass per noisy copy instead of UA-MT's batch-doubling (same distribution), and
      the Bernoulli entropy for one channel (maximum ln 2, as UA-MT's two softmax channels).
    * ``entropy_loss`` computes p log p from the logits (``log_softmax`` / ``logsigmoid``), no 1e-30.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .losses import match_codes, sigmoid_rampup

# --- knowledge distillation (RepDistiller, see module docstring) ---
KD_TEMPERATURE = 4.0  # RepDistiller train_student.py --kd_T default
#: loss = gamma * CE + alpha * KD + beta * feature loss (RepDistiller scripts/run_cifar_distill.sh; gamma default 1)
REPDISTILLER_WEIGHTS = {
    "kd": {"gamma": 0.1, "alpha": 0.9, "beta": 0.0},
    "fitnet": {"gamma": 1.0, "alpha": 0.0, "beta": 100.0},
    "vid": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "ab": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},  # AB term used only in the 30-epoch init stage
}
VID_INIT_PRED_VAR = 5.0
VID_EPS = 1e-5
AB_MARGIN = 1.0
AB_REDUCTIONS = ("mean", "batch")
HINT_KINDS = ("l2", "l1")

# --- Mean Teacher / UA-MT (github yulequan/UA-MT, code/train_LA_meanteacher_certainty.py) ---
UAMT_CONSISTENCY = 0.1  # maximum consistency weight
UAMT_CONSISTENCY_RAMPUP = 40.0  # ramp length, in units of UAMT_RAMPUP_UNIT iterations (iter_num // 150)
UAMT_RAMPUP_UNIT = 150
UAMT_EMA_DECAY = 0.99
UAMT_PASSES = 8  # T noisy teacher passes for the uncertainty
UAMT_NOISE_STD = 0.1
UAMT_NOISE_CLIP = 0.2
UAMT_THRESHOLD = (0.75, 1.0)  # threshold ramps from 0.75 ln 2 to ln 2 ...
UAMT_MAX_ITERATIONS = 6000  # ... over the whole training (max_iterations)

# --- MinEnt (ADVENT config.py / minent.yml) ---
LAMBDA_ENT = 0.001


def _check_5d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"{name} must be (B, C, D, H, W), got shape {tuple(x.shape)}")


def _check_logits(name: str, x: torch.Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"{name} must be (B, C, ...) with a channel axis, got shape {tuple(x.shape)}")


def _check_same(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} {tuple(a.shape)} and {b_name} {tuple(b.shape)} differ")


def _check_channels(name: str, x: torch.Tensor, channels: int) -> None:
    _check_5d(name, x)
    if x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels, expected {channels}")


def _log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, log-probabilities) over the class axis; one channel -> the two Bernoulli classes, stacked
    on axis 1 as [1 - p, p]."""
    if logits.shape[1] == 1:
        logp = torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    else:
        logp = F.log_softmax(logits, dim=1)
    return logp.exp(), logp


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid for one channel, softmax over channels otherwise (same shape as ``logits``)."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# KD
# ---------------------------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """Hinton et al.'s KD per voxel: T^2 KL(p_T^tea || p_T^stu), summed over classes, mean over items and voxels.

    One channel: Bernoulli [1 - sigmoid(z/T), sigmoid(z/T)]; several: softmax(z/T).  The teacher is detached."""
    _check_logits("student_logits", student_logits)
    _check_same("student_logits", student_logits, "teacher_logits", teacher_logits)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _, log_ps = _log_probs(student_logits / temperature)
    p_t, log_pt = _log_probs(teacher_logits.detach() / temperature)
    kl = (p_t * (log_pt - log_ps)).sum(dim=1)  # per item and voxel
    return kl.mean() * temperature ** 2


# ---------------------------------------------------------------------------------------------------------------
# FitNets hint / VpbSD's L_mid
# ---------------------------------------------------------------------------------------------------------------

class Connector(nn.Module):
    """1x1x1 convolution from the student's width to the teacher's (FitNets' regressor; VpbSD's DA)."""

    def __init__(self, student_channels: int, teacher_channels: int, bias: bool = True):
        super().__init__()
        if student_channels < 1 or teacher_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got {student_channels} -> {teacher_channels}")
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.conv = nn.Conv3d(student_channels, teacher_channels, kernel_size=1, bias=bias)

    def forward(self, z_stu: torch.Tensor) -> torch.Tensor:
        _check_channels("student features", z_stu, self.student_channels)
        return self.conv(z_stu)


def _align(mapped_stu: torch.Tensor, f_tea: torch.Tensor, teacher_channels: int,
           resize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mapped student features and detached teacher features on one grid (``losses.match_codes``)."""
    _check_channels("teacher features", f_tea, teacher_channels)
    if mapped_stu.shape[0] != f_tea.shape[0]:
        raise ValueError(f"student batch {mapped_stu.shape[0]} and teacher batch {f_tea.shape[0]} differ")
    return match_codes(mapped_stu, f_tea.detach(), resize)


def hint_loss(connector: Connector, z_stu: torch.Tensor, f_tea: torch.Tensor, kind: str = "l2",
              resize: str = "nearest") -> torch.Tensor:
    """FitNets' hint loss MSE(C(Z_stu), F_tea) (``kind="l2"``) or VpbSD's L_mid = L1(DA(Z_stu), Z_tea)
    (``kind="l1"``), both means over all elements; F_tea is detached and brought to the student's grid."""
    if kind not in HINT_KINDS:
        raise ValueError(f"kind must be one of {HINT_KINDS}, got {kind!r}")
    s, t = _align(connector(z_stu), f_tea, connector.teacher_channels, resize)
    return F.mse_loss(s, t) if kind == "l2" else F.l1_loss(s, t)


# ---------------------------------------------------------------------------------------------------------------
# VID
# ---------------------------------------------------------------------------------------------------------------

class VIDLoss(nn.Module):
    """Variational Information Distillation: -log N(t; mu(s), diag var) up to constants, mean over elements.

    ``forward(z_stu, f_tea, resize="nearest")``; mu = 1x1x1 conv-ReLU-conv-ReLU-conv (no biases) of the student
    features, var = softplus(log_scale) + eps per teacher channel, starting at ``init_pred_var``."""

    def __init__(self, student_channels: int, teacher_channels: int, mid_channels: int | None = None,
                 init_pred_var: float = VID_INIT_PRED_VAR, eps: float = VID_EPS):
        super().__init__()
        mid_channels = teacher_channels if mid_channels is None else mid_channels
        if min(student_channels, teacher_channels, mid_channels) < 1:
            raise ValueError(f"channel counts must be >= 1, got {student_channels}, {mid_channels}, "
                             f"{teacher_channels}")
        if not init_pred_var > eps > 0:
            raise ValueError(f"need init_pred_var > eps > 0, got init_pred_var={init_pred_var}, eps={eps}")
        self.student_channels, self.teacher_channels, self.eps = student_channels, teacher_channels, eps
        self.regressor = nn.Sequential(
            nn.Conv3d(student_channels, mid_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv3d(mid_channels, mid_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv3d(mid_channels, teacher_channels, kernel_size=1, bias=False),
        )
        # inverse softplus, so that softplus(log_scale) + eps = init_pred_var at the start
        start = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), start))

    def variance(self) -> torch.Tensor:
        """Per-channel variance (teacher_channels,)."""
        return F.softplus(self.log_scale) + self.eps

    def forward(self, z_stu: torch.Tensor, f_tea: torch.Tensor, resize: str = "nearest") -> torch.Tensor:
        _check_channels("student features", z_stu, self.student_channels)
        mu, t = _align(self.regressor(z_stu), f_tea, self.teacher_channels, resize)
        var = self.variance().view(1, -1, 1, 1, 1)
        return (0.5 * ((t - mu) ** 2 / var + torch.log(var))).mean()


# ---------------------------------------------------------------------------------------------------------------
# AB
# ---------------------------------------------------------------------------------------------------------------

def ab_criterion(source: torch.Tensor, target: torch.Tensor, margin: float = AB_MARGIN,
                 reduction: str = "mean") -> torch.Tensor:
    """AB's alternative loss on aligned maps: (s + m)^2 [s > -m][t <= 0] + (s - m)^2 [s <= m][t > 0].

    ``reduction="mean"``: mean over all elements; ``"batch"``: sum / batch size (RepDistiller, before its 3/1000)."""
    if reduction not in AB_REDUCTIONS:
        raise ValueError(f"reduction must be one of {AB_REDUCTIONS}, got {reduction!r}")
    _check_logits("source", source)
    _check_same("source", source, "target", target)
    off = (source + margin) ** 2 * ((source > -margin) & (target <= 0))
    on = (source - margin) ** 2 * ((source <= margin) & (target > 0))
    per_element = off + on
    return per_element.mean() if reduction == "mean" else per_element.sum() / source.shape[0]


class ABLoss(nn.Module):
    """Activation-boundary distillation: connector (1x1x1 conv + BatchNorm3d, identity for equal widths) on the
    student features, then :func:`ab_criterion` against the detached teacher (pre-)activations.

    ``forward(z_stu, f_tea, resize="nearest")``."""

    def __init__(self, student_channels: int, teacher_channels: int, margin: float = AB_MARGIN,
                 reduction: str = "mean"):
        super().__init__()
        if student_channels < 1 or teacher_channels < 1:
            raise ValueError(f"channel counts must be >= 1, got {student_channels} -> {teacher_channels}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if reduction not in AB_REDUCTIONS:
            raise ValueError(f"reduction must be one of {AB_REDUCTIONS}, got {reduction!r}")
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.margin, self.reduction = margin, reduction
        if student_channels == teacher_channels:
            self.connector: nn.Module = nn.Identity()
        else:
            self.connector = nn.Sequential(nn.Conv3d(student_channels, teacher_channels, kernel_size=1),
                                           nn.BatchNorm3d(teacher_channels))

    def forward(self, z_stu: torch.Tensor, f_tea: torch.Tensor, resize: str = "nearest") -> torch.Tensor:
        _check_channels("student features", z_stu, self.student_channels)
        s, t = _align(self.connector(z_stu), f_tea, self.teacher_channels, resize)
        return ab_criterion(s, t, self.margin, self.reduction)


# ---------------------------------------------------------------------------------------------------------------
# Mean Teacher / UA-MT
# ---------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float = UAMT_EMA_DECAY, step: int = 0,
               copy_buffers: bool = True) -> float:
    """theta' <- a theta' + (1 - a) theta, a = min(1 - 1/(step + 1), decay) (Mean Teacher, UA-MT): a copy at
    step 0, the true average of the first steps, then the EMA.  Buffers are copied.  Returns a."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    ema_params, params = list(ema_model.parameters()), list(model.parameters())
    if len(ema_params) != len(params) or any(e.shape != p.shape for e, p in zip(ema_params, params)):
        raise ValueError("ema_model and model have different parameters (not the same architecture?)")
    ema_bufs, bufs = list(ema_model.buffers()), list(model.buffers())
    if copy_buffers and (len(ema_bufs) != len(bufs) or any(e.shape != b.shape for e, b in zip(ema_bufs, bufs))):
        raise ValueError("ema_model and model have different buffers (not the same architecture?)")
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for e, p in zip(ema_params, params):
        e.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
    if copy_buffers:
        for e, b in zip(ema_bufs, bufs):
            e.copy_(b)
    return alpha


def noisy(x: torch.Tensor, std: float = UAMT_NOISE_STD, clip: float = UAMT_NOISE_CLIP,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """x + clamp(randn * std, -clip, clip): UA-MT's teacher-input noise."""
    if std < 0 or clip < 0:
        raise ValueError(f"std and clip must be >= 0, got std={std}, clip={clip}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + torch.clamp(noise * std, -clip, clip)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between student and (detached) teacher probabilities (sigmoid / softmax).

    No mask: mean over all elements.  ``mask`` (B, 1, ...) or the logits' shape, 1 = keep: sum(mask * mse) over
    the mask's count broadcast to the logits' shape (+1e-16), UA-MT's masked mean (see module docstring)."""
    _check_logits("student_logits", student_logits)
    _check_same("student_logits", student_logits, "teacher_logits", teacher_logits)
    mse = (_probs(student_logits) - _probs(teacher_logits.detach())) ** 2
    if mask is None:
        return mse.mean()
    one_channel = (student_logits.shape[0], 1) + tuple(student_logits.shape[2:])
    if tuple(mask.shape) not in (one_channel, tuple(student_logits.shape)):
        raise ValueError(f"mask {tuple(mask.shape)} must be {one_channel} or {tuple(student_logits.shape)}")
    m = mask.to(mse.dtype).expand_as(mse)
    return (m * mse).sum() / (m.sum() + 1e-16)


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats per voxel, (B, 1, ...): Bernoulli for one channel, over the channels otherwise."""
    _check_logits("probs", probs)
    if probs.shape[1] == 1:
        return -(torch.special.xlogy(probs, probs) + torch.special.xlogy(1 - probs, 1 - probs))
    return -torch.special.xlogy(probs, probs).sum(dim=1, keepdim=True)


@torch.no_grad()
def uncertainty(ema_model_call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                passes: int = UAMT_PASSES, std: float = UAMT_NOISE_STD, clip: float = UAMT_NOISE_CLIP,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """UA-MT's uncertainty: entropy (nats) of the mean probability over ``passes`` forward passes of
    ``ema_model_call`` (input -> logits (B, C, ...)) on noisy copies of ``x``; (B, 1, ...), in [0, ln max(C, 2)]."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    total = None
    for _ in range(passes):
        logits = ema_model_call(noisy(x, std, clip, generator))
        _check_logits("teacher logits", logits)
        if logits.shape[0] != x.shape[0]:
            raise ValueError(f"teacher logits batch {logits.shape[0]} and input batch {x.shape[0]} differ")
        p = _probs(logits.float())
        total = p if total is None else total + p
    return predictive_entropy(total / passes)


def uncertainty_threshold(step: float, total: float, low: float = UAMT_THRESHOLD[0],
                          high: float = UAMT_THRESHOLD[1], classes: int = 2) -> float:
    """(low + (high - low) sigmoid_rampup(step, total)) ln(classes): UA-MT's schedule (classes = 2; also the
    binary one-channel case).  Voxels with uncertainty below it are kept."""
    if classes < 2:
        raise ValueError(f"classes must be >= 2 (a sigmoid output is 2 classes), got {classes}")
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
    return (low + (high - low) * sigmoid_rampup(step, total)) * math.log(classes)


# ---------------------------------------------------------------------------------------------------------------
# MinEnt
# ---------------------------------------------------------------------------------------------------------------

def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """ADVENT's MinEnt: mean over items and voxels of -sum_c p_c log p_c / log C, in [0, 1]; C = 2 (Bernoulli)
    for one sigmoid channel."""
    _check_logits("logits", logits)
    p, logp = _log_probs(logits)
    classes = p.shape[1]  # 2 for one sigmoid channel
    return (-(p * logp).sum(dim=1) / math.log(classes)).mean()
