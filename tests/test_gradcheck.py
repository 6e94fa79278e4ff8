"""``fastprop.gradcheck`` tells a wrong gradient from a right one (every layer passing it: the layer
tests)."""

from __future__ import annotations

import fastprop
from fastprop import Linear, MeanSquareError, Network, Sigmoid
from tests.helpers import random_batch


def test_gradcheck_catches_a_wrong_gradient():
    class Doubled(Sigmoid):
        def backward(self, d_out, input_gradient=True):
            return 2 * super().backward(d_out, input_gradient)

    with fastprop.use_backend("numpy", dtype="float64"):
        net = Network([Linear(4, 3), Doubled()], fuse=False)
    x, target = random_batch(5, 4, 3)
    result = fastprop.gradcheck(net, MeanSquareError(), x, target)
    assert not result.passed(1e-3)
    assert result.errors["0 Linear(4, 3).w"] > 0.4
