"""The cpu target's build pipeline: a lowered Relax module -> a Relax VM executable for LLVM.

Stages (``compile_module``):

1. **legalize**: TVM's CPU library dispatch (sorts, scans) and legalization
   (Relax ops -> TIR through TOPI), ``AnnotateTIROpPattern``,
   ``FoldConstant``, ``FuseOps`` + ``FuseTIR`` (elementwise chains fused
   into their producers: matmul epilogues, softmax prologues), dead code
   elimination;
2. **schedule**: ``ApplyCpuSchedules`` (``schedule_rules.py``): every
   PrimFunc gets a kernel rule or accelopt's generic rules; which rule
   scheduled each one is recorded;
3. **codegen**: ``tvm.compile`` with the CPU backend's dataflow-lowering and
   finalization passes (memory planning, VM lowering) and TVM's default TIR
   pipeline to LLVM for the target (``mcpu`` and ``num-cores``).

Each stage is timed (``BuildResult.seconds``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic  # its __init__ omits dataflow_lower_passes

from accelopt.targets.cpu.artifact import configure_threads
from accelopt.targets.cpu.schedule_rules import ApplyCpuSchedules, LookupFn, ScheduleReport, copy_func
from accelopt.targets.cpu.tuning import TuningOptions, TuningReport, tune_module
from accelopt.targets.cpu.tuning_guard import compare

log = logging.getLogger(__name__)


def llvm_target(mcpu: str, num_cores: int) -> tvm.target.Target:
    """The TVM target for ``mcpu`` with ``num_cores`` worker threads in mind."""
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": max(1, int(num_cores))})


@dataclass
class BuildResult:
    """A compiled module and what the build recorded."""

    executable: Any
    schedule: ScheduleReport
    seconds: dict[str, float] = field(default_factory=dict)
    primfuncs: int = 0
    tuning: TuningReport | None = None


def legalize(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Stage 1."""
    passes = [
        *cpu_generic.library_dispatch_passes(target),
        *cpu_generic.legalize_passes(target),
        relax.transform.DeadCodeElimination(),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def legalize_and_schedule(
    mod: tvm.IRModule, target: tvm.target.Target, report: ScheduleReport, lookup: LookupFn | None = None
) -> tvm.IRModule:
    """Stages 1 and 2 (``lookup``: a tuning database's schedules, tried before the rules)."""
    mod = legalize(mod, target)
    with target:
        return tvm.transform.Sequential([ApplyCpuSchedules(report, lookup)])(mod)


def compile_module(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    tuning: TuningOptions | None = None,
    *,
    measure_here: str | None = None,
) -> BuildResult:
    """Stages 1-3 for a Relax module from ``accelopt.targets.relax.build_module``.

    ``tuning``: MetaSchedule tuning of the kernels between stages 1 and 2, and/or a database whose best
    records schedule the functions it has (``tuning.py``). When database records schedule some function,
    the hand-scheduled module is built too and the faster of the two whole modules is kept
    (``tuning_guard.py``), unless ``measure_here`` says why this machine cannot time the code.
    """
    report = ScheduleReport()
    t0 = time.perf_counter()
    mod = legalize(mod, target)
    lookup: LookupFn | None = None
    tuning_report: TuningReport | None = None
    seconds: dict[str, float] = {}
    if tuning is not None and tuning.active:
        tt = time.perf_counter()
        db, tuning_report = tune_module(mod, target, tuning)
        seconds["tune"] = round(time.perf_counter() - tt, 3)

        def lookup(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
            best = db.best(func, target)
            return None if best is None else best[0]

    # the scheduling pass rewrites the module it is given in place: a pristine copy for the hand-scheduled build
    legalized = (
        tvm.IRModule(
            {gv: copy_func(f) if isinstance(f, tirx.PrimFunc) else f for gv, f in mod.functions_items()},
            attrs=mod.attrs,
            global_infos=mod.global_infos,
        )
        if lookup is not None
        else mod
    )
    with target:
        mod = tvm.transform.Sequential([ApplyCpuSchedules(report, lookup)])(mod)
    t1 = time.perf_counter()
    n_funcs = sum(1 for _, f in mod.functions_items() if isinstance(f, tirx.PrimFunc))
    executable = _codegen(mod, target)
    t2 = time.perf_counter()
    if tuning_report is not None and any(r.startswith("database:") for r in report.rules.values()):
        executable, report = _faster_of(executable, report, legalized, target, tuning_report, measure_here)
        seconds["end_to_end_check"] = round(time.perf_counter() - t2, 3)
    seconds = {
        "legalize_schedule": round(t1 - t0 - seconds.get("tune", 0.0), 3),
        **seconds,
        "codegen": round(t2 - t1, 3),
    }
    log.info(
        "compiled %d PrimFuncs for %s in %.1f s (rules: %s)",
        n_funcs,
        target.attrs.get("mcpu", "?"),
        t2 - t0,
        ", ".join(f"{k} {v}" for k, v in report.counts().items()),
    )
    return BuildResult(executable, report, seconds, n_funcs, tuning_report)


def _codegen(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """Stage 3."""
    lower = tvm.transform.Sequential([*cpu_generic.dataflow_lower_passes(target), *cpu_generic.finalize_passes(target)])
    return tvm.compile(mod, target, relax_pipeline=lower)


def _faster_of(
    tuned: Any,
    report: ScheduleReport,
    legalized: tvm.IRModule,
    target: tvm.target.Target,
    tuning: TuningReport,
    measure_here: str | None,
) -> tuple[Any, ScheduleReport]:
    """The tuned executable or the hand-scheduled one, whichever runs the whole module faster here."""
    if measure_here is not None:
        tuning.end_to_end = {"kept": "tuned", "skipped": measure_here}
        return tuned, report
    hand_report = ScheduleReport()
    with target:
        hand_mod = tvm.transform.Sequential([ApplyCpuSchedules(hand_report)])(legalized)
    hand = _codegen(hand_mod, target)
    configure_threads(int(target.attrs.get("num-cores", 1)))
    verdict = compare(tuned, hand, legalized)
    if verdict is None:
        tuning.end_to_end = {"kept": "tuned", "skipped": "the module has symbolic shapes"}
        return tuned, report
    tuning.end_to_end = verdict.as_dict()
    if verdict.keep == "tuned":
        return tuned, report
    return hand, hand_report
