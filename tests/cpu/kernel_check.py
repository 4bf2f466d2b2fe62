"""Helpers of the x86 kernel tests: build a kernel PrimFunc with its schedule for the host and run it on numpy arrays."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm.s_tir import Schedule
from tvm.target import codegen


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


needs_vnni = pytest.mark.skipif("avx512_vnni" not in cpu_flags(), reason="the host has no AVX-512 VNNI")


@functools.lru_cache(maxsize=1)
def host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu()), "num-cores": 2})


def build(func: tvm.tirx.PrimFunc, schedule: Callable[[Schedule], object] | None) -> Callable[..., None]:
    """``func`` scheduled by ``schedule`` (None: as written) and compiled for the host."""
    sch = Schedule(func)
    if schedule is not None:
        schedule(sch)
    return tvm.compile(sch.mod, target=host_target())


def run(
    lib: Callable[..., None], inputs: Sequence[np.ndarray], outputs: Sequence[tuple[tuple[int, ...], str]]
) -> list[np.ndarray]:
    """Call ``lib`` on ``inputs`` and fresh output buffers (shape, dtype); return the outputs."""
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
    outs = [tvm.runtime.tensor(np.zeros(shape, dtype), dev) for shape, dtype in outputs]
    lib(*args, *outs)
    return [o.numpy() for o in outs]
