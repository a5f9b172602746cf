"""Chapter 2 "VpbSD": what the notebook ``notebooks/02_vpbsd.ipynb`` calls, one function per table or figure.

Pipeline: :func:`load_data` (stand-in or VesSAP) -> :func:`pretrain_teacher` (once, on the unlabeled pool) ->
:func:`cross_validate` (per fold: fine-tune the teacher, compute its targets, train every student method of
:data:`.train.METHODS`, segment the fold's test volumes, score them) -> Tables 1-3, Figure 4, the codebook figure
and the scoreboard (:func:`record_claims`, shared verdict rules of :mod:`companion.results.verdict`).

The pieces: :mod:`.teacher`, :mod:`.codebook`, :mod:`.student`, :mod:`.losses`, :mod:`.baselines`, :mod:`.train`,
:mod:`.bench`; data in :mod:`companion.data.lightsheet`; metrics in :mod:`companion.metrics`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..chapter import ChapterRun
from ..checkpoints import CheckpointStore, TrainState, array_checksum, train_or_load
from ..results import style_table
from ..results.guards import degenerate_predictions, stalled_loss
from ..results.verdict import Verdict, all_of, threshold_verdict
from ..training import world
from . import train as tr
from .bench import count_parameters, model_cost

CHAPTER = "vpbsd"
METRICS = ["DSC", "Accuracy", "HD95", "Jaccard", "GWD", "clDice"]
LOWER_IS_BETTER = {"HD95", "GWD"}
TEACHER = "SwinUNETR (teacher)"
KD = ["Vanilla KD", "FitNets", "VID", "AB"]
SEMI = ["MT", "UA-MT", "ME"]
PAPER_PARAM_RATIO = 63.98 / 0.12  # Table 2 (facts also transcribed in the claims file)


# ----------------------------------------------------------------------------------------------- checks
def check(run: ChapterRun) -> None:
    """Fail before any long computation when the settings cannot work."""
    cfg, p = run.cfg, []
    if cfg["grid"] % 32 or cfg["grid"] < 64:
        p.append(f"grid={cfg['grid']}: the SwinUNETR teacher needs sizes divisible by 32 and at least 64 "
                 "(its deepest instance norm needs more than one voxel)")
    crop = cfg["teacher_crop"]
    if len(crop) != 3 or any(c % 32 or c > cfg["grid"] for c in crop) or max(crop) < 64:
        p.append(f"teacher_crop={crop}: three sizes divisible by 32, at most grid={cfg['grid']}, one of them >= 64")
    if cfg["teacher_features"] % 12:
        p.append(f"teacher_features={cfg['teacher_features']}: MONAI's SwinUNETR needs a multiple of 12")
    if not 2 <= cfg["folds"] <= cfg["n_labeled"]:
        p.append(f"folds={cfg['folds']} must be between 2 and n_labeled={cfg['n_labeled']}")
    elif cfg["n_labeled"] - -(-cfg["n_labeled"] // cfg["folds"]) < cfg["batch_size"]:
        p.append(f"with n_labeled={cfg['n_labeled']} and folds={cfg['folds']} a fold trains the teacher on fewer "
                 f"than batch_size={cfg['batch_size']} volumes")
    if cfg["n_unlabeled"] < cfg["batch_size"]:
        p.append(f"n_unlabeled={cfg['n_unlabeled']}: pretraining needs at least batch_size={cfg['batch_size']} "
                 "unlabeled volumes")
    if not 0 <= cfg["figure_volume"] < cfg["n_labeled"]:
        p.append(f"figure_volume={cfg['figure_volume']} is not a labeled volume (0..{cfg['n_labeled'] - 1})")
    if p:
        raise ValueError("settings of chapter vpbsd that cannot work:\n  " + "\n  ".join(p))


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    """The chapter's volumes, all preprocessed (95th-percentile clip, min-max to [0, 1]) and of one shape."""
    images: list[np.ndarray]  # labeled images, float32
    labels: list[np.ndarray]  # their vessel maps, bool
    unlabeled: list[np.ndarray]  # the unlabeled pool, float32
    ids: list[str]
    name: str
    spacing: tuple[float, float, float] | None = None  # voxel size, where known (the stand-in is isotropic)


def load_data(run: ChapterRun) -> Data:
    """The stand-in (:func:`companion.data.lightsheet.generate_lightsheet_set`: ``n_labeled`` + ``n_unlabeled``
    volumes of ``grid``^3) or, with ``data="vessap"``, the real VesSAP volumes (see :func:`load_vessap`)."""
    if run.data == "vessap":
        return load_vessap(run)
    from ..data.lightsheet import generate_lightsheet_set

    cfg = run.cfg
    s = generate_lightsheet_set(cfg["n_labeled"], cfg["n_unlabeled"], cfg["grid"], run.seed)
    data = Data([v.image for v in s.labeled], [v.label.astype(bool) for v in s.labeled],
                [v.image for v in s.unlabeled], [f"L{i:02d}" for i in range(len(s.labeled))],
                "light-sheet stand-in (companion.data.lightsheet, generated)")
    run.results.add_source("light-sheet stand-in, labeled", "generated", array_checksum(data.images + data.labels),
                           n=len(data.images), grid=cfg["grid"], seed=run.seed,
                           generator="companion.data.lightsheet.generate_lightsheet_set")
    run.results.add_source("light-sheet stand-in, unlabeled", "generated", array_checksum(data.unlabeled),
                           n=len(data.unlabeled), grid=cfg["grid"], seed=run.seed)
    return data


def load_vessap(run: ChapterRun) -> Data:
    """VesSAP (on request; ``companion data fetch vessap`` once the files are in place): the annotated volumes (the
    wheat germ agglutinin channel, as the paper) and ``n_unlabeled`` unlabeled patches, preprocessed as the paper
    says and cut to one ``grid``-sized block from each volume's corner, zero-padded along an axis shorter than
    ``grid`` (the annotated volumes have 50 slices; our choice, the paper does not say how its 64^3 patches meet
    them).  The loader's layout is the manifest's (``data_manifests/vessap.yaml``), partly unverified."""
    from ..data.lightsheet import preprocess
    from ..data.loaders import iter_samples

    g = run.cfg["grid"]
    lab = [s for s in iter_samples("vessap", split="labelled")]
    unl = [s for s in iter_samples("vessap", split="unlabelled", limit=run.cfg["n_unlabeled"])]
    if len(lab) < run.cfg["folds"]:
        raise ValueError(f"VesSAP gave {len(lab)} labeled volumes; need at least folds={run.cfg['folds']}")

    def block(a: np.ndarray) -> np.ndarray:  # zero-padded where an axis is shorter than grid (50-slice axis)
        a = np.pad(a, [(0, max(0, g - s)) for s in a.shape])
        return a[:g, :g, :g]

    data = Data([block(preprocess(s.image)) for s in lab], [block(np.asarray(s.target) > 0) for s in lab],
                [block(preprocess(s.image)) for s in unl], [str(s.case) for s in lab],
                "VesSAP (Todorov et al. 2020, manifest vessap)", tuple(lab[0].spacing) if lab[0].spacing else None)
    run.results.add_source(data.name, "manifest", array_checksum(data.images + data.labels), dataset="vessap",
                           n=len(lab), n_unlabeled=len(unl), block=g)
    return data


def data_table(run: ChapterRun, data: Data):
    """One row per labeled volume: vessel fraction and the image contrast (mean intensity inside / outside)."""
    rows = []
    for vid, img, lab in zip(data.ids, data.images, data.labels):
        rows.append({"volume": vid, "vessel fraction (%)": 100 * float(lab.mean()),
                     "mean intensity, vessel": float(img[lab].mean()),
                     "mean intensity, background": float(img[~lab].mean())})
    df = pd.DataFrame(rows).set_index("volume")
    shape = "×".join(map(str, data.images[0].shape))
    return df, run.results.table("table-data", df, f"The {len(data.images)} labeled volumes ({shape} voxels; "
                                                   f"{len(data.unlabeled)} more unlabeled), after preprocessing",
                                 data=data.name)


def figure_data(run: ChapterRun, data: Data, n: int = 3):
    """Figure 1: middle slice, a 16-slice maximum projection of the image and of the label, for ``n`` volumes."""
    import matplotlib.pyplot as plt

    n = min(n, len(data.images))
    fig, axes = plt.subplots(n, 3, figsize=(8.4, 2.9 * n), squeeze=False)
    for r in range(n):
        img, lab = data.images[r], data.labels[r]
        mid = img.shape[2] // 2
        slab = slice(max(0, mid - 8), mid + 8)
        panels = [(img[:, :, mid], "middle slice"), (img[:, :, slab].max(2), "16-slice max projection"),
                  (lab[:, :, slab].max(2), "label, same slab")]
        for c, (im, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(im.T, cmap="gray", origin="lower")
            ax.set_title(f"{data.ids[r]}: {title}", fontsize=9)
            ax.set_axis_off()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-1", fig, "Figure 1: stand-in volumes as the networks see them (preprocessed): a slice "
                                     "across the depth axis, a slab maximum projection and the ground truth",
                       data=data.name)
    return fig


def fold_splits(run: ChapterRun, data: Data) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds``-fold cross-validation over the labeled volumes (scikit-learn ``KFold``, shuffled with the run's
    seed): every labeled volume is tested exactly once."""
    from sklearn.model_selection import KFold

    kf = KFold(n_splits=run.cfg["folds"], shuffle=True, random_state=run.seed)
    return [(tr_, te) for tr_, te in kf.split(np.arange(len(data.images)))]


# ----------------------------------------------------------------------------------------------- training
def _store() -> CheckpointStore:
    return CheckpointStore(CHAPTER)


def _data_key(run: ChapterRun, data: Data) -> dict[str, Any]:
    return {"source": run.data, "n_labeled": len(data.images), "n_unlabeled": len(data.unlabeled),
            "grid": run.cfg["grid"], "seed": run.seed, "checksum": array_checksum(data.images[:1] + data.unlabeled[:1])}


def _teacher_key(run: ChapterRun, data: Data, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = run.cfg if cfg is None else cfg
    return {"data": _data_key(run, data), "features": cfg["teacher_features"], "depths": cfg["teacher_depths"],
            "codes": cfg["codebook_size"], "code_dim": cfg["student_channels"][-1], "tau": cfg["tau"],
            "crop": cfg["teacher_crop"], "batch": cfg["batch_size"], "epochs": cfg["pretrain_epochs"],
            "lr": cfg["teacher_lr"], "decay": cfg["lr_decay"], "seed": run.seed, "world_size": world()[1]}


PRETRAIN_CHANGES = ("codebook_size", "tau", "pretrain_epochs")


def pretrain_teacher(run: ChapterRun, data: Data, changes: dict[str, Any] | None = None) -> TrainState:
    """Self-supervised pretraining (Eqs. 4-6) of SwinUNETR + codebook on the unlabeled pool, once for all folds.
    ``changes``: other values of the codebook knobs ``PRETRAIN_CHANGES`` (for an exercise); the rest is the run's."""
    bad = sorted(set(changes or {}) - set(PRETRAIN_CHANGES))
    if bad:
        raise ValueError(f"changes may only set {PRETRAIN_CHANGES}, got {bad}")
    cfg = {**run.cfg, **(changes or {})}
    torch.manual_seed(run.seed)
    teacher = tr.build_teacher(cfg).to(run.device)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg["teacher_lr"])
    return train_or_load(_store(), "teacher-pretrain", _teacher_key(run, data, cfg), teacher, opt,
                         tr.pretrain_epoch(teacher, opt, data.unlabeled, cfg, run.seed, run.device),
                         cfg["pretrain_epochs"], writer=world()[0] == 0)


def finetune_teacher(run: ChapterRun, data: Data, pretrained: TrainState, fold: int,
                     train_idx: np.ndarray) -> tuple[TrainState, dict[str, Any]]:
    """Fine-tuning (Eq. 7, Dice loss) of a copy of the pretrained teacher on the fold's labeled training volumes."""
    torch.manual_seed(run.seed + 1000 + fold)
    teacher = copy.deepcopy(pretrained.model).to(run.device)
    teacher.mode = "segment"
    opt = torch.optim.Adam(teacher.parameters(), lr=run.cfg["finetune_lr"])
    key = {"pretrain": _teacher_key(run, data), "fold": fold, "train": [int(i) for i in train_idx],
           "epochs": run.cfg["finetune_epochs"], "lr": run.cfg["finetune_lr"]}
    imgs, labs = [data.images[i] for i in train_idx], [data.labels[i] for i in train_idx]
    state = train_or_load(_store(), f"teacher-finetune-fold{fold}", key, teacher, opt,
                          tr.finetune_epoch(teacher, opt, imgs, labs, run.cfg, run.seed + fold, run.device),
                          run.cfg["finetune_epochs"], writer=world()[0] == 0)
    state.model.mode = "segment"
    return state, key


def train_student(run: ChapterRun, data: Data, method: tr.Method, fold: int, train_idx: np.ndarray,
                  teacher_key: dict[str, Any], targets: "LazyTargets", teacher_channels: int) -> TrainState:
    """One student of ``method`` on the fold's (labeled, unlabeled) pairs, cached by everything that shapes it."""
    cfg = run.cfg
    torch.manual_seed(run.seed + 2000 + fold)  # the same initial student for every method of a fold
    model = tr.StudentWithExtras(method, cfg, teacher_channels).to(run.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg["student_lr"])
    key = {"method": method.name, "terms": list(method.terms), "fold": fold, "train": [int(i) for i in train_idx],
           "data": _data_key(run, data), "channels": cfg["student_channels"], "epochs": cfg["student_epochs"],
           "lr": cfg["student_lr"], "decay": cfg["lr_decay"], "beta_max": cfg["beta_max"], "seed": run.seed,
           "world_size": world()[1], "teacher": teacher_key if method.needs_teacher else None}
    imgs, labs = [data.images[i] for i in train_idx], [data.labels[i] for i in train_idx]

    loop: dict[str, Any] = {}

    def epoch(e: int) -> dict[str, float]:  # the teacher's targets are computed only when a student trains
        if "run" not in loop:
            tg = targets.get(run) if method.needs_teacher else None
            loop["run"] = tr.student_epoch(method, model, opt, imgs, labs, data.unlabeled, tg, cfg, run.seed + fold,
                                           run.device)
        return loop["run"](e)

    return train_or_load(_store(), f"student-{_slug(method.name)}-fold{fold}", key, model, opt, epoch,
                         cfg["student_epochs"], writer=world()[0] == 0, progress=False)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


@dataclass
class LazyTargets:
    """The fine-tuned teacher's targets for the fold's training volumes and the unlabeled pool, computed on first
    use (a rerun with every student cached never pays for them)."""
    teacher: torch.nn.Module
    images: list[np.ndarray]
    _value: tr.Targets | None = None

    def get(self, run: ChapterRun) -> tr.Targets:
        if self._value is None:
            self._value = tr.teacher_targets(self.teacher, self.images, run.device)
        return self._value


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def segment(model: torch.nn.Module, image: np.ndarray, device: str) -> np.ndarray:
    """Binary map of one whole volume: logits > 0 of the student (or the teacher in segment mode)."""
    model.eval()
    x = torch.from_numpy(image[None, None].astype(np.float32)).to(device)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out.out
    return (logits[0, 0] > 0).cpu().numpy()


def score(pred: np.ndarray, ref: np.ndarray, smd_points: int, spacing=None) -> dict[str, float]:
    """The six metrics of Table 1 for one volume: DSC, voxel accuracy, HD95 (MONAI; voxels, or the spacing's units
    when given), Jaccard, GWD (= Skeleton Matching Distance, :func:`companion.metrics.smd`) and clDice (Shit et
    al.)."""
    return {"DSC": metrics.dice(pred, ref), "Accuracy": metrics.voxel_accuracy(pred, ref),
            "HD95": metrics.hd95(pred, ref, spacing), "Jaccard": metrics.jaccard(pred, ref),
            "GWD": metrics.smd(pred, ref, max_points=smd_points), "clDice": metrics.cldice(pred, ref)}


@dataclass
class CV:
    """Cross-validation results: one row per (method, volume) with fold and metrics, the binary predictions, the
    training histories per (method, fold) and the teachers' parameter count."""
    per_volume: pd.DataFrame
    predictions: dict[tuple[str, str], np.ndarray] = field(repr=False)
    histories: dict[tuple[str, int], list[dict[str, float]]] = field(repr=False)
    extra_params: dict[str, int] = field(default_factory=dict)
    teacher_params: int = 0


def cross_validate(run: ChapterRun, data: Data, pretrained: TrainState, methods: list[str] | None = None) -> CV:
    """For every fold: fine-tune the teacher, train every method's student (cached), segment and score the fold's
    test volumes with each."""
    from ..progress import progress

    methods = list(tr.METHODS) if methods is None else methods
    rows, preds, hist, extra = [], {}, {}, {}
    teacher_channels = pretrained.model.bottleneck_channels
    splits = fold_splits(run, data)
    bar = progress(total=len(splits) * (len(methods) + 1), desc="folds × methods")
    for fold, (train_idx, test_idx) in enumerate(splits):
        ft, ft_key = finetune_teacher(run, data, pretrained, fold, train_idx)
        hist[(TEACHER, fold)] = ft.history
        models: dict[str, torch.nn.Module] = {TEACHER: ft.model}
        bar.update(1)
        targets = LazyTargets(ft.model, [data.images[i] for i in train_idx] + data.unlabeled)
        for name in methods:
            st = train_student(run, data, tr.METHODS[name], fold, train_idx, ft_key, targets, teacher_channels)
            models[name] = st.model.student
            hist[(name, fold)] = st.history
            extra[name] = count_parameters(st.model.extras)
            bar.update(1)
        for i in test_idx:
            for name, model in models.items():
                pred = segment(model, data.images[i], run.device)
                preds[(name, data.ids[i])] = pred
                rows.append({"method": name, "volume": data.ids[i], "fold": fold,
                             **score(pred, data.labels[i], run.cfg["smd_points"], data.spacing)})
    bar.close()
    return CV(pd.DataFrame(rows), preds, hist, extra, count_parameters(pretrained.model))


# ----------------------------------------------------------------------------------------------- tables
def fold_summary(per_volume: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over folds of the per-fold means (the paper's "mean ± sd" over five folds)."""
    per_fold = per_volume.groupby(["method", "fold"])[METRICS].mean()
    mean, sd = per_fold.groupby("method").mean(), per_fold.groupby("method").std(ddof=1)
    out = mean.copy()
    for m in METRICS:
        out[f"{m} sd"] = sd[m]
    return out


def _pm(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{mean:.3f}"


def _side_by_side(run: ChapterRun, table: str, summary: pd.DataFrame, rows: list[str]) -> tuple[pd.DataFrame, Any]:
    rep = summary.reindex(rows)
    rep.index.name = "method"
    side = run.results.paper_table(table, rep[METRICS + [f"{m} sd" for m in METRICS]])
    show = []
    for method in side.index:
        for src, tag in (("paper", "paper"), ("ours", "reproduced")):
            show.append({"method": method, "source": src,
                         **{m: _pm(side.at[method, f"{m} ({tag})"], side.at[method, f"{m} sd ({tag})"])
                            for m in METRICS}})
    return side, pd.DataFrame(show).set_index(["method", "source"])


def teacher_text(run: ChapterRun, params: int) -> str:
    """The teacher's size as every caption states it."""
    return (f"teacher SwinUNETR feature size {run.cfg['teacher_features']} ({params / 1e6:.1f} M parameters; the "
            f"paper's: 48, 63.98 M)")


def _scale_note(run: ChapterRun, data: Data, cv: CV) -> str:
    cfg = run.cfg
    return (f"ours: {cfg['folds']}-fold cross-validation over {len(data.images)} labeled {cfg['grid']}³ volumes "
            f"(+{len(data.unlabeled)} unlabeled), mean ± sd over folds; {teacher_text(run, cv.teacher_params)}, "
            f"students trained {cfg['student_epochs']} epochs; HD95 and GWD in voxels, lower is better")


def table_1(run: ChapterRun, data: Data, cv: CV):
    """Table 1: the nine methods, paper beside ours."""
    side, show = _side_by_side(run, "1", fold_summary(cv.per_volume), tr.TABLE1)
    cap = f"Table 1: the supervised baseline, four KD and three semi-supervised methods, and VpbSD; {_scale_note(run, data, cv)}"
    run.results.table("table-1", side, cap, data=data.name)
    return side, style_table(show, f"table-1: {run.results.caption(cap, data.name)}")


def table_3(run: ChapterRun, data: Data, cv: CV):
    """Table 3: the ablation, with the teacher on top."""
    rows = [TEACHER] + tr.ABLATION
    side, show = _side_by_side(run, "3", fold_summary(cv.per_volume), rows)
    cap = (f"Table 3: ablation of VpbSD's loss terms (L_semi: Dice to the teacher's pseudo labels; L_dis: L1 to "
           f"its codebook output; L_mid: L1 to its plain deep features through a 1×1×1 alignment); "
           f"{_scale_note(run, data, cv)}")
    run.results.table("table-3", side, cap, data=data.name)
    return side, style_table(show, f"table-3: {run.results.caption(cap, data.name)}")


def cost_benchmark(run: ChapterRun) -> pd.DataFrame:
    """Parameters, FLOPs (2 per multiply-add) and ms per 64³ block (batch 1, no_grad, median of ``bench_repeats``)
    on this machine, all models measured side by side in this one call: the teacher at each of
    ``bench_feature_sizes`` (48 is the paper's), ours as trained, MONAI's UNETR and the student."""
    from monai.networks.nets import UNETR

    from ..progress import progress
    from .student import VpbStudent
    from .teacher import VpbTeacher

    cfg = run.cfg
    models: dict[str, torch.nn.Module] = {}
    for f in cfg["bench_feature_sizes"]:
        models[f"SwinUNETR teacher, feature size {f}"] = VpbTeacher(feature_size=f, code_dim=cfg["student_channels"][-1],
                                                                    n_codes=cfg["codebook_size"], mode="segment")
    if cfg["bench_unetr"]:
        models["UNETR (MONAI defaults)"] = UNETR(in_channels=1, out_channels=1, img_size=64)
    models["light UNet student"] = VpbStudent(channels=tuple(cfg["student_channels"]))
    rows = []
    for name, m in progress(models.items(), desc="cost per 64³ block"):
        c = model_cost(m.to(run.device), 64, repeats=cfg["bench_repeats"], warmup=1)
        rows.append({"model": name, "Params (M)": c["params_M"], "GFLOPs": c["GFLOPs"], "GMACs": c["GMACs"],
                     "Time (ms)": c["ms"]})
        del m
    return pd.DataFrame(rows).set_index("model")


def table_2(run: ChapterRun, data: Data, cv: CV, cost: pd.DataFrame):
    """Table 2: cost beside segmentation quality.  Rows: the paper-size teacher and UNETR (cost only: not trained
    at this scale), our teacher (cost and quality) and the FitNets, VID and VpbSD students (quality from Table 1;
    parameters counting the modules a method trains, time of the deployed student)."""
    summary = fold_summary(cv.per_volume)
    student = cost.loc["light UNet student"]
    rows: dict[str, dict[str, float]] = {}
    ours_f = run.cfg["teacher_features"]
    for name in cost.index:
        if name.startswith("SwinUNETR"):
            f = int(name.rsplit(" ", 1)[1])
            label = "SwinUNETR" if f == 48 else f"SwinUNETR, feature size {f}"
            rows[label] = cost.loc[name].to_dict()
            if f == ours_f:
                rows[label].update(summary.loc[TEACHER, ["DSC", "HD95", "GWD", "clDice"]].to_dict())
        elif name.startswith("UNETR"):
            rows["UNETR"] = cost.loc[name].to_dict()
    for method in ("FitNets", "VID", "VpbSD"):
        rows[method] = {**student.to_dict(), **summary.loc[method, ["DSC", "HD95", "GWD", "clDice"]].to_dict()}
        rows[method]["Params (M)"] = student["Params (M)"] + cv.extra_params.get(method, 0) / 1e6
    rep = pd.DataFrame(rows).T
    rep.index.name = "model"
    side = run.results.paper_table("2", rep[["DSC", "HD95", "GWD", "clDice", "GFLOPs", "GMACs", "Params (M)",
                                             "Time (ms)"]])
    side = side.drop(columns=["GMACs (paper)"])
    note = {"UNETR": "cost only: not trained at this scale (98 M parameters)",
            "SwinUNETR": "cost only: the paper's size; ours is trained at the feature size named in its row"
            if ours_f != 48 else "our teacher"}
    side["note"] = [note.get(i, "") for i in side.index]
    cap = (f"Table 2: parameters, FLOPs (2 per multiply-add; GMACs = half) and CPU time per 64³ block (batch 1, "
           f"median of {run.cfg['bench_repeats']}, this machine; the paper's times are on an A100, and its "
           f"'GFLOPs' match our GMACs) beside the quality columns of Table 1 (DSC, HD95, GWD, clDice, mean over "
           f"folds); students' parameters include the modules their method trains (FitNets' connector, VID's "
           f"regressor), their time is the deployed student's; the quality of our teacher (feature size {ours_f}) "
           f"stands in its row")
    run.results.table("table-2", side, cap, data=data.name, hide=("note",))
    show = pd.DataFrame(index=side.index)  # narrow enough for the page; every column is in the results file
    show["DSC, paper"], show["DSC, ours"] = side["DSC (paper)"], side["DSC (reproduced)"]
    show["GFLOPs, paper"], show["GMACs, ours"] = side["GFLOPs (paper)"], side["GMACs (reproduced)"]
    show["Params (M), paper"], show["Params (M), ours"] = side["Params (M) (paper)"], side["Params (M) (reproduced)"]
    show["ms, paper"], show["ms, ours"] = side["Time (ms) (paper)"], side["Time (ms) (reproduced)"]
    return side, style_table(show, f"table-2: {run.results.caption(cap, data.name)} (shown: DSC, the paper's "
                                   f"GFLOPs beside our GMACs, parameters and ms per block; clDice, HD95, GWD and "
                                   f"our GFLOPs are in the results file)")


# ----------------------------------------------------------------------------------------------- figures
def figure_4(run: ChapterRun, data: Data, cv: CV, methods: tuple[str, ...] = ("Light UNet", "Vanilla KD", "FitNets",
                                                                              "UA-MT", "ME", "VpbSD", TEACHER),
             volumes: int = 2):
    """Figure 4: a middle slice of ``volumes`` test volumes, true positives green, false negatives blue, false
    positives red, for several methods."""
    import matplotlib.pyplot as plt

    start = run.cfg["figure_volume"]
    vids = [data.ids[(start + k) % len(data.ids)] for k in range(min(volumes, len(data.ids)))]
    fig, axes = plt.subplots(len(vids), len(methods) + 2, figsize=(1.75 * (len(methods) + 2), 2.0 * len(vids) + 0.4),
                             squeeze=False)
    for r, vid in enumerate(vids):
        i = data.ids.index(vid)
        img, lab = data.images[i], data.labels[i]
        z = img.shape[2] // 2
        axes[r, 0].imshow(img[:, :, z].T, cmap="gray", origin="lower")
        axes[r, 1].imshow(lab[:, :, z].T, cmap="gray", origin="lower")
        axes[r, 0].set_title(f"{vid}: image", fontsize=8)
        axes[r, 1].set_title("label", fontsize=8)
        for c, m in enumerate(methods):
            p = cv.predictions[(m, vid)][:, :, z]
            g = lab[:, :, z]
            rgb = np.zeros(p.shape + (3,))
            rgb[p & g] = (0.1, 0.8, 0.2)
            rgb[~p & g] = (0.2, 0.4, 1.0)
            rgb[p & ~g] = (1.0, 0.15, 0.15)
            ax = axes[r, c + 2]
            ax.imshow(np.transpose(rgb, (1, 0, 2)), origin="lower")
            dsc = cv.per_volume.query("method == @m and volume == @vid")["DSC"].iloc[0]
            ax.set_title(f"{m.replace(' (teacher)', '')}\nDSC {dsc:.2f}", fontsize=8)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-4", fig, "Figure 4: middle slice of two test volumes; green true positives, blue "
                                     "missed vessel (false negatives), red over-segmentation (false positives); "
                                     f"each panel's DSC is over the whole volume; {teacher_text(run, cv.teacher_params)}",
                       data=data.name)
    return fig


def codebook_usage(run: ChapterRun, data: Data, pretrained: TrainState) -> dict[str, Any]:
    """The pretrained teacher's nearest-code usage over the labeled volumes (eval mode)."""
    return tr.teacher_usage(pretrained.model, data.images, run.device)


def figure_codebook(run: ChapterRun, data: Data, pretrained: TrainState, usage: dict[str, Any]):
    """Codebook usage (beyond the paper): perplexity and codes used per pretraining epoch (Gumbel samples), and how
    often each code is the nearest on the labeled volumes."""
    import matplotlib.pyplot as plt

    h = pd.DataFrame(pretrained.history)
    n = pretrained.model.codebook.n_codes
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    a.plot(h["epoch"] + 1, h["perplexity"], "o-", label="perplexity")
    a.plot(h["epoch"] + 1, h["codes used"], "s--", label="codes used")
    a.axhline(n, color="0.6", lw=0.8)
    a.set_xlabel("pretraining epoch")
    a.set_ylabel(f"codes (of N = {n})")
    a.legend(fontsize=8)
    a.set_title("(a) usage during pretraining", fontsize=9)
    freq = np.sort(usage["freq"].numpy())[::-1]
    b.bar(np.arange(1, n + 1), 100 * freq, color="tab:purple")
    b.set_xlabel("code rank")
    b.set_ylabel("share of selections (%)")
    b.set_title(f"(b) nearest codes on the labeled volumes: perplexity {usage['perplexity']:.1f}, "
                f"{usage['used']} used;\n{100 * usage['position_share']:.0f} % pick their position's usual code",
                fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    run.results.figure("fig-codebook", fig, f"Codebook usage of the pretrained teacher (N = {n} codes of "
                                            f"{run.cfg['student_channels'][-1]} dimensions; "
                                            f"{teacher_text(run, count_parameters(pretrained.model))}): collapse "
                                            f"would show as a perplexity near 1", data=data.name)
    return fig


def figure_training(run: ChapterRun, cv: CV, fold: int = 0):
    """Training loss per epoch of every student of one fold (total loss, each method's own terms)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for name in tr.METHODS:
        h = cv.histories.get((name, fold))
        if h:
            ax.plot([e["epoch"] + 1 for e in h], [e["seg"] for e in h], label=name, lw=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("supervised Dice loss")
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    run.results.figure("fig-training", fig, f"Supervised Dice loss of every student on its labeled item, fold "
                                            f"{fold} (each method also has its own terms); distilling methods learn "
                                            f"from the {teacher_text(run, cv.teacher_params)}")
    return fig


# ----------------------------------------------------------------------------------------------- claims
def guards(cv: CV, names: list[str]) -> list[str | None]:
    """Degeneracy findings for ``names``: mostly empty/full predictions, or a training loss that never moved."""
    out: list[str | None] = []
    for n in names:
        out.append(degenerate_predictions([p for (m, _), p in cv.predictions.items() if m == n], n))
        for (m, fold), h in cv.histories.items():  # the supervised Dice part: every method has it, unramped
            if m == n and len(h) >= 2:
                out.append(stalled_loss([e.get("seg", e["loss"]) for e in h], f"{n} (fold {fold})"))
    return out


def convergence(run: ChapterRun, cv: CV, names: list[str]) -> list:
    """Record each trained model's loss per epoch and fold (``curves.json``) and check its convergence
    (:func:`companion.results.convergence.converged`) on the supervised Dice loss, the term every method has
    unramped (the total moves with each method's ramped terms); no validation loss is computed."""
    return [run.results.training_curve(f"{m} (fold {fold})", train=[e.get("seg", e["loss"]) for e in h])
            for (m, fold), h in sorted(cv.histories.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])) if m in names]


def compare(run: ChapterRun, claim: str, cv: CV, a: str, b: str, metric: str, better: str | None = None) -> Verdict:
    """``a`` vs ``b`` on ``metric`` over the test volumes (each tested once across the folds), by
    :meth:`companion.results.Results.compare`: the claim's margin, one training run per model (at most
    indicative), convergence from the loss curves."""
    pv = cv.per_volume.pivot(index="volume", columns="method", values=metric)
    better = better or ("lower" if metric in LOWER_IS_BETTER else "higher")
    return run.results.compare(claim, pv[a].to_numpy(), pv[b].to_numpy(), better=better, names=(a, b),
                               metric=metric, guards=guards(cv, [a, b]), convergence=convergence(run, cv, [a, b]))


def record_claims(run: ChapterRun, cv: CV, cost: pd.DataFrame, usage: dict[str, Any]) -> pd.DataFrame:
    """Every claim of the claims file, decided by the shared verdict rules."""
    r = run.results
    s = fold_summary(cv.per_volume)

    def means(names, cols=("DSC", "clDice")):
        return {f"{n} {c}": float(s.at[n, c]) for n in names for c in cols}

    for cid, others in (("vpbsd-above-kd", KD), ("vpbsd-above-semi", SEMI), ("vpbsd-above-baseline",
                                                                             ["Light UNet"])):
        r.record(cid, reproduced=means(["VpbSD"] + others),
                 verdict=all_of([compare(run, cid, cv, "VpbSD", o, m) for o in others for m in ("DSC", "clDice")]))
    for cid, a, b in (("ablation-dis-helps", "VpbSD", "VpbSD w/o L_dis"),
                      ("ablation-semi-helps", "VpbSD", "VpbSD w/o L_semi"),
                      ("pattern-beats-plain-features", "VpbSD w/o L_semi", "Baseline + L_mid"),
                      ("teacher-above-student", TEACHER, "Light UNet")):
        r.record(cid, reproduced=means([a, b], ("DSC",)), verdict=compare(run, cid, cv, a, b, "DSC"))
    big = [i for i in cost.index if i.endswith("feature size 48")]
    stu = cost.loc["light UNet student"]
    if big:
        t = cost.loc[big[0]]
        ratio_t, ratio_p = float(t["Time (ms)"] / stu["Time (ms)"]), float(t["Params (M)"] / stu["Params (M)"])
        r.record("student-faster-than-teacher",
                 reproduced={"teacher ms": float(t["Time (ms)"]), "student ms": float(stu["Time (ms)"]),
                             "ratio": ratio_t},
                 verdict=threshold_verdict(ratio_t, ">=", 9, what="teacher/student time per 64³ block (CPU)"))
        r.record("student-fewer-params",
                 reproduced={"teacher params (M)": float(t["Params (M)"]), "student params (M)":
                             float(stu["Params (M)"]), "ratio": ratio_p},
                 verdict=threshold_verdict(ratio_p, ">=", round(0.9 * PAPER_PARAM_RATIO),
                                           what="teacher/student parameter ratio"))
        r.record("student-cpu-budget", reproduced={"student ms": float(stu["Time (ms)"]), "speed-up": ratio_t},
                 verdict=all_of([threshold_verdict(float(stu["Time (ms)"]), "<=", 15, what="student ms per 64³ "
                                                                                            "block"),
                                 threshold_verdict(ratio_t, ">=", 100, what="teacher/student time ratio")]))
    else:
        why = (f"not measured: the paper-size teacher (feature size 48) is not benchmarked at scale {run.scale} "
               f"(bench_feature_sizes {run.cfg['bench_feature_sizes']})")
        for cid in ("student-faster-than-teacher", "student-fewer-params", "student-cpu-budget"):
            r.record(cid, reproduced=None, reason=why)
    r.record("codebook-in-use", reproduced={"perplexity": usage["perplexity"], "codes used": usage["used"],
                                            "codebook size": int(len(usage["counts"]))},
             verdict=threshold_verdict(usage["perplexity"], ">=", 2, what="perplexity of the nearest codes"))
    r.record("codes-follow-content", reproduced={"position share": usage["position_share"]},
             verdict=threshold_verdict(usage["position_share"], "<", 0.9,
                                       what="share of positions that pick their position's usual code"))
    return r.scoreboard()
