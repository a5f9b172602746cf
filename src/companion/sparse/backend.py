"""The one switch between this package's pure-PyTorch kernels and torchsparse.

``COMPANION_SPARSE_BACKEND`` (environment variable, read at call time):

* ``torch`` -- always the pure-PyTorch kernels (CPU, CUDA, MPS);
* ``torchsparse`` -- submanifold convolutions run through ``torchsparse.nn.functional.conv3d`` (CUDA only; fails
  with a clear error if torchsparse cannot be imported);
* ``auto`` (default) -- torchsparse when it imports *and* the features live on a CUDA device, otherwise torch.

Only the submanifold convolution is delegated: it is the bulk of the compute and its output coordinates are the
input's on both backends.  Strided and transposed convolutions stay in PyTorch because torchsparse's transposed
convolution maps back to coordinates cached by the encoder, while VAEsselSparse's decoder must *create* voxels.

torchsparse's conventions (coordinate order, kernel-offset order) changed between releases, so the first call on
torchsparse compares it with the PyTorch kernel on a small random input and refuses to continue on a mismatch,
rather than training with silently permuted weights.  torchsparse is not installable on the machines that build this
book (no PyPI wheel, CUDA needed): that check and ``tests/unit/test_sparse_ops.py::test_torchsparse_parity`` are what
guard this path, and they run only where torchsparse is installed.
"""
from __future__ import annotations

import importlib.util
import os

import torch

_VALID = ("auto", "torch", "torchsparse")
_checked: dict[str, bool] = {}


def requested() -> str:
    value = os.environ.get("COMPANION_SPARSE_BACKEND", "auto").strip().lower()
    if value not in _VALID:
        raise ValueError(f"COMPANION_SPARSE_BACKEND={value!r} is not valid; use one of {', '.join(_VALID)}")
    return value


def torchsparse_available() -> bool:
    return importlib.util.find_spec("torchsparse") is not None


def use_torchsparse(device: torch.device | None = None) -> bool:
    """Whether the submanifold convolutions should run on torchsparse now."""
    choice = requested()
    if choice == "torch":
        return False
    if choice == "torchsparse":
        if not torchsparse_available():
            raise RuntimeError("COMPANION_SPARSE_BACKEND=torchsparse but torchsparse is not importable; install it "
                               "(https://github.com/mit-han-lab/torchsparse, needs CUDA) or set "
                               "COMPANION_SPARSE_BACKEND=torch")
        return True
    return torchsparse_available() and torch.cuda.is_available() and (device is None or device.type == "cuda")


def describe() -> str:
    return f"COMPANION_SPARSE_BACKEND={requested()}; torchsparse importable: {torchsparse_available()}"


def _raw_subm(x, weight, bias, kernel_size: int) -> torch.Tensor:
    import torchsparse
    import torchsparse.nn.functional as tsF

    c = x.coords.int()
    if x.stride != 1:
        c = c.clone()
        c[:, 1:] //= x.stride
    t = torchsparse.SparseTensor(x.feats, c.contiguous())
    y = tsF.conv3d(t, weight, kernel_size, bias=bias, stride=1)
    # torchsparse keeps the input's row order for stride-1 convolutions
    return y.F if hasattr(y, "F") else y.feats


def torchsparse_subm(x, weight, bias, kernel_size: int) -> torch.Tensor:
    """Submanifold convolution on torchsparse, checked once per process against the PyTorch kernel."""
    if not _checked.get("subm"):
        from .conv import gather_gemm
        from .kmap import submanifold_table
        from .tensor import SparseTensor

        g = torch.Generator(device="cpu").manual_seed(0)
        coords = torch.unique(torch.randint(0, 12, (300, 3), generator=g), dim=0)
        coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1).to(x.device)
        probe = SparseTensor(coords, torch.randn(len(coords), 3, generator=g).to(x.device), 1, (12, 12, 12))
        w = torch.randn(kernel_size ** 3, 3, 2, generator=g).to(x.device)
        ref = gather_gemm(probe.feats, submanifold_table(probe, kernel_size), w)
        got = _raw_subm(probe, w, None, kernel_size)
        if got.shape != ref.shape or not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
            raise RuntimeError("the installed torchsparse disagrees with companion.sparse on a submanifold "
                               "convolution (its coordinate or kernel-offset conventions differ from the ones this "
                               "book was written for); set COMPANION_SPARSE_BACKEND=torch")
        _checked["subm"] = True
    return _raw_subm(x, weight, bias, kernel_size)
