"""Time one training step of the CNN with and without batch normalisation, alternating.

``python benchmarks/batch_norm_step.py [--backend numba] [--rounds 2]`` builds ``cnn_network()`` and
``cnn_network(norm=True)`` (batch 128, float32, Adam, softmax cross-entropy), takes three warm-up
steps, then prints the median of 15 timed steps of each, for each round, and the ratio of the best
medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy

import fastprop
from fastprop.models import cnn_network


def step_milliseconds(norm, backend, steps=15, batch=128):
    rng = numpy.random.default_rng(1)
    x = rng.random((batch, 784)).astype(numpy.float32)
    t = numpy.eye(10, dtype=numpy.float32)[rng.integers(0, 10, batch)]
    with fastprop.use_backend(backend, "float32"):
        net, optimizer = cnn_network(rng=0, norm=norm), fastprop.Adam(1e-3)
        cost = fastprop.SoftmaxCrossEntropy()
        times = []
        for i in range(3 + steps):
            start = time.perf_counter()
            net.zero_gradients()
            net.backward(cost.gradient(cost.estimate(t, net.forward(x))))
            optimizer.step(net)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = {False: [], True: []}
    for _ in range(args.rounds):
        for norm in (False, True):
            results[norm].append(step_milliseconds(norm, args.backend))
    for norm, values in results.items():
        print(f"{'with' if norm else 'without'} batch norm: " + ", ".join(f"{v:.1f} ms" for v in values))
    print(f"ratio of the best medians: {min(results[True]) / min(results[False]):.2f}")


if __name__ == "__main__":
    main()
