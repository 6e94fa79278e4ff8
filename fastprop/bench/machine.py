"""What a benchmark ran on: CPU, cores, BLAS and its threads, Numba, GPUs, versions and the date."""

from __future__ import annotations

import datetime
import os
import platform
import sys

import numpy

from fastprop.backends import available_backends, load_backend


#: CPU flags (as /proc/cpuinfo spells them) that say which vector instructions kernels can use.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def machine_info(statuses=None) -> dict:
    """CPU, cores, BLAS and its threads, Numba threads, GPU names, versions and the date."""
    from threadpoolctl import threadpool_info

    statuses = statuses or available_backends()
    fields = {}  # the first CPU's entries of /proc/cpuinfo
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())  # x86, Arm
    info = {"cpu": cpu, "vector_extensions": [flag for flag in VECTOR_FLAGS if flag in flags],
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "blas": [{key: pool.get(key)
                      for key in ("internal_api", "version", "num_threads", "threading_layer")}
                     for pool in threadpool_info() if pool.get("user_api") == "blas"],
            "backends": {n: load_backend(n).info() if s.available else {"unavailable": s.reason}
                         for n, s in statuses.items()}}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import numba
        info["numba"] = {"version": numba.__version__, "threads": numba.get_num_threads()}
        if statuses.get("numba") is not None and statuses["numba"].available:
            numba_info = info["backends"]["numba"]
            info["numba"].update(threading_layer=numba_info["threading_layer"],
                                 instruction_set=numba_info["instruction_set"])
    except ImportError:
        pass
    info["gpus"] = [s.device for s in statuses.values()
                    if s.available and not str(s.device).startswith("cpu")]
    torch = sys.modules.get("torch")  # reported when a torch peer ran; never imported just for this
    if torch is not None:
        info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        if torch.cuda.is_available():
            info["gpus"].append(torch.cuda.get_device_name())
    return info
