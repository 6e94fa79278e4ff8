"""Matrix-product rates of the BLAS libraries fastprop can use, on the shapes its workloads multiply.

``python benchmarks/blas_products.py [--rounds 8]`` times, round by round and library by library
(NumPy's BLAS and oneMKL through ``fastprop.backends.blas`` when installed), the five products of a
W2 step (batch 600: ``x @ W.T`` for 784->512 and 512->512, ``dz.T @ x`` for both weight gradients,
``dz @ W``) and the two of the CNN's second convolution (128 images of 14x14: the column matrix times
the weights, and its transpose times the output gradient), each operand one of six copies in turn so
that caches hold no more than they do in training. It prints each library's GFLOP/s per round, the
best and the median.

``--peer`` instead times PyTorch's W2 epoch (12,800 rows, median of 4 after one) in fresh processes,
with and without fastprop's oneMKL loaded and used beside it, alternating: one process holds one
oneMKL runtime, so PyTorch's products run on the threading layer fastprop chose.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy

from fastprop.backends import blas

#: (m, k, n, layout of a and b: "n" as stored, "t" a transposed view) of the products timed.
SHAPES = {
    "W2": [(600, 784, 512, "nt"), (600, 512, 512, "nt"), (512, 600, 784, "tn"), (512, 600, 512, "tn"),
           (600, 512, 512, "nn")],
    "CNN conv2": [(128 * 196, 288, 64, "nn"), (288, 128 * 196, 64, "tn")],
}
COPIES = 6


def _operands(rng, m, k, n, layout, dtype):
    def matrix(rows, columns, transposed):
        stored = rng.random((columns, rows) if transposed else (rows, columns), dtype=dtype)
        return stored.T if transposed else stored
    return [(matrix(m, k, layout[0] == "t"), matrix(k, n, layout[1] == "t"), numpy.empty((m, n), dtype))
            for _ in range(COPIES)]


def gflops(products, operands, flops, repeats):
    started = time.perf_counter()
    for i in range(repeats):
        for copies in operands:
            a, b, out = copies[i % COPIES]
            products.matmul(a, b, out)
    return flops * repeats / (time.perf_counter() - started) / 1e9


def rates(rounds, repeats=12):
    rng = numpy.random.default_rng(0)
    libraries = [blas.NumpyProducts()]
    if blas.find_mkl() is not None:
        libraries.append(blas.products("mkl"))
    for workload, shapes in SHAPES.items():
        operands = [_operands(rng, *shape, numpy.float32) for shape in shapes]
        flops = sum(2 * m * k * n for m, k, n, _ in shapes)
        found = {library.name: [] for library in libraries}
        for _ in range(rounds):
            for library in libraries:
                time.sleep(0.2)
                found[library.name].append(gflops(library, operands, flops, repeats))
        for library in libraries:
            values = found[library.name]
            print(f"{workload:9} {library.name:5} GFLOP/s per round: {' '.join(f'{v:.0f}' for v in values)}; "
                  f"best {max(values):.0f}, median {statistics.median(values):.0f}  ({library.info()})")


PEER = """
import statistics, sys, numpy
from fastprop.bench.data import load_rows
from fastprop.bench.runners import make_runner
from fastprop.bench.timing import timed
from fastprop.bench.workloads import WORKLOADS
images, targets, _ = load_rows(12800, "auto")
if sys.argv[1] == "loaded":
    from fastprop.backends import blas
    products, a = blas.products("mkl"), numpy.ones((600, 600), numpy.float32)
runner, seconds = make_runner("torch-cpu", WORKLOADS["W2"], "float32", images, targets), []
for _ in range(5):
    if sys.argv[1] == "loaded":
        for _ in range(20):
            products.matmul(a, a, numpy.empty_like(a))
    runner.before_epoch()
    seconds.append(timed(runner.train_epoch))
print(statistics.median(seconds[1:]))
"""


def peer(rounds):
    found = {"without": [], "loaded": []}
    for _ in range(rounds):
        for case in found:
            command = [sys.executable, "-c", PEER, case]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            found[case].append(1e3 * float(done.stdout.split()[-1]))
    for case, values in found.items():
        print(f"PyTorch W2 epoch, fastprop's oneMKL {case:7}: {' '.join(f'{v:.0f}' for v in values)} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--peer", action="store_true", help="time PyTorch beside fastprop's oneMKL instead")
    options = parser.parse_args()
    if options.peer:
        if blas.find_mkl() is None:
            sys.exit('--peer needs oneMKL: pip install "fastprop[mkl]"')
        peer(options.rounds)
    else:
        rates(options.rounds)


if __name__ == "__main__":
    main()
