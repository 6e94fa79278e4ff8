"""The layer classes a checkpoint may hold, by the class name written in the file.

A layer class registers itself by declaring ``checkpoint_arguments`` (see
:class:`fastprop.Layer`), so :mod:`fastprop.checkpoint` needs to import no layer module, and loading
builds nothing but these classes.
"""

from __future__ import annotations

#: Class name -> class.
CHECKPOINT_LAYERS: dict = {}


def register(cls):
    """Let checkpoints hold layers of class ``cls`` (under its ``__name__``); returns ``cls``."""
    CHECKPOINT_LAYERS[cls.__name__] = cls
    return cls
