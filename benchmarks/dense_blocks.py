"""The small dense layers' forward register blocks, 4 rows x 5 outputs against 2 x 5, built alike.

``python benchmarks/dense_blocks.py [--rounds 6] [--rows 20000]`` runs both blocks of
``backends/numba/kernels/dense.py`` (``_block_rows``), built for the instruction set Numba targets (set
``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` as in docs/performance.md for AVX2 code), and times
``x @ W.T + b`` for ``rows`` x 784 -> 10 in float32, alternating, printing each round's min and
median of 20 calls. The kernel itself takes the block its ``ROWS_PER_BLOCK`` names.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy
from numba import prange

from fastprop.backends import load_backend
from fastprop.backends.numba.kernels import dense
from fastprop.backends.numba.kernels.intrinsics import JIT, REDUCE


@numba.njit(parallel=True, fastmath=REDUCE, **JIT)
def forward(x, W, b, z, rows_per_block):
    """``dense_forward``'s products (no activation) with blocks of ``rows_per_block`` rows."""
    for block in prange((x.shape[0] + rows_per_block - 1) // rows_per_block):
        dense._block_rows(x, W, b, z, rows_per_block * block, rows_per_block)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    print("target:", load_backend("numba").info()["instruction_set"], "| kernel's block: ",
          dense.ROWS_PER_BLOCK, "rows")
    rng = numpy.random.default_rng(0)
    x = rng.random((args.rows, 784), numpy.float32)
    W = rng.normal(0, 0.1, (10, 784)).astype(numpy.float32)
    b = numpy.zeros((1, 10), numpy.float32)
    z = {rows: numpy.empty((args.rows, 10), numpy.float32) for rows in (4, 2)}
    for rows in (4, 2):
        forward(x, W, b, z[rows], rows)
    assert numpy.allclose(z[4], z[2], rtol=1e-5, atol=1e-5)
    for _ in range(args.rounds):
        line = []
        for rows in (4, 2):
            times = []
            for _ in range(20):
                started = time.perf_counter()
                forward(x, W, b, z[rows], rows)
                times.append(time.perf_counter() - started)
            line.append(f"{rows}x5 min {min(times) * 1e3:.2f} median {statistics.median(times) * 1e3:.2f} ms")
        print(" | ".join(line))


if __name__ == "__main__":
    main()
