"""GPU benchmark of the CuPy backend on W1 and W2, beside the CPU backends; ``gpu_check.sh`` runs it.

The workloads, rows and runners are :mod:`fastprop.bench`'s, so these are the README's W1 and W2
(8-bit pixel rows: Fashion-MNIST when it is on disk, seeded synthetic pixels otherwise, 50,000 by
default), timed as ``fastprop bench`` times them. On a GPU backend both training paths run:
``step`` is train()'s step loop (``FastpropRunner(..., fast=False)``) and ``graph`` the backend's
whole-epoch program. The ``cold`` row of each path is its first call in this process: backend load,
``warmup()``, setup (``compile_epoch`` included) and the first epoch, with CuPy's kernel cache empty
unless ``--keep-kernel-cache``. Warm figures are the median of the timed epochs after one warm-up
epoch; ``infer`` is forward passes over all rows in batches of 10,000. The CPU backends get a few
epochs of the same workloads for the ratios. Without CuPy or a GPU its rows are skipped with the
reason, so the script also runs on a CPU machine (``--require-gpu``, which ``gpu_check.sh`` passes,
stops it there instead, with the reason)::

    python benchmarks/bench_gpu.py --rows 3000 --epochs 2 --w2-epochs 2 --cpu-epochs 1

The table is printed last; ``--json`` (default ``$OUT/gpu_bench.json`` when ``OUT`` is set) saves it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

#: Per-epoch targets of the graph path on 50,000 rows, in milliseconds.
TARGETS_MS = {"W1": 1.0, "W2": 15.0}
FULL_ROWS = 50_000
DTYPE = "float32"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="training rows per epoch (default 50000)")
    parser.add_argument("--data", choices=("auto", "fashion-mnist", "synthetic"), default="auto",
                        help="auto: Fashion-MNIST when installed locally, else seeded synthetic pixels")
    parser.add_argument("--epochs", type=int, default=20,
                        help="timed warm epochs of W1 on the GPU (default 20)")
    parser.add_argument("--w2-epochs", type=int, default=5,
                        help="timed warm epochs of W2 on the GPU (default 5)")
    parser.add_argument("--cpu-epochs", type=int, default=2,
                        help="timed warm epochs on CPU backends and peers (default 2)")
    parser.add_argument("--inference-repeats", type=int, default=10, help="timed forward passes (default 10)")
    parser.add_argument("--backends", default="cupy,numpy,numba",
                        help="comma-separated fastprop backends, notebook or torch-cuda "
                             "(default cupy,numpy,numba)")
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated (default W1,W2)")
    parser.add_argument("--require-gpu", action="store_true",
                        help="stop with one line, status 1, where the CuPy backend cannot run (gpu_check.sh)")
    parser.add_argument("--keep-kernel-cache", action="store_true",
                        help="use CuPy's usual kernel cache, so cold start may skip compilation")
    default_json = os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None
    parser.add_argument("--json", default=default_json,
                        help="write the results here (default $OUT/gpu_bench.json)")
    return parser.parse_args(argv)


def _names(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def time_runner(bench, runner, mode, epochs, settle):
    """Seconds of each of ``epochs`` timed epochs, after one warm-up epoch."""
    return [bench.timed(getattr(runner, f"{mode}_epoch"), settle) for _ in range(epochs + 1)][1:]


def time_backend(bench, name, on_gpu, key, images, targets, args):
    """The rows of one fastprop backend on one workload: cold start, training per path, inference."""
    rows = len(images)
    epochs = (args.epochs if key == "W1" else args.w2_epochs) if on_gpu else args.cpu_epochs
    settle = 0.0 if on_gpu else None  # spinning BLAS threads only slow the next CPU runner
    results = []
    for path in ("step", "graph") if on_gpu else ("train",):
        label, fast = (f"{name} {path}" if on_gpu else name), path != "step"
        print(f"timing {label} {key}: cold start + 1 warm-up + {epochs} timed epochs",
              file=sys.stderr, flush=True)
        cold = bench.cold_start(name, DTYPE, key, rows, args.data, fresh_process=False, fast=fast)
        total = sum(cold[part] for part in ("load_s", "warmup_s", "setup_s", "first_epoch_s"))
        results.append(bench.result_row(label, DTYPE, key, "cold", rows, [cold["first_epoch_s"]], path=path,
                                        cold_start_s=total, **cold))
        runner = bench.FastpropRunner(name, bench.WORKLOADS[key], DTYPE, images, targets, fast=fast)
        seconds = time_runner(bench, runner, "train", epochs, settle)
        row = bench.result_row(label, DTYPE, key, "train", rows, seconds, path=path,
                               epoch_mode=runner.epoch_mode, note=runner.epoch_mode)
        if on_gpu and path == "graph" and key in TARGETS_MS:
            row["target_ms"] = TARGETS_MS[key]
            if rows == FULL_ROWS:
                row["target_met"] = row["ms_per_epoch"] <= TARGETS_MS[key]
                met = "met" if row["target_met"] else "MISSED"
                row["note"] += f"; target <= {TARGETS_MS[key]:g} ms: {met}"
            else:
                row["note"] += f"; target <= {TARGETS_MS[key]:g} ms at {FULL_ROWS} rows"
        results.append(row)
    repeats = args.inference_repeats if on_gpu else max(1, args.inference_repeats // 5)
    results.append(bench.result_row(name, DTYPE, key, "infer", rows,
                                    time_runner(bench, runner, "infer", repeats, settle)))
    return results


def why_not(bench, name, statuses, peers):
    """Why runner ``name`` cannot run here, or None when it can."""
    if name == bench.BASELINE:
        return None
    if name in peers:
        return peers[name]
    if name not in statuses:
        return f"not registered (registered: {', '.join(statuses)})"
    return None if statuses[name].available else statuses[name].reason


def run(args, bench):
    """The report: machine, data, rows (cold, train per path, infer) with ratios, and what was skipped."""
    from fastprop.backends import available_backends

    statuses, peers = available_backends(), bench.torch_devices()
    images, targets, source = bench.load_rows(args.rows, args.data)
    results, skipped = [], []
    for name in _names(args.backends):
        status, reason = statuses.get(name), why_not(bench, name, statuses, peers)
        if reason:
            skipped.append({"backend": name, "reason": reason})
            continue
        on_gpu = status is not None and not str(status.device).lower().startswith("cpu")
        for key in _names(args.workloads):
            peer_reason = bench.cannot_run(name, bench.WORKLOADS[key])
            if peer_reason:  # e.g. the notebook has no convolutions
                skipped.append({"backend": f"{name} {DTYPE} {key}", "reason": peer_reason})
                continue
            try:
                if status is not None:
                    results += time_backend(bench, name, on_gpu, key, images, targets, args)
                    continue
                runner = bench.make_runner(name, bench.WORKLOADS[key], DTYPE, images, targets)
                for mode in ("train", "infer"):
                    seconds = time_runner(bench, runner, mode, args.cpu_epochs, None)
                    results.append(bench.result_row(name, DTYPE, key, mode, args.rows, seconds))
            except Exception as error:  # one broken backend must not hide the others' figures
                skipped.append(bench.timing.failure(name, DTYPE, key, error))
    bench.add_ratios(results)
    return {"machine": bench.machine_info(statuses), "results": results, "skipped": skipped,
            "targets_ms": TARGETS_MS,
            "config": {"rows": args.rows, "data": source, "dtype": DTYPE, "warmup_epochs": 1,
                       "epochs": {"W1 gpu": args.epochs, "W2 gpu": args.w2_epochs, "cpu": args.cpu_epochs,
                                  "inference gpu": args.inference_repeats},
                       "workloads": {key: bench.WORKLOADS[key].describe() for key in _names(args.workloads)}}}


def format_table(report, bench):
    """``fastprop bench``'s table, headed by the machine and data, then what was skipped."""
    machine, config = report["machine"], report["config"]
    gpus = ", ".join(map(str, machine["gpus"])) or "no GPU"
    return "\n".join([f"GPU: {gpus}; {machine['cpu']}, {machine['cores']} cores",
                      f"data: {config['data']}, {config['rows']} rows, {config['dtype']}; median of the "
                      "timed epochs after 1 warm-up epoch; infer: one pass over all rows",
                      bench.format_results(report["results"])]
                     + [f"skipped {entry['backend']}: {entry['reason']}" for entry in report["skipped"]])


def main(argv=None):
    args = parse_arguments(argv)
    if not args.keep_kernel_cache:  # set before CuPy loads, so cold start includes NVRTC compilation
        os.environ["CUPY_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastprop-cupy-cache-")
    from fastprop import bench

    unknown = sorted(set(_names(args.workloads)) - set(bench.WORKLOADS))
    if unknown:
        raise SystemExit(f"bench_gpu.py: unknown workload {', '.join(unknown)}; choose from "
                         f"{', '.join(bench.WORKLOADS)}")
    if args.require_gpu:
        from fastprop.backends import available_backends

        cupy = available_backends()["cupy"]
        if not cupy.available:
            raise SystemExit(f"bench_gpu.py: no GPU to benchmark: {cupy.reason}")
    report = run(args, bench)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        bench.write_json(report, args.json)
    print(format_table(report, bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
