"""Time CNN training epochs with the Numba backend's column matrix made in chunks of several sizes.

``python benchmarks/column_chunks.py --megabytes 2,8 [--rounds 7]`` trains the CNN workload (2,560
rows of Fashion-MNIST, or seeded synthetic pixels without it) with the chunk size the backend uses set
to each size in turn, epoch by epoch in one process, and prints the best and the median epoch of each
size (the first round left out): ``CHUNK_BYTES`` (column matrix per chunk of images, made and
multiplied on one Numba thread) with oneMKL, ``COLUMN_BYTES`` (made, then multiplied on the BLAS's
threads) with NumPy's BLAS (``FASTPROP_BLAS=numpy``); the output names which.
"""

from __future__ import annotations

import argparse
import statistics

from fastprop.backends.numba import convolution as numba_convolution
from fastprop.bench.data import load_rows
from fastprop.bench.runners import make_runner
from fastprop.bench.timing import timed
from fastprop.bench.workloads import WORKLOADS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", default="2,8", help="comma-separated chunk sizes in MB")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(float(size) * 2**20) for size in args.megabytes.split(",")]
    images, targets, _ = load_rows(2560, "auto")
    runner = make_runner("numba", WORKLOADS["CNN"], "float32", images, targets)
    on_numba_threads = runner.backend._products.kernel_calls("float32") is not None
    setting = "CHUNK_BYTES" if on_numba_threads else "COLUMN_BYTES"
    print(f"sizes of {setting} (backends/numba/convolution.py)")
    seconds = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size in sizes:
            setattr(numba_convolution, setting, size)
            runner.before_epoch()
            seconds[size].append(timed(runner.train_epoch))
    for size, times in seconds.items():
        kept = times[1:] or times
        best, median = 1e3 * min(kept), 1e3 * statistics.median(kept)
        print(f"{size / 2**20:g} MB: best {best:.0f} ms, median {median:.0f} ms per epoch of 2,560 rows")


if __name__ == "__main__":
    main()
