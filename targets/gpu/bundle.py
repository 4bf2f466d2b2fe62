"""The runtime bundle: what a GPU machine needs to run gpu-target artifacts without TVM's compiler.

Layout (about 9 MB; ``write_bundle``)::

    bundle.json                          versions, Python versions, files
    lib/libtvm_runtime.so                TVM's runtime (VM, tensors, graph capture)
    lib/libtvm_runtime_cuda.so           TVM's CUDA module loader and CUDA builtins
    lib/libcudart.so.13                  the CUDA runtime it links against (from the toolkit)
    python/accelopt_gpu_runtime.py       ``runtime.py``: load + run, numpy in and out
    python/tvm_ffi/                      apache-tvm-ffi's Python package and libtvm_ffi.so,
                                         with its compiled part once per Python version
    python/typing_extensions.py          tvm_ffi's one dependency (pure Python)

TVM's compiler library (260 MB) stays behind; the driver (``libcuda.so.1``)
comes from the GPU machine. apache-tvm-ffi's compiled part
(``core.cpython-3XY-x86_64-linux-gnu.so``) is built per Python version; the
rest of the package, ``libtvm_ffi.so`` included, is the same file in every
wheel of one version. So one ``tvm_ffi/`` serves several Pythons: the
building Python's part is copied from this environment, and each other
version's is taken from that version's wheel of the *same* apache-tvm-ffi
release, downloaded through pip at bundle time (never at run time), and
checked to match this environment's ``libtvm_ffi.so`` byte for byte.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelopt.errors import TargetError
from accelopt.targets.gpu import runtime
from accelopt.targets.gpu.toolchain import CUDART_SONAME, CudaToolkit, find_toolkit

log = logging.getLogger(__name__)

MANIFEST = "bundle.json"
RUNTIME_MODULE = "accelopt_gpu_runtime.py"
TVM_LIBS = ("libtvm_runtime.so", "libtvm_runtime_cuda.so")
#: parts of the tvm_ffi package that running never needs (headers, sources, build helpers); its compiled
#: core links against lib/libtvm_ffi_testing.so too, so lib/ travels whole
_FFI_SKIP_DIRS = frozenset({"include", "src", "3rdparty", "cython", "stub", "__pycache__", "share"})
_CORE = re.compile(r"core\.cpython-(\d)(\d+)-.*\.so$")


def this_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _tvm_lib_dir() -> Path:
    import tvm

    return Path(tvm.__file__).parent / "lib"


def _ffi_dir() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_ffi_package(dest: Path) -> None:
    src = _ffi_dir()
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if not (rel == Path(".") and d in _FFI_SKIP_DIRS) and d != "__pycache__"]
        for f in files:
            if f.endswith((".pyc", ".pyi", ".h", ".pxd", ".pyx", ".txt", ".cmake")):
                continue
            (dest / rel).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(root) / f, dest / rel / f)


def _add_python(ffi_dest: Path, version: str, cache: Path | None) -> None:
    """Add apache-tvm-ffi's compiled part for Python ``version`` from that version's wheel (pip download)."""
    ffi_version = importlib.metadata.version("apache-tvm-ffi")
    tag = version.replace(".", "")
    with tempfile.TemporaryDirectory(prefix="accelopt-ffi-wheel-") as tmp:
        where = cache or Path(tmp)
        wheels = sorted(where.glob(f"apache_tvm_ffi-{ffi_version}-cp{tag}-*.whl"))
        if not wheels:
            cmd = [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--python-version", version, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                "-d", str(where), f"apache-tvm-ffi=={ffi_version}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = sorted(where.glob(f"apache_tvm_ffi-{ffi_version}-cp{tag}-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise TargetError(
                    f"the runtime bundle for Python {version} needs apache-tvm-ffi {ffi_version}'s cp{tag} wheel, "
                    f"and pip could not download it: {(proc.stderr or proc.stdout).strip()[-800:]}"
                )
        with zipfile.ZipFile(wheels[0]) as z:
            names = z.namelist()
            core = [n for n in names if n.startswith("tvm_ffi/") and _CORE.search(n) and f"cpython-{tag}-" in n]
            lib = z.read("tvm_ffi/lib/libtvm_ffi.so")
            if hashlib.sha256(lib).hexdigest() != _sha(ffi_dest / "lib" / "libtvm_ffi.so"):
                raise TargetError(f"{wheels[0].name}: its libtvm_ffi.so differs from this environment's")
            if len(core) != 1:
                raise TargetError(f"{wheels[0].name}: no compiled tvm_ffi core for Python {version}")
            (ffi_dest / Path(core[0]).name).write_bytes(z.read(core[0]))


def bundle_pythons(directory: str | os.PathLike[str]) -> list[str]:
    """The Python versions a bundle's tvm_ffi has its compiled part for."""
    out = []
    for f in (Path(directory) / "python" / "tvm_ffi").glob("core.cpython-*.so"):
        m = _CORE.search(f.name)
        if m:
            out.append(f"{m.group(1)}.{m.group(2)}")
    return sorted(out, key=lambda v: tuple(int(x) for x in v.split(".")))


def write_bundle(
    directory: str | os.PathLike[str],
    *,
    pythons: Sequence[str] = (),
    toolkit: CudaToolkit | None = None,
    wheel_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write the runtime bundle into ``directory`` (replaced if it is a bundle); returns its manifest.

    ``pythons``: the Python versions to serve besides this one (``"3.12"``);
    each needs pip to reach the package registry once, now.
    """
    out = Path(directory)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise TargetError(f"{out} exists and is not a runtime bundle; choose an empty or new folder")
    versions = [this_python(), *(p for p in pythons if p != this_python())]
    bad = [v for v in versions if not re.fullmatch(r"3\.\d+", v)]
    if bad:
        raise TargetError(f"bad Python version(s) {', '.join(bad)}: expected 3.X, e.g. 3.12")
    tk = toolkit or find_toolkit()
    cudart = tk.cudart
    if cudart is None:
        raise TargetError(f"{CUDART_SONAME} was not found in the CUDA toolkit at {tk.root}")
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent if out.parent.exists() else None))
    try:
        (tmp / "lib").mkdir()
        for name in TVM_LIBS:
            shutil.copy2(_tvm_lib_dir() / name, tmp / "lib" / name)
        shutil.copy2(cudart, tmp / "lib" / CUDART_SONAME)
        py = tmp / "python"
        _copy_ffi_package(py / "tvm_ffi")
        for v in versions[1:]:
            _add_python(py / "tvm_ffi", v, Path(wheel_cache) if wheel_cache else None)
        shutil.copy2(runtime.__file__, py / RUNTIME_MODULE)
        import typing_extensions  # tvm_ffi's one dependency: a single pure-Python file

        shutil.copy2(typing_extensions.__file__, py / "typing_extensions.py")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest: dict[str, Any] = {
            "format": "accelopt-gpu-runtime-bundle",
            "version": 1,
            "pythons": bundle_pythons(tmp),
            "tvm": importlib.metadata.version("apache-tvm"),
            "tvm_ffi": importlib.metadata.version("apache-tvm-ffi"),
            "cuda_runtime": CUDART_SONAME,
            "cuda_toolkit": tk.version,
            "bytes": sum((tmp / f).stat().st_size for f in files),
            "files": files,
            "usage": f"sys.path.insert(0, 'BUNDLE/python'); import {RUNTIME_MODULE[:-3]} as rt; "
            "rt.load('OUTDIR', bundle='BUNDLE').run(inputs)",
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("runtime bundle %s: %.1f MB for Python %s", out, manifest["bytes"] / 1e6, ", ".join(manifest["pythons"]))
    return manifest
