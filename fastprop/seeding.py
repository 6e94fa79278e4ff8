"""Where layers draw their initial parameters and dropout masks from.

Without an ``rng`` of its own, a ``Linear`` draws its weights from NumPy's global generator, exactly
as the notebook's ``initial_sigma * np.random.randn(n_out, n_in)``: ``np.random.seed(k)`` before
building a network gives the notebook's weights. :func:`seed` switches every layer built afterwards
(and dropout masks) to fastprop's own seeded generator instead.
"""

from __future__ import annotations

import numpy

_generator = numpy.random.default_rng()
_seeded = False


def seed(value: int | None) -> None:
    """Draw initial parameters and dropout masks from a generator seeded with ``value`` from now on.

    ``None`` goes back to the defaults: NumPy's global generator for weights, fresh entropy for masks.
    """
    global _generator, _seeded
    _generator = numpy.random.default_rng(value)
    _seeded = value is not None


def generator(rng=None) -> numpy.random.Generator:
    """``rng`` as a Generator: a Generator as is, an int as a seed, ``None`` for fastprop's shared one."""
    if rng is None:
        return _generator
    if isinstance(rng, numpy.random.Generator):
        return rng
    return numpy.random.default_rng(rng)


def weights_generator(rng=None):
    """Where initial weights come from: ``rng``, else the generator of :func:`seed` once it was
    called, else NumPy's global generator (``numpy.random``, as the notebook)."""
    if rng is None and not _seeded:
        return numpy.random.mtrand._rand
    return generator(rng)
