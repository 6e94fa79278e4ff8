"""The notebook's ``Layer`` base class and the checks every layer makes at its boundary."""

from __future__ import annotations

import inspect
import weakref

from fastprop.backends import Backend, current, load_backend, resolve_dtype
from fastprop.backends.arrays import accept_array

from .. import checkpoint
from ..layer_types import register


class Parameter:
    """One trainable array of a layer and its gradient, made once with the layer.

    ``value`` and ``gradient`` may be replaced (``layer.w = array`` does), the Parameter never is:
    optimizers keep their state per Parameter, and whole-epoch programs read the arrays through it.
    ``fresh`` is true right after ``zero_gradients``: the next backward may overwrite the gradient
    instead of adding to it. ``version`` counts replacements of either array.
    """

    __slots__ = ("_layer", "name", "value", "gradient", "fresh", "version", "__weakref__")

    def __init__(self, layer, name, value, gradient=None):
        self._layer = weakref.ref(layer)
        self.name, self.value, self.gradient = name, value, gradient
        self.fresh, self.version = True, 0

    @property
    def layer(self):
        """The layer this parameter belongs to."""
        return self._layer()

    def rebind_gradient(self, array):
        """Hold ``array`` (the gradient's shape, its values copied in) as the gradient from now on: a
        view into one flat buffer, so that data-parallel training sums every gradient in one call."""
        if tuple(array.shape) != tuple(self.gradient.shape):
            raise ValueError(f"{self!r} cannot take a gradient of shape {tuple(array.shape)}.")
        array[...] = self.gradient
        self.gradient = array
        self.version += 1

    def __repr__(self) -> str:
        shape = tuple(getattr(self.value, "shape", ()))
        return f"Parameter({self.layer!r}.{self.name}, shape={shape})"


class BackendArray:
    """A layer attribute holding an array on the layer's backend and dtype: a parameter's value
    (``w``, ``b``) or, with ``gradient_of``, its gradient (``dw``, ``db``).

    Assigning converts the value at the boundary (host NumPy data is copied to the layer's backend
    and dtype; the caller's array is never updated in place) and refuses a change of shape, so
    ``layer.w = numpy_array`` is the notebook's way to set weights and every part of fastprop (fused
    kernels, optimizers, checkpoints, early stopping) sees the new array through the layer's
    :class:`Parameter`.
    """

    def __init__(self, gradient_of=None):
        self.gradient_of = gradient_of

    def __set_name__(self, owner, name):
        self.name = name
        self.parameter = self.gradient_of or name
        self.field = "gradient" if self.gradient_of else "value"

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        parameter = layer.__dict__.get("_parameters", {}).get(self.parameter)
        value = getattr(parameter, self.field, None)
        if value is None:
            raise AttributeError(f"{type(layer).__name__} has no array {self.name!r} yet")
        return value

    def __set__(self, layer, value):
        where = f"{layer!r}.{self.name}"
        array = accept_array(layer.backend, layer.dtype, value, where)
        parameters = layer.__dict__.setdefault("_parameters", {})
        parameter = parameters.get(self.parameter)
        old = getattr(parameter, self.field, None)
        reference = old if old is not None else getattr(parameter, "value", None)
        if reference is not None and tuple(array.shape) != tuple(reference.shape):
            raise ValueError(
                f"{where} must keep its shape {tuple(reference.shape)}, got an array of shape "
                f"{tuple(array.shape)}; build a new layer for other sizes."
            )
        if array is value or not array.flags.c_contiguous:
            array = array.copy(order="C")  # ours alone: updates in place never reach the caller's array
        if parameter is None:
            if self.gradient_of:
                raise AttributeError(f"{where} cannot be set before {self.gradient_of}")
            parameters[self.parameter] = Parameter(layer, self.parameter, array)
        else:
            setattr(parameter, self.field, array)
            parameter.version += 1


class Layer:
    """A differentiable block, the notebook's base class.

    ``forward(x_in)`` maps a batch and keeps what ``backward`` needs; ``backward(d_out)`` takes the
    gradient of the output and returns the gradient of the input. Parameter gradients accumulate
    across ``backward`` calls until ``zero_gradients``; ``update_parameters(learning_rate)`` takes
    one plain SGD step on those summed gradients. A fastprop layer computes on the backend and dtype
    that were current when it was built. A subclass written the notebook's way (its own
    ``__init__`` without ``super().__init__()``, ``backward(self, d_out)``) works too.
    """

    #: Names of the trainable arrays, in order; each has one :class:`Parameter` (value and gradient),
    #: shown as attributes by :class:`BackendArray` descriptors (``w`` and ``dw`` for Linear).
    parameter_names: tuple[str, ...] = ()
    #: Attributes that hold the last batch (``x_in``, ``x_out``), cleared when the layer moves.
    batch_attributes: tuple[str, ...] = ()
    #: Arrays the layer keeps across batches without training them (a batch norm's running
    #: statistics): on the layer's backend and dtype, moved by ``to_backend``, held by checkpoints,
    #: and restored with the parameters when training goes back to an earlier state.
    buffer_names: tuple[str, ...] = ()
    #: Dropout and friends behave differently in training and evaluation.
    training: bool = True
    #: The constructor arguments a checkpoint stores, read from the attributes of the same names.
    #: A class that declares them (``()`` for none) registers itself for checkpoints; ``None``
    #: (inherited from here) leaves it out, and saving it is an error naming the layer.
    checkpoint_arguments: tuple | None = None

    def __init_subclass__(cls, **options):
        super().__init_subclass__(**options)
        if cls.__dict__.get("checkpoint_arguments") is not None:
            register(cls)

    def __init__(self):
        selection = current()
        self.backend: Backend = selection.backend
        self.dtype = selection.dtype

    # A subclass that never called __init__ computes on the backend current when it is used.
    @property
    def backend(self) -> Backend:
        return self.__dict__.get("_backend") or current().backend

    @backend.setter
    def backend(self, value):
        self.__dict__["_backend"] = value

    @property
    def dtype(self):
        return self.__dict__.get("_dtype") or current().dtype

    @dtype.setter
    def dtype(self, value):
        self.__dict__["_dtype"] = value

    # -- the notebook's interface ---------------------------------------------------------------

    def forward(self, x_in):
        """Return this layer's output for the batch ``x_in`` of shape ``(batch, features)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, d_out, input_gradient=True):
        """Take ``d_out = dL/doutput`` of the last ``forward``; accumulate parameter gradients.

        Returns ``d_in = dL/dinput``, or ``None`` when ``input_gradient`` is false.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def zero_gradients(self):
        """Reset every accumulated parameter gradient to zero."""
        for parameter in self.parameters():
            self.backend.fill(parameter.gradient, 0)
            parameter.fresh = True

    def update_parameters(self, learning_rate):
        """One SGD step on the summed gradients: ``value -= learning_rate * gradient``."""
        for parameter in self.parameters():
            self.backend.sgd_update(parameter.value, parameter.gradient, learning_rate)

    # -- beyond the notebook --------------------------------------------------------------------

    def gradients_fresh(self) -> bool:
        """True right after ``zero_gradients``: the next backward may overwrite the parameter gradients."""
        return all(parameter.fresh for parameter in self.parameters())

    def gradients_written(self):
        """Record that the parameter gradients hold sums: the next backward adds to them."""
        for parameter in self.parameters():
            parameter.fresh = False

    def __call__(self, x_in):
        return self.forward(x_in)

    def parameters(self) -> list[Parameter]:
        """This layer's trainable arrays with their gradients: the same objects on every call."""
        return self.own_parameters()

    def own_parameters(self) -> list[Parameter]:
        """The parameters this layer declares itself (a Network's are in its children)."""
        known = self.__dict__.get("_parameters", {})
        return [known[name] for name in self.parameter_names if name in known]

    def buffers(self) -> list:
        """The arrays named by :attr:`buffer_names` (a Network's are in its children), in order: the
        layer's own arrays, updated in place."""
        return self.own_buffers()

    def own_buffers(self) -> list:
        return [getattr(self, name) for name in self.buffer_names]

    def leaves(self) -> list[Layer]:
        """The plain layers inside this one, in order (a plain layer is its only leaf)."""
        return [self]

    def to_backend(self, name: str | None = None, dtype=None) -> Layer:
        """Move parameters and gradients to backend ``name`` and/or ``dtype``, in place; returns self."""
        backend = load_backend(name) if name is not None else self.backend
        dtype = resolve_dtype(dtype) if dtype is not None else self.dtype
        for parameter in self.parameters():
            for field in ("value", "gradient"):
                array = getattr(parameter, field)
                if backend is self.backend:  # only the dtype changes: convert where the array lives
                    moved = array.astype(dtype, copy=True)
                else:
                    moved = backend.asarray(self.backend.to_numpy(array), dtype=dtype)
                setattr(parameter, field, moved)
            parameter.version += 1
        for name in self.buffer_names:
            array = getattr(self, name)
            moved = (array.astype(dtype, copy=True) if backend is self.backend
                     else backend.asarray(self.backend.to_numpy(array), dtype=dtype))
            setattr(self, name, moved)
        self.backend, self.dtype = backend, dtype
        self._forget_batch()
        return self

    def train(self, mode: bool = True) -> Layer:
        """Switch training mode on (dropout active) or off; returns self."""
        self.training = mode
        return self

    def eval(self) -> Layer:
        """Switch to evaluation mode (same as ``train(False)``); returns self."""
        return self.train(False)

    def save(self, path, **options):
        """Write this layer (usually a Network) to a checkpoint; see :func:`fastprop.checkpoint.save`."""
        return checkpoint.save(self, path, **options)

    # -- checkpoints ------------------------------------------------------------------------------

    def children(self) -> list:
        """The layers inside this one that a checkpoint stores with it (a Network's ``layers``)."""
        return []

    @classmethod
    def parameter_shapes(cls, **arguments) -> dict:
        """``{parameter name: shape}`` of a layer built with ``arguments`` (checked before loading)."""
        return {}

    @classmethod
    def buffer_shapes(cls, **arguments) -> dict:
        """``{buffer name: shape}`` of a layer built with ``arguments`` (checked before loading)."""
        return {}

    @classmethod
    def restored(cls, arguments, parameters, children):
        """A layer rebuilt from a checkpoint on the current backend: its constructor ``arguments``,
        host arrays for its ``parameters`` and its rebuilt ``children``. Draws nothing at random."""
        layer = cls(**arguments)
        for name, array in parameters.items():
            setattr(layer, name, array)
        return layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- helpers for subclasses -------------------------------------------------------------------

    def hold(self, **arrays):
        """Hold ``arrays`` as the batch attributes they name (from :attr:`batch_attributes`), as this
        layer's own ``forward`` would have: a fused stage that computed them for it hands them over
        here, so the layer's attributes are only ever set by the layer."""
        unknown = sorted(set(arrays) - set(self.batch_attributes))
        if unknown:
            raise AttributeError(
                f"{self!r} keeps {', '.join(self.batch_attributes) or 'nothing'} for its backward pass, "
                f"not {', '.join(unknown)}; hand over only the batch attributes it declares."
            )
        for name, value in arrays.items():
            setattr(self, name, value)

    def forget_input(self):
        """Keep nothing of the last batch: a fused stage that computes past this layer (a pooling
        after a fused convolution, a batch norm folded into the weights) says so, instead of leaving
        the last batch's arrays."""
        self._forget_batch()

    def _forget_batch(self):
        """Drop what ``forward`` kept for ``backward`` (it may live on another backend)."""
        for key in self.batch_attributes:
            setattr(self, key, None)

    def _accept(self, array, what="input"):
        """``array`` on this layer's backend and dtype, or one clear error saying what to do."""
        return accept_array(self.backend, self.dtype, array, f"{self!r} {what}")

    def _saved(self, key):
        value = getattr(self, key, None)
        if value is None:
            raise RuntimeError(
                f"{self!r}.backward was called before forward; call forward on the batch first."
            )
        return value


class WeightedLayer(Layer):
    """A layer with weights ``w`` and a bias ``b`` (gradients ``dw``, ``db``), set up by
    ``_configure(**arguments)`` then ``_allocate(w, b)``: a checkpoint rebuilds it without drawing
    random weights it would overwrite."""

    parameter_names = ("w", "b")
    w, b = BackendArray(), BackendArray()
    dw, db = BackendArray(gradient_of="w"), BackendArray(gradient_of="b")

    @classmethod
    def restored(cls, arguments, parameters, children):
        layer = cls.__new__(cls)  # no random draw: the arrays come from the checkpoint
        layer._configure(**arguments)
        layer._allocate(parameters["w"], parameters["b"])
        return layer


def is_layer(obj) -> bool:
    """True for anything with the notebook's Layer methods (fastprop's layers and foreign ones)."""
    return all(callable(getattr(obj, name, None))
               for name in ("forward", "backward", "zero_gradients", "update_parameters"))


def leaves_of(layer) -> list:
    """The plain layers inside ``layer``, in order: a fastprop layer's :meth:`Layer.leaves`; for a
    foreign container holding a ``layers`` list (the notebook's own ``Network``), its layers' leaves."""
    if isinstance(layer, Layer):
        return layer.leaves()
    inner = getattr(layer, "layers", None)
    if isinstance(inner, (list, tuple)) and inner and all(map(is_layer, inner)):
        return [leaf for item in inner for leaf in leaves_of(item)]
    return [layer]


def is_native(layer) -> bool:
    """True for a layer fastprop manages: a :class:`Layer` whose ``__init__`` ran (it knows its
    backend and declares its parameters). Anything else with the Layer methods is *foreign*: it
    trains through its own ``update_parameters``, and features that need to see its arrays
    (optimizers, checkpoints, moving between backends) say so when asked to handle it."""
    return isinstance(layer, Layer) and "_backend" in vars(layer)


def same_device(first, second) -> bool:
    """True when two fastprop layers compute on the same backend in the same dtype (so they fuse)."""
    return (is_native(first) and is_native(second) and first.backend is second.backend
            and first.dtype == second.dtype)


def takes_input_gradient(layer) -> bool:
    """True when ``layer.backward`` accepts the ``input_gradient`` flag (fastprop's layers do; a
    layer written the notebook's way takes ``d_out`` alone)."""
    if isinstance(layer, Layer) and type(layer).backward is not Layer.backward:
        try:
            parameters = inspect.signature(layer.backward).parameters
        except (TypeError, ValueError):
            return False
        return "input_gradient" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return False
