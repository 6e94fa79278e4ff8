"""Result rows, their ratios, and the report as a table, JSON and a bar chart."""

from __future__ import annotations

import json

import numpy

from ..files import write_atomically, write_text_atomically
from ..plot import require_matplotlib
from .runners import BASELINE, STEPS, TORCH_CPU
from .workloads import REFERENCE


def result_row(backend, dtype, workload, mode, rows, seconds, **extra) -> dict:
    """One figure: the median of ``seconds`` (one per epoch) as samples/s and ms/epoch."""
    median = float(numpy.median(seconds))
    return {"backend": backend, "dtype": dtype, "workload": workload, "mode": mode, "rows": rows,
            "samples_per_second": rows / median, "ms_per_epoch": 1000 * median,
            "epoch_seconds": list(seconds), **extra}


#: The references of the ratios, and the column each ratio goes in.
RATIOS = ((BASELINE, "x_baseline"), (REFERENCE, "x_numpy"), (TORCH_CPU, "x_torch"))


def add_ratios(results) -> None:
    """Set each row's ``x_baseline``, ``x_numpy`` and ``x_torch``: its speed over the notebook
    baseline's, the numpy backend's and PyTorch on the CPU's for the same dtype, workload and mode
    (None for cold rows, and where that reference did not run)."""
    speeds = {(r["backend"], r["dtype"], r["workload"], r["mode"]): r["samples_per_second"] for r in results}
    for r in results:
        for reference, column in RATIOS:
            key = (reference, r["dtype"], r["workload"], r["mode"])
            base = None if r["mode"] == "cold" else speeds.get(key)
            r[column] = r["samples_per_second"] / base if base else None


def format_results(results) -> str:
    """One aligned line per result row, under a header."""
    ratio = lambda value: "-" if value is None else f"{value:.2f}x"  # noqa: E731
    lines = [f"{'backend':<11} {'dtype':<8} {'workload':<9} {'samples/s':>11} {'ms/epoch':>10} "
             f"{'x baseline':>10} {'x numpy':>8} {'x torch':>8}  note"]
    for r in results:
        note = r.get("note", "")
        if r["mode"] == "cold":
            where = "fresh process" if r["fresh_process"] else "first call in this process"
            note = (f"first epoch, after load {r['load_s']:.2f} s, warmup() {r['warmup_s']:.2f} s, "
                    f"setup {r['setup_s']:.2f} s ({where})")
        lines.append(f"{r['backend']:<11} {r['dtype']:<8} {r['workload'] + ' ' + r['mode']:<9} "
                     f"{r['samples_per_second']:>11,.0f} {r['ms_per_epoch']:>10.1f} "
                     f"{ratio(r.get('x_baseline')):>10} {ratio(r.get('x_numpy')):>8} "
                     f"{ratio(r.get('x_torch')):>8}  {note}".rstrip())
    return "\n".join(lines)


#: How the markdown table names each kind of runner.
RUNNER_NAMES = {BASELINE: "notebook-style NumPy loop", TORCH_CPU: "PyTorch eager (CPU)",
                "torch-cuda": "PyTorch eager (CUDA)"}


def markdown_table(report) -> str:
    """The report's training and inference rows as a markdown table (the README's Performance table)."""
    ratio = lambda value: "–" if value is None else f"{value:.2f}"  # noqa: E731
    lines = ["| workload | runner | samples/s | ms/epoch | × notebook-style loop | × NumPy backend "
             "| × PyTorch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        if r["mode"] == "cold":
            continue
        name = r["backend"]
        if name not in RUNNER_NAMES:
            steps = name.endswith(STEPS)
            name = (f"fastprop `{name[:-len(STEPS)]}`, notebook's step loop" if steps
                    else f"fastprop `{name}`, `train()`")
        else:
            name = RUNNER_NAMES[name]
        mode = "train" if r["mode"] == "train" else "inference"
        ratios = " | ".join(ratio(r.get(column)) for column in ("x_baseline", "x_numpy", "x_torch"))
        lines.append(f"| {r['workload']} {mode} ({r['rows']:,} rows) | {name} | "
                     f"{r['samples_per_second']:,.0f} | {r['ms_per_epoch']:.1f} | {ratios} |")
    return "\n".join(lines)


def format_report(report) -> str:
    """The machine and data, the results, then what was skipped and why."""
    m, c = report["machine"], report["config"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)" for b in m["blas"])
    extras = []
    if "numba" in m:
        numba = m["numba"]
        layer = f" on {numba['threading_layer']}" if "threading_layer" in numba else ""
        extras.append(f"numba {numba['version']} ({numba['threads']} threads{layer}, "
                      f"{numba.get('instruction_set', 'code for the host')})")
    extras += [f"torch {m['torch']['version']} ({m['torch']['threads']} threads)"] if "torch" in m else []
    extras += [f"GPU {gpu}" for gpu in m["gpus"]]
    return "\n".join(
        [f"machine: {m['cpu']} ({' '.join(m.get('vector_extensions', [])) or 'no vector extensions known'}), "
         f"{m['cores']} cores, BLAS {blas or 'unknown'}, numpy {m['numpy']}, "
         + "".join(extra + ", " for extra in extras) + m["date"],
         f"data: {c['data']}, rows per epoch: {', '.join(f'{k} {n}' for k, n in c['rows'].items())}; "
         f"median of {c['epochs']} epoch(s) after 1 warm-up epoch",
         format_results(report["results"])]
        + [f"skipped {s['backend']}: {s['reason']}" for s in report["skipped"]])


def write_json(report, path) -> None:
    """The whole report, machine and every epoch's seconds included, as indented JSON (atomically)."""
    write_text_atomically(path, json.dumps(report, indent=2, default=str), "benchmark report")


def plot(report, path):
    """A bar chart of samples/s (log scale) per backend for each workload, mode and dtype."""
    Figure, _ = require_matplotlib()  # no pyplot: never touches the user's GUI backend

    rows = [r for r in report["results"] if r["mode"] != "cold"]
    groups = list(dict.fromkeys((r["workload"], r["mode"], r["dtype"]) for r in rows))
    series = list(dict.fromkeys(r["backend"] for r in rows))
    speed = {(r["backend"], r["workload"], r["mode"], r["dtype"]): r["samples_per_second"] for r in rows}
    figure = Figure(figsize=(max(6.0, 1.8 * len(groups)), 4.5))
    axes, width = figure.add_subplot(), 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        axes.bar([g + i * width for g in range(len(groups))],
                 [speed.get((name, *group), numpy.nan) for group in groups], width, label=name)
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [" ".join(group) for group in groups])
    axes.set_yscale("log")
    axes.set_ylabel("samples / s (higher is better)")
    axes.set_title(f"fastprop bench on {report['machine']['cpu']}")
    axes.legend(fontsize="small")
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=120, bbox_inches="tight"),
                     "benchmark chart")
