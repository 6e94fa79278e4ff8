"""Throughput of every backend on the notebook's workloads, beside a plain-NumPy baseline and PyTorch.

``fastprop bench``, the pytest-benchmark suite in ``benchmarks/`` and ``benchmarks/bench_gpu.py``
all time these definitions:

* **W1**, the seed notebook: ``Linear(784, 10)`` + ``Sigmoid``, mean square error, batch 600.
* **W2**: 784-512-512-10 with ReLU and the softmax cross-entropy, batch 600.

A training epoch is exactly :func:`fastprop.train`'s epoch (:class:`fastprop.training.EpochRunner`:
the step loop, or the backend's whole-epoch program when train would take it) on data already on
the backend, over 50,000 rows of MNIST shape: Fashion-MNIST when it is installed locally, seeded
synthetic pixels otherwise. Inference is forward passes in batches of 10,000. Every epoch ends
with ``backend.synchronize()``.

Peers, run on the same rows in the same shuffled order from the same initial weights:
``notebook`` is plain NumPy written like the student notebook, and ``torch-cpu``/``torch-cuda``
are eager PyTorch autograd with ``torch.optim.SGD`` on summed losses (skipped without torch).

The modules, one concern each: :mod:`~fastprop.bench.workloads` (W1 and W2, from
:mod:`fastprop.models`), :mod:`~fastprop.bench.data` (the rows), :mod:`~fastprop.bench.runners`
(what is timed), :mod:`~fastprop.bench.timing` (epochs, cold starts, the round-robin run),
:mod:`~fastprop.bench.machine`, :mod:`~fastprop.bench.report` (rows, ratios, table, JSON, chart)
and :mod:`~fastprop.bench.cli` (``fastprop bench``).
"""

from .cli import add_arguments, command
from .data import load_rows
from .machine import machine_info
from .report import add_ratios, format_report, format_results, plot, result_row, write_json
from .runners import BASELINE, FastpropRunner, NotebookRunner, Runner, TorchRunner, make_runner, torch_devices
from .timing import cold_start, run_bench, timed
from .workloads import REFERENCE, WORKLOADS, Workload, dense_layers, initial_parameters

__all__ = [
    "BASELINE", "REFERENCE", "WORKLOADS", "FastpropRunner", "NotebookRunner", "Runner", "TorchRunner",
    "Workload", "add_arguments", "add_ratios", "cold_start", "command", "dense_layers", "format_report",
    "format_results", "initial_parameters", "load_rows", "machine_info", "make_runner", "plot", "result_row",
    "run_bench", "timed", "torch_devices", "write_json",
]
