"""Training of chapter 2: teacher pretraining and fine-tuning, the teacher's distillation targets, and one student
loop for VpbSD, its ablations and every baseline of Table 1 -- plain PyTorch, the same under torchrun.

Under torchrun: ``python -m companion.vpbsd`` (:mod:`companion.vpbsd.__main__`).

Paper facts (Section 4.1.3)
    * Adam with an exponentially decaying learning rate; 64^3 patches, batch 2; teacher pretraining 80 epochs at
      lr 1e-3, fine-tuning 30 epochs at 1e-5; every distillation experiment 300 epochs at 1e-2.
    * "All knowledge distillation algorithms utilized the same architecture for both teacher and student models,
      while semi-supervised methods relied on a uniform student model architecture"; the original settings of each
      baseline were kept where given, learning rate, epochs and batch size shared otherwise.

Our choices
    * A student batch is one *pair*: one labeled training volume and one unlabeled volume (batch 2, as the paper);
      an epoch visits every labeled training volume once (seeded order), the unlabeled volumes cycling.  Every
      method -- supervised, KD, semi-supervised, VpbSD and its ablations -- sees exactly these batches for the same
      number of steps with the same optimiser and schedule: the supervised baseline simply has no term for the
      unlabeled item.  Supervised terms use the labeled item, semi-supervised terms the unlabeled one, and the
      distillation terms (KD, FitNets, VID, AB, L_dis, L_mid) both, since they need no label.
    * Whole volumes, no augmentation: the teacher's targets (logits, pseudo labels, codes, deep features) are
      computed once per fold for every training volume (:func:`teacher_targets`), so a student step costs no
      teacher pass.  The teacher itself trains on random crops (``teacher_crop``) to fit the CPU budget.
    * The learning rate decays exponentially from ``lr`` to ``lr * lr_decay`` over the run (set at each epoch,
      so a resumed run follows the same schedule); the paper gives no decay rate.
    * The ramps (VpbSD's beta, the MT / UA-MT consistency weight and UA-MT's uncertainty threshold) run over the
      whole student training, as UA-MT's reference code ramps over its whole run.
    * Baseline weights are their published defaults (:mod:`.baselines`); the supervised term is the Dice loss of
      the baseline light UNet for every method (the papers' cross-entropy terms become Dice, so the supervised part
      is identical across methods).  Two departures, both ours: AB's term (weight 1) acts through the whole run,
      where RepDistiller uses it only in a 30-epoch initialisation stage before plain training; FitNets' connector
      is a 1x1x1 convolution without RepDistiller's BatchNorm and ReLU (so it also serves as L_mid's DA).
    * Every distillation term compares the student's bottleneck Z_stu (1/16 of the input) with the teacher's deepest
      map (1/32), nearest-upsampled to the student's grid (:func:`.losses.match_codes`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..training import epoch_batches, run_epoch, wrap_distributed
from . import baselines as bl
from .codebook import code_usage
from .losses import GAMMA, beta_at, finetune_loss, pretrain_loss, sigmoid_rampup, student_loss
from .student import VpbStudent
from .teacher import VpbTeacher, pseudo_labels

#: what each student term needs from the teacher
TEACHER_TERMS = {"semi", "dis", "mid", "fitnets", "vid", "ab", "kd"}


@dataclass(frozen=True)
class Method:
    """One row of Tables 1 and 3: the student's loss terms besides the supervised Dice loss.

    Terms: ``semi`` beta Dice(Y_stu, Y_pse) (VpbSD's L_semi), ``dis`` gamma L1(Z_stu, Z'_tea) (L_dis), ``mid``
    gamma L1(DA(Z_stu), Z_tea) (the ablation's L_mid), ``kd`` vanilla KD, ``fitnets``, ``vid``, ``ab``, ``mt``
    (Mean Teacher), ``uamt`` (UA-MT), ``entropy`` (ADVENT's entropy minimisation, "ME")."""
    name: str
    family: str
    terms: tuple[str, ...] = ()

    @property
    def needs_teacher(self) -> bool:
        return bool(TEACHER_TERMS & set(self.terms))


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("Light UNet", "supervised baseline"),
    Method("Vanilla KD", "knowledge distillation", ("kd",)),
    Method("FitNets", "knowledge distillation", ("fitnets",)),
    Method("VID", "knowledge distillation", ("vid",)),
    Method("AB", "knowledge distillation", ("ab",)),
    Method("MT", "semi-supervised", ("mt",)),
    Method("UA-MT", "semi-supervised", ("uamt",)),
    Method("ME", "semi-supervised", ("entropy",)),
    Method("VpbSD", "VpbSD", ("semi", "dis")),
    Method("VpbSD w/o L_dis", "ablation", ("semi",)),
    Method("VpbSD w/o L_semi", "ablation", ("dis",)),
    Method("Baseline + L_mid", "ablation", ("mid",)),
    Method("Baseline + L_semi + L_mid", "ablation", ("semi", "mid")),
]}
TABLE1 = ["Light UNet", "Vanilla KD", "FitNets", "VID", "AB", "MT", "UA-MT", "ME", "VpbSD"]
ABLATION = ["Light UNet", "VpbSD w/o L_dis", "VpbSD w/o L_semi", "Baseline + L_mid", "Baseline + L_semi + L_mid",
            "VpbSD"]


# ----------------------------------------------------------------------------------------------- helpers
def set_lr(optimizer: torch.optim.Optimizer, lr: float, decay: float, epoch: int, epochs: int) -> float:
    """lr * decay**(epoch / epochs): exponential decay from ``lr`` to ``lr * decay`` over the run."""
    value = lr * decay ** (epoch / max(epochs, 1))
    for g in optimizer.param_groups:
        g["lr"] = value
    return value


def random_crop(arrays: list[np.ndarray], shape: tuple[int, int, int], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``shape`` crop of every array of ``arrays`` (equal spatial shapes)."""
    full = arrays[0].shape
    if any(s > f for s, f in zip(shape, full)):
        raise ValueError(f"crop {shape} larger than the volume {full}")
    start = [int(rng.integers(0, f - s + 1)) for s, f in zip(shape, full)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, shape))
    return [a[sl] for a in arrays]


def _tensor(arrays: list[np.ndarray], device: str) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32)).to(device)


# ----------------------------------------------------------------------------------------------- teacher
def build_teacher(cfg: dict[str, Any]) -> VpbTeacher:
    return VpbTeacher(feature_size=cfg["teacher_features"], code_dim=cfg["student_channels"][-1],
                      n_codes=cfg["codebook_size"], tau=cfg["tau"], depths=tuple(cfg["teacher_depths"]))


def pretrain_epoch(teacher: VpbTeacher, optimizer: torch.optim.Optimizer, images: list[np.ndarray],
                   cfg: dict[str, Any], seed: int, device: str) -> Callable[[int], dict[str, float]]:
    """``run(epoch)``: one epoch of L_pre = MSE(X, X') + alpha L_cb on random crops of the unlabeled volumes, plus
    the epoch's codebook usage (perplexity and codes used, over every hard selection of the epoch)."""
    model = wrap_distributed(teacher, find_unused=True)  # the segmentation head is idle while pretraining
    chosen: list[torch.Tensor] = []

    def loss_of(idx: list[int], rng: np.random.Generator):
        x = _tensor([random_crop([images[i]], tuple(cfg["teacher_crop"]), rng)[0] for i in idx], device)
        teacher.mode = "reconstruct"
        out = model(x)
        chosen.append(out.codebook.indices.detach().cpu())
        return pretrain_loss(out.out, x, out.codebook.loss)

    def run(epoch: int) -> dict[str, float]:
        chosen.clear()
        set_lr(optimizer, cfg["teacher_lr"], cfg["lr_decay"], epoch, cfg["pretrain_epochs"])
        stats = run_epoch(model, optimizer, len(images), cfg["batch_size"], seed, epoch, loss_of)
        use = code_usage(torch.cat([c.reshape(-1) for c in chosen]), teacher.codebook.n_codes)
        return {**stats, "perplexity": use["perplexity"], "codes used": float(use["used"])}

    return run


def finetune_epoch(teacher: VpbTeacher, optimizer: torch.optim.Optimizer, images: list[np.ndarray],
                   labels: list[np.ndarray], cfg: dict[str, Any], seed: int, device: str
                   ) -> Callable[[int], dict[str, float]]:
    """``run(epoch)``: one epoch of the Dice loss (Eq. 7) on random crops of the labeled training volumes."""
    model = wrap_distributed(teacher, find_unused=True)  # the reconstruction head is idle while fine-tuning

    def loss_of(idx: list[int], rng: np.random.Generator):
        pairs = [random_crop([images[i], labels[i]], tuple(cfg["teacher_crop"]), rng) for i in idx]
        x, y = _tensor([p[0] for p in pairs], device), _tensor([p[1] for p in pairs], device)
        teacher.mode = "segment"
        loss = finetune_loss(model(x).out, y)
        return loss, {"loss": float(loss.detach())}

    def run(epoch: int) -> dict[str, float]:
        set_lr(optimizer, cfg["finetune_lr"], cfg["lr_decay"], epoch, cfg["finetune_epochs"])
        return run_epoch(model, optimizer, len(images), cfg["batch_size"], seed, epoch, loss_of)

    return run


@dataclass
class Targets:
    """What the frozen, fine-tuned teacher gives the students for each training volume (CPU tensors, one per
    volume, batch axis kept): segmentation logits, hard pseudo labels, codebook output Z'_tea and the deep
    features before the codebook."""
    logits: list[torch.Tensor] = field(default_factory=list)
    pseudo: list[torch.Tensor] = field(default_factory=list)
    codes: list[torch.Tensor] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def teacher_targets(teacher: VpbTeacher, images: list[np.ndarray], device: str) -> Targets:
    """One segment-mode, eval-mode pass of the teacher per volume (nearest codes, no Gumbel noise)."""
    teacher.eval()
    mode, teacher.mode = teacher.mode, "segment"
    out = Targets()
    try:
        for img in images:
            res = teacher(_tensor([img], device))
            out.logits.append(res.out.cpu())
            out.pseudo.append(pseudo_labels(res.out).cpu())
            out.codes.append(res.codebook.codes.cpu())
            out.features.append(res.features.cpu())
    finally:
        teacher.mode = mode
    return out


@torch.no_grad()
def teacher_usage(teacher: VpbTeacher, images: list[np.ndarray], device: str) -> dict[str, Any]:
    """Codebook usage of the eval-mode teacher (nearest codes) over ``images``: :func:`.codebook.code_usage` plus
    :func:`position_share`."""
    teacher.eval()
    idx = torch.stack([teacher(_tensor([img], device)).codebook.indices.reshape(-1).cpu() for img in images])
    return {**code_usage(idx, teacher.codebook.n_codes), "position_share": position_share(idx)}


def position_share(indices: torch.Tensor) -> float:
    """Share of (volume, position) pairs whose code is the code most often chosen at that position across the
    volumes; ``indices`` is (volumes, positions).  1 means the code is fixed by the position alone (it says where,
    not what); with codes that follow the content it falls towards 1 / volumes."""
    if indices.ndim != 2 or indices.shape[0] < 2:
        raise ValueError(f"need (volumes >= 2, positions) code indices, got shape {tuple(indices.shape)}")
    modal = torch.mode(indices, dim=0).values
    return float((indices == modal[None]).float().mean())


# ----------------------------------------------------------------------------------------------- students
class StudentWithExtras(torch.nn.Module):
    """The light UNet plus the trainable modules a method adds for training only (FitNets' and L_mid's connector,
    VID's regressor, AB's connector); they are dropped at inference, so every method's deployed model is the same
    0.12 M-parameter student."""

    def __init__(self, method: Method, cfg: dict[str, Any], teacher_channels: int):
        super().__init__()
        s = cfg["student_channels"][-1]
        self.student = VpbStudent(channels=tuple(cfg["student_channels"]))
        extras: dict[str, torch.nn.Module] = {}
        if "fitnets" in method.terms:
            extras["fitnets"] = bl.Connector(s, teacher_channels)
        if "mid" in method.terms:
            extras["mid"] = bl.Connector(s, teacher_channels)
        if "vid" in method.terms:
            extras["vid"] = bl.VIDLoss(s, teacher_channels)
        if "ab" in method.terms:
            extras["ab"] = bl.ABLoss(s, teacher_channels)
        self.extras = torch.nn.ModuleDict(extras)
        #: Mean Teacher / UA-MT: the EMA copy of the student (no gradients; saved with the checkpoint)
        self.ema: torch.nn.Module | None = None
        if {"mt", "uamt"} & set(method.terms):
            self.ema = copy.deepcopy(self.student).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(x)


def student_epoch(method: Method, model: StudentWithExtras, optimizer: torch.optim.Optimizer,
                  labeled: list[np.ndarray], labels: list[np.ndarray], unlabeled: list[np.ndarray],
                  targets: Targets | None, cfg: dict[str, Any], seed: int, device: str
                  ) -> Callable[[int], dict[str, float]]:
    """``run(epoch)``: one epoch of ``method``'s student loss over (labeled, unlabeled) pairs.  ``targets`` holds
    the teacher's outputs for ``labeled + unlabeled`` in that order (None for teacher-free methods)."""
    if method.needs_teacher and targets is None:
        raise ValueError(f"{method.name} needs the teacher's targets")
    ema = model.ema
    ddp = wrap_distributed(model)
    n_lab, n_unl = len(labeled), len(unlabeled)
    epochs = cfg["student_epochs"]
    per_epoch = len(epoch_batches(n_lab, 1, 0, seed))  # this rank's steps per epoch
    total = epochs * per_epoch
    step = {"n": 0}
    w = bl.REPDISTILLER_WEIGHTS
    y_all = _tensor(labels, device)

    def loss_of(idx: list[int], rng: np.random.Generator):
        i = idx[0]
        t = step["n"]
        j = (t + seed) % n_unl
        x = _tensor([labeled[i], unlabeled[j]], device)
        is_lab = torch.tensor([True, False], device=device)
        y_gt = torch.cat([y_all[i:i + 1], torch.zeros_like(y_all[i:i + 1])])
        logits, z = ddp(x)
        tg = {}
        if targets is not None:
            for name in ("logits", "pseudo", "codes", "features"):
                vals = getattr(targets, name)
                tg[name] = torch.cat([vals[i], vals[n_lab + j]]).to(device)
        beta = beta_at(t, total, cfg["beta_max"]) if "semi" in method.terms else 0.0
        seg_weight = w["kd"]["gamma"] if "kd" in method.terms else 1.0
        loss, info = student_loss(logits, z, y_gt=y_gt, y_pse=tg.get("pseudo"), z_tea=tg.get("codes"),
                                  labeled=is_lab, beta=beta, gamma=GAMMA if "dis" in method.terms else 0.0)
        loss = seg_weight * loss  # vanilla KD's published split (0.1 supervised, 0.9 KD); KD has no semi/dis term
        extra = loss.new_zeros(())
        if "kd" in method.terms:
            extra = extra + w["kd"]["alpha"] * bl.kd_loss(logits, tg["logits"], bl.KD_TEMPERATURE)
        if "fitnets" in method.terms:
            extra = extra + w["fitnet"]["beta"] * bl.hint_loss(model.extras["fitnets"], z, tg["features"], kind="l2")
        if "mid" in method.terms:
            extra = extra + GAMMA * bl.hint_loss(model.extras["mid"], z, tg["features"], kind="l1")
        if "vid" in method.terms:
            extra = extra + w["vid"]["beta"] * model.extras["vid"](z, tg["features"])
        if "ab" in method.terms:
            extra = extra + w["ab"]["beta"] * model.extras["ab"](z, tg["features"])
        if {"mt", "uamt"} & set(method.terms):
            gen = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + t)
            with torch.no_grad():
                ema_logits = ema(bl.noisy(x, generator=gen))[0]
            mask = None
            if "uamt" in method.terms:
                unc = bl.uncertainty(lambda v: ema(v)[0], x, passes=bl.UAMT_PASSES, generator=gen)
                mask = (unc < bl.uncertainty_threshold(t, total)).to(logits.dtype)
            extra = extra + bl.UAMT_CONSISTENCY * sigmoid_rampup(t, total) * bl.consistency_loss(
                logits, ema_logits, mask)
        if "entropy" in method.terms:
            extra = extra + bl.LAMBDA_ENT * bl.entropy_loss(logits[~is_lab])
        loss = loss + extra
        step["n"] += 1
        return loss, {"loss": float(loss.detach()), "seg": info["seg"], "extra": float(extra.detach()),
                      "beta": beta}

    def ema_step() -> None:  # Mean Teacher's order: the student steps, then its EMA copy follows
        bl.ema_update(ema, model.student, bl.UAMT_EMA_DECAY, step["n"] - 1)

    def run(epoch: int) -> dict[str, float]:
        step["n"] = epoch * per_epoch
        set_lr(optimizer, cfg["student_lr"], cfg["lr_decay"], epoch, epochs)
        return run_epoch(ddp, optimizer, n_lab, 1, seed, epoch, loss_of, ema_step if ema is not None else None)

    return run
