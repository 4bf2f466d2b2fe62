"""Build a lowered Relax module for CUDA: legalize and fuse, schedule every kernel, compile, export.

``build_library`` runs, for ``Target({"kind": "cuda", "arch": ARCH}, host=llvm)``:

1. TVM's CUDA library dispatch and legalization: ``LegalizeOps``,
   ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR`` (the
   matmul + bias + GELU + cast epilogues become one kernel here);
2. the tuning database's records where one is given (``tuning.py``);
3. ``schedules.schedule_module``: a schedule for every kernel, with the rule
   that gave it reported;
4. TVM's CUDA dataflow lowering and finalization passes, with
   ``RewriteCUDAGraph`` capturing the whole static-shape forward pass as one
   CUDA graph when ``cuda_graphs`` is on (``relax.backend.use_cuda_graph``);
5. codegen inside ``toolchain.cuda_build_scope``: nvcc compiles the kernels
   to ``ARCH`` machine code here, and ``export_library`` embeds it.

``arch`` defaults to ``sm_90`` (H100/H200). Not ``sm_90a``: dlight's tensor
core rules check the arch by number and silently drop the tensor cores for
``sm_90a`` (and for the ``nvidia/nvidia-h100`` tag).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from accelopt.errors import TargetError
from accelopt.targets.gpu import toolchain
from accelopt.targets.gpu.schedules import ScheduleReport, schedule_module
from accelopt.targets.relax.native_stderr import native_stderr_to_log

log = logging.getLogger(__name__)

DEFAULT_ARCH = "sm_90"


def cuda_target(arch: str) -> tvm.target.Target:
    toolchain.gencode_flags(arch)  # a malformed arch is a TargetError before TVM sees it
    return tvm.target.Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"})


@dataclass
class BuildResult:
    """What ``build_library`` produced and how long each stage took."""

    library: Path
    schedules: ScheduleReport
    seconds: dict[str, float] = field(default_factory=dict)
    nvcc: toolchain.CompileLog = field(default_factory=toolchain.CompileLog)
    kernels: int = 0


def legalize(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Case 1 (TVM's CUDA pipeline up to, not including, its dlight schedules)."""
    from tvm.relax.backend.cuda import pipeline as cuda_pipeline

    seq = tvm.transform.Sequential(
        [
            *cuda_pipeline.library_dispatch_passes(target),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )
    with target:
        return seq(mod)


def finalize_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """Case 4: TVM's CUDA dataflow lowering and finalization passes."""
    from tvm.relax.backend.cuda import pipeline as cuda_pipeline

    return tvm.transform.Sequential(
        cuda_pipeline.dataflow_lower_passes(target) + cuda_pipeline.finalize_passes(target)
    )


def build_library(
    mod: tvm.IRModule,
    out: Path,
    *,
    arch: str = DEFAULT_ARCH,
    schedules: str = "accelopt",
    cuda_graphs: bool = True,
    tune_trials: int = 0,
    tune_db: str = "",
    rpc: str = "",
    toolkit: toolchain.CudaToolkit | None = None,
) -> BuildResult:
    """Cases 1-5: compile ``mod`` and export the library to ``out`` (a ``.so`` path)."""
    target = cuda_target(arch)
    tk = toolkit or toolchain.find_toolkit()
    report = ScheduleReport()
    seconds: dict[str, float] = {}
    config = {"relax.backend.use_cuda_graph": bool(cuda_graphs)}
    t0 = time.perf_counter()
    with toolchain.cuda_build_scope(arch, tk) as nvcc_log, tvm.transform.PassContext(opt_level=3, config=config):
        mod = legalize(mod, target)
        seconds["legalize"] = time.perf_counter() - t0
        if tune_trials > 0 or tune_db:
            from accelopt.targets.gpu import tuning

            work_dir = Path(tune_db) if tune_db else out.parent / "tuning"
            t_tune = time.perf_counter()
            if tune_trials > 0:
                database = tuning.tune(mod, target, work_dir, tune_trials, rpc)
            else:
                database = tuning.open_database(work_dir)
            mod = tuning.apply_database(mod, target, database, report)
            seconds["tune"] = time.perf_counter() - t_tune
        t1 = time.perf_counter()
        mod = schedule_module(mod, target, schedules, report)
        seconds["schedule"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        try:
            ex = tvm.compile(mod, target=target, relax_pipeline=finalize_pipeline(target))
        except TargetError:
            raise
        except Exception as e:  # noqa: BLE001 - TVM raises many error types from codegen
            raise TargetError(f"TVM could not compile the module for {arch}: {str(e)[-1500:]}") from e
        seconds["compile"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with native_stderr_to_log("export_library"):
        ex.export_library(str(out))
    seconds["export"] = time.perf_counter() - t3
    seconds["total"] = time.perf_counter() - t0
    kernels = sum(1 for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    log.info("gpu build: %d kernels, %.1f s (nvcc %.1f s)", kernels, seconds["total"], nvcc_log.seconds)
    return BuildResult(out, report, {k: round(v, 3) for k, v in seconds.items()}, nvcc_log, kernels)
