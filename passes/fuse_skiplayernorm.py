"""``fuse-skiplayernorm``: residual ``Add`` + ``LayerNorm`` -> ``SkipLayerNorm``.

Rules (rewrite cases):

1. ``LayerNorm(Add(a, b), gamma, beta?){axis=last}`` with ``a`` and ``b`` of the
   same shape (no broadcasting) -> ``SkipLayerNorm(a, b, gamma, beta)``.
2. When one operand is a ``Linear`` with a bias and no activation that
   nothing else uses (the output projection before the residual), the bias
   moves into the ``SkipLayerNorm`` and the ``Linear`` loses it:
   ``SkipLayerNorm(Linear(x, W), residual, gamma, beta, bias)``.
3. When the sum is used elsewhere too (or is a graph output), the op gets its
   second output (the sum) and those uses read it.

Not fused: sums of embedding lookups (``Gather`` from a constant table, the
input of the embeddings' LayerNorm, left to ``fuse-embedlayernorm``), a
LayerNorm over other than the last axis, operands that broadcast against each
other, and non-float tensors.
"""

from __future__ import annotations

from accelopt.ir.graph import Node, Provenance, Value
from accelopt.ir.types import Dim
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import RulePass, replace_value
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-skiplayernorm"


def is_embedding_lookup(graph_value: Value, depth: int = 0) -> bool:
    """A ``Gather`` (axis 0) from a constant 2-D table, or an ``Add`` of such lookups."""
    node = graph_value.producer
    if node is None or depth > 4:
        return False
    if node.op == "Gather":
        if node.graph is None or int(node.attr("axis", 0)) != 0:
            return False
        table = const_of(node.graph, node.inputs[0])
        return table is not None and table.ndim == 2
    if node.op == "Add":
        return all(v is not None and is_embedding_lookup(v, depth + 1) for v in node.inputs)
    return False


def _same_dim(x: Dim, y: Dim) -> bool:
    """Whether two dims are known not to broadcast against each other."""
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    if isinstance(x, str) and isinstance(y, str):
        return x == y
    return x != 1 and y != 1


def _check(m: Match) -> MatchResult | None:
    ln, add = m.node("ln"), m.node("add")
    a, b = m["a"], m["b"]
    if not a.dtype.is_float:
        return MatchResult.fail("not a float tensor", progress=1)
    if is_embedding_lookup(a) or is_embedding_lookup(b):
        return MatchResult.fail("a sum of embedding lookups (left to fuse-embedlayernorm)", progress=1)
    rank = ln.inputs[0].type.rank  # type: ignore[union-attr]
    axis = int(m.attr("ln", "axis"))
    if rank is None or axis % rank != rank - 1:
        return MatchResult.fail(f"LayerNorm axis {axis} is not the last axis", node=ln.name, where="LayerNorm", progress=2)
    sa, sb = a.shape, b.shape
    if sa is None or sb is None or len(sa) != len(sb) or not all(_same_dim(x, y) for x, y in zip(sa, sb)):
        return MatchResult.fail(
            f"operands {a.type} and {b.type} may broadcast against each other", node=add.name, where="Add", progress=2
        )
    return None


def _bias_linear(v: Value) -> Node | None:
    """Case 2: ``v`` comes from a Linear with a bias, no activation, and no other user."""
    node = v.producer
    if node is None or node.op != "Linear" or node.attr("activation", "none") != "none":
        return None
    if len(node.inputs) < 3 or node.inputs[2] is None or len(v.uses) != 1:
        return None
    if node.graph is not None and v in node.graph.outputs:
        return None
    return node


def _rewrite(rw: Rewriter, m: Match) -> Value:
    ln, add = m.node("ln"), m.node("add")
    a, b = m["a"], m["b"]
    x, skip, bias = a, b, None
    lin = _bias_linear(a) or _bias_linear(b)
    if lin is not None:  # case 2
        if lin.outputs[0] is b:
            x, skip = b, a
        bias = lin.inputs[2]
        p = rw.provenance
        rw.provenance = Provenance(p.pass_name, p.rule, (lin.name, *p.origins))
        x = rw.op("Linear", [lin.inputs[0], lin.inputs[1]], name=f"{lin.name}_nobias")
    gamma = ln.inputs[1]
    beta = ln.inputs[2] if len(ln.inputs) > 2 else None
    ins: list[Value | None] = [x, skip, gamma, beta]
    if bias is not None:
        ins.append(bias)
    while ins and ins[-1] is None:
        ins.pop()
    add_out = add.outputs[0]
    graph = rw.graph
    shared = any(u is not ln for u in add_out.consumers) or add_out in graph.outputs
    node = rw.node("SkipLayerNorm", ins, {"epsilon": float(m.attr("ln", "epsilon"))}, name=f"{ln.name}_skip", outputs=2 if shared else 1)
    if shared:  # case 3
        replace_value(graph, add_out, node.outputs[1])
    if lin is not None:
        m.add_node(lin)
    return node.outputs[0]


def skiplayernorm_rules() -> list[Rule]:
    pat = P.op(
        "LayerNorm",
        P.op("Add", P.var("a"), P.var("b"), name="add", shared=True),
        P.var("gamma"),
        name="ln",
        extra_inputs=True,
    )
    return [Rule("skiplayernorm", pat, check=_check, rewrite=_rewrite)]


@register_pass
class FuseSkipLayerNorm(RulePass):
    """Fuse residual Add + LayerNorm into SkipLayerNorm (absorbing the preceding Linear's bias)."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return skiplayernorm_rules()
