"""Run a gpu-target artifact with TVM's *runtime* alone: no TVM compiler, no accelopt needed.

This file is self-contained on purpose: it imports only the standard
library, numpy and ``tvm_ffi``, so the runtime bundle (``bundle.py``) ships
it as ``accelopt_gpu_runtime.py`` next to TVM's runtime libraries, and a GPU
machine that has neither TVM nor accelopt installed runs an artifact with::

    import sys; sys.path.insert(0, "BUNDLE")
    import accelopt_gpu_runtime as rt
    model = rt.load("OUTDIR", bundle="BUNDLE")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

accelopt's ``GpuArtifact`` runs artifacts through the same code.

What ``load`` does, in order (each step's failure is a ``GpuRuntimeError``
naming what is missing; inside accelopt it is an ``accelopt.errors.TargetError``):

1. read ``metadata.json`` (format ``accelopt-gpu-artifact``);
2. find the runtime: the bundle's ``python/`` (tvm_ffi, with its compiled
   part for each Python version the bundle was made for) and ``lib/``
   (``libtvm_runtime.so``, ``libtvm_runtime_cuda.so``, ``libcudart.so.13``);
   without a bundle, the installed ``tvm`` package's ``lib/`` (its compiler
   library is not loaded). A process that already imported ``tvm`` keeps the
   runtime it loaded;
3. load tvm_ffi and ``libtvm_runtime`` (no GPU needed);
4. check the GPU through the driver (``libcuda.so.1``: ``cuInit``, device
   count, compute capability against the artifact's arch): no driver, no
   device, or an older GPU is ``NoGpuError`` ("no CUDA GPU found ...");
5. load TVM's CUDA runtime and the library (``open_library``), start the VM
   on the GPU and copy the parameters (``params.npz``) to it once.

``run`` copies numpy inputs in, calls the function whose static shapes
match (one per batch/sequence binding), and copies the outputs back.
``upload`` / ``call`` / ``sync`` keep data on the GPU for timing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:  # inside accelopt the runtime's errors are TargetErrors; standalone, RuntimeErrors
    from accelopt.errors import TargetError as _ErrorBase
except ImportError:  # pragma: no cover - exercised in the bundle's clean-venv test
    _ErrorBase = RuntimeError  # type: ignore[misc,assignment]

FORMAT = "accelopt-gpu-artifact"
METADATA = "metadata.json"
CUDART = "libcudart.so.13"
_KDL_CUDA, _KDL_CPU, _POOLED = 2, 1, 2
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76


class GpuRuntimeError(_ErrorBase):
    """An artifact could not be loaded or run by the GPU runtime."""


class NoGpuError(GpuRuntimeError):
    """This machine has no usable CUDA GPU for the artifact."""


# ------------------------------------------------------------------ the GPU
def _cu_error(lib: Any, code: int) -> str:
    name = ctypes.c_char_p()
    try:
        lib.cuGetErrorName(code, ctypes.byref(name))
    except AttributeError:
        return f"CUresult {code}"
    return name.value.decode() if name.value else f"CUresult {code}"


def check_gpu(arch: str, device: int = 0) -> dict[str, Any]:
    """The GPU ``device`` as the driver reports it; ``NoGpuError`` when it cannot run ``arch`` code (step 4)."""
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise NoGpuError(
            "no CUDA GPU found: the NVIDIA driver library libcuda.so.1 is not installed on this machine "
            f"(the artifact holds {arch} machine code and runs only on an NVIDIA GPU)"
        ) from None
    rc = cu.cuInit(0)
    count = ctypes.c_int(0)
    if rc == 0:
        rc = cu.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value <= device:
        why = _cu_error(cu, rc) if rc else f"{count.value} device(s)"
        raise NoGpuError(f"no CUDA GPU found: the NVIDIA driver reports {why} (the artifact needs an {arch} GPU)")
    dev, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    cu.cuDeviceGet(ctypes.byref(dev), device)
    cu.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    cu.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    cu.cuDeviceGetName(name, 256, dev)
    need = (int(arch[3]), int(arch[4])) if arch.startswith("sm_") and arch[3:5].isdigit() else (0, 0)
    have = (major.value, minor.value)
    gpu = name.value.decode(errors="replace")
    if have < need or (arch.endswith("a") and have != need):
        raise NoGpuError(
            f"no CUDA GPU found that runs {arch} code: GPU {device} is {gpu} (compute capability "
            f"{have[0]}.{have[1]}); rebuild with --target gpu{{arch=sm_{have[0]}{have[1]}}}"
        )
    return {"name": gpu, "compute_capability": f"{have[0]}.{have[1]}", "index": device}


# -------------------------------------------------------------- the runtime
class _Runtime:
    """TVM's runtime in this process (step 2-3, 5): tvm_ffi plus the runtime libraries."""

    def __init__(self, bundle: str | os.PathLike[str] | None) -> None:
        self.bundle = Path(bundle) if bundle is not None else None
        if "tvm" in sys.modules:  # the full TVM is already loaded: its runtime is the one to use
            self.libdir = Path(sys.modules["tvm"].__file__ or ".").parent / "lib"
        elif self.bundle is not None:
            py = self.bundle / "python"
            if not (py / "tvm_ffi").is_dir() or not (self.bundle / "lib" / "libtvm_runtime.so").is_file():
                raise GpuRuntimeError(f"{self.bundle} is not an accelopt GPU runtime bundle (python/tvm_ffi, lib/)")
            if str(py) not in sys.path:
                sys.path.insert(0, str(py))
            self.libdir = self.bundle / "lib"
        else:
            spec = importlib.util.find_spec("tvm")
            if spec is None or not spec.submodule_search_locations:
                raise GpuRuntimeError("TVM's runtime was not found: install apache-tvm or pass the runtime bundle")
            self.libdir = Path(list(spec.submodule_search_locations)[0]) / "lib"
        try:
            import tvm_ffi
        except ImportError as e:
            where = f"the bundle {self.bundle}" if self.bundle else "this Python"
            raise GpuRuntimeError(
                f"tvm_ffi does not import from {where} (Python {sys.version_info[0]}.{sys.version_info[1]}): {e}; "
                "make the bundle for this Python version (accelopt.targets.gpu.bundle.write_bundle(DIR, pythons=['X.Y']))"
            ) from e
        self.ffi = tvm_ffi
        self._libs = [self._load(self.libdir / "libtvm_runtime.so")]
        self.cuda_loaded = False

    def _load(self, path: Path) -> ctypes.CDLL:
        try:
            return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise GpuRuntimeError(f"TVM runtime library {path.name} could not be loaded: {e}") from e

    def load_cuda(self) -> None:
        if self.cuda_loaded or self.ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True):
            self.cuda_loaded = True
            return
        try:
            ctypes.CDLL(CUDART, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            self._libs.append(self._load(self.libdir / CUDART))
        self._libs.append(self._load(self.libdir / "libtvm_runtime_cuda.so"))
        self.cuda_loaded = True

    def func(self, name: str) -> Any:
        return self.ffi.get_global_func(name)


_RUNTIMES: dict[str, _Runtime] = {}


def _runtime(bundle: str | os.PathLike[str] | None) -> _Runtime:
    key = str(Path(bundle).resolve()) if bundle is not None else ""
    if key not in _RUNTIMES:
        _RUNTIMES[key] = _Runtime(bundle)
    return _RUNTIMES[key]


def open_library(directory: Path, meta: Mapping[str, Any], rt: _Runtime) -> Any:
    """Load TVM's CUDA runtime and the artifact's library (its fatbins are handed to the driver only at first use)."""
    rt.load_cuda()
    lib = directory / meta["library"]
    try:
        return rt.ffi.load_module(str(lib))
    except Exception as e:  # noqa: BLE001 - tvm_ffi raises its own error types
        raise GpuRuntimeError(f"{lib}: could not be loaded by TVM's runtime: {e}") from e


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / METADATA
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GpuRuntimeError(f"{path}: not a readable gpu artifact ({e})") from e
    if meta.get("format") != FORMAT:
        raise GpuRuntimeError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


# ---------------------------------------------------------------- the model
class Model:
    """A loaded artifact on GPU ``device``: ``run`` (numpy in and out), ``upload``/``call``/``sync`` for timing."""

    def __init__(self, directory: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = None,
                 device: int = 0, params: Mapping[str, np.ndarray] | None = None) -> None:
        self.directory = Path(directory)
        self.meta = read_metadata(self.directory)
        self.arch = str(self.meta["arch"])
        rt = _runtime(bundle)  # steps 2-3
        self.rt = rt
        self.gpu = check_gpu(self.arch, device)  # step 4
        self.library = open_library(self.directory, self.meta, rt)
        try:
            self.vm = self.library["vm_load_executable"]()
            self.vm["vm_initialization"](_KDL_CUDA, device, _POOLED, _KDL_CPU, 0, _POOLED)
        except Exception as e:  # noqa: BLE001 - tvm_ffi raises its own error types
            raise GpuRuntimeError(f"{self.meta['library']}: the VM could not start on GPU {device}: {e}") from e
        self.device = rt.ffi.device("cuda", device)
        self._alloc = rt.func("runtime.TVMTensorAllocWithScope")
        self._to_dev = rt.func("runtime.TVMTensorCopyFromBytes")
        self._to_host = rt.func("runtime.TVMTensorCopyToBytes")
        self._sync = rt.func("runtime.Device_StreamSync")
        self.functions = {f["name"]: f for f in self.meta["functions"]}
        wanted = sorted({n for f in self.functions.values() for n in f["params"]})
        if params is None:
            with np.load(self.directory / self.meta["params_file"]) as stored:
                self.params = self._upload_params(stored, list(stored.files), wanted, self.meta["params_file"])
        else:
            self.params = self._upload_params(params, list(params), wanted, "the given parameters")
        self._fns = {name: self.vm[name] for name in self.functions}

    def _upload_params(self, source: Any, names: list[str], wanted: list[str], what: str) -> dict[str, Any]:
        missing = [n for n in wanted if n not in names]
        if missing:
            raise GpuRuntimeError(f"{what} lack(s) parameter(s) {', '.join(missing[:5])}")
        return {n: self.upload(source[n]) for n in wanted}

    # data movement
    def upload(self, array: np.ndarray) -> Any:
        a = np.ascontiguousarray(array)
        t = self._alloc(self.rt.ffi.Shape(list(a.shape)), self.rt.ffi.dtype(str(a.dtype)), self.device, None)
        self._to_dev(t, a.ctypes.data_as(ctypes.c_void_p), a.nbytes)
        return t

    def download(self, tensor: Any) -> np.ndarray:
        out = np.empty(tuple(tensor.shape), dtype=np.dtype(str(tensor.dtype)))
        self._to_host(tensor, out.ctypes.data_as(ctypes.c_void_p), out.nbytes)
        return out

    def sync(self) -> None:
        self._sync(self.device, None)

    def function_for(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The function whose input shapes match ``inputs`` (arrays or device tensors by input name)."""
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in inputs.items()}
        for f in self.functions.values():
            if all(shapes.get(i["name"]) == tuple(i["shape"]) for i in f["inputs"]):
                return f
        want = "; ".join(", ".join(f"{i['name']}{list(i['shape'])}" for i in f["inputs"]) for f in self.functions.values())
        got = ", ".join(f"{k}{list(v)}" for k, v in shapes.items())
        raise GpuRuntimeError(f"no compiled function takes inputs {got}; compiled for: {want}")

    def call(self, function: str, args: Sequence[Any]) -> list[Any]:
        """Call ``function`` on device tensors (inputs in order); device tensors out."""
        res = self._fns[function](*args, *(self.params[n] for n in self.functions[function]["params"]))
        return list(res) if not hasattr(res, "shape") else [res]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        f = self.function_for(inputs)
        missing = [i["name"] for i in f["inputs"] if i["name"] not in inputs]
        if missing:
            raise GpuRuntimeError(f"missing input(s) {', '.join(missing)}")
        args = [self.upload(np.asarray(inputs[i["name"]], dtype=i["dtype"])) for i in f["inputs"]]
        outs = self.call(f["name"], args)
        return {o["name"]: self.download(t) for o, t in zip(f["outputs"], outs, strict=True)}


def load(directory: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = None,
         device: int = 0, params: Mapping[str, np.ndarray] | None = None) -> Model:
    """Load the artifact in ``directory`` on GPU ``device`` (steps 1-5 of the module docstring).

    ``params``: the parameters by name instead of the folder's ``params.npz``.
    """
    return Model(directory, bundle=bundle, device=device, params=params)
