"""Time the Numba backend's 3x3 convolutions as im2col + BLAS and as Winograd F(2x2, 3x3), alternating.

``python benchmarks/winograd_conv.py [--rounds 5] [--dtype float32]`` times, for each layer shape, the
forward (with ReLU) and the backward (ReLU mask, weight, bias and input gradients) of a batch of 128
images both ways in turn, and prints the min and median milliseconds over the rounds and the ratio
of the medians. ``--epoch`` times training epochs of the CNN workload (2,560 images) instead.
The way is chosen by setting the backend's ``WINOGRAD_CHANNELS`` (``None`` turns Winograd off).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy

import fastprop
from fastprop.backends import load_backend
from fastprop.backends.numba import convolution as numba_convolution

#: (label, C, K, H = W) of the layers timed; padding 1, batch 128.
SHAPES = [("CNN conv2", 32, 64, 14), ("32->32 28x28", 32, 32, 28), ("64->64 7x7", 64, 64, 7),
          ("16->16 28x28", 16, 16, 28), ("16->32 14x14", 16, 32, 14), ("8->8 28x28", 8, 8, 28)]
WAYS = {"im2col": None, "winograd": 1}


def layer_milliseconds(backend, C, K, size, dtype, repeats=5, batch=128):
    """Median milliseconds of the forward and of the backward of one layer over ``repeats`` calls."""
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, C)).astype(dtype)
    W = (0.1 * rng.standard_normal((K, C, 3, 3))).astype(dtype)
    b = numpy.zeros((1, K), dtype)
    dW, db = numpy.zeros_like(W), numpy.zeros_like(b)
    forward, backward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        y = backend.conv2d_forward(x, W, b, (1, 1), (1, 1), relu=True)
        middle = time.perf_counter()
        backend.conv2d_backward(x, W, y, y, dW, db, (1, 1), (1, 1), relu=True)
        backward.append(time.perf_counter() - middle)
        forward.append(middle - start)
    return 1e3 * statistics.median(forward), 1e3 * statistics.median(backward)


def epoch_seconds(rounds):
    from fastprop.bench.data import load_rows
    from fastprop.bench.runners import make_runner
    from fastprop.bench.workloads import WORKLOADS

    images, targets, _ = load_rows(2560, "auto")
    runners = {}
    for way, channels in WAYS.items():
        numba_convolution.WINOGRAD_CHANNELS = channels
        runners[way] = make_runner("numba", WORKLOADS["CNN"], "float32", images, targets)
    times = {way: [] for way in WAYS}
    for round_ in range(rounds + 1):  # the first round compiles and warms up
        for way, runner in runners.items():
            numba_convolution.WINOGRAD_CHANNELS = WAYS[way]
            runner.before_epoch()
            start = time.perf_counter()
            runner.train_epoch()
            if round_:
                times[way].append(time.perf_counter() - start)
    for way, seconds in times.items():
        print(f"CNN epoch {way:9s} min {min(seconds):.3f} s  median {statistics.median(seconds):.3f} s")
    ratio = statistics.median(times["im2col"]) / statistics.median(times["winograd"])
    print(f"im2col / winograd (medians): {ratio:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--epoch", action="store_true")
    options = parser.parse_args()
    if options.epoch:
        return epoch_seconds(options.rounds)
    backend, dtype = load_backend("numba"), numpy.dtype(options.dtype)
    print(fastprop.__name__, backend.info())
    for label, C, K, size in SHAPES:
        times = {way: [] for way in WAYS}
        for round_ in range(options.rounds + 1):
            for way, channels in WAYS.items():
                numba_convolution.WINOGRAD_CHANNELS = channels
                measured = layer_milliseconds(backend, C, K, size, dtype)
                if round_:  # the first round compiles and warms up
                    times[way].append(measured)
        cells = []
        for way, measured in times.items():
            forward, backward = zip(*measured)
            cells.append(f"{way} fwd {min(forward):6.2f}/{statistics.median(forward):6.2f} "
                         f"bwd {min(backward):6.2f}/{statistics.median(backward):6.2f}")
        ratio = [statistics.median(m[i] for m in times["im2col"])
                 / statistics.median(m[i] for m in times["winograd"]) for i in (0, 1)]
        print(f"{label:14s} {' | '.join(cells)} | im2col/winograd fwd {ratio[0]:.2f} bwd {ratio[1]:.2f}")


if __name__ == "__main__":
    main()
