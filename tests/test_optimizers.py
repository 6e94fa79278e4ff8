"""Optimizers on every available backend, against update rules written out by hand (the schedules that
scale their rate: ``test_schedules.py``)."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Linear, Network, SoftmaxCrossEntropy, Tanh
from fastprop.optimizers import SGD, Adam, from_state_dict

W0 = numpy.array([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]])
B0 = numpy.array([[0.05, -0.05]])
GRADIENTS = [  # (dw, db) for three steps
    (numpy.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]]), numpy.array([[1.0, -2.0]])),
    (numpy.array([[-0.3, 0.7, 1.5], [0.1, -0.4, 0.9]]), numpy.array([[0.5, 0.25]])),
    (numpy.array([[1.2, 0.2, -0.8], [-1.1, 0.6, 0.3]]), numpy.array([[-1.5, 0.75]])),
]
LR, MU, DECAY = 0.1, 0.9, 0.05


def _layer(backend_name, dtype="float64"):
    with fastprop.use_backend(backend_name, dtype=dtype):
        layer = Linear(3, 2)
    layer.w = W0  # converted to the layer's backend and dtype
    layer.b = B0
    return layer


def _set_gradients(layer, step):
    layer.dw, layer.db = GRADIENTS[step]


def _run(optimizer, layer, steps=3, learning_rate=LR):
    """Host copies of (w, b) after each of ``steps`` optimizer steps."""
    trace = []
    for step in range(steps):
        _set_gradients(layer, step)
        optimizer.step(layer, learning_rate)
        trace.append(tuple(layer.backend.to_numpy(a).copy() for a in (layer.w, layer.b)))
    return trace


def _expected(update, steps=3):
    """Apply ``update(p, g, state, t)`` (plain NumPy, written here) to w and b separately."""
    values, states, trace = [W0.copy(), B0.copy()], [{}, {}], []
    for t in range(1, steps + 1):
        for k in range(2):
            values[k] = update(values[k], GRADIENTS[t - 1][k], states[k], t)
        trace.append(tuple(v.copy() for v in values))
    return trace


def _assert_trace(actual, expected, rtol=1e-12):
    for step, (got, want) in enumerate(zip(actual, expected, strict=True), start=1):
        for name, a, e in zip(("w", "b"), got, want):
            numpy.testing.assert_allclose(a, e, rtol=rtol, atol=1e-15, err_msg=f"{name} after step {step}")


# -- SGD ------------------------------------------------------------------------------------------


def test_plain_sgd_is_exactly_update_parameters(backend_name):
    with fastprop.use_backend(backend_name, dtype="float32"):
        reference, net = (Network([Linear(3, 4, rng=1), Tanh(), Linear(4, 2, rng=2)]) for _ in range(2))
    x = numpy.random.default_rng(0).normal(size=(5, 3))
    target = numpy.eye(2)[[0, 1, 1, 0, 1]]
    optimizer, cost = SGD(), SoftmaxCrossEntropy()
    for _ in range(3):
        for model in (reference, net):
            model.zero_gradients()
            model.backward(cost.gradient(cost.estimate(target, model.forward(x))))
        reference.update_parameters(0.3)
        optimizer.step(net, 0.3)
    for a, b in zip(reference.parameters(), net.parameters()):
        assert numpy.array_equal(net.backend.to_numpy(a.value), net.backend.to_numpy(b.value))


def test_sgd_with_weight_decay_matches_hand_computation(backend_name):
    def update(p, g, state, t):
        return p - LR * (g + DECAY * p)

    _assert_trace(_run(SGD(weight_decay=DECAY), _layer(backend_name)), _expected(update))


@pytest.mark.parametrize("decay", [0.0, DECAY])
def test_momentum_matches_hand_computation(backend_name, decay):
    def update(p, g, state, t):
        state["v"] = MU * state.get("v", 0.0) + (g + decay * p)
        return p - LR * state["v"]

    _assert_trace(_run(SGD(momentum=MU, weight_decay=decay), _layer(backend_name)), _expected(update))


@pytest.mark.parametrize("decay", [0.0, DECAY])
def test_nesterov_matches_hand_computation(backend_name, decay):
    def update(p, g, state, t):
        g = g + decay * p
        state["v"] = MU * state.get("v", 0.0) + g
        return p - LR * (g + MU * state["v"])

    optimizer = SGD(momentum=MU, nesterov=True, weight_decay=decay)
    _assert_trace(_run(optimizer, _layer(backend_name)), _expected(update))


# -- Adam -----------------------------------------------------------------------------------------


def _adam_reference(beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0, decoupled=False):
    def update(p, g, state, t):
        if decoupled:
            p = p * (1 - LR * decay)
        else:
            g = g + decay * p
        state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
        state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g**2
        m_hat = state["m"] / (1 - beta1**t)
        v_hat = state["v"] / (1 - beta2**t)
        return p - LR * m_hat / (numpy.sqrt(v_hat) + eps)

    return update


@pytest.mark.parametrize(
    "options",
    [{}, {"betas": (0.8, 0.99), "eps": 1e-3}, {"weight_decay": DECAY},
     {"weight_decay": DECAY, "decoupled": True}],
    ids=["default", "betas+eps", "L2", "AdamW"],
)
def test_adam_matches_hand_computation(backend_name, options):
    reference = _adam_reference(*options.get("betas", (0.9, 0.999)), options.get("eps", 1e-8),
                                options.get("weight_decay", 0.0), options.get("decoupled", False))
    _assert_trace(_run(Adam(**options), _layer(backend_name)), _expected(reference))


def test_first_adam_step_moves_every_entry_by_the_learning_rate(backend_name):
    layer = _layer(backend_name)
    (w, _), = _run(Adam(), layer, steps=1)
    numpy.testing.assert_allclose(W0 - w, LR * numpy.sign(GRADIENTS[0][0]), rtol=1e-6, atol=1e-7)


def test_gradients_are_left_untouched(backend_name):
    layer = _layer(backend_name)
    _set_gradients(layer, 0)
    Adam(weight_decay=DECAY).step(layer, LR)
    SGD(momentum=MU, nesterov=True, weight_decay=DECAY).step(layer, LR)
    assert numpy.array_equal(layer.backend.to_numpy(layer.dw), GRADIENTS[0][0])
    assert numpy.array_equal(layer.backend.to_numpy(layer.db), GRADIENTS[0][1])


# -- state ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: SGD(momentum=MU), lambda: Adam()], ids=["momentum", "Adam"])
def test_every_parameter_has_its_own_state(backend_name, make):
    net = Network([_layer(backend_name), _layer(backend_name)])
    separate = [_layer(backend_name), _layer(backend_name)]
    shared, own = make(), [make(), make()]
    for step in range(3):
        for k, gradients in enumerate((step, 2 - step)):  # the two layers see different gradients
            _set_gradients(net.layers[k], gradients)
            _set_gradients(separate[k], gradients)
            own[k].step(separate[k], LR)
        shared.step(net, LR)
    for a, b in zip(net.parameters(), separate[0].parameters() + separate[1].parameters()):
        numpy.testing.assert_array_equal(a.layer.backend.to_numpy(a.value), b.layer.backend.to_numpy(b.value))


@pytest.mark.parametrize(
    "make",
    [lambda: SGD(0.1, momentum=MU, nesterov=True), lambda: Adam(0.1, weight_decay=DECAY, decoupled=True)],
    ids=["nesterov", "AdamW"],
)
def test_state_dict_round_trip_continues_identically(backend_name, make):
    layer, optimizer = _layer(backend_name), make()
    _run(optimizer, layer, steps=2)
    state = optimizer.state_dict()
    state_arrays = [a for entry in state["parameters"] for a in entry["arrays"].values()]
    assert len(state_arrays) > 0 and all(isinstance(a, numpy.ndarray) for a in state_arrays)
    assert [entry["step"] for entry in state["parameters"]] == [2, 2]
    clone = _layer(backend_name)
    clone.w, clone.b = layer.w, layer.b
    restored = from_state_dict(state)
    assert restored.hyperparameters() == optimizer.hyperparameters()
    for entry in state["parameters"]:  # the optimizer holds copies, not the caller's arrays
        for array in entry["arrays"].values():
            array += 1000.0
    for model, opt in ((layer, optimizer), (clone, restored)):
        _set_gradients(model, 2)
        opt.step(model)  # the learning rate the optimizer was built with
    for name in ("w", "b"):
        numpy.testing.assert_array_equal(
            layer.backend.to_numpy(getattr(layer, name)), clone.backend.to_numpy(getattr(clone, name))
        )


def test_state_follows_the_network_to_another_backend_and_dtype(backend_name):
    layer = _layer("numpy")
    optimizer = Adam()
    _run(optimizer, layer, steps=2)
    layer.to_backend(backend_name, dtype="float32")
    _set_gradients(layer, 2)
    optimizer.step(layer, LR)
    assert layer.backend is fastprop.backends.load_backend(backend_name)
    state = optimizer.state_dict()["parameters"]
    assert all(a.dtype == numpy.float32 for entry in state for a in entry["arrays"].values())
    expected = _expected(_adam_reference())[-1]
    numpy.testing.assert_allclose(layer.backend.to_numpy(layer.w), expected[0], rtol=1e-5)


def test_an_optimizer_refuses_a_second_network_until_reset(backend_name):
    optimizer, first, second = SGD(momentum=MU), _layer(backend_name), _layer(backend_name)
    _run(optimizer, first, steps=1)
    _set_gradients(second, 0)
    with pytest.raises(ValueError, match="another network.*reset"):
        optimizer.step(second, LR)
    optimizer.reset()
    optimizer.step(second, LR)


def test_state_for_a_different_network_is_refused_on_step(backend_name):
    optimizer = Adam()
    _run(optimizer, _layer(backend_name), steps=1)
    with fastprop.use_backend(backend_name, dtype="float64"):
        other = Linear(2, 3)
    restored = from_state_dict(optimizer.state_dict())
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*network it was saved from"):
        restored.step(other, LR)


def test_load_state_dict_checks_before_changing_anything():
    optimizer = SGD(0.5, momentum=MU)
    with pytest.raises(ValueError, match="cannot load the state of a 'Adam'"):
        optimizer.load_state_dict(Adam(0.1).state_dict())
    bad = {"type": "SGD", "hyperparameters": {"learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
                                              "weight_decay": 0.0},
           "parameters": [{"name": "w", "shape": (2, 3), "step": 1,
                           "arrays": {"velocity": numpy.zeros((3, 2))}}]}
    with pytest.raises(ValueError, match=r"velocity' is a float64 array of shape \(3, 2\)"):
        optimizer.load_state_dict(bad)
    assert optimizer.learning_rate == 0.5 and optimizer.state_dict()["parameters"] == []


# -- learning rates and hyperparameters -----------------------------------------------------------


def test_learning_rate_comes_from_step_or_constructor(backend_name):
    layer = _layer(backend_name)
    _set_gradients(layer, 0)
    with pytest.raises(ValueError, match=r"needs a learning_rate.*SGD\(1e-3\)"):
        SGD().step(layer)
    SGD(0.5).step(layer)
    numpy.testing.assert_allclose(layer.backend.to_numpy(layer.w), W0 - 0.5 * GRADIENTS[0][0])
    for rate in (-1e-3, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="learning_rate"):
            SGD().step(layer, rate)
    before = layer.backend.to_numpy(layer.w).copy()
    Adam(1.0).step(layer, 0)  # a schedule may pause learning
    numpy.testing.assert_array_equal(layer.backend.to_numpy(layer.w), before)


@pytest.mark.parametrize("build, message", [
    (lambda: SGD(momentum=1.0), "momentum < 1"),
    (lambda: SGD(nesterov=True), "nesterov=True needs a momentum"),
    (lambda: SGD(weight_decay=-1), "weight_decay >= 0"),
    (lambda: Adam(betas=(0.9,)), "betas as a pair"),
    (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\] < 1"),
    (lambda: Adam(eps=float("inf")), "finite number for eps"),
    (lambda: Adam(learning_rate=0), "positive learning_rate"),
])
def test_bad_hyperparameters_fail_with_a_clear_message(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# -- training -------------------------------------------------------------------------------------


def _blobs(n, rng):
    labels = rng.integers(0, 2, n)
    points = rng.normal(size=(n, 2)) * 0.6 + numpy.where(labels[:, None] == 1, 1.5, -1.5)
    return points, numpy.eye(2)[labels]


def test_train_with_adam_learns_a_separable_problem(backend_name):
    rng = numpy.random.default_rng(3)
    data = (*_blobs(400, rng), *_blobs(200, rng))
    with fastprop.use_backend(backend_name, dtype="float64"):
        net = Network([Linear(2, 8, rng=4), Tanh(), Linear(8, 2, rng=5)])
    history = fastprop.train(net, SoftmaxCrossEntropy(), 8, 20, 0.02, data=data, optimizer=Adam(),
                             quiet=True, verbose=False)
    assert history.accuracy[-1] >= 0.97
    assert history.cost[-1] < history.cost[0]
