"""``fuse-attention``: attention blocks -> ``Attention`` (packed QKV) or ``MultiHeadAttention``.

An imperative matcher anchored at each ``Softmax`` (and each
``ScaledDotProductAttention`` from the torch.export frontend). It does not
special-case any exporter's or model's node sequence: it walks the dataflow,
decides what the pieces mean numerically, then proves the candidate on seeded
probes. The walks live in ``fuse_attention_scores`` (cases 1, 4, 5),
``fuse_attention_paths`` (cases 2, 3) and ``fuse_attention_terms`` (case 6).
Cases:

1. **Scores**: back from the softmax through scalar factors (the scale,
   wherever it sits, or none at all: T5), additive terms, ``Where`` masks and
   one ``Reshape`` to ``MatMul(Q', K')``.
2. **Q, K, V**: back from the matmul operands through layout ops (any
   split-heads form) and scalar factors to a projection with constant
   weights, or to one piece of a fused projection split along its last axis
   (GPT-2's ``c_attn``).
3. **Form**: when the three projections read the same input, have the same
   width and are used only here, they are packed into one
   ``Attention(x, Wqkv, bqkv, mask?, bias?)`` (identical weight sets, as in
   ALBERT, are packed once and shared). Otherwise (Q and K from another input
   than V as in MobileBERT, a projection also used elsewhere as in DeBERTa's
   disentangled bias or ConvBERT's convolution half, no constant projection)
   the block becomes ``MultiHeadAttention(q, k, v, mask?, bias?)`` on the
   ``[batch, seq, hidden]`` values before the heads were split.
4. **SDPA**: ``ScaledDotProductAttention(q, k, v, mask?){scale, is_causal}``
   takes the place of case 1; ``is_causal`` is ``unidirectional=1``.
5. **Context**: forward from the softmax through a NaN guard, layout ops and
   ``MatMul(p, V')``, then through layout ops (merge heads) to the last value
   shaped ``[batch, seq, hidden]``; when the heads are never merged because the
   context is concatenated per head with something else (ConvBERT's mixed
   attention), the fused op's output is reshaped to ``[batch, seq, heads,
   head_size]`` there, the other half is left as it is and a note says so.
6. **Terms** (``fuse_attention_terms``): each term is a key-padding mask
   (the fused op's mask input), a causal mask (``unidirectional=1``), both,
   nothing, or a bias (``attention_bias``: relative position biases, computed
   disentangled biases, masks of any other shape), decided on the probes.
7. **Numbers**: the block is evaluated on seeded probe inputs (two padding
   patterns for the mask input) and must match the fused op within 1e-4
   relative to the output's magnitude; the head count comes from Q's head
   size; the scale is the product of the factors found (0 when it equals
   1/sqrt(head_size)). The probes keep key 0, so no query has every key
   masked: exporters disagree on such rows (zeros, NaN, a uniform average)
   and the fused op gives onnxruntime's.
8. **Escapes**: no intermediate result of the block (scores, probabilities,
   packed projections) may be used outside it, else it would be computed
   twice; a packed candidate whose projections escape is tried as case 3's
   ``MultiHeadAttention``.

A failed candidate is reported with the check that failed, e.g. "stopped at
Where(mask) in node where_3: Where on the scores replaces masked scores with
-1, expected a scalar fill <= -1e4".
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from accelopt.errors import AccelOptError
from accelopt.ir.graph import Graph, Node, Provenance, Value, tensor_digest
from accelopt.passes.base import PassContext, PassResult, register_pass
from accelopt.passes.fuse_attention_paths import AttentionMiss, Path, packed_arrays, walk_path
from accelopt.passes.fuse_attention_proof import Cand, prove_form
from accelopt.passes.fuse_attention_scores import Block, structure_sdpa, structure_softmax
from accelopt.passes.fuse_attention_terms import term_fill
from accelopt.passes.patterns.driver import RulePass, apply_rules
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.rule import Rewriter, Rule

log = logging.getLogger(__name__)

PASS_NAME = "fuse-attention"


class AttentionRule(Rule):
    """The imperative attention matcher (cases 1-8 of the module docstring)."""

    name = "attention"
    root_ops = frozenset({"Softmax", "ScaledDotProductAttention"})
    near_miss_min = 1  # every softmax is a candidate: one that is not fused always says why
    allow_escapes = True

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Cand] = {}
        self._packed: dict[tuple[str, ...], tuple[Value, Value]] = {}
        self.notes: list[str] = []
        #: fused blocks by form, e.g. "MultiHeadAttention (causal, with bias)"
        self.forms: dict[str, int] = {}

    # ............................................................. match
    def match(self, graph: Graph, node: Node) -> Match | MatchResult:
        blk = Block(node)
        try:
            if node.op == "Softmax":
                structure_softmax(graph, node, blk)
            else:
                structure_sdpa(graph, node, blk)
            assert blk.q_end is not None and blk.k_end is not None and blk.v_end is not None
            paths = [walk_path(graph, v, w) for v, w in ((blk.q_end, "Q"), (blk.k_end, "K"), (blk.v_end, "V"))]
            blk.progress = 3
            cand = self._prove(graph, blk, paths)
        except AttentionMiss as f:
            return MatchResult.fail(f.reason, node=(f.node or node).name, where=f.where, progress=max(blk.progress, 1))
        except AccelOptError as e:  # a probe could not be evaluated
            return MatchResult.fail(f"probe evaluation failed: {e}", node=node.name, where="probe",
                                    progress=blk.progress)
        root = cand.out.producer
        assert root is not None
        m = Match(self.name, graph, root)
        for n in cand.region:
            m.add_node(n)
        self._pending[root.name] = cand
        return m

    def _prove(self, graph: Graph, blk: Block, paths: list[Path]) -> Cand:
        """Case 3: the packed form when it applies, else (or when its projections escape) MultiHeadAttention."""
        q, k, v = paths
        packed_why = _packed_blocker(q, k, v)
        mha_why = _mha_blocker(q, k, v)
        if packed_why is None:
            try:
                return prove_form(graph, blk, paths, "packed")
            except AttentionMiss as miss:
                if mha_why is not None or miss.where != "escape":
                    raise
        if mha_why is not None:
            raise AttentionMiss(mha_why, blk.anchor, "projections")
        return prove_form(graph, blk, paths, "mha")

    # ........................................................... rewrite
    def rewrite(self, rw: Rewriter, match: Match) -> Value | None:
        cand = self._pending.pop(match.root.name)
        graph = rw.graph
        blk = cand.blk
        rw.provenance = Provenance(rw.provenance.pass_name, self.name, tuple(n.name for n in _ordered(graph, blk.core)))
        masking = cand.masking
        bias = _bias_value(rw, cand)
        mask = masking.mask_input
        if cand.form == "packed":
            w_val, b_val = self._packed_values(rw, cand)
            q = cand.paths[0].proj
            assert q is not None
            inputs: list[Value | None] = [q.x, w_val, b_val, mask, bias]
            op, suffix = "Attention", "attention"
        else:
            inputs = [p.merged for p in cand.paths] + [mask, bias]
            op, suffix = "MultiHeadAttention", "mha"
        while inputs[-1] is None:
            inputs.pop()
        attrs: dict[str, Any] = {"num_heads": cand.num_heads}
        if cand.scale:
            attrs["scale"] = cand.scale
        if mask is not None or masking.unidirectional:
            attrs["mask_filter_value"] = masking.fill
        if masking.unidirectional:
            attrs["unidirectional"] = 1
        out = rw.op(op, inputs, attrs, name=f"{blk.anchor.name}_{suffix}")
        form = _describe_form(op, mask is not None, bias is not None, masking.unidirectional)
        self.forms[form] = self.forms.get(form, 0) + 1
        if cand.split_out is not None:
            shape = rw.const(f"{blk.anchor.name}_heads_shape", np.array([0, 0, *cand.split_out], dtype=np.int64))
            out = rw.op("Reshape", [out, shape], name=f"{blk.anchor.name}_split_heads")
            joins = [u for u in cand.out.consumers if u.op == "Concat"]
            if joins:
                self.notes.append(
                    f"{blk.anchor.name}: fused the self-attention half of a mixed attention; the other half "
                    f"joins it at {joins[0].op} (node {joins[0].name}) and is left as it is"
                )
        return out

    def _packed_values(self, rw: Rewriter, cand: Cand) -> tuple[Value, Value]:
        q, k, v = (p.proj for p in cand.paths)
        assert q is not None and k is not None and v is not None
        w, b = packed_arrays(q, k, v, cand.paths[2].factor)
        key = (tensor_digest(w), tensor_digest(b))
        got = self._packed.get(key)
        if got is not None and all(val.graph is rw.graph for val in got):
            return got
        base = cand.blk.anchor.name
        pair = (rw.const(f"{base}_qkv_weight", w), rw.const(f"{base}_qkv_bias", b))
        self._packed[key] = pair
        return pair


# ------------------------------------------------------------------ form checks
def _packed_blocker(q: Path, k: Path, v: Path) -> str | None:
    """Why the three paths cannot be packed into one Attention (None when they can)."""
    for p in (q, k, v):
        if p.proj is None:
            return p.stop
    assert q.proj is not None and k.proj is not None and v.proj is not None
    if len({id(q.proj.x), id(k.proj.x), id(v.proj.x)}) != 1:
        return (
            f"Q, K and V projections read different inputs (%{q.proj.x.name}, %{k.proj.x.name}, "
            f"%{v.proj.x.name})"
        )
    shapes = {p.proj.w.shape for p in (q, k, v) if p.proj is not None}
    if len(shapes) != 1:
        return f"Q/K/V weights differ in shape: {sorted(shapes)}"
    return None


def _mha_blocker(q: Path, k: Path, v: Path) -> str | None:
    """Why the paths cannot feed a MultiHeadAttention (None when they can)."""
    for p in (q, k, v):
        if p.merged is None:
            return f"{p.what} path has no [batch, seq, hidden] value before its heads are split ({p.stop or 'none'})"
    if v.factor != 1.0:
        return f"V is scaled by {v.factor:.4g} after its projection, which MultiHeadAttention cannot hold"
    return None


# ------------------------------------------------------------------ rewrite helpers
def _bias_value(rw: Rewriter, cand: Cand) -> Value | None:
    """The ``attention_bias`` input: the bias terms as case 6 laid them out (the same ops as the proof computed)."""
    acc: Value | None = None
    base = cand.blk.anchor.name
    for term in cand.masking.bias_terms:
        if term.kind == "where":
            fill = rw.const(f"{base}_mask_fill", np.array(term_fill(term), dtype=np.float32))
            zero = rw.const(f"{base}_zero", np.array(0.0, dtype=np.float32))
            ins = [term.value, zero, fill] if term.keep_if else [term.value, fill, zero]
            part = rw.op("Where", ins, name=f"{base}_mask_bias")
        else:
            part = term.value
            if term.factor != 1.0:
                factor = rw.const(f"{base}_bias_factor", np.array(term.factor, dtype=part.dtype.np))
                part = rw.op("Mul", [part, factor], name=f"{base}_bias_scaled")
            if term.reshape is not None:  # [B*N, S, T] -> [B, N, S, T]: -1, N and the term's last two dims
                dims = rw.op("Shape", [part], {"start": -2}, name=f"{base}_bias_dims")
                lead = rw.const(f"{base}_bias_lead", np.array([-1, cand.num_heads], dtype=np.int64))
                shape = rw.op("Concat", [lead, dims], {"axis": 0}, name=f"{base}_bias_shape")
                part = rw.op("Reshape", [part, shape], name=f"{base}_bias_per_head")
        acc = part if acc is None else rw.op("Add", [acc, part], name=f"{base}_bias_sum")
    return acc


def _ordered(graph: Graph, nodes: list[Node]) -> list[Node]:
    ids = {id(n) for n in nodes}
    return [n for n in graph.nodes if id(n) in ids]


@register_pass
class FuseAttention(RulePass):
    """Fuse attention blocks (and SDPA) into Attention with packed QKV weights or MultiHeadAttention."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return [AttentionRule()]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        rule = AttentionRule()
        outcome = apply_rules(graph, [rule], pass_name=self.name)
        notes = list(rule.notes)
        if rule.forms:
            notes.insert(0, "fused: " + ", ".join(f"{v} {k}" for k, v in sorted(rule.forms.items())))
        return PassResult(graph, outcome.modified, stats=outcome.stats, near_misses=outcome.near_misses, notes=notes)


def _describe_form(op: str, mask: bool, bias: bool, causal: bool) -> str:
    """How a fused block is reported: the op, then causal / key-padding mask / bias."""
    parts = (["causal"] if causal else []) + (["key-padding mask"] if mask else []) + (["bias"] if bias else [])
    return op + (f" ({', '.join(parts)})" if parts else " (no mask)")
