"""Cost of a model as the paper's Table 2 reports it: parameters, GFLOPs and milliseconds per patch.

Paper facts
    * Table 2: SwinUNETR 63.98 M parameters, 98.63 GFLOPs, 22.63 ms; UNETR 98.19 M, 273.84 GFLOPs, 24.26 ms; the
      VpbSD student 0.12 M, 0.11 GFLOPs, 2.49 ms (A100; patch 64^3, batch 2 in training; the inference batch is
      not stated).

Our choices
    * FLOPs from ``torch.utils.flop_counter.FlopCounterMode``: it counts a multiply-add as 2 FLOPs and covers
      convolutions, matrix products and attention, not norms, activations or additions.  Tools such as ``thop`` or
      ``fvcore`` report multiply-adds (half of ours) under the name "FLOPs"; which one the paper used is unknown,
      so :func:`model_cost` reports both.  Measured at 64^3: MONAI SwinUNETR (feature size 48) 62.19 M parameters,
      96.5 GMACs = 193 GFLOPs; the student 0.125 M, 0.093 GMACs.  Table 2's 98.63 and 0.11 "GFLOPs" are thus most
      likely multiply-adds.
    * Time: median of ``repeats`` forward passes of one 1-channel 64^3 block (batch 1) after ``warmup`` passes,
      ``eval()`` and ``torch.no_grad()``, on whatever device the model is on (synchronised on CUDA).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _default_call(model: nn.Module, x: torch.Tensor) -> Any:
    return model(x)


def count_flops(model: nn.Module, x: torch.Tensor, call: Callable[[nn.Module, torch.Tensor], Any] = _default_call) -> int:
    """FLOPs (2 per multiply-add) of one forward pass ``call(model, x)`` under ``no_grad``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call(model, x)
    return int(counter.get_total_flops())


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1,
                 call: Callable[[nn.Module, torch.Tensor], Any] = _default_call) -> float:
    """Median wall time in ms of ``call(model, x)`` (no_grad)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            call(model, x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def model_cost(model: nn.Module, size: int | tuple[int, int, int] = 64, in_channels: int = 1, repeats: int = 5,
               warmup: int = 1, call: Callable[[nn.Module, torch.Tensor], Any] = _default_call,
               time_it: bool = True) -> dict[str, float]:
    """Parameters (M), GFLOPs (2 per MAC), GMACs and ms per block of ``size``^3 for one input block (batch 1).

    Works for any module whose forward takes one (1, C, D, H, W) tensor -- the VpbSD teacher and student, MONAI's
    SwinUNETR and UNETR; pass ``call`` for anything else.  The model is put in ``eval()`` mode and left there."""
    shape = (size,) * 3 if isinstance(size, int) else tuple(size)
    device = next(model.parameters()).device
    model.eval()
    x = torch.randn(1, in_channels, *shape, device=device)
    flops = count_flops(model, x, call)
    out = {"params_M": count_parameters(model) / 1e6, "GFLOPs": flops / 1e9, "GMACs": flops / 2e9,
           "block": "x".join(map(str, shape))}
    if time_it:
        out["ms"] = time_forward(model, x, repeats, warmup, call)
    return out


def table2_models(feature_sizes=(12, 24, 48), unetr: bool = True) -> dict[str, nn.Module]:
    """The models of the paper's Table 2 as we build them: plain MONAI SwinUNETR at each feature size (the paper's
    teacher uses 48), the VpbSD teacher (SwinUNETR + codebook), MONAI UNETR (64^3 input, its defaults: hidden 768,
    12 layers, feature size 16) and the VpbSD student.  Randomly initialised (cost does not depend on weights)."""
    from monai.networks.nets import UNETR, SwinUNETR

    from .student import VpbStudent
    from .teacher import VpbTeacher

    models: dict[str, nn.Module] = {}
    for f in feature_sizes:
        models[f"SwinUNETR f={f}"] = SwinUNETR(in_channels=1, out_channels=1, feature_size=f)
    models[f"VpbSD teacher f={feature_sizes[-1]}"] = VpbTeacher(feature_size=feature_sizes[-1], mode="segment")
    if unetr:
        models["UNETR"] = UNETR(in_channels=1, out_channels=1, img_size=64)
    models["VpbSD student"] = VpbStudent()
    return models


def table2(models: dict[str, nn.Module] | None = None, size: int = 64, repeats: int = 5, warmup: int = 1,
           time_it: bool = True) -> list[dict[str, Any]]:
    """:func:`model_cost` of every model of :func:`table2_models` (or of ``models``), one row each."""
    models = table2_models() if models is None else models
    return [{"model": name, **model_cost(m, size, repeats=repeats, warmup=warmup, time_it=time_it)}
            for name, m in models.items()]
