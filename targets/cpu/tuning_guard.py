"""Tuning never makes a model slower: the tuned build against the hand-scheduled build, end to end.

MetaSchedule measures each kernel alone, and the database keeps a tuned
record only where it measured faster than the hand schedule (``tuning.py``).
Alone is not in the model: on BERT-base (batch 1, sequence 128, 2 cores)
tuned dense kernels measured 2-12% faster alone made the whole model 1.5-3%
slower than the hand schedules (their row tiling suits a warm, idle cache,
not a layer following another). So when a compile applies database records,
``compare`` also builds the hand-scheduled module and times both whole
modules here, alternating (every bucket function, seeded inputs: zeros for
integer inputs, which are token ids, masks and indices, small normal values
for floats), and the build keeps the faster one. The decision and both times
go to the artifact's metadata (``tuning.end_to_end``).

It is skipped, with the reason recorded, where this machine cannot time the
code: candidates measured over RPC (the code is for other machines) or a
module compiled for a CPU whose features this one lacks.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from accelopt.targets.relax.artifact import device_tensor
from accelopt.targets.relax.native_stderr import native_stderr_to_log

log = logging.getLogger(__name__)

#: alternating rounds; each times every bucket function ``NUMBER`` times and keeps the mean
ROUNDS = 5
NUMBER = 3


@dataclass
class Verdict:
    """Which build the compile keeps, and the whole-module times behind it (ms, medians of the rounds)."""

    keep: str  # "tuned" or "hand"
    tuned_ms: float
    hand_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.keep, "tuned_ms": round(self.tuned_ms, 4), "hand_ms": round(self.hand_ms, 4)}


def bucket_arguments(mod: tvm.IRModule, seed: int = 0) -> dict[str, list[np.ndarray]] | None:
    """Seeded arguments of every public Relax function of ``mod``; None if a shape is not static."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function) or func.attrs is None or "global_symbol" not in func.attrs:
            continue
        args = []
        for p in func.params:
            sinfo = p.ty if hasattr(p, "ty") else p.struct_info
            shape = getattr(sinfo, "shape", None)
            if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
                return None
            dims = tuple(int(d) for d in shape.values)
            dt = np.dtype(str(sinfo.dtype))
            if dt.kind in "iub":
                args.append(np.zeros(dims, dt))
            else:
                args.append((rng.standard_normal(dims) * 0.1).astype(dt))
        out[gv.name_hint] = args
    return out


def compare(tuned: Any, hand: Any, mod: tvm.IRModule) -> Verdict | None:
    """Time both executables over every bucket function of ``mod``; None when ``mod``'s shapes are not static."""
    args = bucket_arguments(mod)
    if not args:
        return None
    dev = tvm.cpu()
    timers = {}
    for name, ex in (("tuned", tuned), ("hand", hand)):
        with native_stderr_to_log("VirtualMachine"):
            vm = relax.VirtualMachine(ex, dev)
        per_fn = []
        for fn, arrays in args.items():
            dev_args = [device_tensor(a, dev) for a in arrays]
            vm[fn](*dev_args)  # warm-up: first-touch of the workspace, thread pool start
            per_fn.append((vm.time_evaluator(fn, dev, number=NUMBER, repeat=1), dev_args))
        timers[name] = per_fn
    times: dict[str, list[float]] = {"tuned": [], "hand": []}
    for _ in range(ROUNDS):
        for name in ("hand", "tuned"):
            times[name].append(sum(float(t(*a).mean) for t, a in timers[name]) * 1e3)
    t_ms, h_ms = statistics.median(times["tuned"]), statistics.median(times["hand"])
    verdict = Verdict("tuned" if t_ms < h_ms else "hand", t_ms, h_ms)
    log.info(
        "tuning: whole module %.2f ms tuned, %.2f ms hand-scheduled: keeping the %s schedules", t_ms, h_ms, verdict.keep
    )
    return verdict
