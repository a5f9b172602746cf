"""Gyroplane layer and gyroplane 3-D convolution.

Paper facts
-----------
- Hsu, Gu et al. (2021), Eq. 5 (after Ganea et al. 2018, "Hyperbolic neural
  networks"; Mathieu et al. 2019): ``f_{a,p}(z) = sgn(<a, log_p(z)>_p) |a|_p
  d_P(z, H_{a,p})``, the hyperbolic analogue of the Euclidean affine map
  ``<a, z - p> = sgn(<a, z - p>) |a| d_E(z, H_{a,p})``.
- Eq. 6 (curvature -1): ``d_P(z, H_{a,p}) = asinh( 2 |<-p (+) z, a>| /
  ((1 - |-p (+) z|^2) |a|) )`` with ``(+)`` Möbius addition.
- Eq. 7: for a k x k x k kernel (odd k) the output at voxel (r, s, t) is the
  sum of ``f_{a,p}(x_{alpha,beta,gamma})`` over the window centred there.
- Padding, stride, dilation and channels "extend in the same way" as for
  Euclidean convolutions (no further detail).

Our choices
-----------
- Curvature ``-c``: Ganea et al.'s general form, ``d_c = asinh(2 sqrt(c)
  |<-p (+)_c z, a>| / ((1 - c |-p (+)_c z|^2) |a|)) / sqrt(c)``, computed by
  geoopt's ``dist2plane(signed=True)``; the sign of ``<-p (+) z, a>`` is the
  sign of ``<a, log_p(z)>_p`` because ``log_p(z)`` is a positive multiple of
  ``-p (+) z``.  ``|a|_p = lambda_p^c |a|``.
- Parameters per output channel: ``p = expmap0(p_raw)`` (so p always lies
  in the ball) and ``a`` a free vector read in the tangent space at p (not
  transported from the origin).  As ``c -> 0`` the layer tends to
  ``4 <a, z - p>`` (lambda_p -> 2 and d_c -> 2 <a, z - p> / |a|).
- Ambiguity of Eq. 7: read literally, one pair (a, p) serves every kernel
  position, so the layer is a gyroplane map followed by a k^3 box sum.  That
  is the default (``shared=True``).  ``shared=False`` gives each kernel
  position its own (a, p), the closer analogue of a Euclidean convolution.
- Input ``(B, in_dim, D, H, W)``: one point of the in_dim-ball per voxel (a
  single ball factor).  Stride 1, odd k, output the size of the input:
  window positions outside the volume contribute 0 (zero padding of the
  gyroplane map, not of the input, since 0 is a point of the ball).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from geoopt import PoincareBall
from torch import nn


def gyroplane(z: torch.Tensor, p: torch.Tensor, a: torch.Tensor, manifold: PoincareBall) -> torch.Tensor:
    """Eq. 5: signed, scaled distance of ``z (..., d)`` to the gyroplane ``H_{a,p}``.

    ``p`` and ``a`` broadcast against ``z``; returns shape ``broadcast(...)``.
    """
    if not isinstance(manifold, PoincareBall):
        raise ValueError(f"manifold must be a geoopt PoincareBall, got {type(manifold).__name__}")
    if not (z.shape[-1] == p.shape[-1] == a.shape[-1]):
        raise ValueError(f"last dimensions differ: z {z.shape[-1]}, p {p.shape[-1]}, a {a.shape[-1]}")
    dist = manifold.dist2plane(z, p, a, signed=True)
    return manifold.lambda_x(p) * a.norm(dim=-1) * dist


class GyroplaneConv3d(nn.Module):
    """Eq. 7: ``y[o] = sum over the k^3 window of f_{a_o,p_o}(x)``; output ``(B, out_channels, D, H, W)``."""

    def __init__(self, in_dim: int, out_channels: int, kernel_size: int, c: float = 1.0,
                 shared: bool = True, init_std: float = 0.1):
        super().__init__()
        if in_dim < 1 or out_channels < 1:
            raise ValueError("in_dim and out_channels must be positive")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (Eq. 7), got {kernel_size}")
        self.in_dim, self.out_channels, self.kernel_size, self.shared = in_dim, out_channels, kernel_size, shared
        self.manifold = PoincareBall(c=c)
        n_pos = 1 if shared else kernel_size ** 3
        self.p_raw = nn.Parameter(init_std * torch.randn(out_channels, n_pos, in_dim))
        self.a = nn.Parameter(init_std * torch.randn(out_channels, n_pos, in_dim) + init_std)

    @property
    def p(self) -> torch.Tensor:
        return self.manifold.expmap0(self.p_raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input (B, {self.in_dim}, D, H, W), got {tuple(x.shape)}")
        k, h = self.kernel_size, self.kernel_size // 2
        z = x.movedim(1, -1).unsqueeze(-2).unsqueeze(-2)  # (B, D, H, W, 1, 1, d)
        f = gyroplane(z, self.p, self.a, self.manifold)  # (B, D, H, W, out, n_pos)
        f = f.permute(0, 4, 5, 1, 2, 3)  # (B, out, n_pos, D, H, W)
        if self.shared:
            ones = f.new_ones(self.out_channels, 1, k, k, k)
            return F.conv3d(f[:, :, 0], ones, padding=h, groups=self.out_channels)
        D, H, W = f.shape[-3:]
        fp = F.pad(f, (h, h, h, h, h, h))
        y = f.new_zeros(f.shape[0], self.out_channels, D, H, W)
        j = 0
        for i0 in range(k):
            for i1 in range(k):
                for i2 in range(k):
                    # kernel position (i0, i1, i2) sees the voxel at offset (i - h) from the centre
                    y = y + fp[:, :, j, i0:i0 + D, i1:i1 + H, i2:i2 + W]
                    j += 1
        return y
