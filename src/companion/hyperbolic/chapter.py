"""Chapter 3 "Hyperbolic 3D VAE": what ``notebooks/03_hyperbolic.ipynb`` calls, one function per table or figure.

Pipeline: :func:`load_synthetic` and :func:`load_brain` (offline stand-ins, or MSD / BraTS for the brain) ->
:func:`evaluate_synthetic` (train every method of Tables 1-2 once, cached; encode, cluster and score every test
volume at the three levels) -> Tables 1-2, Figure 2, the Poincaré-disk figure -> :func:`evaluate_brain` (the
unsupervised methods and the sparse-label U-Net on the brain volumes) -> Tables 3-4, Figure 3 -> the scoreboard
(:func:`record_claims`, shared verdict rules of :mod:`companion.results.verdict`).

The pieces: :mod:`.model`, :mod:`.patches`, :mod:`.train`, :mod:`.segment`, :mod:`.kmeans`, :mod:`.gyroplane`,
:mod:`.wrapped_normal`, :mod:`.matching`, :mod:`.baselines` (IIC, sparse-label 3-D U-Net), :mod:`.data`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..chapter import ChapterRun
from ..checkpoints import CheckpointStore, TrainState, array_checksum, config_key, train_or_load
from ..results import style_table
from ..results.guards import no_better_than, stalled_loss
from ..results.verdict import Verdict, all_of
from ..training import world
from . import baselines as bl
from . import data as hd
from . import segment as sg
from . import train as tr
from .patches import SamplerConfig

CHAPTER = "hyperbolic"
LEVELS = ("Level 1", "Level 2", "Level 3")
IIC = "Ji et al. (IIC, 2D per slice)"
UNET = "Çiçek et al. (3D U-Net, 2 % of slices labelled)"
ZHAO = "Zhao et al. (one atlas + learned augmentation)"
SOTA = "SOTA (Jiang et al. 2019, fully supervised, 4 modalities)"
FLOOR = "Floor: the whole brain marked as tumour"
OURS = tr.OURS
UNSUPERVISED = [tr.NALEPA.name, IIC, tr.MORIYA.name]
TABLE1 = [UNET, ZHAO, tr.NALEPA.name, IIC, tr.MORIYA.name, OURS]
SUPERVISION = {UNET: "3D semi-supervised", ZHAO: "3D semi-supervised", tr.NALEPA.name: "3D unsupervised",
               IIC: "2D to 3D unsupervised", tr.MORIYA.name: "3D unsupervised", OURS: "3D unsupervised",
               SOTA: "3D fully supervised", FLOOR: "trivial (no training)"}
NOT_RUN = {ZHAO: "not run here: needs a learned spatial and appearance transform model (two registration-style "
                 "CNNs) trained before segmentation; not built in this book, so its row keeps the paper's value",
           SOTA: "reference only: fully supervised, all four modalities, BraTS test set (as in the paper)"}


# ----------------------------------------------------------------------------------------------- checks
def check(run: ChapterRun) -> None:
    """Fail before any long computation when the settings cannot work."""
    cfg, p = run.cfg, []
    for name, size in (("synthetic", cfg["size"]), ("brain", cfg["brain_size"])):
        smp = cfg["sampler" if name == "synthetic" else "brain_sampler"]
        try:
            s = SamplerConfig(**smp)
        except (TypeError, ValueError) as e:
            p.append(f"{name} sampler {smp}: {e}")
            continue
        if 2 * s.r_max - s.r_gap > size or s.r_max > size:
            p.append(f"{name} volumes of {size}³ are too small for anchors up to r_max={s.r_max} with a "
                     f"non-overlapping negative beside them (need 2 r_max - r_gap <= {size})")
    if cfg["n_train"] < 1 or cfg["n_test"] < 1 or cfg["brain_train"] < 1 or cfg["brain_test"] < 1:
        p.append("n_train, n_test, brain_train and brain_test must be at least 1")
    if cfg["patch"] != 10:
        p.append(f"patch={cfg['patch']}: the encoder is built for m = 10 (the authors' value)")
    if cfg["infer_patch"] < 1 or cfg["infer_patch"] % 2 == 0:
        p.append(f"infer_patch={cfg['infer_patch']} must be odd (a patch centred on its voxel)")
    if cfg["stride"] < 1:
        p.append("stride must be at least 1")
    if cfg["anchors_per_epoch"] < cfg["batch"]:
        p.append(f"anchors_per_epoch={cfg['anchors_per_epoch']} is below batch={cfg['batch']}: no step would run")
    if not 0 <= cfg["figure_volume"] < cfg["n_test"]:
        p.append(f"figure_volume={cfg['figure_volume']} is not a test volume (0..{cfg['n_test'] - 1})")
    if p:
        raise ValueError("settings of chapter hyperbolic that cannot work:\n  " + "\n  ".join(p))


# ----------------------------------------------------------------------------------------------- data
@dataclass
class Synth:
    train: list[hd.SyntheticVolume]
    test: list[hd.SyntheticVolume]
    name: str = "offline stand-in: generated cryo-ET-like volumes with three nested levels (companion.hyperbolic.data)"


@dataclass
class Brain:
    train: list[hd.BrainVolume]
    test: list[hd.BrainVolume]
    name: str


def load_synthetic(run: ChapterRun) -> Synth:
    """The generated hierarchical volumes: ``n_train`` for training, ``n_test`` for testing (paper: 80 / 20 / 20)."""
    cfg = run.cfg
    vols = hd.synthetic_set(cfg["n_train"] + cfg["n_test"], size=cfg["size"], seed=run.seed,
                            irregular=cfg["irregular"])
    out = Synth(vols[:cfg["n_train"]], vols[cfg["n_train"]:])
    run.results.add_source("synthetic hierarchical volumes", "generated",
                           array_checksum([v.image for v in vols[:2]]), n=len(vols), size=cfg["size"],
                           irregular=cfg["irregular"])
    return out


def load_brain(run: ChapterRun) -> Brain:
    """Brain volumes for Tables 3-4: the MNI152 stand-in, or MSD Task01 / BraTS 2019 when ``data`` names them."""
    cfg = run.cfg
    n = cfg["brain_train"] + cfg["brain_test"]
    if run.data == "synthetic":
        vols = hd.brain_set(n, size=cfg["brain_size"], seed=run.seed)
        name = "offline stand-in: MNI152 2009 template (nilearn) with synthetic FLAIR-like lesions"
    else:
        vols = hd.load_brain_dataset(run.data, size=cfg["brain_size"], limit=n)
        if len(vols) < 2:
            raise ValueError(f"{run.data}: {len(vols)} volumes read; need at least 2 (one to train, one to test)")
        name = run.results.data_label
    n_train = min(cfg["brain_train"], len(vols) - 1)
    run.results.add_source(name, "generated" if run.data == "synthetic" else "dataset",
                           array_checksum([vols[0].image]), n=len(vols), size=cfg["brain_size"])
    return Brain(vols[:n_train], vols[n_train:], name)


# ----------------------------------------------------------------------------------------------- training
def _store() -> CheckpointStore:
    return CheckpointStore(CHAPTER)


def _train_cfg(run: ChapterRun, sampler_key: str) -> tr.TrainConfig:
    cfg = run.cfg
    return tr.TrainConfig(epochs=cfg["epochs"], anchors_per_epoch=cfg["anchors_per_epoch"], batch=cfg["batch"],
                          lr=cfg["lr"], beta=cfg["beta"], margin=cfg["margin"], pseudo_classes=cfg["pseudo_classes"],
                          sampler=SamplerConfig(**cfg[sampler_key]))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60]


def train_method(run: ChapterRun, method: tr.Method, images: list[np.ndarray], task: str,
                 changes: dict[str, Any] | None = None) -> TrainState:
    """Train (or load) one patch model of ``method`` on ``images``; ``task`` is "synthetic" or "brain".
    ``changes`` overrides training knobs (``beta``, ``margin``, ``epochs``) for an exercise."""
    cfg = {**run.cfg, **(changes or {})}
    tcfg = _train_cfg(run, "sampler" if task == "synthetic" else "brain_sampler")
    if changes:
        tcfg = tr.TrainConfig(**{**tcfg.__dict__, **{k: v for k, v in changes.items() if k in tcfg.__dict__}})
    mcfg = tr.model_config(method, tuple(cfg["channels"]), cfg["latent_dim"], cfg["patch"])
    torch.manual_seed(run.seed)
    model = tr.build(method, mcfg, tcfg).to(run.device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    key = {"method": method.name, **tr.describe(method), "task": task, "model": mcfg.__dict__,
           "train": {**tcfg.__dict__, "sampler": tcfg.sampler.__dict__}, "data": array_checksum(images[:2]),
           "n": len(images), "seed": run.seed, "world_size": world()[1]}
    return train_or_load(_store(), f"{task}-{_slug(method.name)}", key, model, opt,
                         tr.epoch_fn(method, model, opt, images, tcfg, mcfg.patch, run.seed, run.device),
                         tcfg.epochs, writer=world()[0] == 0, progress=False)


def _steps(run: ChapterRun) -> int:
    """Optimizer steps of every patch model: the budget the two other baselines get too."""
    return run.cfg["epochs"] * (run.cfg["anchors_per_epoch"] // run.cfg["batch"])


def _cached(name: str, key: dict[str, Any], build: Callable[[], torch.nn.Module],
            fit: Callable[[], tuple[torch.nn.Module, list[float]]]) -> tuple[torch.nn.Module, list[float], str]:
    """A baseline that trains itself (``fit``), through the checkpoint cache: loaded into ``build()`` when cached."""
    store = _store()
    path = store.path(name, key)
    payload = store.load(path)
    if payload is not None and payload.get("config_key") == config_key(key):
        model = build()
        model.load_state_dict(payload["model"])
        return model, list(payload["history"]), "loaded"
    model, history = fit()
    if world()[0] == 0:
        store.save(path, {"config_key": config_key(key), "model": model.state_dict(),
                          "history": [float(h) for h in history]})
    return model, list(history), "trained"


def train_iic(run: ChapterRun, images: list[np.ndarray], ks: tuple[int, ...], task: str):
    cfg = run.cfg
    key = {"task": task, "ks": list(ks), "steps": _steps(run), "batch": cfg["batch"], "lr": cfg["lr"],
           "channels": cfg["iic_channels"], "data": array_checksum(images[:2]), "n": len(images), "seed": run.seed}
    return _cached(f"{task}-iic", key, lambda: bl.IICNet(ks, cfg["iic_channels"]),
                   lambda: bl.train_iic(images, ks=ks, steps=_steps(run), batch=cfg["batch"], lr=cfg["lr"],
                                        seed=run.seed, channels=cfg["iic_channels"]))


def train_unet(run: ChapterRun, images: list[np.ndarray], labels: list[np.ndarray], n_classes: int, task: str):
    cfg = run.cfg
    key = {"task": task, "classes": n_classes, "steps": _steps(run), "lr": cfg["lr"], "fraction": cfg["label_fraction"],
           "channels": cfg["unet_channels"], "data": array_checksum(images[:2] + labels[:1]), "n": len(images),
           "seed": run.seed}
    return _cached(f"{task}-unet", key, lambda: bl.build_unet(n_classes, tuple(cfg["unet_channels"])),
                   lambda: bl.train_sparse_unet(images, labels, n_classes, steps=_steps(run), lr=cfg["lr"],
                                                fraction=cfg["label_fraction"], seed=run.seed,
                                                channels=tuple(cfg["unet_channels"])))


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class Eval:
    """Per-(method, volume) scores, the figure volume's label maps and latent means, training histories."""
    per_volume: pd.DataFrame
    maps: dict[str, dict[int, np.ndarray]] = field(repr=False, default_factory=dict)
    latents: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    histories: dict[str, list] = field(repr=False, default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _loss_curve(history: list) -> list[float]:
    return [h["loss"] if isinstance(h, dict) else float(h) for h in history]


def _segment_patch_model(run: ChapterRun, model: torch.nn.Module, method: tr.Method, image: np.ndarray,
                         ks: tuple[int, ...]) -> tuple[dict[int, np.ndarray], torch.Tensor]:
    cfg = run.cfg
    return sg.segment_volume(tr.encoder_of(model), image, ks, method.geometry, p=cfg["infer_patch"], m=cfg["patch"],
                             stride=cfg["stride"], seed=run.seed, fit_points=cfg["fit_points"], device=run.device)


def evaluate_synthetic(run: ChapterRun, synth: Synth, methods: list[str] | None = None) -> Eval:
    """Train every method of Tables 1-2 on the training volumes and score each test volume at the three levels."""
    from ..progress import progress

    names = list(tr.ABLATIONS) + [tr.NALEPA.name, tr.MORIYA.name, IIC, UNET] if methods is None else methods
    images = [v.image for v in synth.train]
    ks = hd.LEVEL_CLASSES
    rows, ev = [], Eval(pd.DataFrame())
    fig_id = run.cfg["figure_volume"]
    bar = progress(total=len(names), desc="methods")
    for name in names:
        if name in tr.METHODS:
            method = tr.METHODS[name]
            st = train_method(run, method, images, "synthetic")
            ev.histories[name], ev.sources[name] = _loss_curve(st.history), st.source

            def seg(image, method=method, model=st.model):
                return _segment_patch_model(run, model, method, image, ks)
        elif name == IIC:
            model, hist, ev.sources[name] = train_iic(run, images, ks, "synthetic")
            ev.histories[name] = hist

            def seg(image, model=model):
                return {k: bl.segment_iic(model, image, k) for k in ks}, None
        elif name == UNET:
            model, hist, ev.sources[name] = train_unet(run, images, [v.levels[2] for v in synth.train], ks[-1],
                                                        "synthetic")
            ev.histories[name] = hist

            def seg(image, model=model):
                fine = bl.segment_unet(model, image)
                return {k: hd.coarsen(fine, level + 1) for level, k in enumerate(ks)}, None
        else:
            raise ValueError(f"unknown method {name!r}; valid: {', '.join(list(tr.METHODS) + [IIC, UNET])}")
        for i, vol in enumerate(synth.test):
            maps, mu = seg(vol.image)
            row = {"method": name, "volume": f"test-{i:02d}"}
            for level, k in enumerate(ks):
                row[LEVELS[level]] = sg.level_dice(maps[k], vol.levels[level])
            rows.append(row)
            if i == fig_id:
                ev.maps[name] = maps
                if mu is not None:
                    ev.latents[name] = mu.numpy()
        bar.update(1)
    bar.close()
    ev.per_volume = pd.DataFrame(rows)
    return ev


def _pm(mean: Any, sd: Any) -> str:
    """``mean ± sd`` with 3 decimals; "–" where there is no value (a paper value not available)."""
    if mean is None or pd.isna(mean):
        return "–"
    return f"{float(mean):.3f} ± {float(sd):.3f}" if sd is not None and not pd.isna(sd) else f"{float(mean):.3f}"


def summary(per_volume: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Mean and sd over the test volumes."""
    g = per_volume.groupby("method")[cols]
    out = g.mean()
    for c in cols:
        out[f"{c} sd"] = g.std(ddof=1)[c]
    return out


def _side_by_side(run: ChapterRun, table: str, per_volume: pd.DataFrame, rows: list[str], cols: list[str],
                  extra: dict[str, dict[str, str]] | None = None):
    rep = summary(per_volume, cols).reindex(rows)
    rep.index.name = "method"
    side = run.results.paper_table(table, rep[cols])
    for c in cols:
        side[f"{c} sd (reproduced)"] = rep[f"{c} sd"].reindex(side.index)
    show = []
    for method in side.index:
        for src, tag in (("paper", "paper"), ("ours", "reproduced")):
            cells = {c: _pm(side.at[method, f"{c} ({tag})"],
                            side.at[method, f"{c} sd (reproduced)"] if tag == "reproduced" else np.nan)
                     for c in cols}
            if src == "ours" and method in NOT_RUN:
                cells = {c: "not run" for c in cols}
            show.append({"method": method, "source": src, **cells, **(extra or {}).get(method, {})})
    return side, pd.DataFrame(show).set_index(["method", "source"])


def _scale_note(run: ChapterRun, n_train: int, n_test: int, size: int) -> str:
    cfg = run.cfg
    where = "every voxel" if cfg["stride"] == 1 else (f"one voxel in {cfg['stride']} along each axis (the others take the nearest one's "
                                                       "label)")
    return (f"ours: trained on {n_train} volumes of {size}³, mean ± sd over {n_test} test volumes; every model "
            f"{_steps(run)} Adam steps of {cfg['batch']} patches; encoder widths {tuple(cfg['channels'])}, latent "
            f"dimension {cfg['latent_dim']}; patches of {cfg['infer_patch']}³ encoded at {where}")


def table_1(run: ChapterRun, synth: Synth, ev: Eval):
    """Table 1: Dice per level for the six methods (Zhao et al.: paper value only), paper beside ours."""
    extra = {m: {"supervision": SUPERVISION[m]} for m in TABLE1}
    side, show = _side_by_side(run, "1", ev.per_volume, TABLE1, list(LEVELS), extra)
    side["supervision"] = [SUPERVISION.get(m, "") for m in side.index]
    side["note"] = [NOT_RUN.get(m, "") for m in side.index]
    cap = (f"Table 1: Dice at the three levels of the hierarchy (2, 4 and 8 classes; clusters matched to classes by "
           f"the Hungarian algorithm), unsupervised and semi-supervised methods; {ZHAO}: {NOT_RUN[ZHAO]}; "
           f"{_scale_note(run, len(synth.train), len(synth.test), run.cfg['size'])}")
    run.results.table("table-1", side, cap, data=synth.name)
    return side, style_table(show, f"table-1: {run.results.caption(cap, synth.name)}")


def table_2(run: ChapterRun, synth: Synth, ev: Eval):
    """Table 2: the six ablations (latent space, gyroplane layer, triplet loss)."""
    rows = list(tr.ABLATIONS)
    side, show = _side_by_side(run, "2", ev.per_volume, rows, list(LEVELS))
    cap = (f"Table 2: ablations on the synthetic volumes (Euclidean or hyperbolic latent; + gyroplane convolution "
           f"as the decoder's first layer; + hierarchical triplet loss); "
           f"{_scale_note(run, len(synth.train), len(synth.test), run.cfg['size'])}")
    run.results.table("table-2", side, cap, data=synth.name)
    return side, style_table(show, f"table-2: {run.results.caption(cap, synth.name)}")


def evaluate_brain(run: ChapterRun, brain: Brain, methods: list[str] | None = None) -> Eval:
    """Table 3-4 methods on the brain volumes: 3 clusters (background, brain, tumour) matched by the Hungarian
    algorithm; whole-tumour Dice, Hausdorff distance and its 95th percentile (voxels)."""
    from ..progress import progress

    names = [tr.NALEPA.name, IIC, tr.MORIYA.name, OURS, UNET] if methods is None else methods
    images = [v.image for v in brain.train]
    ks = (2, 3, 4)
    rows, ev = [], Eval(pd.DataFrame())
    bar = progress(total=len(names), desc="brain methods")
    for name in names:
        if name in tr.METHODS:
            method = tr.METHODS[name]
            st = train_method(run, method, images, "brain")
            ev.histories[name], ev.sources[name] = _loss_curve(st.history), st.source

            def seg(image, method=method, model=st.model):
                return _segment_patch_model(run, model, method, image, ks)[0]
        elif name == IIC:
            model, hist, ev.sources[name] = train_iic(run, images, (3,), "brain")
            ev.histories[name] = hist

            def seg(image, model=model):
                return {3: bl.segment_iic(model, image, 3)}
        elif name == UNET:
            model, hist, ev.sources[name] = train_unet(run, images, [v.labels for v in brain.train], 3, "brain")
            ev.histories[name] = hist

            def seg(image, model=model):
                return {3: bl.segment_unet(model, image)}
        else:
            raise ValueError(f"unknown method {name!r}")
        for i, vol in enumerate(brain.test):
            maps = seg(vol.image)
            wt_pred = sg.matched_labels(maps[3], vol.labels) == 2
            wt_ref = vol.labels == 2
            hd_max = metrics.hausdorff(wt_pred, wt_ref)
            rows.append({"method": name, "volume": f"brain-{i:02d}", "Dice WT": metrics.dice(wt_pred, wt_ref),
                         "HD": hd_max, "HD95": metrics.hd95(wt_pred, wt_ref),
                         "empty": not wt_pred.any()})
            if i == 0:
                ev.maps[name] = maps
        bar.update(1)
    bar.close()
    for i, vol in enumerate(brain.test):  # the floor: a "segmentation" that marks every brain voxel as tumour
        wt_pred, wt_ref = vol.labels > 0, vol.labels == 2
        rows.append({"method": FLOOR, "volume": f"brain-{i:02d}", "Dice WT": metrics.dice(wt_pred, wt_ref),
                     "HD": metrics.hausdorff(wt_pred, wt_ref), "HD95": metrics.hd95(wt_pred, wt_ref), "empty": False})
    ev.per_volume = pd.DataFrame(rows)
    return ev


def table_3(run: ChapterRun, brain: Brain, ev: Eval):
    rows = [SOTA, ZHAO, UNET, IIC, tr.MORIYA.name, tr.NALEPA.name, OURS, FLOOR]
    extra = {m: {"algorithm type": SUPERVISION[m]} for m in rows}
    side, show = _side_by_side(run, "3", ev.per_volume, rows, ["Dice WT"], extra)
    side["algorithm type"] = [SUPERVISION.get(m, "") for m in side.index]
    side["note"] = [NOT_RUN.get(m, "") for m in side.index]
    cap = (f"Table 3: whole-tumour Dice with 3 clusters (tumour, brain, background) matched by the Hungarian "
           f"algorithm; SOTA and Zhao et al.: paper values only; the floor row marks every brain voxel as tumour (a "
           f"method below it has not found the tumour); ours: trained on {len(brain.train)} volumes of "
           f"{run.cfg['brain_size']}³, mean ± sd over {len(brain.test)} test volumes, the synthetic chapter's budget")
    run.results.table("table-3", side, cap, data=brain.name)
    return side, style_table(show, f"table-3: {run.results.caption(cap, brain.name)}")


def table_4(run: ChapterRun, brain: Brain, ev: Eval):
    rows = [IIC, tr.MORIYA.name, tr.NALEPA.name, OURS]
    side, show = _side_by_side(run, "4", ev.per_volume, rows, ["HD", "HD95"])
    cap = (f"Table 4: Hausdorff distance (maximum, averaged over the test volumes) and its 95th percentile for the "
           f"whole tumour, unsupervised methods, in voxels of the {run.cfg['brain_size']}³ volumes (lower is "
           f"better); the paper's values are not in the text we have; an empty prediction has no distance and "
           f"is left out of the mean")
    run.results.table("table-4", side, cap, data=brain.name)
    return side, style_table(show, f"table-4: {run.results.caption(cap, brain.name)}")


# ----------------------------------------------------------------------------------------------- figures
_CMAP = "tab10"


def figure_2(run: ChapterRun, synth: Synth):
    """Figure 2: slices of one synthetic volume and its ground truth at the three levels."""
    import matplotlib.pyplot as plt

    vol = synth.test[run.cfg["figure_volume"]]
    n = vol.image.shape[0]
    slices = [n // 3, n // 2, 2 * n // 3]
    fig, axes = plt.subplots(len(slices), 4, figsize=(9, 2.3 * len(slices)))
    for r, z in enumerate(slices):
        axes[r, 0].imshow(vol.image[z], cmap="gray")
        for level in range(3):
            axes[r, level + 1].imshow(vol.levels[level][z], cmap=_CMAP, vmin=0, vmax=9, interpolation="nearest")
        axes[r, 0].set_ylabel(f"slice {z}")
    for c, t in enumerate(["image"] + [f"level {i + 1} ({k} classes)" for i, k in enumerate(hd.LEVEL_CLASSES)]):
        axes[0, c].set_title(t, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-2", fig, "Figure 2: slices of a synthetic test volume and its ground truth at the "
                                         "three levels", data=synth.name)
    return fig


def figure_3(run: ChapterRun, brain: Brain, ev: Eval, method: str = OURS):
    """Figure 3: a brain slice and the method's segmentations with 2, 3 and 4 clusters."""
    import matplotlib.pyplot as plt

    vol = brain.test[0]
    maps = ev.maps[method]
    z = int(np.argmax((vol.labels == 2).sum(axis=(1, 2))))  # the slice with the most tumour
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.8))
    axes[0].imshow(vol.image[z], cmap="gray")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(vol.labels[z], cmap=_CMAP, vmin=0, vmax=9, interpolation="nearest")
    axes[1].set_title("ground truth", fontsize=9)
    for j, k in enumerate(sorted(maps)):
        axes[2 + j].imshow(maps[k][z], cmap=_CMAP, vmin=0, vmax=9, interpolation="nearest")
        axes[2 + j].set_title(f"{k} clusters", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    run.results.figure("fig-3", fig, f"Figure 3: a brain slice segmented by {method} with 2, 3 and 4 clusters "
                                         "(cluster colours are arbitrary)", data=brain.name)
    return fig


def figure_embedding(run: ChapterRun, synth: Synth, ev: Eval, methods: tuple[str, ...] = ("Euclidean base", OURS)):
    """The latent means of one test volume's voxels, coloured by their level-3 class (beyond the paper)."""
    import matplotlib.pyplot as plt

    vol = synth.test[run.cfg["figure_volume"]]
    s = run.cfg["stride"]
    classes = vol.levels[2][::s, ::s, ::s].reshape(-1)
    methods = tuple(m for m in methods if m in ev.latents)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.4), squeeze=False)
    cmap = plt.get_cmap(_CMAP)
    for ax, m in zip(axes[0], methods):
        mu = ev.latents[m]
        for c in range(hd.LEVEL_CLASSES[-1]):
            sel = classes == c
            ax.scatter(mu[sel, 0], mu[sel, 1], s=2, color=cmap(c), label=hd.CLASS_NAMES_L3[c], alpha=0.6,
                       rasterized=True)
        if tr.METHODS[m].geometry == "hyperbolic":
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(t), np.sin(t), color="0.3", lw=0.8)
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
            ax.set_aspect("equal")
        else:  # the plane has no natural scale: each axis spans its data (the two may differ by orders of magnitude)
            ax.set_xlabel("latent 1")
            ax.set_ylabel("latent 2")
        ax.set_title(m, fontsize=9)
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=4)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    run.results.figure("fig-embedding", fig, "Latent means of a test volume's patches coloured by their level-3 "
                                                "class: Euclidean VAE (left), hyperbolic VAE with gyroplane layer "
                                                "and triplet loss in the Poincaré disk (right)", data=synth.name)
    return fig


def figure_training(run: ChapterRun, synth: Synth, ev: Eval):
    """Training loss per epoch of the six ablation models."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for m in tr.ABLATIONS:
        if m in ev.histories:
            ax.plot(range(1, len(ev.histories[m]) + 1), ev.histories[m], marker="o", ms=3, label=m)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (ELBO + β triplet)")
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    run.results.figure("fig-training", fig, "Training loss of the six ablation models", data=synth.name)
    return fig


# ----------------------------------------------------------------------------------------------- claims
def guards(ev: Eval, names: list[str]) -> list[str | None]:
    return [stalled_loss(ev.histories[n], n) for n in names if n in ev.histories]


def convergence(run: ChapterRun, ev: Eval, names: list[str], prefix: str = "") -> list:
    """Record each trained model's training loss per epoch (``curves.json``) and check its convergence
    (:func:`companion.results.convergence.converged`, on the training loss: no validation loss is computed).  Models
    without a loss curve (k-means on fixed features) are not trained by epochs and have no entry."""
    return [run.results.training_curve(prefix + n, train=ev.histories[n]) for n in names if n in ev.histories]


def compare(run: ChapterRun, claim: str, ev: Eval, a: str, b: str, metric: str, better: str = "higher",
            prefix: str = "") -> Verdict:
    """``a`` against ``b`` on ``metric`` per test volume (:meth:`companion.results.Results.compare`: the claim's
    margin, one training run per model so at most indicative, convergence from the loss curves)."""
    pv = ev.per_volume.pivot(index="volume", columns="method", values=metric)
    extra = []
    if FLOOR in pv:  # brain volumes: a method no better than marking the whole brain has not found the tumour
        dice = ev.per_volume.pivot(index="volume", columns="method", values="Dice WT")
        extra = [no_better_than(dice[n], dice[FLOOR], n, FLOOR.lower().replace("floor: ", "")) for n in (a, b)]
    return run.results.compare(claim, pv[a].to_numpy(), pv[b].to_numpy(), better=better, names=(a, b),
                               metric=metric, guards=guards(ev, [a, b]) + extra,
                               convergence=convergence(run, ev, [a, b], prefix))


def record_claims(run: ChapterRun, ev: Eval, brain_ev: Eval) -> pd.DataFrame:
    """Every claim of the claims file, decided by the shared verdict rules."""
    r = run.results
    s = summary(ev.per_volume, list(LEVELS))

    def means(names, cols=LEVELS, table=s):
        return {f"{n} {c}": float(table.at[n, c]) for n in names for c in cols}

    pairs = [("Hyperbolic base", "Euclidean base"), ("Hyperbolic + triplet", "Euclidean + triplet")]
    r.record("hyperbolic-above-euclidean", reproduced=means([x for p in pairs for x in p]),
             verdict=all_of([compare(run, "hyperbolic-above-euclidean", ev, a, b, lv) for a, b in pairs
                             for lv in LEVELS]))
    for cid, a, b in (("triplet-helps", "Hyperbolic + triplet", "Hyperbolic base"),
                      ("gyroconv-helps", "Hyperbolic + gyroconv", "Hyperbolic base")):
        r.record(cid, reproduced=means([a, b]), verdict=all_of([compare(run, cid, ev, a, b, lv) for lv in LEVELS]))
    # "the largest gain over the base model": ours above the base *and* above each single-component model
    rivals = ["Hyperbolic base", "Hyperbolic + triplet", "Hyperbolic + gyroconv"]
    r.record("both-best", reproduced=means([OURS] + rivals),
             verdict=all_of([compare(run, "both-best", ev, OURS, b, lv) for b in rivals for lv in LEVELS]))
    r.record("ours-above-unsupervised", reproduced=means([OURS] + UNSUPERVISED),
             verdict=all_of([compare(run, "ours-above-unsupervised", ev, OURS, o, lv) for o in UNSUPERVISED
                             for lv in LEVELS]))
    bs = summary(brain_ev.per_volume, ["Dice WT", "HD", "HD95"])
    r.record("brain-ours-above-unsupervised", reproduced=means([OURS] + UNSUPERVISED, ("Dice WT",), bs),
             verdict=all_of([compare(run, "brain-ours-above-unsupervised", brain_ev, OURS, o, "Dice WT",
                                     prefix="brain: ") for o in UNSUPERVISED]))
    r.record("brain-hausdorff", reproduced=means([OURS] + UNSUPERVISED, ("HD95",), bs),
             verdict=all_of([compare(run, "brain-hausdorff", brain_ev, OURS, o, m, "lower", prefix="brain: ")
                             for o in UNSUPERVISED for m in ("HD", "HD95")]))
    r.record("comparable-to-semi-supervised", reproduced=None, reason=f"not evaluated: {NOT_RUN[ZHAO]}")
    return r.scoreboard()
