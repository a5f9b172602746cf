"""Segmentation by clustering patch representations (Section 3.3) and its scores.

Paper facts
-----------
- Every voxel's ``p x p x p`` patch (``p = 5``) is resized to ``m³`` and encoded; the means are clustered with
  k-means that uses the latent space's geometry (hyperbolic: Poincaré distance and Fréchet-mean centroids); each
  voxel takes its patch's cluster; clusters are matched to ground-truth classes with the Hungarian algorithm and
  scored with Dice.  ``k`` sets the granularity (three clusters for BraTS: tumour, brain, background).

Our choices
-----------
- Clustering per test volume.  k-means is fitted on at most ``fit_points`` of the volume's encoded voxels (drawn
  with a seeded generator) and every voxel is then assigned to its nearest centroid (same distance).  Euclidean
  latents use scikit-learn's ``KMeans`` (``n_init=4``), hyperbolic ones :func:`.kmeans.fit` (``n_init=4``).
- "Dice at level l" is the mean, over the ground-truth classes present at that level, of the Dice of the
  Hungarian-matched clusters (``k_l`` clusters for ``k_l`` classes), as :func:`.matching.matched_dice` computes it.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from geoopt import PoincareBall

from . import kmeans as hkm
from .matching import matched_dice
from .patches import dense_patches, grid_centres, upsample_labels


def encode_volume(encode: Callable[[torch.Tensor], torch.Tensor], volume: np.ndarray, p: int, m: int, stride: int,
                  chunk: int = 4096, device: str = "cpu") -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Means ``(n, d)`` of the patches at every ``stride``-th voxel, and the shape of that grid."""
    vol = torch.as_tensor(volume, dtype=torch.float32, device=device)[None, None]
    centres = grid_centres(volume.shape, stride)
    grid = tuple(len(range(0, s, stride)) for s in volume.shape)
    out = [encode(dense_patches(vol, centres[i:i + chunk], p, m)).cpu() for i in range(0, len(centres), chunk)]
    return torch.cat(out).double(), grid


def cluster(points: torch.Tensor, k: int, geometry: str, seed: int = 0, fit_points: int = 3000) -> np.ndarray:
    """Cluster labels ``(n,)`` of ``points (n, d)`` (geometry ``"hyperbolic"`` or ``"euclidean"``)."""
    n = points.shape[0]
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=min(n, fit_points), replace=False))
    fit = points[fit_idx]
    if geometry == "hyperbolic":
        ball = PoincareBall(c=1.0)
        centroids, _ = hkm.fit(fit, k, seed=seed, manifold=ball, iters=30, mean_steps=5)
        return ball.dist(points.unsqueeze(1), centroids.unsqueeze(0)).argmin(1).numpy()
    if geometry != "euclidean":
        raise ValueError(f"geometry must be 'hyperbolic' or 'euclidean', got {geometry!r}")
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # fewer distinct points than k (an empty background): empty clusters are fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(k, n_init=4, random_state=seed).fit(fit.numpy())
    return km.predict(points.numpy())


def segment_volume(encode: Callable[[torch.Tensor], torch.Tensor], volume: np.ndarray, ks: tuple[int, ...],
                   geometry: str, *, p: int, m: int, stride: int, seed: int = 0, fit_points: int = 3000,
                   device: str = "cpu") -> tuple[dict[int, np.ndarray], torch.Tensor]:
    """Label maps (one per ``k`` in ``ks``, shape of ``volume``) and the grid's means."""
    mu, grid = encode_volume(encode, volume, p, m, stride, device=device)
    maps = {}
    for k in ks:
        lab = cluster(mu, k, geometry, seed=seed, fit_points=fit_points).reshape(grid)
        maps[k] = upsample_labels(lab, volume.shape, stride)
    return maps, mu


def level_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean over the reference's classes of the Hungarian-matched Dice."""
    return float(np.mean(list(matched_dice(pred, ref).values())))


def matched_labels(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``pred`` relabelled with the ground-truth classes of the Hungarian matching (unmatched clusters: -1)."""
    from .matching import hungarian_match

    mapping = hungarian_match(pred, ref)
    out = np.full(pred.shape, -1, dtype=np.int64)
    for c, r in mapping.items():
        out[pred == c] = r
    return out
