"""``cupy.cuda.compiler``: the compile error type."""

from tests.cuda_emulation.host_module import CompileException  # noqa: F401


def __getattr__(name):
    raise AttributeError(f"cupy.cuda.compiler.{name} is not provided by the stand-in cupy")
