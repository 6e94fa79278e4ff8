"""``cupy.cuda.memory``: the pool and pointer types."""

from .. import MemoryPointer, MemoryPool  # noqa: F401


def __getattr__(name):
    raise AttributeError(f"cupy.cuda.memory.{name} is not provided by the stand-in cupy")
