"""fuse-attention, the block's structure: the scores path, the context and the merge back to hidden.

1. **Scores** (case 1 of ``fuse_attention``), once case 3 found the context
   matmul (from then on a failure is reported as a near miss): back from the softmax input to
   the ``MatMul(Q', K')`` of the scores through ``Identity``, ``Mul``/``Div``
   by scalar constants (the scale, wherever it sits; the product is the
   block's scale; scalars computed from shapes count too, next to the matmul),
   additive *terms* and at most one ``Reshape`` (DeBERTa adds
   its disentangled bias to ``[B*N, S, S]`` scores, then views them as
   ``[B, N, S, S]``). A term is
   - ``Add(scores, T)`` / ``Add(T, scores)`` or ``Sub(scores, T)``: the side
     holding the scores is the one that reaches a MatMul through the ops
     above only; the other is the term, scaled by the factors after it;
   - ``Where(cond, fill, scores)`` / ``Where(cond, scores, fill)`` with a
     scalar fill <= -1e4 (or -inf): masked scores replaced by the fill.
   What each term is (a key-padding mask, a causal mask, a bias, nothing) is
   decided numerically (``fuse_attention_terms``).
2. **SDPA** (case 4): ``ScaledDotProductAttention(q, k, v, mask?){scale,
   is_causal}`` stands for case 1's matmul/softmax/matmul; a bool mask is a
   ``Where`` term (True keeps), a float mask an additive term.
3. **Context** (case 5): forward from the softmax through ``Identity``, a NaN
   guard ``Where(IsNaN(p), 0, p)``, casts to the same type and layout ops to
   ``MatMul(p, V')`` (an ``Einsum`` there is attention that is not fused), then
   through layout ops (merge heads) as far as each value has one user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelopt.ir.graph import Graph, Node, Value
from accelopt.passes.fuse_attention_paths import LAYOUT_OPS, AttentionMiss, dyn_operand, scalar_operand
from accelopt.passes.fuse_common import SHAPE_ONLY_OPS, const_of, describe, scalar_of

#: a masked score must be pushed at least this far down
MASK_THRESHOLD = -1e4


@dataclass
class Term:
    """Something the block adds to (``add``) or writes into (``where``) the scores."""

    kind: str  # "add" | "where"
    node: Node
    value: Value  # the added tensor, or the Where condition
    scores_in: Value  # the scores operand of ``node`` (for its shape)
    factor: float = 1.0  # scalar factors applied to the scores after this term
    fill: float = 0.0  # where: the fill, before ``factor``
    keep_if: bool = False  # where: True when cond True keeps the score (fill in the False branch)
    reshape: Node | None = None  # the scores Reshape that comes after this term, if any


@dataclass
class Block:
    """The structure of one candidate: everything but the Q/K/V paths and the numbers."""

    anchor: Node
    q_end: Value | None = None
    k_end: Value | None = None
    v_end: Value | None = None
    k_transposed: bool = True  # the scores matmul takes K^T (SDPA takes K)
    score_factor: float = 1.0
    sdpa_scale: float | None = None  # SDPA's own scale attribute (0 = default)
    causal: bool = False  # SDPA's is_causal
    terms: list[Term] = field(default_factory=list)
    #: scalars computed from shapes that multiply (False) or divide (True) the scores next to their matmul
    dyn: list[tuple[Value, bool]] = field(default_factory=list)
    scores: Value | None = None  # the scores as the softmax sees them (None for SDPA)
    reshape: Node | None = None  # the one Reshape on the scores path
    core: list[Node] = field(default_factory=list)
    ctx_chain: list[Value] = field(default_factory=list)
    progress: int = 0


def _reaches_matmul(graph: Graph, v: Value | None, limit: int = 64) -> bool:
    """Whether ``v`` comes from a MatMul of two non-constants through layout ops, casts, scalar factors,
    additive terms and Where masks (the ops a scores path is made of)."""
    stack = [v]
    seen = 0
    while stack and seen < limit:
        cur = stack.pop()
        node = cur.producer if cur is not None else None
        seen += 1
        if node is None:
            continue
        if node.op == "MatMul":
            if all(const_of(graph, i) is None for i in node.inputs):
                return True
            continue
        if node.op in ("Mul", "Div"):
            so = scalar_operand(graph, node)
            dyn = dyn_operand(graph, node) if so is None else None
            if so is not None or dyn is not None:
                stack.append(so[0] if so is not None else dyn[0])  # type: ignore[index]
        elif node.op in LAYOUT_OPS or node.op == "Cast":
            stack.append(node.inputs[0])
        elif node.op in ("Add", "Sub"):
            stack.extend(node.inputs)
        elif node.op == "Where":
            stack.extend(node.inputs[1:])
    return False


def structure_softmax(graph: Graph, sm: Node, blk: Block) -> None:
    """Cases 1 and 3 from a Softmax: the context matmul first (after it the candidate counts as an attention
    block, and a failure is a near miss), then the scores."""
    axis = int(sm.attr("axis", -1))
    rank = sm.inputs[0].type.rank if sm.inputs[0] is not None else None
    if axis != -1 and (rank is None or axis != rank - 1):
        raise AttentionMiss(f"softmax axis is {axis}, expected the last axis", sm, "Softmax")
    blk.core.append(sm)
    ctx_mm = _context_matmul(graph, sm, blk)
    blk.v_end = ctx_mm.inputs[1]
    blk.ctx_chain = merge_chain(graph, ctx_mm.outputs[0])
    blk.progress = 2
    blk.scores = sm.inputs[0]
    cur = sm.inputs[0]
    factor = 1.0
    while True:
        node = cur.producer if cur is not None else None
        if node is None:
            raise AttentionMiss(f"scores path reached {describe(cur)}, expected MatMul(Q, K)", sm, "scores")
        if node.op == "Identity" or (
            node.op == "Cast" and node.inputs[0] is not None and node.inputs[0].dtype == node.outputs[0].dtype
        ):
            blk.core.append(node)
            cur = node.inputs[0]
            continue
        if node.op in ("Mul", "Div"):
            so = scalar_operand(graph, node)
            dyn = dyn_operand(graph, node) if so is None else None
            if so is None and dyn is None:
                raise AttentionMiss(f"{node.op} on the scores is not by a scalar constant", node, "scores scale")
            blk.core.append(node)
            if so is not None:
                cur, c = so
                factor *= c
            elif dyn is not None:
                cur = dyn[0]
                blk.dyn.append((dyn[1], dyn[2]))
            continue
        if node.op in ("Add", "Sub", "Where") and blk.dyn:
            raise AttentionMiss("a term is added to the scores before a scale computed from shapes", node, "scores")
        if node.op in ("Add", "Sub"):
            cur = _additive_term(graph, node, blk, factor)
            continue
        if node.op == "Where":
            cur = _where_term(graph, node, blk, factor)
            continue
        if node.op == "Reshape":
            if blk.reshape is not None:
                raise AttentionMiss("the scores are reshaped twice", node, "scores")
            blk.reshape = node
            blk.core.append(node)
            cur = node.inputs[0]
            continue
        if node.op == "MatMul":
            if any(const_of(graph, i) is not None for i in node.inputs):
                raise AttentionMiss("the scores MatMul has a constant operand", node, "MatMul(Q, K)")
            blk.core.append(node)
            break
        raise AttentionMiss(
            f"scores path stopped at {node.op}: expected Mul/Div by a constant, an added term, Where(mask), "
            "a Reshape or MatMul(Q, K)",
            node,
            "scores",
        )
    blk.score_factor = factor
    blk.q_end, blk.k_end = node.inputs[0], node.inputs[1]


def _additive_term(graph: Graph, node: Node, blk: Block, factor: float) -> Value:
    sides = [_reaches_matmul(graph, i) for i in node.inputs]
    if node.op == "Sub":
        if not sides[0] or sides[1]:
            raise AttentionMiss("Sub on the scores does not subtract a term from them", node, "Sub(term)")
        s, sign = 0, -1.0
    else:
        if sides.count(True) != 1:
            which = "both" if all(sides) else "neither"
            raise AttentionMiss(
                f"cannot tell the scores from the added term: {which} operand(s) come from a matmul of the scores path",
                node,
                "Add(term)",
            )
        s, sign = sides.index(True), 1.0
    value, scores_in = node.inputs[1 - s], node.inputs[s]
    assert value is not None and scores_in is not None
    blk.terms.append(Term("add", node, value, scores_in, factor=factor * sign, reshape=blk.reshape))
    blk.core.append(node)
    return scores_in


def _where_term(graph: Graph, node: Node, blk: Block, factor: float) -> Value:
    cond, a, b = node.inputs
    fa, fb = scalar_of(graph, a), scalar_of(graph, b)
    if fa is not None and fa <= MASK_THRESHOLD and fb is None and b is not None:
        keep_if, fill, scores_in = False, fa, b
    elif fb is not None and fb <= MASK_THRESHOLD and fa is None and a is not None:
        keep_if, fill, scores_in = True, fb, a
    else:
        found = [f for f in (fa, fb) if f is not None]
        what = f"replaces masked scores with {found[0]:.4g}" if found else "has no scalar fill"
        raise AttentionMiss(f"Where on the scores {what}, expected a scalar fill <= -1e4", node, "Where(mask)")
    if blk.reshape is not None:
        raise AttentionMiss("a Where mask is applied before the scores are reshaped", node, "Where(mask)")
    assert cond is not None
    blk.terms.append(Term("where", node, cond, scores_in, factor=factor, fill=fill, keep_if=keep_if))
    blk.core.append(node)
    return scores_in


def _context_matmul(graph: Graph, sm: Node, blk: Block) -> Node:
    """Case 3: the MatMul(probs, V) the probabilities flow into."""
    p = sm.outputs[0]
    while True:
        users = [u for u in p.consumers if u.op not in SHAPE_ONLY_OPS]
        same_cast = len(users) == 1 and users[0].op == "Cast" and users[0].outputs[0].dtype == p.dtype
        if len(users) == 1 and (users[0].op in LAYOUT_OPS or same_cast) and users[0].inputs[0] is p:
            blk.core.append(users[0])
            p = users[0].outputs[0]
            continue
        guard = nan_guard(graph, p)
        if guard is not None:
            blk.core.extend(guard)
            p = guard[1].outputs[0]
            continue
        break
    users = [u for u in p.consumers if u.op not in SHAPE_ONLY_OPS]
    if len(users) == 1 and users[0].op == "Einsum":
        raise AttentionMiss(f"the probabilities meet V in Einsum (node {users[0].name}), not in a MatMul; einsum "
                            "attention (Funnel's) is not fused", sm, "Einsum(probs, V)")
    if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not p:
        found = ", ".join(f"{u.op} (node {u.name})" for u in users) or "nothing"
        raise AttentionMiss(f"the probabilities are used by {found}, expected one MatMul(probs, V)", sm,
                            "MatMul(probs, V)")
    blk.core.append(users[0])
    return users[0]


def structure_sdpa(graph: Graph, node: Node, blk: Block) -> None:
    """Case 2."""
    blk.k_transposed = False
    blk.progress = 2
    blk.core.append(node)
    blk.sdpa_scale = float(node.attr("scale", 0.0))
    blk.causal = bool(int(node.attr("is_causal", 0)))
    blk.q_end, blk.k_end, blk.v_end = node.inputs[0], node.inputs[1], node.inputs[2]
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        m = node.inputs[3]
        q = node.inputs[0]
        assert q is not None
        if m.dtype.np == np.bool_:
            blk.terms.append(Term("where", node, m, q, fill=-np.inf, keep_if=True))
        else:
            blk.terms.append(Term("add", node, m, q))
    blk.ctx_chain = merge_chain(graph, node.outputs[0])


def merge_chain(graph: Graph, ctx: Value) -> list[Value]:
    """Case 3's merge: ``ctx`` and the values after it through single-user layout ops."""
    chain = [ctx]
    cur = ctx
    outs = {id(o) for o in graph.outputs}
    while id(cur) not in outs:
        users = [u for u in cur.consumers if u.op not in SHAPE_ONLY_OPS]
        if len(users) == 1 and users[0].op in LAYOUT_OPS and users[0].inputs[0] is cur:
            cur = users[0].outputs[0]
            chain.append(cur)
            continue
        break
    return chain


def is_attention(graph: Graph, node: Node) -> bool:
    """Whether ``node`` anchors an attention block: an SDPA, or a softmax over the last axis whose
    probabilities reach ``MatMul(probs, V)`` (case 3); counts the blocks a model has, fused or not."""
    if node.op == "ScaledDotProductAttention":
        return True
    if node.op != "Softmax":
        return False
    try:
        structure_softmax(graph, node, Block(node))
    except AttentionMiss as miss:
        return miss.where not in ("Softmax", "MatMul(probs, V)")
    return True


def nan_guard(graph: Graph, p: Value) -> tuple[Node, Node] | None:
    """``Where(IsNaN(p), 0, p)``: returns (IsNaN, Where) when ``p``'s users are exactly that."""
    users = p.consumers
    if len(users) != 2:
        return None
    isnan = next((u for u in users if u.op == "IsNaN"), None)
    where = next((u for u in users if u.op == "Where"), None)
    if isnan is None or where is None or len(isnan.outputs[0].consumers) != 1:
        return None
    c, a, b = where.inputs
    if c is not isnan.outputs[0] or b is not p or scalar_of(graph, a) != 0.0:
        return None
    return isnan, where
