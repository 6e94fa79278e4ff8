"""Data augmentation for image rows: random shifts (crops of zero-padded images) and horizontal flips."""

from __future__ import annotations

import numpy

from .checks import is_whole, whole_number


class Augment:
    """Move each training image by up to ``shift`` pixels in each direction (zeros fill what moves
    in: a random crop of the image padded with ``shift`` zeros) and, with ``flip``, mirror half of
    them left to right. Off by default in :func:`fastprop.train` (``augment=None``); flips suit
    pictures whose mirror image is the same class (clothing) and not digits or letters.

    Training rows are images of ``image_shape`` (``(H, W)``, or ``(C, H, W)`` channels first, as
    ``Reshape`` reads them). Each batch is changed on the network's backend
    (:meth:`~fastprop.backends.Backend.shift_images`); validation and test rows never are. The moves
    of batch ``b`` of epoch ``e`` are drawn from ``numpy.random.default_rng((seed, e, b))``, where
    ``seed`` is this object's, or else the run's: a seeded run repeats exactly, and a resumed one
    continues as the uninterrupted one would (the run's seed is in its checkpoint).
    """

    def __init__(self, shift=2, flip=False, image_shape=(28, 28), seed=None):
        if not (is_whole(shift) and shift >= 0):
            raise ValueError(f"Augment needs shift as a whole number of pixels >= 0, got {shift!r}.")
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
        if len(shape) not in (2, 3) or not all(is_whole(size) and size >= 1 for size in shape):
            raise ValueError(
                f"Augment needs image_shape as (H, W) or (C, H, W) positive sizes, got {image_shape!r}.")
        self.shift, self.flip = int(shift), bool(flip)
        self.image_shape = (1,) * (3 - len(shape)) + tuple(int(size) for size in shape)
        self.seed = None if seed is None else whole_number(seed, "seed", "Augment")

    def __repr__(self) -> str:
        return f"Augment(shift={self.shift}, flip={self.flip}, image_shape={self.image_shape[-2:]})"

    def check(self, images):
        """One clear error unless training rows of ``images`` hold images of :attr:`image_shape`."""
        size = int(numpy.prod(self.image_shape))
        if images.ndim != 2 or images.shape[1] != size:
            raise ValueError(
                f"{self!r} needs training rows of {size} values (images of {self.image_shape}), got "
                f"{tuple(images.shape)}; give Augment the image_shape of the rows."
            )

    def moves(self, rows, epoch, batch, seed):
        """``(shifts, flips)`` of batch ``batch`` of epoch ``epoch`` (host arrays for ``rows`` images)."""
        rng = numpy.random.default_rng((self.seed if self.seed is not None else seed or 0, epoch, batch))
        shifts = rng.integers(-self.shift, self.shift + 1, size=(rows, 2))
        flips = rng.random(rows) < 0.5 if self.flip else numpy.zeros(rows, bool)
        return shifts, flips

    def __call__(self, backend, images, epoch, batch, seed=None, part=None):
        """The batch ``images`` ``(rows, size)`` moved as :meth:`moves` draws it: a new array. With
        ``part=(first, total)`` the rows are ``[first, first + rows)`` of a batch of ``total`` (one
        rank's share under data-parallel training), moved as in the whole batch."""
        first, total = part if part is not None else (0, images.shape[0])
        shifts, flips = self.moves(total, epoch, batch, seed)
        shifts, flips = shifts[first:first + images.shape[0]], flips[first:first + images.shape[0]]
        moved = backend.shift_images(images.reshape((images.shape[0],) + self.image_shape), shifts, flips)
        return moved.reshape(images.shape)
