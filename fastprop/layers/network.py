"""``Network``: layers applied in sequence, itself a ``Layer`` so networks nest."""

from __future__ import annotations

import numpy

from fastprop.backends import current
from .activations import ReLU, Sigmoid
from .base import Layer, is_layer, is_native, leaves_of, same_device, takes_input_gradient
from .conv import Conv2D, MaxPool2D
from .fused import (BatchNormReLU, Conv2DReLU, Conv2DReLUMaxPool, LinearReLU, LinearSigmoid,
                    WeightedBatchNormReLU)
from .linear import Linear
from .norm import BatchNorm1D, BatchNorm2D

#: Runs of layer classes that run as one fused stage (the longest match wins), and the stage class.
FUSED_STAGES = {
    (Conv2D, ReLU, MaxPool2D): Conv2DReLUMaxPool,
    (Conv2D, BatchNorm2D, ReLU): WeightedBatchNormReLU,
    (Linear, BatchNorm1D, ReLU): WeightedBatchNormReLU,
    (BatchNorm2D, ReLU): BatchNormReLU,
    (BatchNorm1D, ReLU): BatchNormReLU,
    (Linear, Sigmoid): LinearSigmoid,
    (Linear, ReLU): LinearReLU,
    (Conv2D, ReLU): Conv2DReLU,
}


class _NotebookLayer:
    """A layer whose ``backward`` takes ``d_out`` alone, as the notebook writes them."""

    def __init__(self, layer):
        self.layer = layer

    def forward(self, x_in):
        return self.layer.forward(x_in)

    def backward(self, d_out, input_gradient=True):
        return self.layer.backward(d_out)


class _HostLayer(_NotebookLayer):
    """A layer of the notebook's own classes (NumPy code, not a fastprop Layer) in a network that
    computes on a device: its input and gradient come to the host, its results go back."""

    def __init__(self, layer, backend):
        super().__init__(layer)
        self.backend = backend

    def forward(self, x_in):
        return self.backend.asarray(self.layer.forward(self.backend.to_numpy(x_in)), dtype=x_in.dtype)

    def backward(self, d_out, input_gradient=True):
        host = self.backend.to_numpy(d_out)
        d_in = self.layer.backward(host, input_gradient) if takes_input_gradient(self.layer) else (
            self.layer.backward(host))
        return None if d_in is None else self.backend.asarray(d_in, dtype=d_out.dtype)


def _may_learn(stage) -> bool:
    """False for a stage known to hold no parameters (a fastprop layer without any, with no layer
    of other classes inside); fused stages and layers of other classes may learn."""
    if not isinstance(stage, Layer):
        return True
    return bool(stage.parameters()) or any(not is_native(leaf) for leaf in leaves_of(stage))


def _placed(layers, where):
    """``(index path, layer)`` for every layer in ``layers`` and inside the networks among them."""
    for index, layer in enumerate(layers):
        path = (*where, index)
        yield path, layer
        inner = getattr(layer, "layers", None)
        if isinstance(inner, (list, tuple)) and inner is not layers:
            yield from _placed(inner, path)


def _index(path):
    return ".".join(map(str, path))


class Network(Layer):
    """Apply ``layers`` in order; ``backward`` runs them in reverse and returns the input gradient.

    ``layers`` is kept as given (``net.layers is layers``), and may hold any object with the
    notebook's Layer methods (``forward``, ``backward``, ``zero_gradients``,
    ``update_parameters``): a student's own layer sits next to fastprop's. With ``fuse=True`` (the
    default) each ``Linear`` directly followed by a ``Sigmoid`` or a ``ReLU``, and each ``Conv2D`` directly
    followed by a ``ReLU`` (and a ``MaxPool2D``), on the same backend runs as one fused stage; the
    numbers match the unfused path within float rounding.
    ``backward(d_out, input_gradient=False)`` skips the first layer's input gradient, which
    training never uses and which costs as much as a weight gradient.
    """

    checkpoint_arguments = ("fuse", "input_gradient")

    def __init__(self, layers, *, fuse=True, input_gradient=True):
        for index, layer in enumerate(layers):
            if not is_layer(layer):
                raise TypeError(
                    f"Network layer {index} is a {type(layer).__name__}, which has no forward, backward, "
                    "zero_gradients and update_parameters methods; build networks from layers such as "
                    "Linear(784, 10) and Sigmoid()."
                )
        self.layers = layers
        self.fuse, self.input_gradient = fuse, input_gradient
        self._stages_key = None
        self._check_each_layer_once()

    def _check_each_layer_once(self):
        """Refuse a layer object that sits in two places: it keeps one input for its backward pass and
        one set of gradients, so the second place would give wrong gradients silently."""
        seen = {}
        for where, layer in _placed(self.layers, ()):
            first = seen.setdefault(id(layer), where)
            if first is not where:
                raise ValueError(
                    f"Network got the same {layer!r} object at layers {_index(first)} and {_index(where)}; "
                    "a layer keeps its last input and one set of gradients, so it cannot sit in two "
                    "places: give each place its own layer (copy.deepcopy(layer) makes one)."
                )

    @property
    def backend(self):
        """The backend of the first fastprop layer inside (the current backend when there is none)."""
        layer = self._first_native()
        return layer.backend if layer is not None else current().backend

    @property
    def dtype(self):
        layer = self._first_native()
        return layer.dtype if layer is not None else current().dtype

    def _first_native(self):
        return next((leaf for leaf in self.leaves() if is_native(leaf)), None)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Network([{inner}])"

    def foreign_layers(self) -> list:
        """The leaves that are not fastprop layers (checkpoints and optimizers cannot handle them)."""
        return [leaf for leaf in self.leaves() if not is_native(leaf)]

    def _stages(self):
        """The stages ``forward`` and ``backward`` run: each layer, or a fused run of layers as one."""
        key = (self.fuse, tuple(map(id, self.layers)))
        if key != self._stages_key:
            self._check_each_layer_once()  # the list may have changed since the network was built
            stages, layers, i = [], self.layers, 0
            while i < len(layers):
                run = self._fused_run(layers[i:]) if self.fuse else None
                if run is not None:
                    stages.append(FUSED_STAGES[tuple(map(type, run))](*run))
                    i += len(run)
                    continue
                layer = layers[i]
                if not isinstance(layer, Layer) and self.backend.xp is not numpy:
                    stages.append(_HostLayer(layer, self.backend))
                else:
                    stages.append(layer if takes_input_gradient(layer) else _NotebookLayer(layer))
                i += 1
            self._stage_list, self._stages_key = stages, key
        return self._stage_list

    @staticmethod
    def _fused_run(layers):
        """The longest run at the start of ``layers`` that :data:`FUSED_STAGES` fuses, or ``None``."""
        for size in (3, 2):
            run = layers[:size]
            if (len(run) == size and tuple(map(type, run)) in FUSED_STAGES
                    and all(same_device(run[0], layer) for layer in run[1:])):
                return run
        return None

    def forward(self, x_in):
        x = x_in
        for stage in self._stages():
            x = stage.forward(x)
        return x

    def backward(self, d_out, input_gradient=None):
        if input_gradient is None:
            input_gradient = self.input_gradient
        stages, d = self._stages(), d_out
        # without the input gradient, the stages before the first one that learns (a Reshape before
        # a convolution, say) need none either: their backward is skipped, and that stage's too
        first = 0 if input_gradient else next(
            (index for index, stage in enumerate(stages) if _may_learn(stage)), len(stages))
        for index in range(len(stages) - 1, first - 1, -1):
            d = stages[index].backward(d, input_gradient or index > first)
        return d if input_gradient else None

    def zero_gradients(self):
        for layer in self.layers:
            layer.zero_gradients()

    def update_parameters(self, learning_rate):
        for layer in self.layers:
            layer.update_parameters(learning_rate)

    def parameters(self):
        return [p for layer in self.layers if isinstance(layer, Layer) for p in layer.parameters()]

    def buffers(self):
        return [b for layer in self.layers if isinstance(layer, Layer) for b in layer.buffers()]

    def leaves(self):
        return [leaf for layer in self.layers for leaf in leaves_of(layer)]

    def children(self):
        return list(self.layers)

    @classmethod
    def restored(cls, arguments, parameters, children):
        for flag, value in arguments.items():
            if not isinstance(value, bool):
                raise ValueError(f"Network needs {flag} to be True or False, got {value!r}.")
        return cls(list(children), **arguments)

    def to_backend(self, name=None, dtype=None):
        foreign = self.foreign_layers()
        if foreign:
            raise TypeError(
                f"Cannot move {self!r} to another backend or dtype: {foreign[0]!r} is not a fastprop "
                "Layer and fastprop cannot move its arrays; move or rebuild that layer yourself."
            )
        for layer in self.layers:
            layer.to_backend(name, dtype)
        self._stages_key = None  # fused stages keep arrays of the old backend: make them anew
        return self

    def train(self, mode=True):
        self.training = mode
        for layer in self.layers:
            if callable(getattr(layer, "train", None)):
                layer.train(mode)
        return self
