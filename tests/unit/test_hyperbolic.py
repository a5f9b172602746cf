"""Checks of companion.hyperbolic (chapter 3 foundations)."""
import math

import numpy as np
import pytest
import torch
from geoopt import PoincareBall

from companion.hyperbolic import kmeans, matching, wrapped_normal as wn
from companion.hyperbolic.gyroplane import GyroplaneConv3d, gyroplane

D64 = torch.float64


def _grid(d, n, c):
    r = 1 / math.sqrt(c) * 0.9995
    g = torch.linspace(-r, r, n, dtype=D64)
    pts = torch.stack(torch.meshgrid(*([g] * d), indexing="ij"), -1).reshape(-1, d)
    return pts[pts.norm(dim=-1) < r], float(g[1] - g[0]) ** d


@pytest.mark.parametrize("d,n,c,sigma", [(2, 501, 1.0, 0.6), (3, 81, 0.5, 0.7)])
def test_wrapped_normal_integrates_to_one(d, n, c, sigma):
    m = PoincareBall(c=c)
    mu = torch.tensor([0.35, -0.2, 0.1][:d], dtype=D64)
    pts, vol = _grid(d, n, c)
    total = float(wn.log_prob(pts, mu, sigma, m, wrt="lebesgue").exp().sum() * vol)
    assert abs(total - 1) < 0.01
    # dropping the log-det term (d = 3: exponent d - 1 matters) breaks normalisation
    if d == 3:
        lam = m.lambda_x(pts).log() * d
        bare = wn.log_prob(pts, mu, sigma, m)
        r = m.dist(mu, pts) * math.sqrt(c)
        wrong = bare + (d - 2) * torch.log(torch.sinh(r) / r)  # exponent 1 as printed in Eq. 4
        assert abs(float((wrong + lam).exp().sum() * vol) - 1) > 0.02


def test_wrapped_normal_samples_match_density():
    m = PoincareBall(c=1.0)
    mu = torch.tensor([0.4, 0.3], dtype=D64)
    z = wn.rsample(mu, 0.5, m, (20000,), generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, 2) and bool((z.norm(dim=-1) < 1).all())
    # fraction in a disc around mu: samples vs grid integral of the density
    pts, vol = _grid(2, 601, 1.0)
    inside = (pts - mu).norm(dim=-1) < 0.15
    expected = float(wn.log_prob(pts[inside], mu, 0.5, m, wrt="lebesgue").exp().sum() * vol)
    observed = float(((z - mu).norm(dim=-1) < 0.15).double().mean())
    assert abs(observed - expected) < 0.015


def test_wrapped_normal_tiny_sigma_at_origin_is_euclidean_gaussian():
    m = PoincareBall(c=1.0)
    mu = torch.zeros(3, dtype=D64)
    sigma = 1e-3
    z = torch.tensor([[1e-3, -5e-4, 2e-4], [0.0, 0.0, 0.0]], dtype=D64)
    # ball coordinates: z ~ N(0, (sigma / lambda_0)^2)
    ref = torch.distributions.Normal(0.0, sigma / 2).log_prob(z).sum(-1)
    assert torch.allclose(wn.log_prob(z, mu, sigma, m, wrt="lebesgue"), ref, rtol=1e-5)
    s = wn.rsample(mu, sigma, m, (5000,), generator=torch.Generator().manual_seed(1))
    assert abs(float(s.std()) - sigma / 2) < 2e-5


def test_rsample_is_differentiable():
    m = PoincareBall(c=1.0)
    mu = torch.tensor([0.1, 0.2], dtype=D64, requires_grad=True)
    sigma = torch.tensor(0.3, dtype=D64, requires_grad=True)
    wn.rsample(mu, sigma, m, (4,)).sum().backward()
    assert mu.grad is not None and sigma.grad is not None


def test_gyroplane_tends_to_euclidean_affine_map():
    g = torch.Generator().manual_seed(0)
    z = 0.5 * torch.randn(50, 3, generator=g, dtype=D64)
    p = 0.3 * torch.randn(3, generator=g, dtype=D64)
    a = torch.randn(3, generator=g, dtype=D64)
    small = gyroplane(z, p, a, PoincareBall(c=1e-7))
    assert torch.allclose(small, 4 * (z - p) @ a, atol=1e-4)
    # at c = 1 it is not affine (the check above can fail)
    z1 = z / (1 + z.norm(dim=-1, keepdim=True))
    p1 = p / (1 + p.norm())
    assert not torch.allclose(gyroplane(z1, p1, a, PoincareBall(c=1.0)), 4 * (z1 - p1) @ a, atol=1e-2)


def test_gyroplane_sign_and_zero_on_plane():
    m = PoincareBall(c=1.0)
    p = torch.tensor([0.2, 0.1], dtype=D64)
    a = torch.tensor([1.0, 0.0], dtype=D64)
    on_plane = m.expmap(p, torch.tensor([0.0, 0.3], dtype=D64))
    assert abs(float(gyroplane(on_plane, p, a, m))) < 1e-10
    plus = m.expmap(p, torch.tensor([0.3, 0.0], dtype=D64))
    minus = m.expmap(p, torch.tensor([-0.3, 0.0], dtype=D64))
    assert float(gyroplane(plus, p, a, m)) > 0 > float(gyroplane(minus, p, a, m))


@pytest.mark.parametrize("shared", [True, False])
def test_gyroplane_conv_sums_over_the_window(shared):
    torch.manual_seed(0)
    layer = GyroplaneConv3d(2, 3, 3, shared=shared).double()
    x = 0.2 * torch.randn(1, 2, 4, 5, 3, dtype=D64)
    with torch.no_grad():
        y = layer(x)
        p, a = layer.p, layer.a
    assert y.shape == (1, 3, 4, 5, 3)
    # direct Eq. 7 at one interior and one border voxel
    for (r, s, t) in [(1, 2, 1), (0, 0, 2)]:
        for o in range(3):
            tot, j = 0.0, 0
            for i0 in (-1, 0, 1):
                for i1 in (-1, 0, 1):
                    for i2 in (-1, 0, 1):
                        jj = 0 if shared else j
                        j += 1
                        q = (r + i0, s + i1, t + i2)
                        if all(0 <= q[n] < x.shape[2 + n] for n in range(3)):
                            tot += float(gyroplane(x[0, :, q[0], q[1], q[2]], p[o, jj], a[o, jj], layer.manifold).detach())
            assert abs(float(y[0, o, r, s, t]) - tot) < 1e-9


def _clusters(m, centres, n=25, spread=0.03, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([m.expmap(c.expand(n, -1), spread * torch.randn(n, c.shape[0], generator=g, dtype=D64))
                      for c in centres])


@pytest.mark.parametrize("c", [1.0, 4.0])
def test_kmeans_recovers_clusters_inside_the_ball(c):
    m = PoincareBall(c=c)
    centres = torch.tensor([[0.8, 0.0], [-0.5, 0.6], [0.0, -0.85], [0.05, 0.05]], dtype=D64) / math.sqrt(c)
    pts = _clusters(m, centres)
    truth = np.repeat(np.arange(4), 25)
    cents, labels = kmeans.fit(pts, 4, seed=3, manifold=m)
    assert bool((cents.norm(dim=-1) < 1 / math.sqrt(c)).all())
    assert all(v == 1.0 for v in matching.matched_dice(labels.numpy(), truth).values())
    again, labels2 = kmeans.fit(pts, 4, seed=3, manifold=m)
    assert torch.equal(labels, labels2) and torch.allclose(cents, again)


def test_frechet_mean_of_symmetric_points_is_their_centre():
    m = PoincareBall(c=1.0)
    centre = torch.tensor([0.5, -0.3], dtype=D64)
    v = torch.tensor([[0.4, 0.0], [-0.4, 0.0], [0.0, 0.4], [0.0, -0.4]], dtype=D64)
    pts = m.expmap(centre.expand(4, 2), v)
    assert torch.allclose(kmeans.frechet_mean(pts, m, steps=30), centre, atol=1e-8)


def test_matching_permuted_labels_gives_dice_one():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, size=(6, 7, 5))
    perm = np.array([2, 0, 3, 1]) + 10
    pred = perm[ref]
    assert matching.hungarian_match(pred, ref) == {12: 0, 10: 1, 13: 2, 11: 3}
    assert matching.matched_dice(pred, ref) == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    noisy = pred.copy()
    noisy[0] = 10
    assert min(matching.matched_dice(noisy, ref).values()) < 1.0


def test_bad_inputs_raise():
    m = PoincareBall(c=1.0)
    mu = torch.zeros(2, dtype=D64)
    with pytest.raises(ValueError):
        wn.rsample(mu, 0.5, "ball", (2,))
    with pytest.raises(ValueError):
        wn.rsample(mu, -1.0, m, (2,))
    with pytest.raises(ValueError):
        wn.rsample(torch.tensor([1.0, 0.0], dtype=D64), 0.5, m)
    with pytest.raises(ValueError):
        wn.rsample(torch.tensor(0.0), 0.5, m)
    with pytest.raises(ValueError):
        wn.log_prob(mu, mu, 0.5, m, wrt="other")
    with pytest.raises(ValueError):
        wn.log_prob(torch.zeros(3, dtype=D64), mu, 0.5, m)
    with pytest.raises(ValueError):
        gyroplane(mu, mu, torch.ones(3, dtype=D64), m)
    with pytest.raises(ValueError):
        gyroplane(mu, mu, mu, "ball")
    with pytest.raises(ValueError):
        GyroplaneConv3d(2, 3, 2)
    with pytest.raises(ValueError):
        GyroplaneConv3d(0, 3, 3)
    with pytest.raises(ValueError):
        GyroplaneConv3d(2, 3, 3)(torch.zeros(1, 3, 2, 2, 2))
    pts = _clusters(m, torch.tensor([[0.1, 0.1]], dtype=D64), n=5)
    with pytest.raises(ValueError):
        kmeans.fit(pts, 6)
    with pytest.raises(ValueError):
        kmeans.fit(pts, 2, iters=0)
    with pytest.raises(ValueError):
        kmeans.fit(pts, 2, n_init=0)
    with pytest.raises(ValueError):
        kmeans.fit(pts, 2, manifold="ball")
    with pytest.raises(ValueError):
        kmeans.fit(torch.zeros(0, 2), 1)
    with pytest.raises(ValueError):
        kmeans.fit(torch.tensor([[1.5, 0.0], [0.0, 0.0]]), 1)
    with pytest.raises(ValueError):
        kmeans.frechet_mean(torch.zeros(0, 2), m)
    with pytest.raises(ValueError):
        matching.hungarian_match(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        matching.hungarian_match(np.zeros(0), np.zeros(0))


def test_kmeans_with_fewer_distinct_points_than_clusters_keeps_empty_clusters():
    centroids, labels = kmeans.fit(torch.zeros(3, 2, dtype=D64), 2)
    assert centroids.shape == (2, 2) and len(torch.unique(labels)) == 1
