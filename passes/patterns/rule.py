"""``Rule`` (pattern / check / rewrite) and ``Rewriter`` (the mutation API a rewrite uses)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.ir.types import TensorType
from accelopt.passes.patterns.match import Match, MatchResult, as_match_result
from accelopt.passes.patterns.pattern import Pattern, iter_matches

#: how many alternative bindings of one candidate are offered to ``check``
MAX_ALTERNATIVES = 16

RewriteFn = Callable[["Rewriter", Match], Any]
CheckFn = Callable[[Match], Any]


class Rewriter:
    """Builds replacement nodes for one match: inserted before the match's root, tagged with provenance."""

    def __init__(self, graph: Graph, match: Match, pass_name: str, rule: str) -> None:
        self.graph = graph
        self.match = match
        self.provenance = Provenance(pass_name, rule, match.origins())
        self.created: list[Node] = []
        self.created_consts: list[Value] = []

    def node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        outputs: int | Sequence[str] = 1,
        types: Sequence[TensorType] | None = None,
    ) -> Node:
        n = self.graph.add_node(
            op,
            inputs,
            attrs,
            outputs=outputs,
            types=types,
            name=name,
            before=self.match.root,
            provenance=self.provenance,
        )
        self.created.append(n)
        return n

    def op(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        types: Sequence[TensorType] | None = None,
    ) -> Value:
        """Add a single-output node and return its output."""
        return self.node(op, inputs, attrs, name=name, types=types).outputs[0]

    def const(self, name: str, array: np.ndarray) -> Value:
        """A new initializer (renamed if ``name`` is taken)."""
        v = self.graph.add_initializer(name, np.asarray(array), unique=True)
        self.created_consts.append(v)
        return v

    def undo(self) -> None:
        """Remove what this rewriter created (used when a replacement cannot be applied)."""
        for n in reversed(self.created):
            if n.graph is self.graph:
                self.graph.remove_node(n, force=True)
        for v in self.created_consts:
            if v.name in self.graph.initializers and not v.uses and v not in self.graph.outputs:
                self.graph.remove_initializer(v.name)


class Rule:
    """A rewrite rule: ``pattern`` (or an imperative ``match``), ``check``, ``rewrite``.

    Subclass and override, or pass functions::

        Rule("identity", P.op("Identity", P.var("x")), rewrite=lambda rw, m: m["x"])

    ``rewrite(rw, match)`` returns the replacement of the root node's outputs:
    one ``Value``, a sequence (``None`` keeps an output), or ``None`` to
    decline. ``check(match)`` returns ``MatchResult`` (or bool/None).
    Imperative rules set ``root_ops`` and override ``match(graph, node)`` to
    return a ``Match`` or a failed ``MatchResult``.

    ``near_miss_min``: a failed root counts as a candidate, and so as a near
    miss with its reason, when at least this many pattern nodes matched
    (default: half the pattern's op nodes, at least 2; 1 when every root is a
    real candidate; see the driver's contract). ``allow_escapes``: let
    interior nodes keep users outside the match (they are then not removed).
    """

    name: str = ""
    pattern: Pattern | None = None
    root_ops: frozenset[str] | None = None
    near_miss_min: int | None = None
    allow_escapes: bool = False

    def __init__(
        self,
        name: str | None = None,
        pattern: Pattern | None = None,
        *,
        rewrite: RewriteFn | None = None,
        check: CheckFn | None = None,
        near_miss_min: int | None = None,
        allow_escapes: bool | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        if not self.name:
            self.name = type(self).__name__
        if pattern is not None:
            self.pattern = pattern
        if rewrite is not None:
            self._rewrite_fn = rewrite
        if check is not None:
            self._check_fn = check
        if near_miss_min is not None:
            self.near_miss_min = near_miss_min
        if allow_escapes is not None:
            self.allow_escapes = allow_escapes
        if self.root_ops is None and self.pattern is not None:
            self.root_ops = self.pattern.root_ops()
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        while caller is not None and caller.f_code.co_name == "__init__":
            caller = caller.f_back
        self.defined_at = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None else "?"

    # ------------------------------------------------------------ overridable
    def accepts(self, node: Node) -> bool:
        """Whether ``node`` is a candidate root (counted in the rule's stats)."""
        return self.root_ops is None or node.op in self.root_ops

    def match(self, graph: Graph, node: Node) -> Iterator[Match] | Match | MatchResult:
        """Default: the pattern's bindings at ``node``; imperative rules override this."""
        if self.pattern is None:
            raise NotImplementedError(f"rule {self.name} has neither a pattern nor a match method")
        return self._pattern_matches(graph, node)

    def check(self, match: Match) -> MatchResult | bool | None:
        fn = getattr(self, "_check_fn", None)
        return fn(match) if fn is not None else None

    def rewrite(self, rw: Rewriter, match: Match) -> Value | Sequence[Value | None] | None:
        fn = getattr(self, "_rewrite_fn", None)
        if fn is None:
            raise NotImplementedError(f"rule {self.name} has no rewrite")
        return fn(rw, match)

    # --------------------------------------------------------------- helpers
    @property
    def min_progress(self) -> int:
        if self.near_miss_min is not None:
            return self.near_miss_min
        n = len(self.pattern.op_patterns()) if self.pattern is not None else 2
        return max(2, math.ceil(n / 2))

    def _pattern_matches(self, graph: Graph, node: Node) -> Iterator[Match]:
        assert self.pattern is not None
        m = Match(self.name, graph, node)
        it, tracker = iter_matches(self.pattern, node, m)
        self._last_tracker = tracker
        for _ in it:
            yield m

    def find(self, graph: Graph, node: Node) -> Match | MatchResult:
        """The first binding at ``node`` that passes the escape check and ``check``; else the best failure."""
        got = self.match(graph, node)
        if isinstance(got, MatchResult):
            return got
        candidates: Iterator[Match] = iter([got]) if isinstance(got, Match) else got
        best: MatchResult | None = None
        tried = 0
        for m in candidates:
            tried += 1
            res = self._validate(m)
            if res.ok:
                return _freeze(m)
            if best is None or res.progress > best.progress:
                best = res
            if tried >= MAX_ALTERNATIVES:
                break
        if best is not None:
            return best
        tracker = getattr(self, "_last_tracker", None)
        return tracker.result() if tracker is not None else MatchResult.fail("no match", node=node.name)

    def _validate(self, m: Match) -> MatchResult:
        progress = m.size
        if not self.allow_escapes:
            escapes = m.interior_escapes()
            if escapes:
                node, why = escapes[0]
                return MatchResult.fail(why, node=node.name, where=f"{node.op} (interior)", progress=progress)
        res = as_match_result(self.check(m), progress=progress)
        if not res.ok and not res.where:
            res.where = "check"
        if not res.ok and res.node is None:
            res.node = m.root.name
        return res

    def __repr__(self) -> str:
        return f"<Rule {self.name} ({self.defined_at})>"


def _freeze(m: Match) -> Match:
    """Copy the bindings out of a match that a suspended generator may still change."""
    out = Match(m.rule, m.graph, m.root)
    out.restore(m.snapshot())
    return out
