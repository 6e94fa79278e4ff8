"""One epoch of training: the notebook's step loop or the backend's whole-epoch program
(:class:`EpochRunner`), the epochs' shuffles, and the divergence replay."""

from __future__ import annotations

import math

import numpy


from ..distributed import Communicator, shard
from ..layers.base import takes_input_gradient
from ..lowering import lower
from .trainee import Trainee
from .progress import progress_bar


class TrainingDiverged(FloatingPointError):
    """The training cost became infinite or NaN; the network holds the last finite step."""


def epoch_generator(seed, epoch) -> numpy.random.Generator:
    """The generator that shuffles epoch ``epoch`` (from 1) of a run seeded with ``seed``."""
    return numpy.random.default_rng((seed, epoch))


class EpochRunner:
    """Runs one epoch of the notebook's step loop, or the backend's whole-epoch program when it has one
    (``fast=False`` keeps the step loop). ``net`` is a network or its :class:`Trainee`. ``augment`` (a
    :class:`~fastprop.augment.Augment`) changes each training batch, drawing from ``seed``."""

    def __init__(self, net, cost_function, images, targets, batch_size, optimizer, *, fast=True,
                 communicator=None, augment=None, seed=None):
        self.trainee = trainee = Trainee.of(net)
        self.net, self.cost, self.optimizer = trainee.net, cost_function, optimizer
        net = self.net
        self.communicator = communicator if communicator is not None else Communicator()
        self.gradients = None  # one flat buffer holding every gradient, all-reduced once per step
        if self.communicator.size > 1:
            fast, self.gradients = False, trainee.flatten_gradients()
        self.images, self.targets = images, targets
        self.backend = backend = trainee.backend
        n = images.shape[0]
        self.batches = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        self.full = self.batches[0][1]
        self.buffers = (
            backend.zeros((self.full,) + images.shape[1:], images.dtype),
            backend.zeros((self.full,) + targets.shape[1:], targets.dtype),
        )
        self.in_order = None  # the rows in order, made when the fast path needs an order
        self.augment, self.seed, self.epoch_number = augment, seed, 0
        if augment is not None:
            augment.check(images)
        self.fast = None
        if optimizer is None and fast and augment is None:
            plan = lower(net, cost_function)
            if plan is not None:
                self.fast = backend.compile_epoch(plan, images, targets, batch_size)
        self._start = _Snapshot(trainee)  # the epoch's starting parameters, refilled every epoch
        self._input_gradient = takes_input_gradient(net)

    def run(self, order, rate, bar=None):
        """One epoch of steps over the batches (in ``order``, or in row order when it is None);
        return the mean over batches of the mean cost per element (a float)."""
        self.trainee.set_mode(True)
        if self.fast is None:
            return float(sum(self._steps(order, rate, bar))) / len(self.batches)
        if order is None:
            if self.in_order is None:
                self.in_order = self.backend.asarray(numpy.arange(self.images.shape[0]))
            order = self.in_order
        costs = self.backend.to_numpy(self.fast(order, rate))
        self.trainee.gradients_written()  # the gradients hold the last batch's sums, as after a step
        if bar is not None:
            bar.update(len(self.batches))
        return self._mean_cost(float(costs[0]), float(costs[1]))

    def _mean_cost(self, full_total, last_total):
        """The mean over batches of the mean cost per element, from the fast path's two sums."""
        elements = int(numpy.prod(self.targets.shape[1:]))
        last = self.batches[-1][1] - self.batches[-1][0]
        mean = full_total / (self.full * elements)
        if last != self.full:
            mean += last_total / (last * elements)
        return mean / len(self.batches)

    def epoch(self, order, rate, e, quiet=False):
        """Run one epoch with its bar; return its cost, or raise TrainingDiverged at the last finite step."""
        trainee = self.trainee
        self.epoch_number = e
        self._start.refill(trainee)
        generators = trainee.generators()
        random_states = [generator.bit_generator.state for generator in generators]
        optimizer_state = self.optimizer.snapshot() if self.optimizer is not None else None
        with progress_bar(total=len(self.batches), desc=f"training, e={e}", disable=quiet) as bar:
            cost = self.run(order, rate, bar)
        if math.isfinite(cost) and self._finite():
            return cost
        # Find the batch that diverged: replay the epoch from its start (same parameters, optimizer
        # state and dropout masks), checking the cost and the parameters after every batch.
        self._start.restore(trainee)
        for generator, state in zip(generators, random_states):
            generator.bit_generator.state = state
        if self.optimizer is not None:
            self.optimizer.restore(optimizer_state)
        total = 0.0
        for batch, (cost, finite) in enumerate(self._steps(order, rate, None, check=_Snapshot(trainee))):
            if not (math.isfinite(cost) and finite):
                what = (f"the cost became {cost}" if not math.isfinite(cost)
                        else "its update made a parameter infinite or NaN")
                raise TrainingDiverged(
                    f"Training diverged at e={e}, batch {batch}: {what} at learning rate {rate:g}; the "
                    "network keeps its last finite step. Lower the learning rate, or use "
                    "SoftmaxCrossEntropy on logits instead of SoftMax+CrossEntropy."
                )
            total += cost
        return total / len(self.batches)

    def _finite(self) -> bool:
        """True when every parameter of the network is finite."""
        xp = self.backend.xp
        return all(bool(xp.isfinite(parameter.value).all()) for parameter in self.trainee.parameters())

    def _steps(self, order, rate, bar, check=None):
        """Yield each batch's mean cost per element (a backend scalar).

        With ``check`` (a :class:`_Snapshot` to reuse), yield ``(cost as a float, parameters finite)``
        instead and stop at the first non-finite step, with the parameters as before that step.
        """
        net, backend, cost_function, communicator = self.net, self.backend, self.cost, self.communicator
        trainee = self.trainee
        for batch, (start, stop) in enumerate(self.batches):
            rows, first = stop - start, start
            if communicator.size > 1:
                start, stop = shard(start, stop, communicator)
            if order is None:
                x, t = self.images[start:stop], self.targets[start:stop]
            else:
                index = order[start:stop]
                whole = stop - start == self.full
                x = backend.take_rows(self.images, index, out=self.buffers[0] if whole else None)
                t = backend.take_rows(self.targets, index, out=self.buffers[1] if whole else None)
            if self.augment is not None:  # moves drawn for the whole batch: the same on any rank count
                x = self.augment(backend, x, self.epoch_number, batch, self.seed, part=(start - first, rows))
            if check is not None:
                check.refill(trainee)
            net.zero_gradients()
            prediction = net.forward(x)
            cost = cost_function.estimate(t, prediction)
            if communicator.size == 1:
                mean = backend.xp.mean(backend.xp.asarray(cost), dtype=numpy.float64)
            else:  # the mean over the global batch; every rank sees the same value
                xp = backend.xp
                total = numpy.array([float(xp.sum(xp.asarray(cost), dtype=numpy.float64)), float(cost.size)])
                communicator.allreduce(total)
                mean = total[0] / total[1]
            if check is not None and not math.isfinite(float(mean)):
                yield float(mean), True
                return
            gradient = cost_function.gradient(cost)
            if self._input_gradient:
                net.backward(gradient, input_gradient=False)
            else:
                net.backward(gradient)
            if self.gradients is not None:
                if getattr(cost_function, "reduction", "sum") == "mean":  # this rank divided by its rows
                    self.gradients *= (stop - start) / rows
                communicator.allreduce(self.gradients)
            if self.optimizer is None:
                net.update_parameters(rate)
            else:
                self.optimizer.step(net, rate)
            if bar is not None:
                bar.update()
            if check is None:
                yield mean
            elif self._finite():
                yield float(mean), True
            else:
                check.restore(trainee)
                yield float(mean), False
                return


class _Snapshot:
    """A copy of a :class:`Trainee`'s state (parameters and running statistics), and of the NumPy arrays
    its foreign layers hold, to go back to."""

    def __init__(self, trainee, values=None):
        self.values = [array.copy() for array in trainee.state_arrays()] if values is None else values
        self.foreign = trainee.foreign_arrays()

    def refill(self, trainee):
        """Copy the network's current state into this snapshot (reusing its arrays)."""
        for value, array in zip(self.values, trainee.state_arrays()):
            value[...] = array
        self.foreign = trainee.foreign_arrays()

    def restore(self, trainee):
        """Put the snapshot back into the network: fastprop's arrays in place, foreign ones rebound."""
        for array, value in zip(trainee.state_arrays(), self.values):
            array[...] = value
        for layer, arrays in self.foreign:
            for key, array in arrays.items():
                setattr(layer, key, array.copy())
