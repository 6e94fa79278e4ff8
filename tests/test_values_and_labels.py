"""Values and hyper-parameters, labels, and costs computing on the network's backend.

* Every hyper-parameter is checked where it is given, in one sentence naming it.
* NumPy scalars are numbers (and NumPy bools are not).
* Data that does not fit the working dtype is refused at the boundary, not turned into inf/NaN.
* Degenerate shapes (zero rows, one row, batches larger than the data) keep their meaning.
* Labels as class ids (N,), (N, 1), float ids or one-hot rows mean the same thing everywhere;
  anything else, or a class outside [0, C), is one error naming the array.
* A cost computes on the backend of the network that made the prediction, whatever is current.
"""

from __future__ import annotations

import math
import warnings

import numpy
import pytest

import fastprop
from fastprop import (
    SGD, Adam, CrossEntropy, Dropout, Linear, MeanSquareError, Network, ReLU, Sigmoid, SoftMax,
    SoftmaxCrossEntropy, Tanh, gradcheck, predict, train, train_epoch, validate, validate_epoch,
)
from fastprop.backends import Backend, registry
from tests.conftest import AVAILABLE_BACKENDS

NAN, INF = float("nan"), float("inf")


def _problem(n_train=40, n_validation=20, n_in=6, n_classes=3, seed=0):
    """A small classification set: images, class ids, validation images, validation class ids."""
    rng = numpy.random.default_rng(seed)
    return (rng.random((n_train, n_in)), rng.integers(0, n_classes, n_train),
            rng.random((n_validation, n_in)), rng.integers(0, n_classes, n_validation))


def _one_hot(ids, n_classes=3):
    return numpy.eye(n_classes)[ids]


def _net(backend_name="numpy", dtype="float64", n_in=6, n_out=3, activation=Sigmoid):
    with fastprop.use_backend(backend_name, dtype):
        layers = [Linear(n_in, n_out, rng=1)]
        if activation is not None:
            layers.append(activation())
        return Network(layers)


def _parameters(net):
    return [numpy.array(parameter.value, copy=True) for parameter in net.parameters()]


def _run(backend_name, labels=None, validation_labels=None, *, cost=MeanSquareError, epochs=3,
         batch_size=7, learning_rate=0.5, dtype="float64", data=None, **options):
    """Train a fresh, identically initialised network; return ``(history, parameters)``."""
    x, y, vx, vy = _problem()
    if data is None:
        data = (x, _one_hot(y) if labels is None else labels, vx,
                _one_hot(vy) if validation_labels is None else validation_labels)
    net = _net(backend_name, dtype)
    history = train(net, cost(), epochs, batch_size, learning_rate, data=data, quiet=True, verbose=False,
                    **options)
    return history, _parameters(net)


def _same_run(first, second):
    (history_a, parameters_a), (history_b, parameters_b) = first, second
    assert history_a.cost == history_b.cost
    assert history_a.accuracy == history_b.accuracy
    assert len(parameters_a) == len(parameters_b)
    for a, b in zip(parameters_a, parameters_b):
        assert a.dtype == b.dtype and numpy.array_equal(a, b)


def _one_sentence(message, *words):
    """The message is one line naming every word in ``words``."""
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not named in: {message}"


# ===================================================================================================
# 1. Every hyper-parameter is validated where it is given, in one sentence naming it.

CONSTRUCTOR_CASES = [
    # (id, constructor call, words the message must hold)
    ("CrossEntropy eps=0", lambda: CrossEntropy(eps=0), ["CrossEntropy", "eps", "0"]),
    ("CrossEntropy eps<0", lambda: CrossEntropy(eps=-1e-12), ["CrossEntropy", "eps", "-1e-12"]),
    ("CrossEntropy eps=nan", lambda: CrossEntropy(eps=NAN), ["CrossEntropy", "eps", "nan"]),
    ("CrossEntropy eps=inf", lambda: CrossEntropy(eps=INF), ["CrossEntropy", "eps", "inf"]),
    ("Adam eps=0", lambda: Adam(0.1, eps=0), ["Adam", "eps"]),
    ("Adam eps<0", lambda: Adam(0.1, eps=-1e-8), ["Adam", "eps"]),
    ("Adam eps=nan", lambda: Adam(0.1, eps=NAN), ["Adam", "eps"]),
    ("Adam beta1=1", lambda: Adam(0.1, betas=(1.0, 0.999)), ["Adam", "betas[0]", "1.0"]),
    ("Adam beta1<0", lambda: Adam(0.1, betas=(-0.1, 0.999)), ["Adam", "betas[0]"]),
    ("Adam beta2=1", lambda: Adam(0.1, betas=(0.9, 1.0)), ["Adam", "betas[1]"]),
    ("Adam beta2>1", lambda: Adam(0.1, betas=(0.9, 1.5)), ["Adam", "betas[1]"]),
    ("Adam beta2=nan", lambda: Adam(0.1, betas=(0.9, NAN)), ["Adam", "betas[1]"]),
    ("Adam one beta", lambda: Adam(0.1, betas=(0.9,)), ["Adam", "betas"]),
    ("SGD momentum=1", lambda: SGD(0.1, momentum=1.0), ["SGD", "momentum", "1.0"]),
    ("SGD momentum<0", lambda: SGD(0.1, momentum=-0.1), ["SGD", "momentum"]),
    ("SGD momentum>1", lambda: SGD(0.1, momentum=1.5), ["SGD", "momentum"]),
    ("SGD momentum=nan", lambda: SGD(0.1, momentum=NAN), ["SGD", "momentum"]),
    ("SGD rate=0", lambda: SGD(0), ["SGD", "learning_rate"]),
    ("SGD rate<0", lambda: SGD(-0.1), ["SGD", "learning_rate"]),
    ("SGD rate=nan", lambda: SGD(NAN), ["SGD", "learning_rate"]),
    ("SGD rate=inf", lambda: SGD(INF), ["SGD", "learning_rate"]),
    ("Adam rate=0", lambda: Adam(0.0), ["Adam", "learning_rate"]),
    ("Adam rate<0", lambda: Adam(-1e-3), ["Adam", "learning_rate"]),
    ("Adam rate=inf", lambda: Adam(INF), ["Adam", "learning_rate"]),
    ("SGD weight_decay<0", lambda: SGD(0.1, weight_decay=-1), ["SGD", "weight_decay"]),
    ("Adam weight_decay<0", lambda: Adam(0.1, weight_decay=-1), ["Adam", "weight_decay"]),
    ("Dropout 1.0", lambda: Dropout(1.0), ["Dropout", "rate", "1.0"]),
    ("Dropout -0.1", lambda: Dropout(-0.1), ["Dropout", "rate", "-0.1"]),
    ("Dropout nan", lambda: Dropout(NAN), ["Dropout", "rate"]),
    ("MeanSquareError avg", lambda: MeanSquareError(reduction="avg"),
     ["MeanSquareError", "reduction", "'avg'"]),
    ("CrossEntropy avg", lambda: CrossEntropy(reduction="avg"), ["CrossEntropy", "reduction", "'avg'"]),
    ("SoftmaxCrossEntropy avg", lambda: SoftmaxCrossEntropy(reduction="avg"),
     ["SoftmaxCrossEntropy", "reduction", "'avg'"]),
]


@pytest.mark.parametrize("make, words", [case[1:] for case in CONSTRUCTOR_CASES],
                         ids=[case[0] for case in CONSTRUCTOR_CASES])
def test_a_bad_hyper_parameter_is_refused_where_it_is_given(make, words):
    with pytest.raises(ValueError) as caught:
        make()
    _one_sentence(str(caught.value), *words)


def test_cross_entropy_keeps_a_valid_eps_as_a_float():
    assert CrossEntropy().eps == 1e-12
    cost = CrossEntropy(eps=numpy.float32(1e-7))
    assert type(cost.eps) is float and cost.eps == float(numpy.float32(1e-7))


TRAIN_CASES = [
    ("learning_rate=0", dict(learning_rate=0), ["learning_rate", "0"]),
    ("learning_rate<0", dict(learning_rate=-0.1), ["learning_rate", "-0.1"]),
    ("learning_rate=nan", dict(learning_rate=NAN), ["learning_rate", "nan"]),
    ("learning_rate=inf", dict(learning_rate=INF), ["learning_rate", "inf"]),
    ("learning_rate='0.1'", dict(learning_rate="0.1"), ["learning_rate"]),
    ("patience=0", dict(patience=0), ["patience", "0"]),
    ("patience=1.5", dict(patience=1.5), ["patience", "1.5"]),
    ("patience=-1", dict(patience=-1), ["patience"]),
    ("number_epochs=0", dict(number_epochs=0), ["number_epochs"]),
    ("number_epochs=2.0", dict(number_epochs=2.0), ["number_epochs"]),
    ("batch_size=0", dict(batch_size=0), ["batch_size"]),
    ("batch_size=1.5", dict(batch_size=1.5), ["batch_size"]),
]


@pytest.mark.parametrize("bad, words", [case[1:] for case in TRAIN_CASES],
                         ids=[case[0] for case in TRAIN_CASES])
def test_train_refuses_a_bad_hyper_parameter_before_loading_or_training(bad, words):
    arguments = dict(number_epochs=2, batch_size=7, learning_rate=0.1)
    arguments.update(bad)
    options = {"patience": arguments.pop("patience")} if "patience" in arguments else {}
    net = _net()
    before = _parameters(net)
    # No data: train would load a dataset that does not exist; the argument must be refused first.
    with pytest.raises(ValueError) as caught:
        train(net, MeanSquareError(), arguments["number_epochs"], arguments["batch_size"],
              arguments["learning_rate"], dataset="no-such-dataset", quiet=True, verbose=False, **options)
    _one_sentence(str(caught.value), "train", *words)
    assert "no-such-dataset" not in str(caught.value)
    for a, b in zip(before, _parameters(net)):
        assert numpy.array_equal(a, b)


@pytest.mark.parametrize("rate", [0, -0.5, NAN, INF])
def test_train_epoch_refuses_a_bad_learning_rate(rate):
    x, y, _, _ = _problem()
    with pytest.raises(ValueError, match="learning_rate"):
        train_epoch(0, _net(), x, _one_hot(y), MeanSquareError(), 7, rate, quiet=True)


@pytest.mark.parametrize("factor", [-1.0, NAN, INF, "1"])
def test_a_schedule_giving_a_bad_factor_is_named(factor):
    with pytest.raises(ValueError, match="schedule") as caught:
        _run("numpy", epochs=1, schedule=lambda epoch: factor)
    _one_sentence(str(caught.value), "epoch 1")


# ===================================================================================================
# 2. NumPy scalars are numbers; NumPy bools are not.


def test_a_numpy_float32_learning_rate_trains_as_the_same_value_cast_to_float(backend_name):
    rate = numpy.float32(0.1)
    _same_run(_run(backend_name, learning_rate=rate), _run(backend_name, learning_rate=float(rate)))


@pytest.mark.parametrize("factor", [numpy.float32(0.5), numpy.float64(0.5), numpy.int64(1)],
                         ids=["float32", "float64", "int64"])
def test_a_schedule_may_return_a_numpy_scalar(backend_name, factor):
    _same_run(_run(backend_name, schedule=lambda epoch: factor),
              _run(backend_name, schedule=lambda epoch: float(factor)))


def test_numpy_integers_count_epochs_batches_and_patience(backend_name):
    reference = _run(backend_name, epochs=4, batch_size=9, patience=2)
    numpy_scalars = _run(backend_name, epochs=numpy.int64(4), batch_size=numpy.int32(9),
                         patience=numpy.int64(2))
    _same_run(numpy_scalars, reference)
    # patience=2 stops at the first epoch two past the best one, else after all 4 epochs
    accuracies, best, stop = numpy_scalars[0].accuracy, (-1.0, 0), 4
    for epoch, accuracy in enumerate(accuracies, start=1):
        if accuracy > best[0]:
            best = (accuracy, epoch)
        elif epoch - best[1] >= 2:
            stop = epoch
            break
    assert len(accuracies) == stop
    history, _ = _run(backend_name, epochs=numpy.int64(2), batch_size=numpy.int32(50))
    assert len(history.cost) == 2 and len(history.accuracy) == 2


def test_optimizers_take_numpy_scalars_as_python_floats(backend_name):
    adam = Adam(numpy.float32(0.1), betas=(numpy.float32(0.9), numpy.float64(0.99)), eps=numpy.float32(1e-7))
    assert type(adam.learning_rate) is float and adam.learning_rate == float(numpy.float32(0.1))
    assert adam.betas == (float(numpy.float32(0.9)), 0.99) and all(type(beta) is float for beta in adam.betas)
    sgd = SGD(numpy.float64(0.1), momentum=numpy.float32(0.9))
    assert type(sgd.learning_rate) is float and sgd.learning_rate == 0.1
    assert type(sgd.momentum) is float and sgd.momentum == float(numpy.float32(0.9))

    with_numpy = _run(backend_name, learning_rate=None,
                      optimizer=SGD(numpy.float64(0.1), momentum=numpy.float32(0.9)))
    with_python = _run(backend_name, learning_rate=None,
                       optimizer=SGD(0.1, momentum=float(numpy.float32(0.9))))
    _same_run(with_numpy, with_python)
    with_numpy = _run(backend_name, learning_rate=None, optimizer=Adam(numpy.float32(0.01)))
    with_python = _run(backend_name, learning_rate=None, optimizer=Adam(float(numpy.float32(0.01))))
    _same_run(with_numpy, with_python)


def test_dropout_takes_a_numpy_rate():
    layer = Dropout(numpy.float32(0.25))
    assert type(layer.rate) is float and layer.rate == 0.25


NUMPY_BOOL_CASES = [
    ("train learning_rate", lambda: _run("numpy", learning_rate=numpy.True_), "learning_rate"),
    ("train number_epochs", lambda: _run("numpy", epochs=numpy.True_), "number_epochs"),
    ("train batch_size", lambda: _run("numpy", batch_size=numpy.True_), "batch_size"),
    ("train patience", lambda: _run("numpy", patience=numpy.True_), "patience"),
    ("train seed", lambda: _run("numpy", shuffle=True, seed=numpy.True_), "seed"),
    ("train schedule", lambda: _run("numpy", schedule=lambda epoch: numpy.True_), "schedule"),
    ("train python bool rate", lambda: _run("numpy", learning_rate=True), "learning_rate"),
    ("SGD learning_rate", lambda: SGD(numpy.True_), "learning_rate"),
    ("SGD momentum", lambda: SGD(0.1, momentum=numpy.False_), "momentum"),
    ("Adam learning_rate", lambda: Adam(numpy.True_), "learning_rate"),
    ("Adam eps", lambda: Adam(0.1, eps=numpy.True_), "eps"),
    ("Adam betas", lambda: Adam(0.1, betas=(numpy.False_, 0.999)), "betas[0]"),
    ("CrossEntropy eps", lambda: CrossEntropy(eps=numpy.True_), "eps"),
    ("Dropout rate", lambda: Dropout(numpy.False_), "rate"),
]


@pytest.mark.parametrize("make, word", [case[1:] for case in NUMPY_BOOL_CASES],
                         ids=[case[0] for case in NUMPY_BOOL_CASES])
def test_numpy_bools_are_not_numbers(make, word):
    with pytest.raises(ValueError) as caught:
        make()
    _one_sentence(str(caught.value), word)


# ===================================================================================================
# 3. Data that does not fit the working dtype is refused at the boundary.


@pytest.mark.parametrize("value", [1e100, -1e100])
def test_softmax_refuses_float32_overflow_instead_of_returning_nan(backend_name, value):
    with fastprop.use_backend(backend_name, "float32"):
        layer = SoftMax()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy cast warning on the way: the refusal comes first
        with pytest.raises(ValueError) as caught:
            layer.forward([[1, 1, value]])
    _one_sentence(str(caught.value), "SoftMax", "float32", "1e+100")
    assert layer.x_out is None  # nothing was computed


def test_the_same_softmax_in_float64_works(backend_name):
    with fastprop.use_backend(backend_name, "float64"):
        layer = SoftMax()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = numpy.asarray(layer.forward([[1, 1, 1e100]]))
    assert output.dtype == numpy.float64 and numpy.isfinite(output).all()
    assert numpy.array_equal(output, [[0.0, 0.0, 1.0]])


def test_linear_refuses_a_float64_input_beyond_float32(backend_name):
    with fastprop.use_backend(backend_name, "float32"):
        layer = Linear(3, 2, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as caught:
            layer.forward(numpy.array([[1e300, 0, 0]]))
    _one_sentence(str(caught.value), "Linear(3, 2)", "float32")
    with fastprop.use_backend(backend_name, "float64"):
        layer = Linear(3, 2, rng=0)
    assert numpy.asarray(layer.forward(numpy.array([[1e300, 0, 0]]))).shape == (1, 2)


def test_infinities_already_in_the_data_are_not_overflow(backend_name):
    """An inf in the data is a value, not a failed conversion: SoftMax leaves it to the math."""
    with fastprop.use_backend(backend_name, "float32"):
        layer = SoftMax()
    for data in (numpy.array([[1, 1, numpy.inf]], numpy.float32), numpy.array([[1, 1, -numpy.inf]])):
        with numpy.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = layer.forward(data)  # no ValueError
        assert output.shape == (1, 3) and output.dtype == numpy.float32
    assert numpy.array_equal(numpy.asarray(output), numpy.array([[0.5, 0.5, 0.0]], numpy.float32))


def test_a_cost_target_beyond_float32_is_refused():
    prediction = numpy.zeros((1, 2), numpy.float32)
    with pytest.raises(ValueError) as caught:
        MeanSquareError().estimate([[1e100, 0.0]], prediction)
    _one_sentence(str(caught.value), "MeanSquareError", "target", "float32")


def test_train_refuses_images_beyond_float32_before_training(backend_name):
    x, y, vx, vy = _problem()
    net = _net(backend_name, "float32")
    before = _parameters(net)
    big = x.copy()
    big[5, 2] = 1e300
    for data, name in (((big, y, vx, vy), "training images"), ((x, y, big[:20], vy), "validation images")):
        with pytest.raises(ValueError) as caught:
            train(net, MeanSquareError(), 1, 7, 0.1, data=data, quiet=True, verbose=False)
        _one_sentence(str(caught.value), name, "float32")
        for a, b in zip(before, _parameters(net)):
            assert numpy.array_equal(a, b)


# ===================================================================================================
# 4. Degenerate shapes keep their meaning: zero rows, one row, batches larger than the data.

DTYPES = ["float32", "float64"]

LAYERS = {
    "Linear": (lambda: Linear(4, 3, rng=0), 4, 3),
    "Sigmoid": (Sigmoid, 3, 3),
    "ReLU": (ReLU, 3, 3),
    "Tanh": (Tanh, 3, 3),
    "SoftMax": (SoftMax, 3, 3),
    "Network[Linear, Sigmoid] fused": (lambda: Network([Linear(4, 3, rng=0), Sigmoid()]), 4, 3),
    "Network[Linear, Sigmoid] unfused": (lambda: Network([Linear(4, 3, rng=0), Sigmoid()], fuse=False), 4, 3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_layers_on_zero_and_one_rows_give_what_n_rows_give(backend_name, dtype, layer_name):
    make, n_in, n_out = LAYERS[layer_name]
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((5, n_in))
    d_out = rng.standard_normal((5, n_out))
    with fastprop.use_backend(backend_name, dtype):
        reference = make()
        layers = {n: make() for n in (0, 1)}
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    reference.zero_gradients()
    y5 = reference.forward(x)
    dx5 = reference.backward(d_out)
    assert y5.shape == (5, n_out) and dx5.shape == (5, n_in)
    for n, layer in layers.items():
        layer.zero_gradients()
        y = layer.forward(x[:n])
        assert type(y) is type(y5) and y.dtype == y5.dtype == numpy.dtype(dtype)
        assert y.shape == (n, n_out)
        dx = layer.backward(d_out[:n])
        assert type(dx) is type(dx5) and dx.dtype == dx5.dtype and dx.shape == (n, n_in)
        if n == 1:  # one row gives the first row of the N-row result
            numpy.testing.assert_allclose(numpy.asarray(y), numpy.asarray(y5)[:1],
                                          rtol=tolerance, atol=tolerance)
            numpy.testing.assert_allclose(numpy.asarray(dx), numpy.asarray(dx5)[:1],
                                          rtol=1e-5, atol=tolerance)
        for parameter, reference_parameter in zip(layer.parameters(), reference.parameters()):
            gradient = numpy.asarray(parameter.gradient)
            assert gradient.shape == reference_parameter.gradient.shape
            assert gradient.dtype == reference_parameter.gradient.dtype
            if n == 0:  # a sum over no rows is zero, not NaN and not stale
                assert numpy.array_equal(gradient, numpy.zeros_like(gradient))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_gradient_of_one_row_is_the_outer_product(backend_name, dtype):
    x = numpy.array([[1.0, -2.0, 0.5, 3.0]])
    d = numpy.array([[0.25, -1.0, 2.0]])
    with fastprop.use_backend(backend_name, dtype):
        layer = Linear(4, 3, rng=0)
    layer.zero_gradients()
    layer.forward(x[0])  # one 1-D sample is one row
    assert layer.x_in.shape == (1, 4)
    layer.backward(d)
    numpy.testing.assert_allclose(numpy.asarray(layer.dw), d.T @ x, rtol=1e-6)
    numpy.testing.assert_allclose(numpy.asarray(layer.db), d, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("cost_class", [MeanSquareError, CrossEntropy, SoftmaxCrossEntropy])
def test_costs_on_zero_and_one_rows_give_what_n_rows_give(backend_name, dtype, reduction, cost_class):
    rng = numpy.random.default_rng(4)
    x = rng.random((5, 4))
    target = _one_hot(rng.integers(0, 3, 5))
    results = {}
    for n in (5, 1, 0):
        with fastprop.use_backend(backend_name, dtype):
            net = Network([Linear(4, 3, rng=0), Sigmoid()])
        cost = cost_class(reduction=reduction)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no division by zero rows, no NaN
            prediction = net.forward(x[:n])
            per_element = cost.estimate(target[:n], prediction)
            gradient = cost.gradient(per_element)
            d_in = net.backward(gradient)
        for array, shape in ((prediction, (n, 3)), (per_element, (n, 3)), (gradient, (n, 3)), (d_in, (n, 4))):
            assert type(array) is type(prediction)
            assert array.shape == shape and array.dtype == numpy.dtype(dtype)
        gradients = [numpy.asarray(p.gradient) for p in net.parameters()]
        assert all(numpy.isfinite(g).all() for g in gradients)
        if n == 0:
            assert all(not g.any() for g in gradients)
        results[n] = [numpy.asarray(a) for a in (per_element, gradient, d_in)]
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    scale = 5.0 if reduction == "mean" else 1.0  # the mean over 1 row is that row; over 5 rows, a fifth
    for one, five in zip(results[1], results[5]):
        numpy.testing.assert_allclose(one, five[:1] * scale, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_and_validate_on_zero_rows(backend_name, dtype):
    with fastprop.use_backend(backend_name, dtype):
        net = Network([Linear(784, 10, rng=0), Sigmoid()])
    outputs = predict(net, numpy.zeros((0, 784)))
    assert type(outputs) is numpy.ndarray and outputs.shape == (0, 10) and outputs.dtype == numpy.dtype(dtype)
    assert predict(net, numpy.zeros((3, 784))).shape == (3, 10)
    for labels in (
        numpy.zeros((0, 10)), numpy.zeros((0,), numpy.int64), numpy.zeros((0, 1), numpy.uint8), []
    ):
        accuracy = validate(net, numpy.zeros((0, 784)), labels)
        assert type(accuracy) is float and accuracy == 0.0
    assert validate_epoch(0, net, numpy.zeros((0, 784)), numpy.zeros((0, 10)), 600, quiet=True) == 0.0


def test_predict_of_one_sample_does_not_depend_on_the_batch_size(backend_name):
    """One 1-D sample is one row, as Linear.forward treats it, whatever batch size predict uses."""
    with fastprop.use_backend(backend_name, "float64"):
        net = Network([Linear(784, 10, rng=0), Sigmoid()])
    sample = numpy.random.default_rng(0).random(784)
    expected = predict(net, sample[None, :])
    for batch_size in (10000, 784, 100, 1):
        outputs = predict(net, sample, batch_size=batch_size)
        assert outputs.shape == (1, 10), batch_size
        numpy.testing.assert_array_equal(outputs, expected)


@pytest.mark.parametrize("cost", [MeanSquareError, SoftmaxCrossEntropy])
def test_a_batch_larger_than_the_data_is_one_batch_of_every_row(backend_name, cost):
    exact = _run(backend_name, cost=cost, batch_size=40)
    for batch_size in (41, 1000):
        _same_run(_run(backend_name, cost=cost, batch_size=batch_size), exact)

    # The epoch's figure is the mean cost per element over the 40 rows, not over 1000.
    x, y, _, _ = _problem()
    net = _net(backend_name)
    prediction = predict(net, x)
    expected = float(numpy.mean(0.5 * (_one_hot(y) - prediction) ** 2))
    figure = train_epoch(0, net, x, _one_hot(y), MeanSquareError(), 1000, 0.5, quiet=True)
    assert math.isclose(figure, expected, rel_tol=1e-12)


def test_a_batch_larger_than_the_data_runs_one_step_per_epoch(backend_name):
    class CountingMeanSquareError(MeanSquareError):
        shapes = []

        def estimate(self, target, prediction):
            self.shapes.append(tuple(prediction.shape))
            return super().estimate(target, prediction)

    x, y, vx, vy = _problem()
    counting = CountingMeanSquareError()
    net = _net(backend_name)
    train(net, counting, 3, 1000, 0.5, data=(x, _one_hot(y), vx, _one_hot(vy)), quiet=True, verbose=False)
    assert counting.shapes == [(40, 3)] * 3


def test_one_training_row_and_an_empty_validation_set(backend_name):
    x, y, vx, vy = _problem()
    history, _ = _run(backend_name, data=(x[:1], y[:1], vx[:0], vy[:0]), batch_size=600)
    assert len(history.cost) == 3 and all(math.isfinite(cost) for cost in history.cost)
    assert history.accuracy == [0.0, 0.0, 0.0]
    history, _ = _run(backend_name, data=(x[:1], y[:1], vx[:1], vy[:1]), batch_size=600)
    assert all(accuracy in (0.0, 1.0) for accuracy in history.accuracy)


# ===================================================================================================
# 5. Labels: ids (N,), (N, 1), float ids and one-hot rows mean the same; anything else is refused.


def _half_right(n=100, n_classes=3):
    """Images whose argmax is ``i % 3`` and class ids right on even rows only: through a network of
    identity weights the true accuracy is exactly 0.5. Returns ``(images, class ids)``."""
    predicted = numpy.arange(n) % n_classes
    images = numpy.eye(n_classes)[predicted]
    labels = numpy.where(numpy.arange(n) % 2 == 0, predicted, (predicted + 1) % n_classes)
    return images, labels


LABEL_FORMS = {
    "ids int64 (N,)": lambda ids: ids.astype(numpy.int64),
    "ids uint8 (N,)": lambda ids: ids.astype(numpy.uint8),
    "ids int32 (N, 1)": lambda ids: ids.astype(numpy.int32)[:, None],
    "ids int64 (N, 1)": lambda ids: ids[:, None],
    "float ids (N,)": lambda ids: ids.astype(numpy.float64),
    "float32 ids (N, 1)": lambda ids: ids.astype(numpy.float32)[:, None],
    "one-hot float (N, C)": lambda ids: _one_hot(ids),
    "one-hot uint8 (N, C)": lambda ids: _one_hot(ids).astype(numpy.uint8),
    "list of ints": lambda ids: [int(i) for i in ids],
}


@pytest.mark.parametrize("form", list(LABEL_FORMS))
def test_validate_gives_the_true_accuracy_for_every_label_form(backend_name, form):
    images, ids = _half_right()
    net = _net(backend_name, activation=None, n_in=3)
    net.layers[0].w = numpy.eye(3)
    labels = LABEL_FORMS[form](ids)
    for batch_size in (600, 30, 1):  # batches that do and do not divide the 100 rows
        assert validate(net, images, labels, batch_size) == 0.5
    assert validate_epoch(0, net, images, labels, 30, quiet=True) == 0.5


@pytest.mark.parametrize("labels, bad", [(lambda ids: ids + 1, 3), (lambda ids: ids - 1, -1),
                                         (lambda ids: (ids + 1)[:, None], 3),
                                         (lambda ids: (ids + 1).astype(float), 3)],
                         ids=["1..3", "-1..1", "1..3 (N, 1)", "1.0..3.0"])
def test_validate_refuses_class_ids_outside_the_outputs(backend_name, labels, bad):
    images, ids = _half_right()
    net = _net(backend_name, activation=None, n_in=3)
    with pytest.raises(ValueError) as caught:
        validate(net, images, labels(ids))
    _one_sentence(str(caught.value), "validation labels", f"class {bad}", "[0, 3)")


@pytest.mark.parametrize("labels, words", [
    (numpy.zeros((100, 5)), ["validation labels", "(100, 5)", "3 outputs"]),
    (numpy.zeros((100, 2)), ["validation labels", "(100, 2)"]),
    (numpy.zeros((100, 3, 1)), ["validation labels", "(100, 3, 1)"]),
    (numpy.full(100, 0.5), ["validation labels", "whole number"]),
    (numpy.full(100, numpy.nan), ["validation labels"]),
    (numpy.array(["a"] * 100), ["validation labels", "dtype"]),
], ids=["(N, 5)", "(N, 2)", "(N, 3, 1)", "0.5", "nan", "strings"])
def test_validate_refuses_labels_of_another_form(labels, words):
    images, _ = _half_right()
    net = _net(activation=None, n_in=3)
    with pytest.raises(ValueError) as caught:
        validate(net, images, labels)
    _one_sentence(str(caught.value), *words)


@pytest.mark.parametrize("cost", [MeanSquareError, SoftmaxCrossEntropy])
def test_train_takes_class_ids_exactly_as_one_hot_rows(backend_name, cost):
    _, y, _, vy = _problem()
    one_hot = _run(backend_name, _one_hot(y), _one_hot(vy), cost=cost)
    for form in ("ids int64 (N,)", "ids uint8 (N,)", "ids int64 (N, 1)", "float ids (N,)"):
        convert = LABEL_FORMS[form]
        _same_run(_run(backend_name, convert(y), convert(vy), cost=cost), one_hot)
    _same_run(_run(backend_name, y, _one_hot(vy), cost=cost), one_hot)
    _same_run(_run(backend_name, _one_hot(y), vy[:, None], cost=cost), one_hot)


def test_train_epoch_takes_class_ids_exactly_as_one_hot_rows(backend_name):
    x, y, _, _ = _problem()
    figures, parameters = [], []
    for labels in (_one_hot(y), y, y[:, None]):
        net = _net(backend_name)
        figures.append(train_epoch(0, net, x, labels, MeanSquareError(), 7, 0.5, quiet=True))
        parameters.append(_parameters(net))
    assert figures[0] == figures[1] == figures[2]
    for other in parameters[1:]:
        assert all(numpy.array_equal(a, b) for a, b in zip(parameters[0], other))


@pytest.mark.parametrize("shift, bad", [(1, 3), (-1, -1)])
def test_train_refuses_training_class_ids_outside_the_outputs_before_training(backend_name, shift, bad):
    x, y, vx, vy = _problem()
    net = _net(backend_name)
    before = _parameters(net)
    for labels in (y + shift, (y + shift)[:, None]):
        with pytest.raises(ValueError) as caught:
            train(net, MeanSquareError(), 2, 7, 0.5, data=(x, labels, vx, vy), quiet=True, verbose=False)
        _one_sentence(str(caught.value), "training labels", f"class {bad}", "[0, 3)")
        assert all(numpy.array_equal(a, b) for a, b in zip(before, _parameters(net)))


def test_train_refuses_training_labels_of_the_wrong_width_naming_them(backend_name):
    """(N, 5) labels for a 3-output network are neither class ids nor one-hot rows: one error naming
    "training labels" at the boundary (not the cost's complaint about a target batch)."""
    x, _, vx, vy = _problem()
    net = _net(backend_name)
    before = _parameters(net)
    with pytest.raises(ValueError) as caught:
        train(net, MeanSquareError(), 2, 7, 0.5, data=(x, numpy.zeros((40, 5)), vx, vy), quiet=True,
              verbose=False)
    _one_sentence(str(caught.value), "training labels", "(40, 5)")
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _parameters(net)))


@pytest.mark.parametrize("labels, words", [
    (lambda vy: vy + 1, ["validation labels", "class 3"]),
    (lambda vy: numpy.zeros((20, 5)), ["validation labels", "(20, 5)"]),
], ids=["class 3", "(N, 5)"])
def test_train_refuses_bad_validation_labels_before_training(backend_name, labels, words):
    """Validation labels are data given to train: checked at the boundary, before the first epoch
    changes the network (today they are checked by the first validation, after an epoch of training)."""
    x, y, vx, vy = _problem()
    net = _net(backend_name)
    before = _parameters(net)
    with pytest.raises(ValueError) as caught:
        train(net, MeanSquareError(), 2, 7, 0.5, data=(x, y, vx, labels(vy)), quiet=True, verbose=False)
    _one_sentence(str(caught.value), *words)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, _parameters(net))), \
        "the network was trained before the validation labels were refused"


# ===================================================================================================
# 6. A cost computes on the backend of the network that made the prediction.


class _Calls(dict):
    def reset(self):
        self.update(estimate=0, gradient=0)


@pytest.fixture
def spy(monkeypatch):
    """A backend "spy": the NumPy reference whose softmax cross-entropy kernels count their calls."""
    for table in ("_factories", "_instances", "_failures"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    calls = _Calls()
    calls.reset()

    class Spy(Backend):
        def softmax_cross_entropy(self, z, t):
            calls["estimate"] += 1
            return super().softmax_cross_entropy(z, t)

        def softmax_cross_entropy_gradient(self, z, t):
            calls["gradient"] += 1
            return super().softmax_cross_entropy_gradient(z, t)

    fastprop.register_backend("spy", Spy)
    yield calls


def test_train_computes_the_cost_on_the_network_backend_outside_any_block(spy):
    with fastprop.use_backend("spy"):
        net = Network([Linear(6, 3, rng=1)])
    assert net.backend is registry.load_backend("spy")
    assert fastprop.get_backend().name == "numpy"  # outside the block
    x, y, vx, vy = _problem()
    batches = math.ceil(len(x) / 7)
    train(net, SoftmaxCrossEntropy(), 2, 7, 0.1, data=(x, _one_hot(y), vx, _one_hot(vy)), quiet=True,
          verbose=False)
    assert spy == {"estimate": 2 * batches, "gradient": 2 * batches}

    spy.reset()
    train_epoch(0, net, x, _one_hot(y), SoftmaxCrossEntropy(), 7, 0.1, quiet=True)
    assert spy == {"estimate": batches, "gradient": batches}

    spy.reset()
    with fastprop.use_backend("numpy", "float64"):  # another backend current: still the network's
        train(net, SoftmaxCrossEntropy(reduction="mean"), 1, 1000, 0.1,
              data=(x, _one_hot(y), vx, _one_hot(vy)), quiet=True, verbose=False)
    assert spy == {"estimate": 1, "gradient": 1}
    assert fastprop.get_backend().name == "numpy" and fastprop.get_dtype() == numpy.float32


def test_gradcheck_computes_the_cost_on_the_network_backend(spy):
    with fastprop.use_backend("spy"):
        net = Network([Linear(6, 3, rng=1)])
    x, y, _, _ = _problem()
    max_entries = 5
    result = gradcheck(net, SoftmaxCrossEntropy(), x[:4], _one_hot(y[:4]), max_entries=max_entries)
    assert result.passed(1e-6)
    perturbed = sum(min(size, max_entries) for size in (3 * 6, 3, 4 * 6))  # w, b, input
    assert spy == {"estimate": 1 + 2 * perturbed, "gradient": 1}


BACKEND_PAIRS = [
    (net, current) for net in AVAILABLE_BACKENDS for current in AVAILABLE_BACKENDS if net != current
]


@pytest.mark.skipif(not BACKEND_PAIRS, reason="needs two available backends")
@pytest.mark.parametrize("backend_name, current", BACKEND_PAIRS or [("numpy", "numpy")],
                         ids=[f"{net} net, {current} current" for net, current in BACKEND_PAIRS] or ["none"])
def test_only_the_network_backend_kernels_run_whatever_backend_is_current(backend_name, current, monkeypatch):
    """The issue's case: a Numba network trained while NumPy is current (and the reverse)."""
    counts = {}
    for name in AVAILABLE_BACKENDS:
        instance = registry.load_backend(name)
        for kernel in ("softmax_cross_entropy", "softmax_cross_entropy_gradient"):
            original = getattr(instance, kernel)

            def counted(*arguments, _original=original, _key=(name, kernel), **keywords):
                counts[_key] = counts.get(_key, 0) + 1
                return _original(*arguments, **keywords)

            monkeypatch.setattr(instance, kernel, counted)
    with fastprop.use_backend(backend_name):
        net = Network([Linear(6, 3, rng=1)])
    x, y, vx, vy = _problem()
    with fastprop.use_backend(current):
        train(net, SoftmaxCrossEntropy(), 2, 10, 0.1, data=(x, _one_hot(y), vx, _one_hot(vy)), quiet=True,
              verbose=False)
    assert counts == {
        (backend_name, "softmax_cross_entropy"): 8,
        (backend_name, "softmax_cross_entropy_gradient"): 8,
    }
