"""``layout-cancel-transposes``: move transposes through elementwise ops and cancel them after layout changes.

Rules (rewrite cases):

1. ``merge``: ``Transpose(Transpose(x, p), q)`` -> ``Transpose(x, p[q])``, or
   ``x`` itself when the composed permutation is the identity (the inner
   transpose stays for its other users, if any).
2. ``unary``: ``f(Transpose(x, p))`` -> ``Transpose(f(x), p)`` for elementwise
   ``f`` (Relu, Gelu, QuickGelu, Sigmoid, Tanh, Erf, Exp, Neg, Abs, Sqrt,
   Identity, Cast, LeakyRelu...), when the transpose has no other user: the
   transpose moves towards the next layout change, where case 1 cancels it.
3. ``binary``: ``g(Transpose(a, p), Transpose(b, p))`` -> ``Transpose(g(a, b), p)``
   for elementwise ``g`` (Add, Sub, Mul, Div, Max, Min, Pow), and
   ``g(Transpose(a, p), c)`` with a constant ``c`` (a scalar or any constant that
   broadcasts) -> ``Transpose(g(a, c'), p)`` with ``c'`` permuted to match.

Every case keeps the numbers bit for bit (elementwise ops commute with
permutations).
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.graph import Value
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "layout-cancel-transposes"
UNARY = ("Relu", "Gelu", "QuickGelu", "Sigmoid", "Tanh", "Erf", "Exp", "Neg", "Abs", "Sqrt", "Identity", "Cast",
         "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
         "Not", "IsNaN", "IsInf", "Log", "Sin", "Cos", "HardSwish", "Mish")
BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow")
NO_NEAR_MISS = 1 << 30


def _perm(m: Match, name: str) -> list[int]:
    return [int(p) for p in m.attr(name, "perm")]


def _merge_rewrite(rw: Rewriter, m: Match) -> Value:
    p, q = _perm(m, "t1"), _perm(m, "t2")
    r = [p[i] for i in q]
    x = m["x"]
    if r == list(range(len(r))):
        return x
    return rw.op("Transpose", [x], {"perm": r}, name=f"{m.root.name}_merged")


def _merge_check(m: Match) -> MatchResult | None:
    p, q = m.attr("t1", "perm"), m.attr("t2", "perm")
    if p is None or q is None:
        return MatchResult.fail("a transpose without perm (a full reversal) is not merged", progress=1)
    x = m["x"]
    r = [int(p[i]) for i in q]
    if r == list(range(len(r))) and (x.is_input or x in m.graph.outputs) and m.root.outputs[0] in m.graph.outputs:
        return MatchResult.fail("both ends are graph inputs/outputs", progress=1)
    return None


def _unary_check(m: Match) -> MatchResult | None:
    if m.attr("t", "perm") is None:
        return MatchResult.fail("transpose without perm", progress=1)
    return None


def _unary_rewrite(rw: Rewriter, m: Match) -> Value:
    f = m.root
    inner = rw.node(f.op, [m["x"], *f.inputs[1:]], dict(f.attrs), name=f"{f.name}_moved").outputs[0]
    return rw.op("Transpose", [inner], {"perm": _perm(m, "t")}, name=f"{m.node('t').name}_moved")


def _inverse(p: list[int]) -> list[int]:
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return inv


def _binary_check(m: Match) -> MatchResult | None:
    ta = m.node("ta")
    p = m.attr("ta", "perm")
    if p is None:
        return MatchResult.fail("transpose without perm", progress=1)
    if "tb" in m:
        if m.attr("tb", "perm") != p:
            return MatchResult.fail("the two transposes permute differently", progress=1)
        return None
    c = const_of(m.graph, m["c"])
    if c is None:
        return MatchResult.fail("the other operand is neither a transpose nor a constant", progress=1)
    if c.ndim > len(p) or ta.outputs[0].type.rank != len(p):
        return MatchResult.fail("constant of higher rank", progress=1)
    return None


def _binary_rewrite(rw: Rewriter, m: Match) -> Value:
    g = m.root
    p = _perm(m, "ta")
    a_first = g.inputs[0] is m.node("ta").outputs[0]
    if "tb" in m:
        other = m["b"]
    else:
        c = const_of(rw.graph, m["c"])
        assert c is not None
        full = c.reshape((1,) * (len(p) - c.ndim) + c.shape)
        other = rw.const(f"{g.name}_const", np.ascontiguousarray(np.transpose(full, _inverse(p))))
    ins = [m["a"], other] if a_first else [other, m["a"]]
    inner = rw.node(g.op, ins, dict(g.attrs), name=f"{g.name}_moved").outputs[0]
    return rw.op("Transpose", [inner], {"perm": p}, name=f"{m.node('ta').name}_moved")


def cancel_rules() -> list[Rule]:
    merge = P.op("Transpose", P.op("Transpose", P.var("x"), name="t1", shared=True), name="t2")
    unary = P.op(UNARY, P.op("Transpose", P.var("x"), name="t"), name="f", extra_inputs=True)
    both = P.op(BINARY, P.op("Transpose", P.var("a"), name="ta"), P.op("Transpose", P.var("b"), name="tb"),
                commute=True)
    const = P.op(BINARY, P.op("Transpose", P.var("a"), name="ta"), P.var("c"), commute=True)
    return [
        Rule("merge", merge, check=_merge_check, rewrite=_merge_rewrite, near_miss_min=NO_NEAR_MISS),
        Rule("unary", unary, check=_unary_check, rewrite=_unary_rewrite, near_miss_min=NO_NEAR_MISS),
        Rule("binary", both, check=_binary_check, rewrite=_binary_rewrite, near_miss_min=NO_NEAR_MISS),
        Rule("binary-const", const, check=_binary_check, rewrite=_binary_rewrite, near_miss_min=NO_NEAR_MISS),
    ]


@register_pass
class CancelTransposes(RulePass):
    """Move transposes through elementwise ops and cancel or merge transpose pairs."""

    name = PASS_NAME
    family = "layout"

    def rules(self) -> list[Rule]:
        return cancel_rules()
