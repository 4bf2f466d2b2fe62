"""What machine code a compiled library holds: its fatbins, their entries, and (with cuobjdump) the SASS.

A library exported by the gpu target embeds one CUDA fatbin per CUDA module
(nvcc's output, see ``toolchain.py``). A fatbin is a 16-byte header
(magic ``0xBA55ED50``, version, header size, payload size) followed by
entries, each with its own header: kind (1: PTX, 2: ELF cubin), the sm
version it was compiled for, and its payload. ``fatbins`` finds them in a
file and ``entries`` lists them without any tool. Disassembly needs NVIDIA's
``cuobjdump`` (with ``nvdisasm``): from PATH, the CUDA toolkit, or the
``nvidia-cuda-cuobjdump`` / ``nvidia-cuda-nvdisasm`` wheels (dev extra);
``sass`` returns the SASS per kernel and ``tensor_core_kernels`` the kernels
that issue tensor-core instructions (HMMA, or HGMMA for Hopper's wgmma).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from accelopt.errors import TargetError

FATBIN_MAGIC = 0xBA55ED50
_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, payload size
_ENTRY = struct.Struct("<HHIQ")  # kind, version, entry header size, payload size
_ENTRY_ARCH_OFFSET = 28
KIND_NAMES = {1: "ptx", 2: "elf"}
TENSOR_CORE_OPS = ("HMMA", "HGMMA", "IMMA", "QGMMA")


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "ptx" or "elf"
    arch: int  # 90 for sm_90 / compute_90
    size: int

    @property
    def name(self) -> str:
        return f"{'sm' if self.kind == 'elf' else 'compute'}_{self.arch}"


def fatbins(data: bytes) -> list[bytes]:
    """Every fatbin embedded in ``data`` (a library's bytes), in file order."""
    out = []
    magic = struct.pack("<I", FATBIN_MAGIC)
    pos = data.find(magic)
    while pos >= 0:
        if pos + _HEADER.size <= len(data):
            _, _, header_size, payload = _HEADER.unpack_from(data, pos)
            end = pos + header_size + payload
            if header_size == _HEADER.size and end <= len(data):
                out.append(bytes(data[pos:end]))
                pos = data.find(magic, end)
                continue
        pos = data.find(magic, pos + 4)
    return out


def entries(fatbin: bytes) -> list[FatbinEntry]:
    """The entries of one fatbin: kind, arch, payload size."""
    _, _, header_size, payload = _HEADER.unpack_from(fatbin, 0)
    out, off, end = [], header_size, header_size + payload
    while off + _ENTRY.size <= end:
        kind, _, entry_header, size = _ENTRY.unpack_from(fatbin, off)
        if entry_header == 0:
            break
        (arch,) = struct.unpack_from("<I", fatbin, off + _ENTRY_ARCH_OFFSET)
        out.append(FatbinEntry(KIND_NAMES.get(kind, str(kind)), int(arch), int(size)))
        off += entry_header + size
    return out


def library_entries(path: str | os.PathLike[str]) -> list[FatbinEntry]:
    """All fatbin entries of a compiled library (empty: it holds no machine code, e.g. CUDA source only)."""
    data = Path(path).read_bytes()
    return [e for fb in fatbins(data) for e in entries(fb)]


def find_cuobjdump() -> Path | None:
    """cuobjdump from PATH, /usr/local/cuda, or the nvidia-cuda-cuobjdump wheel (which needs nvdisasm beside it)."""
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    for site in sys.path:
        candidates.append(os.path.join(site, "nvidia", "cu13", "bin", "cuobjdump"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    return None


def sass(path: str | os.PathLike[str]) -> dict[str, str]:
    """SASS per kernel of every fatbin in the library at ``path`` (needs cuobjdump and nvdisasm)."""
    tool = find_cuobjdump()
    if tool is None:
        raise TargetError("disassembling CUDA machine code needs cuobjdump (pip install nvidia-cuda-cuobjdump)")
    kernels: dict[str, str] = {}
    env = dict(os.environ, PATH=f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory(prefix="accelopt-sass-") as tmp:
        for i, fb in enumerate(fatbins(Path(path).read_bytes())):
            fpath = Path(tmp) / f"m{i}.fatbin"
            fpath.write_bytes(fb)
            proc = subprocess.run([str(tool), "-sass", str(fpath)], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise TargetError(f"cuobjdump failed on {path}: {proc.stderr.strip()}")
            for name, body in _split_functions(proc.stdout):
                kernels[name] = body
    return kernels


def _split_functions(listing: str) -> list[tuple[str, str]]:
    parts = re.split(r"^\s*Function : (\S+)\s*$", listing, flags=re.MULTILINE)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def tensor_core_kernels(kernel_sass: dict[str, str]) -> dict[str, dict[str, int]]:
    """For each kernel that issues tensor-core instructions: the count per instruction (HMMA, HGMMA...)."""
    out: dict[str, dict[str, int]] = {}
    for name, body in kernel_sass.items():
        counts = {op: len(re.findall(rf"\b{op}\.", body)) for op in TENSOR_CORE_OPS}
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            out[name] = counts
    return out
