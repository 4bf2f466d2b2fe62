"""GPU schedules: every PrimFunc gets one, and the report says which rule gave it.

``schedule_module`` walks the module's PrimFuncs (after Relax's legalize and
FuseOps/FuseTIR, so one PrimFunc is one future kernel group) and tries, in
order:

1. accelopt's own rules (``schedules="accelopt"``, the default):
   ``small-fp16-matmul``: an fp16 matmul (fp16 operands, fp16 or fp32
   accumulator) with a dim of 64 or less, which dlight's Matmul rule leaves
   to its SIMT path (it tensorizes only when every dim exceeds 64): the
   attention products ``Q K^T`` and ``P V`` of BERT-class models (head size
   64) and small projections. They are tensorized with dlight's own wmma
   schedule (``MatmulTensorization``, m16n16k16, dims padded to its tiles).
2. dlight's GPU rules, as TVM's default CUDA pipeline orders them: Matmul
   (wmma tensor cores for fp16 on sm_70+ when every dim exceeds 64, with
   fused epilogues such as bias + GELU), GEMV, Reduction, GeneralReduction
   (softmax, LayerNorm rows), Fallback (injective kernels).

A PrimFunc that no rule schedules is a ``TargetError`` naming it (the build
would otherwise fail deep inside TVM with "did you forget to bind?").
``ScheduleReport`` maps every PrimFunc to its rule; the artifact's metadata
keeps the counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from accelopt.errors import TargetError

log = logging.getLogger(__name__)

SCHEDULE_SETS = ("accelopt", "dlight")


@dataclass
class ScheduleReport:
    """PrimFunc name -> the rule that scheduled it."""

    rules: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.rules.values()).items()))


def _dlight_rules() -> list[tuple[str, Any]]:
    return [
        ("dlight.Matmul", dl.gpu.Matmul()),
        ("dlight.GEMV", dl.gpu.GEMV()),
        ("dlight.Reduction", dl.gpu.Reduction()),
        ("dlight.GeneralReduction", dl.gpu.GeneralReduction()),
        ("dlight.Fallback", dl.gpu.Fallback()),
    ]


def _fp16_matmul_dims(func: tirx.PrimFunc) -> list[int] | None:
    """The static spatial and reduction extents of ``func``'s matmul block when it multiplies fp16 operands."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_root(sch) else []
    reductions = [b for b in blocks if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    stmt = sch.get(reductions[0])
    if len(stmt.reads) < 2 or any(r.source.dtype != "float16" for r in stmt.reads[:2]):
        return None
    if stmt.writes[0].source.dtype not in ("float16", "float32"):
        return None
    dims = []
    for iv in stmt.iter_vars:
        if not isinstance(iv.dom.extent, tirx.IntImm):
            return None
        dims.append(int(iv.dom.extent.value))
    return dims


def _has_root(sch: s_tir.Schedule) -> bool:
    try:
        sch.get_sblock("root")
    except (tvm.TVMError, RuntimeError, ValueError):
        return False
    return True


class SmallFp16Matmul:
    """Rule 1: fp16 matmuls with a dim <= 64 tensorized with dlight's wmma schedule (module docstring)."""

    name = "accelopt.small-fp16-matmul"

    def apply(self, func: tirx.PrimFunc, target: Any) -> s_tir.Schedule | None:
        dims = _fp16_matmul_dims(func)
        if dims is None or len(dims) < 3:
            return None
        # dims: [batch..., M, N, K] in some order; dlight takes the rest when every dim is large
        if min(dims[-3:]) > 64 or min(dims[-3:]) < 16:
            return None
        from tvm.s_tir.dlight.gpu.matmul import MatmulTensorization

        try:
            return MatmulTensorization().apply(func, target, False)
        except (tvm.TVMError, RuntimeError, ValueError, AssertionError) as e:
            log.debug("small-fp16-matmul does not apply: %s", e)
            return None


def _accelopt_rules() -> list[tuple[str, Any]]:
    rule = SmallFp16Matmul()
    return [(rule.name, _Adapter(rule))]


class _Adapter:
    def __init__(self, rule: SmallFp16Matmul) -> None:
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Any, tunable: bool) -> Any:
        return self.rule.apply(func, target)


def rules_for(schedules: str) -> list[tuple[str, Any]]:
    if schedules not in SCHEDULE_SETS:
        raise TargetError(f"unknown gpu schedules {schedules!r}; choose one of {', '.join(SCHEDULE_SETS)}")
    return (_accelopt_rules() if schedules == "accelopt" else []) + _dlight_rules()


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return "tirx.is_scheduled" in func.attrs and int(func.attrs["tirx.is_scheduled"]) == 1


def schedule_module(mod: tvm.IRModule, target: Any, schedules: str, report: ScheduleReport) -> tvm.IRModule:
    """Schedule every PrimFunc of ``mod`` for ``target`` (cases 1-2); unscheduled ones are a ``TargetError``."""
    rules = rules_for(schedules)
    updated: dict[Any, tirx.PrimFunc] = {}
    unscheduled: list[str] = []
    with target:
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            name = gvar.name_hint
            if _is_scheduled(func):
                report.rules[name] = "pre-scheduled"
                continue
            for rule_name, rule in rules:
                sch = rule.apply(func, target, False)
                if isinstance(sch, list):
                    sch = sch[0] if sch else None
                if sch is not None:
                    updated[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                    report.rules[name] = rule_name
                    break
            else:
                unscheduled.append(name)
    if unscheduled:
        raise TargetError(f"no GPU schedule rule applies to {len(unscheduled)} kernel(s): {', '.join(unscheduled)}")
    for gvar, func in updated.items():
        mod[gvar] = func
    log.info("gpu schedules: %s", report.counts())
    return mod
