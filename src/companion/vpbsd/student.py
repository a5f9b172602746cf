"""The VpbSD student: a light 3D UNet that also returns its bottleneck features Z_stu (paper Section 4.1.2).

Paper facts
    * "A lightweight version of UNet, comprising four layers in both the encoder and decoder"; two convolutions
      per layer, each followed by Group Normalization and Leaky ReLU; downsampling ends each encoder layer; the
      decoder mirrors it; "residual connections" join corresponding encoder and decoder layers.  0.12 M parameters,
      0.11 GFLOPs, 2.49 ms per patch on an A100 (Table 2).
    * Z_stu, "the student model's encoder output" at its deepest layer, has d_s = M channels (the codebook's width).

Our choices
    * MONAI's ``UNet`` with channels (4, 8, 12, 24, 32), strides (2, 2, 2, 2) and ``num_res_units=2``: four
      encoder levels that each halve the size (MONAI puts the stride on the first of the level's two convolutions,
      the paper at the end of the level), a bottom level, and four decoder levels (transposed convolution +
      one convolution); every convolution followed by norm + LeakyReLU, inside MONAI's residual units; the
      encoder-decoder "residual connections" are MONAI's skip connections (concatenation).  125 k parameters,
      matching Table 2's 0.12 M, so M = 32 and Z_stu is at 1/16 of the input per axis (4^3 for a 64^3 patch).
      The widths are ours (the paper gives none); (8, 16, 32, 64) with strides (2, 2, 2) and two convolutions per
      level has 0.30 M parameters -- it reaches 0.12 M only with ``num_res_units=0``, i.e. one convolution per level.
    * GroupNorm with 4 groups; MONAI applies the norm also to the 1-channel output of the last up-convolution,
      where 4 groups are impossible, so the group count is gcd(4, channels) (1 group there).
    * Z_stu is the output of MONAI's bottom layer, caught with a forward hook (MONAI's UNet does not return it).
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: default student layout (see module docstring)
CHANNELS = (4, 8, 12, 24, 32)
STRIDES = (2, 2, 2, 2)
GROUPS = 4
_NORM_NAME = "vpbsd_group"


class _GroupNorm(nn.GroupNorm):
    """GroupNorm with gcd(num_groups, num_channels) groups, so one setting fits every layer."""

    def __init__(self, num_channels: int, num_groups: int = GROUPS, eps: float = 1e-5, affine: bool = True):
        super().__init__(math.gcd(num_groups, num_channels), num_channels, eps=eps, affine=affine)


def _register_norm() -> None:
    from monai.networks.layers.factories import Norm

    if _NORM_NAME.upper() not in Norm.components:
        Norm.add_factory_class(_NORM_NAME, _GroupNorm, "GroupNorm with gcd(num_groups, channels) groups (VpbSD)")


def bottleneck_module(unet: nn.Module) -> nn.Module:
    """The bottom layer of a MONAI ``UNet``: follow the nested (down, SkipConnection(sub), up) blocks inwards."""
    from monai.networks.layers.simplelayers import SkipConnection

    block = unet.model
    while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
        block = block[1].submodule
    return block


class VpbStudent(nn.Module):
    """``forward(x)`` -> (segmentation logits, Z_stu).  Z_stu: (B, channels[-1], D/s, H/s, W/s), s = prod(strides)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels=CHANNELS, strides=STRIDES,
                 num_res_units: int = 2, groups: int = GROUPS, negative_slope: float = 0.01):
        super().__init__()
        from monai.networks.nets import UNet

        _register_norm()
        self.unet = UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                         strides=strides, num_res_units=num_res_units, norm=(_NORM_NAME, {"num_groups": groups}),
                         act=("leakyrelu", {"negative_slope": negative_slope, "inplace": True}))
        self.code_dim = channels[-1]
        self.stride = math.prod(strides)
        self._z: torch.Tensor | None = None
        bottleneck_module(self.unet).register_forward_hook(self._catch)

    def _catch(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._z = output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bad = [s for s in x.shape[2:] if s % self.stride]
        if bad:
            raise ValueError(f"student input sizes {tuple(x.shape[2:])} must be divisible by {self.stride}")
        logits = self.unet(x)
        z, self._z = self._z, None
        return logits, z
