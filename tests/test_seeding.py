"""``fastprop.seed`` and ``rng=`` (``fastprop.seeding``): seeded layers repeat and unseeded ones differ,
and forked workers draw their own dropout masks unless seeded."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Linear


def test_seeded_layers_are_identical_and_unseeded_differ():
    assert numpy.array_equal(Linear(4, 3, rng=7).w, Linear(4, 3, rng=7).w)
    state = numpy.random.get_state()
    assert numpy.array_equal(Linear(4, 3, rng=numpy.random.default_rng(7)).w, Linear(4, 3, rng=7).w)
    assert numpy.array_equal(numpy.random.get_state()[1], state[1])  # rng= leaves np.random alone
    fastprop.seed(1)
    first = Linear(4, 3).w
    fastprop.seed(1)
    assert numpy.array_equal(first, Linear(4, 3).w)
    assert not numpy.array_equal(first, Linear(4, 3).w)
    fastprop.seed(None)  # back to NumPy's global generator
    numpy.random.seed(1)
    from_global = Linear(4, 3).w
    numpy.random.seed(1)
    assert numpy.array_equal(from_global, (0.1 * numpy.random.randn(3, 4)).astype(numpy.float32))


def _mask_in_child(layer_and_queue):
    layer, queue = layer_and_queue
    queue.put(numpy.asarray(layer.forward(numpy.ones((4, 50)))))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
@pytest.mark.parametrize("seeded", [False, True], ids=["fresh entropy", "seeded"])
def test_forked_workers_draw_their_own_dropout_masks_unless_seeded(seeded):
    """Without fastprop.seed, each forked child draws new masks (not its parent's next ones); with a
    seed, every child repeats the seeded stream, as asked."""
    import multiprocessing

    from fastprop import Dropout

    fastprop.seed(11 if seeded else None)
    layer = Dropout(0.5)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_mask_in_child, args=((layer, queue),)) for _ in range(2)]
    for child in children:
        child.start()
    masks = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
    mine = numpy.asarray(layer.forward(numpy.ones((4, 50))))
    same = [numpy.array_equal(masks[0], masks[1]), numpy.array_equal(masks[0], mine)]
    assert same == ([True, True] if seeded else [False, False])
