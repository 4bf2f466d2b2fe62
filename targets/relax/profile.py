"""Where a Relax artifact's time goes: every call the VM makes, timed (``optimize bench --profile``).

``profile(artifact, inputs, repeat)`` runs the bucket for ``inputs`` ``repeat``
times with a VM instrument that times each ``Call`` instruction (compiled
kernels, and the VM's builtins: allocations, reshapes, shape checks) and
returns one row per callee, slowest first: calls per run, milliseconds per
run, share of the total. The instrument is a Python callback, so each call
costs a few microseconds more than without it: shares are what to read,
the absolute total is an upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from accelopt.targets import buckets as bk
from accelopt.targets.relax.artifact import RelaxArtifact, device_tensor
from accelopt.targets.relax.native_stderr import native_stderr_to_log


@dataclass(frozen=True)
class ProfileRow:
    name: str
    calls: float
    ms: float
    share: float


def profile(art: RelaxArtifact, inputs: Mapping[str, np.ndarray], repeat: int = 5) -> tuple[list[ProfileRow], float]:
    """Per-callee time of one run of ``art`` on ``inputs`` (the first batch chunk), and the run's total ms."""
    art.check_host()
    specs = art.metadata["inputs"]
    arrays = [bk.convert_input(s, inputs[s["name"]]) for s in specs]
    bucket, _, _ = bk.choose_bucket(art.metadata, arrays, art.source)
    fn_name = bucket["function"]
    art._function(bucket)  # parameters on the device, thread pool configured
    dev = art.device()
    args = [device_tensor(bk.fit(art.metadata, s, a, bucket, 0), dev) for s, a in zip(specs, arrays)]
    args += art._device_params[fn_name]
    with native_stderr_to_log("VirtualMachine"):
        vm = relax.VirtualMachine(art.library, dev)
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}
    started: list[float] = []

    def instrument(func: Any, name: str, before: bool, ret: Any, *rest: Any) -> int:
        if before:
            started.append(time.perf_counter())
        else:
            dt = time.perf_counter() - started.pop()
            totals[name] = totals.get(name, 0.0) + dt
            calls[name] = calls.get(name, 0) + 1
        return 0

    vm[fn_name](*args)  # warm-up, uninstrumented
    vm.set_instrument(tvm.runtime.convert(instrument) if hasattr(tvm.runtime, "convert") else instrument)
    t0 = time.perf_counter()
    for _ in range(repeat):
        vm[fn_name](*args)
    total_ms = (time.perf_counter() - t0) / repeat * 1e3
    run_ms = sum(totals.values()) / repeat * 1e3 or 1.0
    rows = [
        ProfileRow(name, calls[name] / repeat, totals[name] / repeat * 1e3, totals[name] / repeat * 1e3 / run_ms)
        for name in totals
    ]
    rows.sort(key=lambda r: -r.ms)
    return rows, total_ms
