"""Throughput of every backend on the notebook's workloads, beside a plain-NumPy baseline and PyTorch.

Both ``fastprop bench`` and the pytest-benchmark suite in ``benchmarks/`` time these definitions:

* **W1**, the seed notebook: ``Linear(784, 10)`` + ``Sigmoid``, mean square error, batch 600.
* **W2**: 784-512-512-10 with ReLU and the softmax cross-entropy, batch 600.

A training epoch is exactly :func:`fastprop.train`'s step loop (or the backend's ``compile_epoch``
fast path, when train would take it) on data already on the backend, over 50,000 rows of MNIST
shape: Fashion-MNIST when it is installed locally, seeded synthetic pixels otherwise. Inference
is forward passes in batches of 10,000. Every epoch ends with ``backend.synchronize()``.

Peers, run on the same rows in the same shuffled order from the same initial weights:
``notebook`` is plain NumPy written like the student notebook, and ``torch-cpu``/``torch-cuda``
are eager PyTorch autograd with ``torch.optim.SGD`` on summed losses (skipped without torch).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy

from fastprop.backends import available_backends, load_backend, resolve_dtype, use_backend
from .costs import MeanSquareError, SoftmaxCrossEntropy
from .layers import Linear, Network, ReLU, Sigmoid
from .files import write_atomically, write_text_atomically
from .plot import require_matplotlib
from .training import _forward_batches, _StepLoop, epoch_generator

BASELINE, REFERENCE = "notebook", "numpy"


@dataclass(frozen=True)
class Workload:
    """A network shape, its activations (``None``: a linear output) and its cost."""

    name: str
    sizes: tuple
    activations: tuple
    cost: str  # "mse" or "softmax-cross-entropy"
    init: str = "normal"
    learning_rate: float = 1e-4
    batch_size: int = 600
    inference_batch: int = 10_000

    def build(self, seed=0) -> Network:
        """The network on the current backend, initialised identically on every backend."""
        rng, layers = numpy.random.default_rng(seed), []
        for n_in, n_out, activation in zip(self.sizes, self.sizes[1:], self.activations):
            layers.append(Linear(n_in, n_out, init=self.init, rng=rng))
            if activation:
                layers.append({"sigmoid": Sigmoid, "relu": ReLU}[activation]())
        return Network(layers)

    def cost_function(self):
        return MeanSquareError() if self.cost == "mse" else SoftmaxCrossEntropy()


WORKLOADS = {
    "W1": Workload("W1", (784, 10), ("sigmoid",), "mse"),
    "W2": Workload("W2", (784, 512, 512, 10), ("relu", "relu", None), "softmax-cross-entropy", "he"),
}


@functools.lru_cache(maxsize=2)
def load_rows(rows=50_000, source="auto"):
    """``(images, one-hot targets, source)``: float32 host arrays of shapes (rows, 784) and (rows, 10).

    ``source`` is "fashion-mnist" (never downloaded), "synthetic" (seeded uint8 pixels scaled to
    [0, 1], random labels), "continuous" (seeded uniform floats in [0, 1), random labels: inputs that
    are not 8-bit pixels, which the Numba W1 kernel reads as floats) or "auto": Fashion-MNIST when
    it is on disk with enough rows.
    """
    if source in ("auto", "fashion-mnist"):
        try:
            from .datasets import load_split

            images, targets, _, _ = load_split("fashion-mnist", download=False)
            if len(images) < rows:
                raise ValueError(f"Fashion-MNIST has {len(images)} training rows, fewer than {rows}")
            return images[:rows], targets[:rows], "fashion-mnist"
        except Exception:  # any missing or unreadable copy means synthetic data, unless asked for
            if source != "auto":
                raise
    rng = numpy.random.default_rng(0)
    if source == "continuous":
        images = rng.random((rows, 784), dtype=numpy.float32)
    else:
        images = rng.integers(0, 256, (rows, 784), dtype=numpy.uint8).astype(numpy.float32) / 255
    labels = numpy.eye(10, dtype=numpy.float32)[rng.integers(0, 10, rows)]
    return images, labels, "continuous" if source == "continuous" else "synthetic"


def initial_parameters(workload, dtype, seed=0):
    """The host ``[(W, b), ...]`` every runner starts from (drawn on the host, so backend-independent)."""
    with use_backend(REFERENCE, dtype):
        return [(layer.w.copy(), layer.b.copy()) for layer in workload.build(seed).leaves()
                if isinstance(layer, Linear)]


#: (backend, dtype) pairs already warmed up in this process: only the first call is a cold one.
_warmed: set = set()


class Runner:
    """What every runner shares: workload, dtype, rows, and the epoch's shuffle as train() draws it."""

    def __init__(self, workload, dtype, rows, seed):
        self.workload, self.dtype, self.rows, self.seed = workload, resolve_dtype(dtype), rows, seed
        self.epochs = 0

    def next_shuffle(self) -> numpy.random.Generator:
        """The generator :func:`fastprop.train` shuffles the next epoch with."""
        self.epochs += 1
        return epoch_generator(self.seed, self.epochs)


class FastpropRunner(Runner):
    """One fastprop backend: ``train_epoch`` is train()'s step loop, ``infer_epoch`` forward passes."""

    def __init__(self, name, workload, dtype, images, targets, seed=0):
        super().__init__(workload, dtype, len(images), seed)
        self.name, dtype = name, self.dtype  # dtype resolved to a NumPy type
        self.first_call_in_process = (name, dtype) not in _warmed
        _warmed.add((name, dtype))
        with use_backend(name, dtype) as backend:
            self.warmup_seconds = backend.warmup(dtype)
            self.net = workload.build(seed)
        self.backend, self.cost = backend, workload.cost_function()
        self.images, self.targets = backend.asarray(images, dtype=dtype), backend.asarray(targets, dtype=dtype)
        self.loop = _StepLoop(self.net, self.cost, self.images, self.targets, workload.batch_size, None)

    def train_epoch(self):
        with use_backend(self.name, self.dtype):  # so the cost computes with this backend's kernels
            total = self.loop.run(self.backend.permutation(self.next_shuffle(), self.rows), self.workload.learning_rate)
            self.backend.synchronize()
        return total


    def infer_epoch(self):
        with use_backend(self.name, self.dtype):
            for _ in _forward_batches(self.net, self.images, self.workload.inference_batch, True, None):
                pass
            self.backend.synchronize()


class NotebookRunner(Runner):
    """Plain NumPy written like the student notebook: new arrays every step, every gradient computed."""

    def __init__(self, workload, dtype, images, targets, seed=0):
        super().__init__(workload, dtype, len(images), seed)
        dtype = self.dtype
        self.images, self.targets = images.astype(dtype, copy=False), targets.astype(dtype, copy=False)
        self.params = initial_parameters(workload, dtype, seed)

    def forward(self, a):
        inputs, outputs = [], []
        for (W, b), activation in zip(self.params, self.workload.activations):
            inputs.append(a)
            z = a @ W.T + b
            a = 1 / (1 + numpy.exp(-z)) if activation == "sigmoid" else numpy.maximum(z, 0) if activation else z
            outputs.append(a)
        return inputs, outputs

    def train_epoch(self):
        order, total, lr = self.next_shuffle().permutation(self.rows), 0.0, self.workload.learning_rate
        with numpy.errstate(over="ignore"):  # exp(-z) may overflow to inf; the sigmoid is still right
            for start in range(0, self.rows, self.workload.batch_size):
                index = order[start:start + self.workload.batch_size]
                x, t = self.images[index], self.targets[index]
                inputs, outputs = self.forward(x)
                y = outputs[-1]
                if self.workload.cost == "mse":
                    total += (0.5 * (t - y) ** 2).sum(dtype=numpy.float64)
                    delta = y - t
                else:
                    s = numpy.exp(y - y.max(axis=1, keepdims=True))
                    s = s / s.sum(axis=1, keepdims=True)
                    total += (-t * numpy.log(s + 1e-12)).sum(dtype=numpy.float64)
                    delta = s - t
                for (W, b), activation, a, out in reversed(list(zip(
                        self.params, self.workload.activations, inputs, outputs))):
                    if activation == "sigmoid":
                        delta = delta * out * (1 - out)
                    elif activation == "relu":
                        delta = delta * (out > 0)
                    dx = delta @ W  # the notebook computes it even for the first layer, where it is unused
                    W -= lr * (delta.T @ a)
                    b -= lr * delta.sum(axis=0)
                    delta = dx
        return total

    def infer_epoch(self):
        with numpy.errstate(over="ignore"):
            for start in range(0, self.rows, self.workload.inference_batch):
                self.forward(self.images[start:start + self.workload.inference_batch])


class TorchRunner(Runner):
    """Eager PyTorch autograd on the same network, batches and summed loss, with ``optim.SGD``."""

    def __init__(self, device, workload, dtype, images, targets, seed=0):
        import torch

        super().__init__(workload, dtype, len(images), seed)
        self.torch, self.device = torch, torch.device(device)
        layers = []
        for (W, b), activation in zip(initial_parameters(workload, dtype, seed), workload.activations):
            linear = torch.nn.Linear(W.shape[1], W.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W))
                linear.bias.copy_(torch.from_numpy(b.ravel()))
            layers += [linear] + ([{"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[activation]()]
                                  if activation else [])
        torch_dtype = getattr(torch, numpy.dtype(self.dtype).name)
        self.model = torch.nn.Sequential(*layers).to(self.device, torch_dtype)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.learning_rate)
        self.images = torch.from_numpy(images).to(self.device, torch_dtype)
        self.targets = torch.from_numpy(targets).to(self.device, torch_dtype)
        self.labels = self.targets.argmax(dim=1)

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def train_epoch(self):
        functional, size = self.torch.nn.functional, self.workload.batch_size
        order = self.torch.from_numpy(self.next_shuffle().permutation(self.rows)).to(self.device)
        total = self.torch.zeros((), dtype=self.torch.float64, device=self.device)
        for start in range(0, self.rows, size):
            index = order[start:start + size]
            self.optimizer.zero_grad()
            y = self.model(self.images.index_select(0, index))
            if self.workload.cost == "mse":  # fastprop's 1/2 (t - p)^2, so the gradient is p - t
                loss = 0.5 * functional.mse_loss(y, self.targets.index_select(0, index), reduction="sum")
            else:
                loss = functional.cross_entropy(y, self.labels.index_select(0, index), reduction="sum")
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        self.synchronize()
        return total

    def infer_epoch(self):
        with self.torch.inference_mode():
            for start in range(0, self.rows, self.workload.inference_batch):
                self.model(self.images[start:start + self.workload.inference_batch])
        self.synchronize()


def make_runner(name, workload, dtype, images, targets, seed=0):
    """A runner (``train_epoch``, ``infer_epoch``) for a fastprop backend, ``notebook`` or ``torch-<device>``."""
    if name == BASELINE:
        return NotebookRunner(workload, dtype, images, targets, seed)
    if name.startswith("torch-"):
        return TorchRunner(name[len("torch-"):], workload, dtype, images, targets, seed)
    return FastpropRunner(name, workload, dtype, images, targets, seed)


def torch_devices():
    """``{"torch-cpu": reason or None, "torch-cuda": ...}``: None where that peer can run."""
    try:
        import torch
    except ImportError:
        return dict.fromkeys(("torch-cpu", "torch-cuda"), "PyTorch is not installed (pip install torch)")
    return {"torch-cpu": None,
            "torch-cuda": None if torch.cuda.is_available() else "PyTorch sees no CUDA device"}


#: Seconds to wait before each timed epoch: OpenBLAS's idle threads keep spinning about 0.1 s after
#: a matrix product, and would otherwise steal the cores from the next runner in the round robin.
SETTLE_SECONDS = 0.25


def _timed(run) -> float:
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _failure(name, dtype, workload, error) -> dict:
    return {"backend": f"{name} {dtype} {workload}", "reason": f"failed: {type(error).__name__}: {error}"}


def cold_start(name, dtype, workload, rows, source="auto", fresh_process=True):
    """Seconds to load the backend, run ``warmup(dtype)``, set up (build the network, move the data,
    ``compile_epoch``) and run a first training epoch.

    With ``fresh_process`` it runs in a new Python process (Numba's on-disk cache still counts).
    """
    if fresh_process:
        command = [sys.executable, "-m", "fastprop.bench", "--cold-start", name, dtype, workload, str(rows),
                   source]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"cold start of {name} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    images, targets, _ = load_rows(rows, source)
    started = time.perf_counter()
    load_backend(name)
    load_seconds = time.perf_counter() - started
    runner = FastpropRunner(name, WORKLOADS[workload], dtype, images, targets)
    setup_seconds = time.perf_counter() - started - load_seconds - runner.warmup_seconds
    return {"load_s": load_seconds, "warmup_s": runner.warmup_seconds, "setup_s": setup_seconds,
            "first_epoch_s": _timed(runner.train_epoch), "fresh_process": False,
            "first_call_in_process": runner.first_call_in_process}


def machine_info(statuses=None) -> dict:
    """CPU, cores, BLAS and its threads, Numba threads, GPU names, versions and the date."""
    from threadpoolctl import threadpool_info

    statuses = statuses or available_backends()
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            cpu = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), cpu)
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "blas": [{key: pool.get(key) for key in ("internal_api", "version", "num_threads", "threading_layer")}
                     for pool in threadpool_info() if pool.get("user_api") == "blas"],
            "backends": {n: load_backend(n).info() if s.available else {"unavailable": s.reason}
                         for n, s in statuses.items()}}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import numba
        info["numba"] = {"version": numba.__version__, "threads": numba.get_num_threads()}
    except ImportError:
        pass
    info["gpus"] = [s.device for s in statuses.values() if s.available and not str(s.device).startswith("cpu")]
    torch = sys.modules.get("torch")  # reported when a torch peer ran; never imported just for this
    if torch is not None:
        info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        if torch.cuda.is_available():
            info["gpus"].append(torch.cuda.get_device_name())
    return info


def result_row(backend, dtype, workload, mode, rows, seconds, **extra) -> dict:
    """One figure: the median of ``seconds`` (one per epoch) as samples/s and ms/epoch."""
    median = float(numpy.median(seconds))
    return {"backend": backend, "dtype": dtype, "workload": workload, "mode": mode, "rows": rows,
            "samples_per_second": rows / median, "ms_per_epoch": 1000 * median, "epoch_seconds": list(seconds),
            **extra}


def add_ratios(results) -> None:
    """Set each row's ``x_baseline`` and ``x_numpy``: its speed over theirs for the same dtype, workload, mode."""
    speeds = {(r["backend"], r["dtype"], r["workload"], r["mode"]): r["samples_per_second"] for r in results}
    for r in results:
        for reference, column in ((BASELINE, "x_baseline"), (REFERENCE, "x_numpy")):
            base = speeds.get((reference, r["dtype"], r["workload"], r["mode"])) if r["mode"] != "cold" else None
            r[column] = r["samples_per_second"] / base if base else None


def run_bench(backends=None, workloads=("W1", "W2"), epochs=1, json_path=None, plot_path=None, rows=50_000,
              dtypes=("float32",), torch=True, out=sys.stdout, *, data="auto", fresh_process=True) -> dict:
    """Time every backend x dtype x workload beside the notebook baseline and PyTorch; return the report.

    Each figure is the median of ``epochs`` epochs after one excluded warm-up epoch, the runners
    taking turns epoch by epoch; ratios compare figures from this run. Cold start (backend load,
    ``warmup(dtype)``, setup, first epoch) is its own row, measured in a fresh process unless
    ``fresh_process=False``. Backends that cannot run are listed under ``"skipped"`` with the
    reason. ``json_path`` and ``plot_path`` (needs matplotlib) are written when given.
    """
    if plot_path is not None:
        require_matplotlib()
    if not (isinstance(epochs, int) and epochs >= 1 and isinstance(rows, int) and rows >= 1):
        raise ValueError(f"run_bench needs positive integers epochs and rows, got {epochs!r} and {rows!r}.")
    if set(workloads) - set(WORKLOADS):
        raise ValueError(f"Unknown workload(s) {sorted(set(workloads) - set(WORKLOADS))}; "
                         f"choose from {', '.join(WORKLOADS)}.")
    dtypes = [numpy.dtype(resolve_dtype(dtype)).name for dtype in dtypes]
    statuses = available_backends()
    names = list(backends) if backends else list(statuses)
    skipped = [{"backend": name, "reason": statuses[name].reason if name in statuses else
                f"not registered (registered: {', '.join(statuses)})"}
               for name in names if name not in statuses or not statuses[name].available]
    peers = torch_devices() if torch else {}
    skipped += [{"backend": peer, "reason": reason} for peer, reason in peers.items() if reason]
    names = [BASELINE] + [peer for peer, reason in peers.items() if reason is None] + [
        name for name in names if name in statuses and statuses[name].available]
    images, targets, source = load_rows(rows, data)
    results = []
    for dtype in dtypes:
        for key in workloads:
            runners = {}
            for name in names:
                try:
                    if name in statuses:  # a fastprop backend: its cold start first
                        cold = cold_start(name, dtype, key, rows, data, fresh_process)
                        results.append(result_row(name, dtype, key, "cold", rows, [cold["first_epoch_s"]], **cold))
                    runners[name] = make_runner(name, WORKLOADS[key], dtype, images, targets)
                except Exception as error:  # one broken backend must not hide the others' figures
                    skipped.append(_failure(name, dtype, key, error))
            for mode in ("train", "infer"):
                seconds = {name: [] for name in runners}
                for _ in range(epochs + 1):  # round robin, so drifting background load hits every runner alike
                    for name in [name for name in seconds if name in runners]:
                        try:
                            seconds[name].append(_timed(getattr(runners[name], f"{mode}_epoch")))
                        except Exception as error:
                            skipped.append(_failure(name, dtype, key, error))
                            del runners[name]
                results += [result_row(name, dtype, key, mode, rows, times[1:], first_epoch_s=times[0])
                            for name, times in seconds.items() if len(times) == epochs + 1]
    add_ratios(results)
    report = {"machine": machine_info(statuses), "results": results, "skipped": skipped,
              "config": {"rows": rows, "data": source, "epochs": epochs, "warmup_epochs": 1, "dtypes": dtypes,
                         "workloads": {k: repr(WORKLOADS[k]) for k in workloads},
                         "fresh_process_cold": fresh_process}}
    out.write(format_report(report) + "\n")
    if json_path is not None:
        write_text_atomically(json_path, json.dumps(report, indent=2, default=str), "benchmark report")
    if plot_path is not None:
        plot(report, plot_path)
    return report


def format_results(results) -> str:
    """One aligned line per result row, under a header."""
    ratio = lambda value: "-" if value is None else f"{value:.2f}x"  # noqa: E731
    lines = [f"{'backend':<11} {'dtype':<8} {'workload':<9} {'samples/s':>11} {'ms/epoch':>10} "
             f"{'x baseline':>10} {'x numpy':>8}  note"]
    for r in results:
        note = ""
        if r["mode"] == "cold":
            where = "fresh process" if r["fresh_process"] else "first call in this process"
            note = (f"first epoch, after load {r['load_s']:.2f} s, warmup() {r['warmup_s']:.2f} s, "
                    f"setup {r['setup_s']:.2f} s ({where})")
        lines.append(f"{r['backend']:<11} {r['dtype']:<8} {r['workload'] + ' ' + r['mode']:<9} "
                     f"{r['samples_per_second']:>11,.0f} {r['ms_per_epoch']:>10.1f} "
                     f"{ratio(r.get('x_baseline')):>10} {ratio(r.get('x_numpy')):>8}  {note}".rstrip())
    return "\n".join(lines)


def format_report(report) -> str:
    """The machine and data, the results, then what was skipped and why."""
    m, c = report["machine"], report["config"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)" for b in m["blas"])
    extras = [f"numba {m['numba']['version']} ({m['numba']['threads']} threads)"] if "numba" in m else []
    extras += [f"torch {m['torch']['version']} ({m['torch']['threads']} threads)"] if "torch" in m else []
    extras += [f"GPU {gpu}" for gpu in m["gpus"]]
    return "\n".join(
        [f"machine: {m['cpu']}, {m['cores']} cores, BLAS {blas or 'unknown'}, numpy {m['numpy']}, "
         + "".join(extra + ", " for extra in extras) + m["date"],
         f"data: {c['data']}, {c['rows']} rows; median of {c['epochs']} epoch(s) after 1 warm-up epoch",
         format_results(report["results"])]
        + [f"skipped {s['backend']}: {s['reason']}" for s in report["skipped"]])


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
    axes.set_title(f"fastprop bench on {report['machine']['cpu']}, {report['config']['rows']} rows")
    axes.legend(fontsize="small")
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=120, bbox_inches="tight"),
                     "benchmark chart")


def _names(text):
    return [name for name in text.split(",") if name]


def _workloads(text):
    names = _names(text)
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown workload {', '.join(unknown)}; choose from {', '.join(sorted(WORKLOADS))}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastprop bench``."""
    parser.add_argument("--backends", "--backend", type=_names, action="extend", dest="backends", metavar="NAMES",
                        help="backends to time, comma-separated or repeated (default: every registered one)")
    parser.add_argument("--workloads", "--workload", type=_workloads, action="extend", dest="workloads",
                        metavar="W1,W2",
                        help="W1: 784-10 sigmoid + MSE; W2: 784-512-512-10 ReLU + softmax cross-entropy")
    parser.add_argument("--dtype", action="append", dest="dtypes", choices=("float32", "float64"))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up (median)")
    parser.add_argument("--rows", type=int, default=50_000, help="training rows per epoch (default 50000)")
    parser.add_argument("--data", choices=("auto", "fashion-mnist", "synthetic", "continuous"), default="auto",
                        help="auto: Fashion-MNIST when installed locally, else seeded synthetic pixels; "
                             "continuous: seeded uniform floats, not 8-bit pixels")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the full report here")
    parser.add_argument("--plot", dest="plot_path", metavar="PNG", help="draw a bar chart (needs matplotlib)")
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="leave out the PyTorch peer")
    parser.add_argument("--in-process-cold-start", dest="fresh_process", action="store_false",
                        help="measure cold start in this process instead of a fresh one")


def command(args) -> int:
    """Run ``fastprop bench`` with parsed ``args``; return the exit status."""
    try:
        run_bench(args.backends, tuple(args.workloads or WORKLOADS), args.epochs, args.json_path, args.plot_path,
                  args.rows, tuple(args.dtypes or ("float32",)), args.torch, sys.stdout,
                  data=args.data, fresh_process=args.fresh_process)
    except (ImportError, RuntimeError, ValueError) as error:
        print(f"fastprop bench: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold-start"]:  # the fresh process that cold_start() starts
        name, dtype, workload, rows, source = sys.argv[2:7]
        print(json.dumps({**cold_start(name, dtype, workload, int(rows), source, fresh_process=False),
                          "fresh_process": True}))
    else:
        arguments = argparse.ArgumentParser(prog="python -m fastprop.bench", description=__doc__.split("\n")[0])
        add_arguments(arguments)
        sys.exit(command(arguments.parse_args()))
