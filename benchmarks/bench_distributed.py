"""Data-parallel throughput: the W2 workload on N MPI ranks against one process, in one run.

    python benchmarks/bench_distributed.py --ranks 2 --epochs 3

starts ``mpiexec -n 1`` with ``--threads`` BLAS/Numba threads (one process using the machine), then
``mpiexec -n RANKS`` with ``threads // ranks`` each (the same cores, split over ranks), trains W2
(784-512-512-10 ReLU, softmax cross-entropy, batch 600, float32) on the same rows in both, and prints
samples/s, their ratio and the share of each step spent in the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(backend, epochs, rows):
    import numpy

    import fastprop
    from fastprop import distributed
    from fastprop.bench import WORKLOADS, load_rows
    from fastprop.training import EpochRunner, epoch_generator

    communicator = distributed.init("mpi")
    workload = WORKLOADS["W2"]
    images, targets, _ = load_rows(rows)
    with fastprop.use_backend(backend, "float32") as engine:
        net = workload.build(0)
        images, targets = engine.asarray(images, dtype="float32"), engine.asarray(targets, dtype="float32")
        runner = EpochRunner(net, workload.cost_function(), images, targets, workload.batch_size, None,
                             communicator=communicator)
        seconds = []
        for epoch in range(epochs + 1):  # the first epoch warms up
            order = engine.permutation(epoch_generator(0, epoch + 1), rows)
            communicator.allreduce(numpy.zeros(1))  # start together
            reduced, started = communicator.allreduce_seconds, time.perf_counter()
            runner.run(order, workload.learning_rate)
            seconds.append((time.perf_counter() - started, communicator.allreduce_seconds - reduced))
    if communicator.is_root:
        timed = seconds[1:]
        epoch = statistics.median(s for s, _ in timed)
        print(json.dumps({"ranks": communicator.size, "epoch_s": epoch,
                          "allreduce_s": statistics.median(r for _, r in timed),
                          "steps": len(runner.batches), "samples_per_s": rows / epoch}))


def launch(ranks, threads, backend, epochs, rows):
    from fastprop.distributed import launcher

    environment = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                   "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = [launcher(), "-n", str(ranks), sys.executable, "-m", "mpi4py", __file__,
               "--worker", "--backend", backend, "--epochs", str(epochs), "--rows", str(rows)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.backend, args.epochs, args.rows)
    one = launch(1, args.threads, args.backend, args.epochs, args.rows)
    many = launch(args.ranks, max(1, args.threads // args.ranks), args.backend, args.epochs, args.rows)
    print(f"W2 on {args.backend}, float32, {args.rows} rows, median of {args.epochs} epochs")
    for label, result, threads in (("1 process", one, args.threads),
                                   (f"{args.ranks} ranks", many, max(1, args.threads // args.ranks))):
        share, per_step = result["allreduce_s"] / result["epoch_s"], result["allreduce_s"] / result["steps"]
        print(f"{label:>10} x {threads} thread(s): {result['samples_per_s']:>9,.0f} samples/s, "
              f"{result['epoch_s'] * 1e3:8.1f} ms/epoch, all-reduce {per_step * 1e3:.2f} ms/step "
              f"({share:.1%} of the epoch)")
    print(f"ratio: {args.ranks} ranks reach {many['samples_per_s'] / one['samples_per_s']:.2f}x one process")


if __name__ == "__main__":
    main()
