"""What a benchmark times: one training epoch (``train_epoch``) and one inference pass (``infer_epoch``).

``FastpropRunner`` runs exactly what :func:`fastprop.train` runs, on data already on the backend.
The peers start from the same weights and visit the same rows in the same order: ``notebook`` is
plain NumPy written like the student notebook, ``torch-cpu``/``torch-cuda`` eager PyTorch autograd
with ``torch.optim.SGD`` on summed losses.
"""

from __future__ import annotations

import numpy

from fastprop.backends import resolve_dtype, use_backend
from ..training import EpochRunner, epoch_generator, forward_batches
from .workloads import initial_parameters

#: The notebook-style NumPy runner's name, and the first reference of every ratio.
BASELINE = "notebook"

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
    """One fastprop backend: ``train_epoch`` is train()'s epoch, ``infer_epoch`` forward passes.

    ``fast=False`` keeps the step loop even where the backend has a whole-epoch program.
    """

    def __init__(self, name, workload, dtype, images, targets, seed=0, *, fast=True):
        super().__init__(workload, dtype, len(images), seed)
        self.name, dtype = name, self.dtype  # dtype resolved to a NumPy type
        self.first_call_in_process = (name, dtype) not in _warmed
        _warmed.add((name, dtype))
        with use_backend(name, dtype) as backend:
            self.warmup_seconds = backend.warmup(dtype)
            self.net = workload.build(seed)
        self.backend, self.cost = backend, workload.cost_function()
        self.images = backend.asarray(images, dtype=dtype)
        self.targets = backend.asarray(targets, dtype=dtype)
        self.loop = EpochRunner(self.net, self.cost, self.images, self.targets, workload.batch_size, None,
                                fast=fast)

    @property
    def epoch_mode(self) -> str:
        """"step loop", or the whole-epoch program's own ``mode`` (e.g. CuPy's "graph") or "fast path"."""
        program = self.loop.fast
        return "step loop" if program is None else getattr(program, "mode", None) or "fast path"

    def train_epoch(self):
        with use_backend(self.name, self.dtype):  # so the cost computes with this backend's kernels
            order = self.backend.permutation(self.next_shuffle(), self.rows)
            total = self.loop.run(order, self.workload.learning_rate)
            self.backend.synchronize()
        return total

    def infer_epoch(self):
        with use_backend(self.name, self.dtype):
            for _ in forward_batches(self.net, self.images, self.workload.inference_batch, True, None):
                pass
            self.backend.synchronize()


class NotebookRunner(Runner):
    """Plain NumPy written like the student notebook: new arrays every step, every gradient computed."""

    def __init__(self, workload, dtype, images, targets, seed=0):
        super().__init__(workload, dtype, len(images), seed)
        dtype = self.dtype
        self.images, self.targets = images.astype(dtype, copy=False), targets.astype(dtype, copy=False)
        self.params = initial_parameters(workload, dtype, seed)
        self.activations = workload.activations

    def forward(self, a):
        inputs, outputs = [], []
        for (W, b), activation in zip(self.params, self.activations):
            inputs.append(a)
            z = a @ W.T + b
            if activation == "sigmoid":
                a = 1 / (1 + numpy.exp(-z))
            else:
                a = numpy.maximum(z, 0) if activation else z
            outputs.append(a)
        return inputs, outputs

    def train_epoch(self):
        order, total, lr = self.next_shuffle().permutation(self.rows), 0.0, self.workload.learning_rate
        mse = self.workload.loss == "mse"
        with numpy.errstate(over="ignore"):  # exp(-z) may overflow to inf; the sigmoid is still right
            for start in range(0, self.rows, self.workload.batch_size):
                index = order[start:start + self.workload.batch_size]
                x, t = self.images[index], self.targets[index]
                inputs, outputs = self.forward(x)
                y = outputs[-1]
                if mse:
                    total += (0.5 * (t - y) ** 2).sum(dtype=numpy.float64)
                    delta = y - t
                else:
                    s = numpy.exp(y - y.max(axis=1, keepdims=True))
                    s = s / s.sum(axis=1, keepdims=True)
                    total += (-t * numpy.log(s + 1e-12)).sum(dtype=numpy.float64)
                    delta = s - t
                layers = list(zip(self.params, self.activations, inputs, outputs))
                for (W, b), activation, a, out in reversed(layers):
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
        mse = self.workload.loss == "mse"
        for start in range(0, self.rows, size):
            index = order[start:start + size]
            self.optimizer.zero_grad()
            y = self.model(self.images.index_select(0, index))
            if mse:  # fastprop's 1/2 (t - p)^2, so the gradient is p - t
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
    """A runner (``train_epoch``, ``infer_epoch``) for a fastprop backend, ``notebook`` or
    ``torch-<device>``."""
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
