"""Timing: one epoch, a cold start (in this process or a fresh one), and the whole round-robin run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy

from fastprop.backends import available_backends, load_backend, resolve_dtype
from ..plot import require_matplotlib
from .data import load_rows
from .machine import machine_info
from .report import add_ratios, format_report, plot, result_row, write_json
from .runners import BASELINE, STEPS, FastpropRunner, cannot_run, make_runner, torch_devices
from .workloads import WORKLOADS

#: Seconds to wait before each timed epoch: OpenBLAS's idle threads keep spinning about 0.1 s after
#: a matrix product, and would otherwise steal the cores from the next runner in the round robin.
SETTLE_SECONDS = 0.25


def timed(run, settle=None) -> float:
    """Seconds ``run()`` takes, after a pause of ``settle`` seconds (default ``SETTLE_SECONDS``)."""
    time.sleep(SETTLE_SECONDS if settle is None else settle)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def failure(name, dtype, workload, error) -> dict:
    """A ``skipped`` entry for a runner that raised."""
    return {"backend": f"{name} {dtype} {workload}", "reason": f"failed: {type(error).__name__}: {error}"}


def cold_start(name, dtype, workload, rows, source="auto", fresh_process=True, *, fast=True):
    """Seconds to load the backend, run ``warmup(dtype)``, set up (build the network, move the data,
    ``compile_epoch`` unless ``fast=False``) and run a first training epoch.

    With ``fresh_process`` it runs in a new Python process (Numba's on-disk cache still counts).
    """
    if fresh_process:
        command = [sys.executable, "-m", "fastprop.bench", "--cold-start", name, dtype, workload, str(rows),
                   source] + ([] if fast else ["--step-loop"])
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"cold start of {name} failed: {last}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    images, targets, _ = load_rows(rows, source)
    started = time.perf_counter()
    load_backend(name)
    load_seconds = time.perf_counter() - started
    runner = FastpropRunner(name, WORKLOADS[workload], dtype, images, targets, fast=fast)
    setup_seconds = time.perf_counter() - started - load_seconds - runner.warmup_seconds
    return {"load_s": load_seconds, "warmup_s": runner.warmup_seconds, "setup_s": setup_seconds,
            "first_epoch_s": timed(runner.train_epoch), "fresh_process": False,
            "first_call_in_process": runner.first_call_in_process}


def _fastprop_runners(backends, statuses, steps):
    """``(runner names, skipped entries)`` for the fastprop backends asked for (every registered one by
    default): each available backend's ``train()`` runner and, with ``steps``, its step-loop runner
    (``<backend>-steps``, also asked for by that name alone)."""
    names, skipped = [], []
    for name in (list(backends) if backends else list(statuses)):
        backend = name[:-len(STEPS)] if name.endswith(STEPS) else name
        if backend not in statuses or not statuses[backend].available:
            reason = (statuses[backend].reason if backend in statuses
                      else f"not registered (registered: {', '.join(statuses)})")
            skipped.append({"backend": name, "reason": reason})
            continue
        wanted = [name] if name != backend else [name] + ([name + STEPS] if steps else [])
        names += [runner for runner in wanted if runner not in names]
    return names, skipped


def run_bench(backends=None, workloads=None, epochs=1, json_path=None, plot_path=None, rows=None,
              dtypes=("float32",), torch=True, out=sys.stdout, *, data="auto", fresh_process=True,
              steps=True) -> dict:
    """Time every backend x dtype x workload beside the notebook baseline and PyTorch; return the report.

    ``workloads`` defaults to all of them; ``rows`` is the training rows per epoch of every workload,
    by default each workload's own (``Workload.rows``). Each figure is the median of ``epochs`` epochs
    after one excluded warm-up epoch, the runners taking turns epoch by epoch; ratios compare
    figures from this run. Cold start (backend load, ``warmup(dtype)``, setup, first epoch) is its
    own row, measured in a fresh process unless ``fresh_process=False``. Backends that cannot run,
    and peers that do not apply to a workload, are listed under ``"skipped"`` with the reason.
    ``json_path`` and ``plot_path`` (needs matplotlib) are written when given. Every fastprop backend
    runs twice, as ``train()`` runs it and (with ``steps``) as the notebook's hand-written step loop
    (``<backend>-steps``); a name given as ``<backend>-steps`` runs the step loop alone.
    """
    if plot_path is not None:
        require_matplotlib()
    workloads = tuple(WORKLOADS) if workloads is None else tuple(workloads)
    if not (isinstance(epochs, int) and epochs >= 1 and (rows is None or isinstance(rows, int) and rows > 0)):
        raise ValueError(f"run_bench needs a positive integer epochs and rows a positive integer or None, "
                         f"got {epochs!r} and {rows!r}.")
    if set(workloads) - set(WORKLOADS):
        raise ValueError(f"Unknown workload(s) {sorted(set(workloads) - set(WORKLOADS))}; "
                         f"choose from {', '.join(WORKLOADS)}.")
    dtypes = [numpy.dtype(resolve_dtype(dtype)).name for dtype in dtypes]
    statuses = available_backends()
    names, skipped = _fastprop_runners(backends, statuses, steps)
    peers = torch_devices() if torch else {}
    skipped += [{"backend": peer, "reason": reason} for peer, reason in peers.items() if reason]
    names = [BASELINE] + [peer for peer, reason in peers.items() if reason is None] + names
    epoch_rows = {key: WORKLOADS[key].epoch_rows(rows) for key in workloads}
    results, sources = [], {}
    for dtype in dtypes:
        for key in workloads:
            count = epoch_rows[key]
            images, targets, sources[key] = load_rows(count, data)
            runners = {}
            for name in names:
                reason = cannot_run(name, WORKLOADS[key])
                if reason:
                    skipped.append({"backend": f"{name} {dtype} {key}", "reason": reason})
                    continue
                try:
                    if name in statuses:  # a fastprop backend: its cold start first
                        cold = cold_start(name, dtype, key, count, data, fresh_process)
                        seconds = [cold["first_epoch_s"]]
                        results.append(result_row(name, dtype, key, "cold", count, seconds, **cold))
                    runners[name] = make_runner(name, WORKLOADS[key], dtype, images, targets)
                except Exception as error:  # one broken backend must not hide the others' figures
                    skipped.append(failure(name, dtype, key, error))
            for mode in ("train", "infer"):
                seconds = {name: [] for name in runners}
                # Round robin, so drifting background load hits every runner alike.
                for _ in range(epochs + 1):
                    for name in [name for name in seconds if name in runners]:
                        try:
                            if mode == "train":
                                runners[name].before_epoch()
                            seconds[name].append(timed(getattr(runners[name], f"{mode}_epoch")))
                        except Exception as error:
                            skipped.append(failure(name, dtype, key, error))
                            del runners[name]
                results += [result_row(name, dtype, key, mode, count, times[1:], first_epoch_s=times[0])
                            for name, times in seconds.items() if len(times) == epochs + 1]
    add_ratios(results)
    report = {"machine": machine_info(statuses), "results": results, "skipped": skipped,
              "config": {"rows": epoch_rows, "data": ", ".join(sorted(set(sources.values()))),
                         "epochs": epochs, "warmup_epochs": 1, "dtypes": dtypes,
                         "workloads": {k: WORKLOADS[k].describe() for k in workloads},
                         "fresh_process_cold": fresh_process}}
    out.write(format_report(report) + "\n")
    if json_path is not None:
        write_json(report, json_path)
    if plot_path is not None:
        plot(report, plot_path)
    return report
