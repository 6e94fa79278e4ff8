"""A direct convolution (few inputs per output, :func:`.conv.direct_rows`), its max pooling and a ReLU as
one pass per chunk of images, each on one thread: the CNN's first stage.

Forward, a chunk's convolution with its bias goes into a buffer of that thread (``conv[part]``), is
pooled into ``y`` and ``argmax`` (:func:`.conv.pool_rows`) and the ReLU is applied to the pooled rows,
so the full-size convolution output is never written. Backward, each chunk of ``IMAGES_PER_CHUNK``
images gets its convolution-output gradient in the thread's buffer (the pooled gradient masked by
``y > 0`` and put at each window's maximum, :func:`.conv.unpool_images`), then the weight and bias
sums of :func:`.conv.direct_weight_gradient_images`: the same chunks, values and order as the
unfused convolution, pooling and ReLU give, so the same bits for any thread count. No input
gradient: the stage this serves comes first in a network (a wider one asks for the unfused path).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .conv import (IMAGES_PER_CHUNK, direct_rows, direct_weight_gradient_images, direct_weights, pool_rows,
                   relu_images, unpool_images)
from .intrinsics import JIT
from .products import _split


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
        for chunk in range(_split(chunks, parts, part), _split(chunks, parts, part + 1)):
            first, stop = chunk * per_chunk, min(n, (chunk + 1) * per_chunk)
            direct_rows(x, weights, bias, kh, kw, sh, sw, ph, pw, False, first * ho, stop * ho, conv[part],
                        first)
            pool_rows(conv[part], first, pool[0], pool[1], pool[2], pool[3], first * pooled_rows,
                      stop * pooled_rows, y, argmax, best, place)
            relu_images(y, first, stop)


@numba.njit(parallel=True, **JIT)
def direct_pool_backward(x, y, argmax, dy, kh, kw, sh, sw, ph, pw, pool, dz, partial):
    """The weight and bias sums of :func:`direct_pool_forward` per chunk of ``IMAGES_PER_CHUNK`` images
    into ``partial[chunk]`` ``(taps + 1, K)``, from the pooled ``y``, ``argmax`` and ``dy``; ``dz``
    ``(parts, IMAGES_PER_CHUNK, Ho, Wo, K)`` is each thread's buffer for a chunk's convolution-output
    gradient."""
    n, parts, chunks = x.shape[0], dz.shape[0], partial.shape[0]
    for part in prange(parts):
        for chunk in range(_split(chunks, parts, part), _split(chunks, parts, part + 1)):
            first, stop = chunk * IMAGES_PER_CHUNK, min(n, (chunk + 1) * IMAGES_PER_CHUNK)
            unpool_images(argmax, dy, y, True, pool[0], pool[1], pool[2], pool[3], first, stop, dz[part],
                          first)
            direct_weight_gradient_images(x, dz[part], dz[part], False, first, first, stop, kh, kw, sh, sw,
                                          ph, pw, partial[chunk])
