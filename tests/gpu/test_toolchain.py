"""Building CUDA machine code without a GPU: nvcc flags, the driver stand-in, the build scope, the fatbin reader."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_nvcc

from accelopt.errors import TargetError
from accelopt.targets.gpu import machine_code, toolchain


def test_gencode_flags_sm90_has_machine_code_and_ptx() -> None:
    assert toolchain.gencode_flags("sm_90") == ["-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
    assert toolchain.gencode_flags("sm_90a") == ["-gencode", "arch=compute_90a,code=sm_90a"]
    for bad in ("90", "sm90", "compute_90", "sm_x0"):
        with pytest.raises(TargetError, match="bad CUDA arch"):
            toolchain.gencode_flags(bad)


def test_missing_nvcc_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="compiles CUDA machine code with nvcc"):
        toolchain.find_toolkit(tmp_path / "no-such-nvcc")


@needs_nvcc
def test_toolkit_has_the_cuda_runtime_tvm_links_against() -> None:
    tk = toolchain.find_toolkit()
    assert tk.cudart is not None and tk.cudart.name == toolchain.CUDART_SONAME
    assert tk.version[:2] in ("12", "13")


def test_driver_stub_answers_no_device(tmp_path: Path) -> None:
    lib = toolchain.build_driver_stub(tmp_path)
    assert lib.name == "libcuda.so.1" and toolchain.build_driver_stub(tmp_path) == lib  # cached
    code = (
        "import ctypes, sys; cu = ctypes.CDLL(sys.argv[1]); n = ctypes.c_int(7); "
        "print(cu.cuInit(0), cu.cuDeviceGetCount(ctypes.byref(n)), n.value)"
    )  # a subprocess: the stand-in must not enter this test process under the driver's name
    out = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["100", "100", "0"]  # CUDA_ERROR_NO_DEVICE


def _fatbin(entries: list[tuple[int, int, bytes]]) -> bytes:
    body = b""
    for kind, arch, payload in entries:
        header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + struct.pack("<IIII", 0, 0, 0, arch)
        body += header.ljust(64, b"\0") + payload
    return struct.pack("<IHHQ", machine_code.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_fatbin_reader_finds_entries_in_a_library() -> None:
    fb = _fatbin([(2, 90, b"\x7fELF" + b"\0" * 28), (1, 90, b"//ptx\0")])
    blob = b"junk" * 10 + fb + b"tail" + struct.pack("<I", machine_code.FATBIN_MAGIC) + b"truncated"
    found = machine_code.fatbins(blob)
    assert found == [fb]
    assert [(e.kind, e.name) for e in machine_code.entries(found[0])] == [("elf", "sm_90"), ("ptx", "compute_90")]
    assert machine_code.fatbins(b"no machine code here") == []


@needs_nvcc
def test_small_library_holds_sm90_machine_code_with_tensor_cores(small_artifact: Path) -> None:
    lib = small_artifact / "model.so"
    entries = machine_code.library_entries(lib)
    assert {(e.kind, e.name) for e in entries} == {("elf", "sm_90"), ("ptx", "compute_90")}
    assert b"__global__" not in lib.read_bytes()  # machine code, not CUDA source compiled at load time
    if machine_code.find_cuobjdump() is None:
        pytest.skip("cuobjdump is not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    kernels = machine_code.sass(lib)
    assert set(kernels) == {"matmul_kernel", "softmax_kernel"}
    tc = machine_code.tensor_core_kernels(kernels)
    assert set(tc) == {"matmul_kernel"} and tc["matmul_kernel"]["HMMA"] > 0


@needs_nvcc
def test_build_scope_restores_the_previous_compile_callback(small_artifact: Path) -> None:
    import tvm_ffi

    before = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
    with toolchain.cuda_build_scope("sm_90", toolchain.find_toolkit()) as log:
        inside = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
        fatbin = bytes(inside("extern \"C\" __global__ void k(float* x) { x[threadIdx.x] += 1.0f; }"))
    after = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
    assert log.calls == 1 and log.seconds > 0
    assert [e.name for e in machine_code.entries(fatbin)] == ["sm_90", "compute_90"]
    assert (before is None) == (after is None)


@needs_nvcc
def test_nvcc_errors_name_the_arch() -> None:
    with pytest.raises(TargetError, match="nvcc failed to compile the generated CUDA for sm_90"):
        toolchain.nvcc_fatbin("this is not CUDA", "sm_90", toolchain.find_toolkit())
