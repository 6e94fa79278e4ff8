"""The generator that initialises parameters when a layer is given no ``rng`` of its own."""

from __future__ import annotations

import numpy

_generator = numpy.random.default_rng()


def seed(value: int | None) -> None:
    """Reseed the generator that layers draw their initial parameters from (``None``: fresh entropy)."""
    global _generator
    _generator = numpy.random.default_rng(value)


def generator(rng=None) -> numpy.random.Generator:
    """``rng`` as a Generator: a Generator as is, an int as a seed, ``None`` for the shared one."""
    if rng is None:
        return _generator
    if isinstance(rng, numpy.random.Generator):
        return rng
    return numpy.random.default_rng(rng)
