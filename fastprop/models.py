"""Ready-made models: the lab notebook's network (``notebook``), the better ``mlp`` and the convolutional
``cnn``, each a :class:`ModelSpec`: how to build the network and how it is meant to be trained. The
benchmark's workloads (:mod:`fastprop.bench.workloads`) are model specs too, with the sizes a benchmark
times."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .costs import MeanSquareError, SoftmaxCrossEntropy
from .layers import (BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten, Linear, MaxPool2D, Network, ReLU,
                     Reshape, Sigmoid)
from .optimizers import Adam
from .schedules import CosineLR
from .seeding import generator


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model (``build(rng)``) and the training settings it is meant to be used with."""

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
    #: The training batches' :class:`~fastprop.Augment`, or ``None``.
    augment: object = None


def notebook_network(rng=None) -> Network:
    """The lab notebook's network: ``Linear(784, 10)`` then ``Sigmoid``."""
    rng = generator(rng)
    return Network([Linear(784, 10, rng=rng), Sigmoid()])


#: The former name of :func:`notebook_network`.
seed_network = notebook_network


def mlp_network(rng=None, hidden=(512, 512), dropout=0.0, output_init="xavier", norm=False) -> Network:
    """A ReLU multilayer perceptron with He initialisation, dropout, and a linear output for softmax
    (initialised with ``output_init``); with ``norm`` a ``BatchNorm1D`` between each hidden ``Linear``
    and its ``ReLU``."""
    rng, layers, n_in = generator(rng), [], 784
    for width in hidden:
        layers += [Linear(n_in, width, init="he", rng=rng)]
        layers += ([BatchNorm1D(width)] if norm else []) + [ReLU()]
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
        n_in = width
    layers.append(Linear(n_in, 10, init=output_init, rng=rng))
    return Network(layers)


def cnn_network(rng=None, channels=(32, 64), hidden=128, side=28, classes=10, dropout=0.0,
                norm=False) -> Network:
    """Two 3 x 3 convolutions (zero-padded, each followed by a ReLU and a 2 x 2 max pooling), then a
    ReLU hidden layer (followed by ``Dropout(dropout)`` when it is not 0) and a linear output for
    softmax: for rows of ``side * side`` pixels.

    With the defaults: ``Conv(1->32)-ReLU-MaxPool 2-Conv(32->64)-ReLU-MaxPool 2-Linear(3136, 128)-ReLU-
    Linear(128, 10)``, He initialisation, Xavier for the output. With ``norm`` a ``BatchNorm2D`` after
    each convolution and a ``BatchNorm1D`` after the hidden ``Linear``, each before its ``ReLU``.
    """
    rng, layers, n_in = generator(rng), [Reshape((1, side, side))], 1
    for width in channels:
        layers += [Conv2D(n_in, width, 3, padding=1, rng=rng)] + ([BatchNorm2D(width)] if norm else [])
        layers += [ReLU(), MaxPool2D(2)]
        n_in, side = width, side // 2
    layers += [Flatten(), Linear(n_in * side * side, hidden, init="he", rng=rng)]
    layers += ([BatchNorm1D(hidden)] if norm else []) + [ReLU()]
    if dropout:
        layers.append(Dropout(dropout, rng=rng))
    layers.append(Linear(hidden, classes, init="xavier", rng=rng))
    return Network(layers)


MODELS = {
    "notebook": ModelSpec(
        "the lab notebook's Linear(784, 10) + Sigmoid with MeanSquareError and plain SGD",
        notebook_network, MeanSquareError, epochs=100, batch_size=600, learning_rate=1e-4,
    ),
    "mlp": ModelSpec(
        "784-512-512-10 ReLU network with batch norm before each hidden ReLU, softmax cross-entropy, "
        "Adam with a cosine schedule",
        functools.partial(mlp_network, norm=True), SoftmaxCrossEntropy, epochs=12, batch_size=128,
        learning_rate=1e-3, optimizer=Adam, schedule=CosineLR,
    ),
    "cnn": ModelSpec(
        "two 3x3 convolutions with max pooling, a 128-unit ReLU layer with dropout 0.3, softmax "
        "cross-entropy, Adam with a cosine schedule",
        functools.partial(cnn_network, dropout=0.3), SoftmaxCrossEntropy, epochs=10, batch_size=128,
        learning_rate=1e-3,
        optimizer=Adam, schedule=CosineLR,
    ),
    "cnn-bn": ModelSpec(
        "cnn with batch normalisation after each convolution and the hidden layer, softmax "
        "cross-entropy, Adam 3e-3 with a cosine schedule (--epochs 4 for a short run; --augment 1 moves "
        "training images)",
        functools.partial(cnn_network, norm=True), SoftmaxCrossEntropy, epochs=12, batch_size=128,
        learning_rate=3e-3, optimizer=Adam, schedule=CosineLR,
    ),
}
#: Former model names, still accepted by ``fastprop train --model`` (with a note of the new name).
RENAMED_MODELS = {"seed": "notebook"}
