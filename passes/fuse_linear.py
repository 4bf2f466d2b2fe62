"""``fuse-linear``: bias into MatMul, Gemm -> Linear, and activation epilogues.

Rules (rewrite cases):

1. ``linear-bias``: ``Add(MatMul(x, W), b)`` (either order) with a constant 2-D
   ``W [K, N]`` and a constant ``b`` of N elements broadcasting over the last
   axis only -> ``Linear(x, W, b)``.
2. ``gemm``: ``Gemm(A, B, C?){alpha, beta, transA=0, transB}`` with a constant
   ``B`` and a constant ``C`` of N elements (or none) ->
   ``Linear(A, alpha * op(B), beta * C)``.
3. ``linear-<act>``: an activation applied to a ``Linear`` without one (or to a
   ``MatMul`` by a constant 2-D weight) whose result is used only there ->
   ``Linear{activation}``: ``Gelu`` -> ``gelu``, ``Gelu{approximate=tanh}`` ->
   ``gelu_tanh``, ``QuickGelu{alpha=1.702}`` -> ``gelu_sigmoid``, ``Relu`` ->
   ``relu``.
4. ``linear-activation-reshaped``: the same through a ``Reshape`` between the
   matmul and the activation (torch.export computes linear layers on 2-D
   views): ``act(Reshape(Linear(x)))`` -> ``Reshape(Linear{act}(x))``.

Not fused: matmuls of two activations (attention scores), non-constant
weights or biases, a bias that is a full matrix, ``Gemm`` with ``transA=1``,
and a ``MatMul``/``Linear`` whose output is used elsewhere too.
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.graph import Provenance, Value
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-linear"


def _weight(m: Match, name: str) -> np.ndarray | None:
    w = const_of(m.graph, m[name])
    return w if w is not None and w.ndim == 2 else None


def _bias_vector(b: np.ndarray, n: int) -> np.ndarray | None:
    """``b`` as an [N] vector if it broadcasts over the last axis only."""
    if b.size != n or (b.ndim >= 1 and b.shape[-1] != n) or any(d != 1 for d in b.shape[:-1]):
        return None
    return b.reshape(n)


# ------------------------------------------------------------- case 1
def _bias_check(m: Match) -> MatchResult | None:
    x = m["x"]
    w = _weight(m, "w")
    if w is None or not x.dtype.is_float or const_of(m.graph, x) is not None:
        return MatchResult.fail("not a MatMul by a constant 2-D weight", progress=1)
    b = const_of(m.graph, m["b"])
    if b is None:
        return MatchResult.fail("the added term is not a constant bias", progress=1)
    if _bias_vector(b, w.shape[1]) is None:
        return MatchResult.fail(
            f"bias of shape {list(b.shape)} does not broadcast over the last axis of [.., {w.shape[1]}]",
            node=m.root.name,
            where="Add(bias)",
            progress=2,
        )
    return None


def _bias_rewrite(rw: Rewriter, m: Match) -> Value:
    w = _weight(m, "w")
    assert w is not None
    b = _bias_vector(const_of(rw.graph, m["b"]), w.shape[1])  # type: ignore[arg-type]
    bias = m["b"] if m["b"].is_const and m["b"].shape == (w.shape[1],) else rw.const(f"{m.root.name}_bias", b)  # type: ignore[arg-type]
    return rw.op("Linear", [m["x"], m["w"], bias], name=f"{m.node('mm').name}_linear")


# ------------------------------------------------------------- case 2
def _gemm_parts(m: Match) -> tuple[np.ndarray, np.ndarray | None] | MatchResult:
    node = m.node("gemm")
    w = _weight(m, "w")
    if w is None:
        return MatchResult.fail("B is not a constant 2-D weight", progress=1)
    if int(m.attr("gemm", "transA")):
        return MatchResult.fail("transA=1", node=node.name, where="Gemm", progress=2)
    if int(m.attr("gemm", "transB")):
        w = w.T
    w = w * np.asarray(m.attr("gemm", "alpha"), dtype=w.dtype)
    b = None
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        c = const_of(m.graph, node.inputs[2])
        vec = None if c is None else _bias_vector(c, w.shape[1])
        if vec is None:
            return MatchResult.fail("C is not a constant bias vector", node=node.name, where="Gemm(C)", progress=2)
        b = vec * np.asarray(m.attr("gemm", "beta"), dtype=vec.dtype)
    return w, b


def _gemm_check(m: Match) -> MatchResult | None:
    got = _gemm_parts(m)
    return got if isinstance(got, MatchResult) else None


def _gemm_rewrite(rw: Rewriter, m: Match) -> Value:
    got = _gemm_parts(m)
    assert not isinstance(got, MatchResult)
    w, b = got
    node = m.node("gemm")
    src = m["w"]
    wv = src if src.const is not None and np.array_equal(src.const, w) else rw.const(f"{node.name}_weight", w)
    ins: list[Value | None] = [m["x"], wv]
    if b is not None:
        ins.append(rw.const(f"{node.name}_bias", b))
    return rw.op("Linear", ins, name=f"{node.name}_linear")


# ------------------------------------------------------------- case 3
def _activation(m: Match) -> str | None:
    act = m.node("act")
    if act.op == "Relu":
        return "relu"
    if act.op == "Gelu":
        approx = m.attr("act", "approximate")
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(approx)
    if act.op == "QuickGelu" and abs(float(m.attr("act", "alpha")) - 1.702) <= 1e-3:
        return "gelu_sigmoid"
    return None


def _act_check(m: Match) -> MatchResult | None:
    if _activation(m) is None:
        return MatchResult.fail("activation has no Linear epilogue form", progress=1)
    lin = m.node("lin")
    if lin.op == "Linear":
        if m.attr("lin", "activation") != "none":
            return MatchResult.fail("the Linear already has an activation", progress=1)
    elif _weight(m, "w") is None:
        return MatchResult.fail("not a MatMul by a constant 2-D weight", progress=1)
    return None


def _act_rewrite(rw: Rewriter, m: Match) -> Value:
    lin = m.node("lin")
    act = _activation(m)
    if lin.op == "MatMul":
        return rw.op("Linear", list(lin.inputs), {"activation": act}, name=f"{lin.name}_linear")
    # the Linear is used only by the activation: it takes the activation over in place
    lin.set_attrs({**lin.attrs, "activation": act})
    lin.provenance = Provenance(rw.provenance.pass_name, rw.provenance.rule, lin.provenance.origins + (m.root.name,))
    return lin.outputs[0]


def _act_reshaped_rewrite(rw: Rewriter, m: Match) -> Value:
    """Case 4: the activation moves before the reshape (elementwise ops commute with it)."""
    y = _act_rewrite(rw, m)
    shape_node = m.node("reshape")
    return rw.op("Reshape", [y, m["shape"]], dict(shape_node.attrs), name=f"{shape_node.name}_moved")


def linear_rules() -> list[Rule]:
    bias = P.op("Add", P.op("MatMul", P.var("x"), P.var("w"), name="mm"), P.var("b"), commute=True)
    gemm = P.op("Gemm", P.var("x"), P.var("w"), name="gemm", extra_inputs=True)
    inner = P.one_of(
        P.op("Linear", P.var("x"), P.var("w"), name="lin", extra_inputs=True),
        P.op("MatMul", P.var("x"), P.var("w"), name="lin"),
    )
    act = P.op(("Gelu", "QuickGelu", "Relu"), inner, name="act")
    reshaped = P.op(("Gelu", "QuickGelu", "Relu"), P.op("Reshape", inner, P.var("shape"), name="reshape"), name="act")
    return [
        Rule("linear-bias", bias, check=_bias_check, rewrite=_bias_rewrite),
        Rule("gemm", gemm, check=_gemm_check, rewrite=_gemm_rewrite, near_miss_min=2),
        Rule("linear-activation", act, check=_act_check, rewrite=_act_rewrite),
        Rule("linear-activation-reshaped", reshaped, check=_act_check, rewrite=_act_reshaped_rewrite),
    ]


@register_pass
class FuseLinear(RulePass):
    """Fuse MatMul + bias Add and Gemm into Linear, and GELU/ReLU epilogues into Linear{activation}."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return linear_rules()
