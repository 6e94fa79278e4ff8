"""Kernels of the batch-normalisation contract methods, on ``(rows, C)`` matrices.

Each is parallel over fixed chunks of ``ROWS_PER_CHUNK`` rows. Column sums are taken per chunk in
float64 and the chunks' sums added in chunk order, so results never depend on the thread count. The
training forward reads ``x`` twice (the statistics, then the output); the backward reads ``x`` and
``dy`` twice (the two sums, then ``dx``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT, REDUCE

#: Rows per chunk of the column sums.
ROWS_PER_CHUNK = 512


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def _column_sums(x, shift, partial):
    """``partial[chunk, 0, :]`` the sums of ``x - shift`` over the chunk's rows, ``partial[chunk, 1, :]``
    those of its squares (float64)."""
    rows, C = x.shape
    for chunk in prange(partial.shape[0]):
        first, last = chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)
        sums = np.zeros(C, np.float64)
        squares = np.zeros(C, np.float64)
        for r in range(first, last):
            for c in range(C):
                value = np.float64(x[r, c]) - shift[c]
                sums[c] += value
                squares[c] += value * value
        partial[chunk, 0, :] = sums
        partial[chunk, 1, :] = squares


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def _gradient_sums(x, mu, inverse_std, dy, y, relu, partial):
    """``partial[chunk, 0, :]`` the chunk's sums of ``dy``, ``partial[chunk, 1, :]`` those of ``dy *
    x_hat`` with ``x_hat = (x - mu) * inverse_std`` (float64); with ``relu``, ``dy`` only where the
    output ``y`` is positive."""
    rows, C = x.shape
    for chunk in prange(partial.shape[0]):
        first, last = chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)
        sums = np.zeros(C, np.float64)
        products = np.zeros(C, np.float64)
        for r in range(first, last):
            for c in range(C):
                g = np.float64(dy[r, c]) if not relu or y[r, c] > 0 else 0.0
                sums[c] += g
                products[c] += g * ((np.float64(x[r, c]) - mu[c]) * inverse_std[c])
        partial[chunk, 0, :] = sums
        partial[chunk, 1, :] = products


@numba.njit(**JIT)
def _in_order(partial):
    """The chunks' sums added in chunk order: ``(2, C)`` float64."""
    total = np.zeros((2, partial.shape[2]), np.float64)
    for chunk in range(partial.shape[0]):
        total += partial[chunk]
    return total


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def _affine(x, mu, scale, shift, relu, y):
    """``y = (x - mu) * scale + shift`` per column, then ``max(y, 0)`` with ``relu``."""
    rows, C = x.shape
    zero = y.dtype.type(0)
    chunks = (rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    for chunk in prange(chunks):
        for r in range(chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)):
            for c in range(C):
                value = (x[r, c] - mu[c]) * scale[c] + shift[c]
                y[r, c] = max(value, zero) if relu else value


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def _input_gradient(x, mu, inverse_std, dy, y, relu, scale, mean_dy, mean_product, dx):
    """``dx = scale * (dy - mean_dy - x_hat * mean_product)`` per column; with ``relu``, ``dy`` only
    where the output ``y`` is positive."""
    rows, C = x.shape
    zero = dx.dtype.type(0)
    chunks = (rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    for chunk in prange(chunks):
        for r in range(chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)):
            for c in range(C):
                x_hat = (x[r, c] - mu[c]) * inverse_std[c]
                g = dy[r, c] if not relu or y[r, c] > 0 else zero
                dx[r, c] = scale[c] * (g - mean_dy[c] - x_hat * mean_product[c])


def _partial(rows, C):
    return np.empty(((rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK, 2, C), np.float64)


def batch_norm_forward(x, gamma, beta, mean, var, training, momentum, eps, relu):
    """The Numba path of ``Backend.batch_norm_forward``: ``(y, mu, inverse_std)``."""
    rows, C = x.shape
    dtype = x.dtype.type
    if training:
        shift = x[0].astype(np.float64)  # sums of x - x[0]: no cancellation for data far from zero
        partial = _partial(rows, C)
        _column_sums(x, shift, partial)
        sums = _in_order(partial)
        centered_mean = sums[0] / rows
        variance = np.maximum(sums[1] / rows - centered_mean * centered_mean, 0.0)
        mu64 = shift + centered_mean
        mean *= 1.0 - momentum
        mean += (momentum * mu64).astype(mean.dtype)
        var *= 1.0 - momentum
        var += (momentum * rows / (rows - 1) * variance).astype(var.dtype)
        mu = mu64.astype(dtype)
        inverse_std = (1.0 / np.sqrt(variance + eps)).astype(dtype)
    else:
        mu = mean.copy()
        inverse_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(dtype)
    y = np.empty_like(x)
    _affine(x, mu, inverse_std * gamma, beta, relu, y)
    return y, mu, inverse_std


def batch_norm_backward(x, mu, inverse_std, gamma, dy, dgamma, dbeta, training, accumulate, need_dx, y):
    """The Numba path of ``Backend.batch_norm_backward``: ``dx`` or None; ``y`` is the fused ReLU's
    output, or None."""
    rows, C = x.shape
    relu, y = y is not None, dy if y is None else y
    partial = _partial(rows, C)
    _gradient_sums(x, mu, inverse_std, dy, y, relu, partial)
    sums = _in_order(partial)
    if accumulate:
        dbeta += sums[0].astype(dbeta.dtype)
        dgamma += sums[1].astype(dgamma.dtype)
    else:
        dbeta[...] = sums[0]
        dgamma[...] = sums[1]
    if not need_dx:
        return None
    dtype = x.dtype.type
    scale = gamma * inverse_std
    if training:
        mean_dy, mean_product = (sums[0] / rows).astype(dtype), (sums[1] / rows).astype(dtype)
    else:
        mean_dy = mean_product = np.zeros(C, dtype)
    dx = np.empty_like(x)
    _input_gradient(x, mu, inverse_std, dy, y, relu, scale, mean_dy, mean_product, dx)
    return dx
