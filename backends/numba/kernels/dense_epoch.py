"""The whole-epoch program of a stack of dense layers (ReLU or none between them) trained with plain SGD
on the summed softmax cross-entropy, with oneMKL's products on Numba's threads (:mod:`.products`).

A training step is two parallel regions and nothing in Python:

1. **Rows.** The batch is cut into ``CHUNKS`` chunks of rows (a split that depends on the batch size
   only) and each thread takes whole chunks: it gathers its rows (from 8-bit pixel codes through a
   256-entry table of the exact float values, or from the float images), runs every layer's forward
   product with its bias and ReLU, the loss and its gradient, and every input gradient back to the
   first layer's output, masking each by its ReLU and taking the column sums of each chunk (the bias
   gradients' parts). No row depends on another, so no thread waits for another before the end.
2. **Weights.** Each layer's weight gradient ``dz.T @ x`` by blocks of its output rows, one block per
   thread, then, while the block is in that core's cache, its bias gradient (the chunk sums added in
   chunk order) and the SGD update of those rows of ``W`` and ``b``.

``dW`` and ``db`` are overwritten each step (they hold the last batch's gradients afterwards, as the
step loop leaves them), so no pass zeroes them, and the update reads each gradient row once while hot.
Results do not depend on the thread count: every output element is one oneMKL product over its whole
inner dimension, and sums over rows go chunk by chunk in chunk order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .conv import bias_rows, mask_rows
from .intrinsics import JIT
from .products import NO_TRANS, TRANS, _block, _chunk_items, _gemm
from .step import _row_max_and_exp_sum

#: Chunks of rows per batch: the bias gradients and the cost are summed chunk by chunk. 24 splits a
#: batch evenly between 1, 2, 3, 4, 6, 8, 12 or 24 threads.
CHUNKS = 24


@numba.njit(**JIT)
def chunk_rows(n):
    """Rows per chunk of a batch of ``n`` rows (the last chunk may be shorter)."""
    return max(1, (n + CHUNKS - 1) // CHUNKS)


@numba.njit(**JIT)
def _gather(images, codes, table, rows, first, stop, x):
    """``x[i] = images[rows[i]]`` for ``first <= i < stop``, or ``table[codes[rows[i]]]`` when ``codes``
    has rows (``table[k]`` is the float value of pixel code ``k``)."""
    decode = codes.shape[0] > 0
    for i in range(first, stop):
        out = x[i]
        if decode:
            source = codes[rows[i]]
            for k in range(out.shape[0]):
                out[k] = table[source[k]]
        else:
            source_row = images[rows[i]]
            for k in range(out.shape[0]):
                out[k] = source_row[k]


@numba.njit(**JIT)
def _softmax_cross_entropy_rows(z, targets, rows, first, stop, dz):
    """For rows ``first <= i < stop``: ``dz[i] = softmax(z[i]) sum(t) - t`` with ``t = targets[rows[i]]``;
    returns ``sum(-t log softmax(z[i]))`` over those rows, in float64."""
    cost = 0.0
    for i in range(first, stop):
        t = targets[rows[i]]
        top, total = _row_max_and_exp_sum(z, i)
        log_total = np.log(total)
        mass = z.dtype.type(0)
        for j in range(z.shape[1]):
            mass += t[j]
        for j in range(z.shape[1]):
            cost += -t[j] * (z[i, j] - top - log_total)
            dz[i, j] = np.exp(z[i, j] - top) / total * mass - t[j]
    return cost


@numba.njit(**JIT)
def _rows_pass(calls, images, codes, table, targets, rows, first_chunk, stop_chunk, size, weights, biases,
               relus, acts, grads, partial, cost):
    """Phase 1 for chunks ``first_chunk <= c < stop_chunk`` of the batch, on the calling thread."""
    n, layers = rows.shape[0], len(weights)
    first, stop = min(n, first_chunk * size), min(n, stop_chunk * size)
    if first == stop:
        return
    _gather(images, codes, table, rows, first, stop, acts[0])
    for layer in range(layers):
        x, y, W = acts[layer], acts[layer + 1], weights[layer]
        k, m = W.shape[1], W.shape[0]
        _gemm(calls, NO_TRANS, TRANS, stop - first, m, k, x, first * k, k, W, 0, k, 0.0, y, first * m, m)
        bias_rows(y, biases[layer], relus[layer], first, stop)
    last = layers - 1
    for chunk in range(first_chunk, stop_chunk):
        start, end = _chunk_items(chunk, size, n)
        cost[chunk] = _softmax_cross_entropy_rows(acts[layers], targets, rows, start, end, grads[last])
        mask_rows(acts[layers], grads[last], False, start, end, grads[last], partial[last][chunk])
    for layer in range(last, 0, -1):  # dx of each layer but the first, masked by the ReLU before it
        dz, W, dx = grads[layer], weights[layer], grads[layer - 1]
        k, m = W.shape[1], W.shape[0]
        _gemm(calls, NO_TRANS, NO_TRANS, stop - first, k, m, dz, first * m, m, W, 0, k, 0.0, dx, first * k, k)
        for chunk in range(first_chunk, stop_chunk):
            start, end = _chunk_items(chunk, size, n)
            mask_rows(acts[layer], dx, relus[layer - 1], start, end, dx, partial[layer - 1][chunk])


@numba.njit(**JIT)
def _weights_pass(calls, n, chunks, rate, part, parts, weights, biases, gradients, bias_gradients, acts,
                  grads, partial):
    """Phase 2 for block ``part`` of ``parts`` of every layer's output rows, on the calling thread."""
    for layer in range(len(weights)):
        W, b, dW, db = weights[layer], biases[layer], gradients[layer], bias_gradients[layer]
        dz, x, sums = grads[layer], acts[layer], partial[layer]
        m, k = W.shape
        first, stop = _block(m, parts, part)
        _gemm(calls, TRANS, NO_TRANS, stop - first, k, n, dz, first, m, x, 0, k, 0.0, dW, first * k, k)
        for j in range(first, stop):
            s = sums[0, j]
            for chunk in range(1, chunks):
                s += sums[chunk, j]
            db[0, j] = s
            b[0, j] -= rate * s
            row, gradient = W[j], dW[j]
            for q in range(k):
                row[q] -= rate * gradient[q]


@numba.njit(parallel=True, **JIT)
def _step(calls, images, codes, table, targets, rows, rate, parts, weights, biases, gradients,
          bias_gradients, relus, acts, grads, partial, cost):
    """One SGD step on the batch ``rows``; ``cost[c]`` the summed cost of chunk ``c``."""
    n = rows.shape[0]
    size = chunk_rows(n)
    chunks = (n + size - 1) // size
    row_parts = min(parts, chunks)
    for part in prange(row_parts):
        lo, hi = _block(chunks, row_parts, part)
        _rows_pass(calls, images, codes, table, targets, rows, lo, hi, size, weights, biases, relus, acts,
                   grads, partial, cost)
    for part in prange(parts):
        _weights_pass(calls, n, chunks, rate, part, parts, weights, biases, gradients, bias_gradients,
                      acts, grads, partial)
    return chunks


@numba.njit(**JIT)
def dense_softmax_epoch(calls, images, codes, table, targets, order, batch_size, learning_rate, parts,
                        weights, biases, gradients, bias_gradients, relus, workspace):
    """One epoch of SGD over the batches ``order[i:i + batch_size]``.

    ``weights``/``biases``/``gradients``/``bias_gradients``: tuples of each layer's ``W (m, k)``,
    ``b (1, m)``, ``dW`` and ``db``; ``relus[l]`` whether layer ``l`` is followed by a ReLU (the last
    is not). ``images (N, k0)`` float, or pixel ``codes (N, k0)`` uint8 with ``table`` their values
    (``images`` then unused; ``codes`` has no rows otherwise); ``targets (N, m_last)``.
    ``workspace`` is :func:`workspace`'s. Returns the summed cost in float64 as ``[over the batches of
    the first batch's size, over a smaller last batch]``.
    """
    acts, grads, partial, cost = workspace
    rate = weights[0].dtype.type(learning_rate)
    total = np.zeros(2)
    first = min(batch_size, order.shape[0])
    for start in range(0, order.shape[0], batch_size):
        rows = order[start:start + batch_size]
        chunks = _step(calls, images, codes, table, targets, rows, rate, parts, weights, biases, gradients,
                       bias_gradients, relus, acts, grads, partial, cost)
        kind = 0 if rows.shape[0] == first else 1
        for chunk in range(chunks):
            total[kind] += cost[chunk]
    return total


def workspace(weights, batch_size):
    """The arrays :func:`dense_softmax_epoch` works in for batches of up to ``batch_size`` rows: each
    layer's input and output rows, output gradients and per-chunk column sums, and the chunks' costs."""
    dtype = weights[0].dtype
    acts = (np.empty((batch_size, weights[0].shape[1]), dtype),)
    acts += tuple(np.empty((batch_size, W.shape[0]), dtype) for W in weights)
    grads = tuple(np.empty((batch_size, W.shape[0]), dtype) for W in weights)
    partial = tuple(np.empty((CHUNKS, W.shape[0]), dtype) for W in weights)
    return acts, grads, partial, np.empty(CHUNKS)
