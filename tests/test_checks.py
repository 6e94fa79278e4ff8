"""The number checks every public entry point makes (``fastprop.checks``): a bad hyper-parameter is
refused where it is given, in one sentence naming it; NumPy scalars are numbers and NumPy bools are
not; the evaluation functions check and name their batch size and epoch number."""

from __future__ import annotations

import numpy
import pytest

from fastprop import (
    SGD, Adam, CrossEntropy, Dropout, Linear, MeanSquareError, Network, Sigmoid, SoftmaxCrossEntropy,
    predict, train_epoch, validate, validate_epoch,
)
from tests.conftest import separable_problem
from tests.helpers import (
    INF, NAN, assert_one_sentence, assert_same_run, host_values, train_small_problem,
)


# -- every hyper-parameter is validated where it is given, in one sentence naming it ---------------


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
    assert_one_sentence(str(caught.value), *words)


def test_cross_entropy_keeps_a_valid_eps_as_a_float():
    assert CrossEntropy().eps == 1e-12
    cost = CrossEntropy(eps=numpy.float32(1e-7))
    assert type(cost.eps) is float and cost.eps == float(numpy.float32(1e-7))


# -- NumPy scalars are numbers; NumPy bools are not ------------------------------------------------


def test_a_numpy_float32_learning_rate_trains_as_the_same_value_cast_to_float(backend_name):
    rate = numpy.float32(0.1)
    assert_same_run(train_small_problem(backend_name, learning_rate=rate),
                    train_small_problem(backend_name, learning_rate=float(rate)))


@pytest.mark.parametrize("factor", [numpy.float32(0.5), numpy.float64(0.5), numpy.int64(1)],
                         ids=["float32", "float64", "int64"])
def test_a_schedule_may_return_a_numpy_scalar(backend_name, factor):
    assert_same_run(train_small_problem(backend_name, schedule=lambda epoch: factor),
              train_small_problem(backend_name, schedule=lambda epoch: float(factor)))


def test_numpy_integers_count_epochs_batches_and_patience(backend_name):
    reference = train_small_problem(backend_name, epochs=4, batch_size=9, patience=2)
    numpy_scalars = train_small_problem(backend_name, epochs=numpy.int64(4), batch_size=numpy.int32(9),
                         patience=numpy.int64(2))
    assert_same_run(numpy_scalars, reference)
    # patience=2 stops at the first epoch two past the best one, else after all 4 epochs
    accuracies, best, stop = numpy_scalars[0].accuracy, (-1.0, 0), 4
    for epoch, accuracy in enumerate(accuracies, start=1):
        if accuracy > best[0]:
            best = (accuracy, epoch)
        elif epoch - best[1] >= 2:
            stop = epoch
            break
    assert len(accuracies) == stop
    history, _ = train_small_problem(backend_name, epochs=numpy.int64(2), batch_size=numpy.int32(50))
    assert len(history.cost) == 2 and len(history.accuracy) == 2


def test_optimizers_take_numpy_scalars_as_python_floats(backend_name):
    adam = Adam(numpy.float32(0.1), betas=(numpy.float32(0.9), numpy.float64(0.99)), eps=numpy.float32(1e-7))
    assert type(adam.learning_rate) is float and adam.learning_rate == float(numpy.float32(0.1))
    assert adam.betas == (float(numpy.float32(0.9)), 0.99) and all(type(beta) is float for beta in adam.betas)
    sgd = SGD(numpy.float64(0.1), momentum=numpy.float32(0.9))
    assert type(sgd.learning_rate) is float and sgd.learning_rate == 0.1
    assert type(sgd.momentum) is float and sgd.momentum == float(numpy.float32(0.9))

    with_numpy = train_small_problem(backend_name, learning_rate=None,
                      optimizer=SGD(numpy.float64(0.1), momentum=numpy.float32(0.9)))
    with_python = train_small_problem(backend_name, learning_rate=None,
                       optimizer=SGD(0.1, momentum=float(numpy.float32(0.9))))
    assert_same_run(with_numpy, with_python)
    with_numpy = train_small_problem(backend_name, learning_rate=None, optimizer=Adam(numpy.float32(0.01)))
    with_python = train_small_problem(backend_name, learning_rate=None,
                                      optimizer=Adam(float(numpy.float32(0.01))))
    assert_same_run(with_numpy, with_python)


def test_dropout_takes_a_numpy_rate():
    layer = Dropout(numpy.float32(0.25))
    assert type(layer.rate) is float and layer.rate == 0.25


NUMPY_BOOL_CASES = [
    ("train learning_rate", lambda: train_small_problem("numpy", learning_rate=numpy.True_), "learning_rate"),
    ("train number_epochs", lambda: train_small_problem("numpy", epochs=numpy.True_), "number_epochs"),
    ("train batch_size", lambda: train_small_problem("numpy", batch_size=numpy.True_), "batch_size"),
    ("train patience", lambda: train_small_problem("numpy", patience=numpy.True_), "patience"),
    ("train seed", lambda: train_small_problem("numpy", shuffle=True, seed=numpy.True_), "seed"),
    ("train schedule", lambda: train_small_problem("numpy", schedule=lambda epoch: numpy.True_), "schedule"),
    ("train python bool rate", lambda: train_small_problem("numpy", learning_rate=True), "learning_rate"),
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
    assert_one_sentence(str(caught.value), word)


# -- every evaluation function's batch size and epoch number are checked and named -----------------


EVALUATIONS = {
    "validate": lambda net, x, t, size: validate(net, x, t, size),
    "validate_epoch": lambda net, x, t, size: validate_epoch(0, net, x, t, size, quiet=True),
    "predict": lambda net, x, t, size: predict(net, x, size),
    "train_epoch": lambda net, x, t, size: train_epoch(0, net, x, t, MeanSquareError(), size, 0.1,
                                                       quiet=True),
}


@pytest.mark.parametrize("size", [0, -5, 60.0, True, "600", None])
@pytest.mark.parametrize("name", EVALUATIONS)
def test_batch_sizes_are_checked_and_named(name, size):
    x, t = separable_problem(20)
    net = Network([Linear(40, 10, rng=0), Sigmoid()])
    before = host_values(net)
    with pytest.raises(ValueError, match=rf"^{name} needs a positive integer batch_size, got {size!r}\.$"):
        EVALUATIONS[name](net, x, t, size)
    assert all(numpy.array_equal(a, b) for a, b in zip(before, host_values(net)))


@pytest.mark.parametrize("name, call", [
    ("train_epoch", lambda net, x, t: train_epoch(1.5, net, x, t, MeanSquareError(), 10, 0.1, quiet=True)),
    ("validate_epoch", lambda net, x, t: validate_epoch("0", net, x, t, 10, quiet=True)),
])
def test_epoch_numbers_are_checked(name, call):
    x, t = separable_problem(20)
    with pytest.raises(ValueError, match=rf"^{name} needs an integer epoch number e"):
        call(Network([Linear(40, 10, rng=0), Sigmoid()]), x, t)
