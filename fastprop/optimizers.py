"""Optimizers: ``SGD`` and ``Adam`` (learning-rate schedules are in :mod:`fastprop.schedules`).

An optimizer updates, in place, every :class:`~fastprop.layers.Parameter` of ``net.parameters()``
from the gradients summed by ``backward``::

    optimizer = Adam(1e-3)
    for x, t in batches:
        net.zero_gradients()
        net.backward(cost.gradient(cost.estimate(t, net.forward(x))))
        optimizer.step(net)

**Where the state lives.** Each :class:`~fastprop.layers.Parameter` is made once with its layer,
so an optimizer keeps its state per Parameter, in the order the parameters were first stepped (the
order of ``net.parameters()``, which is also how a checkpoint stores it). Stepping another network
with the same optimizer is an error instead of a silent mix of state. State arrays stay on the
parameter's backend and dtype; when the network moves (``net.to_backend(...)``) they follow it
lazily, once, on the next ``step``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy

from .checks import finite_number, is_whole, nonnegative_number

# ---------------------------------------------------------------------------------------------------
# Optimizers.


@dataclass
class _Slot:
    """The state of the parameter at one position of ``net.parameters()``."""

    name: str
    shape: tuple
    arrays: dict
    step: int = 0
    backend: object = None  # None while ``arrays`` are host NumPy arrays from load_state_dict
    dtype: object = None
    scratch: object = field(default=None, repr=False)


class Optimizer:
    """Base class: ``step(net, learning_rate=None)`` updates every parameter of ``net`` in place.

    ``learning_rate`` given to the constructor is the default for ``step`` (and for
    :func:`fastprop.train` when it is given no learning rate); a rate passed to ``step`` wins. Subclasses set
    ``self.state_names`` (the arrays kept per parameter, zero-initialised) and implement
    ``_update`` and ``hyperparameters``.
    """

    def __init__(self, learning_rate=None):
        if learning_rate is not None:
            learning_rate = _positive_rate(self, learning_rate)
        self.learning_rate = learning_rate
        self.state_names: tuple[str, ...] = ()
        self._state: dict = {}  # Parameter -> _Slot, in the order first stepped
        self._pending: list[_Slot] = []  # loaded by load_state_dict, bound by position on the next step

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.hyperparameters().items())
        return f"{type(self).__name__}({arguments})"

    def hyperparameters(self) -> dict:
        """The constructor's keyword arguments, as JSON-friendly values."""
        return {"learning_rate": self.learning_rate}

    def step(self, net, learning_rate=None) -> None:
        """Update every parameter of ``net`` from its summed gradient, in place."""
        if learning_rate is None:
            learning_rate = self.learning_rate
            if learning_rate is None:
                raise ValueError(
                    f"{self!r}.step needs a learning_rate: pass one to step or build the optimizer "
                    f"with it, e.g. {type(self).__name__}(1e-3)."
                )
        else:  # 0 is allowed here: a schedule may pause learning
            learning_rate = _nonnegative(self, "learning_rate", learning_rate)
        parameters = net.parameters()
        if self._pending:
            self._bind(parameters)
        elif self._state and any(parameter not in self._state for parameter in parameters):
            stranger = next(parameter for parameter in parameters if parameter not in self._state)
            raise ValueError(
                f"{self!r} holds state for another network ({stranger!r} is new to it); use one "
                "optimizer per network, or call reset() first."
            )
        for parameter in parameters:
            slot = self._slot(parameter)
            slot.step += 1
            self._update(parameter, slot, learning_rate)

    def reset(self) -> None:
        """Forget all state (momentum, moments, step counts), e.g. before training another network."""
        self._state, self._pending = {}, []

    def _update(self, parameter, slot: _Slot, learning_rate: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _update")

    # -- state ------------------------------------------------------------------------------------

    def _slot(self, parameter) -> _Slot:
        backend, value = parameter.layer.backend, parameter.value
        slot = self._state.get(parameter)
        if slot is None:
            arrays = {key: backend.zeros(value.shape, value.dtype) for key in self.state_names}
            slot = self._state[parameter] = _Slot(parameter.name, tuple(value.shape), arrays,
                                                  backend=backend, dtype=value.dtype)
        if slot.backend is not backend or slot.dtype != value.dtype:
            _move(slot, backend, value.dtype)
        return slot

    def _bind(self, parameters):
        """Give the state loaded from a state dict to the network's parameters, by position."""
        if len(self._pending) > len(parameters):
            raise ValueError(
                f"{self!r} holds state for {len(self._pending)} parameters, but the network has "
                f"{len(parameters)}; load the state into the network it was saved from."
            )
        for index, (slot, parameter) in enumerate(zip(self._pending, parameters)):
            if (slot.name, slot.shape) != (parameter.name, tuple(parameter.value.shape)):
                raise ValueError(
                    f"{self!r} holds state for parameter {index} '{slot.name}' of shape {slot.shape}, "
                    f"but the network's parameter {index} is {parameter!r}; load the state into the "
                    "network it was saved from."
                )
        self._state = dict(zip(parameters, self._pending))
        self._pending = []

    def state_arrays(self) -> list:
        """Every state array this optimizer holds (live or loaded), in order: data-parallel training
        broadcasts them from rank 0."""
        slots = list(self._state.values()) + self._pending
        return [slot.arrays[key] for slot in slots for key in sorted(slot.arrays)]

    def snapshot(self):
        """A copy of the per-parameter state, kept on its backend, for :meth:`restore`."""
        return ({parameter: copy.deepcopy(slot) for parameter, slot in self._state.items()},
                copy.deepcopy(self._pending))

    def restore(self, snapshot) -> None:
        """Go back to a :meth:`snapshot` (which stays usable for another restore)."""
        state, pending = snapshot
        self._state = {parameter: copy.deepcopy(slot) for parameter, slot in state.items()}
        self._pending = copy.deepcopy(pending)

    def state_dict(self) -> dict:
        """Hyperparameters and per-parameter state as host NumPy arrays (copies), for checkpoints.

        ``{"type": "Adam", "hyperparameters": {...}, "parameters": [{"name", "shape", "step",
        "arrays": {state name: numpy array}}, ...]}``, one entry per position of ``net.parameters()``
        that has been stepped.
        """
        parameters = []
        for slot in list(self._state.values()) + self._pending:
            arrays = {key: _host_copy(slot.backend, array) for key, array in slot.arrays.items()}
            parameters.append({"name": slot.name, "shape": slot.shape, "step": slot.step, "arrays": arrays})
        return {
            "type": type(self).__name__, "hyperparameters": self.hyperparameters(), "parameters": parameters,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore hyperparameters and state from :meth:`state_dict`; the next ``step`` continues exactly.

        The arrays move to the network's backend and dtype on that step. Everything is checked
        before anything changes: a bad ``state`` raises ``ValueError`` and leaves this optimizer as it was.
        """
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            kind = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{self!r} cannot load the state of a {kind!r}; build that optimizer instead.")
        try:
            configured = type(self)(**state["hyperparameters"])
            slots = [_slot_from_state(entry, configured.state_names) for entry in state["parameters"]]
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{self!r} got a malformed state dict ({error!r}); pass the output of state_dict()."
            ) from None
        vars(self).update({key: value for key, value in vars(configured).items()
                           if key not in ("_state", "_pending")})
        self._state, self._pending = {}, slots


def _host_copy(backend, array):
    """A host NumPy copy of ``array`` (a host array when ``backend`` is None), copied once."""
    host = array if backend is None else backend.to_numpy(array)
    return host.copy() if host is array else numpy.asarray(host)


def _slot_from_state(entry, state_names) -> _Slot:
    shape = tuple(int(n) for n in entry["shape"])
    arrays = {}
    if set(entry["arrays"]) != set(state_names):
        raise ValueError(
            f"optimizer state for '{entry['name']}' holds arrays {sorted(entry['arrays'])}, expected "
            f"{sorted(state_names)}; it was saved by a differently configured optimizer."
        )
    for key in state_names:
        array = numpy.array(entry["arrays"][key])  # a private copy
        if array.shape != shape or array.dtype.kind != "f":
            raise ValueError(
                f"optimizer state '{entry['name']}.{key}' is a {array.dtype} array of shape "
                f"{array.shape}, expected floats of shape {shape}."
            )
        arrays[key] = array
    step = entry["step"]
    if not is_whole(step) or step < 0:
        raise ValueError(f"optimizer state '{entry['name']}' has step {step!r}, expected a count >= 0.")
    return _Slot(str(entry["name"]), shape, arrays, int(step))


def _move(slot: _Slot, backend, dtype) -> None:
    """Carry ``slot``'s arrays to ``backend`` and ``dtype`` (once, when the network has moved)."""
    for key, array in slot.arrays.items():
        host = array if slot.backend is None else slot.backend.to_numpy(array)
        slot.arrays[key] = backend.asarray(host, dtype=dtype)
    slot.backend, slot.dtype, slot.scratch = backend, dtype, None


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

    With ``momentum=0`` and no decay it is exactly ``net.update_parameters(learning_rate)``, the
    notebook's ``value -= learning_rate * gradient``. Momentum keeps ``v = momentum v + g`` and steps
    ``-learning_rate v``; ``nesterov`` steps ``-learning_rate (g + momentum v)``. ``weight_decay``
    adds ``weight_decay * value`` to every gradient (PyTorch's conventions throughout).
    """

    def __init__(self, learning_rate=None, *, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate)
        self.momentum = _fraction(self, "momentum", momentum)
        self.weight_decay = _nonnegative(self, "weight_decay", weight_decay)
        if nesterov and not self.momentum:
            raise ValueError(
                "SGD with nesterov=True needs a momentum above 0, e.g. SGD(momentum=0.9, nesterov=True)."
            )
        self.nesterov = bool(nesterov)
        self.state_names = ("velocity",) if self.momentum else ()

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, parameter, slot, learning_rate):
        backend, param, grad = parameter.layer.backend, parameter.value, parameter.gradient
        if self.momentum:
            backend.momentum_update(param, grad, slot.arrays["velocity"], learning_rate, self.momentum,
                                    nesterov=self.nesterov, weight_decay=self.weight_decay)
            return
        if self.weight_decay:
            param *= 1.0 - learning_rate * self.weight_decay
        backend.sgd_update(param, grad, learning_rate)


class Adam(Optimizer):
    """Adam with bias correction; ``decoupled=True`` makes it AdamW.

    ``weight_decay`` is added to the gradient as ``weight_decay * value`` (L2, as in PyTorch's
    ``Adam``), or with ``decoupled`` shrinks the value by ``1 - learning_rate * weight_decay`` before
    the step (PyTorch's ``AdamW``).
    """

    def __init__(self, learning_rate=None, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        super().__init__(learning_rate)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam needs betas as a pair (beta1, beta2), got {betas!r}.")
        self.betas = (_fraction(self, "betas[0]", betas[0]), _fraction(self, "betas[1]", betas[1]))
        self.eps = _positive(self, "eps", eps)
        self.weight_decay = _nonnegative(self, "weight_decay", weight_decay)
        self.decoupled = bool(decoupled)
        self.state_names = ("first_moment", "second_moment")

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled": self.decoupled}

    def _update(self, parameter, slot, learning_rate):
        backend, param = parameter.layer.backend, parameter.value
        if slot.scratch is None:
            slot.scratch = backend.zeros(param.shape, param.dtype)
        backend.adam_update(param, parameter.gradient, slot.arrays["first_moment"],
                            slot.arrays["second_moment"], slot.scratch, learning_rate, *self.betas,
                            self.eps, slot.step, weight_decay=self.weight_decay, decoupled=self.decoupled)


#: Optimizers a checkpoint may rebuild, by the name :meth:`Optimizer.state_dict` records.
OPTIMIZERS = {"SGD": SGD, "Adam": Adam}


def from_state_dict(state: dict) -> Optimizer:
    """A new optimizer of the recorded type (``SGD`` or ``Adam``) holding ``state``."""
    kind = state.get("type") if isinstance(state, dict) else None
    if kind not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer type {kind!r}; fastprop can rebuild {', '.join(OPTIMIZERS)}.")
    optimizer = OPTIMIZERS[kind]()
    optimizer.load_state_dict(state)
    return optimizer


def _number(owner, label, value):
    return finite_number(value, label, type(owner).__name__)


def _positive_rate(owner, value):
    if _number(owner, "learning_rate", value) <= 0:
        raise ValueError(f"{type(owner).__name__} needs a positive learning_rate, got {value!r}.")
    return float(value)


def _positive(owner, label, value):
    if _number(owner, label, value) <= 0:
        raise ValueError(
            f"{type(owner).__name__} needs {label} > 0, got {value!r}; it keeps a division away from 0/0."
        )
    return float(value)


def _nonnegative(owner, label, value):
    return nonnegative_number(value, label, type(owner).__name__)


def _fraction(owner, label, value):
    if not 0 <= _number(owner, label, value) < 1:
        raise ValueError(f"{type(owner).__name__} needs 0 <= {label} < 1, got {value!r}.")
    return float(value)
