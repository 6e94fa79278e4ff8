"""The two workloads every benchmark times, built from :mod:`fastprop.models`.

* **W1**, the seed notebook: ``seed_network()`` (``Linear(784, 10)`` + ``Sigmoid``), mean square error.
* **W2**: ``mlp_network(hidden=(512, 512))`` (784-512-512-10 ReLU, He initialisation throughout),
  softmax cross-entropy.

Both train with plain SGD at 1e-4 on batches of 600 and infer in batches of 10,000.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy

from fastprop.backends import use_backend
from ..costs import MeanSquareError, SoftmaxCrossEntropy
from ..layers import Linear, Network, ReLU, Sigmoid
from ..models import mlp_network, seed_network

#: The backend the peers' initial weights are drawn on (on the host, so the same for every backend).
REFERENCE = "numpy"

#: Activation leaves a workload may use, by the name the peers know them by.
ACTIVATIONS = {Sigmoid: "sigmoid", ReLU: "relu"}
#: Costs a workload may use, by the name the peers know them by.
LOSSES = {MeanSquareError: "mse", SoftmaxCrossEntropy: "softmax-cross-entropy"}


@dataclass(frozen=True)
class Workload:
    """A network builder from :mod:`fastprop.models` (``network(rng)``), its cost class and its settings."""

    name: str
    network: Callable[[numpy.random.Generator], Network]
    cost: type
    learning_rate: float = 1e-4
    batch_size: int = 600
    inference_batch: int = 10_000

    def build(self, seed=0) -> Network:
        """The network on the current backend, initialised identically on every backend."""
        return self.network(numpy.random.default_rng(seed))

    def cost_function(self):
        return self.cost()

    @property
    def loss(self) -> str:
        """The cost's name for the peers that reimplement it: "mse" or "softmax-cross-entropy"."""
        return LOSSES[self.cost]

    @functools.cached_property
    def layers(self) -> tuple:
        """``((n_in, n_out, activation or None), ...)``: the dense layers, as the peers rebuild them."""
        with use_backend(REFERENCE, "float64"):
            pairs = dense_layers(self.build())
        return tuple((linear.n_in, linear.n_out, activation) for linear, activation in pairs)

    @property
    def sizes(self) -> tuple:
        return (self.layers[0][0],) + tuple(n_out for _, n_out, _ in self.layers)

    @property
    def activations(self) -> tuple:
        return tuple(activation for _, _, activation in self.layers)

    def describe(self) -> str:
        """One line: shape, activations, cost and training settings."""
        shape = "-".join(map(str, self.sizes))
        kinds = "/".join(activation or "linear" for activation in self.activations)
        return (f"{self.name}: {shape} ({kinds}), {self.cost.__name__}, SGD at {self.learning_rate:g}, "
                f"batch {self.batch_size}, inference batch {self.inference_batch}")


def dense_layers(net: Network) -> list:
    """``[(Linear leaf, activation name or None), ...]`` of a network of ``Linear`` layers, each
    followed by at most one ``Sigmoid`` or ``ReLU``: the shapes the notebook and PyTorch peers run."""
    pairs = []
    for leaf in net.leaves():
        if isinstance(leaf, Linear):
            pairs.append([leaf, None])
        elif type(leaf) in ACTIVATIONS and pairs and pairs[-1][1] is None:
            pairs[-1][1] = ACTIVATIONS[type(leaf)]
        else:
            raise ValueError(f"A benchmark workload is Linear layers each followed by at most one Sigmoid or "
                             f"ReLU; {leaf!r} does not fit there, so the peers could not run it.")
    return [tuple(pair) for pair in pairs]


def initial_parameters(workload, dtype, seed=0) -> list:
    """The host ``[(W, b), ...]`` every runner starts from (drawn on the host, so backend-independent)."""
    with use_backend(REFERENCE, dtype):
        return [(linear.w.copy(), linear.b.copy()) for linear, _ in dense_layers(workload.build(seed))]


WORKLOADS = {
    "W1": Workload("W1", seed_network, MeanSquareError),
    "W2": Workload("W2", functools.partial(mlp_network, hidden=(512, 512), output_init="he"),
                   SoftmaxCrossEntropy),
}
