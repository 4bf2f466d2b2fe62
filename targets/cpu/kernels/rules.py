"""The kernels' schedule rules, registered with the cpu target's dispatcher by kernel name.

A rule receives a fresh ``s_tir.Schedule`` of a PrimFunc tagged
``"accelopt.kernel": NAME`` and the target, and returns the scheduled
``Schedule`` (the dispatcher's contract, ``accelopt.targets.cpu.schedule_rules``).
"""

from __future__ import annotations

from collections.abc import Callable

from tvm.s_tir import Schedule
from tvm.target import Target

from accelopt.targets.cpu.kernels import attention, dense, norm, qdense, quantize
from accelopt.targets.cpu.schedule_rules import register_rule


def _rule(schedule: Callable[[Schedule], object]) -> Callable[[Schedule, Target], Schedule]:
    def rule(sch: Schedule, target: Target) -> Schedule:
        schedule(sch)
        return sch

    rule.__name__ = f"rule_{getattr(schedule, '__name__', 'kernel')}"
    return rule


#: kernel name -> rule
RULES: dict[str, Callable[[Schedule, Target], Schedule]] = {
    dense.DENSE_FP32: _rule(dense.schedule_dense),
    qdense.DENSE_INT8: _rule(qdense.schedule_qdense),
    attention.ATTENTION_FP32: _rule(attention.schedule_attention),
    norm.LAYER_NORM_FP32: _rule(norm.schedule_norm),
    quantize.QUANTIZE_ROW: _rule(quantize.schedule_quantize),
}


def register_all() -> None:
    """Register every rule (idempotent)."""
    for name, fn in RULES.items():
        register_rule(name, fn, replace=True)
