"""Ready-made networks: the notebook's ``seed`` model and the recommended better ``mlp``."""

from __future__ import annotations

from dataclasses import dataclass

from .costs import MeanSquareError, SoftmaxCrossEntropy
from .layers import Dropout, Linear, Network, ReLU, Sigmoid
from .optimizers import Adam, CosineLR
from .seeding import generator


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model and the training settings it is meant to be used with."""

    description: str
    build: object
    cost: object
    epochs: int
    batch_size: int
    learning_rate: float
    #: ``optimizer(learning_rate)`` builds the optimizer; ``None`` is the notebook's plain SGD.
    optimizer: object = None
    #: ``schedule(epochs)`` builds the learning-rate schedule; ``None`` keeps the rate constant.
    schedule: object = None
    #: Visit the training rows in a new seeded order every epoch (the notebook kept one order).
    shuffle: bool = True


def seed_network(rng=None) -> Network:
    """The notebook's network: ``Linear(784, 10)`` then ``Sigmoid``."""
    rng = generator(rng)
    return Network([Linear(784, 10, rng=rng), Sigmoid()])


def mlp_network(rng=None, hidden=(512, 512), dropout=0.0, output_init="xavier") -> Network:
    """A ReLU multilayer perceptron with He initialisation, dropout, and a linear output for softmax
    (initialised with ``output_init``)."""
    rng, layers, n_in = generator(rng), [], 784
    for width in hidden:
        layers += [Linear(n_in, width, init="he", rng=rng), ReLU()]
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
        n_in = width
    layers.append(Linear(n_in, 10, init=output_init, rng=rng))
    return Network(layers)


MODELS = {
    "seed": ModelSpec(
        "the notebook's Linear(784, 10) + Sigmoid with MeanSquareError and plain SGD",
        seed_network, MeanSquareError, epochs=100, batch_size=600, learning_rate=1e-4,
    ),
    "mlp": ModelSpec(
        "784-512-512-10 ReLU network, softmax cross-entropy, Adam with a cosine schedule",
        mlp_network, SoftmaxCrossEntropy, epochs=12, batch_size=128, learning_rate=1e-3,
        optimizer=Adam, schedule=CosineLR,
    ),
}
