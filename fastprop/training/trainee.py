"""The training loop's one view of a network: :class:`Trainee`, made once at each entry point.

fastprop's own networks (a :class:`~fastprop.Layer`: a ``Network`` or a single layer) declare their
backend, dtype, parameters and training mode. Anything else with the notebook's Layer methods is
*foreign*: the notebook's own ``Network`` of student layers, or a student's layer inside a fastprop
``Network``. A foreign model computes on the current backend, has no parameters fastprop can see
and no mode to set; the NumPy arrays its layers hold are what a snapshot copies. The entry points
(``train``, ``train_epoch``, ``validate``, ``predict``) wrap the network once, and every other part
of the loop asks the :class:`Trainee`, never the network's type.
"""

from __future__ import annotations

import contextlib

import numpy

from fastprop.backends import get_backend, get_dtype

from ..layers.base import Layer, is_native, leaves_of


class Trainee:
    """A network as the training loop sees it: ``net``, ``backend``, ``dtype``, its ``parameters()``,
    its mode, its random generators and its ``foreign`` layers (fastprop cannot see their parameters)."""

    def __init__(self, net):
        self.net = net
        self._native = isinstance(net, Layer)
        self.backend, self.dtype = (net.backend, net.dtype) if self._native else (get_backend(), get_dtype())
        #: The leaves that are not fastprop layers, in order.
        self.foreign = [leaf for leaf in leaves_of(net) if not is_native(leaf)]

    @classmethod
    def of(cls, net) -> Trainee:
        """``net`` wrapped, or ``net`` itself when it is already a :class:`Trainee`."""
        return net if isinstance(net, Trainee) else cls(net)

    def parameters(self) -> list:
        """The network's fastprop parameters, in order (none for a foreign model)."""
        return self.net.parameters() if self._native else []

    def state_arrays(self) -> list:
        """The arrays that make the network's state, updated in place by training: every parameter's
        value, then every buffer (running statistics)."""
        if not self._native:
            return []
        return [parameter.value for parameter in self.net.parameters()] + self.net.buffers()

    def set_mode(self, training: bool) -> None:
        """``net.train(training)``; a foreign model has no mode to set."""
        if self._native:
            self.net.train(training)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode for the ``with`` block (no dropout draws), the previous mode restored after."""
        was_training = getattr(self.net, "training", True)
        self.set_mode(False)
        try:
            yield self.net
        finally:
            self.set_mode(was_training)

    def refuse_foreign(self, what="Data-parallel training cannot share the arrays of",
                       remedy="; build the network from fastprop layers."):
        """One error naming the first foreign layer, if there is one."""
        if self.foreign:
            raise ValueError(f"{what} {self.foreign[0]!r}, which is not a fastprop Layer{remedy}")

    def check_optimizer(self, optimizer):
        """An optimizer updates fastprop parameters only: refuse one for a model with foreign layers."""
        if optimizer is not None:
            self.refuse_foreign(f"train cannot use {optimizer!r} on", " (an optimizer updates fastprop "
                                "parameters only); train with plain SGD (optimizer=None), which calls its "
                                "update_parameters, or build that layer from fastprop layers.")

    def foreign_arrays(self) -> list:
        """``[(layer, {attribute: copy})]`` for the NumPy arrays held by each foreign layer."""
        return [(layer, {key: value.copy() for key, value in vars(layer).items()
                         if isinstance(value, numpy.ndarray)}) for layer in self.foreign]

    def generators(self) -> list:
        """The distinct random generators the network's layers draw from (dropout masks)."""
        found = {}
        for leaf in leaves_of(self.net):
            rng = getattr(leaf, "rng", None)
            if isinstance(rng, numpy.random.Generator):
                found.setdefault(id(rng), rng)
        return list(found.values())

    def generator_states(self) -> list:
        return [generator.bit_generator.state for generator in self.generators()]

    def set_generator_states(self, states) -> None:
        """Put saved generator states back (None: nothing saved)."""
        if states is None:
            return
        generators = self.generators()
        if len(states) != len(generators):
            raise ValueError(
                f"The checkpoint holds {len(states)} random generator states but the network draws from "
                f"{len(generators)}; resume with the network the checkpoint was saved from."
            )
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state

    def flatten_gradients(self):
        """One flat buffer holding every parameter gradient (each gradient becomes a view of it), so
        that data-parallel training sums all gradients in one collective call."""
        self.refuse_foreign()
        parameters = self.parameters()
        flat = self.backend.zeros(sum(int(parameter.gradient.size) for parameter in parameters), self.dtype)
        offset = 0
        for parameter in parameters:
            size = int(parameter.gradient.size)
            parameter.rebind_gradient(flat[offset:offset + size].reshape(parameter.gradient.shape))
            offset += size
        return flat

    def gradients_written(self):
        """Record that the gradients hold sums (after a whole-epoch program ran the steps)."""
        if self._native:
            self.net.gradients_written()

    def start_together(self, optimizer, communicator):
        """Give every rank rank 0's parameters and optimizer state."""
        self.refuse_foreign()
        for parameter in self.parameters():
            communicator.broadcast(parameter.value)
        if optimizer is not None:
            for array in optimizer.state_arrays():
                communicator.broadcast(array)
