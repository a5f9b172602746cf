"""Chapter 1, part 2 "VAEsselSparse: the latent space": classification (Table 2, Figure 3) and generation (Section 4
text, Figure 4) with part 1's trained VAEs.  The notebook ``notebooks/01b_vaesselsparse_latent.ipynb`` calls these
functions in order; each returns what it shows.

The pieces: :mod:`.latents` (latents on the bottleneck grid), :mod:`.classify` (cross-validated classifiers),
:mod:`.generate` (flow matching), :func:`companion.metrics.generation_metrics` (MMD, COV, 1-NNA) and the shared
verdict rules (:mod:`companion.results.verdict`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..chapter import ChapterRun, resolve_data
from ..checkpoints import CheckpointStore, TrainState, train_or_load
from ..data.vessels import generate_dataset
from ..results import style_table
from ..results.guards import degenerate_predictions, no_better_than, stalled_loss
from ..results.verdict import all_of, property_verdict
from ..scales import chapter_config
from . import chapter as part1
from . import classify, generate, latents
from .train import world, wrap_distributed

CHAPTER = "vaesselsparse_latent"
TASKS = {"insted": "INSTED stand-in (healthy / stenosis / aneurysm)",
         "topcow": "TopCoW stand-in (8 circle-of-Willis variants)"}
METHODS = ["ResNet", "ViT", "Dense VAE + PCA + RF", "VAEsselSparse + PCA + RF", "VAEsselSparse + MLP"]
SEED_OFFSETS = {"insted": 101, "topcow": 202, "airway": 303}  # new maps: none of them trained the VAEs
KNN = 5  # neighbours of the separation score in the t-SNE map
COW_NAMES = {"complete": "complete", "acom_absent": "Acom absent", "a1_absent": "one A1 absent",
             "pcom_absent": "one Pcom absent", "both_pcom_absent": "both Pcom absent",
             "p1_absent_fetal": "one P1 absent (fetal PCA)", "a1_hypoplastic": "one A1 hypoplastic",
             "p1_hypoplastic_fetal": "one P1 hypoplastic (fetal-type)"}


@dataclass
class Task:
    key: str
    name: str
    volumes: np.ndarray  # (N, D, D, D) bool
    labels: np.ndarray  # (N,) int
    classes: tuple[str, ...]


# ----------------------------------------------------------------------------------------------- checks
def check(run: ChapterRun) -> None:
    """Fail before any long computation when the settings cannot work: every class needs ``folds`` maps, the ViT's
    patch must divide the grid, the generation sets must be large enough for MMD / COV / 1-NNA."""
    from ..data.cow import CLASSES as COW_CLASSES, LESION_CLASSES

    cfg, problems = run.cfg, []
    for key, classes in (("n_insted", LESION_CLASSES), ("n_cow", COW_CLASSES)):
        if cfg[key] < cfg["folds"] * len(classes):
            problems.append(f"{key}={cfg[key]} gives fewer than folds={cfg['folds']} maps per class for "
                            f"{len(classes)} classes: set it to at least {cfg['folds'] * len(classes)}")
    if grid_of(run) % cfg["vit_patch"]:
        problems.append(f"vit_patch={cfg['vit_patch']} does not divide the grid {grid_of(run)}")
    if cfg["gen_reference"] < 2 or cfg["gen_samples"] < 1 or cfg["gen_train"] < cfg["gen_samples"]:
        problems.append("need gen_reference >= 2, gen_samples >= 1 and gen_train >= gen_samples (the training maps "
                        "serve as the no-model row of the generation table)")
    if problems:
        raise ValueError("settings of chapter vaesselsparse_latent that cannot work:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------- part 1's models
def part1_run(run: ChapterRun) -> ChapterRun:
    """Part 1's run at the same scale and seed (no results folder): its configuration keys the checkpoint cache."""
    data, _ = resolve_data("vaesselsparse", run.scale, "default")
    return ChapterRun("vaesselsparse", run.scale, data, run.device, run.seed,
                      chapter_config("vaesselsparse", run.scale), results=None)  # type: ignore[arg-type]


def load_vaes(run: ChapterRun) -> dict[str, TrainState]:
    """Part 1's trained VAEsselSparse and dense VAE, loaded from the checkpoint cache (trained here with part 1's
    recipe, data and seed when the cache is empty: the same weights part 1 reports on)."""
    p1 = part1_run(run)
    data = part1.make_dataset(p1.cfg, p1.seed, p1.data)
    return {"sparse": part1.train_sparse(p1, data), "dense": part1.train_dense(p1, data)}


def grid_of(run: ChapterRun) -> int:
    return int(part1_run(run).cfg["grid"])


# ----------------------------------------------------------------------------------------------- data
def _checksum(volumes: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.packbits(volumes).tobytes()).hexdigest()


def classification_data(run: ChapterRun) -> dict[str, Task]:
    """The two classification tasks on part 1's grid: generated circle-of-Willis maps with inserted stenoses and
    aneurysms (``companion.data.cow.generate_lesion_set``; with ``data="vesselmnist3d"`` the real VesselMNIST3D
    segments instead, :func:`vesselmnist_task`) and circle-of-Willis variants (``companion.data.cow``)."""
    from ..data.cow import CLASSES as COW_CLASSES, LESION_CLASSES, default_class_sizes, generate_cow_set, \
        generate_lesion_set

    g = grid_of(run)
    tasks = {}
    if run.data == "vesselmnist3d":
        tasks["insted"] = vesselmnist_task(run)
        ins = None
    else:
        ins = generate_lesion_set(run.cfg["n_insted"], g, run.seed + SEED_OFFSETS["insted"])
    cow = generate_cow_set(run.cfg["n_cow"], g, run.seed + SEED_OFFSETS["topcow"],
                           class_sizes=default_class_sizes(run.cfg["n_cow"], minimum=run.cfg["folds"]))
    for key, samples, classes in (("insted", ins, LESION_CLASSES), ("topcow", cow, COW_CLASSES)):
        if samples is None:
            continue
        vols = np.stack([s.volume for s in samples]).astype(bool)
        names = tuple(COW_NAMES.get(c, c) for c in classes)
        tasks[key] = Task(key, TASKS[key], vols, np.array([s.label for s in samples]), names)
        run.results.add_source(TASKS[key], "generated", _checksum(vols), grid=g, n=len(samples),
                               seed=run.seed + SEED_OFFSETS[key],
                               generator="companion.data.cow." + ("generate_lesion_set" if key == "insted" else
                                                                  "generate_cow_set"))
    return tasks


def vesselmnist_task(run: ChapterRun) -> Task:
    """The real-data option for the binary task: VesselMNIST3D's 64³ vessel segments (all three official splits,
    labels 0 vessel / 1 aneurysm), a class-balanced subset of ``n_insted`` maps drawn with the run's seed (at most
    all aneurysms; the rest healthy), each resampled to part 1's grid by nearest neighbour so that part 1's VAEs
    read them.  Our choices: the subset, the balance and the resampling; the dataset has no stenosis class."""
    from scipy.ndimage import zoom

    from ..data.loaders import iter_samples

    g = grid_of(run)
    samples = [s for split in ("train", "val", "test") for s in iter_samples("vesselmnist3d", split=split,
                                                                             check=False)]
    labels = np.array([int(s.target) for s in samples])
    rng = np.random.default_rng(run.seed + SEED_OFFSETS["insted"])
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_pos = min(len(pos), run.cfg["n_insted"] // 2)
    n_neg = min(len(neg), run.cfg["n_insted"] - n_pos)
    if min(n_pos, n_neg) < run.cfg["folds"]:
        raise ValueError(f"VesselMNIST3D gave {len(pos)} aneurysm and {len(neg)} vessel maps; need at least "
                         f"{run.cfg['folds']} of each")
    pick = np.sort(np.r_[rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    vols = []
    for i in pick:
        img = np.asarray(samples[i].image, dtype=np.float32)
        img = img / img.max() if img.max() > 0 else img
        vols.append(zoom(img, [g / d for d in img.shape], order=0) > 0.5)
    vols = np.stack(vols)
    name = "VesselMNIST3D (real vessel / aneurysm segments, healthy vs aneurysm)"
    run.results.add_source(name, "manifest", _checksum(vols), dataset="vesselmnist3d", n=len(pick),
                           grid=g, seed=run.seed + SEED_OFFSETS["insted"])
    return Task("insted", name, vols, labels[pick], ("vessel", "aneurysm"))


def class_table(run: ChapterRun, tasks: dict[str, Task]):
    rows = []
    for t in tasks.values():
        for i, c in enumerate(t.classes):
            sel = t.labels == i
            rows.append({"task": t.name, "class": c, "maps": int(sel.sum()),
                         "mean vessel voxels": float(t.volumes[sel].sum(axis=(1, 2, 3)).mean()) if sel.any() else
                         np.nan})
    df = pd.DataFrame(rows).set_index(["task", "class"])
    return run.results.table("table-classes", df, f"Classes of the two classification tasks ({grid_of(run)}³ maps)",
                             data="; ".join(t.name for t in tasks.values()))


def figure_classes(run: ChapterRun, tasks: dict[str, Task]):
    """One example map per class of each task (surface renders)."""
    import matplotlib.pyplot as plt

    from ..render import show_volume

    ncol = max(len(t.classes) for t in tasks.values())
    fig, axes = plt.subplots(len(tasks), ncol, figsize=(2.6 * ncol, 2.9 * len(tasks)), squeeze=False)
    for r, t in enumerate(tasks.values()):
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(t.classes):
                ax.set_axis_off()
                continue
            i = int(np.flatnonzero(t.labels == c)[0])
            show_volume(ax, t.volumes[i], title=t.classes[c], size=run.cfg["render_size"] // 2)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-classes", fig, "One map per class: the INSTED task (top), the TopCoW stand-in (bottom)",
                       data="; ".join(t.name for t in tasks.values()))
    return fig


# ----------------------------------------------------------------------------------------------- latents
@dataclass
class Codes:
    sparse_grid: np.ndarray  # (N, C + 1, d, d, d)
    dense: np.ndarray  # (N, C, d, d, d)


def encode(run: ChapterRun, vaes: dict[str, TrainState], volumes: np.ndarray) -> Codes:
    mus = latents.encode_sparse(vaes["sparse"].model, list(volumes), run.device)
    return Codes(np.stack([latents.sparse_to_grid(m) for m in mus]),
                 latents.encode_dense(vaes["dense"].model, list(volumes), run.device))


def round_trip_check(run: ChapterRun, vaes: dict[str, TrainState], volumes: np.ndarray) -> dict[str, Any]:
    """Decode every map twice, from its sparse latent and from the same latent written on the grid and read back;
    count the maps whose coordinates, features or decoded voxels differ."""
    model = vaes["sparse"].model
    bad_latent = bad_decode = 0
    for v in volumes:
        mu = latents.encode_sparse(model, [v], run.device)[0]
        back = latents.grid_to_sparse(latents.sparse_to_grid(mu), mu.stride, mu.spatial_shape)
        (ka, ia), (kb, ib) = mu.sorted_keys(), back.sorted_keys()
        if not torch.equal(ka, kb) or not torch.equal(mu.feats[ia], back.feats[ib]):
            bad_latent += 1
        if not np.array_equal(latents.decode_sparse(model, mu, run.device),
                              latents.decode_sparse(model, back, run.device)):
            bad_decode += 1
    return {"maps": len(volumes), "latents changed": bad_latent, "decodings changed": bad_decode}


# ----------------------------------------------------------------------------------------------- Table 2
def classify_task(run: ChapterRun, task: Task, codes: Codes) -> dict[str, classify.CVResult]:
    """Every method of Table 2 on the same stratified folds; out-of-fold predictions per sample."""
    cfg, y = run.cfg, task.labels
    fold = classify.folds_of(y, cfg["folds"], run.seed)
    vec = latents.latent_vectors(codes.sparse_grid, codes.dense)
    out = {
        "ResNet": classify.voxel_cv("ResNet", task.volumes, y, fold, cfg, seed=run.seed, method="ResNet"),
        "ViT": classify.voxel_cv("ViT", task.volumes, y, fold, cfg, seed=run.seed, method="ViT"),
        "Dense VAE + PCA + RF": classify.pca_rf(vec["dense"], y, fold, components=cfg["pca_components"],
                                                trees=cfg["rf_trees"], seed=run.seed, method="Dense VAE + PCA + RF"),
        "VAEsselSparse + PCA + RF": classify.pca_rf(vec["sparse"], y, fold, components=cfg["pca_components"],
                                                    trees=cfg["rf_trees"], seed=run.seed,
                                                    method="VAEsselSparse + PCA + RF"),
        "VAEsselSparse + MLP": classify.mlp(vec["sparse"], y, fold, hidden=cfg["mlp_hidden"],
                                            epochs=cfg["mlp_epochs"], lr=cfg["mlp_lr"], seed=run.seed,
                                            method="VAEsselSparse + MLP"),
    }
    return out


def table_2(run: ChapterRun, task: Task, results: dict[str, classify.CVResult]):
    """Table 2 for one task: the paper's values beside ours (mean and sd over the folds)."""
    rows = {}
    for m in METHODS:
        s = classify.fold_scores(task.labels, results[m])
        rows[m] = {"Bal. Accuracy": s["Bal. Accuracy"].mean(), "Macro-F1": s["Macro-F1"].mean(),
                   "Bal. Accuracy sd": s["Bal. Accuracy"].std(ddof=1), "Macro-F1 sd": s["Macro-F1"].std(ddof=1)}
    reproduced = pd.DataFrame(rows).T
    reproduced.index.name = "method"
    side = run.results.paper_table(f"2-{task.key}", reproduced[["Bal. Accuracy", "Macro-F1"]])
    for c in ("Bal. Accuracy", "Macro-F1"):
        side.insert(list(side.columns).index(f"{c} (reproduced)") + 1, f"{c} sd (reproduced)",
                    reproduced[f"{c} sd"])
    name = "INSTED" if task.key == "insted" else "TopCoW"
    cap = (f"Table 2, {name} columns: balanced accuracy and macro-F1 (%), {run.cfg['folds']}-fold cross-validation, "
           f"ours as mean ± sd over the folds; {len(task.labels)} maps, {len(task.classes)} classes")
    run.results.table(f"table-2-{task.key}", side, cap, data=task.name)
    show = pd.DataFrame(index=side.index)
    for c in ("Bal. Accuracy", "Macro-F1"):
        show[f"{c}, paper"] = side[f"{c} (paper)"].map(lambda v: f"{v:.2f}")
        show[f"{c}, ours"] = [f"{m:.1f} ± {s:.1f}" for m, s in zip(side[f"{c} (reproduced)"],
                                                                   side[f"{c} sd (reproduced)"])]
    return side, style_table(show, f"table-2-{task.key}: {run.results.caption(cap, task.name)}")


# ----------------------------------------------------------------------------------------------- Figure 3
def tsne_maps(run: ChapterRun, task: Task, codes: Codes) -> dict[str, np.ndarray]:
    """2-D t-SNE of the top ``pca_components`` PCA features of each latent (PCA and t-SNE on all maps: a picture,
    not a classifier)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    vec = latents.latent_vectors(codes.sparse_grid, codes.dense)
    out = {}
    for name, key in (("VAEsselSparse", "sparse"), ("Dense VAE", "dense")):
        k = min(run.cfg["pca_components"], len(task.labels) - 1)
        feats = PCA(k, random_state=run.seed).fit_transform(vec[key])
        perp = min(run.cfg["tsne_perplexity"], (len(task.labels) - 1) / 3)
        out[name] = TSNE(2, perplexity=perp, random_state=run.seed, init="pca").fit_transform(feats)
    return out


def knn_contributions(emb: np.ndarray, y: np.ndarray, k: int = KNN) -> np.ndarray:
    """Leave-one-out ``k``-nearest-neighbour predictions in a 2-D map, as per-sample balanced-accuracy parts
    (:func:`classify.balanced_contributions`): how well the map's neighbourhoods separate the classes."""
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(y) - 1)
    pred = cross_val_predict(KNeighborsClassifier(k), emb, y, cv=LeaveOneOut())
    return classify.balanced_contributions(y, pred)


def figure_3(run: ChapterRun, task: Task, maps: dict[str, np.ndarray]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    colours = plt.get_cmap("tab10")
    for ax, (name, emb) in zip(axes, maps.items()):
        sep = knn_contributions(emb, task.labels).mean()
        for c, cname in enumerate(task.classes):
            sel = task.labels == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=14, color=colours(c), label=cname)
        ax.set_title(f"{name}: {KNN}-NN balanced accuracy in the map {sep:.0f} %", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-3", fig, f"Figure 3: t-SNE of the top {run.cfg['pca_components']} PCA features of each "
                                     f"latent, {task.name}, coloured by class", data=task.name)
    return fig


# ----------------------------------------------------------------------------------------------- generation
@dataclass
class GenerationData:
    train: np.ndarray  # (N, D, D, D) bool: the maps the generators learn from
    reference: np.ndarray  # held-out maps the generated ones are compared with


def generation_data(run: ChapterRun) -> GenerationData:
    """Airway-like generated trees (ATM'22's stand-in) on part 1's grid, split into training and reference maps."""
    n_tr, n_ref = run.cfg["gen_train"], run.cfg["gen_reference"]
    trees = generate_dataset(n_tr + n_ref, grid_of(run), run.seed + SEED_OFFSETS["airway"], kinds=("airway",))
    vols = np.stack([t.volume for t in trees]).astype(bool)
    run.results.add_source("airway trees for generation (ATM'22 stand-in)", "generated", _checksum(vols),
                           generator="companion.data.vessels", tree_kind="airway", grid=grid_of(run), n=len(vols),
                           seed=run.seed + SEED_OFFSETS["airway"])
    return GenerationData(vols[:n_tr], vols[n_tr:])


def train_flows(run: ChapterRun, vaes: dict[str, TrainState], data: GenerationData) -> dict[str, Any]:
    """One flow-matching U-Net per latent space, the same recipe for both (epochs, batch, lr, widths); weights
    cached under a key of everything that changes them (the VAE checkpoints included)."""
    codes = encode(run, vaes, data.train)
    out = {}
    for name, lat, occ, vae in (("VAEsselSparse", codes.sparse_grid, True, vaes["sparse"]),
                                ("Dense VAE", codes.dense, False, vaes["dense"])):
        x, st, size = generate.prepare(lat, occ)
        torch.manual_seed(run.seed)
        model = generate.build_unet(x.shape[1], run.cfg["gen_channels"]).to(run.device)
        ddp = wrap_distributed(model)
        opt = torch.optim.AdamW(ddp.parameters(), lr=run.cfg["gen_lr"])
        rank, size_w = world()
        key = {"latent": name, "vae": vae.path.name, "data": _checksum(data.train), "widths": run.cfg["gen_channels"],
               "epochs": run.cfg["gen_epochs"], "lr": run.cfg["gen_lr"], "batch": run.cfg["gen_batch"],
               "seed": run.seed, "world_size": size_w}
        state = train_or_load(CheckpointStore(CHAPTER), f"flow-{'sparse' if occ else 'dense'}", key, model, opt,
                              lambda e, m=ddp, o=opt, xx=x: generate.flow_epoch(
                                  m, o, xx, batch=run.cfg["gen_batch"], epoch=e, seed=run.seed),
                              run.cfg["gen_epochs"], writer=rank == 0)
        out[name] = {"state": state, "standardiser": st, "size": size, "d": lat.shape[-1], "channels": x.shape[1],
                     "occupancy": occ}
    return out


def sample_maps(run: ChapterRun, vaes: dict[str, TrainState], flows: dict[str, Any]) -> dict[str, np.ndarray]:
    """``gen_samples`` new latents from each flow, decoded to binary maps by the VAE of that latent space."""
    shape = (grid_of(run),) * 3
    out = {}
    for name, f in flows.items():
        z = generate.sample(f["state"].model, run.cfg["gen_samples"], (f["channels"], *(f["size"],) * 3),
                            run.cfg["gen_steps"], run.seed, f["d"])
        z = f["standardiser"].inverse(z)
        if f["occupancy"]:
            model = vaes["sparse"].model
            out[name] = np.stack([latents.decode_sparse(model, latents.grid_to_sparse(zi, model.cfg.factor, shape),
                                                        run.device) for zi in z])
        else:
            out[name] = latents.decode_dense(vaes["dense"].model, z, run.device)
    return out


def generation_scores(run: ChapterRun, data: GenerationData, generated: dict[str, np.ndarray]) -> dict[str, dict]:
    """MMD, COV and 1-NNA (Chamfer distance on ``points`` points per map, unit-cube coordinates) of each generator
    against the reference maps; the training maps themselves (a sample of the same size) as the floor a perfect
    generator would reach."""
    n = run.cfg["points"]
    cloud = lambda vols, off: [metrics.point_cloud(v, n, seed=run.seed + off + i)  # noqa: E731
                               for i, v in enumerate(vols)]
    ref = cloud(data.reference, 0)
    d_rr = metrics.chamfer_matrix(ref, ref)
    sets = {**generated, "Training maps (no model)": data.train[:run.cfg["gen_samples"]]}
    out = {}
    for i, (name, vols) in enumerate(sets.items()):
        gen = cloud(vols, 10_000 * (i + 1))
        m = metrics.generation_metrics(metrics.chamfer_matrix(gen, ref), metrics.chamfer_matrix(gen, gen), d_rr)
        m["empty maps"] = int(sum(1 for v in vols if not np.any(v)))
        m["maps"] = len(vols)
        out[name] = m
    return out


def generation_table(run: ChapterRun, scores: dict[str, dict], flows: dict[str, Any]):
    rows = {}
    for name, s in scores.items():
        rows[name if name.startswith("Training") else f"{name} latent"] = {
            "MMD": 1e3 * s["MMD"], "COV": s["COV"], "1-NNA": s["1-NNA"], "empty maps": s["empty maps"]}
    reproduced = pd.DataFrame(rows).T
    reproduced.index.name = "generator"
    side = run.results.paper_table("generation", reproduced)
    cap = (f"Generation of airway trees: MMD (ours: x10³, squared-distance Chamfer in unit-cube coordinates, "
           f"{run.cfg['points']} points per map; the paper's unit is not stated), COV and 1-NNA (%) of "
           f"{run.cfg['gen_samples']} generated maps against {run.cfg['gen_reference']} held-out maps; flow matching "
           f"{run.cfg['gen_epochs']} epochs, {run.cfg['gen_steps']} Euler steps; last row: training maps, what a "
           f"perfect generator would score")
    return side, run.results.table("table-generation", side, cap, data="airway trees (ATM'22 stand-in)")


def figure_4(run: ChapterRun, data: GenerationData, generated: dict[str, np.ndarray], n: int = 4):
    import matplotlib.pyplot as plt

    from ..render import show_volume

    rows = {"Reference (held out)": data.reference, **{f"{k} latent": v for k, v in generated.items()}}
    n = min(n, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(3 * n, 3.2 * len(rows)), squeeze=False)
    for r, (name, vols) in enumerate(rows.items()):
        for c in range(n):
            b0 = metrics.betti_numbers(vols[c])[0] if vols[c].any() else 0
            show_volume(axes[r, c], vols[c], title=f"{name} {c + 1}\n{int(vols[c].sum())} voxels, b0={b0}",
                        size=run.cfg["render_size"] // 2)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    run.results.figure("fig-4", fig, "Figure 4: held-out airway trees (top) and maps generated in each latent space "
                                     "(surface renders, the first maps of each set, not selected)",
                       data="airway trees (ATM'22 stand-in)")
    return fig


# ----------------------------------------------------------------------------------------------- scoreboard
def convergence(run: ChapterRun, cv: dict[str, dict[str, classify.CVResult]], flows: dict[str, Any],
                vaes: dict[str, TrainState] | None) -> dict[str, list]:
    """Record every trained model's loss per epoch (``curves.json``) and check its convergence on the training loss
    (no validation loss is computed): part 1's VAEs (where passed), each network classifier per task and fold, and
    the two flows.  Returns the :class:`~companion.results.convergence.Convergence` list per method name."""
    r, out = run.results, {}
    for name, st in (vaes or {}).items():
        out[name] = [r.training_curve(f"{name} (part 1)", train=[h["loss"] for h in st.history])]
    for key, by_method in cv.items():
        for method, res in by_method.items():
            out.setdefault(f"{key}: {method}", []).extend(
                r.training_curve(f"{method}, {key} fold {f + 1}", train=curve) for f, curve in res.losses.items())
    for name, f in flows.items():
        out[f"{name} flow"] = [r.training_curve(f"the {name} flow", train=[h["loss"] for h in f["state"].history])]
    return out


def classification_guards(task: Task, results: dict[str, classify.CVResult], *methods: str) -> list[str | None]:
    """Guards of a classification comparison: any of ``methods`` predicting one class for (nearly) everything, and
    the first method -- the one claimed better -- no better than chance (100 / K % balanced accuracy): a win at
    chance level is no win."""
    chance = 100.0 / len(task.classes)
    first = classify.balanced_contributions(task.labels, results[methods[0]].pred)
    return [classify.collapsed(results[m], len(task.classes)) for m in methods] + \
        [no_better_than(first, [chance], methods[0], f"chance ({chance:.3g} % balanced accuracy)")]


def record_claims(run: ChapterRun, tasks: dict[str, Task], cv: dict[str, dict[str, classify.CVResult]],
                  maps: dict[str, np.ndarray], scores: dict[str, dict], flows: dict[str, Any],
                  generated: dict[str, np.ndarray], round_trip: dict[str, Any],
                  vaes: dict[str, TrainState] | None = None) -> pd.DataFrame:
    """Decide every claim with the shared rules (:meth:`companion.results.Results.compare`: margins from the claims
    file, one training run per model so at most indicative, convergence from the loss curves): classification from
    paired per-sample parts of the balanced accuracy (out-of-fold predictions, the same samples for every method;
    a method at or below chance level cannot win), generation from paired per-reference MMD / coverage and
    per-slot 1-NNA outcomes, with degeneracy guards (a classifier that predicts one class, a flow whose loss never
    moved or whose maps are mostly empty)."""
    r = run.results
    conv = convergence(run, cv, flows, vaes)
    vae_conv = conv.get("VAEsselSparse", []) + conv.get("Dense VAE", [])

    def bal(task: Task, method: str) -> np.ndarray:
        return classify.balanced_contributions(task.labels, cv[task.key][method].pred)

    def guard(task: Task, *methods: str) -> list[str | None]:
        return classification_guards(task, cv[task.key], *methods)

    def models(task: Task, *methods: str) -> list:
        return [c for m in methods for c in conv.get(f"{task.key}: {m}", [])] + vae_conv

    for key, cid in (("insted", "mlp-beats-voxel-nets-insted"), ("topcow", "mlp-beats-voxel-nets-topcow")):
        t = tasks[key]
        vs = [r.compare(cid, bal(t, "VAEsselSparse + MLP"), bal(t, base), better="higher",
                        names=("VAEsselSparse + MLP", base), metric="balanced accuracy (%)",
                        guards=guard(t, "VAEsselSparse + MLP", base),
                        convergence=models(t, "VAEsselSparse + MLP", base)) for base in ("ResNet", "ViT")]
        r.record(cid, reproduced={m: float(bal(t, m).mean()) for m in ("VAEsselSparse + MLP", "ResNet", "ViT")},
                 verdict=all_of(vs))
    t = tasks["insted"]
    r.record("sparse-rf-far-above-dense-rf",
             reproduced={m: float(bal(t, m).mean()) for m in ("VAEsselSparse + PCA + RF", "Dense VAE + PCA + RF")},
             verdict=r.compare("sparse-rf-far-above-dense-rf", bal(t, "VAEsselSparse + PCA + RF"),
                               bal(t, "Dense VAE + PCA + RF"), better="higher",
                               names=("VAEsselSparse + PCA + RF", "Dense VAE + PCA + RF"),
                               metric="balanced accuracy (%)", guards=guard(t, "VAEsselSparse + PCA + RF"),
                               convergence=vae_conv))
    sep = {k: knn_contributions(v, t.labels) for k, v in maps.items()}
    chance = np.full(len(t.labels), 100.0 / len(t.classes))
    r.record("tsne-separates-sparse-not-dense",
             reproduced={f"{k}: {KNN}-NN balanced accuracy in the t-SNE map (%)": float(v.mean())
                         for k, v in sep.items()} | {"chance (%)": float(chance[0])},
             verdict=all_of([r.compare("tsne-separates-sparse-not-dense", sep["VAEsselSparse"], chance,
                                       better="higher", names=("VAEsselSparse map", "chance"),
                                       metric="5-NN balanced accuracy", convergence=vae_conv),
                             r.compare("tsne-separates-sparse-not-dense", sep["VAEsselSparse"], sep["Dense VAE"],
                                       better="higher", names=("VAEsselSparse map", "Dense VAE map"),
                                       metric="5-NN balanced accuracy", convergence=vae_conv)]))
    # generation: guards, then the three metrics
    guards = []
    for name, f in flows.items():
        guards.append(stalled_loss([h["loss"] for h in f["state"].history], f"the {name} flow"))
        guards.append(degenerate_predictions(generated[name], f"the {name} flow"))
    gen_conv = [c for name in flows for c in conv[f"{name} flow"]] + vae_conv
    s, d = scores["VAEsselSparse"], scores["Dense VAE"]
    names = ("VAEsselSparse latent", "Dense VAE latent")
    r.record("generation-mmd", reproduced={n: 1e3 * x["MMD"] for n, x in zip(names, (s, d))},
             verdict=r.compare("generation-mmd", 1e3 * s["mmd_per_reference"], 1e3 * d["mmd_per_reference"],
                               better="lower", names=names, metric="distance to the closest generated map (x10³)",
                               guards=guards, convergence=gen_conv))
    r.record("generation-cov", reproduced={n: x["COV"] for n, x in zip(names, (s, d))},
             verdict=r.compare("generation-cov", 100 * s["covered_per_reference"], 100 * d["covered_per_reference"],
                               better="higher", names=names, metric="reference map covered (%)", guards=guards,
                               convergence=gen_conv))
    # 1-NNA: the same reference maps (paired) followed by the generated maps paired by index (independent draws,
    # equal numbers: the paired bootstrap of the difference of means is then that of two independent means)
    both_above = min(s["1-NNA"], d["1-NNA"]) >= 50
    v = r.compare("generation-1nna", 100 * s["nna_correct"], 100 * d["nna_correct"], better="lower", names=names,
                  metric="1-NN classified correctly (%)", convergence=gen_conv,
                  guards=guards + [None if both_above else "a 1-NNA below 50 % (lower is no longer better)"])
    r.record("generation-1nna", reproduced={n: x["1-NNA"] for n, x in zip(names, (s, d))}, verdict=v)
    ok = round_trip["latents changed"] == 0 and round_trip["decodings changed"] == 0
    r.record("latent-grid-round-trip", reproduced=round_trip,
             verdict=property_verdict(ok, test="sparse latent -> grid -> sparse latent is the identity, and the "
                                               "decoder gives the same voxels from both, on every test map",
                                      failure=f"changed on {round_trip['latents changed']} latents / "
                                              f"{round_trip['decodings changed']} decodings of {round_trip['maps']}",
                                      n=round_trip["maps"]))
    return r.scoreboard()


def flow_history_figure(run: ChapterRun, flows: dict[str, Any]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, f in flows.items():
        h = f["state"].history
        ax.plot([e["epoch"] + 1 for e in h], [e["loss"] for e in h], label=f"{name} latent")
    ax.set_xlabel("epoch")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    run.results.figure("fig-flow-loss", fig, "Flow-matching loss per epoch in each latent space (standardised "
                                             "latents)", data="airway trees (ATM'22 stand-in)")
    return fig


# ----------------------------------------------------------------------------------------------- exercises
def pooled_vectors(codes: Codes) -> np.ndarray:
    """The alternative to placing the sparse latent on the grid: pool it.  Per map, the mean and the maximum of each
    channel over the occupied positions and their number (2 C + 1 numbers; where on the grid is forgotten)."""
    feats, occ = codes.sparse_grid[:, :-1], codes.sparse_grid[:, -1:] > 0.5
    n = occ.sum(axis=(1, 2, 3, 4))
    mean = (feats * occ).sum(axis=(2, 3, 4)) / np.maximum(n, 1)[:, None]
    mx = np.where(occ, feats, -np.inf).max(axis=(2, 3, 4))
    mx[~np.isfinite(mx)] = 0.0
    return np.concatenate([mean, mx, n[:, None].astype(np.float32)], axis=1)
