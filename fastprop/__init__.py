"""fastprop: backpropagation done right and fast, on NumPy, Numba or CuPy.

The seed notebook's classes keep their names and signatures::

    from fastprop import Network, Linear, Sigmoid, MeanSquareError, train
    net = Network([Linear(784, 10), Sigmoid()])
    train(net, MeanSquareError(), 100, 600, 1e-4)   # the notebook's call, the notebook's numbers

``fastprop.set_backend("numba")`` (or ``"cupy"``) makes every layer built afterwards compute there.
"""

from __future__ import annotations

from fastprop.backends import (
    BackendError,
    BackendUnavailableError,
    available_backends,
    get_backend,
    get_dtype,
    register_backend,
    set_backend,
    use_backend,
)
from .checkpoint import CheckpointError, load, load_checkpoint, save
from .costs import Cost, CrossEntropy, MeanSquareError, SoftmaxCrossEntropy
from .augment import Augment
from .datasets import load_data, load_fashion_mnist, load_mnist
from .functions import sigmoid_derivative, sigmoid_function, vectorize
from .gradcheck import GradcheckResult, gradcheck
from .history import History
from .layers import (
    BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Flatten, Layer, Linear, MaxPool2D, Network, Parameter, ReLU,
    Reshape, Sigmoid, SoftMax, Tanh,
)
from .optimizers import SGD, Adam, Optimizer
from .schedules import CosineLR, StepLR
from .plot import learning_curves
from .seeding import seed
from .training import TrainingDiverged, predict, train, train_epoch, validate, validate_epoch

__version__ = "0.1.0"

__all__ = [
    "Adam", "Augment", "BatchNorm1D", "BatchNorm2D", "CheckpointError", "Conv2D", "Flatten", "MaxPool2D",
    "Reshape",
    "TrainingDiverged", "CosineLR", "Dropout", "Optimizer", "SGD", "StepLR",
    "learning_curves", "load", "load_checkpoint", "save",
    "BackendError", "BackendUnavailableError", "Cost", "CrossEntropy", "GradcheckResult", "History",
    "Layer", "Linear", "load_data", "load_fashion_mnist", "load_mnist", "MeanSquareError", "Network",
    "Parameter", "ReLU", "Sigmoid", "SoftMax",
    "SoftmaxCrossEntropy", "Tanh", "available_backends", "get_backend", "get_dtype", "gradcheck",
    "predict", "register_backend", "seed", "set_backend", "sigmoid_derivative", "sigmoid_function",
    "train", "train_epoch", "use_backend", "validate", "validate_epoch", "vectorize",
]
