"""fastprop against the seed notebook, number for number.

The first part of this file is an independent oracle: the notebook's classes and training loop
rewritten plainly on NumPy float64 (``Ref*``, ``ref_*``). The notebook's cells (tasks 2f, 3b, 4, 5
and 6e) then run once on fastprop's classes and once on the reference, from the same
``numpy.random.seed``, on every backend. In float64 on NumPy the weights, costs and accuracies must
agree to 1e-10 relative; float32 and Numba within float32 rounding. The last part checks, one by
one, each place where fastprop's API could drift from the notebook's (argument order, signs,
attribute names, shapes, printed lines, progress bars, students' own layers).
"""

from __future__ import annotations

import gzip
import inspect
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastprop
from fastprop.datasets import write_idx
from tests.conftest import relative_error

# ------------------------------------------------------------------------------------------------
# The reference: the notebook's classes, written the notebook's way on NumPy float64.
# ------------------------------------------------------------------------------------------------


def ref_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class RefLayer:
    def __init__(self):
        pass

    def forward(self, x_in):
        pass

    def backward(self, d_out):
        pass

    def zero_gradients(self):
        pass

    def update_parameters(self, learning_rate):
        pass


class RefLinear(RefLayer):
    def __init__(self, n_in, n_out, initial_sigma=0.1):
        self.n_in, self.n_out = n_in, n_out
        self.w = initial_sigma * np.random.randn(n_out, n_in)
        self.b = np.zeros((1, n_out))
        self.zero_gradients()
        self.x_in = None

    def forward(self, x_in):
        self.x_in = x_in
        return x_in @ self.w.T + self.b

    def backward(self, d_out):
        self.dw += d_out.T @ self.x_in
        self.db += d_out.sum(axis=0, keepdims=True)
        return d_out @ self.w

    def zero_gradients(self):
        self.dw = np.zeros((self.n_out, self.n_in))
        self.db = np.zeros((1, self.n_out))

    def update_parameters(self, learning_rate):
        self.w = self.w - learning_rate * self.dw
        self.b = self.b - learning_rate * self.db


class RefSigmoid(RefLayer):
    def __init__(self):
        self.x_in = None

    def forward(self, x_in):
        self.x_in = x_in
        return ref_sigmoid(x_in)

    def backward(self, d_out):
        s = ref_sigmoid(self.x_in)
        return d_out * s * (1 - s)


class RefReLU(RefLayer):
    def __init__(self):
        self.x_in = None

    def forward(self, x_in):
        self.x_in = x_in
        return np.maximum(x_in, 0.0)

    def backward(self, d_out):
        return d_out * (self.x_in > 0)


class RefSoftMax(RefLayer):
    def __init__(self):
        self.x_out = None

    def forward(self, x_in):
        e = np.exp(x_in - x_in.max(axis=1, keepdims=True))
        self.x_out = e / e.sum(axis=1, keepdims=True)
        return self.x_out

    def backward(self, d_out):
        s = self.x_out
        return s * (d_out - (d_out * s).sum(axis=1, keepdims=True))


class RefMSE:
    def __init__(self):
        self.target = None
        self.prediction = None

    def estimate(self, target, prediction):
        self.target, self.prediction = target, prediction
        return 0.5 * (target - prediction) ** 2

    def gradient(self, cost):
        return self.prediction - self.target


class RefCrossEntropy:
    def __init__(self):
        self.x_in = None
        self.target = None
        self.eps = 1e-12

    def estimate(self, target, x_in):
        self.target, self.x_in = target, x_in
        return -target * np.log(x_in + self.eps)

    def gradient(self, d_out):
        return -self.target / (self.x_in + self.eps)


class RefNetwork(RefLayer):
    def __init__(self, layers):
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, d):
        for layer in reversed(self.layers):
            d = layer.backward(d)
        return d

    def zero_gradients(self):
        for layer in self.layers:
            layer.zero_gradients()

    def update_parameters(self, learning_rate):
        for layer in self.layers:
            layer.update_parameters(learning_rate)


def ref_read_idx(path):
    """An IDX file as a uint8 array, read without fastprop."""
    data = gzip.decompress(Path(path).read_bytes())
    ndim = data[3]
    shape = struct.unpack(">%dI" % ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def ref_load_mnist(folder):
    """The official training file in file order: images (N, 784) in [0, 1], one-hot labels (N, 10)."""
    images = ref_read_idx(Path(folder) / "train-images-idx3-ubyte.gz")
    digits = ref_read_idx(Path(folder) / "train-labels-idx1-ubyte.gz")
    images = images.reshape(len(images), -1).astype(np.float64) / 255
    labels = np.zeros((len(digits), 10))
    labels[np.arange(len(digits)), digits] = 1.0
    return images, labels


def ref_load_data(folder):
    images, labels = ref_load_mnist(folder)
    permutation = np.random.permutation(images.shape[0])
    return images[permutation, :], labels[permutation, :], images.shape[1], labels.shape[1]


def ref_split(images, labels):
    n_train = round(5 / 6 * len(images))
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def ref_train_epoch(e, net, images, labels, cost_function, batch_size, learning_rate):
    batch_costs = []
    for i in range(0, len(images), batch_size):
        batch_images = images[i : i + batch_size]
        batch_labels = labels[i : i + batch_size]
        net.zero_gradients()
        prediction = net.forward(batch_images)
        cost = cost_function.estimate(batch_labels, prediction)
        net.backward(cost_function.gradient(cost))
        net.update_parameters(learning_rate)
        batch_costs.append(np.mean(cost))
    return float(np.mean(batch_costs))


def ref_validate_epoch(e, net, images, labels, batch_size):
    n_correct = n_total = 0
    for i in range(0, len(images), batch_size):
        batch_labels = labels[i : i + batch_size]
        predictions = np.asarray(net.forward(images[i : i + batch_size]))
        n_correct += int(np.sum(np.argmax(batch_labels, axis=1) == np.argmax(predictions, axis=1)))
        n_total += batch_labels.shape[0]
    return n_correct / n_total


def ref_train(net, cost_function, number_epochs, batch_size, learning_rate, folder=None, data=None):
    """The notebook's ``train`` with the validation call fixed; returns (costs, accuracies)."""
    if data is None:
        images, labels, _, _ = ref_load_data(folder)
        data = ref_split(images, labels)
    training_images, training_labels, validation_images, validation_labels = data
    costs, accuracies = [], []
    for e in range(number_epochs):
        costs.append(ref_train_epoch(e, net, training_images, training_labels, cost_function,
                                     batch_size, learning_rate))
        accuracies.append(ref_validate_epoch(e, net, validation_images, validation_labels, batch_size))
    return costs, accuracies


# ------------------------------------------------------------------------------------------------
# Shared set-up: one builder per notebook network, a small learnable dataset, tolerances.
# ------------------------------------------------------------------------------------------------

FP = SimpleNamespace(Linear=fastprop.Linear, Sigmoid=fastprop.Sigmoid, ReLU=fastprop.ReLU,
                     SoftMax=fastprop.SoftMax, Network=fastprop.Network,
                     MeanSquareError=fastprop.MeanSquareError, CrossEntropy=fastprop.CrossEntropy)
REF = SimpleNamespace(Linear=RefLinear, Sigmoid=RefSigmoid, ReLU=RefReLU, SoftMax=RefSoftMax,
                      Network=RefNetwork, MeanSquareError=RefMSE, CrossEntropy=RefCrossEntropy)

# name -> (build(kit) -> (net, cost), learning rate)
MODELS = {
    "task4_linear_sigmoid_mse": (
        lambda k: (k.Network([k.Linear(784, 10), k.Sigmoid()]), k.MeanSquareError()), 1e-3),
    "task6e_linear_softmax_cross_entropy": (
        lambda k: (k.Network([k.Linear(784, 10), k.SoftMax()]), k.CrossEntropy()), 1e-4),
    "task5_linear_relu_linear_softmax": (
        lambda k: (k.Network([k.Linear(784, 32), k.ReLU(), k.Linear(32, 10), k.SoftMax()]),
                   k.CrossEntropy()), 3e-4),
    "task5_linear_sigmoid_linear_sigmoid": (
        lambda k: (k.Network([k.Linear(784, 32), k.Sigmoid(), k.Linear(32, 10), k.Sigmoid()]),
                   k.MeanSquareError()), 1e-2),
}

N_FILE, N_TEST = 3000, 300
N_TRAIN = round(5 / 6 * N_FILE)  # 2500 training rows, 500 validation rows
BATCH = 300  # 2500 = 8 * 300 + 100 and 500 = 300 + 200: both loops end on a partial batch
EPOCHS = 3
DTYPES = ["float64", "float32"]


def tight(backend_name, dtype):
    """Only NumPy in float64 promises the notebook's numbers to 1e-10; the rest float32 rounding."""
    return backend_name == "numpy" and dtype == "float64"


def tolerance(backend_name, dtype):
    return 1e-10 if tight(backend_name, dtype) else 1e-4


def host(array):
    return np.asarray(array, dtype=np.float64)


def linears(net):
    return [layer for layer in net.layers if hasattr(layer, "w")]


def assert_same_weights(net, ref_net, initial, backend_name, dtype):
    """Weights, biases and the change since ``initial`` (the shared starting weights) agree."""
    rtol = tolerance(backend_name, dtype)
    ours, theirs = linears(net), linears(ref_net)
    assert len(ours) == len(theirs) == len(initial)
    for layer, ref, (w0, b0) in zip(ours, theirs, initial):
        assert host(layer.w).shape == ref.w.shape and host(layer.b).shape == ref.b.shape
        assert relative_error(layer.w, ref.w) < rtol
        assert relative_error(layer.b, ref.b) < rtol
        # The change since the start, on its own scale: a wrong gradient hides less there. In float32
        # it carries the weights' rounding, so it gets a looser bound.
        delta_tol = rtol if tight(backend_name, dtype) else 1e-2
        assert relative_error(host(layer.w) - w0, ref.w - w0) < delta_tol
        assert relative_error(host(layer.b) - b0, ref.b - b0) < delta_tol
        assert np.abs(ref.w - w0).max() > 1e-4, "training barely moved the weights: a weak test"


def assert_same_history(costs, accuracies, ref_costs, ref_accuracies, backend_name, dtype, n_rows):
    rtol = tolerance(backend_name, dtype)
    assert len(costs) == len(accuracies) == len(ref_costs) == len(ref_accuracies)
    for cost, ref in zip(costs, ref_costs):
        assert abs(cost - ref) <= rtol * abs(ref)
    for accuracy, ref in zip(accuracies, ref_accuracies):
        if tight(backend_name, dtype):
            assert abs(accuracy - ref) <= 1e-10 * abs(ref)
        else:
            assert abs(accuracy - ref) * n_rows <= 3 + 1e-9  # a few rows may flip


def make_mnist_like(folder, seed=2019):
    """Four IDX files with N_FILE training and N_TEST test images whose class is learnable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", N_FILE), ("t10k", N_TEST)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 70, (n, 28, 28)).astype(np.int64)
        strength = rng.integers(30, 180, n)
        for k in range(10):
            rows = np.flatnonzero(labels == k)
            images[rows, 2 * k + 4 : 2 * k + 6, 4:24] += strength[rows, None, None]
            images[rows, 4:24, 24 - k // 2] += strength[rows, None] // 2  # a shared, confusing stripe
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.clip(images, 0, 255).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These matrices are tiny: on a busy 2-core machine the hand-offs between OpenBLAS's (and
    Numba's) threads cost more than the arithmetic (50x and 5x measured under load). Numba's
    kernels give the same bits for every thread count, so nothing checked here depends on it."""
    try:
        import numba
    except ImportError:  # the numba backend is optional
        numba = None
    threads = numba.get_num_threads() if numba is not None else None
    if numba is not None:
        numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        if numba is not None:
            numba.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity_data")
    make_mnist_like(root / "mnist")
    return root


@pytest.fixture
def mnist(data_root, tmp_path, monkeypatch):
    """The synthetic MNIST folder, found by ``fastprop.load_data()`` through FASTPROP_DATA."""
    monkeypatch.setenv("FASTPROP_DATA", str(data_root))
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "cache"))
    return data_root / "mnist"


_REFERENCE_RUNS = {}


def reference_run(model, folder, seed=11):
    """The pure reference's training run of ``model`` (computed once per model and folder)."""
    key = (model, str(folder), seed)
    if key not in _REFERENCE_RUNS:
        build, learning_rate = MODELS[model]
        np.random.seed(seed)
        net, cost = build(REF)
        initial = [(layer.w.copy(), layer.b.copy()) for layer in linears(net)]
        costs, accuracies = ref_train(net, cost, EPOCHS, BATCH, learning_rate, folder)
        _REFERENCE_RUNS[key] = net, initial, costs, accuracies
    return _REFERENCE_RUNS[key]


# ------------------------------------------------------------------------------------------------
# The notebook's cells, on fastprop and on the reference.
# ------------------------------------------------------------------------------------------------

def _task_2f_inputs(seed):
    np.random.seed(seed)
    random_input = np.random.rand(600, 784)
    random_label = np.random.rand(600, 10)
    return random_input, random_label


@pytest.mark.parametrize("dtype", DTYPES)
def test_task_2f_linear_sigmoid_mse_step_matches_the_reference(backend_name, dtype):
    rtol = tolerance(backend_name, dtype)
    results = {}
    for name, kit in (("ref", REF), ("fastprop", FP)):
        with fastprop.use_backend(backend_name, dtype):
            random_input, random_label = _task_2f_inputs(7)
            linear_layer, sigmoid_layer, cost_function = (
                kit.Linear(784, 10), kit.Sigmoid(), kit.MeanSquareError()
            )
            act = linear_layer.forward(random_input)
            pred = sigmoid_layer.forward(act)
            cost = cost_function.estimate(random_label, pred)
            grad = cost_function.gradient(cost)
            d = sigmoid_layer.backward(grad)
            d_in = linear_layer.backward(d)
            dw, db = host(linear_layer.dw).copy(), host(linear_layer.db).copy()
            linear_layer.update_parameters(1e-4)
            results[name] = dict(act=act, pred=pred, cost=cost, grad=grad, d=d, d_in=d_in, dw=dw, db=db,
                                 w=linear_layer.w, b=linear_layer.b, x_in=linear_layer.x_in,
                                 sigmoid_x_in=sigmoid_layer.x_in)
    ours, ref = results["fastprop"], results["ref"]
    for key in ref:
        assert host(ours[key]).shape == host(ref[key]).shape, key
        assert relative_error(ours[key], ref[key]) < rtol, key
    assert np.abs(ref["b"]).max() > 0  # the update moved the bias away from its zeros


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_task_3b_network_step_matches_the_reference(backend_name, dtype, fuse):
    rtol = tolerance(backend_name, dtype)
    results = {}
    for name, kit in (("ref", REF), ("fastprop", FP)):
        with fastprop.use_backend(backend_name, dtype):
            random_input, random_label = _task_2f_inputs(8)
            linear_layer_1, sigmoid_layer = kit.Linear(784, 10), kit.Sigmoid()
            layers = [linear_layer_1, sigmoid_layer]
            net = kit.Network(layers) if name == "ref" else kit.Network(layers, fuse=fuse)
            assert net.layers is layers
            cost_function = kit.MeanSquareError()
            net.zero_gradients()
            pred = net.forward(random_input)
            # what the notebook's layers hold after the forward pass, fused or not
            x_in, z = host(linear_layer_1.x_in).copy(), host(sigmoid_layer.x_in).copy()
            cost = cost_function.estimate(random_label, pred)
            d_in = net.backward(cost_function.gradient(cost))
            net.update_parameters(1e-4)
            second = net.forward(random_input)
            results[name] = dict(pred=pred, x_in=x_in, z=z, cost=cost, d_in=d_in, w=linear_layer_1.w,
                                 b=linear_layer_1.b, second=second)
    ours, ref = results["fastprop"], results["ref"]
    assert ours["d_in"] is not None, "Network.backward must return the input gradient"
    for key in ref:
        assert host(ours[key]).shape == host(ref[key]).shape, key
        assert relative_error(ours[key], ref[key]) < rtol, key


@pytest.mark.parametrize("dtype", DTYPES)
def test_task_6e_softmax_cross_entropy_cell_matches_the_reference(backend_name, dtype):
    rtol = tolerance(backend_name, dtype)
    input_size, label_size, batch_size, learning_rate = 28 * 2, 10, 600, 0.00001  # as the cell has it
    results = {}
    for name, kit in (("ref", REF), ("fastprop", FP)):
        with fastprop.use_backend(backend_name, dtype):
            np.random.seed(9)
            random_input = np.random.rand(batch_size, input_size)
            random_label = np.eye(label_size)[np.random.randint(0, label_size, batch_size)]
            linear, softmax = kit.Linear(input_size, label_size), kit.SoftMax()
            net, cost_function = kit.Network([linear, softmax]), kit.CrossEntropy()
            net.zero_gradients()
            prediction = net.forward(random_input)
            x_out = host(softmax.x_out).copy()
            cost = cost_function.estimate(random_label, prediction)
            gradient = cost_function.gradient(cost)
            d_in = net.backward(gradient)
            dw = host(linear.dw).copy()
            net.update_parameters(learning_rate)
            results[name] = dict(prediction=prediction, x_out=x_out, cost=cost, gradient=gradient,
                                 d_in=d_in, dw=dw, w=linear.w, b=linear.b,
                                 stored_x_in=cost_function.x_in, stored_target=cost_function.target)
    ours, ref = results["fastprop"], results["ref"]
    for key in ref:
        assert host(ours[key]).shape == host(ref[key]).shape, key
        assert relative_error(ours[key], ref[key]) < rtol, key
    assert np.allclose(host(ours["prediction"]).sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_notebook_training_loop_matches_the_reference(backend_name, dtype, model, mnist):
    """fastprop.train, and the notebook's own loop driving fastprop's classes, give the reference's
    numbers."""
    build, learning_rate = MODELS[model]
    ref_net, initial, ref_costs, ref_accuracies = reference_run(model, mnist)
    n_validation = N_FILE - N_TRAIN
    with fastprop.use_backend(backend_name, dtype):
        np.random.seed(11)
        net, cost = build(FP)
        for layer, (w0, _) in zip(linears(net), initial):
            assert relative_error(layer.w, w0) <= (0 if dtype == "float64" else 1e-7)
        history = fastprop.train(net, cost, EPOCHS, BATCH, learning_rate)
        assert_same_history(history.cost, history.accuracy, ref_costs, ref_accuracies, backend_name, dtype,
                            n_validation)
        assert_same_weights(net, ref_net, initial, backend_name, dtype)

        np.random.seed(11)
        net, cost = build(FP)
        costs, accuracies = ref_train(net, cost, EPOCHS, BATCH, learning_rate, mnist)
        assert_same_history(costs, accuracies, ref_costs, ref_accuracies, backend_name, dtype, n_validation)
        assert_same_weights(net, ref_net, initial, backend_name, dtype)
    assert ref_accuracies[-1] > 0.2, "the reference did not learn: the dataset or rate is off"


@pytest.fixture(scope="module")
def fashion_reference():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed in /usr/share/datasets/fashion-mnist "
                    "(apt-get install dataset-fashion-mnist)")
    np.random.seed(2019)
    net = RefNetwork([RefLinear(784, 10), RefSigmoid()])
    initial = [(net.layers[0].w.copy(), net.layers[0].b.copy())]
    costs, accuracies = ref_train(net, RefMSE(), 2, 600, 1e-4, folder)
    return net, initial, costs, accuracies


@pytest.mark.slow
def test_fashion_mnist_two_epochs_of_the_notebook_network(backend_name, fashion_reference, tmp_path,
                                                         monkeypatch):
    monkeypatch.delenv("FASTPROP_DATA", raising=False)
    monkeypatch.setenv("FASTPROP_CACHE", str(tmp_path / "empty-cache"))
    ref_net, initial, ref_costs, ref_accuracies = fashion_reference
    with fastprop.use_backend(backend_name, "float64"):
        np.random.seed(2019)
        net = fastprop.Network([fastprop.Linear(784, 10), fastprop.Sigmoid()])
        history = fastprop.train(net, fastprop.MeanSquareError(), 2, 600, 1e-4, dataset="fashion-mnist",
                                 quiet=True, verbose=False)
    assert_same_history(history.cost, history.accuracy, ref_costs, ref_accuracies, backend_name, "float64",
                        10000)
    assert_same_weights(net, ref_net, initial, backend_name, "float64")
    assert ref_accuracies[-1] > 0.3


# ------------------------------------------------------------------------------------------------
# Each kind of divergence the spec names, on its own.
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def f64(backend_name):
    with fastprop.use_backend(backend_name, "float64"):
        yield backend_name


def test_cost_estimate_takes_the_target_first(f64):
    rng = np.random.default_rng(0)
    t, p = rng.random((4, 10)), rng.random((4, 10))
    mse = fastprop.MeanSquareError()
    assert mse.target is None and mse.prediction is None
    by_keyword = host(mse.estimate(target=t, prediction=p))
    assert np.allclose(by_keyword, 0.5 * (t - p) ** 2, rtol=1e-12)
    assert np.array_equal(host(mse.target), t) and np.array_equal(host(mse.prediction), p)
    assert np.allclose(host(mse.gradient(by_keyword)), p - t, rtol=1e-12)  # p - t, not t - p
    assert list(inspect.signature(fastprop.MeanSquareError.estimate).parameters)[1:] == [
        "target", "prediction"
    ]

    t1, p1 = np.array([[1.0, 0.0, 0.0]]), np.array([[0.7, 0.2, 0.1]])
    cross_entropy = fastprop.CrossEntropy()
    assert cross_entropy.eps == 1e-12 and cross_entropy.x_in is None and cross_entropy.target is None
    cost = host(cross_entropy.estimate(t1, p1))
    assert cost.shape == (1, 3)
    assert round(float(cost.sum()), 3) == 0.357 and abs(cost.sum() + np.log(0.7 + 1e-12)) < 1e-12
    assert np.array_equal(host(cross_entropy.target), t1) and np.array_equal(host(cross_entropy.x_in), p1)
    assert np.allclose(host(cross_entropy.gradient(cost)), -t1 / (p1 + 1e-12), rtol=1e-12)
    keyword = fastprop.CrossEntropy(eps=1e-6)
    assert keyword.eps == 1e-6
    assert np.allclose(host(keyword.estimate(target=t1, x_in=p1)), -t1 * np.log(p1 + 1e-6), rtol=1e-12)
    assert np.array_equal(host(keyword.x_in), p1)


def test_softmax_cross_entropy_on_logits(f64):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 10))
    t = np.eye(10)[rng.integers(0, 10, 5)]
    cost_function = fastprop.SoftmaxCrossEntropy()
    log_softmax = (
        z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    assert relative_error(cost_function.estimate(t, z), -t * log_softmax) < 1e-12
    assert relative_error(
        cost_function.gradient(None), np.exp(log_softmax) * t.sum(1, keepdims=True) - t
    ) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_attributes_and_initial_values(backend_name, dtype):
    with fastprop.use_backend(backend_name, dtype):
        np.random.seed(3)
        layer = fastprop.Linear(6, 4)
        after_ours = np.random.rand()
        wide = fastprop.Linear(6, 4, initial_sigma=0.5)
    np.random.seed(3)
    expected = 0.1 * np.random.randn(4, 6)
    after_reference = np.random.rand()  # Linear drew exactly 4*6 normals and nothing else
    expected_wide = 0.5 * np.random.randn(4, 6)
    assert after_ours == after_reference
    assert (layer.n_in, layer.n_out) == (6, 4)
    assert np.array_equal(host(layer.w), expected.astype(dtype))
    assert np.array_equal(host(wide.w), expected_wide.astype(dtype))
    assert np.dtype(np.asarray(layer.w).dtype) == np.dtype(dtype)
    assert host(layer.b).shape == (1, 4) and not host(layer.b).any()
    assert host(layer.dw).shape == (4, 6) and not host(layer.dw).any()
    assert host(layer.db).shape == (1, 4) and not host(layer.db).any()
    assert layer.x_in is None

    np.random.seed(3)
    with fastprop.use_backend(backend_name, dtype):
        fastprop.Linear(6, 4, rng=0)  # its own generator: the global one is left alone
    assert np.random.rand() == np.random.RandomState(3).rand()


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_forward_of_one_sample_and_gradient_accumulation(backend_name, dtype):
    rtol = tolerance(backend_name, dtype)
    np.random.seed(4)
    ref = RefLinear(5, 3)
    with fastprop.use_backend(backend_name, dtype):
        np.random.seed(4)
        layer = fastprop.Linear(5, 3)
        x = np.random.default_rng(2).random(5)
        y = layer.forward(x)
        assert host(y).shape == (1, 3)
        assert relative_error(y, x.reshape(1, 5) @ ref.w.T) < rtol
        batch = np.random.default_rng(3).random((7, 5))
        d_out = np.random.default_rng(4).random((7, 3))
        for _ in range(2):  # gradients add up until zero_gradients
            layer.forward(batch)
            layer.backward(d_out)
            ref.forward(batch)
            ref.backward(d_out)
        assert relative_error(layer.dw, ref.dw) < rtol and relative_error(layer.db, ref.db) < rtol
        layer.update_parameters(0.01)
        ref.update_parameters(0.01)
        assert relative_error(layer.w, ref.w) < rtol and relative_error(layer.b, ref.b) < rtol
        layer.zero_gradients()
        assert not host(layer.dw).any() and not host(layer.db).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_assigning_w_takes_effect_in_forward_and_in_train(backend_name, dtype, mnist):
    rtol = tolerance(backend_name, dtype)
    new_w = 0.05 * np.random.default_rng(5).standard_normal((10, 784))
    with fastprop.use_backend(backend_name, dtype):
        layer = fastprop.Linear(784, 10)
        layer.w = new_w
        assert np.dtype(np.asarray(layer.w).dtype) == np.dtype(dtype)
        assert relative_error(layer.w, new_w) < rtol
        x = np.random.default_rng(6).random((3, 784))
        assert relative_error(layer.forward(x), x @ new_w.T) < rtol
        with pytest.raises(ValueError):
            layer.w = np.zeros((784, 10))
        assert relative_error(layer.w, new_w) < rtol  # a refused assignment changes nothing

        data = ref_split(*ref_load_data(mnist)[:2])
        np.random.seed(12)
        net = fastprop.Network([fastprop.Linear(784, 10), fastprop.Sigmoid()])
        net.layers[0].w = new_w
        history = fastprop.train(net, fastprop.MeanSquareError(), 1, BATCH, 1e-3, data=data, quiet=True,
                                 verbose=False)
        halved = host(net.layers[0].w) * 0.5  # a second assignment between two runs of train
        net.layers[0].w = halved
        history2 = fastprop.train(net, fastprop.MeanSquareError(), 1, BATCH, 1e-3, data=data, quiet=True,
                                  verbose=False)
    ref = RefNetwork([RefLinear(784, 10), RefSigmoid()])
    ref.layers[0].w = new_w.copy()
    ref_costs, ref_accuracies = ref_train(ref, RefMSE(), 1, BATCH, 1e-3, data=data)
    assert_same_history(history.cost, history.accuracy, ref_costs, ref_accuracies, backend_name, dtype,
                        N_FILE - N_TRAIN)
    ref.layers[0].w = ref.layers[0].w * 0.5
    ref_costs, ref_accuracies = ref_train(ref, RefMSE(), 1, BATCH, 1e-3, data=data)
    assert_same_history(history2.cost, history2.accuracy, ref_costs, ref_accuracies, backend_name, dtype,
                        N_FILE - N_TRAIN)
    assert relative_error(net.layers[0].w, ref.layers[0].w) < rtol
    assert relative_error(net.layers[0].b, ref.layers[0].b) < rtol


def test_sigmoid_x_in_and_softmax_x_out(f64):
    rtol = tolerance(f64, "float64")
    z = np.random.default_rng(7).normal(size=(4, 10))
    sigmoid = fastprop.Sigmoid()
    assert sigmoid.x_in is None
    y = sigmoid.forward(z)
    assert relative_error(sigmoid.x_in, z) == 0
    assert relative_error(y, ref_sigmoid(z)) < rtol
    d_out = np.random.default_rng(8).normal(size=(4, 10))
    assert relative_error(sigmoid.backward(d_out), d_out * ref_sigmoid(z) * (1 - ref_sigmoid(z))) < rtol
    assert relative_error(fastprop.sigmoid_derivative(z), ref_sigmoid(z) * (1 - ref_sigmoid(z))) < 1e-12
    assert relative_error(fastprop.sigmoid_function(z), ref_sigmoid(z)) < 1e-12

    softmax, ref = fastprop.SoftMax(), RefSoftMax()
    assert softmax.x_out is None
    y = softmax.forward(z)
    assert relative_error(softmax.x_out, y) == 0
    assert relative_error(y, ref.forward(z)) < rtol
    assert relative_error(softmax.backward(d_out), ref.backward(d_out)) < rtol


def test_network_keeps_the_list_and_backward_returns_the_input_gradient(f64):
    rtol = tolerance(f64, "float64")
    np.random.seed(13)
    ref = RefNetwork([RefLinear(12, 8), RefSigmoid(), RefLinear(8, 5), RefSoftMax()])
    np.random.seed(13)
    layers = [fastprop.Linear(12, 8), fastprop.Sigmoid(), fastprop.Linear(8, 5), fastprop.SoftMax()]
    net = fastprop.Network(layers)
    assert net.layers is layers
    x = np.random.default_rng(9).random((6, 12))
    d_out = np.random.default_rng(10).normal(size=(6, 5))
    net.zero_gradients()
    assert relative_error(net.forward(x), ref.forward(x)) < rtol
    d_in = net.backward(d_out)
    assert host(d_in).shape == (6, 12)
    assert relative_error(d_in, ref.backward(d_out)) < rtol
    assert relative_error(layers[0].dw, ref.layers[0].dw) < rtol


def test_vectorize_shapes():
    expected = np.zeros((1, 10))
    expected[0, 3] = 1
    assert host(fastprop.vectorize(3)).shape == (1, 10)
    assert np.array_equal(host(fastprop.vectorize(3)), expected)
    assert np.array_equal(host(fastprop.vectorize(3.0)), expected)
    labels = np.array([1, 0, 9, 3])
    assert np.array_equal(host(fastprop.vectorize(labels)), np.eye(10)[labels])


def test_load_data_permutes_with_the_global_generator(mnist):
    np.random.seed(21)
    images, labels, image_size, label_size = fastprop.load_data()
    after_ours = np.random.rand()
    np.random.seed(21)
    ref_images, ref_labels, _, _ = ref_load_data(mnist)
    assert np.random.rand() == after_ours  # one permutation(n) drawn, nothing else
    assert (image_size, label_size) == (784, 10)
    assert images.shape == (N_FILE, 784) and labels.shape == (N_FILE, 10)
    assert images.dtype == np.float64 and labels.dtype == np.float64
    assert relative_error(images, ref_images) < 1e-12
    assert np.array_equal(labels, ref_labels)

    unshuffled, unshuffled_labels = fastprop.load_mnist()
    file_images, file_labels = ref_load_mnist(mnist)
    assert relative_error(unshuffled, file_images) < 1e-12 and np.array_equal(unshuffled_labels, file_labels)


def test_train_epoch_and_validate_epoch_signatures_and_values(f64, mnist, capsys):
    rtol = tolerance(f64, "float64")
    for function, names in ((fastprop.train_epoch, ["e", "net", "images", "labels", "cost_function",
                                                    "batch_size", "learning_rate"]),
                            (fastprop.validate_epoch, ["e", "net", "images", "labels", "batch_size"])):
        parameters = list(inspect.signature(function).parameters.values())
        assert [p.name for p in parameters[: len(names)]] == names
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[: len(names)])
        # anything beyond the notebook's arguments is an optional keyword
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in parameters[len(names):])
    np.random.seed(14)
    data = ref_split(*fastprop.load_data()[:2])
    np.random.seed(15)
    ref = RefNetwork([RefLinear(784, 10), RefSigmoid()])
    np.random.seed(15)
    net = fastprop.Network([fastprop.Linear(784, 10), fastprop.Sigmoid()])
    capsys.readouterr()
    cost = fastprop.train_epoch(4, net, data[0], data[1], fastprop.MeanSquareError(), BATCH, 1e-3)
    accuracy = fastprop.validate_epoch(4, net, data[2], data[3], BATCH)
    err = capsys.readouterr().err
    assert "training, e=4" in err and "validation, e=4" in err
    assert isinstance(cost, float) and isinstance(accuracy, float)
    ref_cost = ref_train_epoch(4, ref, data[0], data[1], RefMSE(), BATCH, 1e-3)
    ref_accuracy = ref_validate_epoch(4, ref, data[2], data[3], BATCH)
    assert abs(cost - ref_cost) <= rtol * ref_cost
    assert abs(accuracy - ref_accuracy) <= rtol * ref_accuracy
    assert abs(fastprop.validate(net, data[2], data[3], BATCH) - ref_accuracy) <= rtol * ref_accuracy
    # the summed figure the notebook printed would be 9 times larger (9 batches): it is the mean
    assert ref_cost < 0.5


def test_train_prints_the_notebook_lines_and_bars(f64, mnist, capsys):
    rtol = tolerance(f64, "float64")
    build, learning_rate = MODELS["task4_linear_sigmoid_mse"]
    _, _, ref_costs, ref_accuracies = reference_run("task4_linear_sigmoid_mse", mnist)
    np.random.seed(11)
    net, cost = build(FP)
    capsys.readouterr()
    history = fastprop.train(net, cost, EPOCHS, BATCH, learning_rate)
    out, err = capsys.readouterr()
    lines = re.findall(r"^cost=(\S+), accuracy=(\S+)$", out, re.MULTILINE)
    assert len(lines) == EPOCHS, out
    assert len(history.cost) == len(history.accuracy) == EPOCHS
    for e, (cost_text, accuracy_text) in enumerate(lines):
        assert cost_text == "%5.6f" % history.cost[e] and accuracy_text == "%2.6f" % history.accuracy[e]
        assert abs(float(cost_text) - ref_costs[e]) <= 5e-7 + rtol * ref_costs[e]
        assert abs(float(accuracy_text) - ref_accuracies[e]) <= 5e-7 + rtol
    positions = [err.find(f"{kind}, e={e}") for e in range(EPOCHS) for kind in ("training", "validation")]
    assert -1 not in positions, err[-2000:]
    assert positions == sorted(positions)  # training e=0, validation e=0, training e=1, ...
    assert f"training, e={EPOCHS}" not in err  # epochs count from 0


# -- students' own layers and the notebook's classes inside a fastprop Network --------------------

class StudentLinear(RefLinear, fastprop.Layer):
    """The reference Linear as a student subclasses fastprop.Layer: no super().__init__(), a
    one-argument backward, and NumPy conversions of what it is given."""

    def forward(self, x_in):
        return super().forward(np.asarray(x_in))

    def backward(self, d_out):
        return super().backward(np.asarray(d_out))


class StudentSigmoid(fastprop.Layer):
    """Only forward and backward: zero_gradients and update_parameters come from fastprop.Layer."""

    def __init__(self):
        self.x_in = None

    def forward(self, x_in):
        self.x_in = np.asarray(x_in)
        return ref_sigmoid(self.x_in)

    def backward(self, d_out):
        return np.asarray(d_out) * ref_sigmoid(self.x_in) * (1 - ref_sigmoid(self.x_in))


FOREIGN_MODELS = {
    "student_layers": lambda: [fastprop.Linear(784, 16), StudentSigmoid(), StudentLinear(16, 10),
                               fastprop.Sigmoid()],
    "notebook_classes": lambda: [RefLinear(784, 16), fastprop.Sigmoid(), fastprop.Linear(16, 10),
                                 RefSigmoid()],
}


@pytest.mark.parametrize("kind", list(FOREIGN_MODELS))
def test_foreign_layers_train_next_to_fastprop_layers(f64, kind, mnist, tmp_path):
    learning_rate = 1e-3
    np.random.seed(16)
    ref = RefNetwork([RefLinear(784, 16), RefSigmoid(), RefLinear(16, 10), RefSigmoid()])
    initial = [(layer.w.copy(), layer.b.copy()) for layer in linears(ref)]
    ref_costs, ref_accuracies = ref_train(ref, RefMSE(), EPOCHS, BATCH, learning_rate, mnist)

    np.random.seed(16)
    net = fastprop.Network(FOREIGN_MODELS[kind]())
    history = fastprop.train(net, fastprop.MeanSquareError(), EPOCHS, BATCH, learning_rate, quiet=True,
                             verbose=False)
    assert_same_history(history.cost, history.accuracy, ref_costs, ref_accuracies, f64, "float64",
                        N_FILE - N_TRAIN)
    assert_same_weights(net, ref, initial, f64, "float64")

    np.random.seed(16)
    net = fastprop.Network(FOREIGN_MODELS[kind]())
    costs, accuracies = ref_train(net, fastprop.MeanSquareError(), EPOCHS, BATCH, learning_rate, mnist)
    assert_same_history(costs, accuracies, ref_costs, ref_accuracies, f64, "float64", N_FILE - N_TRAIN)
    assert_same_weights(net, ref, initial, f64, "float64")

    foreign = next(layer for layer in net.layers if type(layer).__module__ == __name__)
    path = tmp_path / "net.npz"
    with pytest.raises(fastprop.CheckpointError, match=type(foreign).__name__):
        fastprop.save(net, path)
