"""The pattern DSL and its backtracking matcher.

Patterns describe a dataflow tree rooted at the node a rule rewrites::

    x = P.var("x")
    pat = P.op("Add", P.op("MatMul", x, P.const("w"), name="mm"), P.const("b"), commute=True)

Elements:

1. ``P.var(name)`` any present value; a name used twice must bind the same
   value (``Sub(x, ReduceMean(x))``). ``P.ref`` is the same thing, for reading.
2. ``P.const(name, value=None)`` a constant (initializer or ``Constant``
   node), optionally equal to ``value``; ``P.scalar(0.5)`` a one-element
   constant close to 0.5.
3. ``P.op(op_or_ops, *inputs, name=, attrs=, output=0, commute=False,
   extra_inputs=False, shared=False)`` a node; ``attrs`` values are compared
   with the registry defaults filled in, or are predicates. ``commute`` tries
   both input orders. A node must have exactly ``len(inputs)`` inputs (absent
   trailing ones count as missing) unless ``extra_inputs``. ``shared=True``
   allows the node to have users outside the pattern (it is then kept).
   An op pattern with a name reached twice must be the same node (diamonds).
4. ``P.one_of(a, b)`` alternatives; ``P.absent()`` a missing optional input.
5. ``pattern.where(pred, reason)`` adds a constraint on the matched value,
   e.g. ``P.var("mask").where(lambda v: v.is_input, "mask input is not a graph input")``.

The matcher backtracks over ``commute`` orders and ``one_of`` alternatives and
yields every consistent binding; on failure it reports the deepest point
reached (see ``MatchResult``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node, Value
from accelopt.ir.registry import get_op
from accelopt.passes.patterns.match import Match, MatchResult

ValuePred = Callable[[Value], bool]
Reason = str | Callable[[Value], str]

#: matching steps after which one candidate is abandoned (guards against exponential ambiguity)
MAX_STEPS = 20000


class Pattern:
    """Base of pattern elements. ``name`` captures the matched value (and node, for ops)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.constraints: list[tuple[ValuePred, Reason]] = []

    def where(self, pred: ValuePred, reason: Reason) -> Pattern:
        """Add a constraint on the matched value; ``reason`` explains a failure."""
        self.constraints.append((pred, reason))
        return self

    @property
    def label(self) -> str:
        return self.name or type(self).__name__.lower()

    def op_patterns(self) -> list[OpPattern]:
        """Distinct op elements in this pattern (depth first)."""
        seen: dict[int, OpPattern] = {}
        stack: list[Pattern] = [self]
        while stack:
            p = stack.pop()
            if isinstance(p, OpPattern) and id(p) not in seen:
                seen[id(p)] = p
                stack.extend(reversed(p.inputs))
            elif isinstance(p, OneOf):
                stack.extend(reversed(p.alternatives))
        return list(seen.values())

    def root_ops(self) -> frozenset[str] | None:
        """Ops a root node may have (None: any)."""
        return None


class Var(Pattern):
    """Any present value."""


class Absent(Pattern):
    """A missing optional input."""

    @property
    def label(self) -> str:
        return "absent"


class Const(Pattern):
    """A constant value, optionally compared with ``value`` or checked by ``pred``."""

    def __init__(
        self,
        name: str | None = None,
        value: Any = None,
        *,
        scalar: bool = False,
        atol: float = 1e-6,
        rtol: float = 1e-5,
        pred: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        super().__init__(name)
        self.value = None if value is None else np.asarray(value)
        self.scalar = scalar
        self.atol = atol
        self.rtol = rtol
        self.pred = pred

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.value is not None and self.value.size == 1:
            return f"const {self.value.reshape(-1)[0]:g}"
        return "const"


class OpPattern(Pattern):
    """A node with one of ``ops`` whose inputs match ``inputs``."""

    def __init__(
        self,
        ops: str | Sequence[str],
        inputs: Sequence[Pattern],
        *,
        name: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        output: int = 0,
        commute: bool = False,
        extra_inputs: bool = False,
        shared: bool = False,
    ) -> None:
        super().__init__(name)
        self.ops = (ops,) if isinstance(ops, str) else tuple(ops)
        self.inputs = list(inputs)
        self.attrs = dict(attrs or {})
        self.output = output
        self.commute = commute
        self.extra_inputs = extra_inputs
        self.shared = shared
        if commute and len(self.inputs) != 2:
            raise ValueError(f"commute needs exactly two inputs, {self.label} has {len(self.inputs)}")
        for i, p in enumerate(self.inputs):
            if not isinstance(p, Pattern):
                raise TypeError(f"input {i} of {self.label} is {p!r}, not a pattern (use P.var/P.const)")

    @property
    def label(self) -> str:
        ops = "|".join(self.ops)
        return f"{ops}[{self.name}]" if self.name else ops

    def root_ops(self) -> frozenset[str] | None:
        return frozenset(self.ops)


class OneOf(Pattern):
    """The first alternative that matches (all are tried on backtracking)."""

    def __init__(self, alternatives: Sequence[Pattern], name: str | None = None) -> None:
        super().__init__(name)
        if not alternatives:
            raise ValueError("one_of needs at least one alternative")
        self.alternatives = list(alternatives)

    @property
    def label(self) -> str:
        return self.name or "one_of(" + ", ".join(a.label for a in self.alternatives) + ")"

    def root_ops(self) -> frozenset[str] | None:
        ops: set[str] = set()
        for a in self.alternatives:
            r = a.root_ops()
            if r is None:
                return None
            ops |= r
        return frozenset(ops)


class P:
    """Constructors of pattern elements (see the module docstring)."""

    @staticmethod
    def var(name: str | None = None) -> Var:
        return Var(name)

    ref = var
    any = var

    @staticmethod
    def const(
        name: str | None = None,
        value: Any = None,
        *,
        atol: float = 1e-6,
        rtol: float = 1e-5,
        pred: Callable[[np.ndarray], bool] | None = None,
    ) -> Const:
        return Const(name, value, atol=atol, rtol=rtol, pred=pred)

    @staticmethod
    def scalar(value: float, name: str | None = None, *, atol: float = 1e-6, rtol: float = 1e-5) -> Const:
        return Const(name, value, scalar=True, atol=atol, rtol=rtol)

    @staticmethod
    def op(
        op: str | Sequence[str],
        *inputs: Pattern,
        name: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        output: int = 0,
        commute: bool = False,
        extra_inputs: bool = False,
        shared: bool = False,
    ) -> OpPattern:
        return OpPattern(
            op,
            inputs,
            name=name,
            attrs=attrs,
            output=output,
            commute=commute,
            extra_inputs=extra_inputs,
            shared=shared,
        )

    @staticmethod
    def one_of(*alternatives: Pattern, name: str | None = None) -> OneOf:
        return OneOf(alternatives, name)

    @staticmethod
    def absent() -> Absent:
        return Absent()


# ------------------------------------------------------------------ matcher
class _Tracker:
    """Remembers the deepest failure and bounds the work spent on one candidate."""

    def __init__(self, m: Match) -> None:
        self.m = m
        self.best: MatchResult | None = None
        self.steps = 0

    def fail(self, reason: str, node: Node | None, where: str) -> None:
        progress = self.m.size
        if self.best is None or progress > self.best.progress:
            self.best = MatchResult.fail(reason, node=node.name if node else None, where=where, progress=progress)

    def result(self) -> MatchResult:
        if self.best is not None:
            return self.best
        return MatchResult.fail("no match", progress=self.m.size)


def _describe(v: Value) -> str:
    if v.producer is not None:
        return f"%{v.name} from {v.producer.op} (node {v.producer.name})"
    if v.is_const:
        return f"%{v.name} (a constant)"
    return f"%{v.name} (a graph input)"


def _attr_equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(_attr_equal(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return math.isclose(float(actual), expected, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(expected, DType) or isinstance(actual, DType):
        return actual == expected
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        return np.array_equal(np.asarray(actual), np.asarray(expected))
    return bool(actual == expected)


def _constraints(p: Pattern, v: Value, t: _Tracker, parent: Node | None, where: str) -> bool:
    for pred, reason in p.constraints:
        if not pred(v):
            t.fail(reason(v) if callable(reason) else reason, parent, where)
            return False
    return True


def _bind_value(p: Pattern, v: Value, m: Match, t: _Tracker, parent: Node | None, where: str) -> bool:
    if p.name is None:
        return True
    bound = m.values.get(p.name)
    if bound is not None and bound is not v:
        t.fail(f"{p.name} is %{v.name} here but %{bound.name} elsewhere", parent, where)
        return False
    m.values[p.name] = v
    return True


def _gen(p: Pattern, v: Value | None, m: Match, t: _Tracker, parent: Node | None, where: str) -> Iterator[None]:
    """Yield once per way ``p`` can match ``v`` (bindings in ``m``); restores ``m`` between alternatives."""
    t.steps += 1
    if t.steps > MAX_STEPS:
        t.fail(f"gave up after {MAX_STEPS} matching steps", parent, where)
        return
    if isinstance(p, Absent):
        if v is None:
            yield
        else:
            t.fail(f"expected no input, found {_describe(v)}", parent, where)
        return
    if v is None:
        t.fail(f"input is absent, expected {p.label}", parent, where)
        return
    if isinstance(p, OneOf):
        for alt in p.alternatives:
            snap = m.snapshot()
            for _ in _gen(alt, v, m, t, parent, where):
                if _constraints(p, v, t, parent, where) and _bind_value(p, v, m, t, parent, where):
                    yield
            m.restore(snap)
        return
    if isinstance(p, Var):
        if _constraints(p, v, t, parent, where):
            snap = m.snapshot()
            if _bind_value(p, v, m, t, parent, where):
                yield
            m.restore(snap)
        return
    if isinstance(p, Const):
        yield from _gen_const(p, v, m, t, parent, where)
        return
    if isinstance(p, OpPattern):
        yield from _gen_op(p, v, m, t, parent, where)
        return
    raise TypeError(f"unknown pattern element {p!r}")


def _gen_const(p: Const, v: Value, m: Match, t: _Tracker, parent: Node | None, where: str) -> Iterator[None]:
    arr = m.graph.const_value(v)
    if arr is None:
        t.fail(f"expected a constant, found {_describe(v)}", parent, where)
        return
    if p.value is not None:
        exp = p.value
        if p.scalar:
            ok = arr.size == 1 and bool(np.isclose(float(arr.reshape(-1)[0]), float(exp), atol=p.atol, rtol=p.rtol))
        else:
            ok = arr.shape == exp.shape and bool(np.allclose(arr, exp, atol=p.atol, rtol=p.rtol))
        if not ok:
            shown = arr.reshape(-1)[:4].tolist() if arr.size else []
            t.fail(f"constant %{v.name} is {shown}{'...' if arr.size > 4 else ''}, expected {exp.tolist()}", parent, where)
            return
    if p.pred is not None and not p.pred(arr):
        t.fail(f"constant %{v.name} does not satisfy the pattern's condition", parent, where)
        return
    if not _constraints(p, v, t, parent, where):
        return
    snap = m.snapshot()
    if _bind_value(p, v, m, t, parent, where):
        yield
    m.restore(snap)


def _gen_op(p: OpPattern, v: Value, m: Match, t: _Tracker, parent: Node | None, where: str) -> Iterator[None]:
    node = v.producer
    if node is None:
        t.fail(f"expected {'|'.join(p.ops)}, found {_describe(v)}", parent, where)
        return
    key = p.name or f"#{id(p)}"
    bound = m.nodes.get(key)
    if bound is not None:  # a named (or re-used) op element reached again: must be the same node
        if bound is node and v.index == p.output:
            yield
        else:
            t.fail(f"expected the same {p.label} node {bound.name}, found {_describe(v)}", parent, where)
        return
    if node.op not in p.ops:
        t.fail(f"expected {'|'.join(p.ops)}, found {node.op} (node {node.name})", parent, where)
        return
    if v.index != p.output:
        t.fail(f"expected output {p.output} of {node.name}, found output {v.index}", parent, where)
        return
    here = p.label
    if p.attrs:
        full = get_op(node.op).full_attrs(node.attrs)
        for k, exp in p.attrs.items():
            actual = full.get(k)
            ok = bool(exp(actual)) if callable(exp) else _attr_equal(actual, exp)
            if not ok:
                shown = "a predicate" if callable(exp) else repr(exp)
                t.fail(f"{node.op} attribute {k} is {actual!r}, expected {shown}", node, here)
                return
    ins = list(node.inputs)
    while ins and ins[-1] is None:
        ins.pop()
    if len(ins) > len(p.inputs) and not p.extra_inputs:
        t.fail(f"{node.op} has {len(ins)} inputs, expected {len(p.inputs)}", node, here)
        return
    ins += [None] * (len(p.inputs) - len(ins))
    if not _constraints(p, v, t, parent, where):
        return
    snap = m.snapshot()
    if p.name is not None and not _bind_value(p, v, m, t, parent, where):
        m.restore(snap)
        return
    m.add_node(node, None, shared=p.shared)
    m.nodes[key] = node
    orders = [(0, 1), (1, 0)] if p.commute else [tuple(range(len(p.inputs)))]
    for order in orders:
        pairs = [(p.inputs[j], ins[i], f"{here}({p.inputs[j].label if p.inputs[j].name else f'input {i}'})")
                 for j, i in enumerate(order)]
        yield from _seq(pairs, m, t, node)
    m.restore(snap)


def _seq(pairs: list[tuple[Pattern, Value | None, str]], m: Match, t: _Tracker, parent: Node) -> Iterator[None]:
    if not pairs:
        yield
        return
    (p, v, where), rest = pairs[0], pairs[1:]
    for _ in _gen(p, v, m, t, parent, where):
        yield from _seq(rest, m, t, parent)


def iter_matches(pattern: Pattern, root: Node, m: Match) -> tuple[Iterator[None], _Tracker]:
    """Every way ``pattern`` matches at ``root`` (bindings land in ``m``), and the failure tracker."""
    t = _Tracker(m)
    out = root.outputs[pattern.output] if isinstance(pattern, OpPattern) and pattern.output < len(root.outputs) else None
    if out is None and root.outputs:
        out = root.outputs[0]
    if out is None:
        t.fail("node has no outputs", root, pattern.label)
        return iter(()), t
    return _gen(pattern, out, m, t, None, pattern.label), t


def match_into(pattern: Pattern, value: Value | None, m: Match) -> MatchResult:
    """Match ``pattern`` against ``value`` inside an existing match (first consistent binding)."""
    t = _Tracker(m)
    snap = m.snapshot()
    for _ in _gen(pattern, value, m, t, None, pattern.label):
        return MatchResult()
    m.restore(snap)
    return t.result()
