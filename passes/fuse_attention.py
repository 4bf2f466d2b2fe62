"""``fuse-attention``: a whole BERT self-attention block -> one ``Attention`` op with packed QKV weights.

An imperative matcher anchored at each ``Softmax`` (and each
``ScaledDotProductAttention`` from the torch.export frontend). It does not
special-case any exporter's node sequence: it walks the dataflow, then proves
the candidate numerically. Cases:

1. **Scores**: back from the softmax input through ``Identity`` and ``Mul``/``Div``
   by scalar constants (the scale, wherever it sits), one additive mask
   ``Add(scores, M)`` or one ``Where(cond, fill, scores)`` /
   ``Where(cond, scores, fill)`` with a scalar fill <= -1e4 (or -inf), to the
   ``MatMul(Q', K')`` of the scores. The side of an ``Add`` holding the mask is
   the one with no matmul upstream.
2. **Q, K, V**: back from the two matmul operands and from the context
   matmul's second operand through layout ops (Reshape, Transpose, Squeeze,
   Unsqueeze, Flatten, Identity: any equivalent split-heads form) and scalar
   ``Mul``/``Div`` (a scale applied to Q or K before the matmul, as in
   DistilBERT, or sqrt-scale on both, as in dynamo's SDPA decomposition) to a
   projection: ``Add(MatMul(X, W), b)`` (either order), ``MatMul(X, W)``,
   ``Linear(X, W, b?)`` without activation, or ``Gemm``; a projection of the
   rows ``Reshape(X, [-1, K])`` (torch.export's 2-D ``addmm``) reads ``X``. The
   three projections must read the same ``X`` and have constant weights.
3. **SDPA**: ``ScaledDotProductAttention(q, k, v, mask?)`` (not causal) takes the
   place of cases 1's matmul/softmax/matmul; q, k, v are walked as in case 2.
   A bool mask keeps True pairs, a float mask is additive.
4. **Context**: forward from the softmax through an optional NaN guard
   ``Where(IsNaN(p), 0, p)`` and ``Identity`` to ``MatMul(p, V')``, then through
   layout ops (merge heads) to the first value shaped ``[batch, seq, hidden]``.
5. **Mask semantics** are decided numerically: the mask subgraph must depend
   (through data, not shapes) on exactly one graph input of rank 2; evaluated
   on two probe key-padding masks it must give ~0 where a key is kept and
   <= -1e4 where it is padded (additive forms, after any later scaling), or a
   ``Where`` condition equal to "padded" (fill first) / "kept" (fill second).
   This covers the Cast/Sub/Mul, Where/IsNaN and Expand forms of every
   exporter. ``mask_filter_value`` is the padded value (-inf becomes the
   float32 minimum).
6. **Numbers**: the block is evaluated on a seeded probe input and must match
   the fused op within 1e-4 (relative to the output's magnitude); the head
   count comes from Q's head size at the scores matmul; the scale is the
   product of the constants found, written as 0 when it equals 1/sqrt(head_dim).
7. **Escapes**: no intermediate result (Q/K/V, scores, probabilities) may be
   used outside the block, else it would be computed twice.
8. **Sharing**: identical (Wq, Wk, Wv, bq, bk, bv) sets (ALBERT shares one
   layer's weights across all layers) are packed once and the packed
   initializers are shared.

A failed candidate is reported with the check that failed, e.g. "stopped at
Where(mask) in node where_3: mask depends on 2 graph inputs (a, b), expected
one attention mask".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import AccelOptError
from accelopt.ir.graph import Graph, Node, Provenance, Value, tensor_digest
from accelopt.ir.ops.fused import attention
from accelopt.ir.registry import get_op
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import (
    SHAPE_ONLY_OPS,
    Prober,
    cone,
    const_of,
    data_sources,
    dead_after_replacing,
    describe,
    first_escape,
    looked_through,
    scalar_of,
)
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.rule import Rewriter, Rule

log = logging.getLogger(__name__)

PASS_NAME = "fuse-attention"
#: ops that only move data around (splitting or merging heads)
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
MATMUL_OPS = frozenset({"MatMul", "Linear", "Gemm", "Attention", "ScaledDotProductAttention"})
#: a padded key must get at most this much added to its score
MASK_THRESHOLD = -1e4
#: numerical agreement required between the block and the fused op (relative to max |output|)
PROBE_RTOL = 1e-4
F32_MIN = float(np.finfo(np.float32).min)


@dataclass
class _Proj:
    x: Value
    w: np.ndarray
    b: np.ndarray | None
    nodes: list[Node]
    factor: float = 1.0  # scalar factors applied between the projection and the matmul


@dataclass
class _Mask:
    kind: str  # "add" | "where_pad" (cond True = padded) | "where_keep" | "bool_keep"
    value: Value  # the additive mask or the condition
    factor: float = 1.0  # scaling applied after the mask (add kind)
    fill: float = 0.0  # where kinds: the fill value (already scaled)
    node: Node | None = None


@dataclass
class _Cand:
    anchor: Node
    q: _Proj | None = None
    k: _Proj | None = None
    v: _Proj | None = None
    q_end: Value | None = None
    k_end: Value | None = None
    score_factor: float = 1.0
    sdpa_scale: float | None = None  # SDPA's own scale (0 = default)
    mask: _Mask | None = None
    core: list[Node] = field(default_factory=list)
    ctx_chain: list[Value] = field(default_factory=list)
    scores: Value | None = None  # a value shaped like the scores (for mask broadcasting)
    progress: int = 0
    # filled by _prove
    out: Value | None = None
    num_heads: int = 0
    scale: float = 0.0
    mask_input: Value | None = None
    mask_filter_value: float = -10000.0
    region: list[Node] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, reason: str, node: Node | None, where: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node
        self.where = where


# ------------------------------------------------------------------ walking
def _scalar_operand(graph: Graph, node: Node) -> tuple[Value, float] | None:
    """For Mul/Div by a scalar constant: (the other operand, the factor it is multiplied by)."""
    if node.op == "Mul":
        for i in (0, 1):
            c = scalar_of(graph, node.inputs[i])
            if c is not None and const_of(graph, node.inputs[1 - i]) is None:
                return node.inputs[1 - i], c  # type: ignore[return-value]
    if node.op == "Div":
        c = scalar_of(graph, node.inputs[1])
        if c is not None and c != 0:
            return node.inputs[0], 1.0 / c  # type: ignore[return-value]
    return None


def _has_matmul_upstream(v: Value, limit: int = 4000) -> bool:
    seen: set[int] = set()
    stack = [v]
    while stack and len(seen) < limit:
        cur = stack.pop()
        node = cur.producer
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in MATMUL_OPS:
            return True
        if node.op in SHAPE_ONLY_OPS:
            continue
        stack.extend(i for i in node.inputs if i is not None)
    return False


def _walk_to_projection(graph: Graph, v: Value, what: str, core: list[Node]) -> _Proj:
    """Case 2: back through layout ops and scalar factors to a projection."""
    factor = 1.0
    cur = v
    while True:
        node = cur.producer
        if node is None:
            raise _Fail(f"{what} path reached {describe(cur)}, expected a projection MatMul", None, f"{what} path")
        if node.op in LAYOUT_OPS:
            core.append(node)
            cur = node.inputs[0]  # type: ignore[assignment]
            continue
        if node.op in ("Mul", "Div"):
            so = _scalar_operand(graph, node)
            if so is not None:
                core.append(node)
                cur, c = so
                factor *= c
                continue
        proj = _projection(graph, node)
        if proj is None:
            raise _Fail(
                f"{what} path stopped at {node.op}: expected a layout op, a scalar scale or a projection "
                "(MatMul + bias Add, Linear, Gemm) with constant weights",
                node,
                f"{what} path",
            )
        proj.factor = factor
        core.extend(proj.nodes)
        _unflatten_input(proj, core)
        return proj


def _unflatten_input(proj: _Proj, core: list[Node]) -> None:
    """A projection of rows ``Reshape(X [B, S, K], [-1, K])`` (torch.export's 2-D addmm) reads ``X`` itself."""
    x = proj.x
    node = x.producer
    if node is None or node.op not in ("Reshape", "Flatten") or x.type.rank != 2:
        return
    src = node.inputs[0]
    if src is None or src.type.rank != 3 or src.shape is None or src.shape[-1] != proj.w.shape[0]:
        return
    if node.op == "Flatten" and int(node.attr("axis", 1)) != 2:
        return
    proj.x = src
    core.append(node)


def _projection(graph: Graph, node: Node) -> _Proj | None:
    """``Add(MatMul(X, W), b)``, ``MatMul(X, W)``, ``Linear(X, W, b?)`` or ``Gemm(X, W, b)``."""

    def weight(v: Value | None) -> np.ndarray | None:
        w = const_of(graph, v)
        return w if w is not None and w.ndim == 2 else None

    if node.op == "Add":
        for i in (0, 1):
            b = const_of(graph, node.inputs[i])
            mm = looked_through(node.inputs[1 - i])
            if b is None or mm is None or mm.producer is None or mm.producer.op != "MatMul":
                continue
            w = weight(mm.producer.inputs[1])
            x = mm.producer.inputs[0]
            if w is None or x is None or b.size != w.shape[1] or const_of(graph, x) is not None:
                continue
            if b.ndim > 1 and any(d != 1 for d in b.shape[:-1]):
                continue
            nodes = [node, mm.producer]
            if len(mm.consumers) != 1:
                continue
            return _Proj(x, w, b.reshape(-1), nodes)
        return None
    if node.op == "MatMul":
        w = weight(node.inputs[1])
        if w is None or node.inputs[0] is None or const_of(graph, node.inputs[0]) is not None:
            return None
        return _Proj(node.inputs[0], w, None, [node])
    if node.op == "Linear":
        if node.attr("activation", "none") != "none":
            return None
        w = weight(node.inputs[1])
        b = const_of(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if w is None or (len(node.inputs) > 2 and node.inputs[2] is not None and b is None):
            return None
        return _Proj(node.inputs[0], w, None if b is None else b.reshape(-1), [node])  # type: ignore[arg-type]
    if node.op == "Gemm":
        full = get_op("Gemm").full_attrs(node.attrs)
        if full.get("transA", 0) or float(full.get("alpha", 1.0)) != 1.0 or float(full.get("beta", 1.0)) != 1.0:
            return None
        w = weight(node.inputs[1])
        if w is None:
            return None
        if full.get("transB", 0):
            w = w.T
        b = None
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            b = const_of(graph, node.inputs[2])
            if b is None or b.size != w.shape[1]:
                return None
        return _Proj(node.inputs[0], w, None if b is None else b.reshape(-1), [node])  # type: ignore[arg-type]
    return None


# ------------------------------------------------------------------ the rule
class AttentionRule(Rule):
    """The imperative attention matcher (cases 1-8 of the module docstring)."""

    name = "attention"
    root_ops = frozenset({"Softmax", "ScaledDotProductAttention"})
    near_miss_min = 1  # every softmax is a candidate: one that is not fused always says why
    allow_escapes = True

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, _Cand] = {}
        self._packed: dict[tuple[str, ...], tuple[Value, Value]] = {}

    # ............................................................. match
    def match(self, graph: Graph, node: Node) -> Match | MatchResult:
        cand = _Cand(anchor=node)
        try:
            if node.op == "Softmax":
                self._structure_softmax(graph, node, cand)
            else:
                self._structure_sdpa(graph, node, cand)
            self._prove(graph, cand)
        except _Fail as f:
            return MatchResult.fail(
                f.reason,
                node=(f.node or node).name,
                where=f.where,
                progress=max(cand.progress, 1),
            )
        except AccelOptError as e:  # a probe could not be evaluated
            return MatchResult.fail(f"probe evaluation failed: {e}", node=node.name, where="probe", progress=cand.progress)
        assert cand.out is not None and cand.out.producer is not None
        m = Match(self.name, graph, cand.out.producer)
        for n in cand.region:
            m.add_node(n)
        self._pending[cand.out.producer.name] = cand
        return m

    def _structure_softmax(self, graph: Graph, sm: Node, cand: _Cand) -> None:
        axis = int(sm.attr("axis", -1))
        rank = sm.inputs[0].type.rank if sm.inputs[0] is not None else None
        if axis != -1 and (rank is None or axis != rank - 1):
            raise _Fail(f"softmax axis is {axis}, expected the last axis", sm, "Softmax")
        core = cand.core
        core.append(sm)
        # case 1: scores path
        cur = sm.inputs[0]
        factor = 1.0
        while True:
            node = cur.producer if cur is not None else None
            if node is None:
                raise _Fail(f"scores path reached {describe(cur)}, expected MatMul(Q, K)", sm, "scores")
            if node.op == "Identity":
                core.append(node)
                cur = node.inputs[0]
                continue
            if node.op in ("Mul", "Div"):
                so = _scalar_operand(graph, node)
                if so is None:
                    raise _Fail(f"{node.op} on the scores is not by a scalar constant", node, "scores scale")
                core.append(node)
                cur, c = so
                factor *= c
                continue
            if node.op == "Add":
                if cand.mask is not None:
                    raise _Fail("a second mask term is added to the scores", node, "Add(mask)")
                sides = [_has_matmul_upstream(i) if i is not None else False for i in node.inputs]
                if sides.count(True) != 1:
                    raise _Fail("cannot tell the scores from the mask: "
                                f"{'both' if all(sides) else 'neither'} operand(s) come from a matmul", node, "Add(mask)")
                s = sides.index(True)
                cand.mask = _Mask("add", node.inputs[1 - s], factor=factor, node=node)  # type: ignore[arg-type]
                core.append(node)
                cur = node.inputs[s]
                continue
            if node.op == "Where":
                if cand.mask is not None:
                    raise _Fail("a second mask is applied to the scores", node, "Where(mask)")
                cond, a, b = node.inputs
                fa, fb = scalar_of(graph, a), scalar_of(graph, b)
                if fa is not None and fa <= MASK_THRESHOLD and fb is None:
                    cand.mask = _Mask("where_pad", cond, fill=fa * factor, node=node)  # type: ignore[arg-type]
                    cur = b
                elif fb is not None and fb <= MASK_THRESHOLD and fa is None:
                    cand.mask = _Mask("where_keep", cond, fill=fb * factor, node=node)  # type: ignore[arg-type]
                    cur = a
                else:
                    raise _Fail("Where on the scores has no scalar fill <= -1e4 in one branch", node, "Where(mask)")
                core.append(node)
                continue
            if node.op == "MatMul":
                if any(const_of(graph, i) is not None for i in node.inputs):
                    raise _Fail("the scores MatMul has a constant operand", node, "MatMul(Q, K)")
                core.append(node)
                break
            raise _Fail(f"scores path stopped at {node.op}: expected Mul/Div by a constant, "
                        "Add(mask), Where(mask) or MatMul(Q, K)", node, "scores")
        cand.score_factor = factor
        cand.scores = node.outputs[0]
        cand.progress = 1
        qk = node
        cand.q_end, cand.k_end = qk.inputs[0], qk.inputs[1]
        # case 4: forward to the context matmul
        p = sm.outputs[0]
        while True:
            users = p.consumers
            if len(users) == 1 and users[0].op == "Identity":
                core.append(users[0])
                p = users[0].outputs[0]
                continue
            guard = _nan_guard(graph, p)
            if guard is not None:
                core.extend(guard)
                p = guard[1].outputs[0]
                continue
            break
        users = p.consumers
        if len(users) != 1 or users[0].op != "MatMul" or users[0].inputs[0] is not p:
            found = ", ".join(f"{u.op} (node {u.name})" for u in users) or "nothing"
            raise _Fail(f"the probabilities are used by {found}, expected one MatMul(probs, V)", sm, "MatMul(probs, V)")
        ctx_mm = users[0]
        core.append(ctx_mm)
        cand.progress = 2
        self._walk_qkv(graph, cand, ctx_mm.inputs[1], ctx_mm.outputs[0])  # type: ignore[arg-type]

    def _structure_sdpa(self, graph: Graph, node: Node, cand: _Cand) -> None:
        cand.progress = 2  # an SDPA is attention by definition: any failure is a near miss
        if int(node.attr("is_causal", 0)):
            raise _Fail("causal attention is not BERT self-attention", node, "SDPA")
        cand.core.append(node)
        cand.sdpa_scale = float(node.attr("scale", 0.0))
        cand.q_end, cand.k_end = node.inputs[0], node.inputs[1]
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            m = node.inputs[3]
            kind = "bool_keep" if m.dtype.np == np.bool_ else "add"
            cand.mask = _Mask(kind, m, fill=-np.inf, node=node)
        cand.progress = 2
        self._walk_qkv(graph, cand, node.inputs[2], node.outputs[0])  # type: ignore[arg-type]

    def _walk_qkv(self, graph: Graph, cand: _Cand, v_end: Value, ctx: Value) -> None:
        core = cand.core
        assert cand.q_end is not None and cand.k_end is not None
        cand.q = _walk_to_projection(graph, cand.q_end, "Q", core)
        cand.progress = 3
        cand.k = _walk_to_projection(graph, cand.k_end, "K", core)
        cand.v = _walk_to_projection(graph, v_end, "V", core)
        cand.progress = 4
        xs = {id(p.x) for p in (cand.q, cand.k, cand.v)}
        if len(xs) != 1:
            raise _Fail(
                f"Q, K and V projections read different inputs (%{cand.q.x.name}, %{cand.k.x.name}, "
                f"%{cand.v.x.name}); only self-attention is fused",
                cand.anchor,
                "projections",
            )
        shapes = {p.w.shape for p in (cand.q, cand.k, cand.v)}
        if len(shapes) != 1:
            raise _Fail(f"Q/K/V weights differ in shape: {sorted(shapes)}", cand.anchor, "projections")
        # case 4: merge heads
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
        cand.ctx_chain = chain
        cand.progress = 5

    # ............................................................. proof
    def _prove(self, graph: Graph, cand: _Cand) -> None:
        """Cases 5-7: mask semantics, numerical equality, escapes."""
        q, k, v = cand.q, cand.k, cand.v
        assert q is not None and k is not None and v is not None and cand.q_end is not None
        x = q.x
        prober = Prober(graph)
        mask = cand.mask
        if mask is not None:
            sources = data_sources(mask.value)
            if len(sources) != 1:
                names = ", ".join(sorted(s.name for s in sources)) or "none"
                raise _Fail(
                    f"mask depends on {len(sources)} graph inputs ({names}), expected one attention mask input",
                    mask.node,
                    "mask",
                )
            (mi,) = sources
            if mi.type.rank != 2:
                raise _Fail(f"mask input %{mi.name} is {mi.type}, expected a [batch, seq] key-padding mask",
                            mask.node, "mask")
            cand.mask_input = mi
        hidden_in = q.w.shape[0]
        bsz = seq = None
        if cand.mask_input is not None:
            bsz, seq = prober.shape(cand.mask_input.type)
        xshape = prober.shape(x.type, fallback=(bsz or 2, seq or 6, hidden_in))
        if len(xshape) != 3 or xshape[-1] != hidden_in:
            raise _Fail(f"block input %{x.name} is {x.type}, expected [batch, seq, {hidden_in}]", cand.anchor, "input")
        bsz, seq = xshape[0], xshape[1]
        rng = np.random.default_rng(1234)
        xp = rng.standard_normal(xshape).astype(x.dtype.np)
        probes = _probe_masks(bsz, seq, rng) if cand.mask_input is not None else [None]
        targets: list[Value] = [cand.q_end, *cand.ctx_chain]
        if mask is not None:
            targets += [mask.value]
            if cand.scores is not None:
                targets.append(cand.scores)
            else:
                targets.append(cand.k_end)  # type: ignore[arg-type]
        results = []
        for pm in probes:
            feeds: dict[Value, np.ndarray] = {x: xp}
            if pm is not None:
                assert cand.mask_input is not None
                feeds[cand.mask_input] = pm.astype(cand.mask_input.dtype.np)
            results.append(prober.run(targets, feeds))
        # heads and scale (case 6)
        qp = results[0][0]
        head_dim = int(qp.shape[-1])
        hidden = q.w.shape[1]
        if head_dim <= 0 or hidden % head_dim:
            raise _Fail(f"Q reaches the scores matmul with head size {head_dim}, which does not divide {hidden}",
                        cand.anchor, "heads")
        heads = hidden // head_dim
        if cand.sdpa_scale is not None:
            base = cand.sdpa_scale or 1.0 / np.sqrt(head_dim)
        else:
            base = cand.score_factor
        scale = float(base * q.factor * k.factor)
        if np.isclose(scale, 1.0 / np.sqrt(head_dim), rtol=1e-6, atol=0):
            scale = 0.0
        # mask semantics (case 5)
        if mask is not None:
            cand.mask_filter_value = self._check_mask(cand, mask, results, probes)
        cand.progress = 6
        # numbers (case 6): longest merge-heads chain prefix that gives [B, S, hidden]
        w, b = _packed_arrays(cand)
        expected_shape = (bsz, seq, hidden)
        fused = [
            attention(xp, w, b, pm, heads, scale, cand.mask_filter_value) for pm in probes
        ]
        out_idx = None
        for i in range(len(cand.ctx_chain) - 1, -1, -1):
            if results[0][1 + i].shape == expected_shape:
                out_idx = i
                break
        if out_idx is None:
            shapes = ", ".join(str(tuple(results[0][1 + i].shape)) for i in range(len(cand.ctx_chain)))
            raise _Fail(f"the context is never merged back to [batch, seq, hidden] = {expected_shape} "
                        f"(shapes after the context matmul: {shapes})", cand.anchor, "merge heads")
        for res, f in zip(results, fused):
            ref = res[1 + out_idx]
            err = float(np.max(np.abs(ref.astype(np.float64) - f)))
            tol = PROBE_RTOL * (1.0 + float(np.max(np.abs(ref))))
            if not err <= tol:
                raise _Fail(f"the block differs from the fused Attention by {err:.3g} on a probe (tolerance {tol:.3g})",
                            cand.anchor, "numerical check")
        out = cand.ctx_chain[out_idx]
        for val in cand.ctx_chain[1 : out_idx + 1]:
            assert val.producer is not None
            cand.core.append(val.producer)
        cand.out = out
        cand.num_heads = heads
        cand.scale = scale
        cand.progress = 7
        # escapes (case 7)
        region = cone([out], stop=[x])
        dead = dead_after_replacing(graph, out, region)
        for n in cand.core:
            if id(n) not in dead:
                raise _Fail(first_escape(graph, n, dead), n, "escape")
        cand.region = [n for n in region if id(n) in dead]

    def _check_mask(self, cand: _Cand, mask: _Mask, results: list[list[np.ndarray]], probes: list[Any]) -> float:
        fill_values: list[float] = []
        for res, pm in zip(results, probes):
            mval, ref = res[-2], res[-1]
            if cand.scores is not None:
                scores_shape = ref.shape
            else:
                qp = res[0]
                scores_shape = tuple(qp.shape[:-1]) + (ref.shape[-2],)
            try:
                full = np.broadcast_to(mval, np.broadcast_shapes(mval.shape, scores_shape))
            except ValueError:
                raise _Fail(f"mask of shape {mval.shape} does not broadcast to the scores {scores_shape}",
                            mask.node, "mask") from None
            bsz, seq = pm.shape
            if full.shape[-1] != seq or full.size % (bsz * seq) or full.shape[0] % bsz:
                raise _Fail(f"mask of shape {full.shape} is not over [batch, ..., keys={seq}]", mask.node, "mask")
            full = full.reshape(bsz, -1, seq)
            padded = (pm == 0)[:, None, :]
            padded = np.broadcast_to(padded, full.shape)
            if mask.kind == "add":
                eff = full.astype(np.float64) * mask.factor
                kept_vals = eff[~padded]
                pad_vals = eff[padded]
                if kept_vals.size and np.max(np.abs(kept_vals)) > 1e-3:
                    raise _Fail(f"mask adds up to {np.max(np.abs(kept_vals)):.3g} to kept keys, expected 0 "
                                "(not a key-padding mask)", mask.node, "Add(mask)")
                if pad_vals.size:
                    worst = float(np.max(pad_vals))
                    if not worst <= MASK_THRESHOLD:
                        raise _Fail(f"mask adds only {worst:.3g} to padded keys, expected <= -1e4",
                                    mask.node, "Add(mask)")
                    fill_values.append(worst)
            else:
                cond = full.astype(bool)
                want = padded if mask.kind == "where_pad" else ~padded
                if not np.array_equal(cond, want):
                    sense = "padded" if mask.kind == "where_pad" else "kept"
                    raise _Fail(f"mask condition is not 'key is {sense}' on a probe key-padding mask",
                                mask.node, "Where(mask)" if mask.kind != "bool_keep" else "SDPA mask")
                fill_values.append(mask.fill)
        fill = max(fill_values) if fill_values else -10000.0
        return F32_MIN if not np.isfinite(fill) or fill < F32_MIN else float(fill)

    # ........................................................... rewrite
    def rewrite(self, rw: Rewriter, match: Match) -> Value | None:
        cand = self._pending.pop(match.root.name)
        graph = rw.graph
        assert cand.q is not None and cand.out is not None
        rw.provenance = Provenance(rw.provenance.pass_name, self.name, tuple(n.name for n in _ordered(graph, cand.core)))
        w_val, b_val = self._packed_values(rw, cand)
        inputs: list[Value | None] = [cand.q.x, w_val, b_val]
        if cand.mask_input is not None:
            inputs.append(cand.mask_input)
        attrs: dict[str, Any] = {"num_heads": cand.num_heads}
        if cand.scale:
            attrs["scale"] = cand.scale
        if cand.mask_input is not None:
            attrs["mask_filter_value"] = cand.mask_filter_value
        return rw.op("Attention", inputs, attrs, name=f"{cand.anchor.name}_attention")

    def _packed_values(self, rw: Rewriter, cand: _Cand) -> tuple[Value, Value]:
        w, b = _packed_arrays(cand)
        key = (tensor_digest(w), tensor_digest(b))
        got = self._packed.get(key)
        if got is not None and all(v.graph is rw.graph for v in got):
            return got
        base = cand.anchor.name
        pair = (rw.const(f"{base}_qkv_weight", w), rw.const(f"{base}_qkv_bias", b))
        self._packed[key] = pair
        return pair


def _packed_arrays(cand: _Cand) -> tuple[np.ndarray, np.ndarray]:
    q, k, v = cand.q, cand.k, cand.v
    assert q is not None and k is not None and v is not None
    dt = q.x.dtype.np
    n = q.w.shape[1]
    ws, bs = [], []
    for p, extra in ((q, 1.0), (k, 1.0), (v, v.factor)):
        ws.append(p.w.astype(dt) * dt.type(extra) if extra != 1.0 else p.w.astype(dt))
        bias = p.b if p.b is not None else np.zeros(n, dtype=dt)
        bs.append(bias.astype(dt) * dt.type(extra) if extra != 1.0 else bias.astype(dt))
    return np.concatenate(ws, axis=1), np.concatenate(bs)


def _nan_guard(graph: Graph, p: Value) -> tuple[Node, Node] | None:
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


def _probe_masks(bsz: int, seq: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Two key-padding masks: suffix padding, then scattered padding; every row keeps a key."""
    a = np.ones((bsz, seq), dtype=np.int64)
    for r in range(bsz):
        keep = max(1, seq - 1 - r) if seq > 1 else 1
        a[r, keep:] = 0
    b = (rng.random((bsz, seq)) < 0.6).astype(np.int64)
    for r in range(bsz):
        b[r, int(rng.integers(0, seq))] = 1
        if seq > 1 and b[r].all():
            b[r, int(rng.integers(0, seq))] = 0
            if not b[r].any():
                b[r, 0] = 1
    return [a, b]


def _ordered(graph: Graph, nodes: list[Node]) -> list[Node]:
    ids = {id(n) for n in nodes}
    return [n for n in graph.nodes if id(n) in ids]


@register_pass
class FuseAttention(RulePass):
    """Fuse BERT self-attention blocks (and SDPA) into Attention with packed QKV weights."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return [AttentionRule()]
