"""Numba kernels behind :mod:`fastprop.backends.numba_backend`.

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

Two things keep LLVM vectorizing, measured on the 2-core development machine: loops index from 0
(over a view when a slice is wanted; Numba cannot prove ``range(k0, k1)`` indices non-negative and
keeps its wraparound check, which made the chunk sum 4x slower), and rows are copied element by
element (Numba's row-slice assignment is about 3x slower).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: Rows per chunk of a batch reduction in the step-loop kernels.
CHUNK = 64
#: The whole-epoch kernel splits each batch into at most this many chunks of at least CHUNK // 2
#: rows: a split that depends on the batch size only. Every chunk's gradient sum is added up after
#: the batch, so fewer chunks are cheaper (for a batch of 600, 8 chunks of 75 beat 10 of 64 on 2
#: cores); 8 still shares out evenly over 1, 2, 4 or 8 threads.
EPOCH_SPLIT = 8
#: How many rows ahead the whole-epoch kernel asks the CPU to prefetch the rows it will read.
PREFETCH = 4

_REDUCE = {"reassoc", "contract"}
_jit = dict(cache=True, nogil=True)


@numba.njit(parallel=True, **_jit)
def take_rows(src, indices, out):
    """``out[i] = src[indices[i]]``; returns False (copying nothing) if an index is out of range."""
    n = src.shape[0]
    for i in range(indices.shape[0]):
        if indices[i] < -n or indices[i] >= n:
            return False
    for i in prange(indices.shape[0]):
        r = indices[i]
        if r < 0:
            r += n
        for k in range(src.shape[1]):  # an explicit loop: Numba's row-slice assignment is 3x slower
            out[i, k] = src[r, k]
    return True


@numba.njit(inline="always")
def _fma5(a, w, s):
    """``s + a * w`` for 5-tuples ``w`` and ``s``."""
    return s[0] + a * w[0], s[1] + a * w[1], s[2] + a * w[2], s[3] + a * w[3], s[4] + a * w[4]


@numba.njit(fastmath=_REDUCE, **_jit)  # LLVM inlines it; Numba's inline="always" breaks its parfors
def _dot_4x5(a, r0, r1, r2, r3, W, j0):
    """Dot products of rows ``r0..r3`` of ``a`` with rows ``j0..j0+4`` of ``W``, kept in registers.

    ``a``'s elements are converted to ``W``'s dtype (nothing for floats; uint8 codes become exact).

    Returns the five output indices (clamped to the last row of ``W``, so a duplicate is computed
    twice and written with the same value) and one 5-tuple of sums per input row.
    """
    m, zero, f = W.shape[0], W.dtype.type(0), W.dtype.type
    j1, j2, j3, j4 = min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1)
    s0 = s1 = s2 = s3 = (zero, zero, zero, zero, zero)
    for k in range(a.shape[1]):
        w = (W[j0, k], W[j1, k], W[j2, k], W[j3, k], W[j4, k])
        s0 = _fma5(f(a[r0, k]), w, s0)
        s1 = _fma5(f(a[r1, k]), w, s1)
        s2 = _fma5(f(a[r2, k]), w, s2)
        s3 = _fma5(f(a[r3, k]), w, s3)
    return (j0, j1, j2, j3, j4), s0, s1, s2, s3


@numba.njit(fastmath=_REDUCE, **_jit)
def _add_4x5(P, d, x, r0, r1, r2, r3, j0):
    """``P[j] += d[0, j] * x[r0] + ... + d[3, j] * x[r3]`` for the five outputs ``j`` from ``j0``.

    Outputs past the end of ``P`` are clamped to its last row with zero coefficients: they add nothing.
    """
    m, zero, f = P.shape[0], P.dtype.type(0), P.dtype.type
    j = (j0, min(j0 + 1, m - 1), min(j0 + 2, m - 1), min(j0 + 3, m - 1), min(j0 + 4, m - 1))
    a0 = (d[0, j[0]], d[1, j[0]], d[2, j[0]], d[3, j[0]])
    a1 = (d[0, j[1]], d[1, j[1]], d[2, j[1]], d[3, j[1]]) if j0 + 1 < m else (zero, zero, zero, zero)
    a2 = (d[0, j[2]], d[1, j[2]], d[2, j[2]], d[3, j[2]]) if j0 + 2 < m else (zero, zero, zero, zero)
    a3 = (d[0, j[3]], d[1, j[3]], d[2, j[3]], d[3, j[3]]) if j0 + 3 < m else (zero, zero, zero, zero)
    a4 = (d[0, j[4]], d[1, j[4]], d[2, j[4]], d[3, j[4]]) if j0 + 4 < m else (zero, zero, zero, zero)
    for k in range(x.shape[1]):
        x0, x1, x2, x3 = f(x[r0, k]), f(x[r1, k]), f(x[r2, k]), f(x[r3, k])
        P[j[0], k] += a0[0] * x0 + a0[1] * x1 + a0[2] * x2 + a0[3] * x3
        P[j[1], k] += a1[0] * x0 + a1[1] * x1 + a1[2] * x2 + a1[3] * x3
        P[j[2], k] += a2[0] * x0 + a2[1] * x1 + a2[2] * x2 + a2[3] * x3
        P[j[3], k] += a3[0] * x0 + a3[1] * x1 + a3[2] * x2 + a3[3] * x3
        P[j[4], k] += a4[0] * x0 + a4[1] * x1 + a4[2] * x2 + a4[3] * x3


@numba.njit(fastmath=_REDUCE, **_jit)
def _dense_4rows(a, rows, W, b, scale, out, targets):
    """``out[targets[q]] = (a[rows[q]] @ W.T) * scale + b`` for the four rows, 4 x 5 outputs at a time."""
    m = W.shape[0]
    for j0 in range(0, m, 5):
        j, s0, s1, s2, s3 = _dot_4x5(a, rows[0], rows[1], rows[2], rows[3], W, j0)
        for o, s in ((targets[0], s0), (targets[1], s1), (targets[2], s2), (targets[3], s3)):
            for u in range(5):
                out[o, j[u]] = s[u] * scale + b[0, j[u]]


@numba.njit(parallel=True, fastmath=_REDUCE, **_jit)
def dense_forward(x, W, b, p):
    """Return ``z = x @ W.T + b``; when ``p`` has rows (``(batch, n_out)``), also ``p = 1 / (1 + exp(-z))``.

    Each pass over ``k`` computes a block of 4 rows x 5 outputs in registers. Indices past the end
    are clamped: the duplicate row or output is computed twice and written with the same value.
    """
    n, m = x.shape[0], W.shape[0]
    one = x.dtype.type(1)
    out = np.empty((n, m), x.dtype)
    sigmoid = p.shape[0] > 0
    for block in prange((n + 3) // 4):
        i0 = 4 * block
        rows = (i0, min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1))
        _dense_4rows(x, rows, W, b, one, out, rows)
        if sigmoid:
            for i in range(i0, min(i0 + 4, n)):
                for j in range(m):
                    p[i, j] = _sigmoid(out[i, j])
    return out


@numba.njit(parallel=True, fastmath=_REDUCE, **_jit)
def dense_backward(x, W, p, g, dW, db, sigmoid, accumulate, need_dx):
    """Backward of :func:`dense_forward` given ``g = dL/dout`` (and its output ``p`` when ``sigmoid``).

    ``dz = g * p * (1 - p)`` (or ``g``); ``dW``/``db`` get (or get added) ``dz.T @ x`` and
    ``dz.sum(0)``. Returns ``dx = dz @ W`` when ``need_dx``, else an empty array.
    """
    n, k_in = x.shape
    m = W.shape[0]
    dtype = x.dtype
    zero, one = dtype.type(0), dtype.type(1)
    chunks = (n + CHUNK - 1) // CHUNK
    partial_w = np.empty((chunks, m, k_in), dtype)
    partial_b = np.empty((chunks, m), dtype)
    dx = np.empty((n, k_in) if need_dx else (0, 0), dtype)
    for c in prange(chunks):
        start = c * CHUNK
        stop = min(n, start + CHUNK)
        dz = np.zeros((CHUNK + 3, m), dtype)  # rows past the chunk stay zero for the 4-row blocks
        for i in range(start, stop):
            for j in range(m):
                dz[i - start, j] = g[i, j] * p[i, j] * (one - p[i, j]) if sigmoid else g[i, j]
        for j in range(m):
            s = zero
            for r in range(stop - start):
                s += dz[r, j]
            partial_b[c, j] = s
        pw = partial_w[c]
        for j in range(m):
            for k in range(k_in):
                pw[j, k] = zero
        for i0 in range(start, stop, 4):
            i1, i2, i3 = min(i0 + 1, stop - 1), min(i0 + 2, stop - 1), min(i0 + 3, stop - 1)
            block = dz[i0 - start:i0 - start + 4]  # rows past the chunk are zero: they add nothing
            for j0 in range(0, m, 5):
                _add_4x5(pw, block, x, i0, i1, i2, i3, j0)
        if need_dx:
            for i in range(start, stop):
                r = i - start
                dx[i, :] = zero
                for j0 in range(0, m - 3, 4):
                    a0, a1, a2, a3 = dz[r, j0], dz[r, j0 + 1], dz[r, j0 + 2], dz[r, j0 + 3]
                    for k in range(k_in):
                        dx[i, k] += a0 * W[j0, k] + a1 * W[j0 + 1, k] + a2 * W[j0 + 2, k] + a3 * W[j0 + 3, k]
                for j in range(m - m % 4, m):
                    a0 = dz[r, j]
                    for k in range(k_in):
                        dx[i, k] += a0 * W[j, k]
    # Chunk sums are added in chunk order on this thread: the same bits for any thread count.
    total_w, total_b = partial_w[0], partial_b[0]
    for c in range(1, chunks):
        for j in range(m):
            total_b[j] += partial_b[c, j]
            for k in range(k_in):
                total_w[j, k] += partial_w[c, j, k]
    for j in range(m):
        db[0, j] = db[0, j] + total_b[j] if accumulate else total_b[j]
        for k in range(k_in):
            dW[j, k] = dW[j, k] + total_w[j, k] if accumulate else total_w[j, k]
    return dx


@numba.njit(**_jit)
def relu(z):
    """Return ``max(z, 0)``."""
    out = np.empty_like(z)
    zero = z.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = zero if z[i, j] < zero else z[i, j]  # NaN stays NaN, as in numpy.maximum
    return out


@numba.njit(**_jit)
def relu_backward(y, dy):
    """Return ``dy * (y > 0)``."""
    out = np.empty_like(y)
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            out[i, j] = dy[i, j] * (one if y[i, j] > zero else zero)
    return out


@numba.njit(inline="always")
def _row_max_and_exp_sum(z, i):
    """``max(z[i])`` and ``sum(exp(z[i] - max))``."""
    top = z[i, 0]
    for j in range(1, z.shape[1]):
        top = max(top, z[i, j])
    total = z.dtype.type(0)
    for j in range(z.shape[1]):
        total += np.exp(z[i, j] - top)
    return top, total


@numba.njit(**_jit)
def softmax_cross_entropy(z, t):
    """Return ``-t * log_softmax(z)``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        log_total = np.log(total)
        for j in range(z.shape[1]):
            out[i, j] = -t[i, j] * (z[i, j] - top - log_total)
    return out


@numba.njit(**_jit)
def softmax_cross_entropy_gradient(z, t):
    """Return ``softmax(z) * sum(t) - t``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        mass = z.dtype.type(0)
        for j in range(z.shape[1]):
            mass += t[i, j]
        for j in range(z.shape[1]):
            out[i, j] = np.exp(z[i, j] - top) / total * mass - t[i, j]
    return out


@numba.njit(**_jit)
def sgd_update(param, grad, learning_rate):
    """In place: ``param -= learning_rate * grad`` with the rate rounded to the arrays' dtype."""
    rate = param.dtype.type(learning_rate)
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    for i in range(flat_param.shape[0]):
        flat_param[i] -= rate * flat_grad[i]


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Ask the CPU to start loading ``array[row, :]`` (a C-contiguous 2-D array) into cache.

    One ``llvm.prefetch`` per 64-byte line; a hint only: it changes no value and faults on nothing.
    """

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, arguments[0])
        zero = context.get_constant(types.intp, 0)
        first = cgutils.get_item_pointer(context, builder, array_type, array, [arguments[1], zero])
        start = builder.bitcast(first, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [start.type], ir.FunctionType(ir.VoidType(), [start.type, i32, i32, i32]))
        row_bytes = builder.extract_value(array.strides, 0)
        line = context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, zero, row_bytes, line) as (offset, _):
            # read access, keep in all cache levels, data
            builder.call(prefetch, [builder.gep(start, [offset]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, row), codegen


def _sigmoid(z):
    """``1 / (1 + exp(-z))`` for one float; the Numba implementation below is picked per float type."""
    return 1.0 / (1.0 + math.exp(-z))


@intrinsic
def _pow2(typingctx, n, like):
    """``2.0 ** n`` in the float type of ``like``, for an int64 ``n`` inside that type's normal range."""

    def codegen(context, builder, signature, arguments):
        bits, mantissa, bias = (32, 23, 127) if signature.return_type.bitwidth == 32 else (64, 52, 1023)
        integer = ir.IntType(bits)
        exponent = builder.trunc(arguments[0], integer) if bits < 64 else arguments[0]
        exponent = builder.shl(builder.add(exponent, integer(bias)), integer(mantissa))
        return builder.bitcast(exponent, context.get_value_type(signature.return_type))

    return like(types.int64, like), codegen


@overload(_sigmoid, jit_options=dict(fastmath={"contract"}, error_model="numpy"))
def _sigmoid_overload(z):
    """A sigmoid that LLVM can vectorize: no libm call, no branch (8x faster in a loop, float32).

    ``exp(x) = 2**k * exp(r)`` with ``x = k ln 2 + r``, ``|r| <= ln(2) / 2`` (Cody-Waite: ln 2 split
    in two so ``r`` is exact), ``exp(r)`` by its Taylor series to degree 7 for float32 and 13 for
    float64, which leaves under half an ulp; ``2**k`` is built from its bits, in two factors so
    that ``exp`` overflows to inf exactly where it should. ``x`` is clamped below where the sigmoid
    is 1 to the last bit, and above where ``exp`` is inf (the sigmoid 0). Largest relative error
    against a float64 reference over [-800, 800]: 1.5e-7 in float32 (NumPy's float32 sigmoid:
    2.3e-7), 4.8e-16 in float64; sigmoid(-inf) = 0, sigmoid(inf) = 1, NaN stays NaN (tested).
    """
    if not isinstance(z, types.Float):
        return None
    f = z
    single = z.bitwidth == 32
    low, high = (-86.6, 88.8) if single else (-707.0, 709.9)  # 2**(k - 1) stays a normal number
    coefficients = [1.0 / math.factorial(i) for i in range(7 if single else 13, -1, -1)]
    head, tail = coefficients[0], tuple(coefficients[1:])

    def implementation(z):
        x = min(max(-z, f(low)), f(high))
        k = np.int64(x * f(1.4426950408889634) + f(1100.5)) - 1100  # floor(x / ln 2 + 1/2): truncates a positive
        n = f(k)
        r = x - n * f(0.693145751953125) - n * f(1.428606820309417e-06)
        p = f(head)
        for c in tail:
            p = p * r + f(c)
        s = f(1) / (f(1) + (p + p) * _pow2(k - 1, z))
        return s if z == z else z

    return implementation


@numba.njit(parallel=True, **_jit)
def encode_pixels(images, levels, codes):
    """``codes = images * levels`` as uint8 if every value is exactly ``k / levels`` for a ``k`` in 0..255.

    Returns False (``codes`` then holds garbage) when any value is not: NaN, out of range, or between
    levels. Exact means the bits of ``dtype(k) / dtype(levels)``, which is what ``pixels / 255`` gives.
    Branch-free, so that LLVM vectorizes it: 14.9 ms for 50,000 Fashion-MNIST rows on the 2-core
    development machine, measured with::

        python -m timeit -n 5 -r 5 -s "import numpy; from fastprop.backends import load_backend; \\
          from fastprop.bench import load_rows; k = load_backend('numba')._k; x = load_rows(50000)[0]; \\
          c = numpy.empty(x.shape, numpy.uint8); k.encode_pixels(x, 255, c)" "k.encode_pixels(x, 255, c)"
    """
    n, k_in = images.shape
    level = images.dtype.type(levels)
    decoded = np.arange(256).astype(images.dtype) / level
    lowest, highest = images.dtype.type(-0.5), images.dtype.type(255.49)
    exact = np.empty(n, np.bool_)
    for i in prange(n):
        row, out = images[i], codes[i]
        ok = True
        for k in range(k_in):
            v = row[k] * level
            inside = v >= lowest and v <= highest  # False for NaN
            c = np.uint8(v + images.dtype.type(0.5)) if inside else np.uint8(0)
            ok &= inside and decoded[c] == row[k]
            out[k] = c
        exact[i] = ok
    return exact.all()


@numba.njit(fastmath=_REDUCE, error_model="numpy", **_jit)
def _sigmoid_mse_chunk(images, scale, targets, rows, start, stop, W, b, P, pb, d, t):
    """Forward, cost and gradient sums of ``rows[start:stop]``; returns their summed cost (float64).

    1. Forward: each block of four rows is read straight from ``images`` (prefetched ``PREFETCH``
       rows ahead) and ``z`` goes to ``d``; the target rows are gathered into ``t``.
    2. Sigmoid, cost and ``dz`` for the whole chunk in one loop LLVM vectorizes; ``pb`` gets
       ``sum(dz)``, and ``d`` becomes ``dz * scale`` (zero in the padding rows of the last block).
    3. ``P = sum(dz.T @ x)``, four rows at a time, the rows read again from L1/L2.

    ``images * scale`` are the inputs: ``scale`` is 1 for float images and ``1 / levels`` for
    :func:`encode_pixels` codes, folded into ``z`` and into ``dz`` before it meets ``x``. ``d`` and
    ``t`` are workspaces of at least ``stop - start`` rows rounded up to a multiple of 4.
    """
    m, k_in = W.shape
    zero, one = W.dtype.type(0), W.dtype.type(1)
    n, last = stop - start, stop - 1
    padded = 4 * ((n + 3) // 4)
    for ahead in range(start, min(start + PREFETCH, stop)):  # the rows before the first look-ahead
        _prefetch_row(images, rows[ahead])
        _prefetch_row(targets, rows[ahead])
    for i0 in range(start, stop, 4):
        for ahead in range(i0 + PREFETCH, min(i0 + PREFETCH + 4, stop)):
            _prefetch_row(images, rows[ahead])
            _prefetch_row(targets, rows[ahead])
        block = (rows[i0], rows[min(i0 + 1, last)], rows[min(i0 + 2, last)], rows[min(i0 + 3, last)])
        q = i0 - start
        _dense_4rows(images, block, W, b, scale, d, (q, q + 1, q + 2, q + 3))
    for q in range(n):
        r = rows[start + q]
        for j in range(m):
            t[q, j] = targets[r, j]
    flat_d, flat_t, cost = d[:padded].reshape(padded * m), t[:padded].reshape(padded * m), 0.0
    for i in range(n * m):
        p = _sigmoid(flat_d[i])
        e = flat_t[i] - p
        cost += e * e
        flat_d[i] = -e * p * (one - p)
    for j in range(m):
        pb[j] = zero
    for q in range(n):
        for j in range(m):
            pb[j] += d[q, j]
            d[q, j] *= scale
    for q in range(n, padded):
        for j in range(m):
            d[q, j] = zero
    for j in range(m):
        for k in range(k_in):
            P[j, k] = zero
    for i0 in range(start, stop, 4):
        r0, r1 = rows[i0], rows[min(i0 + 1, last)]
        r2, r3 = rows[min(i0 + 2, last)], rows[min(i0 + 3, last)]
        for j0 in range(0, m, 5):
            _add_4x5(P, d[i0 - start:i0 - start + 4], images, r0, r1, r2, r3, j0)
    return 0.5 * cost


@numba.njit(**_jit)
def epoch_chunk_rows(n):
    """Rows per chunk of a batch of ``n`` in the whole-epoch kernel (see ``EPOCH_SPLIT``)."""
    return max(CHUNK // 2, (n + EPOCH_SPLIT - 1) // EPOCH_SPLIT)


@numba.njit(parallel=True, **_jit)
def _sigmoid_mse_chunks(images, scale, targets, rows, size, W, b, partial_w, partial_b, cost, d, t):
    """:func:`_sigmoid_mse_chunk` on each chunk of ``size`` rows of a batch, chunks in parallel."""
    n = rows.shape[0]
    for c in prange((n + size - 1) // size):
        start = c * size
        cost[c] = _sigmoid_mse_chunk(images, scale, targets, rows, start, min(n, start + size), W, b,
                                     partial_w[c], partial_b[c], d[c], t[c])


@numba.njit(fastmath=_REDUCE, **_jit)
def _sum_and_step(partial_w, chunks, W, dW, learning_rate, k0, k1):
    """``dW[:, k0:k1] = sum of the chunks' partial_w`` in chunk order, then ``W -= learning_rate * dW``.

    The loops run over views from index 0: Numba then knows no index is negative and LLVM vectorizes.
    """
    for j in range(W.shape[0]):
        out, weights = dW[j, k0:k1], W[j, k0:k1]
        first = partial_w[0, j, k0:k1]
        for k in range(out.shape[0]):
            out[k] = first[k]
        for c in range(1, chunks):
            part = partial_w[c, j, k0:k1]
            for k in range(out.shape[0]):
                out[k] += part[k]
        for k in range(out.shape[0]):
            weights[k] -= learning_rate * out[k]


@numba.njit(parallel=True, **_jit)
def _sum_and_step_parallel(partial_w, chunks, W, dW, learning_rate):
    """:func:`_sum_and_step` on ``EPOCH_SPLIT`` blocks of columns in parallel (sums stay in chunk order).

    Long blocks let the hardware prefetcher stream the other threads' chunk sums (blocks of 64
    columns were 8 % slower for W1 on 2 cores).
    """
    k_in = W.shape[1]
    size = (k_in + EPOCH_SPLIT - 1) // EPOCH_SPLIT
    for block in prange(EPOCH_SPLIT):
        start = min(k_in, size * block)
        _sum_and_step(partial_w, chunks, W, dW, learning_rate, start, min(k_in, start + size))


@numba.njit(**_jit)
def sigmoid_mse_epoch(images, scale, targets, order, batch_size, W, b, dW, db, learning_rate, workspace):
    """One epoch of SGD on ``Linear`` + ``Sigmoid`` + ``MeanSquareError``: batches ``order[i:i + batch_size]``.

    Per batch: up to ``EPOCH_SPLIT`` chunks in parallel (:func:`_sigmoid_mse_chunk`, reading each row
    straight from ``images``: no gathered copy), then the chunk sums added in chunk order into
    ``dW``/``db`` (overwritten, as the step loop leaves them) and ``W -= learning_rate * dW``,
    ``b -= learning_rate * db``. ``workspace`` is :func:`epoch_workspace`'s. Returns the summed cost
    ``sum(1/2 (t - p)**2)`` in float64 as ``[over the batches of the first batch's size, over a
    smaller last batch]``.
    """
    partial_w, partial_b, cost, d, t = workspace
    total = np.zeros(2)
    first = min(batch_size, order.shape[0])
    for start in range(0, order.shape[0], batch_size):
        rows = order[start:start + batch_size]
        size = epoch_chunk_rows(rows.shape[0])
        chunks = (rows.shape[0] + size - 1) // size
        _sigmoid_mse_chunks(images, scale, targets, rows, size, W, b, partial_w, partial_b, cost, d, t)
        _sum_and_step_parallel(partial_w, chunks, W, dW, learning_rate)
        kind = 0 if rows.shape[0] == first else 1
        for c in range(chunks):
            total[kind] += cost[c]
        for j in range(W.shape[0]):
            s = partial_b[0, j]
            for c in range(1, chunks):
                s += partial_b[c, j]
            db[0, j] = s
            b[0, j] -= learning_rate * s
    return total


def epoch_workspace(W, batch_size):
    """The arrays :func:`sigmoid_mse_epoch` works in for batches of up to ``batch_size`` rows, made once."""
    m, rows = W.shape[0], 4 * -(-epoch_chunk_rows(batch_size) // 4)
    return (np.empty((EPOCH_SPLIT,) + W.shape, W.dtype), np.empty((EPOCH_SPLIT, m), W.dtype),
            np.empty(EPOCH_SPLIT), np.empty((EPOCH_SPLIT, rows, m), W.dtype), np.empty((EPOCH_SPLIT, rows, m), W.dtype))
