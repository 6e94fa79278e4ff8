"""The backend registry, selection (process default, context, environment), and the reference kernels
against independent formulas (every backend against the reference: ``test_contract.py``)."""

from __future__ import annotations

import threading

import numpy
import pytest

import fastprop
from fastprop.backends import Backend, BackendError, BackendUnavailableError, registry


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry whose default is re-read from the environment and whose additions are undone."""
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    monkeypatch.setattr(registry, "_failures", dict(registry._failures))
    monkeypatch.setattr(registry, "_default", None)
    return registry


class _Echo(Backend):
    """A backend that is the reference one under another name."""


def test_numpy_is_the_default_and_float32_the_dtype(fresh_registry, monkeypatch):
    monkeypatch.delenv("FASTPROP_BACKEND", raising=False)
    monkeypatch.delenv("FASTPROP_DTYPE", raising=False)
    assert fastprop.get_backend().name == "numpy"
    assert fastprop.get_dtype() is numpy.float32


def test_environment_variables_choose_the_default(fresh_registry, monkeypatch):
    fresh_registry.register_backend("echo", _Echo)
    monkeypatch.setenv("FASTPROP_BACKEND", "echo")
    monkeypatch.setenv("FASTPROP_DTYPE", "float64")
    assert fastprop.get_backend().name == "echo"
    assert fastprop.Linear(2, 2).dtype is numpy.float64


def test_a_bad_environment_variable_is_named(fresh_registry, monkeypatch):
    monkeypatch.setenv("FASTPROP_BACKEND", "nope")
    with pytest.raises(BackendError, match=r"Unknown backend 'nope'.*FASTPROP_BACKEND='nope'"):
        fastprop.get_backend()


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(BackendError, match=r"Unknown backend 'tensorflow'; registered backends are .*numpy"):
        fastprop.set_backend("tensorflow")


def test_unavailable_backend_says_why(fresh_registry):
    def factory():
        raise BackendUnavailableError("the gizmo package is missing; pip install gizmo")

    fresh_registry.register_backend("gizmo", factory)
    message = r"Backend 'gizmo' is unavailable: the gizmo package is missing; pip install gizmo"
    with pytest.raises(BackendUnavailableError, match=message):
        fastprop.set_backend("gizmo")
    status = fastprop.available_backends()["gizmo"]
    assert not status.available and "pip install gizmo" in status.reason
    assert fastprop.available_backends()["numpy"].available


def test_unsupported_dtype_is_refused():
    with pytest.raises(BackendError, match=r"Unsupported dtype 'float16'; .*'float32' .* 'float64'"):
        fastprop.set_backend("numpy", dtype="float16")


def test_set_backend_and_use_backend(fresh_registry):
    fresh_registry.register_backend("echo", _Echo)
    fastprop.set_backend("numpy", dtype="float32")
    with fastprop.use_backend("echo", dtype="float64") as backend:
        assert backend.name == "echo" and fastprop.get_backend() is backend
        layer = fastprop.Linear(3, 2)
        assert layer.backend.name == "echo" and layer.dtype is numpy.float64
    assert fastprop.get_backend().name == "numpy" and fastprop.get_dtype() is numpy.float32
    assert layer.backend.name == "echo"  # a layer keeps the backend it was built on


def test_use_backend_is_local_to_its_thread(fresh_registry):
    fresh_registry.register_backend("echo", _Echo)
    fastprop.set_backend("numpy")
    seen, inside, release = {}, threading.Event(), threading.Event()

    def worker():
        with fastprop.use_backend("echo"):
            seen["worker"] = fastprop.get_backend().name
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    seen["main"] = fastprop.get_backend().name
    release.set()
    thread.join()
    assert seen == {"worker": "echo", "main": "numpy"}


def test_entry_points_add_backends(fresh_registry, monkeypatch):
    class Entry:
        name, value = "plugin", "plugin_pkg:create"

        @staticmethod
        def load():
            return _Echo

    class Broken(Entry):
        name, value = "broken", "broken_pkg:create"

        @staticmethod
        def load():
            raise ImportError("no module named broken_pkg")

    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [Entry(), Broken()])
    assert {"plugin", "broken"} <= set(fastprop.available_backends())
    assert fastprop.available_backends()["plugin"].available
    reason = fastprop.available_backends()["broken"].reason
    assert "broken_pkg:create" in reason and "no module named broken_pkg" in reason


def test_reference_kernels_against_independent_formulas():
    backend, rng = Backend(), numpy.random.default_rng(0)
    z = rng.normal(size=(4, 3)) * 20
    assert numpy.allclose(backend.sigmoid(z), 1 / (1 + numpy.exp(-z)))
    assert numpy.allclose(backend.softmax(z).sum(axis=1), 1)
    softmax = numpy.exp(z) / numpy.exp(z).sum(1, keepdims=True)
    assert numpy.allclose(backend.log_softmax(z), numpy.log(softmax))
    x, W, b = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=(1, 3))
    z, p = backend.linear_sigmoid_forward(x, W, b)
    assert numpy.allclose(z, x @ W.T + b) and numpy.allclose(p, 1 / (1 + numpy.exp(-(x @ W.T + b))))
    with numpy.errstate(over="raise"):
        assert numpy.isfinite(backend.sigmoid(numpy.array([[-1000.0, 1000.0]]))).all()
        assert numpy.isfinite(backend.log_softmax(numpy.array([[1000.0, -1000.0]]))).all()


def test_owner_of_an_array_is_the_current_backend_first_then_a_loaded_one():
    from fastprop.backends import owner_of

    array = numpy.zeros(3)
    with fastprop.use_backend("numpy"):
        assert owner_of(array) is fastprop.backends.load_backend("numpy")
    for name, status in fastprop.available_backends().items():
        if status.available and status.device == "cpu":
            with fastprop.use_backend(name):
                assert owner_of(array) is fastprop.backends.load_backend(name)  # the one in force
    assert owner_of([1.0, 2.0]) is None and owner_of(object()) is None
