"""The cpu target's schedule-rule dispatcher: every PrimFunc gets accelopt's own CPU schedule.

``ApplyCpuSchedules`` is a module pass (as dlight's ``ApplyDefaultSchedule`` is
for GPUs) run after Relax has legalized and fused the model. For each
PrimFunc not already scheduled it picks a rule, in this order:

1. **Kernel rules**, by name: a PrimFunc that carries ``"accelopt.kernel":
   NAME`` (a PrimFunc attribute, or an annotation of one of its blocks —
   the form that survives Relax's operator fusion: ``te.compute(...,
   attrs={"accelopt.kernel": "dense_fp32"})``) is scheduled by the rule
   registered under NAME. A kernel name with no registered rule is a
   ``TargetError`` (a kernel must not run unscheduled by mistake).
2. **Generic rules** (``generic_rules.py``), first that applies: ``matmul``
   (batched/dense GEMMs with fused prologues/epilogues), ``reduction``
   (softmax, LayerNorm-like row reductions), ``injective`` (elementwise,
   broadcasts, transposes, gathers), ``fallback`` (parallel outer loops of
   whatever remains; opaque functions such as sorts are left as TVM wrote
   them, and recorded so).

Registering a kernel rule (cpu-kern's kernels do this on import)::

    from accelopt.targets.cpu.schedule_rules import register_rule

    def schedule_dense(sch: tvm.s_tir.Schedule, target: tvm.target.Target) -> tvm.s_tir.Schedule | None:
        ...  # schedule sch (made from the PrimFunc); return it, or None if it does not apply
    register_rule("dense_fp32", schedule_dense)

A rule receives a fresh ``s_tir.Schedule`` of the PrimFunc and the target; it
returns the scheduled ``Schedule`` or ``None`` (not applicable: the next rule
is tried). An exception inside a rule is logged and counts as not
applicable. Which rule scheduled each function is recorded in the
``ScheduleReport`` the pass fills (the artifact's metadata keeps it) and
logged at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import tvm
from tvm import s_tir, tirx
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.target import Target

from accelopt.errors import TargetError

log = logging.getLogger(__name__)

#: the PrimFunc attribute / block annotation naming a kernel rule
KERNEL_ATTR = "accelopt.kernel"

RuleFn = Callable[[s_tir.Schedule, Target], "s_tir.Schedule | None"]

_KERNEL_RULES: dict[str, RuleFn] = {}


def register_rule(kernel: str, fn: RuleFn, *, replace: bool = False) -> RuleFn:
    """Register ``fn`` as the schedule of PrimFuncs marked ``"accelopt.kernel": kernel``."""
    if kernel in _KERNEL_RULES and not replace and _KERNEL_RULES[kernel] is not fn:
        raise ValueError(f"a schedule rule for kernel {kernel!r} is already registered")
    _KERNEL_RULES[kernel] = fn
    return fn


def kernel_rules() -> dict[str, RuleFn]:
    """The registered kernel rules by name."""
    return dict(_KERNEL_RULES)


def kernel_name(func: tirx.PrimFunc) -> str | None:
    """The kernel a PrimFunc is marked with: its attribute, else the annotation of one of its blocks."""
    attrs = func.attrs
    if attrs is not None and KERNEL_ATTR in attrs:
        return str(attrs[KERNEL_ATTR])
    sch = s_tir.Schedule(func)
    try:
        todo = list(sch.get_child_blocks(sch.get_sblock("root")))
    except Exception:  # an opaque function TVM wrote without a root block (sorts, scans): no kernel
        return None
    while todo:
        block = todo.pop(0)
        ann = sch.get(block).annotations
        if KERNEL_ATTR in ann:
            return str(ann[KERNEL_ATTR])
        todo.extend(sch.get_child_blocks(block))
    return None


@dataclass
class ScheduleReport:
    """Which rule scheduled each PrimFunc (function name -> rule name), and notes on failed rules."""

    rules: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rule in self.rules.values():
            out[rule] = out.get(rule, 0) + 1
        return dict(sorted(out.items()))


def copy_func(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A deep copy of ``func``: ``s_tir.Schedule`` mutates the statements of the function it is given in place."""
    return tvm.ir.load_json(tvm.ir.save_json(func))


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


#: ``lookup(func)``: ``func`` scheduled from a tuning database, or None (``accelopt.targets.cpu.tuning``)
LookupFn = Callable[[tirx.PrimFunc], "tirx.PrimFunc | None"]


def schedule_func(
    func: tirx.PrimFunc, target: Target, report: ScheduleReport, name: str, lookup: LookupFn | None = None
) -> tirx.PrimFunc:
    """One PrimFunc through the rules (cases 1-2 of the module docstring); a database record first, if any."""
    from accelopt.targets.cpu.generic_rules import GENERIC_RULES

    kernel = kernel_name(func)
    if lookup is not None:
        tuned = lookup(func)
        if tuned is not None:
            report.rules[name] = f"database:{kernel or 'generic'}"
            return tuned.with_attr("tirx.is_scheduled", True)
    candidates: list[tuple[str, RuleFn]] = []
    if kernel is not None:
        rule = _KERNEL_RULES.get(kernel)
        if rule is None:
            known = ", ".join(sorted(_KERNEL_RULES)) or "none"
            raise TargetError(f"PrimFunc {name} is marked as kernel {kernel!r}, which has no schedule rule ({known})")
        candidates.append((f"kernel:{kernel}", rule))
    candidates.extend(GENERIC_RULES)
    pristine = tvm.ir.save_json(func)  # a rule that fails halfway has mutated the function it was given
    for attempt, (rule_name, rule) in enumerate(candidates):
        try:
            sch = rule(s_tir.Schedule(func if attempt == 0 else tvm.ir.load_json(pristine)), target)
        except Exception as e:  # a rule that does not fit raises deep inside TVM: try the next one
            report.failures.append(f"{name}: rule {rule_name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
            log.debug("%s: rule %s failed: %s", name, rule_name, e)
            continue
        if sch is None:
            continue
        if kernel is not None and not rule_name.startswith("kernel:"):
            log.warning("PrimFunc %s (kernel %s) fell back to the generic rule %s", name, kernel, rule_name)
        report.rules[name] = rule_name
        log.debug("%s: scheduled by %s", name, rule_name)
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    report.rules[name] = "unscheduled"
    log.warning("PrimFunc %s: no schedule rule applied; it runs as TVM wrote it (single-threaded)", name)
    return tvm.ir.load_json(pristine)


@module_pass(opt_level=0, name="ApplyCpuSchedules")
class ApplyCpuSchedules:  # pylint: disable=too-few-public-methods
    """Apply the kernel and generic rules to every unscheduled PrimFunc of the module.

    ``lookup`` (optional): a tuning database's best schedule of a function, tried before the rules.
    """

    def __init__(self, report: ScheduleReport | None = None, lookup: LookupFn | None = None) -> None:
        self.report = report if report is not None else ScheduleReport()
        self.lookup = lookup

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        target = Target.current(allow_none=False)
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not _is_scheduled(func):
                updates[gv] = schedule_func(func, target, self.report, gv.name_hint, self.lookup)
        for gv, func in updates.items():
            mod[gv] = func
        return mod


__all__ = [
    "KERNEL_ATTR",
    "ApplyCpuSchedules",
    "LookupFn",
    "RuleFn",
    "ScheduleReport",
    "copy_func",
    "kernel_name",
    "kernel_rules",
    "register_rule",
    "schedule_func",
]
