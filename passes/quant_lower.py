"""``lower-quantized``: QDQ patterns -> integer ops (``QLinear``, ``QAttention``) for targets that run integers.

Rewrites (cases):

1. ``Linear(DQ(x_q, x_s, x_zp), DQ(W_q, w_s, w_zp?), b?){act}`` ->
   ``QLinear(x_q, x_s, x_zp, W_q, w_s, w_zp, b){act}``;
2. ``MatMul(DQ(x_q, ...), DQ(W_q, ...))`` -> ``QLinear`` without bias;
3. ``Attention(DQ(x_q, ...), DQ(W_q, ...), b, mask?, attention_bias?)`` ->
   ``QAttention(x_q, x_s, x_zp, W_q, w_s, w_zp, b, mask, attention_bias)``
   (attributes, ``unidirectional`` included, kept);
4. requantization: a ``QLinear`` whose float result feeds only one
   ``QuantizeLinear`` per tensor, or per channel of its last axis (the
   int8 pass's ``scales=power2`` outputs), takes that quantizer's scale and
   zero point and produces the integers itself (static chains such as
   FFN1 -> FFN2).

A DQ of the activation qualifies when its data is int8/uint8 and its scale is
per tensor or per row (``block_size`` equal to K on the last axis, scale
``[..., 1]``); a DQ of the weight when its data is a constant 2-D int8
tensor with a per-tensor or per-column (``axis=1``) scale. DQ nodes left
unused are removed.

When to lower (``when``): ``auto`` (default) lowers unless the target
declares the ops it runs (``native_ops``) and ``QLinear`` is not among them
(a target such as the TPU reads the QDQ form itself); ``always``; ``never``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.ir.registry import get_op
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass

log = logging.getLogger(__name__)

PASS_NAME = "lower-quantized"
_QTYPES = (DType.INT8, DType.UINT8)


@dataclass(frozen=True)
class LowerOptions:
    when: str = "auto"

    def __post_init__(self) -> None:
        if self.when not in ("auto", "always", "never"):
            raise ValueError(f"option when={self.when!r}: expected auto, always or never")


@dataclass
class _Dq:
    q: Value
    scale: Value
    zp: Value | None


def _attrs(node: Node) -> dict[str, Any]:
    return get_op(node.op).full_attrs(node.attrs)


def activation_dq(v: Value | None, k: int | None) -> _Dq | str:
    """The quantized source of an activation operand, or why it is not one."""
    if v is None or v.producer is None or v.producer.op != "DequantizeLinear":
        return "the activation is not dequantized"
    dq = v.producer
    q, scale = dq.inputs[0], dq.inputs[1]
    zp = dq.inputs[2] if len(dq.inputs) > 2 else None
    if q is None or scale is None or q.dtype not in _QTYPES:
        return "the activation's integers are not int8/uint8"
    a = _attrs(dq)
    if a.get("output_dtype") not in (0, DType.FLOAT32.onnx):
        return "the activation dequantizes to a type other than float32"
    if scale.dtype != DType.FLOAT32:
        return "the activation scale is not float32"
    if scale.shape is not None and all(d == 1 for d in scale.shape if isinstance(d, int)) and not a["block_size"]:
        if any(not isinstance(d, int) for d in scale.shape):
            return "the activation scale has a symbolic shape"
        return _Dq(q, scale, zp)
    rank = q.type.rank
    if (
        a["block_size"]
        and rank
        and a["axis"] % rank == rank - 1
        and isinstance(k, int)
        and a["block_size"] == k
        and scale.shape is not None
        and len(scale.shape) == rank
        and scale.shape[-1] == 1
    ):
        return _Dq(q, scale, zp)
    return "the activation scale is neither per tensor nor per row"


def weight_dq(graph: Graph, v: Value | None) -> tuple[_Dq, int, int] | str:
    """The int8 weight behind ``v`` (``(dq, K, N)``), or why it is not one."""
    if v is None or v.producer is None or v.producer.op != "DequantizeLinear":
        return "the weight is not dequantized"
    dq = v.producer
    q, scale = dq.inputs[0], dq.inputs[1]
    zp = dq.inputs[2] if len(dq.inputs) > 2 else None
    data = graph.const_value(q)
    if data is None or data.ndim != 2 or data.dtype != np.int8:
        return "the weight is not a constant 2-D int8 tensor"
    s = graph.const_value(scale)
    if s is None or s.dtype != np.float32:
        return "the weight scale is not a float32 constant"
    a = _attrs(dq)
    if a["block_size"] or a.get("output_dtype") not in (0, DType.FLOAT32.onnx):
        return "the weight is blocked or dequantizes to another type"
    k, n = data.shape
    if s.size != 1 and not (s.ndim == 1 and s.size == n and a["axis"] % 2 == 1):
        return "the weight scale is neither per tensor nor per output column"
    if zp is not None:
        z = graph.const_value(zp)
        if z is None or (z.size != 1 and z.size != n):
            return "the weight zero point is not a matching constant"
    assert q is not None and scale is not None  # const_value found data behind both
    return _Dq(q, scale, zp), int(k), int(n)


@register_pass
class LowerQuantized(Pass):
    """QDQ form -> integer ops QLinear / QAttention (exact int32 accumulation) for targets that run them."""

    name: ClassVar[str] = PASS_NAME
    family: ClassVar[str] = "quantization"
    Options: ClassVar[type] = LowerOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        when = self.options.when
        native = frozenset(getattr(ctx.target, "native_ops", None) or ())
        if when == "never" or (when == "auto" and native and "QLinear" not in native):
            why = "when=never" if when == "never" else f"target {getattr(ctx.target, 'name', '?')} runs the QDQ form"
            return PassResult(graph, False, notes=[f"not lowered: {why}"])
        counts: Counter[str] = Counter()
        misses: list[str] = []
        for node in list(graph.nodes):
            if node.op not in ("Linear", "MatMul", "Attention") or node.graph is None:
                continue
            made = self._lower(graph, node, misses)
            if made:
                counts[made] += 1
        for node in list(graph.nodes):
            if node.op == "QLinear" and self._requantize(graph, node):
                counts["requantize"] += 1
        if not counts:
            return PassResult(graph, False, stats=_stats(counts, 0), near_misses=misses[:20])
        removed = _remove_dead_dq(graph)
        graph.toposort()
        notes = [
            "integer ops: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + f"; {removed} DequantizeLinear node(s) folded"
        ]
        return PassResult(graph, True, stats=_stats(counts, len(misses)), near_misses=misses[:20], notes=notes)

    # ------------------------------------------------------------ cases 1-3
    def _lower(self, graph: Graph, node: Node, misses: list[str]) -> str:
        wres = weight_dq(graph, node.inputs[1] if len(node.inputs) > 1 else None)
        if isinstance(wres, str):
            if node.inputs[1] is not None and node.inputs[1].producer is not None:
                if node.inputs[1].producer.op == "DequantizeLinear":
                    misses.append(f"{node.name} ({node.op}): {wres}")
            return ""
        w, k, _n = wres
        xres = activation_dq(node.inputs[0], k)
        if isinstance(xres, str):
            misses.append(f"{node.name} ({node.op}): {xres}")
            return ""
        if node.op == "MatMul" and (node.inputs[0] is None or node.inputs[0].type.rank is None):
            misses.append(f"{node.name} (MatMul): the activation has unknown rank")
            return ""
        prov = Provenance(self.name, node.op.lower(), (node.name,))
        qparams: list[Value | None] = [xres.q, xres.scale, xres.zp, w.q, w.scale, w.zp]
        out = node.outputs[0]
        if node.op == "Attention":
            bias, mask, attention_bias = (node.inputs[i] if len(node.inputs) > i else None for i in (2, 3, 4))
            ins = qparams + [bias, mask, attention_bias]
            while ins[-1] is None:
                ins.pop()
            attrs = dict(node.attrs)
            new = graph.add_node("QAttention", ins, attrs, name=node.name, before=node, provenance=prov)
        else:
            bias = node.inputs[2] if node.op == "Linear" and len(node.inputs) > 2 else None
            ins = qparams + ([bias] if bias is not None else [])
            attrs = {"activation": node.attr("activation", "none")} if node.op == "Linear" else {}
            new = graph.add_node("QLinear", ins, attrs, name=node.name, before=node, provenance=prov)
        _swap(graph, node, new, out)
        return new.op

    # --------------------------------------------------------------- case 4
    @staticmethod
    def _requantize(graph: Graph, node: Node) -> bool:
        out = node.outputs[0]
        if len(node.inputs) > 7 or out in graph.outputs or len(out.uses) != 1:
            return False
        q, idx = out.uses[0]
        if q.op != "QuantizeLinear" or idx != 0:
            return False
        a = _attrs(q)
        scale = q.inputs[1]
        zp = q.inputs[2] if len(q.inputs) > 2 else None
        s = graph.const_value(scale)
        if s is None or a["block_size"] or a["output_dtype"] not in (0,):
            return False
        rank = out.type.rank
        n = out.shape[-1] if out.shape else None
        per_channel = s.ndim == 1 and s.size == n and rank is not None and a["axis"] % rank == rank - 1
        if s.size != 1 and not per_channel:
            return False
        z = graph.const_value(zp) if zp is not None else None
        if zp is None or zp.dtype not in _QTYPES or z is None or z.size not in (1, s.size):
            return False
        ins = list(node.inputs) + [None] * (7 - len(node.inputs)) + [scale, zp]
        prov = Provenance(PASS_NAME, "requantize", (node.name, q.name))
        new = graph.add_node("QLinear", ins, dict(node.attrs), name=node.name + "_rq", before=node, provenance=prov)
        qout, name = q.outputs[0], node.name
        qname = qout.name
        qout.replace_all_uses_with(new.outputs[0])
        graph.remove_node(q)
        graph.remove_node(node)
        graph.rename_value(new.outputs[0], qname)
        graph.rename_node(new, name)
        return True


def _swap(graph: Graph, old: Node, new: Node, out: Value) -> None:
    """Point ``old``'s users at ``new``; ``new`` takes ``old``'s node name and output name."""
    name, node_name = out.name, old.name
    out.replace_all_uses_with(new.outputs[0])
    graph.remove_node(old)
    graph.rename_value(new.outputs[0], name)
    graph.rename_node(new, node_name)


def _remove_dead_dq(graph: Graph) -> int:
    removed = 0
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op not in ("DequantizeLinear", "DynamicQuantize", "DynamicQuantizeLinear", "QuantizeLinear"):
                continue
            if any(v.uses or v in graph.outputs for v in node.outputs):
                continue
            graph.remove_node(node)
            removed += node.op == "DequantizeLinear"
            changed = True
    for name, v in list(graph.initializers.items()):
        if not v.uses and v not in graph.outputs:
            graph.remove_initializer(name)
    return removed


def _stats(counts: Counter[str], misses: int) -> dict[str, Any]:
    return {
        "lower-linear": {"matched": counts.get("QLinear", 0), "near_misses": misses},
        "lower-attention": {"matched": counts.get("QAttention", 0)},
        "requantize": {"matched": counts.get("requantize", 0)},
    }


__all__ = ["LowerOptions", "LowerQuantized", "activation_dq", "weight_dq"]
