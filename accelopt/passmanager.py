"""The pass manager: runs a pipeline with verification, validation, rollback and instruments.

Usage::

    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager

    pm = PassManager(build_pipeline("cleanup,fuse"), PassContext(options={"shape_bindings": {"batch": 1, "seq": 128}}))
    graph, records = pm.run(model.graph)

What ``run`` does for every pass, in order:

1. Runs the pass on ``graph.copy()``: the input graph is never mutated.
2. Verifies the result (always). A result the verifier rejects, or any
   exception the pass raises, is a **pass error**: the pass is rolled back
   (the previous graph is kept, as for an accuracy failure), its record gets
   ``pass_error`` (which pass, which nodes the verifier found broken, and
   why) and ``broken_nodes``, a warning is logged, and the run goes on.
   Only a ``PassOptionError`` (the pass's options do not fit the model) and
   ``MemoryError`` end the run.
3. With ``ctx.options["check_modified"]``, checks that ``modified`` is exact:
   True if and only if the text form changed.
4. Fills a ``PassRecord``: spec, family, options, time, op counts, nodes
   added/removed, parameter bytes by dtype, MAC estimate (symbols bound from
   ``ctx.options["shape_bindings"]``), and the pass's stats, near misses, notes.
5. If ``ctx.validator`` is set and the pass modified the graph, validates it.
   A result that fails its tolerance is rolled back (the previous graph is
   kept), with the failing metric as the reason and, when the validator has
   ``localize(old, new)``, the first diverging node. A result that the
   interpreter cannot run is rolled back the same way. Unmodified results
   reuse the previous accuracy. Every rollback goes through ``_rollback``.
6. Calls the instruments' hooks and ``ctx.progress(done, total, desc)``.

Passes expanded from a fixed-point group (``cleanup``, see
``register_group(..., fixed_point=True)``) or wrapped in ``PassGroup(...,
fixed_point=True)`` repeat until a whole round modifies nothing (at most
``max_rounds`` rounds).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelopt.cost import estimate_macs
from accelopt.errors import InterpreterError, PassError, PassOptionError, VerifyError
from accelopt.instruments import VerifyInstrument
from accelopt.ir.graph import Graph
from accelopt.ir.printer import print_graph
from accelopt.passes.base import GroupRun, Pass, PassContext, PassResult, PassSpec
from accelopt.records import AccuracyRecord, PassRecord

log = logging.getLogger(__name__)

DEFAULT_MAX_ROUNDS = 10


@dataclass
class PassGroup:
    """Passes run as one unit; with ``fixed_point`` they repeat until no pass modifies the graph."""

    passes: list[Pass]
    fixed_point: bool = False
    name: str = "group"
    max_rounds: int = DEFAULT_MAX_ROUNDS


@dataclass
class _Unit:
    passes: list[Pass]
    fixed_point: bool
    label: str
    max_rounds: int


@dataclass
class _RunState:
    history: list[str] = field(default_factory=list)
    records: list[PassRecord] = field(default_factory=list)
    accuracy: AccuracyRecord | None = None
    done: int = 0
    total: int = 0


class PassManager:
    """Runs ``passes`` (``Pass`` objects or ``PassGroup``s) over a graph; see the module docstring."""

    def __init__(
        self,
        passes: Sequence[Pass | PassGroup],
        ctx: PassContext | None = None,
        *,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> None:
        self.ctx = ctx if ctx is not None else PassContext()
        self.max_rounds = max_rounds
        self.units = self._units(passes)
        self.verifier = VerifyInstrument()

    # ------------------------------------------------------------- structure
    def _units(self, passes: Sequence[Pass | PassGroup]) -> list[_Unit]:
        units: list[_Unit] = []
        last_tag: GroupRun | None = None
        for p in passes:
            if isinstance(p, PassGroup):
                units.append(_Unit(list(p.passes), p.fixed_point, p.name, p.max_rounds))
                last_tag = None
            elif isinstance(p, Pass):
                tag = p.group
                if tag is not None and tag.fixed_point:
                    if tag is last_tag:
                        units[-1].passes.append(p)
                    else:
                        units.append(_Unit([p], True, str(tag.spec), self.max_rounds))
                    last_tag = tag
                else:
                    units.append(_Unit([p], False, str(p.spec), 1))
                    last_tag = None
            else:
                raise PassError(f"pipeline element {p!r} is neither a Pass nor a PassGroup")
        return units

    @property
    def passes(self) -> list[Pass]:
        return [p for u in self.units for p in u.passes]

    # ------------------------------------------------------------------- run
    def run(self, graph: Graph) -> tuple[Graph, list[PassRecord]]:
        """Run the pipeline; returns the final graph (never ``graph`` itself) and one record per pass run."""
        ctx = self.ctx
        self.verifier.check(graph, pass_spec="<input>", history=[])
        state = _RunState(total=sum(len(u.passes) for u in self.units))
        self._call("before_run", graph, ctx)
        current = graph
        for unit in self.units:
            rounds = 0
            while True:
                rounds += 1
                changed = False
                for p in unit.passes:
                    current, rec = self._run_one(p, current, state)
                    if rounds > 1:
                        rec.notes.append(f"{unit.label}: fixed-point round {rounds}")
                    changed |= rec.modified and not rec.rolled_back
                if not unit.fixed_point or not changed:
                    break
                if rounds >= unit.max_rounds:
                    msg = f"{unit.label}: no fixed point after {rounds} rounds; stopped"
                    log.warning(msg)
                    state.records[-1].notes.append(msg)
                    break
                state.total += len(unit.passes)
        for inst in ctx.instruments:
            hook = getattr(inst, "after_run", None)
            if hook is not None:
                hook(state.records)
        if current is graph:
            current = graph.copy()
        return current, state.records

    def _call(self, hook_name: str, *args: Any) -> None:
        for inst in self.ctx.instruments:
            hook = getattr(inst, hook_name, None)
            if hook is not None:
                hook(*args)

    def _run_one(self, p: Pass, old: Graph, state: _RunState) -> tuple[Graph, PassRecord]:
        ctx = self.ctx
        spec = str(p.spec)
        rec = PassRecord(name=p.name, spec=spec, family=p.family, options=_options_dict(p.options))
        self._call("before_pass", p, old, ctx)

        work = old.copy()
        t0 = time.perf_counter()
        result: PassResult | None = None
        broken: Exception | None = None
        try:
            result = p.run(work, ctx)
            if not isinstance(result, PassResult):
                raise PassError(f"pass {spec!r} returned {type(result).__name__}, expected PassResult")
            self.verifier.check(result.graph, pass_spec=spec, history=state.history)
        except PassOptionError as e:
            raise PassError(f"pass {spec!r} failed (passes run before it: {_hist(state.history)}): {e}") from e
        except MemoryError:
            raise
        except Exception as e:  # case 2: a broken result or a crash is rolled back; the run goes on
            broken = e
        rec.seconds = time.perf_counter() - t0
        state.history.append(spec)
        bindings = ctx.options.get("shape_bindings") or {}
        rec.ops_before = dict(old.op_counts())
        rec.param_bytes_before = old.parameter_bytes()
        rec.macs_before = estimate_macs(old, bindings)

        if broken is not None:
            rec.modified = True
            rec.accuracy = state.accuracy
            rejected = result.graph if result is not None and isinstance(result, PassResult) else work
            new = self._pass_error(p, old, rejected, rec, broken, state.history[:-1])
        else:
            assert result is not None
            new = result.graph
            if ctx.options.get("check_modified"):
                changed = print_graph(old) != print_graph(new)
                if changed != bool(result.modified):
                    raise PassError(
                        f"pass {spec!r} reported modified={result.modified} but the text form "
                        f"{'changed' if changed else 'did not change'} (passes run before it: "
                        f"{_hist(state.history[:-1])})"
                    )
            rec.modified = bool(result.modified)
            rec.stats = dict(result.stats)
            rec.near_misses = list(result.near_misses)
            rec.notes = list(result.notes)
            if not rec.modified:
                new = old
                rec.accuracy = state.accuracy
            elif ctx.validator is not None:
                new = self._validate(p, old, new, rec, state)

        rec.ops_after = dict(new.op_counts())
        rec.param_bytes_after = new.parameter_bytes()
        rec.macs_after = rec.macs_before if new is old else estimate_macs(new, bindings)
        if new is not old:
            before = {n.name for n in old.nodes}
            after = {n.name for n in new.nodes}
            rec.nodes_added = [n.name for n in new.nodes if n.name not in before]
            rec.nodes_removed = [n.name for n in old.nodes if n.name not in after]

        state.records.append(rec)
        self._call("after_pass", p, new, rec, ctx)
        state.done += 1
        if ctx.progress is not None:
            ctx.progress(state.done, state.total, spec)
        log.debug("pass %s: modified=%s in %.3f s", spec, rec.modified, rec.seconds)
        return new, rec

    def _pass_error(
        self, p: Pass, old: Graph, rejected: Graph, rec: PassRecord, error: Exception, history: Sequence[str]
    ) -> Graph:
        """Case 2: the pass broke the graph or raised: roll it back, say loudly which node and why."""
        cause = error.__cause__ if isinstance(error, PassError) and error.__cause__ is not None else error
        if isinstance(cause, VerifyError):
            rec.broken_nodes = list(cause.nodes)
            more = f" and {len(cause.nodes) - 5} more" if len(cause.nodes) > 5 else ""
            at = f" at node(s) {', '.join(cause.nodes[:5])}{more}" if cause.nodes else ""
            what = f"broke the graph{at}: {_one_line(str(cause))}"
        else:
            what = f"raised {type(error).__name__}: {_one_line(str(error))}"
        what += f" (passes run before it: {_hist(history)})"
        rec.pass_error = f"pass {rec.spec!r} {what}"
        log.warning("%s; the pass was rolled back and the run goes on (please report it)", rec.pass_error)
        log.debug("pass %s failed", rec.spec, exc_info=error)
        return self._rollback(p, old, rejected, rec, f"pass error: the pass {what}")

    def _validate(self, p: Pass, old: Graph, new: Graph, rec: PassRecord, state: _RunState) -> Graph:
        """Check ``new``; returns the graph to continue with (``old`` after a rollback)."""
        validator = self.ctx.validator
        assert validator is not None
        t0 = time.perf_counter()
        reason = ""
        try:
            outcome = validator.check(new, family=p.family, previous=old)
        except InterpreterError as e:
            outcome = None
            reason = f"the new graph does not run: {e}"
            rec.error = str(e)
        rec.validate_seconds = time.perf_counter() - t0
        if outcome is not None:
            rec.accuracy = outcome
            if outcome.ok:
                state.accuracy = outcome
                return new
            reason = "; ".join(outcome.failures) or "accuracy tolerance not met"
        localize = getattr(validator, "localize", None)
        if outcome is not None and callable(localize):
            rec.localization = localize(old, new)
        return self._rollback(p, old, new, rec, reason)

    def _rollback(self, p: Pass, old: Graph, rejected: Graph, rec: PassRecord, reason: str) -> Graph:
        """Reject ``rejected`` (the pass's result) and continue from ``old``; the one rollback path."""
        rec.rolled_back = True
        rec.rollback_reason = reason
        if not rec.pass_error:
            log.info("pass %s rolled back: %s", rec.spec, reason)
        counts_new = rejected.op_counts()
        counts_old = old.op_counts()
        delta = {k: counts_new.get(k, 0) - counts_old.get(k, 0) for k in sorted(set(counts_new) | set(counts_old))}
        delta = {k: v for k, v in delta.items() if v}
        rec.notes.append(f"rolled back; the rejected result changed op counts by {delta or 'nothing'}")
        self._call("on_rollback", p, rejected, rec, self.ctx)
        return old


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hist(history: Sequence[str]) -> str:
    return ", ".join(history) if history else "none"


def _options_dict(options: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(options):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        v = getattr(options, f.name)
        if isinstance(v, (tuple, frozenset, set)):
            v = list(v)
        elif not isinstance(v, (str, int, float, bool, list, dict)) and v is not None:
            v = str(v)
        out[f.name] = v
    return out


def run_pipeline(
    graph: Graph,
    spec: str | Sequence[PassSpec],
    ctx: PassContext | None = None,
) -> tuple[Graph, list[PassRecord]]:
    """Build the pipeline ``spec`` and run it over ``graph``."""
    from accelopt.passes.base import build_pipeline

    return PassManager(build_pipeline(spec), ctx).run(graph)
