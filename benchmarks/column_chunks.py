"""Time CNN training epochs with the Numba backend's column matrix made in chunks of several sizes.

``python benchmarks/column_chunks.py --megabytes 2,8 [--rounds 7]`` trains the CNN workload (2,560
rows of Fashion-MNIST, or seeded synthetic pixels without it) with ``COLUMN_BYTES`` set to each size
in turn, epoch by epoch in one process, and prints the best and the median epoch of each size (the
first round left out). ``COLUMN_BYTES`` is the size of the im2col matrix made and multiplied at a time.
"""

from __future__ import annotations

import argparse
import statistics

from fastprop.backends.numba import backend as numba_backend
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
    seconds = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size in sizes:
            numba_backend.COLUMN_BYTES = size
            runner.before_epoch()
            seconds[size].append(timed(runner.train_epoch))
    for size, times in seconds.items():
        kept = times[1:] or times
        best, median = 1e3 * min(kept), 1e3 * statistics.median(kept)
        print(f"{size / 2**20:g} MB: best {best:.0f} ms, median {median:.0f} ms per epoch of 2,560 rows")


if __name__ == "__main__":
    main()
