"""CUDA kernels of the CuPy backend: compiling them and launching them for the contract methods.

Four families, all templated on the element type (``float`` or ``double``), compiled by NVRTC on
first use and memoized per dtype (CuPy also keeps the binaries in its on-disk kernel cache). Their
CUDA source lives beside this module in ``cuda/`` (shipped as package data): ``common.cuh`` with the
device helpers they share, then one file per family, each compiled after the activation and loss
codes of :mod:`.plan` as ``#define`` lines, so that Python and CUDA share one definition of them.

* *step kernels* (``cuda/step_kernels.cu``) that the contract methods use around cuBLAS products: a
  row gather, column sums and a warp-per-row softmax family; and fused elementwise kernels, whose
  one-line bodies are CuPy ``ElementwiseKernel`` operations below;
* *conv kernels* (``cuda/conv_kernels.cu``) around the convolution's cuBLAS products: im2col and its
  adjoint, the bias (and ReLU) epilogue, and max pooling forward and backward, each thread writing
  one element (no atomics, so results are deterministic);
* *norm kernels* (``cuda/norm_kernels.cu``) of the batch-normalisation methods: column statistics and
  gradient sums over chunks of rows, added in a fixed order (no atomics), and the elementwise passes;
* *epoch kernels* (``cuda/epoch_kernels.cu``): tiled matrix products with fused epilogues (bias and
  activation; the previous activation's slope; the SGD step on weights and bias) and warp-per-row
  kernels for layers with few outputs, the last of them fused with the cost. :class:`.epoch.EpochProgram`
  builds a whole training step from them without cuBLAS, because CuPy refuses cuBLAS calls while a
  stream is captured, and replays the epoch from CUDA graphs.

Matrices are row-major and C-contiguous.
"""

from __future__ import annotations

import enum
import functools
from importlib import resources

import cupy
import numpy

from ..plan import cuda_defines


class SoftmaxRows(enum.IntEnum):
    """What :func:`softmax_rows` writes, its ``mode``."""

    CROSS_ENTROPY = 0  # -t * log_softmax(z)
    GRADIENT = 1  # softmax(z) * t.sum(1) - t
    PROBABILITIES = 2  # softmax(z)


def cuda_source(family: str) -> str:
    """The CUDA source of ``family`` (``"step_kernels"``, ``"epoch_kernels"``, ``"conv_kernels"``,
    ``"norm_kernels"``) for NVRTC.

    The codes of :mod:`.plan` and :class:`SoftmaxRows` and the launch shapes (:func:`launch_defines`) as
    ``#define`` lines, then ``cuda/common.cuh``,
    then ``cuda/<family>.cu``, read from the installed package. One string, so that CuPy's kernel
    cache, keyed by the source, sees a change in any part.
    """
    folder = resources.files(__package__).joinpath("cuda")
    modes = "".join(f"#define SOFTMAX_ROWS_{mode.name} {mode.value}\n" for mode in SoftmaxRows)
    files = (folder.joinpath("common.cuh"), folder.joinpath(f"{family}.cu"))
    text = "".join(file.read_text(encoding="utf-8") for file in files)
    return cuda_defines() + modes + launch_defines() + text


#: Tile shapes of the dense kernels, largest first; the first that fills the device is used.
TILES = ((64, 64), (32, 64), (32, 32))
#: Widest layer for the warp-per-row forward and the shared-memory weight step.
NARROW_FORWARD, NARROW_UPDATE = (8, 16, 32), (8, 16)
#: Launch shapes, defined here once and handed to the CUDA sources as ``#define`` lines
#: (:func:`launch_defines`): threads per block of the one-dimensional kernels, batch rows (warps) per
#: block of the warp-per-row kernels, the (COLUMNS, SLICES) block of narrow_update, and the rows of
#: one chunk of the batch-norm column sums (a constant, so that their order is the same on every device).
THREADS, ROWS_PER_BLOCK, COLUMNS, SLICES, CHUNK_ROWS = 256, 4, 8, 32, 512


def launch_defines() -> str:
    """The launch shapes as ``#define`` lines, for the CUDA sources."""
    shapes = {"THREADS": THREADS, "ROWS_PER_BLOCK": ROWS_PER_BLOCK, "COLUMNS": COLUMNS, "SLICES": SLICES,
              "CHUNK_ROWS": CHUNK_ROWS}
    return "".join(f"#define {name} {value}\n" for name, value in shapes.items())
#: The loss argument of the kernels for a layer that is not the last: no cost is fused in.
_NO_LOSS = 0
_I32, _I64 = numpy.int32, numpy.int64


def _ctype(dtype) -> str:
    return {"float32": "float", "float64": "double"}[numpy.dtype(dtype).name]


def _blocks(n: int, size: int) -> int:
    return max(1, -(-n // size))


@functools.cache
def _compiled(family: str, names: tuple, plain: tuple = ()) -> dict:
    """``family``'s kernels ``names`` (template name expressions) and ``plain`` (extern "C"), built once."""
    module = cupy.RawModule(code=cuda_source(family), name_expressions=names)
    return {name: module.get_function(name) for name in names + plain}


def step_kernels(dtype) -> dict:
    t = _ctype(dtype)
    names = tuple(f"{name}<{t}>" for name in ("gather_rows", "column_sums", "softmax_rows"))
    return _compiled("step_kernels", names)


def epoch_kernels(dtype) -> dict:
    t = _ctype(dtype)
    names = [f"{k}<{t}, {bm}, {bn}>" for bm, bn in TILES
             for k in ("dense_forward", "dense_backward_input", "dense_update")]
    names += [f"narrow_forward<{t}, {n}>" for n in NARROW_FORWARD]
    names += [f"narrow_update<{t}, {n}>" for n in NARROW_UPDATE]
    return _compiled("epoch_kernels", tuple(names) + (f"batch_loss<{t}>",), ("advance_cursor",))


CONV_KERNELS = ("im2col", "col2im", "add_bias", "maxpool_forward", "maxpool_backward")


def conv_kernels(dtype) -> dict:
    t = _ctype(dtype)
    return _compiled("conv_kernels", tuple(f"{name}<{t}>" for name in CONV_KERNELS))


NORM_KERNELS = ("norm_chunk_sums", "norm_statistics", "norm_affine", "norm_gradient_chunk_sums",
                "norm_gradient_sums", "norm_input_gradient")


def norm_kernels(dtype) -> dict:
    t = _ctype(dtype)
    return _compiled("norm_kernels", tuple(f"{name}<{t}>" for name in NORM_KERNELS))


# ---------------------------------------------------------------------------------- step kernels

_ELEMENTWISE = {
    "sigmoid": ("T z", "T p", "p = T(1) / (T(1) + exp(-z))"),
    "sigmoid_delta": ("T p, T dp", "T dz", "dz = dp * (p * (T(1) - p))"),
    "relu": ("T z", "T y", "y = z < T(0) ? T(0) : z"),
    "relu_backward": ("T y, T dy", "T dx", "dx = dy * (y > T(0) ? T(1) : T(0))"),
    "sgd": ("T g, T lr", "T w", "w -= lr * g"),
    # splitmix64 of (seed + (i + 1) * golden ratio): distinct keys, so argsort gives a permutation
    "shuffle_keys": ("uint64 seed", "uint64 key", """
        unsigned long long s = seed + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
        s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ull;
        s = (s ^ (s >> 27)) * 0x94D049BB133111EBull;
        key = s ^ (s >> 31);"""),
}


@functools.cache
def elementwise(name: str) -> cupy.ElementwiseKernel:
    """The fused elementwise kernel ``name`` (type-generic; CuPy compiles it per dtype)."""
    in_params, out_params, operation = _ELEMENTWISE[name]
    return cupy.ElementwiseKernel(in_params, out_params, operation, f"fastprop_{name}")


def gather_rows(table, index, out) -> None:
    """``out[r] = table[index[r]]`` for a 2-D table and 1-D int64 index (indices wrap modulo rows)."""
    kernel = step_kernels(table.dtype)[f"gather_rows<{_ctype(table.dtype)}>"]
    blocks = min(_blocks(out.size, THREADS), 65535)
    rows, cols = out.shape
    kernel((blocks,), (THREADS,), (table, index, out, _I64(rows), _I64(cols), _I64(table.shape[0])))


def column_sums(g, out, accumulate: bool) -> None:
    """``out = g.sum(0)`` (or ``+=`` when ``accumulate``) for a 2-D ``g`` and contiguous ``out``."""
    kernel = step_kernels(g.dtype)[f"column_sums<{_ctype(g.dtype)}>"]
    rows, cols = g.shape
    kernel((_blocks(cols, 32),), (32, 8), (g, out, _I64(rows), _I64(cols), _I32(accumulate)))


def softmax_rows(z, t, mode: int):
    """A new array: ``-t * log_softmax(z)`` (mode 0), ``softmax(z) * t.sum(1) - t`` (1), ``softmax(z)`` (2).

    The modes are :class:`SoftmaxRows`'s.
    """
    out = cupy.empty_like(z)
    kernel = step_kernels(z.dtype)[f"softmax_rows<{_ctype(z.dtype)}>"]
    rows, cols = z.shape
    grid, block = (_blocks(rows, ROWS_PER_BLOCK),), (32 * ROWS_PER_BLOCK,)
    kernel(grid, block, (z, t, out, _I64(rows), _I64(cols), _I32(mode)))
    return out


try:  # cuBLAS GEMM with beta, so that accumulating weight gradients needs no temporary
    from cupy.cublas import gemm as _gemm
except ImportError:  # CuPy before v9
    _gemm = None


def weight_gradient(dz, x, dW, accumulate: bool) -> None:
    """``dW = dz.T @ x``, or ``dW += dz.T @ x`` when ``accumulate``, as one cuBLAS GEMM."""
    if dz.shape[0] == 0:  # no rows: CuPy would give cuBLAS leading dimensions of 0, which it refuses
        if not accumulate:
            dW.fill(0)
        return
    if _gemm is not None:
        _gemm("T", "N", dz, x, out=dW, alpha=1.0, beta=1.0 if accumulate else 0.0)
    elif accumulate:
        dW += dz.T @ x
    else:
        cupy.matmul(dz.T, x, out=dW)


# ---------------------------------------------------------------------------------- conv kernels
#
# Images are channels-last (n, H, W, C) and C-contiguous. ``window`` is ``(kernel, stride)`` or
# ``(kernel, stride, padding)``, each a ``(rows, columns)`` pair, and ``out_size`` the ``(Ho, Wo)`` it
# gives. The kernels index with int: the caller keeps every array below INT_LIMIT elements.

#: The conv kernels take arrays of fewer elements than this.
INT_LIMIT = 2**31


def _image_kernel(name, dtype, arrays, image_shape, out_size, window) -> None:
    """Run ``name<dtype>`` on ``arrays``, one thread per element of the last (what it writes)."""
    kernel = conv_kernels(dtype)[f"{name}<{_ctype(dtype)}>"]
    sizes = (*image_shape[1:], *out_size, *(v for pair in window for v in pair))  # H, W, C, Ho, Wo, kh, ...
    size = arrays[-1].size
    kernel((min(_blocks(size, THREADS), 65535),), (THREADS,), (*arrays, *map(_I32, sizes), _I64(size)))


def im2col(x, window, out_size):
    """A new ``(n * Ho * Wo, kh * kw * C)`` array: the input values each output position reads, ordered
    ``(p, q, channel)``, zeros in the padding."""
    (kh, kw), (ho, wo) = window[0], out_size
    columns = cupy.empty((x.shape[0] * ho * wo, kh * kw * x.shape[3]), x.dtype)
    _image_kernel("im2col", x.dtype, (x, columns), x.shape, out_size, window)
    return columns


def col2im(columns, image_shape, window, out_size):
    """The adjoint of :func:`im2col`: a new ``image_shape`` array, each element the sum of the entries of
    ``columns`` that :func:`im2col` copies from it."""
    dx = cupy.empty(image_shape, columns.dtype)
    _image_kernel("col2im", dx.dtype, (columns, dx), image_shape, out_size, window)
    return dx


def add_bias(y, b, relu: bool) -> None:
    """In place on a contiguous ``(rows, K)`` ``y``: ``y += b`` (``b`` has K elements), then ``max(y, 0)``
    when ``relu``."""
    kernel = conv_kernels(y.dtype)[f"add_bias<{_ctype(y.dtype)}>"]
    grid = (min(_blocks(y.size, THREADS), 65535),)
    kernel(grid, (THREADS,), (y, b, _I32(y.shape[1]), _I32(relu), _I64(y.size)))


def maxpool_forward(x, window, out_size):
    """New ``(n, Ho, Wo, C)`` arrays ``(y, argmax)``: each window's maximum and its place ``p * kw + q``
    (int32; the first of equal values; the first NaN wins)."""
    y = cupy.empty((x.shape[0], *out_size, x.shape[3]), x.dtype)
    argmax = cupy.empty(y.shape, numpy.int32)
    _image_kernel("maxpool_forward", x.dtype, (x, y, argmax), x.shape, out_size, window)
    return y, argmax


def maxpool_backward(argmax, dy, window, image_shape):
    """A new ``image_shape`` array: each element the sum of ``dy`` over the windows whose ``argmax`` is it."""
    dx = cupy.empty(image_shape, dy.dtype)
    _image_kernel("maxpool_backward", dy.dtype, (argmax, dy, dx), image_shape, dy.shape[1:3], window)
    return dx


# ---------------------------------------------------------------------------------- norm kernels
#
# x and dy are (rows, C) and C-contiguous, the per-column vectors (C,) of their dtype. The column sums
# run on a grid of (column groups of 32, chunks of CHUNK_ROWS rows), so rows are limited by the grid's
# 65535 chunks.

#: The norm kernels take at most this many rows.
NORM_ROW_LIMIT = 65535 * CHUNK_ROWS
_NORM_BLOCK = (32, THREADS // 32)


def _norm_launch(name, dtype, grid, block, args) -> None:
    norm_kernels(dtype)[f"{name}<{_ctype(dtype)}>"](grid, block, args)


def _column_grid(cols: int) -> tuple:
    return (min(_blocks(cols, THREADS), 65535),)


def batch_norm_forward(x, gamma, beta, mean, var, training: bool, momentum: float, eps: float, relu: bool):
    """``Backend.batch_norm_forward`` for ``rows >= 1`` (``>= 2`` in training): new ``(y, mu,
    inverse_std)``, the running ``mean`` and ``var`` updated in place in training."""
    (rows, cols), dtype = x.shape, x.dtype
    chunks = _blocks(rows, CHUNK_ROWS) if training else 0
    partial = cupy.empty((max(chunks, 1), 2, cols), numpy.float64)  # not read in evaluation
    if training:
        _norm_launch("norm_chunk_sums", dtype, (_blocks(cols, 32), chunks), _NORM_BLOCK,
                     (x, partial, _I64(rows), _I64(cols)))
    mu, inverse_std = cupy.empty(cols, dtype), cupy.empty(cols, dtype)
    _norm_launch("norm_statistics", dtype, _column_grid(cols), (THREADS,), (
        x, partial, mean, var, mu, inverse_std, _I64(rows), _I64(cols), _I64(chunks), _I32(training),
        numpy.float64(momentum), numpy.float64(eps)))
    y = cupy.empty_like(x)
    _norm_launch("norm_affine", dtype, (min(_blocks(x.size, THREADS), 65535),), (THREADS,),
                 (x, mu, inverse_std, gamma, beta, y, _I64(cols), _I64(x.size), _I32(relu)))
    return y, mu, inverse_std


def batch_norm_backward(x, mu, inverse_std, gamma, dy, dgamma, dbeta, relu_output, training: bool,
                        accumulate: bool, need_dx: bool):
    """``Backend.batch_norm_backward`` for ``rows >= 1``: ``dgamma``, ``dbeta`` written or added to, and a
    new ``dx`` (or None unless ``need_dx``)."""
    (rows, cols), dtype = x.shape, x.dtype
    relu = relu_output is not None
    mask = relu_output if relu else dy  # a pointer of the right type; not read without relu
    chunks = _blocks(rows, CHUNK_ROWS)
    partial = cupy.empty((chunks, 2, cols), numpy.float64)
    _norm_launch("norm_gradient_chunk_sums", dtype, (_blocks(cols, 32), chunks), _NORM_BLOCK,
                 (x, mu, inverse_std, dy, mask, _I32(relu), partial, _I64(rows), _I64(cols)))
    means = cupy.empty((2, cols), dtype)
    _norm_launch("norm_gradient_sums", dtype, _column_grid(cols), (THREADS,), (
        partial, dgamma, dbeta, means, _I64(rows), _I64(cols), _I64(chunks), _I32(accumulate)))
    if not need_dx:
        return None
    dx = cupy.empty_like(x)
    _norm_launch("norm_input_gradient", dtype, (min(_blocks(x.size, THREADS), 65535),), (THREADS,), (
        x, mu, inverse_std, gamma, dy, mask, _I32(relu), means, dx, _I64(cols), _I64(x.size), _I32(training)))
    return dx
