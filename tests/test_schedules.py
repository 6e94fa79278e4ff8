"""Learning-rate schedules (``fastprop.schedules``): their factors, against formulas written out by
hand, and bad arguments refused."""

from __future__ import annotations

import math

import numpy
import pytest

from fastprop.schedules import CosineLR, StepLR, constant


def test_schedule_factors():
    assert [constant(e) for e in (1, 50)] == [1.0, 1.0]
    assert [StepLR(2, 0.5)(e) for e in range(1, 7)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cosine = CosineLR(4)
    expected = [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0, 0.0]
    numpy.testing.assert_allclose([cosine(e) for e in range(1, 7)], expected, atol=1e-15)
    floor = CosineLR(2, min_factor=0.1)
    numpy.testing.assert_allclose([floor(e) for e in (1, 2, 3, 9)], [1.0, 0.55, 0.1, 0.1])
    for bad in (lambda: StepLR(0), lambda: CosineLR(3, min_factor=2), lambda: cosine(0)):
        with pytest.raises(ValueError):
            bad()
