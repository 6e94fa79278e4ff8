"""GPU benchmark of the CuPy backend on W1 and W2, beside the CPU backends; ``gpu_check.sh`` runs it.

* **W1**: ``Linear(784, 10)`` + ``Sigmoid``, ``MeanSquareError``, SGD at 1e-4, batch 600.
* **W2**: 784-512-512-10 with ``ReLU`` and ``SoftmaxCrossEntropy``, SGD at 1e-4, batch 600.

Rows are seeded synthetic float32 pixels (50,000 by default) with one-hot labels, put on the backend
before timing. On CuPy both training paths run: ``step`` is ``train``'s per-batch loop (the backend's
``compile_epoch`` switched off) and ``graph`` the ``compile_epoch`` fast path. ``cold start`` is the
wall time of the first one-epoch ``train`` call of that path in this process, kernel compilation
included (CuPy's kernel cache starts empty unless ``--keep-kernel-cache``); warm numbers are the
median of ``train``'s per-epoch seconds, each epoch ending with the backend's synchronize.
``inference`` is forward passes over batches of 10,000 rows. NumPy and Numba (where it runs) get a
few epochs of the same workloads for the ratios. Without CuPy or a GPU the CuPy rows are skipped
with the reason, so the script also runs on a CPU machine::

    python benchmarks/bench_gpu.py --rows 3000 --epochs 2 --w2-epochs 2 --cpu-epochs 1

The table is printed last; ``--json`` (default ``$OUT/gpu_bench.json`` when ``OUT`` is set) saves it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy

#: Per-epoch targets of the graph path on 50,000 rows, in milliseconds.
TARGETS_MS = {"W1": 1.0, "W2": 15.0}
FULL_ROWS = 50_000


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="training rows per epoch (default 50000)")
    parser.add_argument("--epochs", type=int, default=20, help="timed warm epochs of W1 on the GPU (default 20)")
    parser.add_argument("--w2-epochs", type=int, default=5, help="timed warm epochs of W2 on the GPU (default 5)")
    parser.add_argument("--cpu-epochs", type=int, default=2, help="timed warm epochs on CPU backends (default 2)")
    parser.add_argument("--inference-repeats", type=int, default=10, help="timed forward passes (default 10)")
    parser.add_argument("--backends", default="cupy,numpy,numba", help="comma-separated (default cupy,numpy,numba)")
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated (default W1,W2)")
    parser.add_argument("--keep-kernel-cache", action="store_true",
                        help="use CuPy's usual kernel cache, so cold start may skip compilation")
    default_json = os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None
    parser.add_argument("--json", default=default_json, help="write the results here (default $OUT/gpu_bench.json)")
    return parser.parse_args(argv)


def build(workload, fastprop):
    """The workload's network on the current backend (same initial weights on every backend) and cost."""
    rng = numpy.random.default_rng(0)
    if workload == "W1":
        return fastprop.Network([fastprop.Linear(784, 10, rng=rng), fastprop.Sigmoid()]), fastprop.MeanSquareError()
    layers = [fastprop.Linear(784, 512, init="he", rng=rng), fastprop.ReLU(),
              fastprop.Linear(512, 512, init="he", rng=rng), fastprop.ReLU(),
              fastprop.Linear(512, 10, init="xavier", rng=rng)]
    return fastprop.Network(layers), fastprop.SoftmaxCrossEntropy()


def synthetic_rows(rows, seed=0):
    rng = numpy.random.default_rng(seed)
    images = rng.random((rows, 784), dtype=numpy.float32)
    labels = rng.integers(0, 10, rows)
    for k in range(10):  # a learnable signal, so that the weights stay in a realistic range
        images[labels == k, 60 * k : 60 * k + 40] += 1.0
    return images, numpy.eye(10, dtype=numpy.float32)[labels]


def time_training(backend_name, path, workload, data, warm_epochs, fastprop):
    """Cold start (first one-epoch train call, s), warm per-epoch seconds, and what compile_epoch gave."""
    backend = fastprop.backends.load_backend(backend_name)
    programs = []
    original = backend.compile_epoch
    if path == "step":
        backend.compile_epoch = lambda *args: None
    else:
        backend.compile_epoch = lambda *args: programs.append(original(*args)) or programs[-1]
    try:
        with fastprop.use_backend(backend_name, "float32"):
            net, cost = build(workload, fastprop)
        started = time.perf_counter()
        fastprop.train(net, cost, 1, 600, 1e-4, data=data, quiet=True, verbose=False)
        backend.synchronize()
        cold = time.perf_counter() - started
        history = fastprop.train(net, cost, warm_epochs, 600, 1e-4, data=data, quiet=True, verbose=False)
    finally:
        del backend.compile_epoch  # the class's method again
    last = programs[-1] if programs else None
    mode = "step loop" if last is None else getattr(last, "mode", "fast path")
    return cold, list(history.seconds), mode, net


def time_inference(backend, net, images, repeats, batch=10_000):
    net.eval()
    batches = [images[start : start + batch] for start in range(0, images.shape[0], batch)]
    for x in batches:  # warm up: compile and allocate
        net.forward(x)
    backend.synchronize()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for x in batches:
            net.forward(x)
        backend.synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run(args):
    if not args.keep_kernel_cache:  # cold start then includes NVRTC compilation
        os.environ["CUPY_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastprop-cupy-cache-")
    import fastprop
    import fastprop.backends

    statuses = fastprop.available_backends()
    results, skipped = [], []
    machine = {"python": platform.python_version(), "numpy": numpy.__version__, "cpus": os.cpu_count(),
               "rows": args.rows, "backends": {}}
    images_host, targets_host = synthetic_rows(args.rows)
    validation_host = synthetic_rows(1000, seed=1)
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        status = statuses.get(name)
        if status is None or not status.available:
            skipped.append(f"{name}: {status.reason if status else 'not registered'}")
            continue
        backend = fastprop.backends.load_backend(name)
        machine["backends"][name] = backend.info()
        on_gpu = name == "cupy"
        images = backend.asarray(images_host, dtype=numpy.float32)
        data = (images, backend.asarray(targets_host, dtype=numpy.float32),
                *(backend.asarray(a, dtype=numpy.float32) for a in validation_host))
        for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
            warm = (args.epochs if workload == "W1" else args.w2_epochs) if on_gpu else args.cpu_epochs
            for path in ("step", "graph") if on_gpu else ("train",):
                print(f"timing {name} {path} {workload}: 1 cold + {warm} warm epochs", file=sys.stderr, flush=True)
                cold, seconds, mode, net = time_training(name, path, workload, data, warm, fastprop)
                median = statistics.median(seconds)
                row = {"backend": name, "path": path, "workload": workload, "rows": args.rows,
                       "ms_per_epoch": 1e3 * median, "samples_per_second": args.rows / median,
                       "cold_start_s": cold, "warm_epochs": len(seconds), "epoch_mode": mode,
                       "epoch_ms_all": [1e3 * s for s in seconds]}
                if on_gpu and path == "graph" and args.rows == FULL_ROWS:
                    row["target_ms"] = TARGETS_MS[workload]
                    row["target_met"] = row["ms_per_epoch"] <= TARGETS_MS[workload]
                results.append(row)
            repeats = args.inference_repeats if on_gpu else max(1, args.inference_repeats // 5)
            seconds = time_inference(backend, net, images, repeats)
            results.append({"backend": name, "path": "inference", "workload": workload, "rows": args.rows,
                            "ms_per_epoch": 1e3 * seconds, "samples_per_second": args.rows / seconds})
    add_ratios(results)
    return {"machine": machine, "targets_ms": TARGETS_MS, "skipped": skipped, "results": results}


def add_ratios(results):
    """Speed-up of each row over NumPy's row of the same workload and kind (training or inference)."""
    kind = lambda row: "inference" if row["path"] == "inference" else "training"  # noqa: E731
    numpy_ms = {(r["workload"], kind(r)): r["ms_per_epoch"] for r in results if r["backend"] == "numpy"}
    for row in results:
        reference = numpy_ms.get((row["workload"], kind(row)))
        row["speedup_vs_numpy"] = reference / row["ms_per_epoch"] if reference else None


def format_table(report):
    header = f"{'backend':<8} {'path':<10} {'workload':<8} {'ms/epoch':>11} {'samples/s':>13} {'vs numpy':>9} " \
             f"{'cold s':>7}  target"
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        target = ""
        if "target_ms" in row:
            target = f"<= {row['target_ms']:g} ms: {'met' if row['target_met'] else 'MISSED'}"
        elif row["backend"] == "cupy" and row["path"] == "graph":
            target = f"<= {TARGETS_MS[row['workload']]:g} ms at {FULL_ROWS} rows"
        speedup = f"{row['speedup_vs_numpy']:.1f}x" if row.get("speedup_vs_numpy") else "-"
        cold = f"{row['cold_start_s']:.2f}" if "cold_start_s" in row else "-"
        lines.append(f"{row['backend']:<8} {row['path']:<10} {row['workload']:<8} {row['ms_per_epoch']:>11.3f} "
                     f"{row['samples_per_second']:>13,.0f} {speedup:>9} {cold:>7}  {target}")
    gpu = report["machine"]["backends"].get("cupy", {}).get("device", "no GPU")
    lines.append(f"rows per epoch: {report['machine']['rows']}; GPU: {gpu}; inference rows: ms per pass over all rows")
    lines += [f"skipped {reason}" for reason in report["skipped"]]
    return "\n".join(lines)


def main(argv=None):
    args = parse_arguments(argv)
    report = run(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=str)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
