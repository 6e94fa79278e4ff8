"""``cupy.cuda.driver``: the driver's error type."""

from tests.cuda_emulation.host_module import CUDADriverError  # noqa: F401


def __getattr__(name):
    raise AttributeError(f"cupy.cuda.driver.{name} is not provided by the stand-in cupy")
