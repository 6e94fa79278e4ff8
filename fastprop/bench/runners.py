"""What a benchmark times: one training epoch (``train_epoch``) and one inference pass (``infer_epoch``).

``FastpropRunner`` runs exactly what :func:`fastprop.train` runs, on data already on the backend.
``StepLoopRunner`` (``<backend>-steps``) runs the notebook's own loop written by hand on a fastprop
backend: gather the batch, ``zero_gradients``, ``forward``, ``estimate``, ``gradient``,
``backward`` (with the input gradient the notebook's ``Network.backward`` returns) and
``update_parameters`` (or the workload's optimizer), what a notebook user gets. The peers start
from the same weights and visit the same rows in the same order: ``notebook`` is
plain NumPy written like the student notebook (dense layers and plain SGD only), ``torch-cpu``/
``torch-cuda`` eager PyTorch autograd rebuilding the network with ``torch.nn`` and training it with
the workload's optimizer (``torch.optim.SGD`` or ``Adam``) on the loss reduced as fastprop's cost
reduces it (summed over the batch by default). Each runner says which workloads it can run
(:meth:`Runner.cannot_run`).
"""

from __future__ import annotations

import numpy

from fastprop.backends import resolve_dtype, use_backend
from ..layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, Reshape, Sigmoid
from ..optimizers import Adam
from ..training import EpochRunner, epoch_generator, forward_batches
from .workloads import ACTIVATIONS, LOSSES, dense_layers, initial_network

#: The notebook-style NumPy runner's name, and the first reference of every ratio.
BASELINE = "notebook"
#: ``<backend><STEPS>`` names the notebook's hand-written step loop on that fastprop backend.
STEPS = "-steps"
#: The PyTorch peer every fastprop backend is compared with, where it runs.
TORCH_CPU = "torch-cpu"

#: (backend, dtype) pairs already warmed up in this process: only the first call is a cold one.
_warmed: set = set()


class Runner:
    """What every runner shares: workload, dtype, rows, and the epoch's shuffle as train() draws it."""

    def __init__(self, workload, dtype, rows, seed):
        reason = self.cannot_run(workload)
        if reason:
            raise ValueError(f"{type(self).__name__} is {reason}.")
        self.workload, self.dtype, self.rows, self.seed = workload, resolve_dtype(dtype), rows, seed
        self.epochs = 0

    @classmethod
    def cannot_run(cls, workload):
        """Why this kind of runner cannot train ``workload`` ("not applicable to W: ..."), or None."""
        return None

    def next_shuffle(self) -> numpy.random.Generator:
        """The generator :func:`fastprop.train` shuffles the next epoch with."""
        self.epochs += 1
        return epoch_generator(self.seed, self.epochs)

    def before_epoch(self):
        """Untimed preparation of the next training epoch (nothing, unless a runner says otherwise)."""


def _take_rows(array, indices, out=None):
    return numpy.take(array, indices, axis=0, out=out)


class ShuffledCopy:
    """The rows in the next epoch's order, as the notebook's loader leaves them: a notebook-style
    runner walks them in slices, the way the notebook's ``train_epoch`` does. The copy is made
    before the epoch's timing starts (:meth:`Runner.before_epoch`), so the timed epoch is the
    notebook's loop alone; the order is the one train() draws, so every runner takes the same steps."""

    def __init__(self, take, images, targets):
        self.take, self.source = take, (images, targets)
        self.rows, self.ready = None, False

    def prepare(self, order):
        images, targets = self.source
        if self.rows is None:
            self.rows = (self.take(images, order), self.take(targets, order))
        else:
            for source, copy in zip(self.source, self.rows):
                self.take(source, order, out=copy)
        self.ready = True

    def batches(self, size):
        """``(x, t)`` slices of the prepared epoch; the copy must be prepared again for the next one."""
        if not self.ready:
            raise RuntimeError("the epoch's rows were not prepared; call before_epoch() first")
        self.ready = False
        images, targets = self.rows
        for start in range(0, images.shape[0], size):
            yield images[start:start + size], targets[start:start + size]


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
        self.optimizer = workload.make_optimizer()
        self.loop = EpochRunner(self.net, self.cost, self.images, self.targets, workload.batch_size,
                                self.optimizer, fast=fast)

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


class StepLoopRunner(Runner):
    """The notebook's hand-written step loop on fastprop backend ``name``, from the same weights and
    in the same order as :class:`FastpropRunner`, over the epoch's rows in slices (:class:`ShuffledCopy`)."""

    def __init__(self, name, workload, dtype, images, targets, seed=0):
        super().__init__(workload, dtype, len(images), seed)
        self.name = name
        with use_backend(name, self.dtype) as backend:
            backend.warmup(self.dtype)
            self.net = workload.build(seed)
        self.backend, self.cost = backend, workload.cost_function()
        self.images = backend.asarray(images, dtype=self.dtype)
        targets = backend.asarray(targets, dtype=self.dtype)
        self.epoch_rows = ShuffledCopy(backend.take_rows, self.images, targets)
        self.optimizer = workload.make_optimizer()

    def before_epoch(self):
        self.epoch_rows.prepare(self.backend.permutation(self.next_shuffle(), self.rows))
        self.backend.synchronize()

    def train_epoch(self):
        if not self.epoch_rows.ready:
            self.before_epoch()
        net, cost_function, optimizer, xp = self.net, self.cost, self.optimizer, self.backend.xp
        rate, total, batches = self.workload.learning_rate, 0.0, 0
        with use_backend(self.name, self.dtype):  # where the cost computes, as set_backend would say
            for x, t in self.epoch_rows.batches(self.workload.batch_size):
                batches += 1
                net.zero_gradients()
                prediction = net.forward(x)
                cost = cost_function.estimate(t, prediction)
                total = total + xp.mean(cost)
                net.backward(cost_function.gradient(cost))
                if optimizer is None:
                    net.update_parameters(rate)
                else:
                    optimizer.step(net, rate)
            self.backend.synchronize()
        return float(total) / max(batches, 1)  # train()'s epoch figure: the mean of the batches' means

    def infer_epoch(self):
        with use_backend(self.name, self.dtype):
            for start in range(0, self.rows, self.workload.inference_batch):
                self.net.forward(self.images[start:start + self.workload.inference_batch])
            self.backend.synchronize()


class NotebookRunner(Runner):
    """Plain NumPy written like the student notebook: new arrays every step, every gradient computed."""

    def __init__(self, workload, dtype, images, targets, seed=0):
        super().__init__(workload, dtype, len(images), seed)
        dtype = self.dtype
        self.images, self.targets = images.astype(dtype, copy=False), targets.astype(dtype, copy=False)
        self.epoch_rows = ShuffledCopy(_take_rows, self.images, self.targets)
        pairs = dense_layers(initial_network(workload, dtype, seed).leaves())
        self.params = [(linear.w, linear.b) for linear, _ in pairs]  # the fresh network's own host arrays
        self.activations = [activation for _, activation in pairs]

    @classmethod
    def cannot_run(cls, workload):
        name, known = workload.name, (Linear, *ACTIVATIONS)
        unknown = [type(leaf).__name__ for leaf in workload.layers if type(leaf) not in known]
        unknown += [] if workload.optimizer is None else [workload.optimizer.__name__]
        if unknown:
            return (f"not applicable to {name}: the notebook peer has only Linear, Sigmoid, ReLU and plain "
                    f"SGD, and {name} uses {', '.join(dict.fromkeys(unknown))}")
        try:
            dense_layers(workload.layers)
        except ValueError as error:
            return f"not applicable to {name}: {error}"
        return None

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

    def before_epoch(self):
        self.epoch_rows.prepare(self.next_shuffle().permutation(self.rows))

    def train_epoch(self):
        if not self.epoch_rows.ready:
            self.before_epoch()
        total, lr = 0.0, self.workload.learning_rate
        mse = self.workload.loss == "mse"
        with numpy.errstate(over="ignore"):  # exp(-z) may overflow to inf; the sigmoid is still right
            for x, t in self.epoch_rows.batches(self.workload.batch_size):
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


#: How the PyTorch peer rebuilds each kind of fastprop leaf: ``rebuild(torch.nn, leaf) -> module``.
#: Weights keep their layout: ``Linear.w`` is ``(out, in)`` and ``Conv2D.w`` ``(out, in, kh, kw)``,
#: as in PyTorch; ``Flatten`` reads the logical ``(batch, channels, height, width)`` array in C order,
#: as ``torch.nn.Flatten`` does.
TORCH_LAYERS = {
    Linear: lambda nn, leaf: nn.Linear(leaf.n_in, leaf.n_out),
    Conv2D: lambda nn, leaf: nn.Conv2d(leaf.in_channels, leaf.out_channels, leaf.kernel_size, leaf.stride,
                                       leaf.padding),
    MaxPool2D: lambda nn, leaf: nn.MaxPool2d(leaf.size, leaf.stride),
    Sigmoid: lambda nn, leaf: nn.Sigmoid(),
    ReLU: lambda nn, leaf: nn.ReLU(),
    Reshape: lambda nn, leaf: nn.Unflatten(1, leaf.shape),
    Flatten: lambda nn, leaf: nn.Flatten(),
}
#: The ``torch.nn`` attribute holding each fastprop parameter.
TORCH_PARAMETERS = {"w": "weight", "b": "bias"}


class TorchRunner(Runner):
    """Eager PyTorch autograd on the same network, weights, batches and loss reduction, with
    ``torch.optim.SGD``, or ``torch.optim.Adam`` with fastprop's Adam hyperparameters."""

    def __init__(self, device, workload, dtype, images, targets, seed=0):
        import torch

        super().__init__(workload, dtype, len(images), seed)
        self.torch, self.device = torch, torch.device(device)
        torch_dtype = getattr(torch, numpy.dtype(self.dtype).name)
        leaves = initial_network(workload, self.dtype, seed).leaves()
        self.model = torch.nn.Sequential(*(TORCH_LAYERS[type(leaf)](torch.nn, leaf) for leaf in leaves))
        self.model.to(self.device, torch_dtype)  # before the copy, so float64 weights stay exact
        with torch.no_grad():
            for module, leaf in zip(self.model, leaves):
                for parameter in leaf.parameters():
                    target = getattr(module, TORCH_PARAMETERS[parameter.name])
                    target.copy_(torch.from_numpy(parameter.value).reshape(target.shape))
        optimizer = workload.make_optimizer()
        if optimizer is None:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.learning_rate)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=workload.learning_rate,
                                              betas=optimizer.betas, eps=optimizer.eps,
                                              weight_decay=optimizer.weight_decay)
        self.reduction = workload.cost_function().reduction
        self.images = torch.from_numpy(images).to(self.device, torch_dtype)
        self.targets = torch.from_numpy(targets).to(self.device, torch_dtype)
        self.labels = self.targets.argmax(dim=1)

    @classmethod
    def cannot_run(cls, workload):
        other = next((leaf for leaf in workload.layers if type(leaf) not in TORCH_LAYERS), None)
        if other is not None:
            return f"not applicable to {workload.name}: the PyTorch peer has no counterpart of {other!r}"
        if workload.cost not in LOSSES:
            return f"not applicable to {workload.name}: the PyTorch peer has no {workload.cost.__name__}"
        optimizer = workload.make_optimizer()
        if optimizer is not None and not (type(optimizer) is Adam and not optimizer.decoupled):
            return f"not applicable to {workload.name}: the PyTorch peer has no counterpart of {optimizer!r}"
        return None

    def loss(self, y, index):
        """The batch's loss as fastprop's cost computes it, reduced the same way."""
        functional = self.torch.nn.functional
        if self.workload.loss == "mse":  # fastprop's 1/2 (t - p)^2, so the gradient is p - t
            return 0.5 * functional.mse_loss(y, self.targets.index_select(0, index), reduction=self.reduction)
        return functional.cross_entropy(y, self.labels.index_select(0, index), reduction=self.reduction)

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def train_epoch(self):
        size = self.workload.batch_size
        order = self.torch.from_numpy(self.next_shuffle().permutation(self.rows)).to(self.device)
        total = self.torch.zeros((), dtype=self.torch.float64, device=self.device)
        for start in range(0, self.rows, size):
            index = order[start:start + size]
            self.optimizer.zero_grad()
            loss = self.loss(self.model(self.images.index_select(0, index)), index)
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


def runner_class(name) -> type:
    """The kind of runner that ``name`` (a fastprop backend, ``<backend>-steps``, ``notebook`` or
    ``torch-<device>``) is."""
    if name == BASELINE:
        return NotebookRunner
    if name.endswith(STEPS):
        return StepLoopRunner
    return TorchRunner if name.startswith("torch-") else FastpropRunner


def cannot_run(name, workload):
    """Why runner ``name`` cannot train ``workload``, or None when it can."""
    return runner_class(name).cannot_run(workload)


def make_runner(name, workload, dtype, images, targets, seed=0):
    """A runner (``train_epoch``, ``infer_epoch``) for a fastprop backend, ``<backend>-steps``,
    ``notebook`` or ``torch-<device>``."""
    kind = runner_class(name)
    if kind is NotebookRunner:
        return NotebookRunner(workload, dtype, images, targets, seed)
    if kind is TorchRunner:
        return TorchRunner(name[len("torch-"):], workload, dtype, images, targets, seed)
    if kind is StepLoopRunner:
        return StepLoopRunner(name[:-len(STEPS)], workload, dtype, images, targets, seed)
    return FastpropRunner(name, workload, dtype, images, targets, seed)


def torch_devices():
    """``{"torch-cpu": reason or None, "torch-cuda": ...}``: None where that peer can run."""
    try:
        import torch
    except ImportError:
        return dict.fromkeys(("torch-cpu", "torch-cuda"), "PyTorch is not installed (pip install torch)")
    return {"torch-cpu": None,
            "torch-cuda": None if torch.cuda.is_available() else "PyTorch sees no CUDA device"}
