"""The kernel of the data-augmentation contract method: images flipped and moved, one per thread."""

from __future__ import annotations

import numba
from numba import prange

from .intrinsics import JIT


@numba.njit(parallel=True, **JIT)
def shift_images(images, shifts, flips, out):
    """``out[i]``: ``images[i]`` ``(C, H, W)`` flipped left to right where ``flips[i]``, then moved by
    ``shifts[i]`` (rows, columns), zeros where nothing moved in."""
    n, channels, height, width = images.shape
    zero = out.dtype.type(0)
    for i in prange(n):
        down, right, flip = shifts[i, 0], shifts[i, 1], flips[i]
        for c in range(channels):
            for r in range(height):
                source_row = r - down
                for column in range(width):
                    source_column = column - right
                    if 0 <= source_row < height and 0 <= source_column < width:
                        if flip:
                            source_column = width - 1 - source_column
                        out[i, c, r, column] = images[i, c, source_row, source_column]
                    else:
                        out[i, c, r, column] = zero
