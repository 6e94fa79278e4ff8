"""BatchNorm1D and BatchNorm2D against a float64 reference written here, PyTorch's definition."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import (BatchNorm1D, BatchNorm2D, Conv2D, Flatten, Linear, MaxPool2D, MeanSquareError, Network,
                      ReLU, Reshape, SoftmaxCrossEntropy)
from fastprop.checkpoint import load_checkpoint, save
from fastprop.gradcheck import gradcheck


def _reference(x, gamma, beta, mean, var, momentum, eps, training):
    """Batch normalisation over every axis but 1, in float64: ``(y, new mean, new var)``."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(numpy.float64)
    if training:
        count = x.size // x.shape[1]
        mu, v = x.mean(axis=axes), x.var(axis=axes)
        mean = (1 - momentum) * mean + momentum * mu
        var = (1 - momentum) * var + momentum * v * count / (count - 1)
    else:
        mu, v = mean, var
    y = (x - mu.reshape(shape)) / numpy.sqrt(v.reshape(shape) + eps)
    y = y * gamma.reshape(shape) + beta.reshape(shape)
    return y, mean, var


CASES = {  # layer, input shape
    "1d": (lambda: BatchNorm1D(5, momentum=0.3), (9, 5)),
    "1d two rows": (lambda: BatchNorm1D(3), (2, 3)),
    "2d": (lambda: BatchNorm2D(4, eps=1e-3), (3, 4, 5, 6)),
    "2d one image": (lambda: BatchNorm2D(2), (1, 2, 3, 3)),
}


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("case", CASES)
def test_training_and_evaluation_match_the_reference(backend_name, case, dtype, rtol):
    build, shape = CASES[case]
    rng = numpy.random.default_rng(3)
    with fastprop.use_backend(backend_name, dtype):
        layer = build()
    gamma, beta = rng.normal(size=layer.features), rng.normal(size=layer.features)
    layer.gamma, layer.beta = gamma, beta
    mean, var = numpy.zeros(layer.features), numpy.ones(layer.features)
    for step in range(3):  # the running statistics move batch by batch
        x = rng.normal(size=shape) * 4 + 10 * step
        expected, mean, var = _reference(x, gamma, beta, mean, var, layer.momentum, layer.eps, True)
        y = layer.backend.to_numpy(layer.forward(x))
        assert y.shape == shape and y.dtype == numpy.dtype(dtype)
        numpy.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol * 10)
        numpy.testing.assert_allclose(layer.backend.to_numpy(layer.running_mean), mean, rtol=rtol, atol=rtol)
        numpy.testing.assert_allclose(layer.backend.to_numpy(layer.running_var), var, rtol=rtol)
    layer.eval()
    x = rng.normal(size=shape)
    expected, _, _ = _reference(x, gamma, beta, mean, var, layer.momentum, layer.eps, False)
    before = layer.backend.to_numpy(layer.running_mean).copy()
    y = layer.backend.to_numpy(layer.forward(x))
    numpy.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol * 10)
    assert numpy.array_equal(layer.backend.to_numpy(layer.running_mean), before)  # evaluation keeps them


def _gradcheck(net, cost, x, t, training):
    """Every error small, except the bias right before a batch norm, whose gradient is exactly zero in
    training (the normalisation removes any shift) and so has no relative error to speak of."""
    result = gradcheck(net, cost, x, t, training=training)
    leaves, parameters = net.leaves(), net.parameters()
    for name, error in result.errors.items():
        before_norm = False
        if name != "input":
            parameter = parameters[int(name.split(" ", 1)[0])]
            position = next(i for i, leaf in enumerate(leaves) if leaf is parameter.layer)
            following = leaves[position + 1: position + 2]
            before_norm = training and parameter.name == "b" and any(
                isinstance(leaf, (BatchNorm1D, BatchNorm2D)) for leaf in following)
        if not before_norm:
            assert error < 1e-6, (name, error, str(result))
    return result


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_gradients_match_finite_differences(backend_name, training):
    rng = numpy.random.default_rng(4)
    with fastprop.use_backend(backend_name, "float64"):
        dense = Network([Linear(6, 5, rng=1), ReLU(), BatchNorm1D(5), Linear(5, 4, rng=2), ReLU(),
                         BatchNorm1D(4), Linear(4, 3, rng=5)])
        conv = Network([Reshape((1, 6, 6)), Conv2D(1, 3, 3, padding=1, rng=3), BatchNorm2D(3), ReLU(),
                        MaxPool2D(2), Flatten(), Linear(27, 4, rng=4)])
    for net in (dense, conv):  # running statistics away from 0 and 1, as after some training
        for layer in net.leaves():
            if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
                layer.running_mean[...] = layer.backend.asarray(rng.normal(size=layer.features))
                layer.running_var[...] = layer.backend.asarray(rng.random(layer.features) + 0.5)
                layer.gamma = rng.normal(size=layer.features)
    _gradcheck(dense, MeanSquareError(), rng.normal(size=(7, 6)), rng.random((7, 3)), training)
    _gradcheck(conv, SoftmaxCrossEntropy(), rng.normal(size=(5, 36)), numpy.eye(4)[rng.integers(0, 4, 5)],
               training)


def test_gradients_of_gamma_and_beta_are_summed_until_zero_gradients(backend_name):
    rng = numpy.random.default_rng(5)
    with fastprop.use_backend(backend_name, "float64"):
        layer = BatchNorm1D(4)
    x, dy = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    layer.zero_gradients()
    layer.forward(x)
    layer.backward(dy)
    once = [layer.backend.to_numpy(a).copy() for a in (layer.dgamma, layer.dbeta)]
    numpy.testing.assert_allclose(once[1], dy.sum(axis=0), rtol=1e-12)
    layer.forward(x)
    layer.backward(dy)
    for twice, single in zip((layer.dgamma, layer.dbeta), once):
        numpy.testing.assert_allclose(layer.backend.to_numpy(twice), 2 * single, rtol=1e-12)
    layer.zero_gradients()
    assert not layer.backend.to_numpy(layer.dgamma).any()


def test_bad_input_is_refused_with_one_sentence():
    layer, conv_norm = BatchNorm1D(3), BatchNorm2D(2)
    with pytest.raises(ValueError, match=r"BatchNorm1D\(3\) expected input of shape \(batch, 3\), got \(4"):
        layer.forward(numpy.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"BatchNorm2D\(2\) expected input of shape \(batch, 2, height"):
        conv_norm.forward(numpy.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"got 1 value per feature in training mode.*net.eval\(\)"):
        layer.forward(numpy.zeros((1, 3)))
    layer.eval()
    assert layer.forward(numpy.ones((1, 3))).shape == (1, 3)  # evaluation takes one row
    for bad in (dict(eps=0), dict(momentum=0), dict(momentum=1.5), dict(eps=float("nan"))):
        with pytest.raises(ValueError, match="BatchNorm1D needs"):
            BatchNorm1D(3, **bad)
    with pytest.raises(ValueError, match="n"):
        BatchNorm1D(0)


def test_running_statistics_move_between_backends_and_round_trip_through_checkpoints(backend_name, tmp_path):
    rng = numpy.random.default_rng(6)
    with fastprop.use_backend(backend_name, "float32"):
        net = Network([Linear(4, 3, rng=1), ReLU(), BatchNorm1D(3)])
    net.forward(rng.normal(size=(8, 4)))
    saved = [net.backend.to_numpy(a).copy() for a in net.buffers()]
    assert not numpy.array_equal(saved[0], numpy.zeros(3))
    save(net, tmp_path / "net.npz")
    loaded = load_checkpoint(tmp_path / "net.npz").net
    for array, before in zip(loaded.buffers(), saved, strict=True):
        assert numpy.array_equal(loaded.backend.to_numpy(array), before)
    net.to_backend("numpy", "float64")
    assert all(a.dtype == numpy.float64 and isinstance(a, numpy.ndarray) for a in net.buffers())
    numpy.testing.assert_allclose(net.buffers()[1], saved[1], rtol=1e-7)


def test_a_checkpoint_without_running_statistics_is_refused(tmp_path):
    import json
    import zipfile

    path = tmp_path / "net.npz"
    save(Network([BatchNorm1D(3)]), path)
    with numpy.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(bytes(arrays["fastprop_header"]).decode("utf-8"))
    del header["model"]["layers"][0]["buffers"]["running_var"]
    arrays.pop("model.0.running_var")
    arrays["fastprop_header"] = numpy.frombuffer(json.dumps(header).encode("utf-8"), numpy.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as stream:
                numpy.lib.format.write_array(stream, numpy.asarray(value), allow_pickle=False)
    with pytest.raises(fastprop.CheckpointError, match=r"has buffers \['running_mean'\], expected"):
        load_checkpoint(path)


def _image_net(fuse):
    layers = [Reshape((1, 8, 8)), Conv2D(1, 4, 3, padding=1, rng=1), BatchNorm2D(4), ReLU(), MaxPool2D(2),
              Flatten(), Linear(64, 6, rng=2), BatchNorm1D(6), ReLU(), Linear(6, 3, rng=3)]
    return Network(layers, fuse=fuse)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation (folded)"])
def test_fused_stages_give_what_the_layers_give_one_by_one(backend_name, training):
    rng = numpy.random.default_rng(7)
    with fastprop.use_backend(backend_name, "float64"):
        fused, plain = _image_net(True), _image_net(False)
    stages = [type(stage).__name__ for stage in fused._stages()]
    assert stages.count("WeightedBatchNormReLU") == 2, stages
    x, t, cost = rng.normal(size=(5, 64)), numpy.eye(3)[rng.integers(0, 3, 5)], SoftmaxCrossEntropy()
    results = []
    for net in (fused, plain):
        net.train(training)
        net.forward(x)  # a first batch moves the running statistics (or, folded, uses them as they are)
        net.zero_gradients()
        y = net.forward(x + 1)
        dx = net.backward(cost.gradient(cost.estimate(t, y)), input_gradient=True)
        arrays = [y, dx, *(p.gradient for p in net.parameters()), *net.buffers()]
        results.append([net.backend.to_numpy(a) for a in arrays])
        relu = net.leaves()[3]
        results[-1].append(net.backend.to_numpy(relu.x_out))  # the ReLU shows its output either way
    for mine, theirs in zip(*results, strict=True):
        numpy.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-13)
