"""Compiling CUDA here, for a GPU that is somewhere else: nvcc, the driver stand-in, the build scope.

TVM 0.27 turns each CUDA PrimFunc module into CUDA C++ source; what happens
next depends on whether TVM's CUDA *runtime* library (``libtvm_runtime_cuda``)
is loaded in the building process:

- loaded: codegen hands the source to the ``tvm_callback_cuda_compile``
  callback, and the result (PTX or a fatbin) is what ``export_library``
  embeds: machine code, nothing to compile on the GPU machine;
- not loaded: the module keeps the *source*, and whoever loads the library
  must compile it (NVRTC or nvcc, on the GPU machine, at load time).

``libtvm_runtime_cuda.so`` links against the NVIDIA driver library
``libcuda.so.1``, which a machine without a GPU does not have, so TVM's
import silently skips it. ``cuda_build_scope`` makes it loadable:

1. where the real driver library loads, it is used;
2. otherwise a *driver stand-in* is compiled once (``cuda_stub.c``, a few
   functions that all answer "no device"; gcc, cached under the user's
   cache folder) and loaded under the soname ``libcuda.so.1``. Building
   needs no driver call, so the stand-in is never asked anything that
   matters; running needs the real driver (the runtime checks that first);
3. ``libtvm_runtime_cuda`` is loaded (with ``libcudart.so.13`` from the CUDA
   toolkit that holds nvcc when the system has none);
4. for the scope's duration the compile callback runs nvcc itself for the
   target's arch (``-gencode arch=compute_90,code=[sm_90,compute_90]``: sm_90
   machine code plus its PTX, with the flags TVM's own wrapper passes), so
   nothing queries a device; the previous callback is restored afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelopt.errors import TargetError

log = logging.getLogger(__name__)

_STUB_SOURCE = Path(__file__).with_name("cuda_stub.c")
#: the CUDA runtime library libtvm_runtime_cuda links against (TVM 0.27 wheels: CUDA 13)
CUDART_SONAME = "libcudart.so.13"
_lock = threading.Lock()
_loaded: dict[str, Any] = {}


@dataclass(frozen=True)
class CudaToolkit:
    """Where nvcc is, and the CUDA runtime library next to it."""

    nvcc: Path
    root: Path
    version: str

    @property
    def cudart(self) -> Path | None:
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
            p = self.root / sub / CUDART_SONAME
            if p.is_file():
                return p
        return None


def find_toolkit(nvcc: str | os.PathLike[str] | None = None) -> CudaToolkit:
    """The CUDA toolkit to compile with: ``nvcc`` as given, else on PATH, else ``/usr/local/cuda``.

    Raises ``TargetError`` when there is none: the gpu target compiles machine
    code at build time and cannot do without it.
    """
    found = Path(nvcc) if nvcc else None
    if found is None:
        on_path = shutil.which("nvcc")
        found = Path(on_path) if on_path else Path("/usr/local/cuda/bin/nvcc")
    if not found.is_file():
        raise TargetError(
            "the gpu target compiles CUDA machine code with nvcc at build time, and no nvcc was found "
            "(not on PATH, not /usr/local/cuda/bin/nvcc); install the CUDA toolkit (12.x or 13.x)"
        )
    found = found.resolve()
    try:
        out = subprocess.run([str(found), "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
        # nvcc may be a wrapper script: its dry run names the toolkit's real folder (TOP=...)
        dry = subprocess.run(
            [str(found), "--dryrun", "--fatbin", "-x", "cu", "-o", os.devnull, os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise TargetError(f"nvcc at {found} does not run: {e}") from e
    version = next((ln.split("release")[1].split(",")[0].strip() for ln in out.splitlines() if "release" in ln), "?")
    top = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, flags=re.MULTILINE)
    root = Path(top.group(1).strip()).resolve() if top else found.parent.parent
    return CudaToolkit(nvcc=found, root=root, version=version)


def driver_available() -> bool:
    """True when the NVIDIA driver library ``libcuda.so.1`` loads and is not the stand-in (a GPU may be absent)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return not hasattr(lib, "accelopt_cuda_driver_stub")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "accelopt" / "cuda-driver-stub"


def build_driver_stub(directory: Path | None = None) -> Path:
    """Compile the driver stand-in (``cuda_stub.c``) to ``libcuda.so.1``; cached by the source's hash."""
    src = _STUB_SOURCE.read_bytes()
    out_dir = (directory or _cache_dir()) / hashlib.sha256(src).hexdigest()[:16]
    lib = out_dir / "libcuda.so.1"
    if lib.is_file():
        return lib
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise TargetError("building for the gpu target without an NVIDIA driver needs a C compiler (gcc or cc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = Path(tmp) / "libcuda.so.1"
        cmd = [cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(tmp_lib), str(_STUB_SOURCE)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise TargetError(f"compiling the CUDA driver stand-in failed: {proc.stderr.strip()}")
        os.replace(tmp_lib, lib)
    return lib


def prime_source_lookup() -> None:
    """Make TVMScript's parsing fast in a process that has imported much (torch, jax, transformers).

    TVM's CUDA tensor-core schedules import ``tvm.s_tir.tensor_intrin.cuda``,
    which parses about 250 TVMScript functions; each parse calls
    ``inspect.stack()``, and for every frame without a file on disk
    (``<frozen importlib._bootstrap>``, ``<frozen runpy>`` under ``python -m``,
    ``<ast>``) ``inspect.getmodule`` misses its cache and scans all of
    ``sys.modules`` only to find nothing. With accelopt's 2,600 modules loaded
    that import took 350 s on this machine under load; with these names cached
    as "no module" (the scan's own answer, now without the scan) 17-48 s.
    """
    import inspect

    for pseudo in _PSEUDO_FILES:
        inspect.modulesbyfile.setdefault(pseudo, _NO_MODULE)


#: frame file names that are no file (inspect.getmodule finds no module for them)
_PSEUDO_FILES = (
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<frozen runpy>",
    "<ast>",
    "<string>",
)
_NO_MODULE = "<accelopt: no module>"


def load_cuda_codegen_runtime(toolkit: CudaToolkit) -> None:
    """Load ``libtvm_runtime_cuda`` into this process (cases 1-3 of the module docstring); idempotent."""
    import tvm_ffi
    from tvm_ffi.libinfo import load_lib_ctypes

    with _lock:
        if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None:
            return
        if not driver_available():
            stub = build_driver_stub()
            _loaded["driver_stub"] = ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
            log.info("no NVIDIA driver here: building against the driver stand-in %s", stub)
        try:
            ctypes.CDLL(CUDART_SONAME, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            cudart = toolkit.cudart
            if cudart is None:
                raise TargetError(
                    f"{CUDART_SONAME} (the CUDA runtime TVM's CUDA module links against) is neither on the "
                    f"library path nor in the toolkit at {toolkit.root}"
                ) from None
            _loaded["cudart"] = ctypes.CDLL(str(cudart), mode=ctypes.RTLD_GLOBAL)
        import tvm
        from tvm.base import _LOADED_LIBS

        runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
        try:
            _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
                package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL"
            )
        except (OSError, RuntimeError) as e:
            raise TargetError(f"TVM's CUDA runtime library could not be loaded for building: {e}") from e
        if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
            raise TargetError(f"TVM {tvm.__version__}'s CUDA runtime library loaded but registered no CUDA module")


def gencode_flags(arch: str) -> list[str]:
    """``sm_90`` -> nvcc flags for sm_90 machine code plus compute_90 PTX (``sm_90a``: no PTX, it has none)."""
    if not arch.startswith("sm_") or not arch[3:5].isdigit():
        raise TargetError(f"bad CUDA arch {arch!r}: expected sm_<major><minor>, e.g. sm_90")
    num = arch[3:]
    if num.endswith("a"):
        return ["-gencode", f"arch=compute_{num},code=sm_{num}"]
    return ["-gencode", f"arch=compute_{num},code=[sm_{num},compute_{num}]"]


@dataclass
class CompileLog:
    """What the nvcc callback did during one build scope."""

    calls: int = 0
    seconds: float = 0.0
    source_bytes: int = 0


#: what TVM's own nvcc wrapper passes (its generated code relies on the half/bf16 operators)
NVCC_FLAGS = (
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
)


def nvcc_fatbin(code: str, arch: str, toolkit: CudaToolkit) -> bytes:
    """Compile CUDA C++ source to a fatbin for ``arch`` (sm machine code + PTX, ``gencode_flags``)."""
    with tempfile.TemporaryDirectory(prefix="accelopt-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(code)
        cmd = [str(toolkit.nvcc), "--fatbin", *NVCC_FLAGS, *gencode_flags(arch), "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise TargetError(f"nvcc failed to compile the generated CUDA for {arch}:\n{proc.stdout}{proc.stderr}"[-4000:])
        return out.read_bytes()


@contextlib.contextmanager
def cuda_build_scope(arch: str, toolkit: CudaToolkit) -> Iterator[CompileLog]:
    """Inside: CUDA modules that TVM builds are compiled to ``arch`` machine code by nvcc (case 4)."""
    import tvm_ffi

    prime_source_lookup()
    load_cuda_codegen_runtime(toolkit)
    gencode_flags(arch)  # a bad arch fails here, before any codegen
    stats = CompileLog()
    previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    def compile_cuda(code: str) -> bytearray:
        t0 = time.perf_counter()
        try:
            return bytearray(nvcc_fatbin(code, arch, toolkit))
        finally:
            stats.calls += 1
            stats.seconds += time.perf_counter() - t0
            stats.source_bytes += len(code)

    with _lock:
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cuda, override=True)
    try:
        yield stats
    finally:
        with _lock:
            if previous is not None:
                tvm_ffi.register_global_func("tvm_callback_cuda_compile", previous, override=True)
            else:
                tvm_ffi.remove_global_func("tvm_callback_cuda_compile")
