"""Where a training epoch goes on the Numba backend: the time of each backend method, call by call.

``python benchmarks/epoch_breakdown.py [--workload W2] [--runner numba] [--epochs 3]`` trains the
workload with one of ``fastprop bench``'s runners (``numba``: ``train()``; ``numba-steps``: the
notebook's step loop), on its rows (50,000 for W1 and W2, 2,560 for the CNN), and times every call of
the backend's contract methods and of the kernels they launch over the last epoch, printing each
name's total and call count beside the epoch's own time. Nested calls are counted in both names (a
layer's method and the kernel it launches), so the lines do not add up; what the whole epoch spends
outside them is Python and the training loop. W1 and W2 under ``train()`` run as one compiled program
per epoch (a single line); ``--runner numba-steps`` shows their layers one by one.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time

from fastprop.bench.data import load_rows
from fastprop.bench.runners import make_runner
from fastprop.bench.workloads import WORKLOADS
from fastprop.backends.base import Backend

#: Kernels timed beside the contract methods (those a workload launches; others never show up).
KERNELS = ("sigmoid_mse_epoch", "dense_epoch.dense_softmax_epoch", "products.linear_forward",
           "products.linear_backward", "products.conv_forward",
           "products.conv_backward", "products.conv_pool_forward", "products.conv_pool_backward",
           "products.matmul", "direct.direct_pool_forward", "direct.direct_pool_backward",
           "dense_forward", "dense_backward", "bias_epilogue",
           "masked_gradient", "sum_chunks", "im2col", "col2im", "conv_forward_direct",
           "conv_weight_gradient_direct", "maxpool_forward", "maxpool_backward", "take_rows",
           "sgd_update", "sgd_update_parallel", "adam_update", "softmax_cross_entropy",
           "softmax_cross_entropy_gradient", "batch_norm_forward", "batch_norm_backward")


def _timing(function, label, totals, counts):
    @functools.wraps(function)
    def timed(*arguments, **options):
        started = time.perf_counter()
        try:
            return function(*arguments, **options)
        finally:
            totals[label] += time.perf_counter() - started
            counts[label] += 1
    return timed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W2", choices=sorted(WORKLOADS))
    parser.add_argument("--runner", default="numba", choices=("numba", "numba-steps"),
                        help="train() or the notebook's step loop")
    parser.add_argument("--epochs", type=int, default=3, help="epochs run; the last one is reported")
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]
    images, targets, source = load_rows(2560 if args.workload == "CNN" else 50_000, "auto")
    runner = make_runner(args.runner, workload, "float32", images, targets)
    backend, totals, counts = runner.backend, collections.Counter(), collections.Counter()
    for name in dir(Backend):  # the contract methods, as the Numba backend implements them
        if not name.startswith("_") and callable(getattr(Backend, name)):
            setattr(backend, name, _timing(getattr(backend, name), name, totals, counts))
    for path in KERNELS:
        *package, name = path.split(".")
        owner = getattr(backend.kernels, package[0]) if package else backend.kernels
        setattr(owner, name, _timing(getattr(owner, name), "kernel " + path, totals, counts))
    for _ in range(args.epochs):
        totals.clear()
        counts.clear()
        runner.before_epoch()
        started = time.perf_counter()
        runner.train_epoch()
        epoch = time.perf_counter() - started
    print(f"{args.workload} on {source} rows, one epoch of the {args.runner} runner: {1e3 * epoch:.1f} ms")
    for name, seconds in totals.most_common():
        print(f"  {name:40s} {1e3 * seconds:8.1f} ms  {counts[name]:5d} calls")


if __name__ == "__main__":
    main()
