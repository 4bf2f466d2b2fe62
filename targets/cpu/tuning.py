"""MetaSchedule tuning of the cpu target's kernels, with a persistent database (``--tune-trials N``).

``tune_module`` runs between legalization and scheduling (``build.compile_module``):

1. **Tasks**: the model's PrimFuncs whose x86 kernel has a tunable design space
   (``SPACES``: fp32 dense, int8 VNNI dense, attention), deduplicated, each
   weighted by its number of call sites. The other functions (elementwise,
   LayerNorm, quantization: memory-bound) keep their hand schedules.
2. **Seeds**: each task's hand schedule (the kernel's rule) is built and
   measured first and committed to the database as a tuning record, so the
   database always holds it: it is what a compile gets unless tuning measured
   something faster, and tuning can never make a model slower than the hand
   schedules (as measured by the same runner).
3. **Search**: MetaSchedule's evolutionary search with the xgb cost model over
   the kernel's own design space: the hand schedule with its tile decisions
   sampled (``sample_perfect_tile``: row blocking of the GEMM register tiles,
   query rows per attention block), mutated by ``MutateTileSize``; the
   gradient task scheduler shares ``trials`` among the tasks. Progress goes to
   the log (``accelopt.targets.cpu.tuning`` at INFO: one line per task and
   round, MetaSchedule's own log at DEBUG).
4. **Database**: a MetaSchedule JSON database in ``database`` (default
   ``~/.cache/accelopt/tuning/<mcpu>-<cores>c/``, one folder per target, records
   keyed by workload), plus ``tuned.json``: the trials each workload was tuned
   with. A later compile of the same shapes with no more trials than recorded
   runs no trials and applies the best records (``Database.best``).
5. **RPC**: with ``rpc="host:port:key"`` candidates are measured on the
   machines registered with that TVM RPC tracker key; building stays local.

The builder compiles with ``tvm.compile`` rather than MetaSchedule's default
build function, which imports ``tvm.s_tir.tensor_intrin`` (every target's
intrinsics: measured 148 s on this machine) in each fresh worker process; the
tune contexts are created without that import for the same reason (the VNNI
intrinsics the kernels tensorize with are accelopt's own, ``kernels.vnni``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from accelopt.errors import TargetError
from accelopt.targets.cpu.kernels import attention, dense, qdense
from accelopt.targets.cpu.schedule_rules import copy_func, kernel_name, kernel_rules

log = logging.getLogger(__name__)

#: kernel name -> its design space (the hand schedule with sampled tile decisions)
SPACES: dict[str, Callable[[Schedule], None]] = {
    dense.DENSE_FP32: functools.partial(dense.schedule_dense, sample=True),
    qdense.DENSE_INT8: functools.partial(qdense.schedule_qdense, sample=True),
    attention.ATTENTION_FP32: functools.partial(attention.schedule_attention, sample=True),
}


@dataclass(frozen=True)
class TuningOptions:
    """``trials`` (0: no tuning; the database is still applied when one is named), the database folder, RPC."""

    trials: int = 0
    database: str = ""  # "" = default_database_dir() / target_key(target)
    rpc: str = ""  # "host:port:key" of a TVM RPC tracker
    trials_per_iter: int = 16
    timeout_s: float = 60.0

    @property
    def active(self) -> bool:
        return self.trials > 0 or bool(self.database)


@dataclass
class TuningReport:
    """What one ``tune_module`` call did."""

    database: str = ""
    tasks: list[str] = field(default_factory=list)
    #: tasks skipped because the database had them tuned with at least this many trials
    reused: list[str] = field(default_factory=list)
    trials: int = 0
    seconds: float = 0.0
    #: the whole tuned module against the hand-scheduled one (``tuning_guard.py``): which was kept, both times
    end_to_end: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "tasks": list(self.tasks),
            "reused": list(self.reused),
            "trials": self.trials,
            "seconds": round(self.seconds, 1),
            "end_to_end": dict(self.end_to_end),
        }


def default_database_dir() -> Path:
    """``$XDG_CACHE_HOME/accelopt/tuning`` (``~/.cache/accelopt/tuning``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accelopt" / "tuning"


def target_key(target: Target) -> str:
    """The folder name of a target's records: its mcpu and core count."""
    return f"{target.attrs.get('mcpu', 'generic')}-{int(target.attrs.get('num-cores', 1))}c"


def parse_rpc(spec: str) -> ms.runner.RPCConfig:
    """``host:port:key`` -> an RPC config for the tracker."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2] or not parts[1].isdigit():
        raise TargetError(f"rpc must be HOST:PORT:KEY (a TVM RPC tracker and the key of its servers), got {spec!r}")
    return ms.runner.RPCConfig(
        tracker_host=parts[0], tracker_port=int(parts[1]), tracker_key=parts[2], session_timeout_sec=120
    )


# ------------------------------------------------------------------ database
class Database:
    """The records of one target: a MetaSchedule JSON database and ``tuned.json`` (case 4)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ms = ms.database.JSONDatabase(
            path_workload=str(folder / "workloads.json"),
            path_tuning_record=str(folder / "records.json"),
            allow_missing=True,
            module_equality="structural",
        )
        self._tuned_path = folder / "tuned.json"
        self._tuned: dict[str, int] = json.loads(self._tuned_path.read_text()) if self._tuned_path.exists() else {}

    @staticmethod
    def key(func: tirx.PrimFunc) -> str:
        """A stable key of the workload (its structural hash)."""
        return f"{tvm_ffi.structural_hash(_module(func)):016x}"

    def tuned_trials(self, func: tirx.PrimFunc) -> int:
        return int(self._tuned.get(self.key(func), 0))

    def mark_tuned(self, func: tirx.PrimFunc, trials: int) -> None:
        k = self.key(func)
        self._tuned[k] = max(trials, self._tuned.get(k, 0))
        tmp = self._tuned_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._tuned, indent=1, sort_keys=True))
        tmp.replace(self._tuned_path)

    def has(self, func: tirx.PrimFunc) -> bool:
        return bool(self.ms.has_workload(_module(func)))

    def best(self, func: tirx.PrimFunc, target: Target) -> tuple[tirx.PrimFunc, float] | None:
        """``func`` scheduled by its fastest record, with the record's measured seconds; None without one."""
        mod = _module(func)
        if not self.ms.has_workload(mod):
            return None
        record = self.ms.query_tuning_record(mod, target, "main")
        if record is None:
            return None
        sch = Schedule(mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        out = sch.mod["main"]
        symbol = func.attrs.get("global_symbol") if func.attrs is not None else None
        out = out.with_attr("global_symbol", symbol) if symbol is not None else out.without_attr("global_symbol")
        return out, _mean(record.run_secs)


def _module(func: tirx.PrimFunc) -> tvm.IRModule:
    """The workload of ``func`` as MetaSchedule normalizes a PrimFunc (so records match across processes).

    A deep copy: a ``Schedule`` mutates the statements of the module it is given in place, which would
    corrupt ``func`` for every later use.
    """
    return tvm.IRModule({"main": copy_func(func).with_attr("global_symbol", "main").with_attr("tirx.noalias", True)})


def _mean(secs: Any) -> float:
    vals = [float(s) for s in (secs or [])]
    return sum(vals) / len(vals) if vals else float("inf")


# --------------------------------------------------------------------- tasks
@dataclass
class Task:
    name: str
    kernel: str
    func: tirx.PrimFunc
    weight: int = 0


def extract_tasks(mod: tvm.IRModule) -> list[Task]:
    """Case 1: the tunable kernels of a legalized module, deduplicated, weighted by call sites."""
    calls = _call_counts(mod)
    tasks: dict[str, Task] = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        kernel = kernel_name(func)
        if kernel not in SPACES:
            continue
        key = Database.key(func)
        task = tasks.setdefault(key, Task(gv.name_hint, kernel, func))
        task.weight += calls.get(gv.name_hint, 1)
    return list(tasks.values())


def _call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many ``call_tir`` sites each PrimFunc has in the module's Relax functions."""
    counts: dict[str, int] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            name = expr.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


# -------------------------------------------------------------------- tuning
def _build(mod: tvm.IRModule, target: Target, _params: Any) -> Any:
    """The builder's build function (see the module docstring): ``tvm.compile`` of the scheduled TIR."""
    return tvm.compile(mod, target=target).mod


def _threads(n: int) -> None:
    """Runner worker initializer: measure with the target's thread count (TVM uses 1 here unless told)."""
    tvm.get_global_func("runtime.config_threadpool")(1, n)


def _tune_context(task: Task, target: Target, seed: int) -> ms.TuneContext:
    """A tune context made as ``ms.TuneContext`` makes it, minus its import of every target's intrinsics."""
    space = ms.space_generator.ScheduleFn(
        SPACES[task.kernel], sch_rules=[], postprocs=[], mutator_probs={ms.mutator.MutateTileSize(): 1.0}
    )
    ctx = ms.TuneContext.__new__(ms.TuneContext)
    ctx.__init_handle_by_constructor__(
        ms.tune_context._ffi_api.TuneContext,
        _module(task.func),
        target,
        space,
        ms.search_strategy.EvolutionarySearch(),
        task.name,
        int(target.attrs.get("num-cores", 1)),
        seed,
        ms.logging.get_logging_func(ms.logging.get_logger("tvm.s_tir.meta_schedule")),
    )
    ms.tune_context._ffi_api.TuneContextInitialize(ctx)
    return ctx


def _runner(options: TuningOptions, target: Target) -> ms.runner.Runner:
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50)
    if options.rpc:
        return ms.runner.RPCRunner(parse_rpc(options.rpc), evaluator_config=evaluator, max_workers=1)
    cores = int(target.attrs.get("num-cores", 1))
    return ms.runner.LocalRunner(
        timeout_sec=options.timeout_s, evaluator_config=evaluator, initializer=functools.partial(_threads, cores)
    )


def _builder(options: TuningOptions, target: Target) -> ms.builder.Builder:
    return ms.builder.LocalBuilder(
        max_workers=int(target.attrs.get("num-cores", 1)), timeout_sec=options.timeout_s, f_build=_build
    )


def seed_hand_schedules(
    tasks: list[Task], target: Target, db: Database, builder: ms.builder.Builder, runner: ms.runner.Runner
) -> None:
    """Case 2: build, measure and commit each task's hand schedule."""
    rules = kernel_rules()
    inputs, scheds = [], []
    for task in tasks:
        sch = rules[task.kernel](Schedule(_module(task.func)), target)
        if sch is None:
            raise TargetError(f"tuning: the {task.kernel} rule did not schedule {task.name}")
        scheds.append(sch)
        inputs.append(ms.builder.BuilderInput(sch.mod, target))
    built = builder.build(inputs)
    run_inputs, kept = [], []
    for task, sch, res in zip(tasks, scheds, built):
        if res.error_msg:
            log.warning("tuning: the hand schedule of %s did not build: %s", task.name, res.error_msg.splitlines()[0])
            continue
        args = ms.arg_info.ArgInfo.from_prim_func(task.func)
        run_inputs.append(ms.runner.RunnerInput(res.artifact_path, "cpu", args))
        kept.append((task, sch, args))
    for (task, sch, args), fut in zip(kept, runner.run(run_inputs)):
        result = fut.result()
        if result.error_msg:
            log.warning("tuning: the hand schedule of %s did not run: %s", task.name, result.error_msg.splitlines()[0])
            continue
        workload = db.ms.commit_workload(_module(task.func))
        db.ms.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, result.run_secs, target, args))
        log.info("tuning: %s hand schedule %.3f ms", task.name, _mean(result.run_secs) * 1e3)


def open_database(options: TuningOptions, target: Target) -> Database:
    folder = Path(options.database) if options.database else default_database_dir() / target_key(target)
    return Database(folder)


def tune_module(mod: tvm.IRModule, target: Target, options: TuningOptions) -> tuple[Database, TuningReport]:
    """Cases 1-5: tune the module's kernels (unless the database has them) and return the database."""
    t0 = time.perf_counter()
    db = open_database(options, target)
    report = TuningReport(database=str(db.folder))
    tasks = extract_tasks(mod)
    report.tasks = [t.name for t in tasks]
    todo = [t for t in tasks if db.tuned_trials(t.func) < options.trials]
    report.reused = [t.name for t in tasks if t not in todo]
    if options.trials <= 0 or not todo:
        if report.reused and options.trials > 0:
            log.info("tuning: the database %s has all %d task(s) tuned; no trials run", db.folder, len(tasks))
        report.seconds = time.perf_counter() - t0
        return db, report
    log.info(
        "tuning %d task(s) (%s) with %d trials; records in %s",
        len(todo),
        ", ".join(f"{t.name} x{t.weight}" for t in todo),
        options.trials,
        db.folder,
    )
    builder, runner = _builder(options, target), _runner(options, target)
    seed_hand_schedules(todo, target, db, builder, runner)
    with tempfile.TemporaryDirectory(prefix="accelopt-tune-") as work:
        ms.tune_tasks(
            tasks=[_tune_context(t, target, seed=i) for i, t in enumerate(todo)],
            task_weights=[float(t.weight) for t in todo],
            work_dir=work,
            max_trials_global=options.trials,
            num_trials_per_iter=max(1, min(options.trials_per_iter, options.trials)),
            builder=builder,
            runner=runner,
            database=db.ms,
            cost_model="xgb",
            task_scheduler="gradient",
        )
    for t in todo:
        db.mark_tuned(t.func, options.trials)
        best = db.best(t.func, target)
        if best is not None:
            log.info("tuning: %s best %.3f ms", t.name, best[1] * 1e3)
    report.trials = options.trials
    report.seconds = time.perf_counter() - t0
    return db, report
