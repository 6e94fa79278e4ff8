"""The kernels behind the Numba backend's elementwise and row-wise contract methods (dense layers are in
:mod:`.dense`, convolutions in :mod:`.conv`)."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from .intrinsics import JIT


@numba.njit(parallel=True, **JIT)
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
        for k in range(src.shape[1]):  # an explicit loop: Numba's row-slice assignment is slower
            out[i, k] = src[r, k]
    return True


@numba.njit(**JIT)
def relu(z):
    """Return ``max(z, 0)``."""
    out = np.empty_like(z)
    zero = z.dtype.type(0)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            out[i, j] = zero if z[i, j] < zero else z[i, j]  # NaN stays NaN, as in numpy.maximum
    return out


@numba.njit(**JIT)
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


@numba.njit(**JIT)
def softmax_cross_entropy(z, t):
    """Return ``-t * log_softmax(z)``, row by row."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        top, total = _row_max_and_exp_sum(z, i)
        log_total = np.log(total)
        for j in range(z.shape[1]):
            out[i, j] = -t[i, j] * (z[i, j] - top - log_total)
    return out


@numba.njit(**JIT)
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


@numba.njit(**JIT)
def sgd_update(param, grad, learning_rate):
    """In place: ``param -= learning_rate * grad`` with the rate rounded to the arrays' dtype."""
    rate = param.dtype.type(learning_rate)
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    for i in range(flat_param.shape[0]):
        flat_param[i] -= rate * flat_grad[i]


@numba.njit(parallel=True, **JIT)
def sgd_update_parallel(param, grad, learning_rate):
    """:func:`sgd_update` over blocks of the arrays in parallel (the same bits: each element alone)."""
    rate = param.dtype.type(learning_rate)
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    for i in prange(flat_param.shape[0]):
        flat_param[i] -= rate * flat_grad[i]


@numba.njit(parallel=True, **JIT)
def adam_update(param, grad, m, v, learning_rate, beta1, beta2, eps, step, weight_decay, decoupled):
    """In place, one pass: the Adam (AdamW with ``decoupled``) step of the contract's ``adam_update``,
    its operations in the reference's order, constants rounded to the arrays' dtype."""
    f = param.dtype.type
    decay, keep = f(weight_decay), f(1.0 - learning_rate * weight_decay)
    b1, b2, rest2 = f(beta1), f(beta2), f(1.0 - beta2)
    unbias2, epsilon = f(1.0 / math.sqrt(1.0 - beta2**step)), f(eps)
    rate = f(learning_rate / (1.0 - beta1**step))
    flat_param, flat_grad = param.reshape(param.size), grad.reshape(grad.size)
    flat_m, flat_v = m.reshape(m.size), v.reshape(v.size)
    for i in prange(flat_param.shape[0]):
        value, g = flat_param[i], flat_grad[i]
        if decoupled and weight_decay:
            value *= keep
        elif weight_decay:
            g = value * decay + g
        first = g + b1 * (flat_m[i] - g)
        second = flat_v[i] * b2 + g * g * rest2
        flat_m[i], flat_v[i] = first, second
        flat_param[i] = value - first / (math.sqrt(second) * unbias2 + epsilon) * rate


@numba.njit(parallel=True, **JIT)
def checksum(words, block):
    """The contract's ``checksum`` of uint64 ``words``: blocks of ``block`` words summed in parallel."""
    blocks = (words.size + block - 1) // block
    sums = np.zeros(blocks, np.uint64)
    golden, first = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)
    second = np.uint64(0x94D049BB133111EB)
    for b in prange(blocks):
        start = b * block
        part = words[start:min(words.size, start + block)]
        total, place = np.uint64(0), np.uint64(start)
        for i in range(part.size):
            x = part[i] ^ ((place + np.uint64(i)) * golden)
            x ^= x >> np.uint64(30)
            x *= first
            x ^= x >> np.uint64(27)
            x *= second
            x ^= x >> np.uint64(31)
            total += x
        sums[b] = total
    result = np.uint64(0)
    for b in range(blocks):
        result += sums[b]
    return result
