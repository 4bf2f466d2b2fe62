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
   interpreter cannot run is rolled back the same way, as a pass error (the
   previous graph ran on the same inputs). Unmodified results
   reuse the previous accuracy. Every rollback goes through ``_rollback``.
6. Calls the instruments' hooks and ``ctx.progress(done, total, desc)``, in
   pipeline order, once a pass's fate is settled (``on_rollback`` just before
   ``after_pass``).
7. Exact rewrites (families in ``validation.EXACT_FAMILIES``: cleanup, fusion,
   layout, test), when the validator has ``check_chain`` and its config allows
   it (``ValidationConfig.local``), are checked *locally* and together: the
   pass manager goes on with the new graph and keeps the pending passes
   (their graphs share constants); before a pass of another family, at the
   end, or once pending passes hold more new constants than the graph they
   started from (at least ``PENDING_MIN_BYTES``), it settles them:
   7a one sweep (``Validator.check_chain``, ``accelopt.validation_local``)
      runs the first graph once with every pending pass's rewritten nodes and
      compares what each pass rewrote with what it replaced;
   7b a pass whose local check fails (or that cannot be checked locally) is
      checked on the whole model as in case 5, which decides: a rollback there
      finishes the passes before it and itself, drops the ones after it, and
      the run goes on from the graph before it (the dropped passes run again,
      so ``before_pass`` may be called twice for them);
   7c when all are kept, the last graph is checked once on the whole model
      against the first (the tightest of the passes' tolerances, and the
      user's budget against the reference); if that fails, the run goes back
      to the first pending pass and from there checks every pass on the whole
      model (case 5), so what validation catches is the same as before.
   A locally checked pass's accuracy has ``scope="local"`` (its rewritten
   values against the ones they replaced); the last one also gets the
   whole-model metrics against the reference.

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
from typing import Any, cast

from accelopt.cost import estimate_macs
from accelopt.errors import InterpreterError, PassError, PassOptionError, VerifyError
from accelopt.instruments import VerifyInstrument
from accelopt.ir.graph import Graph
from accelopt.ir.printer import print_graph
from accelopt.passes.base import GroupRun, Pass, PassContext, PassResult, PassSpec
from accelopt.passmanager_state import (
    DEFAULT_MAX_ROUNDS,
    PENDING_MIN_BYTES,
    Cursor,
    LocalValidator,
    PassGroup,
    RunState,
    Step,
    Unit,
    brief,
    hist,
    new_constant_bytes,
    one_line,
    options_dict,
)
from accelopt.records import AccuracyRecord, Localization, PassRecord
from accelopt.validation import EXACT_FAMILIES, tightest

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_ROUNDS", "PassGroup", "PassManager", "run_pipeline"]


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
    def _units(self, passes: Sequence[Pass | PassGroup]) -> list[Unit]:
        units: list[Unit] = []
        last_tag: GroupRun | None = None
        for p in passes:
            if isinstance(p, PassGroup):
                units.append(Unit(list(p.passes), p.fixed_point, p.name, p.max_rounds))
                last_tag = None
            elif isinstance(p, Pass):
                tag = p.group
                if tag is not None and tag.fixed_point:
                    if tag is last_tag:
                        units[-1].passes.append(p)
                    else:
                        units.append(Unit([p], True, str(tag.spec), self.max_rounds))
                    last_tag = tag
                else:
                    units.append(Unit([p], False, str(p.spec), 1))
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
        state = RunState(total=sum(len(u.passes) for u in self.units))
        self._call("before_run", graph, ctx)
        validator = ctx.validator
        self._local = validator is not None and callable(getattr(validator, "check_chain", None))
        self._local = self._local and bool(getattr(validator, "local", True))
        self._fallback_note = ""
        current = graph
        cursor = Cursor(total=state.total)
        pending: list[Step] = []
        while True:
            back = None
            if cursor.unit >= len(self.units):
                back = self._flush(pending, state)
                if back is None:
                    break
                current, cursor = back
                continue
            unit = self.units[cursor.unit]
            step = self._execute(unit.passes[cursor.index], current, cursor, state)
            if cursor.round > 1:
                step.rec.notes.append(f"{unit.label}: fixed-point round {cursor.round}")
            if self._fallback_note:
                step.rec.notes.append(self._fallback_note)
                self._fallback_note = ""
            rec = step.rec
            if rec.modified and not rec.rolled_back and validator is not None:
                if self._local and step.pass_.family in EXACT_FAMILIES:  # case 7
                    step.local = True
                    step.new_bytes = new_constant_bytes(step.old, step.new)
                else:
                    back = self._flush(pending, state)
                    if back is None:
                        step.new = self._validate(step)
            if back is None:
                pending.append(step)
                if not any(s.local for s in pending):
                    back = self._flush(pending, state)
                elif sum(s.new_bytes for s in pending) > self._pending_limit(pending[0].old):
                    back = self._flush(pending, state)
            if back is not None:  # a pending pass was rolled back: go on from there
                current, cursor = back
                continue
            current = step.new
            cursor = self._advance(cursor, rec.modified and not rec.rolled_back, rec)
        for inst in ctx.instruments:
            hook = getattr(inst, "after_run", None)
            if hook is not None:
                hook(state.records)
        if current is graph:
            current = graph.copy()
        return current, state.records

    def _advance(self, c: Cursor, kept: bool, rec: PassRecord) -> Cursor:
        """The position after a pass; ``kept``: it changed the graph (for fixed points)."""
        unit = self.units[c.unit]
        changed = c.changed or kept
        if c.index + 1 < len(unit.passes):
            return dataclasses.replace(c, index=c.index + 1, changed=changed)
        if unit.fixed_point and changed:
            if c.round < unit.max_rounds:
                return Cursor(c.unit, c.round + 1, 0, False, c.total + len(unit.passes))
            msg = f"{unit.label}: no fixed point after {c.round} rounds; stopped"
            log.warning(msg)
            rec.notes.append(msg)
        return Cursor(c.unit + 1, 1, 0, False, c.total)

    def _pending_limit(self, start: Graph) -> int:
        """Constant bytes the pending passes may add before they are checked (graphs held for rollback)."""
        return max(PENDING_MIN_BYTES, sum(start.parameter_bytes().values()))

    def _call(self, hook_name: str, *args: Any) -> None:
        for inst in self.ctx.instruments:
            hook = getattr(inst, hook_name, None)
            if hook is not None:
                hook(*args)

    def _execute(self, p: Pass, old: Graph, cursor: Cursor, state: RunState) -> Step:
        """Cases 1-4: run ``p`` on a copy of ``old``, verify, record; a pass error is rolled back here."""
        ctx = self.ctx
        spec = str(p.spec)
        rec = PassRecord(name=p.name, spec=spec, family=p.family, options=options_dict(p.options))
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
            raise PassError(f"pass {spec!r} failed (passes run before it: {hist(state.history)}): {e}") from e
        except MemoryError:
            raise
        except Exception as e:  # case 2: a broken result or a crash is rolled back; the run goes on
            broken = e
        rec.seconds = time.perf_counter() - t0
        state.history.append(spec)
        step = Step(p, cursor, old, old, rec, history=len(state.history))
        bindings = ctx.options.get("shape_bindings") or {}
        rec.ops_before = dict(old.op_counts())
        rec.param_bytes_before = old.parameter_bytes()
        rec.macs_before = estimate_macs(old, bindings)

        if broken is not None:
            rec.modified = True
            rejected = result.graph if result is not None and isinstance(result, PassResult) else work
            self._pass_error(step, rejected, broken, state.history[:-1])
            return step
        assert result is not None
        new = result.graph
        if ctx.options.get("check_modified"):
            changed = print_graph(old) != print_graph(new)
            if changed != bool(result.modified):
                raise PassError(
                    f"pass {spec!r} reported modified={result.modified} but the text form "
                    f"{'changed' if changed else 'did not change'} (passes run before it: "
                    f"{hist(state.history[:-1])})"
                )
        rec.modified = bool(result.modified)
        rec.stats = dict(result.stats)
        rec.near_misses = list(result.near_misses)
        rec.notes = list(result.notes)
        if rec.modified:
            step.new = new
        return step

    def _finish(self, step: Step, state: RunState) -> None:
        """Case 6: complete the record of a pass whose fate is settled and call the hooks, in pipeline order."""
        rec, old, new = step.rec, step.old, step.new
        if rec.accuracy is None and (not rec.modified or rec.pass_error):
            rec.accuracy = state.accuracy  # unchanged (or broken) passes reuse the previous accuracy
        elif rec.modified and not rec.rolled_back and rec.accuracy is not None:
            state.accuracy = rec.accuracy
        bindings = self.ctx.options.get("shape_bindings") or {}
        rec.ops_after = dict(new.op_counts())
        rec.param_bytes_after = new.parameter_bytes()
        rec.macs_after = rec.macs_before if new is old else estimate_macs(new, bindings)
        if new is not old:
            before = {n.name for n in old.nodes}
            after = {n.name for n in new.nodes}
            rec.nodes_added = [n.name for n in new.nodes if n.name not in before]
            rec.nodes_removed = [n.name for n in old.nodes if n.name not in after]
        state.records.append(rec)
        if step.rejected is not None:
            self._call("on_rollback", step.pass_, step.rejected, rec, self.ctx)
            step.rejected = None
        self._call("after_pass", step.pass_, new, rec, self.ctx)
        state.done += 1
        if self.ctx.progress is not None:
            self.ctx.progress(state.done, max(state.total, step.cursor.total), rec.spec)
        log.debug("pass %s: modified=%s in %.3f s", rec.spec, rec.modified, rec.seconds)

    # --------------------------------------------------------- local checks
    def _flush(self, pending: list[Step], state: RunState) -> tuple[Graph, Cursor] | None:
        """Settle the pending passes (case 7) and finish their records; returns where to go on from
        when one of them is rolled back (the passes after it are dropped and run again)."""
        if any(s.local for s in pending):
            back = self._check_local(pending, state)
            if back is not None:
                return back
        for s in pending:
            self._finish(s, state)
        pending.clear()
        return None

    def _check_local(self, pending: list[Step], state: RunState) -> tuple[Graph, Cursor] | None:
        validator = cast(LocalValidator, self.ctx.validator)
        local = [s for s in pending if s.local]
        graphs = [local[0].old] + [s.new for s in local]
        t0 = time.perf_counter()
        try:
            outcomes = validator.check_chain(graphs, [s.pass_.family for s in local])
        except InterpreterError as e:  # a rewritten node does not run: each pass is checked on its own
            log.info("local check failed to run: %s", e)
            outcomes = [None] * len(local)
        share = (time.perf_counter() - t0) / len(local)
        samples = getattr(validator, "num_samples", None)
        on = f" on {samples} samples" if samples else ""
        for s in local:
            out = outcomes[local.index(s)]
            s.rec.validate_seconds = share
            if out is not None and out.record is not None and out.record.ok:
                s.rec.accuracy = out.record
                s.rec.notes.append(
                    f"validated locally: {out.compared} rewritten value(s) compared{on} "
                    f"(one sweep for {len(local)} pass(es), {share * len(local):.1f} s)"
                )
                continue
            why = out.problem if out is not None and out.problem else "the sweep failed to run"
            if out is not None and out.record is not None:
                why = "; ".join(out.record.failures)
            s.rec.notes.append(f"local check: {why}; checked on the whole model instead")
            s.new = self._validate(s, out.localization if out is not None else None)
            if s.new is s.old:  # rolled back: finish it and what came before; run what came after again
                i = pending.index(s)
                resume = self._advance(s.cursor, False, s.rec)
                for t in pending[: i + 1]:
                    self._finish(t, state)
                del pending[:]
                del state.history[s.history :]
                return s.old, resume
        kept = [s for s in local if s.new is not s.old]
        if not kept:
            return None
        t0 = time.perf_counter()
        tol = tightest([validator.tolerance_for(s.pass_.family) for s in kept])
        try:
            whole = validator.check(kept[-1].new, family=kept[-1].pass_.family, previous=graphs[0], tolerance=tol)
        except InterpreterError as e:
            whole = AccuracyRecord(ok=False, failures=[f"the graph does not run: {e}"])
        kept[-1].rec.validate_seconds += time.perf_counter() - t0
        first, last = kept[0].rec.spec, kept[-1].rec.spec
        if not whole.ok:  # case 7 fallback: check these passes again, each on the whole model
            log.warning(
                "whole-model check after locally validated passes %s..%s failed (%s); checking each on the whole model",
                first, last, "; ".join(whole.failures),
            )
            self._local = False
            self._fallback_note = (
                f"the whole-model check after locally validated passes {first}..{last} failed "
                f"({'; '.join(whole.failures)}): from here every pass is checked on the whole model"
            )
            del state.history[pending[0].history - 1 :]
            back = pending[0].old, pending[0].cursor
            del pending[:]
            return back
        acc = kept[-1].rec.accuracy
        if acc is not None:
            acc.vs_reference = dict(whole.vs_reference)
        kept[-1].rec.notes.append(
            f"whole model after this pass: vs the graph before {first} {brief(whole.vs_previous)}; "
            f"vs the reference {brief(whole.vs_reference)}"
        )
        return None

    def _pass_error(self, step: Step, rejected: Graph, error: Exception, history: Sequence[str]) -> None:
        """Case 2: the pass broke the graph or raised: roll it back, say loudly which node and why."""
        rec = step.rec
        cause = error.__cause__ if isinstance(error, PassError) and error.__cause__ is not None else error
        if isinstance(cause, VerifyError):
            rec.broken_nodes = list(cause.nodes)
            more = f" and {len(cause.nodes) - 5} more" if len(cause.nodes) > 5 else ""
            at = f" at node(s) {', '.join(cause.nodes[:5])}{more}" if cause.nodes else ""
            what = f"broke the graph{at}: {one_line(str(cause))}"
        else:
            what = f"raised {type(error).__name__}: {one_line(str(error))}"
        what += f" (passes run before it: {hist(history)})"
        rec.pass_error = f"pass {rec.spec!r} {what}"
        log.warning("%s; the pass was rolled back and the run goes on (please report it)", rec.pass_error)
        log.debug("pass %s failed", rec.spec, exc_info=error)
        self._rollback(step, rejected, f"pass error: the pass {what}")

    def _validate(self, step: Step, localization: Localization | None = None) -> Graph:
        """Case 5: check the pass's result on the whole model; returns the graph to continue with
        (``step.old`` after a rollback). ``localization``: where a local check already saw it diverge."""
        validator = self.ctx.validator
        assert validator is not None
        rec, old, new = step.rec, step.old, step.new
        t0 = time.perf_counter()
        reason = ""
        try:
            outcome = validator.check(new, family=step.pass_.family, previous=old)
        except InterpreterError as e:  # the previous graph ran on these inputs: the pass broke this one
            outcome = None
            reason = f"the new graph does not run: {e}"
            rec.error = str(e)
            rec.broken_nodes = [e.node] if e.node else []
            rec.pass_error = f"pass {rec.spec!r} produced a graph that does not run on the validation inputs: {e}"
            log.warning("%s; the pass was rolled back and the run goes on (please report it)", rec.pass_error)
        rec.validate_seconds += time.perf_counter() - t0
        if outcome is not None:
            rec.accuracy = outcome
            if outcome.ok:
                return new
            reason = "; ".join(outcome.failures) or "accuracy tolerance not met"
        localize = getattr(validator, "localize", None)
        if localization is not None:
            rec.localization = localization
        elif outcome is not None and callable(localize):
            rec.localization = localize(old, new)
        self._rollback(step, new, reason)
        return old

    def _rollback(self, step: Step, rejected: Graph, reason: str) -> None:
        """Reject ``rejected`` (the pass's result) and continue from ``step.old``; the one rollback path
        (the ``on_rollback`` hook is called when the record is finished, in pipeline order)."""
        rec, old = step.rec, step.old
        step.new = old
        step.rejected = rejected
        rec.rolled_back = True
        rec.rollback_reason = reason
        if not rec.pass_error:
            log.info("pass %s rolled back: %s", rec.spec, reason)
        counts_new = rejected.op_counts()
        counts_old = old.op_counts()
        delta = {k: counts_new.get(k, 0) - counts_old.get(k, 0) for k in sorted(set(counts_new) | set(counts_old))}
        delta = {k: v for k, v in delta.items() if v}
        rec.notes.append(f"rolled back; the rejected result changed op counts by {delta or 'nothing'}")


def run_pipeline(
    graph: Graph,
    spec: str | Sequence[PassSpec],
    ctx: PassContext | None = None,
) -> tuple[Graph, list[PassRecord]]:
    """Build the pipeline ``spec`` and run it over ``graph``."""
    from accelopt.passes.base import build_pipeline

    return PassManager(build_pipeline(spec), ctx).run(graph)
