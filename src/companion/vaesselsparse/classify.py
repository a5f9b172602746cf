"""Classification of vessel maps by cross-validation: latent vectors with PCA + random forest or an MLP, and voxel
networks (MONAI's 3D ResNet and ViT).  Every method sees the same folds and returns its *out-of-fold* prediction for
every sample, so that methods can be compared sample by sample (paired) and scored per fold.

Paper facts (VAEsselSparse, Sec. 4): 3-fold cross-validation; PCA keeping 15 components, then a random forest of 200
trees; an MLP of 3 layers with 64 hidden units trained 200 epochs at learning rate 3e-4; balanced accuracy and
macro-F1.  Ours: stratified folds; PCA and feature standardisation fitted on each training fold only; the MLP's
optimiser (AdamW, full batch) and ReLU; the voxel networks' sizes and epochs, trained with the MLP's recipe
(AdamW, lr from the preset, mini-batches) and no augmentation, for any of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import metrics
from ..progress import progress


@dataclass
class CVResult:
    """Out-of-fold predictions of one method: ``pred[i]`` is the class predicted for sample ``i`` by the model
    trained on the folds that do not hold it; ``fold[i]`` is the sample's test fold."""
    method: str
    pred: np.ndarray
    fold: np.ndarray
    losses: dict[int, list[float]] = field(default_factory=dict)  # fold -> mean training loss per epoch (networks)


def folds_of(labels: Sequence[int], k: int, seed: int) -> np.ndarray:
    """Stratified k-fold assignment (scikit-learn's StratifiedKFold, shuffled with ``seed``): fold index per sample.
    Every class needs at least ``k`` samples."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    counts = np.bincount(y)
    if (counts[counts > 0] < k).any():
        raise ValueError(f"every class needs at least {k} samples for {k}-fold cross-validation; class sizes "
                         f"{counts.tolist()}")
    fold = np.empty(len(y), dtype=int)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        fold[test] = f
    return fold


def pca_rf(x: np.ndarray, y: np.ndarray, fold: np.ndarray, *, components: int, trees: int, seed: int,
           method: str) -> CVResult:
    """PCA (``components``, fewer when a training fold has fewer samples) then a random forest, fitted per fold."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier

    pred = np.empty(len(y), dtype=int)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        k = min(components, int(tr.sum()) - 1, x.shape[1])
        pca = PCA(k, random_state=seed).fit(x[tr])
        rf = RandomForestClassifier(trees, random_state=seed, n_jobs=1).fit(pca.transform(x[tr]), y[tr])
        pred[te] = rf.predict(pca.transform(x[te]))
    return CVResult(method, pred, fold)


def _fit_predict(model: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, *, epochs: int,
                 lr: float, batch: int | None, seed: int, desc: str) -> tuple[np.ndarray, list[float]]:
    """Plain loop: AdamW, cross-entropy, ``batch`` samples per step (None: full batch), shuffled by ``seed``.
    Returns the test predictions and the mean training loss of each epoch (for the convergence check)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    n = len(x_tr)
    bs = n if batch is None else batch
    model.train()
    curve = []
    for _ in progress(range(epochs), desc=desc, leave=False, disable=epochs < 20):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            out = model(x_tr[idx])
            out = out[0] if isinstance(out, tuple) else out
            loss = nn.functional.cross_entropy(out, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        curve.append(total / n)
    model.eval()
    with torch.no_grad():
        outs = []
        for i in range(0, len(x_te), max(bs, 1)):
            o = model(x_te[i:i + max(bs, 1)])
            outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.cat(outs).argmax(1).numpy(), curve


def standardiser(x_train: np.ndarray, *, min_sd: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale for ``(x - mean) / scale`` from the training fold.  A feature (nearly) constant within the
    training fold carries nothing the model could learn from, and dividing by its near-zero sd would blow its test
    values up (by up to 10⁶ on the lesion maps): it is zeroed instead (scale = inf)."""
    mu, sd = x_train.mean(0), x_train.std(0)
    return mu, np.where(sd > min_sd, sd, np.inf)


def mlp(x: np.ndarray, y: np.ndarray, fold: np.ndarray, *, hidden: int, epochs: int, lr: float, seed: int,
        method: str) -> CVResult:
    """A 3-layer MLP (Linear-ReLU-Linear-ReLU-Linear, ``hidden`` units) on standardised vectors, full-batch AdamW."""
    n_cls = int(y.max()) + 1
    pred = np.empty(len(y), dtype=int)
    losses = {}
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        mu, sd = standardiser(x[tr])
        torch.manual_seed(seed + int(f))
        net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                            nn.Linear(hidden, n_cls))
        xt = lambda a: torch.as_tensor((a - mu) / sd, dtype=torch.float32)  # noqa: E731
        pred[te], losses[int(f)] = _fit_predict(net, xt(x[tr]), torch.as_tensor(y[tr]), xt(x[te]), epochs=epochs,
                                                lr=lr, batch=None, seed=seed + int(f), desc=f"{method} fold {f + 1}")
    return CVResult(method, pred, fold, losses)


def voxel_network(kind: str, grid: int, n_classes: int, cfg: dict[str, Any]) -> nn.Module:
    """MONAI's 3D ResNet-10 (``widen_factor`` from the preset, stride-2 first convolution) or ViT (hidden size,
    depth, heads and patch from the preset) with a linear classification head (MONAI's defaults checked: ResNet's
    ``fc`` is linear; ViT's ``post_activation`` Tanh is switched off)."""
    from monai.networks.nets import ViT, resnet10

    if kind == "ResNet":
        return resnet10(spatial_dims=3, n_input_channels=1, num_classes=n_classes, widen_factor=cfg["resnet_widen"],
                        conv1_t_stride=2)
    if kind == "ViT":
        if grid % cfg["vit_patch"]:
            raise ValueError(f"vit_patch {cfg['vit_patch']} must divide the grid {grid}")
        # post_activation=None: MONAI's ViT puts a Tanh on its classification head by default, which caps the
        # logits at ±1 before cross-entropy (a handicap, not the architecture: ViT's head is a plain linear layer)
        return ViT(in_channels=1, img_size=grid, patch_size=cfg["vit_patch"], hidden_size=cfg["vit_hidden"],
                   mlp_dim=2 * cfg["vit_hidden"], num_layers=cfg["vit_layers"], num_heads=cfg["vit_heads"],
                   classification=True, num_classes=n_classes, spatial_dims=3, post_activation=None)
    raise ValueError(f"unknown voxel network {kind!r}; use 'ResNet' or 'ViT'")


def voxel_cv(kind: str, volumes: np.ndarray, y: np.ndarray, fold: np.ndarray, cfg: dict[str, Any], *, seed: int,
             method: str) -> CVResult:
    """Train ``kind`` on the voxels of each training fold (binary maps as float input) and predict the test fold."""
    n_cls = int(y.max()) + 1
    pred = np.empty(len(y), dtype=int)
    losses = {}
    x = torch.as_tensor(np.asarray(volumes, dtype=np.float32))[:, None]
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        torch.manual_seed(seed + int(f))
        net = voxel_network(kind, volumes.shape[-1], n_cls, cfg)
        pred[te], losses[int(f)] = _fit_predict(net, x[tr], torch.as_tensor(y[tr]), x[te],
                                                epochs=cfg["voxel_epochs"], lr=cfg["voxel_lr"],
                                                batch=cfg["voxel_batch"], seed=seed + int(f),
                                                desc=f"{method} fold {f + 1}")
    return CVResult(method, pred, fold, losses)


def fold_scores(y: np.ndarray, res: CVResult) -> pd.DataFrame:
    """Balanced accuracy and macro-F1 (per cent) of each test fold."""
    rows = []
    for f in np.unique(res.fold):
        te = res.fold == f
        rows.append({"fold": int(f) + 1, "Bal. Accuracy": 100 * metrics.balanced_accuracy(y[te], res.pred[te]),
                     "Macro-F1": 100 * metrics.macro_f1(y[te], res.pred[te])})
    return pd.DataFrame(rows)


def balanced_contributions(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-sample parts of the balanced accuracy: ``100 * [pred_i == y_i] * N / (K * n_{y_i})``, whose mean over
    the samples is the balanced accuracy (in per cent) of the pooled out-of-fold predictions.  Paired between two
    methods on the same samples, their differences are what the verdict rule bootstraps."""
    y, pred = np.asarray(y), np.asarray(pred)
    classes, counts = np.unique(y, return_counts=True)
    n_of = dict(zip(classes.tolist(), counts.tolist()))
    w = np.array([len(y) / (len(classes) * n_of[c]) for c in y.tolist()])
    return 100.0 * (pred == y) * w


def collapsed(res: CVResult, n_classes: int) -> str | None:
    """A degeneracy finding when a method predicts a single class for every sample (a collapsed classifier)."""
    if len(np.unique(res.pred)) == 1 and n_classes > 1:
        return f"{res.method} predicts one class for all {len(res.pred)} samples"
    return None
