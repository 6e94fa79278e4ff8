"""Where layers draw their initial parameters and dropout masks from.

Without an ``rng`` of its own, a ``Linear`` draws its weights from NumPy's global generator, exactly
as the notebook's ``initial_sigma * np.random.randn(n_out, n_in)``: ``np.random.seed(k)`` before
building a network gives the notebook's weights. :func:`seed` switches every layer built afterwards
(and dropout masks) to fastprop's own seeded generator instead.
"""

from __future__ import annotations

import os

import numpy

_generator = numpy.random.default_rng()
_seeded = False


def _fresh_entropy_in_child():
    """A forked child must not repeat its parent's "fresh" draws (every worker the same dropout
    masks): without :func:`seed`, the shared generator starts again from new entropy, in place, so
    layers already holding it draw anew too. Seeded runs stay as seeded: the user asked for them."""
    if not _seeded:
        _generator.bit_generator.state = numpy.random.PCG64().state


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_entropy_in_child)


def seed(value: int | None) -> None:
    """Draw initial parameters and dropout masks from a generator seeded with ``value`` from now on.

    ``None`` goes back to the defaults: NumPy's global generator for weights, fresh entropy for masks
    (fresh again in every process forked afterwards; a seeded generator is copied into forked
    processes as it is, so seeded runs repeat there too).
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
