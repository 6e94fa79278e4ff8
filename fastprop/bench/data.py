"""The rows every benchmark trains on: Fashion-MNIST when it is on disk, seeded pixels otherwise."""

from __future__ import annotations

import functools

import numpy

#: What ``load_rows`` accepts as ``source``.
SOURCES = ("auto", "fashion-mnist", "synthetic", "continuous")


@functools.lru_cache(maxsize=2)
def load_rows(rows=50_000, source="auto"):
    """``(images, one-hot targets, source)``: float32 host arrays of shapes (rows, 784) and (rows, 10).

    ``source`` is "fashion-mnist" (never downloaded), "synthetic" (seeded uint8 pixels scaled to
    [0, 1], random labels), "continuous" (seeded uniform floats in [0, 1), random labels: inputs that
    are not 8-bit pixels, which the Numba W1 kernel reads as floats) or "auto": Fashion-MNIST when
    it is on disk with enough rows.
    """
    if source in ("auto", "fashion-mnist"):
        try:
            from ..datasets import load_split

            images, targets, _, _ = load_split("fashion-mnist", download=False)
            if len(images) < rows:
                raise ValueError(f"Fashion-MNIST has {len(images)} training rows, fewer than {rows}")
            return images[:rows], targets[:rows], "fashion-mnist"
        except Exception:  # any missing or unreadable copy means synthetic data, unless asked for
            if source != "auto":
                raise
    rng = numpy.random.default_rng(0)
    if source == "continuous":
        images = rng.random((rows, 784), dtype=numpy.float32)
    else:
        images = rng.integers(0, 256, (rows, 784), dtype=numpy.uint8).astype(numpy.float32) / 255
    labels = numpy.eye(10, dtype=numpy.float32)[rng.integers(0, 10, rows)]
    return images, labels, "continuous" if source == "continuous" else "synthetic"
