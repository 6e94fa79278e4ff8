"""The seed's ``Layer`` base class and the checks every layer makes at its boundary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from ..backends import Backend, BackendError, current, load_backend, resolve_dtype


@dataclass
class Parameter:
    """One trainable array of a layer and its gradient buffer (both updated in place)."""

    layer: "Layer"
    name: str
    value: object
    gradient: object


class Layer:
    """A differentiable block: ``forward`` maps a batch, ``backward`` maps the output's gradient back.

    Gradients of parameters accumulate across ``backward`` calls until ``zero_gradients``;
    ``update_parameters(learning_rate)`` takes one plain SGD step on those summed gradients.
    A layer computes on the backend and dtype that were current when it was built.
    """

    #: Names of the trainable arrays; each has a gradient buffer called ``<name>_gradient``.
    parameter_names: tuple[str, ...] = ()
    #: Dropout and friends behave differently in training and evaluation.
    training: bool = True

    def __init__(self):
        selection = current()
        self.backend: Backend = selection.backend
        self.dtype = selection.dtype
        self._fresh_gradients = True

    # -- the seed's interface -------------------------------------------------------------------

    def forward(self, x):
        """Return this layer's output for the batch ``x`` of shape ``(batch, features)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, gradient, input_gradient=True):
        """Take ``dL/doutput`` of the last ``forward``; accumulate parameter gradients.

        Returns ``dL/dinput``, or ``None`` when ``input_gradient`` is false.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def zero_gradients(self):
        """Reset every accumulated parameter gradient to zero."""
        for parameter in self.parameters():
            self.backend.fill(parameter.gradient, 0)
        self._fresh_gradients = True

    def update_parameters(self, learning_rate):
        """One SGD step on the summed gradients: ``value -= learning_rate * gradient``."""
        for parameter in self.parameters():
            self.backend.sgd_update(parameter.value, parameter.gradient, learning_rate)

    # -- beyond the seed --------------------------------------------------------------------------

    def __call__(self, x):
        return self.forward(x)

    def parameters(self) -> list[Parameter]:
        """This layer's trainable arrays with their gradient buffers."""
        return [
            Parameter(self, name, getattr(self, name), getattr(self, name + "_gradient"))
            for name in self.parameter_names
        ]

    def leaves(self) -> list["Layer"]:
        """The plain layers inside this one, in order (a plain layer is its only leaf)."""
        return [self]

    def to_backend(self, name: str | None = None, dtype=None) -> "Layer":
        """Move parameters and gradients to backend ``name`` and/or ``dtype``, in place; returns self."""
        backend = load_backend(name) if name is not None else self.backend
        dtype = resolve_dtype(dtype) if dtype is not None else self.dtype
        for attribute in self.parameter_names:
            for key in (attribute, attribute + "_gradient"):
                host = self.backend.to_numpy(getattr(self, key))
                setattr(self, key, backend.asarray(host, dtype=dtype))
        self.backend, self.dtype = backend, dtype
        self._forget_batch()
        return self

    def train(self, mode: bool = True) -> "Layer":
        """Switch training mode on (dropout active) or off; returns self."""
        self.training = mode
        return self

    def eval(self) -> "Layer":
        """Switch to evaluation mode (same as ``train(False)``); returns self."""
        return self.train(False)

    def save(self, path, **options):
        """Write this layer (usually a Network) to a checkpoint; see :func:`fastprop.checkpoint.save`."""
        from ..checkpoint import save

        return save(self, path, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- helpers for subclasses -------------------------------------------------------------------

    def _forget_batch(self):
        """Drop what ``forward`` kept for ``backward`` (it may live on another backend)."""
        for key in [k for k in vars(self) if k.startswith("_saved")]:
            delattr(self, key)

    def _accept(self, array, what="input"):
        """``array`` on this layer's backend and dtype, or one clear error saying what to do."""
        return accept_array(self.backend, self.dtype, array, f"{self!r} {what}")

    def _saved(self, key):
        try:
            return getattr(self, key)
        except AttributeError:
            raise RuntimeError(
                f"{self!r}.backward was called before forward; call forward on the batch first."
            ) from None


def accept_array(backend: Backend, dtype, array, where: str):
    """Return ``array`` as a ``dtype`` array of ``backend``; host NumPy data is copied across.

    ``where`` names the receiver in error messages, e.g. ``"Linear(784, 10) input"``.
    """
    if backend.is_native(array):
        if array.dtype != dtype:
            _check_numeric(array.dtype, where)
            array = array.astype(dtype)
        return array
    if isinstance(array, (numpy.ndarray, numpy.generic, list, tuple, int, float)):
        host = numpy.asarray(array)
        _check_numeric(host.dtype, where)
        return backend.asarray(host, dtype=dtype)
    kind = f"{type(array).__module__}.{type(array).__name__}"
    raise BackendError(
        f"{where} is a {kind}, but this layer computes on the {backend.name!r} backend; "
        f"pass a NumPy array or an array of that backend, or move the model with "
        f".to_backend(...) to the backend that owns the data."
    )


def _check_numeric(dtype, where):
    if numpy.dtype(dtype).kind not in "fiub":
        raise BackendError(
            f"{where} has dtype {dtype}, but fastprop needs real numbers; convert it with "
            ".astype(numpy.float32) first."
        )
