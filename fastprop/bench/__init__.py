"""Throughput of every backend on the notebook's workloads, beside a plain-NumPy baseline and PyTorch.

``fastprop bench``, the pytest-benchmark suite in ``benchmarks/`` and ``benchmarks/bench_gpu.py``
all time these definitions:

* **W1**, the seed notebook: ``Linear(784, 10)`` + ``Sigmoid``, mean square error, SGD, batch 600.
* **W2**: 784-512-512-10 with ReLU and the softmax cross-entropy, SGD, batch 600.
* **CNN**: ``cnn_network()`` (two 3 x 3 convolutions with ReLU and 2 x 2 max pooling, then
  3136-128-10), softmax cross-entropy, Adam at 1e-3, batch 128.

A training epoch is exactly :func:`fastprop.train`'s epoch (:class:`fastprop.training.EpochRunner`:
the step loop, or the backend's whole-epoch program when train would take it) on data already on
the backend, over rows of MNIST shape (50,000 for W1 and W2, 2,560 for CNN unless asked otherwise):
Fashion-MNIST when it is installed locally, seeded synthetic pixels otherwise. Inference is forward
passes in batches of 10,000 (1,000 for CNN). Every epoch ends with ``backend.synchronize()``.

Each fastprop backend also runs as ``<backend>-steps``: the notebook's step loop written by hand
(``zero_gradients``, ``forward``, ``estimate``, ``gradient``, ``backward``, ``update_parameters``),
what a notebook user gets where ``train()`` may take a whole-epoch program.

Peers, run on the same rows in the same shuffled order from the same initial weights:
``notebook`` is plain NumPy written like the student notebook (W1 and W2 only: it has neither
convolutions nor Adam), and ``torch-cpu``/``torch-cuda`` are eager PyTorch autograd with the same
network in ``torch.nn``, ``torch.optim.SGD`` or ``Adam``, on losses summed as fastprop's (skipped
without torch). Ratios are to the notebook, to the numpy backend and to ``torch-cpu``.

The modules, one concern each: :mod:`~fastprop.bench.workloads` (W1, W2 and CNN, from
:mod:`fastprop.models`), :mod:`~fastprop.bench.data` (the rows), :mod:`~fastprop.bench.runners`
(what is timed), :mod:`~fastprop.bench.timing` (epochs, cold starts, the round-robin run),
:mod:`~fastprop.bench.machine`, :mod:`~fastprop.bench.report` (rows, ratios, table, JSON, chart)
and :mod:`~fastprop.bench.cli` (``fastprop bench``).
"""

from .cli import add_arguments, command
from .data import load_rows
from .machine import machine_info
from .report import add_ratios, format_report, format_results, markdown_table, plot, result_row, write_json
from .runners import (BASELINE, STEPS, TORCH_CPU, FastpropRunner, NotebookRunner, Runner, StepLoopRunner,
                      TorchRunner, cannot_run, make_runner, torch_devices)
from .timing import cold_start, run_bench, timed
from .workloads import REFERENCE, WORKLOADS, Workload, dense_layers, initial_network, initial_parameters

__all__ = [
    "BASELINE", "REFERENCE", "STEPS", "TORCH_CPU", "WORKLOADS", "FastpropRunner", "NotebookRunner", "Runner",
    "StepLoopRunner",
    "TorchRunner", "Workload", "add_arguments", "add_ratios", "cannot_run", "cold_start", "command",
    "dense_layers", "format_report", "format_results", "initial_network", "initial_parameters", "load_rows",
    "markdown_table",
    "machine_info", "make_runner", "plot", "result_row", "run_bench", "timed", "torch_devices", "write_json",
]
