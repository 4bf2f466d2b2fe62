"""``fuse-layernorm``: layer normalization in its decomposed forms, and ``LayerNormalization`` -> ``LayerNorm``.

Rules (rewrite cases):

1. ``layernormalization``: ``LayerNormalization(x, scale, bias?){axis, epsilon}``
   whose mean / inv-std-dev outputs are unused -> ``LayerNorm`` with the same
   inputs and attributes.
2. ``layernorm-core``: ``d = x - ReduceMean(x)``, ``var = ReduceMean(d^2)``
   (``Pow(d, 2)`` or ``Mul(d, d)``), ``r = sqrt(var + eps)``, then one of
   2a ``d / r``,
   2b ``d * Reciprocal(r)``,
   2c ``d * (1 / r)``,
   2d ``d * Pow(var + eps, -0.5)``
   (any operand order) -> ``LayerNorm(x, ones, zeros){axis, epsilon}``. Both means
   reduce the same trailing axes with ``keepdims=1``; ``eps`` is a
   non-negative scalar constant.
3. ``layernorm-scale``: ``LayerNorm(x, g, b?) * c`` with a constant ``c`` that
   broadcasts over the normalized axes only -> ``LayerNorm(x, g*c, b*c)``.
4. ``layernorm-shift``: ``LayerNorm(x, g, b?) + c`` likewise ->
   ``LayerNorm(x, g, b + c)``.

Cases 3 and 4 fold the affine ``* gamma + beta`` of case 2 (and any further
constant scale or shift) into the op. Not fused: means over different axes,
``keepdims=0``, an epsilon outside the square root, non-constant gamma/beta
(kept as ``Mul``/``Add`` after the ``LayerNorm``), and a ``LayerNormalization``
whose statistics outputs are used.
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.graph import Provenance, Value
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P, Pattern
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-layernorm"


# ------------------------------------------------------------- case 1
def _lnormalization_check(m: Match) -> MatchResult | None:
    node = m.node("ln")
    for v in node.outputs[1:]:
        if v.uses or v in m.graph.outputs:
            return MatchResult.fail(f"output %{v.name} (mean or inv std dev) is used", node=node.name, progress=2)
    if not node.outputs[0].dtype.is_float:
        return MatchResult.fail("not a float tensor", node=node.name, progress=1)
    return None


def _lnormalization_rewrite(rw: Rewriter, m: Match) -> list[Value | None]:
    node = m.node("ln")
    attrs = {"axis": int(m.attr("ln", "axis")), "epsilon": float(m.attr("ln", "epsilon"))}
    ins = [v for v in node.inputs[:3]]
    while ins and ins[-1] is None:
        ins.pop()
    y = rw.op("LayerNorm", ins, attrs, name=f"{node.name}_layernorm")
    return [y] + [None] * (len(node.outputs) - 1)


def _lnormalization_rule() -> Rule:
    pat = P.op("LayerNormalization", P.var("x"), P.var("scale"), name="ln", extra_inputs=True)
    return Rule(
        "layernormalization", pat, check=_lnormalization_check, rewrite=_lnormalization_rewrite, near_miss_min=2
    )


# ------------------------------------------------------------- case 2
def normalized_patterns(d: Pattern, axes: str, mean_name: str, root_name: str) -> list[tuple[str, Pattern]]:
    """``d / sqrt(ReduceMean(d^2, axes) + eps)`` in its four spellings (``d^2`` as ``Pow(d, 2)`` or ``Mul(d, d)``):
    ``d / r``, ``d * Reciprocal(r)``, ``d * (1 / r)``, ``d * Pow(ms + eps, -0.5)``, labelled. The mean is named
    ``mean_name``, ``ms + eps`` ``ve`` and the square root ``root_name``; ``axes`` and ``eps`` are constants.
    Shared by LayerNorm (``d = x - mean(x)``, cases 2a-2d) and RMSNorm (``d = x``)."""
    sq = P.one_of(P.op("Pow", d, P.scalar(2.0)), P.op("Mul", d, d))
    ms = P.op("ReduceMean", sq, P.const(axes), name=mean_name)
    ve = P.op("Add", ms, P.const("eps"), commute=True, name="ve")
    r = P.op("Sqrt", ve, name=root_name)
    return [
        ("div", P.op("Div", d, r)),
        ("reciprocal", P.op("Mul", d, P.op("Reciprocal", r), commute=True)),
        ("one-over", P.op("Mul", d, P.op("Div", P.scalar(1.0), r), commute=True)),
        ("rsqrt-pow", P.op("Mul", d, P.op("Pow", ve, P.scalar(-0.5)), commute=True)),
    ]


def _core_pattern() -> list[tuple[str, Pattern]]:
    x = P.var("x")
    mean = P.op("ReduceMean", x, P.const("axes1"), name="mean")
    d = P.op("Sub", x, mean, name="d")
    return normalized_patterns(d, "axes2", "var", "std")


def norm_axes(m: Match, name: str) -> tuple[int, ...] | None:
    x = m["x"]
    arr = m.const(name)
    rank = x.type.rank
    if arr is None or rank is None:
        return None
    axes = sorted({int(a) % rank for a in np.asarray(arr).reshape(-1)})
    if not axes or axes != list(range(axes[0], rank)):
        return None
    return tuple(axes)


def _core_check(m: Match) -> MatchResult | None:
    x = m["x"]
    if not x.dtype.is_float:
        return MatchResult.fail(f"%{x.name} is {x.type}, expected a float tensor", progress=1)
    a1, a2 = norm_axes(m, "axes1"), norm_axes(m, "axes2")
    if a1 is None or a2 is None or a1 != a2:
        return MatchResult.fail(
            "the two means do not reduce the same trailing axes",
            node=m.node("var").name,
            where="ReduceMean(var)",
        )
    for n in ("mean", "var"):
        if int(m.attr(n, "keepdims")) != 1:
            return MatchResult.fail("ReduceMean has keepdims=0", node=m.node(n).name, where=f"ReduceMean({n})")
    eps = m.const("eps")
    if eps is None or eps.size != 1 or float(eps.reshape(-1)[0]) < 0:
        return MatchResult.fail("epsilon is not a non-negative scalar", node=m.node("ve").name, where="Add(eps)")
    return None


def param_shape(x: Value, first_axis: int) -> tuple[int, ...]:
    """The shape of a norm's scale/shift over ``x``'s axes ``first_axis..``: those dims, or all 1 when one is
    not a number (the parameter then broadcasts)."""
    assert x.shape is not None
    trailing = x.shape[first_axis:]
    if any(not isinstance(d, int) for d in trailing):
        return (1,) * len(trailing)
    return tuple(int(d) for d in trailing)


def _core_rewrite(rw: Rewriter, m: Match) -> Value:
    x = m["x"]
    axes = norm_axes(m, "axes1")
    assert axes is not None and x.shape is not None
    shape = param_shape(x, axes[0])
    name = f"{m.root.name}_layernorm"
    gamma = rw.const(f"{name}_gamma", np.ones(shape, dtype=x.dtype.np))
    beta = rw.const(f"{name}_beta", np.zeros(shape, dtype=x.dtype.np))
    eps = float(m.const("eps").reshape(-1)[0])  # type: ignore[union-attr]
    return rw.op("LayerNorm", [x, gamma, beta], {"axis": axes[0] - len(x.shape), "epsilon": eps}, name=name)


# ---------------------------------------------------------- cases 3, 4
def affine_operand(m: Match) -> np.ndarray | MatchResult:
    """The constant ``c`` reduced to the normalized shape, or why it does not qualify."""
    ln = m.node("ln")
    c = const_of(m.graph, m["c"])
    x = ln.inputs[0]
    if c is None:
        return MatchResult.fail(f"%{m['c'].name} is not a constant", node=m.root.name, where="affine", progress=1)
    for i in (1, 2):
        if len(ln.inputs) > i and ln.inputs[i] is not None and const_of(m.graph, ln.inputs[i]) is None:
            return MatchResult.fail("gamma or beta is not constant", node=ln.name, where="affine", progress=1)
    if x is None or x.type.rank is None:
        return MatchResult.fail("the normalized tensor has unknown rank", node=ln.name, progress=1)
    rank = x.type.rank
    axis = int(m.attr("ln", "axis")) % rank
    k = rank - axis
    if c.ndim > rank or any(d != 1 for d in c.shape[: max(0, c.ndim - k)]):
        return MatchResult.fail(
            f"constant of shape {list(c.shape)} broadcasts over more than the normalized axes",
            node=m.root.name,
            where="affine",
            progress=2,
        )
    return c.reshape(c.shape[max(0, c.ndim - k) :])


def affine_check(m: Match) -> MatchResult | None:
    got = affine_operand(m)
    return got if isinstance(got, MatchResult) else None


def fold_in_place(rw: Rewriter, m: Match, gamma: np.ndarray | None, beta: np.ndarray | None) -> Value:
    """Give the matched norm (LayerNorm or RMSNorm, captured as ``ln``) new gamma/beta constants and let it
    replace the root (cases 3, 4; fuse-rmsnorm case 2)."""
    ln = m.node("ln")
    graph = rw.graph
    dt = ln.inputs[0].dtype.np  # type: ignore[union-attr]
    origins = ln.provenance.origins + (m.root.name,)
    if beta is not None and len(ln.inputs) < 3:  # a LayerNorm without beta (from LayerNormalization)
        rw.provenance = Provenance(rw.provenance.pass_name, rw.provenance.rule, origins)
        b = rw.const(f"{ln.name}_beta", np.asarray(beta).astype(dt))
        return rw.op("LayerNorm", [ln.inputs[0], ln.inputs[1], b], dict(ln.attrs), name=f"{ln.name}_shifted")
    for i, arr, label in ((1, gamma, "gamma"), (2, beta, "beta")):
        if arr is None:
            continue
        old = ln.inputs[i]
        ln.set_input(i, None)
        if old is not None and not old.uses and graph.initializers.get(old.name) is old and old not in graph.outputs:
            graph.remove_initializer(old.name)
        ln.set_input(i, rw.const(f"{ln.name}_{label}", np.asarray(arr).astype(dt)))
    ln.provenance = Provenance(rw.provenance.pass_name, rw.provenance.rule, origins)
    return ln.outputs[0]


def _scale_rewrite(rw: Rewriter, m: Match) -> Value:
    ln = m.node("ln")
    c = affine_operand(m)
    assert isinstance(c, np.ndarray)
    g = const_of(rw.graph, ln.inputs[1])
    b = const_of(rw.graph, ln.inputs[2]) if len(ln.inputs) > 2 else None
    return fold_in_place(rw, m, g * c, None if b is None else b * c)


def _shift_rewrite(rw: Rewriter, m: Match) -> Value:
    ln = m.node("ln")
    c = affine_operand(m)
    assert isinstance(c, np.ndarray)
    b = const_of(rw.graph, ln.inputs[2]) if len(ln.inputs) > 2 else None
    return fold_in_place(rw, m, None, c if b is None else b + c)


def _affine_rules() -> list[Rule]:
    def ln_pattern() -> Pattern:
        return P.op("LayerNorm", P.var(), P.var(), name="ln", extra_inputs=True)

    return [
        Rule(
            "layernorm-scale",
            P.op("Mul", ln_pattern(), P.var("c"), commute=True),
            check=affine_check,
            rewrite=_scale_rewrite,
            near_miss_min=3,
        ),
        Rule(
            "layernorm-shift",
            P.op("Add", ln_pattern(), P.var("c"), commute=True),
            check=affine_check,
            rewrite=_shift_rewrite,
            near_miss_min=3,
        ),
    ]


def layernorm_rules() -> list[Rule]:
    rules = [_lnormalization_rule()]
    for label, pat in _core_pattern():
        rules.append(Rule(f"layernorm-{label}", pat, check=_core_check, rewrite=_core_rewrite, near_miss_min=5))
    return rules + _affine_rules()


@register_pass
class FuseLayerNorm(RulePass):
    """Fuse decomposed layer normalization (and LayerNormalization) into LayerNorm."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return layernorm_rules()
