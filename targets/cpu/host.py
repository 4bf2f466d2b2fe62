"""The host CPU: LLVM's name for it, its vector features, and the cores this process may use.

1. ``detect_mcpu()``: LLVM's host CPU name (``znver4``...), through TVM.
2. ``llvm_features(mcpu)``: the features LLVM enables for an mcpu (what the
   compiled code may use); ``check_mcpu`` refuses a name LLVM does not know
   (TVM itself only logs it and falls back to a generic CPU).
3. ``host_flags()``: the features the running CPU has, from
   ``/proc/cpuinfo`` (the kernel's view, which also reflects a hypervisor
   hiding features), mapped to LLVM's names for the ones accelopt checks:
   ``avx2``, ``fma``, ``avx512f``, ``avx512bw``, ``avx512vl``, ``avx512vnni``,
   ``avx512bf16``, ``avxvnni``, ``amx-int8``, ``amx-bf16``.
4. ``physical_cores()``: one logical CPU per physical core among those this
   process may run on (``sched_getaffinity``); the artifact runs one thread on
   each by default.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from tvm.target import Target, codegen

from accelopt.errors import TargetError

#: the features accelopt records and checks (LLVM names)
CHECKED_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avxvnni",
    "amx-int8",
    "amx-bf16",
)
#: /proc/cpuinfo flag -> LLVM feature name
_CPUINFO_TO_LLVM = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512vnni",
    "avx512_bf16": "avx512bf16",
    "avx_vnni": "avxvnni",
    "amx_int8": "amx-int8",
    "amx_bf16": "amx-bf16",
}


@functools.lru_cache(maxsize=1)
def detect_mcpu() -> str:
    """Case 1: LLVM's name of the host CPU."""
    return str(codegen.llvm_get_system_cpu())


@functools.lru_cache(maxsize=1)
def _triple() -> str:
    return str(codegen.llvm_get_system_triple())


def known_mcpus() -> list[str]:
    """Every CPU name LLVM knows for the host's architecture."""
    return sorted(str(c) for c in codegen.llvm_get_cpu_archlist(Target({"kind": "llvm"})))


def check_mcpu(mcpu: str) -> str:
    """Case 2: ``mcpu`` if LLVM knows it, else ``TargetError`` with close names."""
    if codegen.llvm_is_valid_cpu(mcpu, _triple()):
        return mcpu
    import difflib

    close = difflib.get_close_matches(mcpu, known_mcpus(), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; this host is {detect_mcpu()!r}"
    raise TargetError(f"unknown mcpu {mcpu!r}: LLVM does not know this CPU{hint}")


@functools.lru_cache(maxsize=32)
def llvm_features(mcpu: str) -> frozenset[str]:
    """Case 2: the features LLVM enables for ``mcpu`` (only the ones in ``CHECKED_FEATURES``)."""
    feats = codegen.llvm_get_cpu_features(Target({"kind": "llvm", "mcpu": mcpu}))
    return frozenset(str(f) for f in feats if str(f) in CHECKED_FEATURES)


def vector_width(mcpu: str) -> int:
    """Bits of the widest vector register LLVM uses for ``mcpu``."""
    return int(codegen.llvm_get_vector_width(Target({"kind": "llvm", "mcpu": mcpu})))


@functools.lru_cache(maxsize=1)
def host_flags() -> frozenset[str]:
    """Case 3: features of the running CPU (LLVM names), from /proc/cpuinfo; LLVM's view of the host elsewhere."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return frozenset(v for k, v in _CPUINFO_TO_LLVM.items() if k in flags)
    return llvm_features(detect_mcpu())


def missing_features(needed: set[str] | frozenset[str] | list[str]) -> list[str]:
    """The features in ``needed`` this CPU lacks, sorted."""
    have = host_flags()
    return sorted(f for f in needed if f not in have)


def _core_key(cpu: int) -> tuple[str, str]:
    topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return (topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()
    except OSError:
        return ("cpu", str(cpu))


@functools.lru_cache(maxsize=1)
def physical_cores() -> list[int]:
    """Case 4: one logical CPU id per physical core this process may run on (read once per process)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    seen: dict[tuple[str, str], int] = {}
    for c in cpus:
        seen.setdefault(_core_key(c), c)
    return sorted(seen.values())
