"""What the training loop asks of a network: its backend, its parameters, its mode, its foreign
layers and random generators, and the schedule's factor."""

from __future__ import annotations

import math

import numpy

from fastprop.backends import get_backend, get_dtype

from ..checks import is_real
from ..layers.base import Layer, is_native, leaves_of


def _foreign_arrays(net):
    """``[(layer, {attribute: copy})]`` for the NumPy arrays held by each foreign layer of ``net``."""
    return [
        (layer, {key: value.copy() for key, value in vars(layer).items() if isinstance(value, numpy.ndarray)})
        for layer in _foreign_layers(net)
    ]


def _start_together(net, optimizer, communicator):
    """Give every rank rank 0's parameters and optimizer state."""
    _refuse_foreign(net)
    for parameter in _parameters(net):
        communicator.broadcast(parameter.value)
    if optimizer is not None:
        for array in optimizer.state_arrays():
            communicator.broadcast(array)


def _refuse_foreign(net, what="Data-parallel training cannot share the arrays of",
                    remedy="; build the network from fastprop layers."):
    """One error naming the first layer of ``net`` that is not a fastprop Layer, if there is one."""
    foreign = _foreign_layers(net)
    if foreign:
        raise ValueError(f"{what} {foreign[0]!r}, which is not a fastprop Layer{remedy}")


def _flatten_gradients(net):
    """One flat buffer holding every parameter gradient of ``net`` (each gradient becomes a view of
    it), so that data-parallel training sums all gradients in one collective call."""
    _refuse_foreign(net)
    parameters = _parameters(net)
    backend, dtype = _backend_of(net)
    flat = backend.zeros(sum(int(parameter.gradient.size) for parameter in parameters), dtype)
    offset = 0
    for parameter in parameters:
        size = int(parameter.gradient.size)
        view = flat[offset:offset + size].reshape(parameter.gradient.shape)
        view[...] = parameter.gradient
        parameter.gradient, offset = view, offset + size
        parameter.version += 1
    return flat


def _backend_of(net):
    """``(backend, dtype)`` a network computes with; for a foreign model, the current ones."""
    if isinstance(net, Layer):
        return net.backend, net.dtype
    return get_backend(), get_dtype()


def _parameters(net):
    return net.parameters() if isinstance(net, Layer) else []


def _foreign_layers(net):
    return [leaf for leaf in leaves_of(net) if not is_native(leaf)]


def _set_mode(net, training):
    if isinstance(net, Layer):  # a foreign model has no training mode to set
        net.train(training)


def _check_optimizer(net, optimizer):
    if optimizer is not None:
        _refuse_foreign(net, f"train cannot use {optimizer!r} on", " (an optimizer updates fastprop "
                        "parameters only); train with plain SGD (optimizer=None), which calls its "
                        "update_parameters, or build that layer from fastprop layers.")


def _factor(schedule, epoch):
    if schedule is None:
        return 1.0
    factor = schedule(epoch)
    if not (is_real(factor) and math.isfinite(factor) and factor >= 0):
        raise ValueError(
            f"train's schedule {schedule!r} gave {factor!r} for epoch {epoch}; "
            "a schedule must return a finite factor >= 0."
        )
    return float(factor)


def _generators(net):
    """The distinct random generators the network's layers draw from (dropout masks)."""
    found = {}
    for leaf in leaves_of(net):
        rng = getattr(leaf, "rng", None)
        if isinstance(rng, numpy.random.Generator):
            found.setdefault(id(rng), rng)
    return list(found.values())


def _generator_states(net):
    return [generator.bit_generator.state for generator in _generators(net)]


def _set_generators(net, states):
    if states is None:
        return
    generators = _generators(net)
    if len(states) != len(generators):
        raise ValueError(
            f"The checkpoint holds {len(states)} random generator states but the network draws from "
            f"{len(generators)}; resume with the network the checkpoint was saved from."
        )
    for generator, state in zip(generators, states):
        generator.bit_generator.state = state
