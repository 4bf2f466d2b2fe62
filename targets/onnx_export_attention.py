"""ONNX exporters of the attention ops and ``RMSNorm``: onnxruntime contrib ops and opset 23.

The ONNX writer imports this module on first use (its name starts with
``onnx_export``). Mappings:

1. ``Attention`` -> ``com.microsoft.Attention(input, weights, bias,
   mask_index, "", attention_bias)`` with ``num_heads``, ``scale`` (omitted
   when 0: onnxruntime then uses 1/sqrt(head_size), as the op does),
   ``mask_filter_value`` and ``unidirectional``. A missing bias becomes zeros.
2. ``MultiHeadAttention`` -> ``com.microsoft.MultiHeadAttention(query, key,
   value, "", key_padding_mask, attention_bias)`` with the same attributes
   (onnxruntime's op takes separate Q/K/V, a ``[batch, keys]`` padding mask,
   an additive bias and ``unidirectional``: every form accelopt fuses).
3. Masks: an int64, bool or float key-padding mask is cast to int32 (the raw
   ``[batch, seq]`` mask form), once for all the layers that share it.
4. ``attention_bias``: onnxruntime wants it 4-D with the full query and key
   lengths, ``[B|1, N|1, S, T]``; the op broadcasts any shape of rank <= 4.
   A lower rank gets leading axes (``Unsqueeze``), and a bias whose last two
   dims are not known to be S and T is broadcast to them (``Expand`` to
   ``[1, 1, S, T]`` with S and T read from the query and key inputs).
5. ``RMSNorm`` -> ``RMSNormalization`` (ONNX opset 23; the writer moves the
   model to opset 23 when a graph has one).
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto

from accelopt.errors import TargetError
from accelopt.ir.graph import Node, Value
from accelopt.targets.onnx_export_contrib import MS, ContribEmitter
from accelopt.targets.onnx_writer import ExportContext, register_exporter

#: the opset of ONNX's RMSNormalization
RMS_OPSET = 23


def _opt(node: Node, i: int) -> Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _attrs(node: Node) -> dict[str, object]:
    """Case 1/2 attributes: defaults (0 scale, no causal flag, no mask) left out."""
    scale = float(node.attr("scale", 0.0))
    masked = _opt(node, 3) is not None or int(node.attr("unidirectional", 0))
    return {
        "num_heads": int(node.attrs["num_heads"]),
        "scale": scale if scale else None,
        "mask_filter_value": float(node.attr("mask_filter_value", -10000.0)) if masked else None,
        "unidirectional": 1 if int(node.attr("unidirectional", 0)) else None,
    }


def attention_bias(emit: ContribEmitter, bias: Value | None, query: Value, key: Value) -> str:
    """Case 4: the bias as onnxruntime takes it ("" when there is none)."""
    if bias is None:
        return ""
    ctx = emit.ctx
    name = ctx.name(bias)
    shape = bias.shape
    if shape is None:
        raise TargetError(f"node {emit.node.name} ({emit.node.op}): attention_bias %{bias.name} has unknown rank")
    if len(shape) < 4:
        axes = emit.const(list(range(4 - len(shape))), "bias_axes", np.int64)
        name = emit("Unsqueeze", [name, axes], "bias_4d")
        shape = (1,) * (4 - len(shape)) + tuple(shape)
    seq = query.shape[1] if query.shape is not None and len(query.shape) > 1 else None
    keys = key.shape[1] if key.shape is not None and len(key.shape) > 1 else None
    if seq is not None and shape[-2] == seq and keys is not None and shape[-1] == keys:
        return name
    s = emit("Shape", [ctx.name(query)], "bias_queries", start=1, end=2)
    t = emit("Shape", [ctx.name(key)], "bias_keys", start=1, end=2)
    full = emit("Concat", [emit.const([1, 1], "bias_ones", np.int64), s, t], "bias_shape", axis=0)
    return emit("Expand", [name, full], "bias_full")


# ------------------------------------------------------------------ case 1
@register_exporter("Attention")
def export_attention(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    x, w, b = node.inputs[0], node.inputs[1], _opt(node, 2)
    assert x is not None and w is not None
    if b is None:
        if w.shape is None or not isinstance(w.shape[1], int):
            raise TargetError(f"node {node.name} (Attention): bias is absent and the weight width is unknown")
        bias = ctx.add_initializer(np.zeros(w.shape[1], dtype=w.dtype.np), f"{node.name}_zero_bias")
    else:
        bias = ctx.name(b)
    mask = emit.int32(_opt(node, 3), "mask")
    ab = attention_bias(emit, _opt(node, 4), x, x)
    ins = [ctx.name(x), ctx.name(w), bias, mask, "", ab]
    emit("Attention", ins, "attention", outputs=[ctx.name(node.outputs[0])], domain=MS, **_attrs(node))
    return emit.made


# ------------------------------------------------------------------ case 2
@register_exporter("MultiHeadAttention")
def export_multi_head_attention(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    assert q is not None and k is not None and v is not None
    mask = emit.int32(_opt(node, 3), "mask")
    ab = attention_bias(emit, _opt(node, 4), q, k)
    ins = [ctx.name(q), ctx.name(k), ctx.name(v), "", mask, ab]
    emit("MultiHeadAttention", ins, "mha", outputs=[ctx.name(node.outputs[0])], domain=MS, **_attrs(node))
    return emit.made


# ------------------------------------------------------------------ case 5
@register_exporter("RMSNorm")
def export_rmsnorm(ctx: ExportContext, node: Node) -> list[NodeProto]:
    ctx.require_opset(RMS_OPSET, "RMSNormalization")
    emit = ContribEmitter(ctx, node)
    emit(
        "RMSNormalization",
        [ctx.name(node.inputs[0]), ctx.name(node.inputs[1])],
        "rms",
        outputs=[ctx.name(node.outputs[0])],
        axis=int(node.attr("axis", -1)),
        epsilon=float(node.attr("epsilon", 1e-5)),
    )
    return emit.made


__all__ = ["attention_bias", "export_attention", "export_multi_head_attention", "export_rmsnorm"]
