"""Sparse voxel tensors and the layers VAEsselSparse needs, in pure PyTorch (CPU, CUDA, MPS).

* :mod:`.tensor` -- :class:`SparseTensor` (coordinates + features), hashing, dense <-> sparse;
* :mod:`.kmap` -- neighbour tables (kernel maps) built by coordinate hashing and sorting;
* :mod:`.conv` -- submanifold, stride-2 and transposed / subdivision convolutions (gather -> one GEMM);
* :mod:`.norm` -- sparse group norm and point-wise layers;
* :mod:`.attention` -- windowed (shifted) self-attention over active voxels, 3D positional encoding;
* :mod:`.backend` -- the switch to torchsparse (``COMPANION_SPARSE_BACKEND``).

Every layer is checked against its dense PyTorch counterpart in ``tests/unit/test_sparse_ops.py``.
"""
from .attention import SparseTransformerBlock, SparseWindowAttention, sinusoidal_3d, window_partition
from .conv import SparseDownsample, SparseUpsample, SubMConv3d, dense_weight, gather_gemm
from .norm import SparseGroupNorm, SparseLinear, SparseReLU
from .tensor import SparseTensor, from_dense, from_masks, masks_of, to_dense

__all__ = ["SparseTensor", "from_dense", "from_masks", "masks_of", "to_dense", "SubMConv3d", "SparseDownsample",
           "SparseUpsample", "dense_weight", "gather_gemm", "SparseGroupNorm", "SparseLinear", "SparseReLU",
           "SparseWindowAttention", "SparseTransformerBlock", "sinusoidal_3d", "window_partition"]
