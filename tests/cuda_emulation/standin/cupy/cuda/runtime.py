"""``cupy.cuda.runtime``: one CUDA device with an NVIDIA H200's properties (compute capability 9.0)."""

from __future__ import annotations

is_hip = False
_is_hip_environment = False
streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2
cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

_TOTAL_MEMORY = 150_754_820_096  # 143,771 MiB

#: What cudaGetDeviceProperties reports for an H200 SXM (the keys CuPy's getDeviceProperties gives).
_H200 = {
    "name": b"NVIDIA H200", "totalGlobalMem": _TOTAL_MEMORY, "sharedMemPerBlock": 49152,
    "regsPerBlock": 65536,
    "warpSize": 32, "maxThreadsPerBlock": 1024, "maxThreadsDim": (1024, 1024, 64),
    "maxGridSize": (2147483647, 65535, 65535), "clockRate": 1980000, "totalConstMem": 65536, "major": 9,
    "minor": 0, "textureAlignment": 512, "texturePitchAlignment": 32, "multiProcessorCount": 132,
    "kernelExecTimeoutEnabled": 0, "integrated": 0, "canMapHostMemory": 1, "computeMode": 0,
    "concurrentKernels": 1, "ECCEnabled": 1, "pciBusID": 0x19, "pciDeviceID": 0, "pciDomainID": 0,
    "tccDriver": 0, "memoryClockRate": 3201000, "memoryBusWidth": 6144, "l2CacheSize": 52428800,
    "maxThreadsPerMultiProcessor": 2048, "isMultiGpuBoard": 0, "cooperativeLaunch": 1,
    "cooperativeMultiDeviceLaunch": 0, "asyncEngineCount": 4, "unifiedAddressing": 1, "managedMemory": 1,
    "sharedMemPerMultiprocessor": 233472, "regsPerMultiprocessor": 65536, "sharedMemPerBlockOptin": 232448,
    "maxBlocksPerMultiProcessor": 32, "reservedSharedMemPerBlock": 1024, "persistingL2CacheMaxSize": 32505856,
}
#: A test may change these (e.g. fewer multiprocessors, so that small epochs take the larger tiles).
properties = dict(_H200)


class CUDARuntimeError(RuntimeError):
    """An error the CUDA runtime reports."""


def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    if device != 0:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal ({device})")


def getDeviceProperties(device):
    if device != 0:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal ({device})")
    return dict(properties)


def runtimeGetVersion():
    return 12080


def driverGetVersion():
    return 12080


def deviceSynchronize():
    from .. import _refuse_in_capture

    _refuse_in_capture("cupy.cuda.runtime.deviceSynchronize")


def memGetInfo():
    from .. import get_default_memory_pool

    used = get_default_memory_pool().total_bytes()
    return _TOTAL_MEMORY - used, _TOTAL_MEMORY


def __getattr__(name):
    raise AttributeError(f"cupy.cuda.runtime.{name} is not provided by the stand-in cupy")
