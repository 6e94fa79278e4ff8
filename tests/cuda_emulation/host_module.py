"""CuPy's kernel classes, emulated on the CPU: ``RawModule``/``RawKernel`` and ``ElementwiseKernel``.

``RawModule(code=..., options=..., name_expressions=...)`` builds ``code`` with g++ after
``host_cuda.h`` (the CUDA execution model on fibers, see there), and ``get_function(name)`` gives a
kernel called as CuPy's ``RawKernel`` is, ``kernel(grid, block, args, shared_mem=0)``. Each launch is
checked as a GPU would see it, then run thread by thread:

* the arguments against the kernel's C signature, which g++ reports for each instantiation: CuPy
  passes a pointer for a ``cupy.ndarray`` and the raw bytes of a scalar (a Python int as 8 bytes, a
  Python float as a double), so a scalar of another width or kind, a host array, or an array of
  another dtype or layout where the kernel takes a pointer, is a bug that this reports;
* the grid and block against CUDA's limits (1024 threads per block, and the kernel's
  ``__launch_bounds__``; grid y and z up to 65535) and the static shared memory a kernel touches
  against the 48 KiB a block may have;
* after the launch, the guard bytes around every array it was given (written past either end).

Blocks and the threads of a block run in the order of :func:`schedule` (forward, reverse or shuffled
from a seed), so that tests can run kernels under several orders and require the same bits.

Builds are cached per source hash in ``$FASTPROP_CUDA_EMULATION_CACHE`` (default: a folder in the
system's temporary directory), so a test session builds each kernel family once per dtype.
``$FASTPROP_CUDA_EMULATION_FLAGS`` adds g++ flags: ``-DHOST_CUDA_SWAPCONTEXT`` (fibers switched by
swapcontext alone), ``-fsanitize=undefined`` (UBSan in the kernels; its reports go to stderr).

The array side (what a device array is, allocating one, recording launches while a stream is
captured, guard bytes) is the stand-in ``cupy``'s: it installs itself as :data:`runtime`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy

HERE = Path(__file__).resolve().parent
HEADER = HERE / "host_cuda.h"
COMPILER = os.environ.get("CXX", "g++")
#: g++ flags of every build: C++17 (as NVRTC of CUDA 12 defaults to), no FMA contraction (the host's
#: arithmetic, operation by operation), per-variable sections (the linker script collects the
#: __shared__ variables), each library's emulator state its own (hidden, no unique symbols), and
#: glibc's longjmp without its fortify check (fibers jump between stacks).
FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fdata-sections", "-fno-gnu-unique", "-fvisibility=hidden",
         "-ffp-contract=off", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0", "-w")
#: Links the kernels' function-local statics (their __shared__ variables; nothing else in a kernel
#: source is a function-local static) into one section that host_cuda.h poisons before each block.
LINKER_SCRIPT = """SECTIONS
{
  host_cuda_shared (NOLOAD) : ALIGN(256)
  {
    __start_host_cuda_shared = .;
    *(.bss._ZZ[0-9]*)
    *(.bss._ZZN[0-9]*)
    *(.bss._ZZNK[0-9]*)
    __stop_host_cuda_shared = .;
  }
}
INSERT AFTER .bss;
"""
EXPORT = '__attribute__((visibility("default")))'

#: CUDA's limits, as an H200 (compute capability 9.0) has them.
MAX_THREADS, MAX_BLOCK, MAX_GRID = 1024, (1024, 1024, 64), (2**31 - 1, 65535, 65535)
SHARED_PER_BLOCK = 48 * 1024  # static shared memory a kernel may have, and static + dynamic without opt-in

ORDERS = {"forward": 0, "reverse": 1, "shuffled": 2}

#: C types of kernel parameters -> the NumPy dtype of what must be passed.
C_TYPES = {
    "bool": numpy.bool_, "char": numpy.int8, "signed char": numpy.int8, "unsigned char": numpy.uint8,
    "short": numpy.int16, "unsigned short": numpy.uint16, "int": numpy.int32, "unsigned int": numpy.uint32,
    "long": numpy.int64, "unsigned long": numpy.uint64, "long long": numpy.int64,
    "unsigned long long": numpy.uint64, "float": numpy.float32, "double": numpy.float64,
}
#: NumPy dtypes -> C type names, as CuPy's ElementwiseKernel typedefs them.
TYPENAMES = {
    "bool": "bool", "int8": "signed char", "uint8": "unsigned char", "int16": "short",
    "uint16": "unsigned short",
    "int32": "int", "uint32": "unsigned int", "int64": "long long", "uint64": "unsigned long long",
    "float32": "float", "float64": "double",
}


class CUDADriverError(RuntimeError):
    """What CUDA's driver answers to a launch it refuses (cupy.cuda.driver.CUDADriverError)."""


class CompileException(Exception):
    """A kernel source that does not build (cupy.cuda.compiler.CompileException)."""


class EmulationError(AssertionError):
    """A kernel did something a GPU would not forgive: a race the emulator caught, a barrier in
    divergent code, a warp intrinsic with a lane that has left, a write outside an array, too much
    shared memory; or a launch passed arguments that do not match the kernel's signature."""


# ------------------------------------------------------------------------------ the array side


class Runtime:
    """What a launch needs from the array library; the stand-in ``cupy`` installs its own."""

    def is_device_array(self, value) -> bool:
        return False

    def empty(self, shape, dtype):
        raise NotImplementedError("no array library installed (import the stand-in cupy first)")

    def enqueue(self, description: str, run) -> None:
        """Run ``run()`` on the current stream: now, or when a graph that captures it is launched."""
        run()

    def check_guards(self, arrays, description: str) -> None:
        """Raise EmulationError when a launch wrote outside one of ``arrays``."""


runtime = Runtime()


# ------------------------------------------------------------------------------ thread orders


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The order in which blocks, and the threads of a block, run: "forward", "reverse", "shuffled"."""

    threads: str = "forward"
    blocks: str = "forward"
    seed: int = 0

    def __post_init__(self):
        for order in (self.threads, self.blocks):
            if order not in ORDERS:
                raise ValueError(f"unknown order {order!r}; use one of {sorted(ORDERS)}")


_schedule = threading.local()


def current_schedule() -> Schedule:
    return getattr(_schedule, "value", Schedule())


@contextlib.contextmanager
def schedule(threads="forward", blocks=None, seed=0):
    """Launches inside run blocks and threads in these orders (blocks as threads unless given)."""
    saved = current_schedule()
    _schedule.value = Schedule(threads, threads if blocks is None else blocks, seed)
    try:
        yield _schedule.value
    finally:
        _schedule.value = saved


#: Schedules that a correct kernel gives the same bits under (atomics aside: see EpochProgram tests).
SCHEDULES = (Schedule("forward"), Schedule("reverse"), Schedule("shuffled", "shuffled", 1))


# ------------------------------------------------------------------------------ building


def cache_folder() -> Path:
    folder = os.environ.get("FASTPROP_CUDA_EMULATION_CACHE")
    path = Path(folder) if folder else Path(tempfile.gettempdir()) / f"fastprop-cuda-emulation-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclasses.dataclass
class Library:
    path: Path
    dll: ctypes.CDLL
    shared: list  # [(offset in the shared section, size, name)]


_libraries: dict[str, Library] = {}
_build_lock = threading.Lock()


def available() -> str | None:
    """Why the emulator cannot run here, or None."""
    if shutil.which(COMPILER) is None:
        return f"{COMPILER} is not on PATH"
    if shutil.which("nm") is None:
        return "nm (binutils) is not on PATH"
    return None


def build(source: str, extra_flags=()) -> Library:
    """``source`` (C++ including host_cuda.h) built into a shared library, loaded; cached by hash."""
    flags = FLAGS + tuple(extra_flags) + tuple(os.environ.get("FASTPROP_CUDA_EMULATION_FLAGS", "").split())
    text = "\0".join((source, HEADER.read_text(), LINKER_SCRIPT, *flags))
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    with _build_lock:
        if key in _libraries:
            return _libraries[key]
        folder = cache_folder()
        library = folder / f"{key}.so"
        if not library.exists():
            script = folder / "host_cuda_shared.ld"
            if not script.exists() or script.read_text() != LINKER_SCRIPT:
                partial = folder / f"host_cuda_shared.{os.getpid()}.ld"
                partial.write_text(LINKER_SCRIPT)
                os.replace(partial, script)
            code = folder / f"{key}.{os.getpid()}.cpp"
            code.write_text(source)
            partial = folder / f"{key}.{os.getpid()}.so"
            command = [COMPILER, *flags, f"-I{HERE}", f"-Wl,-T,{script}", "-o", str(partial), str(code)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise CompileException(f"g++ could not build the emulated kernels:\n{done.stderr[-6000:]}")
            os.replace(partial, library)
            code.unlink()
        dll = ctypes.CDLL(str(library))
        _libraries[key] = Library(library, dll, _shared_variables(library))
        return _libraries[key]


def _shared_variables(library: Path) -> list:
    """The __shared__ variables of a built library: (offset in their section, bytes, name)."""
    done = subprocess.run(["nm", "-C", "-S", "--defined-only", str(library)], capture_output=True, text=True)
    if done.returncode != 0:
        raise CompileException(f"nm failed on {library}: {done.stderr}")
    start, variables = None, []
    for line in done.stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 3 and parts[2] == "__start_host_cuda_shared":
            start = int(parts[0], 16)
        elif len(parts) == 4 and parts[2] in "bBvV" and "::" in parts[3]:
            variables.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    if start is None:
        return []
    return sorted((address - start, size, name) for address, size, name in variables if address >= start)


# ------------------------------------------------------------------------------ RawModule


def _split_top_level(text: str, separator=",") -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char in "(<[{":
            depth += 1
        elif char in ")>]}":
            depth -= 1
        if char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _balanced(text: str, start: int) -> int:
    """The index just past the parenthesis that closes the one at ``text[start]``."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    raise CompileException("unbalanced parentheses in the kernel source")


def _launch_bounds(code: str, name: str):
    """``(template header or "", bounds expression or None)`` of kernel ``name`` in ``code``."""
    pattern = re.compile(r"(template\s*<([^{};]*?)>\s*)?__global__\s+void\s+(__launch_bounds__\s*\()?")
    for found in pattern.finditer(code):
        position, expression = found.end(), None
        if found.group(3):
            close = _balanced(code, position - 1)
            expression = _split_top_level(code[position:close - 1])[0]
            position = close
        after = re.match(r"\s*(\w+)\s*\(", code[position:])
        if after and after.group(1) == name:
            return (found.group(2) or ""), expression
    return None


def _c_options(options) -> list[str]:
    """NVRTC options as g++ flags: macro definitions and the language standard; anything else fails."""
    flags = []
    for option in options:
        if option.startswith(("-D", "--define-macro=")):
            flags.append("-D" + option.split("=", 1)[1] if option.startswith("--") else option)
        elif re.fullmatch(r"--?std=c\+\+(11|14|17|20)", option):
            flags.append(option.lstrip("-").join(("-", "")))
        else:
            raise NotImplementedError(f"the CUDA emulation does not take the NVRTC option {option!r}")
    return flags


class RawModule:
    """``cupy.RawModule`` for CUDA source code: built with g++ on first use (as CuPy compiles on the
    first ``get_function``), kernels run by :mod:`host_cuda.h`'s emulator."""

    def __init__(self, *, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if path is not None:
            raise NotImplementedError("the CUDA emulation builds source code only, not cubin/ptx files")
        if not isinstance(code, str):
            raise TypeError(f"Argument 'code' has incorrect type (expected str, got {type(code).__name__})")
        if not isinstance(options, tuple):
            raise TypeError("Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        if backend != "nvrtc" and name_expressions is not None:
            raise ValueError("only nvrtc supports retrieving the mangled names for the given name "
                             "expressions")
        if backend not in ("nvrtc", "nvcc"):
            raise ValueError(f"Invalid backend {backend}")
        if enable_cooperative_groups or jitify or translate_cucomplex:
            raise NotImplementedError("the CUDA emulation has no cooperative groups, Jitify or cuComplex "
                                      "translation")
        self.code, self.options, self.backend = code, options, backend
        self.name_expressions = tuple(name_expressions) if name_expressions is not None else None
        self._flags = _c_options(options)
        self._library = None
        self._kernels = {}

    def _build(self):
        if self._library is not None:
            return self._library
        expressions = list(self.name_expressions or ())
        extern_c = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\('
        plain = re.findall(extern_c, self.code)
        wrappers, self._index = [], {}
        for index, expression in enumerate(expressions + plain):
            name = expression.split("<", 1)[0].strip()
            found = _launch_bounds(self.code, name)
            if found is None:
                raise CompileException(f"name expression {expression!r}: no __global__ kernel {name} in "
                                       "the code")
            template, bounds = found
            arguments = expression[len(name):].strip()
            wrappers.append(f"static void host_cuda_body_{index}(void** a) {{\n"
                            f"    ::host_cuda::apply(&{expression}, a); }}")
            wrappers.append(
                f'extern "C" {EXPORT} int host_cuda_signature_{index}(char* out, int size) {{\n'
                f"    return std::snprintf(out, size, \"%s\",\n"
                f"                         ::host_cuda::signature(&{expression}).c_str()); }}")
            if bounds is not None and template:
                wrappers.append(f"template <{template}> int host_cuda_bounds_of_{index}() {{\n"
                                f"    return ({bounds}); }}")
                value = f"host_cuda_bounds_of_{index}{arguments}()"
            else:
                value = f"({bounds})" if bounds is not None else "0"
            wrappers.append(f'extern "C" {EXPORT} int host_cuda_bounds_{index}() {{ return {value}; }}')
            wrappers.append(
                f'extern "C" {EXPORT} int host_cuda_launch_{index}(const ::host_cuda::Config* c, void** a, '
                f"char* e, int n) {{ return ::host_cuda::launch(c, host_cuda_body_{index}, a, e, n); }}")
            self._index[expression] = index
        for end in ("start", "stop"):
            wrappers.append(f'extern "C" {EXPORT} void* host_cuda_shared_{end}() {{\n'
                            f"    return __{end}_host_cuda_shared; }}")
        source = ('#include "host_cuda.h"\n#line 1 "kernel.cu"\n' + self.code + '\n#line 1 "wrappers"\n'
                  + "\n".join(wrappers) + "\n")
        self._library = build(source, self._flags)
        return self._library

    def get_function(self, name):
        if not isinstance(name, str):
            raise TypeError(f"Argument 'name' has incorrect type (expected str, got {type(name).__name__})")
        library = self._build()
        if name not in self._index:
            # CuPy looks a name that is no name expression up as an extern "C" symbol.
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} is neither a name "
                                  "expression of this module nor an extern \"C\" kernel)")
        if name not in self._kernels:
            self._kernels[name] = RawKernel(self, library, name, self._index[name])
        return self._kernels[name]


class RawKernel:
    """A kernel of a :class:`RawModule`: ``kernel(grid, block, args, shared_mem=0, stream=None)``."""

    def __init__(self, module, library, name, index):
        self.name, self._library, self._module = name, library, module
        dll = library.dll
        text = ctypes.create_string_buffer(4096)
        getattr(dll, f"host_cuda_signature_{index}")(text, 4096)
        self.parameters = [p for p in text.value.decode().split(",") if p]
        self.launch_bounds = int(getattr(dll, f"host_cuda_bounds_{index}")())
        self._launch = getattr(dll, f"host_cuda_launch_{index}")
        self._launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        start = ctypes.cast(dll.host_cuda_shared_start, ctypes.CFUNCTYPE(ctypes.c_void_p))()
        stop = ctypes.cast(dll.host_cuda_shared_stop, ctypes.CFUNCTYPE(ctypes.c_void_p))()
        self._shared = (start or 0, (stop or 0) - (start or 0))
        self.static_shared_bytes = 0  # the most a launch touched
        self.launches = 0

    def __repr__(self):
        return f"<emulated RawKernel {self.name}>"

    def __call__(self, grid, block, args, **kwargs):
        shared_mem = kwargs.pop("shared_mem", 0)
        stream = kwargs.pop("stream", None)
        if kwargs:
            raise TypeError(f"__call__() got unexpected keyword arguments {sorted(kwargs)}")
        if stream is not None:
            raise NotImplementedError("the emulated kernels run on the current stream only")
        for what, value in (("grid", grid), ("block", block)):
            if not isinstance(value, tuple):
                raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got "
                                f"{type(value).__name__})")
            if len(value) > 3:
                raise EmulationError(f"{self.name}: a {what} of {len(value)} dimensions; CuPy drops all "
                                     "past 3")
        grid = tuple(max(1, int(g)) for g in (grid + (1, 1))[:3])  # CuPy launches at least one of each
        block = tuple(max(1, int(b)) for b in (block + (1, 1))[:3])
        self._check_shape(grid, block, shared_mem)
        holders, arrays = self._marshal(args)
        description = f"{self.name}<<<{grid}, {block}>>>"

        def run():
            self._run(grid, block, holders, arrays, description)

        runtime.enqueue(description, run)

    def _check_shape(self, grid, block, shared_mem):
        threads = block[0] * block[1] * block[2]
        if any(b > m for b, m in zip(block, MAX_BLOCK)) or threads > MAX_THREADS:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({self.name}: block {block})")
        if self.launch_bounds and threads > self.launch_bounds:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({self.name}: {threads} "
                                  f"threads per block, above its __launch_bounds__({self.launch_bounds}))")
        if any(g > m for g, m in zip(grid, MAX_GRID)):
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({self.name}: grid {grid})")
        if not 0 <= int(shared_mem) <= SHARED_PER_BLOCK - self.static_shared_bytes:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({self.name}: {shared_mem} "
                                  f"bytes of dynamic shared memory besides {self.static_shared_bytes} "
                                  "static)")

    def _marshal(self, args):
        """The kernelParams CuPy would pass for ``args`` (ctypes objects), and the arrays among them."""
        args = tuple(args)
        if len(args) != len(self.parameters):
            raise EmulationError(f"{self.name} takes {len(self.parameters)} arguments "
                                 f"({', '.join(self.parameters)}), got {len(args)}")
        holders, arrays = [], []
        for position, (parameter, arg) in enumerate(zip(self.parameters, args)):
            what = f"{self.name}: argument {position} ({parameter})"
            if parameter.endswith("*"):
                pointee = parameter[:-1].replace("const ", "").strip()
                if arg is None:
                    holders.append(ctypes.c_void_p(0))
                    continue
                if not runtime.is_device_array(arg):
                    raise EmulationError(f"{what} got a {type(arg).__module__}.{type(arg).__name__}; CuPy "
                                         "passes a pointer for a cupy.ndarray only (a scalar or a size-1 "
                                         "host array by value)")
                if pointee != "void" and arg.dtype != numpy.dtype(C_TYPES[pointee]):
                    raise EmulationError(f"{what} got a {arg.dtype} array")
                if not arg.flags.c_contiguous:
                    raise EmulationError(f"{what} got an array that is not C-contiguous: the kernel would "
                                         "read its memory as if it were")
                holders.append(ctypes.c_void_p(_address(arg)))
                arrays.append(arg)
                continue
            value = _kernel_scalar(arg, what)
            wanted = numpy.dtype(C_TYPES[parameter.replace("const ", "")])
            if value.dtype != wanted:
                raise EmulationError(f"{what} got {type(arg).__name__} {arg!r}: CuPy passes it as "
                                     f"{value.dtype} ({value.dtype.itemsize} bytes), the kernel reads "
                                     f"{wanted.itemsize} bytes of {wanted}")
            holders.append(ctypes.create_string_buffer(value.tobytes(), 16))
        return holders, arrays

    def _run(self, grid, block, holders, arrays, description):
        current = current_schedule()
        config = _Config(grid, block, ORDERS[current.threads], ORDERS[current.blocks], current.seed)
        pointers = (ctypes.c_void_p * max(1, len(holders)))(*(ctypes.addressof(h) for h in holders))
        error = ctypes.create_string_buffer(2048)
        failed = self._launch(ctypes.byref(config), pointers, error, len(error))
        self.launches += 1
        if failed:
            raise EmulationError(f"{description}: {error.value.decode()}")
        self._measure_shared(description)
        runtime.check_guards(arrays, description)

    def _measure_shared(self, description):
        start, size = self._shared
        if not size:
            return
        section = numpy.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(start))
        touched = sum(bytes_ for offset, bytes_, _ in self._library.shared
                      if offset + bytes_ <= size and (section[offset:offset + bytes_] != 0xFF).any())
        self.static_shared_bytes = max(self.static_shared_bytes, touched)
        if self.static_shared_bytes > SHARED_PER_BLOCK:
            raise EmulationError(f"{description}: uses {self.static_shared_bytes} bytes of static shared "
                                 f"memory, more than the {SHARED_PER_BLOCK} a block may have")


class _Config(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("thread_order", ctypes.c_int),
                ("block_order", ctypes.c_int), ("seed", ctypes.c_ulonglong)]

    def __init__(self, grid, block, thread_order, block_order, seed):
        super().__init__((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), thread_order, block_order,
                         seed & (2**64 - 1))


def _address(array) -> int:
    """Where ``array``'s first element is (device arrays have no ``ctypes``, as CuPy's have none)."""
    return array.view(numpy.ndarray).ctypes.data


def _kernel_scalar(arg, what):
    """The NumPy scalar whose bytes CuPy passes for a by-value kernel argument (cupy/cuda/function.pyx)."""
    if isinstance(arg, numpy.ndarray):
        if arg.size != 1 or runtime.is_device_array(arg):
            raise EmulationError(f"{what} got an array of shape {arg.shape}; CuPy passes a size-1 host "
                                 "array by value and refuses others")
        return arg.reshape(()).copy()[()]
    if isinstance(arg, numpy.generic):
        return arg
    if isinstance(arg, bool):
        return numpy.bool_(arg)
    if isinstance(arg, int):
        return numpy.uint64(arg) if arg >= 2**63 else numpy.int64(arg)
    if isinstance(arg, float):
        return numpy.float64(arg)
    raise TypeError(f"Unsupported type {type(arg)}")


# ------------------------------------------------------------------------------ ElementwiseKernel


@dataclasses.dataclass(frozen=True)
class _Parameter:
    name: str
    ctype: str  # a one-letter type placeholder or a C type
    dtype: numpy.dtype | None
    is_const: bool


def _parameters(text: str, is_const: bool) -> tuple:
    """CuPy's ParameterInfo parsing of an ``in_params``/``out_params`` string."""
    if not text.strip():
        return ()
    parameters = []
    for item in text.strip().split(","):
        words = item.split()
        if len(words) < 2:
            raise Exception(f"Syntax error: {item}")
        kind, name = words[-2:]
        for keyword in words[:-2]:
            if keyword == "raw":
                raise NotImplementedError("the CUDA emulation has no raw ElementwiseKernel parameters")
            if keyword != "_non_const":
                raise Exception(f'Unknown keyword "{keyword}"')
            is_const = False
        if len(kind) == 1:
            parameters.append(_Parameter(name, kind, None, is_const))
        else:
            dtype = numpy.dtype(kind)
            if dtype.name != kind:
                raise ValueError(f"Wrong type {kind}")
            parameters.append(_Parameter(name, TYPENAMES[dtype.name], dtype, is_const))
    return tuple(parameters)


class ElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name='kernel', ...)``: the operation
    built with g++ into a loop over the broadcast elements (``i`` the flat index, as CuPy's), arguments
    handled as CuPy's ``__call__`` handles them (cupy/_core/_kernel.pyx)."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True, preamble="",
                 no_return=False, return_tuple=False, **kwargs):
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        unknown = set(kwargs) - {"loop_prep", "after_loop", "options"}
        if unknown:
            raise TypeError(f"ElementwiseKernel got unexpected keyword arguments {sorted(unknown)}")
        self.in_params = _parameters(in_params, True)
        self.out_params = _parameters(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation, self.name, self.preamble = operation, name, preamble
        self.reduce_dims, self.no_return, self.return_tuple = reduce_dims, no_return, return_tuple
        self.kwargs = kwargs
        self._flags = _c_options(kwargs.get("options", ()))
        self._loops = {}

    def __repr__(self):
        return f"<emulated ElementwiseKernel {self.name}>"

    def __call__(self, *args, **kwargs):
        size = kwargs.pop("size", -1)
        stream = kwargs.pop("stream", None)
        block_size = kwargs.pop("block_size", 128)
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        if stream is not None:
            raise NotImplementedError("the emulated kernels run on the current stream only")
        if block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                            f"{self.nargs} (with outputs), but given {len(args)}.")
        for arg in args:
            if isinstance(arg, numpy.ndarray) and not runtime.is_device_array(arg):
                raise TypeError(f"Unsupported type {type(arg)}")
            scalar = isinstance(arg, (numpy.generic, bool, int, float, complex))
            if not runtime.is_device_array(arg) and not scalar:
                raise TypeError(f"Unsupported type {type(arg)}")
        out_args = list(args[self.nin:])
        for a in out_args:
            if not runtime.is_device_array(a):
                raise TypeError("Output arguments must be cupy.ndarray")
        arrays = [a for a in args if runtime.is_device_array(a)]
        if size != -1:
            raise NotImplementedError("the CUDA emulation has no raw ElementwiseKernel parameters (size=)")
        if not arrays:
            raise ValueError("Loop size is undecided.")
        shape = numpy.broadcast_shapes(*(a.shape for a in arrays))
        in_types, out_types, type_map = self._decide_types(args[:self.nin], out_args)
        if out_args:
            for a in out_args:
                if a.shape != shape:
                    raise ValueError("Out shape is mismatched")
        else:
            out_args = [runtime.empty(shape, t) for t in out_types]
        result = None if self.no_return else (
            out_args[0] if not self.return_tuple and self.nout == 1 else tuple(out_args))
        if 0 in shape:
            return result
        inputs = []
        for arg, dtype in zip(args[:self.nin], in_types):
            if runtime.is_device_array(arg):
                inputs.append(arg)
            else:  # CScalar.apply_dtype: the value converted to the parameter's type, as C converts it
                inputs.append(numpy.array(arg).astype(dtype, casting="unsafe")[()])
        loop = self._loop(type_map, [runtime.is_device_array(a) for a in inputs])
        description = f"{self.name} (ElementwiseKernel) over {shape}"

        def run():
            self._run(loop, shape, inputs, out_args, description)

        runtime.enqueue(description, run)
        return result

    def _decide_types(self, in_args, out_args):
        """CuPy's _decide_params_type_core: placeholders bound by output dtypes, then input arrays."""
        types = {}
        pairs = list(zip(self.out_params, out_args))
        pairs += [(p, a) for p, a in zip(self.in_params, in_args) if runtime.is_device_array(a)]  # no scalar
        for p, a in pairs:
            if p.dtype is not None:
                if a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype.type} {p.dtype.type}")
            elif p.ctype in types:
                if types[p.ctype] != a.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype.type} {types[p.ctype]} {p.ctype}")
            else:
                types[p.ctype] = a.dtype
        try:
            in_types = [types[p.ctype] if p.dtype is None else p.dtype for p in self.in_params]
            out_types = [types[p.ctype] if p.dtype is None else p.dtype for p in self.out_params]
        except KeyError as missing:
            raise TypeError(f"the type placeholder {missing} of {self.name!r} is bound by no array") from None
        return in_types, out_types, tuple(sorted((k, v.name) for k, v in types.items()))

    def _loop(self, type_map, array_inputs):
        key = (type_map, tuple(array_inputs))
        if key in self._loops:
            return self._loops[key]
        lines = [f"typedef {TYPENAMES[dtype]} {placeholder};" for placeholder, dtype in type_map]
        lines += [self.preamble,
                  f'extern "C" {EXPORT} void host_cuda_elementwise(long long n, void** args) {{']
        body = []
        for k, (p, is_array) in enumerate(zip(self.in_params + self.out_params,
                                               list(array_inputs) + [True] * self.nout)):
            const = "const " if p.is_const else ""
            if is_array:
                lines.append(f"    {p.ctype}* _raw_{p.name} = ({p.ctype}*)args[{k}];")
                body.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[i];")
            else:
                lines.append(f"    {const}{p.ctype} {p.name} = *({p.ctype}*)args[{k}];")
        lines += [f"    {self.kwargs.get('loop_prep', '')};", "    for (ptrdiff_t i = 0; i < n; ++i) {"]
        lines += ["        " + line for line in body] + [self.operation, "    ;", "    }",
                                                         f"    {self.kwargs.get('after_loop', '')};", "}"]
        source = '#include "host_cuda.h"\n' + "\n".join(lines) + "\n"
        function = build(source, self._flags).dll.host_cuda_elementwise
        function.argtypes = [ctypes.c_longlong, ctypes.c_void_p]
        self._loops[key] = function
        return function

    def _run(self, loop, shape, inputs, outputs, description):
        holders, copies_back = [], []
        for value in inputs:
            if runtime.is_device_array(value):
                dense = numpy.ascontiguousarray(numpy.broadcast_to(value.view(numpy.ndarray), shape))
                holders.append(dense)
            else:
                holders.append(numpy.array(value))  # a 0-d array holding the converted scalar's bytes
        for out in outputs:
            if out.flags.c_contiguous:
                holders.append(out)
            else:  # the kernel reads and writes its elements: work on a copy, then put it back
                dense = numpy.ascontiguousarray(out.view(numpy.ndarray))
                holders.append(dense)
                copies_back.append((out, dense))
        pointers = (ctypes.c_void_p * len(holders))(*(_address(h) for h in holders))
        loop(int(numpy.prod(shape)), pointers)
        for out, dense in copies_back:
            out.view(numpy.ndarray)[...] = dense
        arrays = [v for v in list(inputs) + list(outputs) if runtime.is_device_array(v)]
        runtime.check_guards(arrays, description)
