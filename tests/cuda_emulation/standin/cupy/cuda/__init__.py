"""``cupy.cuda`` of the stand-in: one device (an H200's properties), streams with graph capture."""

from __future__ import annotations

import itertools

import sys

from . import compiler, driver, graph, memory, runtime  # noqa: F401
from .graph import Graph

_cupy = sys.modules[__name__.rsplit(".", 1)[0]]  # the stand-in cupy package
_STANDIN = _cupy._STANDIN
_stream_handles = itertools.count(0x1000)


def is_available():
    return True


def get_device_id():
    return 0


class Device:
    """``cupy.cuda.Device(device=None)``: the one emulated device, id 0."""

    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal ({device})")
        self.id = device

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None

    def use(self):
        return None

    def synchronize(self):
        _cupy._refuse_in_capture("Device.synchronize")

    @property
    def compute_capability(self):
        props = runtime.getDeviceProperties(self.id)
        return f"{props['major']}{props['minor']}"

    @property
    def mem_info(self):
        return runtime.memGetInfo()

    def __getattr__(self, name):
        raise AttributeError(f"cupy.cuda.Device.{name} is not provided by {_STANDIN}")


class Stream:
    """``cupy.cuda.Stream(null=False, non_blocking=False, ptds=False)``. Work runs at once, in order;
    between ``begin_capture`` and ``end_capture`` the kernel launches made while it is the current
    stream are recorded into the graph that ``end_capture`` returns."""

    null = None
    ptds = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        if null:
            self.ptr, self.device_id = 0, -1
        elif ptds:
            self.ptr, self.device_id = 2, -1
        else:
            self.ptr, self.device_id = next(_stream_handles), 0
        self.non_blocking = bool(non_blocking)
        self._captured = None

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return self.ptr

    def __enter__(self):
        _cupy._streams.stack.append(self)
        return self

    def __exit__(self, *args):
        _cupy._streams.stack.pop()

    def use(self):
        if _cupy._streams.stack:
            _cupy._streams.stack[-1] = self
        else:
            _cupy._streams.stack.append(self)
        return self

    @property
    def done(self):
        return self._captured is None

    def synchronize(self):
        if self._captured is not None:
            raise runtime.CUDARuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted when "
                                           "stream is capturing")

    def begin_capture(self, mode=None):
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self._captured is not None:
            raise runtime.CUDARuntimeError("cudaErrorIllegalState: the stream is capturing already")
        self._captured = []

    def end_capture(self):
        if self._captured is None:
            raise runtime.CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        recorded, self._captured = self._captured, None
        return Graph._from_launches(recorded)

    def is_capturing(self):
        return self._captured is not None

    def __getattr__(self, name):
        raise AttributeError(f"cupy.cuda.Stream.{name} is not provided by {_STANDIN}")


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)


def get_current_stream(device_id=-1):
    return _cupy._current_stream()


def __getattr__(name):
    raise AttributeError(f"cupy.cuda.{name} is not provided by {_STANDIN}")
