"""Data augmentation: the moves against a reference written here, seeded draws, resumes, bad input."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Augment, BatchNorm1D, Linear, Network, ReLU, SoftmaxCrossEntropy
from fastprop.backends import load_backend


def _reference(images, shifts, flips):
    """Each image padded with zeros, flipped, then cut back at the shifted place, pixel by pixel."""
    out = numpy.zeros_like(images)
    n, channels, height, width = images.shape
    for i in range(n):
        source = images[i, :, :, ::-1] if flips[i] else images[i]
        for r in range(height):
            for c in range(width):
                row, column = r - shifts[i, 0], c - shifts[i, 1]
                if 0 <= row < height and 0 <= column < width:
                    out[i, :, r, c] = source[:, row, column]
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_moves_match_the_reference_on_every_backend(backend_name, dtype):
    rng = numpy.random.default_rng(0)
    backend = load_backend(backend_name)
    images = rng.random((40, 2, 5, 7)).astype(dtype)
    shifts, flips = rng.integers(-8, 9, (40, 2)), rng.random(40) < 0.5  # some moves leave nothing
    moved = backend.to_numpy(backend.shift_images(backend.asarray(images), shifts, flips))
    assert numpy.array_equal(moved, _reference(images, shifts, flips))
    assert moved.dtype == numpy.dtype(dtype)


def test_moves_are_seeded_per_batch_and_flips_are_off_unless_asked():
    augment = Augment(shift=3)
    first, again = augment.moves(64, 2, 5, seed=11), augment.moves(64, 2, 5, seed=11)
    assert all(numpy.array_equal(a, b) for a, b in zip(first, again))
    assert not numpy.array_equal(first[0], augment.moves(64, 2, 6, seed=11)[0])  # another batch
    assert not first[1].any() and first[0].min() == -3 and first[0].max() == 3
    assert Augment(flip=True).moves(64, 1, 1, seed=0)[1].any()
    own = Augment(seed=4)
    assert numpy.array_equal(own.moves(8, 1, 1, seed=1)[0], own.moves(8, 1, 1, seed=2)[0])  # its seed wins


def test_a_rank_share_moves_as_in_the_whole_batch():
    augment, backend = Augment(shift=2, flip=True, image_shape=(4, 4)), load_backend("numpy")
    images = numpy.random.default_rng(1).random((10, 16))
    whole = augment(backend, images, 3, 2, seed=5)
    share = augment(backend, images[4:7], 3, 2, seed=5, part=(4, 10))
    assert numpy.array_equal(share, whole[4:7])


def _run(backend_name, epochs, checkpoint=None, seed=7):
    rng = numpy.random.default_rng(2)
    images, labels = rng.random((120, 36)), rng.integers(0, 3, 120)
    with fastprop.use_backend(backend_name, "float64"):
        net = Network([Linear(36, 8, rng=1), BatchNorm1D(8), ReLU(), Linear(8, 3, rng=2)])
    history = fastprop.train(net, SoftmaxCrossEntropy(), epochs, 32, 0.1, data=(images, labels, images[:30],
                             labels[:30]), quiet=True, verbose=False, augment=Augment(1, image_shape=(6, 6)),
                             seed=seed, checkpoint=checkpoint)
    return history, [net.backend.to_numpy(a) for a in [p.value for p in net.parameters()] + net.buffers()]


def test_augmented_training_repeats_and_resumes_exactly(backend_name, tmp_path):
    history, arrays = _run(backend_name, 3)
    again, same = _run(backend_name, 3)
    assert history.cost == again.cost and all(numpy.array_equal(a, b) for a, b in zip(arrays, same))
    _, other = _run(backend_name, 3, seed=8)
    assert not numpy.array_equal(arrays[0], other[0])  # the seed draws the moves
    path = tmp_path / "run.npz"
    _run(backend_name, 1, checkpoint=path, seed=None)  # the drawn seed goes into the checkpoint
    resumed, resumed_arrays = _run(backend_name, 3, checkpoint=path, seed=None)
    straight, straight_arrays = _run(backend_name, 3, checkpoint=tmp_path / "straight.npz",
                                     seed=int(fastprop.load_checkpoint(path).loop.shuffle_seed))
    assert resumed.cost == straight.cost
    assert all(numpy.array_equal(a, b) for a, b in zip(resumed_arrays, straight_arrays))


def test_bad_settings_and_rows_are_refused_with_one_sentence():
    for bad in (dict(shift=-1), dict(shift=1.5), dict(image_shape=(28,)), dict(image_shape=(0, 28))):
        with pytest.raises(ValueError, match="Augment needs"):
            Augment(**bad)
    with pytest.raises(ValueError, match=r"needs training rows of 784 values .* got \(10, 100\)"):
        Augment().check(numpy.zeros((10, 100)))
    with pytest.raises(TypeError, match="augment must be a fastprop.Augment"):
        data = (numpy.zeros((4, 4)), numpy.zeros(4, int), numpy.zeros((2, 4)), numpy.zeros(2, int))
        fastprop.train(Network([Linear(4, 2)]), SoftmaxCrossEntropy(), 1, 2, 0.1, data=data, augment="shift")
