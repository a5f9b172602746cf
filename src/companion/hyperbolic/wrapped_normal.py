"""Wrapped normal distribution on the Poincaré ball.

Paper facts
-----------
- Hsu, Gu et al. (2021), Eq. 4: the prior and the posterior of the VAE are
  wrapped normals, the push-forward of a Euclidean normal along the
  exponential map; they sample and reparametrise "as Mathieu et al. [2019]".
- Eq. 4 prints the density for curvature -1 as
  ``N_E(lambda_mu(z) | 0, Sigma) * d_p(mu, z) / sinh(d_p(mu, z))``.

Our choices
-----------
- We follow Mathieu et al. (2019), "Continuous hierarchical representations
  with Poincaré variational auto-encoders", Appendix (wrapped normal), which
  Eq. 4 abbreviates: for dimension ``d`` and curvature ``-c`` the density with
  respect to the Riemannian volume of the ball is

      log p(z) = log N(lambda_0 * u; 0, sigma^2 I)
                 - (d - 1) * log( sinh(sqrt(c) r) / (sqrt(c) r) ),

  with ``r = d_c(mu, z)`` and ``u = P_{mu->0}(log_mu(z))`` the logarithm
  pulled back to the origin by parallel transport.  ``lambda_0 = 2`` is the
  conformal factor at the origin; ``lambda_0 * u`` are the coordinates of the
  tangent vector in an orthonormal frame, so ``sigma`` is measured in
  geodesic units.  Eq. 4 as printed has exponent 1 instead of ``d - 1`` on
  the sinh ratio (the two agree only for ``d = 2``) and no ``sqrt(c)``; we read
  that as the ``c = 1``, ``d = 2`` case of the formula above.
- Sampling mirrors the density: ``v ~ N(0, sigma^2 I)`` in orthonormal
  coordinates at the origin, ``v / lambda_0`` in geoopt's chart, parallel
  transport to ``mu`` with ``transp0``, then ``expmap(mu, .)``.  Hence a
  small ``sigma`` at ``mu = 0`` gives ``z ~ N(0, (sigma / 2)^2 I)`` in ball
  coordinates (for ``c = 1``).
- ``sigma`` is isotropic: a scalar or a tensor broadcastable to ``mu`` with
  one entry per coordinate (diagonal covariance in the orthonormal frame).
- ``log_prob(..., wrt="lebesgue")`` adds ``d * log(lambda_z)`` to give the
  density with respect to the ball's coordinates, handy for numerical checks.
"""
from __future__ import annotations

import math

import torch
from geoopt import PoincareBall

LAMBDA_0 = 2.0  # conformal factor of the Poincaré ball at the origin, for every c


def _check(mu: torch.Tensor, sigma: torch.Tensor | float, manifold: PoincareBall) -> torch.Tensor:
    if not isinstance(manifold, PoincareBall):
        raise ValueError(f"manifold must be a geoopt PoincareBall, got {type(manifold).__name__}")
    if mu.ndim < 1:
        raise ValueError("mu must have at least one dimension (the ball's coordinates)")
    sigma = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
    if not bool(torch.all(sigma > 0)):
        raise ValueError("sigma must be positive")
    c = float(manifold.c)
    if bool(torch.any(mu.norm(dim=-1) >= 1.0 / math.sqrt(c))):
        raise ValueError("mu must lie inside the ball (norm < 1/sqrt(c))")
    return sigma


def rsample(mu: torch.Tensor, sigma: torch.Tensor | float, manifold: PoincareBall,
            shape: tuple[int, ...] = (), generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparametrised samples of shape ``shape + mu.shape`` (gradients flow to mu and sigma)."""
    sigma = _check(mu, sigma, manifold)
    eps = torch.randn(tuple(shape) + tuple(mu.shape), dtype=mu.dtype, device=mu.device, generator=generator)
    v = sigma * eps / LAMBDA_0
    mu_b = mu.expand_as(v)
    w = manifold.transp0(mu_b, v)
    return manifold.expmap(mu_b, w)


def log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor | float, manifold: PoincareBall,
             wrt: str = "riemannian") -> torch.Tensor:
    """Log-density of ``z`` (shape ``(..., d)``), summed over the last axis.

    ``wrt="riemannian"``: with respect to the ball's Riemannian volume (Mathieu et al. 2019).
    ``wrt="lebesgue"``: with respect to the ball's Euclidean coordinates.
    """
    sigma = _check(mu, sigma, manifold)
    if wrt not in ("riemannian", "lebesgue"):
        raise ValueError(f"wrt must be 'riemannian' or 'lebesgue', got {wrt!r}")
    if z.shape[-1] != mu.shape[-1]:
        raise ValueError(f"z has dimension {z.shape[-1]}, mu has {mu.shape[-1]}")
    d = mu.shape[-1]
    sqrt_c = manifold.c.to(mu.dtype).sqrt()
    mu_b, z_b = torch.broadcast_tensors(mu, z)
    u = manifold.transp0back(mu_b, manifold.logmap(mu_b, z_b))
    x = LAMBDA_0 * u
    sig = sigma.expand_as(x)
    log_normal = (-0.5 * (x / sig) ** 2 - sig.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    r = manifold.dist(mu_b, z_b)
    s = (sqrt_c * r).clamp_min(1e-15)
    # log(sinh(s)/s), stable for small and large s
    log_ratio = torch.where(s < 1e-3, s ** 2 / 6, s + torch.log1p(-torch.exp(-2 * s)) - math.log(2) - s.log())
    out = log_normal - (d - 1) * log_ratio
    if wrt == "lebesgue":
        out = out + d * manifold.lambda_x(z_b).log()
    return out
