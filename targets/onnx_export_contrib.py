"""ONNX exporters of the fused ops: onnxruntime's com.microsoft contrib ops, or standard ops.

The ONNX writer imports this module on first use (its name starts with
``onnx_export``). Mappings:

1. ``Attention`` and ``MultiHeadAttention``: see ``onnx_export_attention``.
2. ``SkipLayerNorm`` -> ``com.microsoft.SkipLayerNormalization`` (the optional
   sum output is output 3, ``input_skip_bias_sum``) for 3-D inputs with 1-D
   gamma/beta/bias; otherwise ``Add`` (+ bias) and ``LayerNormalization``.
3. ``LayerNorm`` -> ``LayerNormalization`` (opset 17).
4. ``Linear`` -> ``MatMul`` then, by activation: none ``Add(bias)``; gelu
   ``com.microsoft.BiasGelu`` (``Gelu`` without bias); gelu_tanh
   ``com.microsoft.FastGelu(x, bias)``; gelu_sigmoid ``Add`` +
   ``com.microsoft.QuickGelu{alpha=1.702}``; relu ``Add`` + ``Relu``.
5. ``QuickGelu`` -> ``com.microsoft.QuickGelu{alpha}``.
6. ``EmbedLayerNorm`` -> ``com.microsoft.EmbedLayerNormalization`` with int32
   ids (cast when needed), a zero beta when the op has none, the explicit
   ``position_ids`` as input 8; the required ``mask_index`` output gets a
   fresh unused name and the embedding sum is output 2.
7. ``PackedLinear`` -> as ``Linear``, its packed weight unpacked by
   ``Transpose``/``Reshape``/``Slice`` nodes that onnxruntime folds at load
   time (the file keeps one copy of the weight, in the packed layout).
8. ``ConvNHWC`` -> ``Transpose`` to channels first, ``Conv`` (the weight
   transposed to OIHW by a ``Transpose`` that onnxruntime folds), ``Transpose`` back.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node, Value
from accelopt.targets.onnx_writer import ExportContext, NodeEmitter, register_exporter

MS = "com.microsoft"


class ContribEmitter(NodeEmitter):
    """``NodeEmitter`` plus int32 casts shared across nodes."""

    def int32(self, v: Value | None, hint: str) -> str:
        """``v`` as int32: a Cast unless it already is, made once per value and reused by later nodes."""
        if v is None:
            return ""
        name = self.ctx.name(v)
        if v.dtype == DType.INT32:
            return name
        cache: dict[str, str] = self.ctx.__dict__.setdefault("_contrib_int32", {})
        if name not in cache:
            cache[name] = self("Cast", [name], f"{hint}_int32", to=DType.INT32)
        return cache[name]


def _const(node: Node, i: int) -> np.ndarray | None:
    v = node.inputs[i] if i < len(node.inputs) else None
    return None if v is None or node.graph is None else node.graph.const_value(v)


def _is_vector(v: Value | None) -> bool:
    return v is None or (v.shape is not None and len(v.shape) == 1)


# ------------------------------------------------------------------ case 2
@register_exporter("SkipLayerNorm")
def export_skiplayernorm(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    x, skip, gamma = node.inputs[0], node.inputs[1], node.inputs[2]
    beta = node.inputs[3] if len(node.inputs) > 3 else None
    bias = node.inputs[4] if len(node.inputs) > 4 else None
    assert x is not None and skip is not None and gamma is not None
    eps = float(node.attr("epsilon", 1e-5))
    outs = [ctx.name(v) for v in node.outputs]
    contrib = (
        x.type.rank == 3
        and skip.type.rank == 3
        and all(_is_vector(v) for v in (gamma, beta, bias))
    )
    if contrib:
        onames = [outs[0], "", "", outs[1]] if len(outs) > 1 else [outs[0]]
        ins = [ctx.name(x), ctx.name(skip), ctx.name(gamma), ctx.name(beta), ctx.name(bias)]
        while ins and ins[-1] == "":
            ins.pop()
        emit("SkipLayerNormalization", ins, "sln", outputs=onames, domain=MS, epsilon=eps)
        return emit.made
    ctx.require_opset(17, "LayerNormalization")
    total = emit("Add", [ctx.name(x), ctx.name(skip)], "sum", outputs=[outs[1]] if bias is None and len(outs) > 1 else None)
    if bias is not None:
        total = emit("Add", [total, ctx.name(bias)], "sum_bias", outputs=[outs[1]] if len(outs) > 1 else None)
    ln_ins = [total, ctx.name(gamma)] + ([ctx.name(beta)] if beta is not None else [])
    emit("LayerNormalization", ln_ins, "ln", outputs=[outs[0]], axis=-1, epsilon=eps)
    return emit.made


# ------------------------------------------------------------------ case 3
@register_exporter("LayerNorm")
def export_layernorm(ctx: ExportContext, node: Node) -> list[NodeProto]:
    ctx.require_opset(17, "LayerNormalization")
    emit = ContribEmitter(ctx, node)
    ins = [ctx.name(v) for v in node.inputs]
    while ins and ins[-1] == "":
        ins.pop()
    emit(
        "LayerNormalization",
        ins,
        "ln",
        outputs=[ctx.name(node.outputs[0])],
        axis=int(node.attr("axis", -1)),
        epsilon=float(node.attr("epsilon", 1e-5)),
    )
    return emit.made


# ------------------------------------------------------------------ case 4
@register_exporter("Linear")
def export_linear(ctx: ExportContext, node: Node) -> list[NodeProto]:
    w = node.inputs[1]
    assert w is not None
    return _linear_nodes(ctx, node, ctx.name(w))


def _linear_nodes(ctx: ExportContext, node: Node, weight: str) -> list[NodeProto]:
    """MatMul by ``weight`` then the bias and activation of a Linear-like node (case 4)."""
    emit = ContribEmitter(ctx, node)
    x = node.inputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    assert x is not None
    out = ctx.name(node.outputs[0])
    act = str(node.attr("activation", "none"))
    if act == "none" and b is None:
        emit("MatMul", [ctx.name(x), weight], "matmul", outputs=[out])
        return emit.made
    mm = emit("MatMul", [ctx.name(x), weight], "matmul")
    bias = ctx.name(b) if b is not None else ""
    if act == "none":
        emit("Add", [mm, bias], "bias", outputs=[out])
    elif act == "gelu":
        if b is not None:
            emit("BiasGelu", [mm, bias], "bias_gelu", outputs=[out], domain=MS)
        else:
            emit("Gelu", [mm], "gelu", outputs=[out], domain=MS)
    elif act == "gelu_tanh":
        emit("FastGelu", [mm] + ([bias] if b is not None else []), "fast_gelu", outputs=[out], domain=MS)
    elif act in ("gelu_sigmoid", "relu"):
        y = emit("Add", [mm, bias], "bias") if b is not None else mm
        if act == "relu":
            emit("Relu", [y], "relu", outputs=[out])
        else:
            emit("QuickGelu", [y], "quick_gelu", outputs=[out], domain=MS, alpha=1.702)
    else:
        raise TargetError(f"node {node.name} ({node.op}): unknown activation {act!r}")
    return emit.made


# ------------------------------------------------------------------ case 7
@register_exporter("PackedLinear")
def export_packed_linear(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    w = node.inputs[1]
    assert w is not None
    k, n = int(node.attrs["k"]), int(node.attrs["n"])
    transposed = bool(node.attr("transposed", 0))
    tile = [int(t) for t in node.attr("tile", ()) or ()]
    name = ctx.name(w)
    if tile:  # blocks [B0, B1, t0, t1] -> [B0*t0, B1*t1] -> the unpadded corner
        if w.shape is None or not all(isinstance(d, int) for d in w.shape):
            raise TargetError(f"node {node.name} (PackedLinear): the packed weight shape is unknown")
        b0, b1, t0, t1 = w.shape
        rows, cols = (n, k) if transposed else (k, n)
        blocks = emit("Transpose", [name], "unblock", perm=[0, 2, 1, 3])
        shape = ctx.add_initializer(np.array([b0 * t0, b1 * t1], np.int64), f"{node.name}_shape")
        flat = emit("Reshape", [blocks, shape], "flat")
        starts = ctx.add_initializer(np.array([0, 0], np.int64), f"{node.name}_starts")
        ends = ctx.add_initializer(np.array([rows, cols], np.int64), f"{node.name}_ends")
        name = emit("Slice", [flat, starts, ends], "unpad")
    if transposed:
        name = emit("Transpose", [name], "untranspose", perm=[1, 0])
    return emit.made + _linear_nodes(ctx, node, name)


# ------------------------------------------------------------------ case 8
@register_exporter("ConvNHWC")
def export_conv_nhwc(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    x, w = node.inputs[0], node.inputs[1]
    assert x is not None and w is not None and x.shape is not None and w.shape is not None
    sp = len(x.shape) - 2
    wname = emit("Transpose", [ctx.name(w)], "w_oihw", perm=[sp + 1, sp, *range(sp)])  # folded by onnxruntime
    xc = emit("Transpose", [ctx.name(x)], "x_nchw", perm=[0, sp + 1, *range(1, sp + 1)])
    ins = [xc, wname] + ([ctx.name(node.inputs[2])] if len(node.inputs) > 2 and node.inputs[2] is not None else [])
    attrs = {k: v for k, v in node.attrs.items() if v not in (None, ())}
    y = emit("Conv", ins, "conv", **attrs)
    emit("Transpose", [y], "y_nhwc", outputs=[ctx.name(node.outputs[0])], perm=[0, *range(2, sp + 2), 1])
    return emit.made


# ------------------------------------------------------------------ case 5
@register_exporter("QuickGelu")
def export_quickgelu(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    emit(
        "QuickGelu",
        [ctx.name(node.inputs[0])],
        "quick_gelu",
        outputs=[ctx.name(node.outputs[0])],
        domain=MS,
        alpha=float(node.attr("alpha", 1.702)),
    )
    return emit.made


# ------------------------------------------------------------------ case 6
@register_exporter("EmbedLayerNorm")
def export_embedlayernorm(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    ids, types, word, pos, temb, gamma, beta = (node.inputs + (None,) * 8)[:7]
    pos_ids = node.inputs[7] if len(node.inputs) > 7 else None
    assert ids is not None and word is not None and pos is not None and gamma is not None
    if beta is None:
        if gamma.shape is None or not all(isinstance(d, int) for d in gamma.shape):
            raise TargetError(f"node {node.name} (EmbedLayerNorm): no beta and the gamma shape is unknown")
        beta_name = ctx.add_initializer(np.zeros(gamma.shape, dtype=gamma.dtype.np), f"{node.name}_zero_beta")
    else:
        beta_name = ctx.name(beta)
    ins = [
        emit.int32(ids, "input_ids"),
        emit.int32(types, "token_type_ids"),
        ctx.name(word),
        ctx.name(pos),
        ctx.name(temb),
        ctx.name(gamma),
        beta_name,
        "",
        emit.int32(pos_ids, "position_ids"),
    ]
    while ins and ins[-1] == "":
        ins.pop()
    outs = [ctx.name(node.outputs[0]), ctx.fresh(f"{node.name}_mask_index")]
    if len(node.outputs) > 1:
        outs.append(ctx.name(node.outputs[1]))
    emit(
        "EmbedLayerNormalization",
        ins,
        "embed_ln",
        outputs=outs,
        domain=MS,
        epsilon=float(node.attr("epsilon", 1e-12)),
    )
    return emit.made
