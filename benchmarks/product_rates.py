"""The rate of the one-thread oneMKL products the Numba kernels call, on the CNN's and W2's shapes.

``python benchmarks/product_rates.py [--repeats 100]`` times, in a compiled loop on one thread (as each
Numba thread runs them inside the fused kernels), a 1024³ product, the second convolution's three
products for a chunk of 4 images (784 rows of 288 taps, 64 channels): forward ``columns @ W.T``, weight
gradient ``dz.T @ columns`` and input gradient ``dz @ W``, and W2's products as each of two threads
takes them in its epoch program (300 rows of a batch of 600; 256 of 512 weight rows), the first
layer's also with its weights stored transposed (``x @ Wt``, ``dWt = x.T @ dz``), and prints GFLOP/s
(best of 7 rounds).
Run it under ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (with the Numba variables of docs/performance.md) to
see the AVX2 code path. Needs the ``mkl`` extra.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy

from fastprop.backends import load_backend
from fastprop.backends.numba.kernels.intrinsics import JIT
from fastprop.backends.numba.kernels.products import NO_TRANS, TRANS, _gemm

#: (label, transpose a, transpose b, m, n, k)
SHAPES = [("square 1024", NO_TRANS, NO_TRANS, 1024, 1024, 1024),
          ("conv2 forward 784x288 @ 288x64", NO_TRANS, TRANS, 784, 64, 288),
          ("conv2 weight gradient 64x784 @ 784x288", TRANS, NO_TRANS, 64, 288, 784),
          ("conv2 input gradient 784x64 @ 64x288", NO_TRANS, NO_TRANS, 784, 288, 64),
          ("W2 layer 1 forward x @ W.T (300x784 -> 512)", NO_TRANS, TRANS, 300, 512, 784),
          ("W2 layer 1 forward x @ Wt (W stored 784x512)", NO_TRANS, NO_TRANS, 300, 512, 784),
          ("W2 layer 2 forward x @ W.T (300x512 -> 512)", NO_TRANS, TRANS, 300, 512, 512),
          ("W2 layer 2 input gradient dz @ W", NO_TRANS, NO_TRANS, 300, 512, 512),
          ("W2 layer 1 weight gradient dz.T @ x (256 rows)", TRANS, NO_TRANS, 256, 784, 600),
          ("W2 layer 1 dWt = x.T @ dz (256 columns)", TRANS, NO_TRANS, 784, 256, 600)]


@numba.njit(**JIT)
def _loop(calls, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, repeats):
    for _ in range(repeats):
        _gemm(calls, trans_a, trans_b, m, n, k, a, 0, lda, b, 0, ldb, 0.0, c, 0, n)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="products per timed round")
    args = parser.parse_args()
    calls = load_backend("numba")._products.kernel_calls(numpy.float32)
    if calls is None:
        raise SystemExit("oneMKL is not in use: install the mkl extra (pip install 'fastprop[mkl]').")
    rng = numpy.random.default_rng(0)
    for label, trans_a, trans_b, m, n, k in SHAPES:
        a, b = rng.random(m * k, numpy.float32), rng.random(k * n, numpy.float32)
        c = numpy.empty(m * n, numpy.float32)
        lda, ldb = (m if trans_a == TRANS else k), (k if trans_b == TRANS else n)
        repeats = max(1, args.repeats * 20_000_000 // (m * n * k))
        _loop(calls, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, 1)
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            _loop(calls, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, repeats)
            best = min(best, time.perf_counter() - started)
        print(f"{label:48s} {2 * m * n * k * repeats / best / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
