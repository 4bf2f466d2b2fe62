"""The runtime bundle: an artifact loads with TVM's runtime alone, in a Python without TVM, up to the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_nvcc

from accelopt.errors import TargetError
from accelopt.targets.gpu import bundle, runtime, toolchain

pytestmark = needs_nvcc

#: run in the isolated interpreter: the bundle and numpy only, then load the artifact
_LOAD = """
import importlib.util, sys
sys.path[:0] = [sys.argv[1], sys.argv[3]]
assert importlib.util.find_spec("tvm") is None, "tvm must not be importable here"
import accelopt_gpu_runtime as rt
try:
    rt.load(sys.argv[2], bundle=sys.argv[4])
except rt.NoGpuError as e:
    print("NoGpuError:", e)
if len(sys.argv) > 5:  # with the driver stand-in: the library and its VM executable load
    from pathlib import Path
    r = rt._runtime(sys.argv[4])
    lib = rt.open_library(Path(sys.argv[2]), rt.read_metadata(sys.argv[2]), r)
    lib["vm_load_executable"]()
    print("loaded", [m.kind for m in lib.imports], "tvm" in sys.modules)
"""


@pytest.fixture(scope="module")
def runtime_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "runtime"
    bundle.write_bundle(out)
    return out


@pytest.fixture(scope="module")
def numpy_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with numpy alone (links into this environment's site-packages)."""
    d = tmp_path_factory.mktemp("numpy-only")
    root = Path(np.__file__).parent.parent
    for name in ("numpy", "numpy.libs"):
        if (root / name).exists():
            (d / name).symlink_to(root / name)
    return d


def _isolated(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # -I: no user site, no PYTHON* variables; -S: no site-packages at all
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LOAD, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_bundle_has_the_runtime_and_not_the_compiler(runtime_bundle: Path) -> None:
    manifest = json.loads((runtime_bundle / bundle.MANIFEST).read_text())
    files = set(manifest["files"])
    assert {"lib/libtvm_runtime.so", "lib/libtvm_runtime_cuda.so", "lib/libcudart.so.13"} <= files
    assert "python/accelopt_gpu_runtime.py" in files and "python/tvm_ffi/lib/libtvm_ffi.so" in files
    assert not any("compiler" in f for f in files)
    assert manifest["pythons"] == [bundle.this_python()]
    assert manifest["bytes"] < 20e6
    assert bundle.bundle_pythons(runtime_bundle) == [bundle.this_python()]


def test_bundle_loads_in_a_python_without_tvm_and_says_no_gpu(
    runtime_bundle: Path, small_artifact: Path, numpy_only: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = _isolated([str(runtime_bundle / "python"), str(small_artifact), str(numpy_only), str(runtime_bundle)], env)
    assert proc.returncode == 0, proc.stderr
    if toolchain.driver_available():
        pytest.skip("this machine has an NVIDIA driver")
    assert "NoGpuError: no CUDA GPU found: the NVIDIA driver library libcuda.so.1 is not installed" in proc.stdout


def test_with_a_driver_but_no_gpu_the_library_loads_and_the_error_is_clear(
    runtime_bundle: Path, small_artifact: Path, numpy_only: Path
) -> None:
    stub = toolchain.build_driver_stub()
    env = dict(os.environ, LD_LIBRARY_PATH=str(stub.parent))
    args = [str(runtime_bundle / "python"), str(small_artifact), str(numpy_only), str(runtime_bundle), "open"]
    proc = _isolated(args, env)
    assert proc.returncode == 0, proc.stderr
    assert "NoGpuError: no CUDA GPU found: the NVIDIA driver reports CUDA_ERROR_NO_DEVICE" in proc.stdout
    assert "loaded ['library'] False" in proc.stdout  # TVM's runtime loaded the library; tvm never imported


def test_errors_name_what_is_wrong(tmp_path: Path, small_artifact: Path) -> None:
    with pytest.raises(TargetError, match="not a readable gpu artifact"):
        runtime.read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "accelopt-tpu-artifact"}))
    with pytest.raises(TargetError, match="expected 'accelopt-gpu-artifact'"):
        runtime.read_metadata(tmp_path)
    (tmp_path / "junk").write_text("x")
    with pytest.raises(TargetError, match="not a runtime bundle"):
        bundle.write_bundle(tmp_path)
    with pytest.raises(TargetError, match="bad Python version"):
        bundle.write_bundle(tmp_path / "new", pythons=["3"])


@pytest.mark.slow
def test_bundle_for_python_312_loads_there(tmp_path: Path, small_artifact: Path) -> None:
    """The cp312 part comes from apache-tvm-ffi's own wheel (pip, at bundle time); a 3.12 venv with numpy loads it."""
    py312 = _python312()
    out = tmp_path / "runtime"
    manifest = bundle.write_bundle(out, pythons=["3.12"])
    assert manifest["pythons"] == sorted({bundle.this_python(), "3.12"}, key=lambda v: int(v.split(".")[1]))
    venv = tmp_path / "venv312"
    subprocess.run([py312, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "numpy"], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"numpy could not be installed for Python 3.12: {pip.stderr[-300:]}")
    site = next((venv / "lib").glob("python3.12/site-packages"))
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run(
        [str(venv / "bin/python"), "-I", "-S", "-c", _LOAD, str(out / "python"), str(small_artifact), str(site),
         str(out)], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "NoGpuError: no CUDA GPU found" in proc.stdout


def _python312() -> str:
    import shutil

    for cand in ("python3.12", os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12")):
        found = shutil.which(cand) if os.sep not in cand else (cand if os.path.isfile(cand) else None)
        if found:
            ok = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                                capture_output=True, text=True)  # fmt: skip
            if ok.returncode == 0 and ok.stdout.strip() == "True":
                return found
    pytest.skip("no Python 3.12 interpreter on this machine")
    raise AssertionError("unreachable")
