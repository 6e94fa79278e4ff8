"""``gradcheck``: backpropagated gradients against central finite differences, in float64."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy

from fastprop.backends import computing_on


@dataclass
class GradcheckResult:
    """Worst relative error of each checked array, keyed ``"<index> <layer>.<parameter>"``."""

    errors: dict

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)

    def passed(self, tolerance=1e-6) -> bool:
        return self.worst <= tolerance

    def __str__(self) -> str:
        width = max(map(len, self.errors), default=0)
        return "\n".join(f"{name:<{width}}  {error:.3e}" for name, error in self.errors.items())


def gradcheck(net_or_layer, cost, x, target, *, epsilon=1e-6, max_entries=64, seed=0, training=False):
    """Compare every parameter gradient and the input gradient with central finite differences.

    The check runs on a float64 copy of ``net_or_layer`` on its own backend (the original is not
    touched). For each array, up to ``max_entries`` randomly chosen entries are perturbed by
    ``±epsilon``; the error of an array is ``max|analytic - numeric| / max(max|analytic|,
    max|numeric|, 1e-12)`` over those entries. Returns a :class:`GradcheckResult`.

    The model runs in evaluation mode, so that dropout draws no new masks between the perturbed
    evaluations; ``training=True`` checks the training-mode computation instead (a batch norm's
    batch statistics), for models that draw nothing at random.
    """
    model = copy.deepcopy(net_or_layer).to_backend(dtype=numpy.float64)
    model.train(training)
    cost = copy.deepcopy(cost)  # estimate stores its arguments: leave the caller's cost untouched
    backend = model.backend
    x, target = (backend.asarray(backend.to_numpy(a), numpy.float64) for a in (x, target))

    def loss(inputs):
        return float(backend.to_numpy(cost.estimate(target, model.forward(inputs))).sum())

    with computing_on(backend, numpy.float64):  # the cost computes on the model's backend
        model.zero_gradients()
        dx = model.backward(cost.gradient(cost.estimate(target, model.forward(x))), input_gradient=True)
        rng = numpy.random.default_rng(seed)
        errors = {}
        for index, parameter in enumerate(model.parameters()):
            name = f"{index} {parameter.layer!r}.{parameter.name}"
            analytic = backend.to_numpy(parameter.gradient).copy()
            errors[name] = _compare(
                parameter.value, analytic, lambda: loss(x), backend, rng, epsilon, max_entries
            )
        dx = backend.to_numpy(dx).reshape(x.shape)  # a layer may give one sample a batch axis of 1
        errors["input"] = _compare(x, dx.copy(), lambda: loss(x), backend, rng, epsilon, max_entries)
    return GradcheckResult(errors)


def _compare(array, analytic, evaluate, backend, rng, epsilon, max_entries):
    flat_size = analytic.size
    picks = rng.choice(flat_size, size=min(flat_size, max_entries), replace=False)
    numeric = numpy.empty(len(picks))
    for k, flat in enumerate(picks):
        index = numpy.unravel_index(flat, analytic.shape)
        original = float(backend.to_numpy(array[index]))
        array[index] = original + epsilon
        plus = evaluate()
        array[index] = original - epsilon
        minus = evaluate()
        array[index] = original
        numeric[k] = (plus - minus) / (2 * epsilon)
    chosen = analytic.reshape(-1)[picks]
    scale = max(numpy.abs(chosen).max(initial=0.0), numpy.abs(numeric).max(initial=0.0), 1e-12)
    return float(numpy.abs(chosen - numeric).max(initial=0.0) / scale)
