"""Hyperbolic k-means on the Poincaré ball.

Paper facts
-----------
- Hsu, Gu et al. (2021), Section 3.3: segmentations come from clustering the
  learned representations with hyperbolic k-means, i.e. k-means with the
  Poincaré distance (their Eq. 1) and centroids that are means on the ball.

Our choices
-----------
- Assignment: nearest centroid under geoopt's ``dist``.
- Centroid: the Fréchet (Karcher) mean, the minimiser of ``sum_i d(m, x_i)^2``.
  Its Riemannian gradient is ``-2 sum_i log_m(x_i)``, so we iterate
  ``m <- exp_m(mean_i log_m(x_i))`` (the classical Karcher fixed-point step,
  Karcher 1977), ``mean_steps`` times, starting from the previous centroid,
  and project with ``projx`` so centroids stay strictly inside the ball.
- Initialisation: k points drawn with a seeded ``torch.Generator`` by
  k-means++ (squared Poincaré distance as the weight); when fewer than k
  distinct points exist (e.g. patches of an empty background), the extra
  centroids duplicate a point and their clusters stay empty.
- An empty cluster keeps its previous centroid.  Iteration stops early when
  no label changes.
- ``n_init`` seeded restarts (as scikit-learn's k-means does); the run with
  the smallest sum of squared Poincaré distances to the centroids wins.
"""
from __future__ import annotations

import torch
from geoopt import PoincareBall


def frechet_mean(points: torch.Tensor, manifold: PoincareBall, init: torch.Tensor | None = None,
                 steps: int = 20) -> torch.Tensor:
    """Karcher mean of ``points (n, d)`` on the ball."""
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError("points must be a non-empty (n, d) tensor")
    m = points[0].clone() if init is None else init.clone()
    for _ in range(steps):
        step = manifold.logmap(m.expand_as(points), points).mean(0)
        m = manifold.projx(manifold.expmap(m, step))
    return m


def _init_pp(points: torch.Tensor, k: int, manifold: PoincareBall, gen: torch.Generator) -> torch.Tensor:
    n = points.shape[0]
    idx = [int(torch.randint(n, (1,), generator=gen))]
    d2 = manifold.dist(points, points[idx[0]]) ** 2
    for _ in range(1, k):
        w = d2.clamp_min(0)
        if float(w.sum()) <= 0:  # fewer distinct points than clusters: a duplicate centroid, whose cluster stays empty
            w = torch.ones_like(w)
        nxt = int(torch.multinomial(w.double(), 1, generator=gen))
        idx.append(nxt)
        d2 = torch.minimum(d2, manifold.dist(points, points[nxt]) ** 2)
    return points[idx].clone()


@torch.no_grad()
def fit(points: torch.Tensor, k: int, seed: int = 0, iters: int = 50, manifold: PoincareBall | None = None,
        mean_steps: int = 20, n_init: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``points (n, d)`` (inside the ball) into ``k`` groups; returns ``(centroids (k, d), labels (n,))``."""
    manifold = PoincareBall(c=1.0) if manifold is None else manifold
    if not isinstance(manifold, PoincareBall):
        raise ValueError(f"manifold must be a geoopt PoincareBall, got {type(manifold).__name__}")
    points = torch.as_tensor(points)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError("points must be a non-empty (n, d) tensor")
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k must be between 1 and the number of points ({points.shape[0]}), got {k}")
    if iters < 1 or n_init < 1:
        raise ValueError("iters and n_init must be at least 1")
    radius = float(manifold.c) ** -0.5
    if bool(torch.any(points.norm(dim=-1) >= radius)):
        raise ValueError(f"points must lie inside the ball (norm < {radius})")
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(n_init):
        centroids, labels = _lloyd(points, _init_pp(points, k, manifold, gen), manifold, iters, mean_steps)
        cost = float((manifold.dist(points, centroids[labels]) ** 2).sum())
        if best is None or cost < best[0]:
            best = (cost, centroids, labels)
    return best[1], best[2]


def _lloyd(points, centroids, manifold, iters, mean_steps):
    """Lloyd's iterations; the Karcher steps of all clusters run together (one logmap per step)."""
    k = centroids.shape[0]
    labels = None
    for _ in range(iters):
        d = manifold.dist(points.unsqueeze(1), centroids.unsqueeze(0))  # (n, k)
        new = d.argmin(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).to(points.dtype)
        occupied = counts > 0
        for _ in range(mean_steps):
            v = manifold.logmap(centroids[labels], points)  # (n, d) tangent vectors at each point's centroid
            step = torch.zeros_like(centroids).index_add_(0, labels, v) / counts.clamp_min(1)[:, None]
            moved = manifold.projx(manifold.expmap(centroids, step))
            centroids = torch.where(occupied[:, None], moved, centroids)  # an empty cluster keeps its centroid
    return centroids, labels
