"""Kernels of the convolution and pooling contract methods, on channels-last images ``(n, H, W, C)``.

A convolution with few inputs per output (``C * kh * kw`` small, a first layer on raw pixels) runs
directly, in register blocks written as vector IR (:func:`_broadcast_fma`): ``PIXELS_PER_BLOCK``
output pixels x ``CHANNEL_VECTORS`` vectors of channels forward (bias and ReLU in the same pass),
``TAPS_PER_BLOCK`` taps x the same channels for the weight gradient, sized at import for the
vector registers of the instruction set Numba compiles for (:func:`..target.vector_unit`; Numba's
cache keeps one build per CPU name and features). Wider convolutions
are matrix products the backend hands to BLAS; these kernels make the column matrix (``im2col``),
apply the epilogue (bias, ReLU) and the backward's mask and bias sum, and add columns back into
images (``col2im``). Every kernel is parallel over images or rows of its output, and reductions
over the batch sum fixed chunks of images in chunk order, so results never depend on the thread
count.

Measured with ``PYTHONPATH=. python benchmarks/direct_conv.py HEAD~1`` (the kernels before this
design and these, interleaved in one process, 7 rounds of 5 calls, min / median ms; 128 images
28x28x1 -> 32 channels, 3x3, padding 1, ReLU, float32, 2 Numba threads) on a 2-core KVM "Intel Xeon
Processor" (Emerald Rapids), shared with other jobs (load average ~6: medians are loose):

=======================================  ===============  ===============
kernel, instruction set (blocks)         before           after
=======================================  ===============  ===============
forward, AVX-512 512-bit (10 pixels)     5.71 / 8.97      3.15 / 4.18
weight gradient, AVX-512 (9 taps)        10.76 / 13.81    2.06 / 4.79
forward, AVX2 ``haswell`` (6 pixels)     5.51 / 6.81      2.76 / 4.21
weight gradient, AVX2 (5 taps)           5.10 / 9.62      2.32 / 2.91
=======================================  ===============  ===============

(At a quieter moment, AVX-512: forward 4.64 -> 1.81 ms, weight gradient 6.58 -> 1.74 ms.) AVX2 is
built with ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=<Haswell's features, -avx512f>`` (the string
in ``tests/backends/test_numba_direct_conv.py``). The CNN workload's epoch (2,560 images) did not
change measurably there (7.6 s before and after): its BLAS products took 5.8 s of it.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import target
from .intrinsics import JIT

#: Bytes and number of the vector registers of the instruction set Numba compiles for; the target is
#: decided first, so that importing the kernels before the backend sizes the blocks as it compiles.
target.configure(numba)
VECTOR_BYTES, VECTOR_REGISTERS = target.vector_unit(numba)[1:]
#: Vectors of output channels in a register block of the direct convolution: 32 channels, the
#: CNN's first layer, with 512-bit float32 vectors.
CHANNEL_VECTORS = 2
#: Output pixels per forward register block, by register count: with AVX2's 16, 6 pixels x 2 sums,
#: 2 weight vectors and 1 broadcast value; with AVX-512's 32, LLVM loads every broadcast of a step
#: before the first multiply-add (14 pixels spilled sums), so each pixel takes a third register:
#: 10 x 3 + 2. Both checked in ``inspect_asm``: no stack access in the loop.
PIXELS_PER_BLOCK = {16: 6, 32: 10}[VECTOR_REGISTERS]
#: Taps per weight-gradient register block, the same way: their sums, 2 bias sums and 2 output-gradient
#: vectors (5 x 2 + 5 with AVX2; 9 x 3 + 4 with AVX-512, a whole 3 x 3 window).
TAPS_PER_BLOCK = {16: 5, 32: 9}[VECTOR_REGISTERS]

#: Images per chunk of a batch reduction (weight and bias gradients of the direct convolution).
IMAGES_PER_CHUNK = 8
#: Rows per chunk of the bias-gradient sums of the matrix-product path.
ROWS_PER_CHUNK = 256


def _vector_type(dtype):
    """LLVM's vector of ``VECTOR_BYTES`` of ``dtype`` (a Numba float type) and its element type."""
    element = ir.FloatType() if dtype.bitwidth == 32 else ir.DoubleType()
    return ir.VectorType(element, VECTOR_BYTES * 8 // dtype.bitwidth), element


@intrinsic
def _block_channels(typingctx, like):
    """The channels of one register block for arrays like ``like``: ``CHANNEL_VECTORS`` vectors."""

    def codegen(context, builder, signature, arguments):
        lanes = _vector_type(like.dtype)[0].count
        return context.get_constant(types.intp, CHANNEL_VECTORS * lanes)

    return types.intp(like), codegen


@intrinsic
def _broadcast_fma(typingctx, acc, x, base, outer, inner, rows, sums, v, k0):
    """For ``a`` in ``range(len(outer))`` and ``r`` in ``range(rows)``:
    ``acc[r, :] += x[base + outer[a] + inner[r]] * v[a, k0:k0 + block]`` (``block`` the channels of
    :func:`_block_channels`), and with ``sums`` = 1 ``acc[rows, :] += v[a, k0:k0 + block]``.

    A register block written as vector IR, which LLVM's loop vectorizer would not make of the same
    loops (it vectorizes the short channel loop alone and leaves the sums in memory): ``acc`` is
    loaded into ``(rows + sums) * CHANNEL_VECTORS`` registers, each step loads the channel vectors
    of ``v`` once and broadcasts one ``x`` value per row into a fused multiply-add. ``rows`` and
    ``sums`` are compile-time constants; ``acc`` and ``x`` are C-contiguous, ``v``'s rows are
    contiguous, and every index read must lie inside its array (nothing is checked)."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(sums, types.IntegerLiteral)):
        return None
    count, extra = rows.literal_value, sums.literal_value

    def codegen(context, builder, signature, arguments):
        acc_a, x_a, base_v, outer_a, inner_a, _, _, v_a, k0_v = arguments
        vector, element = _vector_type(acc.dtype)
        width, lanes = acc.dtype.bitwidth // 8, vector.count
        acc_s, x_s = (context.make_array(t)(context, builder, a) for t, a in ((acc, acc_a), (x, x_a)))
        outer_s = context.make_array(outer)(context, builder, outer_a)
        inner_s = context.make_array(inner)(context, builder, inner_a)
        v_s = context.make_array(v)(context, builder, v_a)
        name = f"llvm.fmuladd.v{lanes}f{acc.dtype.bitwidth}"  # llvmlite names no vector intrinsic
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), name)
        i32 = ir.IntType(32)
        intp = context.get_value_type(types.intp)
        splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

        def vector_at(pointer, index):  # the vector at element ``index`` of ``pointer``
            return builder.bitcast(builder.gep(pointer, [index]), vector.as_pointer())

        total = (count + extra) * CHANNEL_VECTORS
        slots = [cgutils.alloca_once(builder, vector) for _ in range(total)]  # promoted to registers
        for i, slot in enumerate(slots):
            builder.store(builder.load(vector_at(acc_s.data, intp(i * lanes)),
                                       align=width), slot)
        offsets = [builder.load(builder.gep(inner_s.data, [intp(r)]))
                   for r in range(count)]
        row_bytes = cgutils.unpack_tuple(builder, v_s.strides)[0]
        steps = cgutils.unpack_tuple(builder, outer_s.shape)[0]
        v_bytes = builder.bitcast(v_s.data, ir.IntType(8).as_pointer())
        with cgutils.for_range(builder, steps) as loop:
            a = loop.index
            row = builder.bitcast(builder.gep(v_bytes, [builder.mul(a, row_bytes)]), element.as_pointer())
            values = [builder.load(vector_at(row, builder.add(k0_v, intp(c * lanes))), align=width)
                      for c in range(CHANNEL_VECTORS)]
            start = builder.add(base_v, builder.load(builder.gep(outer_s.data, [a])))
            for r in range(count):
                scalar = builder.load(builder.gep(x_s.data, [builder.add(start, offsets[r])]))
                broadcast = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, i32(0)),
                    ir.Constant(vector, ir.Undefined), splat)
                for c in range(CHANNEL_VECTORS):
                    slot = slots[r * CHANNEL_VECTORS + c]
                    builder.store(builder.call(fma, [broadcast, values[c], builder.load(slot)]), slot)
            for c in range(CHANNEL_VECTORS * extra):
                slot = slots[count * CHANNEL_VECTORS + c]
                builder.store(builder.fadd(builder.load(slot), values[c]), slot)
        for i, slot in enumerate(slots):
            builder.store(builder.load(slot),
                          vector_at(acc_s.data, intp(i * lanes)), align=width)
        return context.get_dummy_value()

    return types.void(acc, x, base, outer, inner, rows, sums, v, k0), codegen


@numba.njit(**JIT)
def _padded_rows(x, i, r, sh, ph, pw, line):
    """``line[p, v * C + j] = xpad[i, r * sh + p, v, j]`` for the window rows ``p`` of output row
    ``r`` (``xpad``: ``x`` with ``ph`` and ``pw`` zeros around, and zeros to the right without end;
    a line may end before the right padding or the last columns, which no window reads). Whole
    rows are copied through flat views indexed from 0, which LLVM vectorizes."""
    H, C, length = x.shape[1], x.shape[3], line.shape[1]
    zero = line.dtype.type(0)
    left = min(pw * C, length)
    inside = min(x.shape[2] * C, length - left)
    for p in range(line.shape[0]):
        u, out = r * sh + p - ph, line[p]
        if u < 0 or u >= H:
            for v in range(length):
                out[v] = zero
            continue
        source, middle, right = x[i, u].reshape(-1), out[left:], out[left + inside:]
        for v in range(left):
            out[v] = zero
        for v in range(inside):
            middle[v] = source[v]
        for v in range(right.shape[0]):
            right[v] = zero


@numba.njit(**JIT)
def _tap_offsets(kh, kw, C, row_length):
    """Where tap ``(p, q, j)`` reads in a flattened :func:`_padded_rows` block, in ``(p, q, j)`` order."""
    offsets = np.empty(kh * kw * C, np.intp)
    for p in range(kh):
        for q in range(kw):
            for j in range(C):
                offsets[(p * kw + q) * C + j] = p * row_length + q * C + j
    return offsets


@numba.njit(**JIT)
def direct_weights(Wt, b, like):
    """``(weights, bias)`` of the direct convolution for ``Wt (kh, kw, C, K)`` and ``b (1, K)``, in blocks
    of one register block of channels (``(blocks, kh * kw * C, block)`` and ``(blocks, block)``, zero
    past ``K``), of the dtype of ``like``."""
    kh, kw, C, K = Wt.shape
    block, taps = _block_channels(like), kh * kw * C
    blocks = (K + block - 1) // block
    weights = np.zeros((blocks, taps, block), like.dtype)
    bias = np.zeros((blocks, block), like.dtype)
    for k in range(K):
        bias[k // block, k % block] = b[0, k]
        for p in range(kh):
            for q in range(kw):
                for j in range(C):
                    weights[k // block, (p * kw + q) * C + j, k % block] = Wt[p, q, j, k]
    return weights, bias


@numba.njit(**JIT)
def direct_rows(x, weights, bias, kh, kw, sh, sw, ph, pw, relu, first, stop, y, y_first):
    """Output rows ``first <= row < stop`` of the ``n * Ho`` rows of the direct convolution of ``x``
    with :func:`direct_weights`' blocks, plus the bias (then ``max(., 0)`` with ``relu``), on the
    calling thread; image ``i`` is written to ``y[i - y_first]`` ``(Ho, Wo, K)``.

    Each row's ``kh`` input rows are copied with their padding into a buffer, and blocks of
    ``PIXELS_PER_BLOCK`` pixels times one register block of channels are summed by
    :func:`_broadcast_fma` without a bounds check (the last block of a row reads zeros past its end
    and keeps only its pixels). Every output is computed alone, in tap order, so no split of the rows
    changes a bit."""
    C = x.shape[3]
    ho, wo, K = y.shape[1], y.shape[2], y.shape[3]
    blocks, block = weights.shape[0], weights.shape[2]
    columns = (wo + PIXELS_PER_BLOCK - 1) // PIXELS_PER_BLOCK  # blocks of pixels per row
    row_length = ((columns * PIXELS_PER_BLOCK - 1) * sw + kw) * C
    offsets = _tap_offsets(kh, kw, C, row_length)
    pixels = np.arange(PIXELS_PER_BLOCK) * (sw * C)
    zero = y.dtype.type(0)
    line = np.empty((kh, row_length), y.dtype)
    flat = line.reshape(-1)
    acc = np.empty((PIXELS_PER_BLOCK, block), y.dtype)
    for row in range(first, stop):
        i, r = row // ho, row % ho
        _padded_rows(x, i, r, sh, ph, pw, line)
        out = y[i - y_first, r]
        for kb in range(blocks):
            depth, start = min(block, K - kb * block), kb * block
            for cb in range(columns):
                for s in range(PIXELS_PER_BLOCK):
                    for k in range(block):
                        acc[s, k] = bias[kb, k]
                _broadcast_fma(acc, flat, cb * PIXELS_PER_BLOCK * sw * C, offsets, pixels,
                               PIXELS_PER_BLOCK, 0, weights[kb], 0)
                for s in range(min(PIXELS_PER_BLOCK, wo - cb * PIXELS_PER_BLOCK)):
                    pixel, sums = out[cb * PIXELS_PER_BLOCK + s, start:], acc[s]
                    if depth == block and relu:  # loops of constant length, branch-free
                        for k in range(block):
                            pixel[k] = max(sums[k], zero)
                    elif depth == block:
                        for k in range(block):
                            pixel[k] = sums[k]
                    else:
                        for k in range(depth):
                            pixel[k] = max(sums[k], zero) if relu else sums[k]


@numba.njit(parallel=True, **JIT)
def conv_forward_direct(x, Wt, b, sh, sw, ph, pw, relu, chunks, y):
    """``y = conv(x, W) + b`` (then ``max(., 0)`` with ``relu``) with ``Wt = W`` as ``(kh, kw, C, K)``:
    :func:`direct_rows` on ``chunks`` splits of the output rows (a few per thread)."""
    weights, bias = direct_weights(Wt, b, y)
    kh, kw, rows = Wt.shape[0], Wt.shape[1], y.shape[0] * y.shape[1]
    chunks = max(1, min(rows, chunks))
    for chunk in prange(chunks):
        direct_rows(x, weights, bias, kh, kw, sh, sw, ph, pw, relu, chunk * rows // chunks,
                    (chunk + 1) * rows // chunks, y, 0)


@numba.njit(**JIT)
def direct_weight_gradient_images(x, y, dy, relu, d_first, first, stop, kh, kw, sh, sw, ph, pw, out):
    """``out[(p, q, j), k] = sum over the output pixels of images first <= i < stop of dz[pixel, k] *
    xpad[input under (p, q), j]`` and, in its last row, the bias sums of ``dz``, on the calling thread,
    where ``dz = dy`` (masked where ``y <= 0`` with ``relu``) and image ``i`` of ``y`` and ``dy`` is at
    ``i - d_first``.

    Per output row, the masked ``dz`` is copied into a row of whole channel blocks and the input rows
    with their padding into a buffer; :func:`_broadcast_fma` then adds the row's pixels, in order,
    into register blocks of ``TAPS_PER_BLOCK`` taps (and the bias) times one block of channels."""
    C = x.shape[3]
    ho, wo, K = dy.shape[1], dy.shape[2], dy.shape[3]
    block, taps, zero = _block_channels(out), kh * kw * C, dy.dtype.type(0)
    blocks, tap_blocks = (K + block - 1) // block, (taps + TAPS_PER_BLOCK - 1) // TAPS_PER_BLOCK
    row_length = ((wo - 1) * sw + kw) * C
    offsets = np.zeros(tap_blocks * TAPS_PER_BLOCK, np.intp)  # taps past the last read the first value
    offsets[:taps] = _tap_offsets(kh, kw, C, row_length)
    pixels = np.arange(wo) * (sw * C)
    acc = np.zeros((blocks, tap_blocks, TAPS_PER_BLOCK + 1, block), out.dtype)
    line = np.empty((kh, row_length), out.dtype)
    flat = line.reshape(-1)
    d = np.zeros((wo, blocks * block), out.dtype)
    for i in range(first, stop):
        for r in range(ho):
            _padded_rows(x, i, r, sh, ph, pw, line)
            gradient, output = dy[i - d_first, r], y[i - d_first, r]
            for c in range(wo):
                for k in range(K):
                    d[c, k] = gradient[c, k] if (not relu or output[c, k] > zero) else zero
            for kb in range(blocks):
                for tb in range(tap_blocks):
                    _broadcast_fma(acc[kb, tb], flat, 0, pixels, offsets[tb * TAPS_PER_BLOCK:],
                                   TAPS_PER_BLOCK, 1, d, kb * block)
    for k in range(K):
        kb, lane = k // block, k % block
        out[taps, k] = acc[kb, 0, TAPS_PER_BLOCK, lane]
        for t in range(taps):
            out[t, k] = acc[kb, t // TAPS_PER_BLOCK, t % TAPS_PER_BLOCK, lane]


@numba.njit(parallel=True, **JIT)
def conv_weight_gradient_direct(x, y, dy, relu, kh, kw, sh, sw, ph, pw, partial):
    """:func:`direct_weight_gradient_images` per chunk of ``IMAGES_PER_CHUNK`` images, in parallel, into
    ``partial[chunk]``; the chunks' sums are added in chunk order after (``sum_chunks``)."""
    n = x.shape[0]
    for chunk in prange(partial.shape[0]):
        direct_weight_gradient_images(x, y, dy, relu, 0, chunk * IMAGES_PER_CHUNK,
                                      min(n, (chunk + 1) * IMAGES_PER_CHUNK), kh, kw, sh, sw, ph, pw,
                                      partial[chunk])


@numba.njit(parallel=True, **JIT)
def sum_chunks(partial, out):
    """``out = partial.sum(axis=0)`` summed in chunk order, split by columns across threads."""
    rows, columns = out.shape
    for t in prange(rows):
        for k in range(columns):
            s = partial[0, t, k]
            for chunk in range(1, partial.shape[0]):
                s += partial[chunk, t, k]
            out[t, k] = s


@numba.njit(**JIT)
def im2col_images(x, first, stop, kh, kw, sh, sw, ph, pw, columns):
    """``columns[((i - first), r, c), (p, q, j)] = xpad[i, r * sh + p, c * sw + q, j]`` for the images
    ``first <= i < stop`` (zero outside ``x``), on the calling thread."""
    n, H, Wd, C = x.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    zero = columns.dtype.type(0)
    for row in range((stop - first) * ho):
        i, r = first + row // ho, row % ho
        for c in range(wo):
            out = columns[(row * wo + c)]
            for p in range(kh):
                u = r * sh + p - ph
                for q in range(kw):
                    v = c * sw + q - pw
                    start = (p * kw + q) * C
                    if u < 0 or u >= H or v < 0 or v >= Wd:
                        for j in range(C):
                            out[start + j] = zero
                    else:
                        for j in range(C):
                            out[start + j] = x[i, u, v, j]


@numba.njit(parallel=True, **JIT)
def im2col(x, kh, kw, sh, sw, ph, pw, columns):
    """The column matrix of all of ``x``: :func:`im2col_images` image by image in parallel."""
    n, H, Wd, _ = x.shape
    per_image = ((H + 2 * ph - kh) // sh + 1) * ((Wd + 2 * pw - kw) // sw + 1)
    for i in prange(n):
        im2col_images(x, i, i + 1, kh, kw, sh, sw, ph, pw, columns[i * per_image:(i + 1) * per_image])


@numba.njit(**JIT)
def col2im_images(d_columns, first, stop, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of :func:`im2col_images`: ``dx[first:stop]`` (overwritten) sums the entries of
    ``d_columns`` (rows of those images, from row 0) that read each input, on the calling thread."""
    n, H, Wd, C = dx.shape
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (Wd + 2 * pw - kw) // sw + 1
    for i in range(first, stop):
        dx[i] = 0
        for r in range(ho):
            for c in range(wo):
                d = d_columns[((i - first) * ho + r) * wo + c]
                for p in range(kh):
                    u = r * sh + p - ph
                    if u < 0 or u >= H:
                        continue
                    for q in range(kw):
                        v = c * sw + q - pw
                        if v < 0 or v >= Wd:
                            continue
                        start = (p * kw + q) * C
                        for j in range(C):
                            dx[i, u, v, j] += d[start + j]


@numba.njit(parallel=True, **JIT)
def col2im(d_columns, kh, kw, sh, sw, ph, pw, dx):
    """The adjoint of :func:`im2col`: :func:`col2im_images` image by image in parallel."""
    n, H, Wd, _ = dx.shape
    per_image = d_columns.shape[0] // max(n, 1)
    for i in prange(n):
        col2im_images(d_columns[i * per_image:(i + 1) * per_image], i, i + 1, kh, kw, sh, sw, ph, pw, dx)


@numba.njit(**JIT)
def bias_rows(y, b, relu, first, stop):
    """In place on rows ``first <= i < stop`` of ``y`` ``(m, K)``: ``y += b``, then ``max(y, 0)`` with
    ``relu``, on the calling thread."""
    zero = y.dtype.type(0)
    for i in range(first, stop):
        for k in range(y.shape[1]):
            s = y[i, k] + b[0, k]
            y[i, k] = max(s, zero) if relu else s


@numba.njit(parallel=True, **JIT)
def bias_epilogue(y, b, relu):
    """:func:`bias_rows` on every row of ``y``, in parallel."""
    for i in prange(y.shape[0]):
        bias_rows(y, b, relu, i, i + 1)


@numba.njit(**JIT)
def mask_rows(y, dy, relu, first, stop, dz, sums):
    """For rows ``first <= i < stop`` of ``dy`` ``(m, K)``, on the calling thread: with ``relu``,
    ``dz = dy`` where ``y > 0`` and 0 elsewhere; ``sums`` (overwritten) the column sums of ``dz`` (of
    ``dy`` without ``relu``, and ``dz`` is not written). ``dz`` may be ``dy`` (masked in place).

    Masking in place reads and writes through one row view: with two views of the same row LLVM's
    runtime overlap check fails and the loop runs element by element, ten times slower."""
    zero = dy.dtype.type(0)
    sums[:] = 0
    in_place = dz.ctypes.data == dy.ctypes.data
    for i in range(first, stop):
        gradient = dy[i]
        if relu and in_place:
            output = y[i]
            for k in range(gradient.shape[0]):
                d = gradient[k] if output[k] > zero else zero
                gradient[k] = d
                sums[k] += d
        elif relu:
            out, output = dz[i], y[i]
            for k in range(gradient.shape[0]):
                d = gradient[k] if output[k] > zero else zero
                out[k] = d
                sums[k] += d
        else:
            for k in range(gradient.shape[0]):
                sums[k] += gradient[k]


@numba.njit(parallel=True, **JIT)
def masked_gradient(y, dy, relu, dz, partial):
    """:func:`mask_rows` per chunk of ``ROWS_PER_CHUNK`` rows in parallel, each chunk's sums in
    ``partial[chunk, 0]``."""
    m = dy.shape[0]
    for chunk in prange(partial.shape[0]):
        first = chunk * ROWS_PER_CHUNK
        mask_rows(y, dy, relu, first, min(m, first + ROWS_PER_CHUNK), dz, partial[chunk, 0])


@numba.njit(**JIT)
def pool_rows(x, x_first, kh, kw, sh, sw, first, stop, y, argmax, best, place):
    """Output rows ``first <= row < stop`` of the ``n * Ho`` rows of ``y`` and ``argmax`` ``(n, Ho, Wo,
    C)``: each window's maximum over ``x`` and its place ``p * kw + q`` (the first of equal values; a NaN
    wins), on the calling thread. ``x`` holds images from ``x_first`` on (image ``i`` is ``x[i -
    x_first]``); ``best`` and ``place`` (``C`` each) keep a window's running maxima in rows of their
    own, which LLVM vectorizes (it does not vectorize updates of the output in place)."""
    ho, wo, C = y.shape[1:]
    for row in range(first, stop):
        i, r = row // ho, row % ho
        for c in range(wo):
            u0, v0 = r * sh, c * sw
            for j in range(C):
                best[j] = x[i - x_first, u0, v0, j]
                place[j] = 0
            for p in range(kh):
                for q in range(kw):
                    if p == 0 and q == 0:
                        continue
                    here = np.int32(p * kw + q)
                    for j in range(C):
                        value, top = x[i - x_first, u0 + p, v0 + q, j], best[j]
                        better = value > top or (value != value and top == top)
                        best[j] = value if better else top
                        place[j] = here if better else place[j]
            for j in range(C):
                y[i, r, c, j] = best[j]
                argmax[i, r, c, j] = place[j]


@numba.njit(**JIT)
def relu_images(y, first, stop):
    """``y[i] = max(y[i], 0)`` for the images ``first <= i < stop``, in place (NaN stays NaN)."""
    zero = y.dtype.type(0)
    for i in range(first, stop):
        flat = y[i].reshape(-1)
        for k in range(flat.shape[0]):
            v = flat[k]
            flat[k] = zero if v < zero else v


@numba.njit(parallel=True, **JIT)
def maxpool_forward(x, kh, kw, sh, sw, chunks, y, argmax):
    """:func:`pool_rows` over every output row, split into ``chunks`` run in parallel."""
    n, ho, wo, C = y.shape
    rows = n * ho
    chunks = max(1, min(rows, chunks))
    for chunk in prange(chunks):
        best, place = np.empty(C, y.dtype), np.empty(C, np.int32)
        pool_rows(x, 0, kh, kw, sh, sw, chunk * rows // chunks, (chunk + 1) * rows // chunks, y, argmax, best,
                  place)


@numba.njit(**JIT)
def unpool_images(argmax, dy, y, relu, kh, kw, sh, sw, first, stop, dx, dx_first):
    """For images ``first <= i < stop``: ``dx[i - dx_first]`` (overwritten) receives each ``dy`` (times
    ``y > 0`` with ``relu``: a ReLU after the pooling) at its window's maximum, summed where windows
    overlap, on the calling thread. Windows that tile the image (stride = size) are written in one
    pass, each input value once."""
    ho, wo, C = dy.shape[1:]
    H, Wd = dx.shape[1:3]
    zero, one = dx.dtype.type(0), dx.dtype.type(1)
    for i in range(first, stop):
        out = dx[i - dx_first]
        if sh == kh and sw == kw:
            for u in range(H):
                r, p = u // kh, u % kh
                for v in range(Wd):
                    c, q = v // kw, v % kw
                    if r >= ho or c >= wo:  # rows and columns no window covers
                        for j in range(C):
                            out[u, v, j] = zero
                        continue
                    place = p * kw + q
                    for j in range(C):
                        d = dy[i, r, c, j]
                        d = d * (one if y[i, r, c, j] > zero else zero) if relu else d
                        out[u, v, j] = d if argmax[i, r, c, j] == place else zero
            continue
        out[:] = 0
        for r in range(ho):
            for c in range(wo):
                for j in range(C):
                    place, d = argmax[i, r, c, j], dy[i, r, c, j]
                    d = d * (one if y[i, r, c, j] > zero else zero) if relu else d
                    out[r * sh + place // kw, c * sw + place % kw, j] += d


@numba.njit(parallel=True, **JIT)
def maxpool_backward(argmax, dy, kh, kw, sh, sw, dx):
    """:func:`unpool_images` (no ReLU) image by image in parallel."""
    for i in prange(dy.shape[0]):
        unpool_images(argmax, dy, dy, False, kh, kw, sh, sw, i, i + 1, dx, 0)
