"""The direct convolution, on channels-last images ``(n, H, W, C)``, alone and fused with its max pooling.

A convolution with few inputs per output (``C * kh * kw`` small, a first layer on raw pixels) runs
directly, in register blocks written as vector IR (:mod:`.blocks`): ``PIXELS_PER_BLOCK`` output
pixels x ``CHANNEL_VECTORS`` vectors of channels forward (:func:`.blocks._bias_block`: started at the bias,
stored through the ReLU straight from the registers), ``TAPS_PER_BLOCK`` taps x the same channels for
the weight gradient (:func:`.blocks._broadcast_fma`), over each image's input rows copied once with their
padding (:func:`_padded_rows`); the block sizes are chosen at import for the
vector registers of the instruction set Numba compiles for (:func:`..target.vector_unit`; Numba's
cache keeps one build per CPU name and features). Wider convolutions are matrix products
(:mod:`.conv`, :mod:`.products`). Every kernel is parallel over images or rows of its output, and
reductions over the batch sum fixed chunks of images in chunk order, so results never depend on the
thread count.

Followed by a ReLU and a max pooling (the CNN's first stage), :func:`direct_pool_forward` runs the
convolution, its bias, the pooling and the ReLU per chunk of images on one thread, its output in a
buffer of that thread, so the full-size convolution output is never written;
:func:`direct_pool_backward` makes each chunk's convolution-output gradient in the thread's buffer
(the pooled gradient masked by ``y > 0`` and put at each window's maximum) and takes its weight and
bias sums: the same chunks, values and order as the unfused methods, so the same bits. Where an input
gradient is asked for (the notebook's ``backward`` returns one), each chunk's product with the weights
runs on oneMKL on the same thread, then ``col2im``; without oneMKL such a call takes the unfused path.
(A loop over each input value's covering taps, vectors of ``K`` channels summed, measured slower than
that product: 194 against 106 ms for this kernel per step-loop epoch of the CNN.)

Measured with ``PYTHONPATH=. python benchmarks/direct_conv.py <revision>`` (a revision's kernels and
these, interleaved in one process, 7 rounds of 5 calls, min / median ms; 128 images 28x28x1 -> 32
channels, 3x3, padding 1, ReLU, float32, 2 Numba threads) on a 2-core KVM "Intel Xeon Processor"
(Emerald Rapids, AVX-512), against the revision before the register blocks started at the bias
(:func:`.blocks._bias_block`), each image's padded rows were copied once and the 2 x 2 pooling compared its
window in one loop (``pooled``: the CNN's first stage, :func:`direct_pool_forward`):

==========================================  ===============  ===============
kernel, instruction set (blocks)            before           after
==========================================  ===============  ===============
forward, AVX-512 (10 pixels)                1.32 / 1.40      0.63 / 0.67
weight gradient, AVX-512 (9 taps)           1.18 / 1.22      0.94 / 0.97
pooled forward, AVX-512                     2.20 / 2.35      1.10 / 1.14
forward, AVX2 ``haswell`` (6 pixels)        2.26 / 2.37      1.05 / 1.09
weight gradient, AVX2 (5 taps)              1.54 / 1.63      1.19 / 1.27
pooled forward, AVX2                        3.24 / 3.37      1.58 / 1.74
==========================================  ===============  ===============

AVX2 is built with ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=<Haswell's features, -avx512f>`` (the
string in ``tests/backends/test_numba_direct_conv.py``). Before these blocks were register blocks at
all, the forward took 4.64 ms and the weight gradient 6.58 ms at a quiet moment of the same machine.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .blocks import VECTOR_REGISTERS, _bias_block, _block_channels, _broadcast_fma
from .conv import _relu, col2im_images, col2im_planes, pool_rows, unpool_images
from .intrinsics import JIT
from .products import NO_TRANS, TRANS, _block, _chunk_items, _gemm

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

    The input rows under each image's share of the rows are copied once, with their padding, into a
    buffer, and blocks of ``PIXELS_PER_BLOCK`` pixels times one register block of channels are summed
    by :func:`_bias_block` without a bounds check, straight into ``y`` (the last block of a row reads
    zeros past its end and keeps only its pixels, through ``acc``). Every output is computed alone,
    in tap order, so no split of the rows changes a bit."""
    C = x.shape[3]
    ho, wo, K = y.shape[1], y.shape[2], y.shape[3]
    blocks, block = weights.shape[0], weights.shape[2]
    columns = (wo + PIXELS_PER_BLOCK - 1) // PIXELS_PER_BLOCK  # blocks of pixels per row
    row_length = ((columns * PIXELS_PER_BLOCK - 1) * sw + kw) * C
    offsets = _tap_offsets(kh, kw, C, row_length)
    pixels = np.arange(PIXELS_PER_BLOCK) * (sw * C)
    zero = y.dtype.type(0)
    lines = np.empty(((ho - 1) * sh + kh, row_length), y.dtype)
    flat = lines.reshape(-1)
    acc = np.empty((PIXELS_PER_BLOCK, block), y.dtype)
    row = first
    while row < stop:  # the rows of one image at a time
        i, r0 = row // ho, row % ho
        r1 = min(ho, r0 + stop - row)
        _padded_rows(x, i, r0, sh, ph, pw, lines[:(r1 - r0 - 1) * sh + kh])
        for r in range(r0, r1):
            out = y[i - y_first, r]
            for kb in range(blocks):
                depth, start = min(block, K - kb * block), kb * block
                for cb in range(columns):
                    kept = min(PIXELS_PER_BLOCK, wo - cb * PIXELS_PER_BLOCK)
                    whole = depth == block and kept == PIXELS_PER_BLOCK
                    _bias_block(acc, flat, (r - r0) * sh * row_length + cb * PIXELS_PER_BLOCK * sw * C,
                                offsets, pixels, PIXELS_PER_BLOCK, weights[kb], bias[kb], out,
                                cb * PIXELS_PER_BLOCK * K + start, K, relu, whole)
                    if not whole:
                        for s in range(kept):
                            pixel, sums = out[cb * PIXELS_PER_BLOCK + s, start:], acc[s]
                            for k in range(depth):
                                pixel[k] = _relu(sums[k], zero, relu)
        row += r1 - r0


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

    Each image's input rows are copied once, with their padding, into a buffer, and per output row the
    masked ``dz`` into a row of whole channel blocks (``dy``'s own row serves where nothing is masked
    and ``K`` fills the blocks); :func:`_broadcast_fma` then adds the row's pixels, in order, into
    register blocks of ``TAPS_PER_BLOCK`` taps (and the bias) times one block of channels."""
    C = x.shape[3]
    ho, wo, K = dy.shape[1], dy.shape[2], dy.shape[3]
    block, taps, zero = _block_channels(out), kh * kw * C, dy.dtype.type(0)
    blocks, tap_blocks = (K + block - 1) // block, (taps + TAPS_PER_BLOCK - 1) // TAPS_PER_BLOCK
    row_length = ((wo - 1) * sw + kw) * C
    offsets = np.zeros(tap_blocks * TAPS_PER_BLOCK, np.intp)  # taps past the last read the first value
    offsets[:taps] = _tap_offsets(kh, kw, C, row_length)
    pixels = np.arange(wo) * (sw * C)
    acc = np.zeros((blocks, tap_blocks, TAPS_PER_BLOCK + 1, block), out.dtype)
    lines = np.empty(((ho - 1) * sh + kh, row_length), out.dtype)
    flat = lines.reshape(-1)
    d = np.zeros((wo, blocks * block), out.dtype)
    as_is = not relu and K == blocks * block
    for i in range(first, stop):
        _padded_rows(x, i, 0, sh, ph, pw, lines)
        for r in range(ho):
            gradient, output = dy[i - d_first, r], y[i - d_first, r]
            if not as_is:
                for c in range(wo):
                    for k in range(K):
                        d[c, k] = gradient[c, k] if (not relu or output[c, k] > zero) else zero
            rows = gradient if as_is else d
            for kb in range(blocks):
                for tb in range(tap_blocks):
                    _broadcast_fma(acc[kb, tb], flat, r * sh * row_length, pixels,
                                   offsets[tb * TAPS_PER_BLOCK:], TAPS_PER_BLOCK, 1, rows, kb * block)
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
def direct_pool_forward(x, Wt, b, sh, sw, ph, pw, pool, per_chunk, conv, y, argmax):
    """``y, argmax`` of the max pooling (``pool``: window rows, columns, strides) of ``conv(x, W) + b``,
    then ``max(y, 0)``, with ``Wt = W`` as ``(kh, kw, C, K)``; ``conv`` ``(parts, per_chunk, Ho, Wo,
    K)`` is each thread's buffer for a chunk of ``per_chunk`` images."""
    n, kh, kw = x.shape[0], Wt.shape[0], Wt.shape[1]
    weights, bias = direct_weights(Wt, b, y)
    ho, pooled_rows, K = conv.shape[2], y.shape[1], y.shape[3]
    parts, chunks = conv.shape[0], (n + per_chunk - 1) // per_chunk
    for part in prange(parts):
        best, place = np.empty(K, y.dtype), np.empty(K, np.int32)
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, per_chunk, n)
            direct_rows(x, weights, bias, kh, kw, sh, sw, ph, pw, False, first * ho, stop * ho, conv[part],
                        first)
            pool_rows(conv[part], first, pool[0], pool[1], pool[2], pool[3], first * pooled_rows,
                      stop * pooled_rows, y, argmax, best, place, True)


@numba.njit(parallel=True, **JIT)
def direct_pool_backward(x, y, argmax, dy, kh, kw, sh, sw, ph, pw, pool, dz, partial, calls, weights,
                         d_columns, dx):
    """The weight and bias sums of :func:`direct_pool_forward` per chunk of ``IMAGES_PER_CHUNK`` images
    into ``partial[chunk]`` ``(taps + 1, K)``, from the pooled ``y``, ``argmax`` and ``dy``; ``dz``
    ``(parts, IMAGES_PER_CHUNK, Ho, Wo, K)`` is each thread's buffer for a chunk's convolution-output
    gradient. Where ``dx`` has images, also the input gradient: per chunk, the product of its output
    gradient with ``weights (K, kh * kw * C)`` on oneMKL (``calls``, :mod:`.products`) into the thread's
    ``d_columns`` ``(parts, IMAGES_PER_CHUNK * Ho * Wo, kh * kw * C)``, added back into ``dx``'s images
    (:func:`.conv.col2im_images`); at stride 1 the product's transpose, a plane per tap, which
    :func:`.conv.col2im_planes` sums row by row (the same bits, half the time)."""
    n, parts, chunks = x.shape[0], dz.shape[0], partial.shape[0]
    K, taps, per_image = dz.shape[4], weights.shape[1], dz.shape[2] * dz.shape[3]
    for part in prange(parts):
        rows_of = dz[part].reshape((IMAGES_PER_CHUNK * per_image, K))
        planes = d_columns[part].reshape(-1)
        lo, hi = _block(chunks, parts, part)
        for chunk in range(lo, hi):
            first, stop = _chunk_items(chunk, IMAGES_PER_CHUNK, n)
            unpool_images(argmax, dy, y, True, pool[0], pool[1], pool[2], pool[3], first, stop, dz[part],
                          first)
            direct_weight_gradient_images(x, dz[part], dz[part], False, first, first, stop, kh, kw, sh, sw,
                                          ph, pw, partial[chunk])
            rows = (stop - first) * per_image
            if dx.shape[0] and sh == sw == 1:  # the product's transpose: a plane per tap, rows summed
                _gemm(calls, TRANS, TRANS, taps, rows, K, weights, 0, taps, rows_of, 0, K, 0.0, planes, 0,
                      rows)
                col2im_planes(planes, rows, first, stop, kh, kw, ph, pw, dx)
            elif dx.shape[0]:
                _gemm(calls, NO_TRANS, NO_TRANS, rows, taps, K, rows_of, 0, K, weights, 0, taps, 0.0,
                      d_columns[part], 0, taps)
                col2im_images(d_columns[part], first, stop, kh, kw, sh, sw, ph, pw, dx)
