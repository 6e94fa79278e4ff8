"""The workloads every benchmark times: a :class:`~fastprop.models.ModelSpec` (network, cost, optimizer,
rate, batch size) and the sizes a benchmark uses.

* **W1**, the lab notebook: ``MODELS["notebook"]``, ``Linear(784, 10)`` + ``Sigmoid``, mean square
  error, plain SGD at 1e-4 on batches of 600.
* **W2**: ``mlp_network(hidden=(512, 512))`` (784-512-512-10 ReLU, He initialisation throughout),
  softmax cross-entropy, plain SGD at 1e-4 on batches of 600.
* **CNN**: ``cnn_network()`` (two 3 x 3 convolutions with ReLU and 2 x 2 max pooling, then
  3136-128-10), with ``MODELS["cnn"]``'s softmax cross-entropy, Adam at 1e-3 on batches of 128 (its
  cosine schedule and dropout left out: they change the rate and the masks, not the work). An epoch
  is 2,560 rows by default.

A workload says what to train; which runner can train it is each runner's business
(:meth:`fastprop.bench.runners.Runner.cannot_run`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy

from fastprop.backends import use_backend
from ..costs import MeanSquareError, SoftmaxCrossEntropy
from ..layers import Linear, Network, ReLU, Sigmoid
from ..models import MODELS, ModelSpec, cnn_network, mlp_network

#: The backend the peers' initial weights are drawn on (on the host, so the same for every backend).
REFERENCE = "numpy"
#: Training rows per epoch of a workload that does not set its own.
DEFAULT_ROWS = 50_000

#: Activation leaves the notebook peer runs, by the name it knows them by.
ACTIVATIONS = {Sigmoid: "sigmoid", ReLU: "relu"}
#: Costs a workload may use, by the name the peers know them by.
LOSSES = {MeanSquareError: "mse", SoftmaxCrossEntropy: "softmax-cross-entropy"}


@dataclass(frozen=True)
class Workload:
    """A model (a :class:`~fastprop.models.ModelSpec`: ``build(rng)``, its cost class, its optimizer,
    learning rate and batch size) as a benchmark times it: ``inference_batch`` rows per forward pass
    when timing inference, and ``rows`` training rows per epoch when the run asks for no other count.
    """

    name: str
    model: ModelSpec
    inference_batch: int = 10_000
    rows: int = DEFAULT_ROWS

    @property
    def cost(self) -> type:
        return self.model.cost

    @property
    def learning_rate(self) -> float:
        return self.model.learning_rate

    @property
    def batch_size(self) -> int:
        return self.model.batch_size

    @property
    def optimizer(self) -> Callable | None:
        """``optimizer(learning_rate)`` builds a fastprop optimizer; ``None`` is the notebook's plain SGD."""
        return self.model.optimizer

    def build(self, seed=0) -> Network:
        """The network on the current backend, initialised identically on every backend."""
        return self.model.build(numpy.random.default_rng(seed))

    def cost_function(self):
        return self.cost()

    def make_optimizer(self):
        """A fresh fastprop optimizer at this workload's rate, or None for plain SGD."""
        return None if self.optimizer is None else self.optimizer(self.learning_rate)

    def epoch_rows(self, rows=None) -> int:
        """``rows`` when a run asks for that many, else this workload's own count."""
        return self.rows if rows is None else rows

    @property
    def loss(self) -> str:
        """The cost's name for the peers that reimplement it: "mse" or "softmax-cross-entropy"."""
        return LOSSES[self.cost]

    @functools.cached_property
    def layers(self) -> tuple:
        """The network's leaves as built on the host: what a peer rebuilds, layer by layer."""
        with use_backend(REFERENCE, "float64"):
            return tuple(self.build().leaves())

    def describe(self) -> str:
        """One line: layers, cost, optimizer and training settings."""
        optimizer = "SGD" if self.optimizer is None else self.optimizer.__name__
        return (f"{self.name}: {' > '.join(map(repr, self.layers))}, {self.cost.__name__}, {optimizer} at "
                f"{self.learning_rate:g}, batch {self.batch_size}, inference batch {self.inference_batch}, "
                f"{self.rows} rows per epoch by default")


def dense_layers(leaves) -> list:
    """``[(Linear leaf, activation name or None), ...]`` of ``leaves`` that are ``Linear`` layers, each
    followed by at most one ``Sigmoid`` or ``ReLU``: the only networks the notebook peer runs."""
    pairs = []
    for leaf in leaves:
        if isinstance(leaf, Linear):
            pairs.append([leaf, None])
        elif type(leaf) in ACTIVATIONS and pairs and pairs[-1][1] is None:
            pairs[-1][1] = ACTIVATIONS[type(leaf)]
        else:
            raise ValueError(f"the notebook peer runs only Linear layers, each followed by at most one "
                             f"Sigmoid or ReLU, and {leaf!r} is not one of those")
    return [tuple(pair) for pair in pairs]


def initial_network(workload, dtype, seed=0) -> Network:
    """The network every runner starts from, built on the host in ``dtype``: its arrays are NumPy
    arrays, the same whichever backend a runner uses."""
    with use_backend(REFERENCE, dtype):
        return workload.build(seed)


def initial_parameters(workload, dtype, seed=0) -> list:
    """Host copies of the initial value of every parameter, in the order of ``net.parameters()``."""
    return [parameter.value.copy() for parameter in initial_network(workload, dtype, seed).parameters()]


_TIMED = {"epochs": 1, "batch_size": 600, "learning_rate": 1e-4, "shuffle": False}

WORKLOADS = {
    "W1": Workload("W1", MODELS["notebook"]),
    "W2": Workload("W2", ModelSpec(
        "784-512-512-10 ReLU network (He initialisation throughout), softmax cross-entropy, plain SGD",
        functools.partial(mlp_network, hidden=(512, 512), output_init="he"), SoftmaxCrossEntropy, **_TIMED)),
    # Inference in batches of 1,000: a batch of 10,000 images would hold gigabytes of feature maps.
    # The network of cnn_network() without the dropout and schedule `fastprop train --model cnn` adds:
    # the same work, and the peers' random masks could never match.
    "CNN": Workload("CNN", dataclasses.replace(MODELS["cnn"], build=cnn_network, schedule=None),
                    inference_batch=1_000, rows=2_560),
}
