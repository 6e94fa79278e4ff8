"""Numba kernels behind :mod:`fastprop.backends.numba.backend`.

The modules: :mod:`.intrinsics` (compile options, a prefetch hint, ``2**n`` from its bits, a
sigmoid LLVM can vectorize), :mod:`.dense` (forward and backward of dense layers with few
outputs), :mod:`.step` (the other kernels of the contract methods: row gather, ReLU, softmax
cross-entropy, SGD, Adam), :mod:`.conv` (column matrices, epilogues and max pooling on channels-last images),
:mod:`.products` (oneMKL products on Numba's threads, with the passes around them fused),
:mod:`.dense_epoch` (the whole-epoch program of dense ReLU stacks on softmax cross-entropy),
:mod:`.blocks` (register blocks written as vector IR), :mod:`.direct` (the direct convolution for few
inputs per output, alone and with its max pooling, in those blocks),
:mod:`.winograd` (the transforms of 3x3 stride-1 convolutions computed as Winograd F(2x2, 3x3)),
:mod:`.norm`, :mod:`.augment` and
:mod:`.epoch` (the whole-epoch kernel for Linear + Sigmoid + summed squared error, and the pixel
encoding it reads). The backend uses
them through this package's names only.

Every kernel is type-generic: Numba compiles one specialization per dtype, and constants are made
with ``x.dtype.type(...)`` so float32 math stays float32. The backend checks shapes, dtypes and
contiguity before calling; these kernels do not bounds-check (``take_rows`` checks its indices).

Determinism: a result never depends on the thread count. Row-parallel kernels compute each output
row on one thread in a fixed order; reductions over the batch (weight and bias gradients) sum fixed
chunks of rows in parallel (``CHUNK`` rows in the step-loop kernels; in the whole-epoch kernel a
split that depends on the batch size only), then add the chunk sums in chunk order (on one thread,
or split by columns, each column still summed in chunk order). ``fastmath`` is limited to ``reassoc``
and ``contract`` on the dot-product kernels: it lets LLVM vectorize the reductions and use FMA, an
order fixed at compile time (on this CPU), so results differ from NumPy only by float rounding and
are identical from run to run.

Two things keep LLVM vectorizing: loops index from 0 (over a view when a slice is wanted; Numba
cannot prove ``range(k0, k1)`` indices non-negative and keeps its wraparound check, which stops
the vectorizer), and rows are copied element by element (Numba's row-slice assignment is slower).

Numba's on-disk cache (``cache=True``) is checked against each kernel's own source file only: after
editing a module whose functions other modules' kernels inline (:mod:`.intrinsics`, :mod:`.step`,
:mod:`.conv`'s serial helpers),
delete the cached machine code (``__pycache__/*.nbi`` and ``*.nbc`` beside these modules) so that
nothing stale is loaded.
"""

from __future__ import annotations

from .conv import (
    ROWS_PER_CHUNK,
    bias_epilogue,
    col2im,
    im2col,
    masked_gradient,
    maxpool_backward,
    maxpool_forward,
    sum_chunks,
)
from .augment import shift_images
from .dense import CHUNK, IDENTITY, RELU, SIGMOID, backward_workspace, dense_backward, dense_forward
from . import dense_epoch, direct, products
from .direct import IMAGES_PER_CHUNK, conv_forward_direct, conv_weight_gradient_direct
from .epoch import encode_pixels, epoch_workspace, sigmoid_mse_epoch
from .norm import batch_norm_backward, batch_norm_forward
from .winograd import TILE_ENTRIES, winograd_filter, winograd_input, winograd_output
from .intrinsics import _sigmoid as _sigmoid  # for jitted code outside: the tests check its accuracy
from .step import (
    adam_update,
    checksum,
    relu,
    relu_backward,
    sgd_update,
    sgd_update_parallel,
    softmax_cross_entropy,
    softmax_cross_entropy_gradient,
    take_rows,
)

__all__ = [
    "CHUNK",
    "IDENTITY",
    "RELU",
    "SIGMOID",
    "adam_update",
    "backward_workspace",
    "batch_norm_backward",
    "batch_norm_forward",
    "checksum",
    "IMAGES_PER_CHUNK",
    "ROWS_PER_CHUNK",
    "bias_epilogue",
    "col2im",
    "conv_forward_direct",
    "conv_weight_gradient_direct",
    "im2col",
    "masked_gradient",
    "products",
    "maxpool_backward",
    "maxpool_forward",
    "sum_chunks",
    "dense_backward",
    "dense_epoch",
    "direct",
    "dense_forward",
    "encode_pixels",
    "epoch_workspace",
    "relu",
    "relu_backward",
    "sgd_update",
    "sgd_update_parallel",
    "shift_images",
    "sigmoid_mse_epoch",
    "softmax_cross_entropy",
    "softmax_cross_entropy_gradient",
    "take_rows",
    "TILE_ENTRIES",
    "winograd_filter",
    "winograd_input",
    "winograd_output",
]
