"""ONNX exporters of the quantized ops, chosen for what onnxruntime runs fast.

The ONNX writer imports this module on first use (its name starts with
``onnx_export``). onnxruntime's fast integer GEMM multiplies uint8
activations by int8 weights (``com.microsoft.MatMulIntegerToFloat``, whose
``a_scale`` may be per row and which applies the scales and the bias in its
epilogue); the int8 pass gives targets like this uint8 activations. Mappings:

1. ``DynamicQuantize`` -> standard ops computing exactly its ``(y, scale,
   zero_point)``: ``ReduceMax``/``ReduceMin`` (per row: over the last axis,
   kept), the scale ``max(range / 255, 2**-126)`` (``/ 127`` symmetric), the
   zero point ``Round(qmin - lo / scale)`` (the op's clip cannot change it:
   the value already lies in [qmin, qmax]) and one ``QuantizeLinear`` (per
   row: blocked, ``axis=-1, block_size=K``, opset 21).
2. ``QLinear``, by what its activation input is:

   a. uint8 with one scale and zero point (``DynamicQuantizeLinear``, a
      static ``QuantizeLinear``) -> ``MatMulIntegerToFloat(x_q, W, x_scale,
      w_scale, x_zp, w_zp, bias)``;
   b. uint8 per row with one zero point (symmetric, 128) ->
      ``MatMulIntegerToFloat(x_q, W, row_scale, w_scale, 128, w_zp)``;
   c. uint8 per row with per-row zero points (asymmetric) -> case b without
      the zero point, minus ``zp_row * row_scale * colsum(W - w_zp) *
      w_scale`` (onnxruntime takes one activation zero point only);
   d. int8 from a static ``QuantizeLinear`` -> that quantizer written again
      for uint8 (zero point + 128: the same integers shifted), then case a;
   e. other int8 data -> ``MatMulInteger`` (exact, slower in onnxruntime),
      ``Cast``, the zero-point term of case c when per row, and the scales.

   The bias and activation follow (``BiasGelu``, ``FastGelu``, ``Gelu``,
   ``QuickGelu``, ``Relu``, ``Add``) unless case a took the bias; with
   ``y_scale`` the result is requantized by ``QuantizeLinear``.
3. ``QAttention``: a uint8 per-tensor input with a symmetric weight and no
   ``attention_bias`` -> ``com.microsoft.QAttention(x_q, W, bias, x_scale,
   w_scale, mask_index, x_zp)``; otherwise the QKV projection as in 2,
   ``Split`` and ``com.microsoft.MultiHeadAttention(q, k, v, bias,
   key_padding_mask, attention_bias)``; ``unidirectional`` is kept either way.

The integers onnxruntime multiplies are the interpreter's, so a single layer
agrees to float rounding; through several layers dynamic quantization turns
those rounding differences into occasional different integers (a fresh draw
of the same quantization error), which is why the int8 pass's fallback keeps
headroom. u8 x s8 GEMMs are exact on CPUs with AVX-512 VNNI or AVX-VNNI;
onnxruntime's AVX2 kernel can saturate int16 pair sums (its documented
``reduce_range`` caveat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import NodeProto

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.ops.quantized import ZERO_RANGE_SCALE
from accelopt.ir.registry import get_op
from accelopt.targets.onnx_export_attention import attention_bias
from accelopt.targets.onnx_export_contrib import ContribEmitter
from accelopt.targets.onnx_writer import ExportContext, NodeEmitter, register_exporter

MS = "com.microsoft"


def _float_zero_points(ctx: ExportContext) -> dict[str, str]:
    """Per written model: ONNX name of a zero point -> its float form, when an exporter computed one."""
    cache = getattr(ctx, "_accelopt_float_zero_points", None)
    if cache is None:
        cache = {}
        setattr(ctx, "_accelopt_float_zero_points", cache)  # noqa: B010 - ExportContext has no field for exporter state
    return cache


def _attrs(node: Node) -> dict[str, Any]:
    return get_op(node.op).full_attrs(node.attrs)


def _const(graph: Graph | None, v: Value | None) -> np.ndarray | None:
    return None if v is None or graph is None else graph.const_value(v)


def _opt(node: Node, i: int) -> Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


# ------------------------------------------------------------------ case 1
def _reduce(emit: NodeEmitter, op: str, x: str, per_row: bool, hint: str) -> str:
    if per_row:
        return emit(op, [x, emit.const([-1], f"{hint}_axes", np.int64)], hint, keepdims=1)
    return emit(op, [x], hint, keepdims=0)


@register_exporter("DynamicQuantize")
def export_dynamic_quantize(ctx: ExportContext, node: Node) -> list[NodeProto]:
    """Case 1: standard ops computing ``(y, scale, zero_point)`` exactly as the op defines them."""
    emit = NodeEmitter(ctx, node)
    a = _attrs(node)
    to: DType = a["to"]
    symmetric, per_row = bool(a["symmetric"]), a["granularity"] == "row"
    x_v = node.inputs[0]
    assert x_v is not None
    x = ctx.name(x_v)
    if x_v.dtype != DType.FLOAT32:
        x = emit("Cast", [x], "x_float", to=DType.FLOAT32)
    outs = [ctx.name(v) for v in node.outputs] + ["", ""]
    if symmetric:
        amax = _reduce(emit, "ReduceMax", emit("Abs", [x], "abs"), per_row, "absmax")
        raw = emit("Div", [amax, emit.const(127.0, "c127")], "scale_raw")
    else:
        zero = emit.const(0.0, "zero")
        hi = emit("Max", [_reduce(emit, "ReduceMax", x, per_row, "max"), zero], "hi")
        lo = emit("Min", [_reduce(emit, "ReduceMin", x, per_row, "min"), zero], "lo")
        raw = emit("Div", [emit("Sub", [hi, lo], "range"), emit.const(255.0, "c255")], "scale_raw")
    tiny = emit.const(ZERO_RANGE_SCALE, "zero_range_scale")
    scale = emit("Max", [raw, tiny], "scale", outputs=[outs[1]] if outs[1] else None)
    if symmetric:
        zp_const = emit.const(128 if to == DType.UINT8 else 0, "zp_value", to.np)
        zp = emit(
            "Expand",
            [zp_const, emit("Shape", [scale], "scale_shape")],
            "zero_point",
            outputs=[outs[2]] if outs[2] else None,
        )
    else:
        # qmin - lo / scale lies in [qmin, qmax] up to rounding (lo <= 0 <= hi, scale = (hi - lo) / 255), so the
        # op's clip changes nothing after Round and is left out
        lo_scaled = emit("Div", [lo, scale], "lo_scaled")
        if to == DType.UINT8:
            raw_zp = emit("Neg", [lo_scaled], "zp_raw")
        else:
            raw_zp = emit("Sub", [emit.const(-128.0, "qmin"), lo_scaled], "zp_raw")
        zpf = emit("Round", [raw_zp], "zp_float")
        zp = emit("Cast", [zpf], "zero_point", to=to, outputs=[outs[2]] if outs[2] else None)
        _float_zero_points(ctx)[zp] = zpf  # QLinear's zero-point term reads the float form
    attrs: dict[str, Any] = {}
    rank = x_v.type.rank
    if per_row:
        k = x_v.shape[-1] if x_v.shape else None
        if not isinstance(k, int) or not rank:
            raise TargetError(f"node {node.name} (DynamicQuantize): per-row quantization needs a static last dimension")
        ctx.require_opset(21, "blocked QuantizeLinear (per-row scales)")
        attrs = {"axis": rank - 1, "block_size": int(k)}
    if symmetric and to == DType.INT8:
        # QuantizeLinear saturates to [-128, 127]; the symmetric range is [-127, 127]
        q = emit("QuantizeLinear", [x, scale, zp], "q_full", **attrs)
        lo_c = emit.const(-127, "q_lo", np.int8)
        emit("Max", [q, lo_c], "y", outputs=[outs[0]])
    else:
        emit("QuantizeLinear", [x, scale, zp], "y", outputs=[outs[0]], **attrs)
    return emit.made


# ------------------------------------------------------------------ case 2
@dataclass
class _Source:
    """A quantized input of QLinear/QAttention: integers, scale, zero point and what is known of them."""

    q: str
    scale: str
    zp: str  # "" when absent
    q_dtype: DType
    per_row: bool
    zp_const: int | None  # the zero point when it is one known constant (None: varies per row / unknown)
    x_float: str = ""  # the float input of a per-tensor DynamicQuantizeLinear


def _source(ctx: ExportContext, node: Node) -> _Source:
    q, scale, zp = node.inputs[0], node.inputs[1], _opt(node, 2)
    assert q is not None and scale is not None
    per_row = scale.shape is not None and len(scale.shape) > 0 and any(d != 1 for d in scale.shape)
    zp_const: int | None = 0 if zp is None else None
    prod = q.producer
    if zp is not None:
        z = _const(node.graph, zp)
        if z is not None and z.size >= 1 and np.all(z == np.asarray(z).reshape(-1)[0]):
            zp_const = int(np.asarray(z).reshape(-1)[0])
        elif prod is not None and prod.op == "DynamicQuantize" and _attrs(prod)["symmetric"]:
            zp_const = 128 if _attrs(prod)["to"] == DType.UINT8 else 0
    x_float = ""
    if prod is not None and prod.op == "QuantizeLinear" and prod.inputs[0] is not None and not per_row:
        pa = _attrs(prod)
        if prod.inputs[0].dtype == DType.FLOAT32 and not pa["block_size"] and zp_const is not None:
            x_float = ctx.name(prod.inputs[0])  # static: the same quantizer can be written for uint8
    return _Source(ctx.name(q), ctx.name(scale), ctx.name(zp), q.dtype, per_row, zp_const, x_float)


def _weight_parts(node: Node, w_i: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    graph = node.graph
    wq = _const(graph, node.inputs[w_i])
    ws = _const(graph, node.inputs[w_i + 1])
    wz = _const(graph, _opt(node, w_i + 2))
    if wq is None or ws is None or (_opt(node, w_i + 2) is not None and wz is None):
        raise TargetError(f"node {node.name} ({node.op}): the weight, its scale and zero point must be constants")
    return wq, ws, wz


def _matmul_float(emit: NodeEmitter, node: Node, src: _Source, bias: str) -> tuple[str, bool]:
    """The float result of a quantized projection (inputs 0-5 of ``node``); True when ``bias`` was added."""
    ctx = emit.ctx
    wq, ws, wz = _weight_parts(node)
    n = int(wq.shape[1])
    w_name, ws_name = ctx.name(node.inputs[3]), ctx.name(node.inputs[4])
    wz_name = ctx.name(_opt(node, 5))
    if wz is not None and not np.any(wz):
        wz_name = ""  # an all-zero weight zero point: left out
    if src.q_dtype == DType.UINT8 and not src.per_row:
        # 2a/2e: one scale and zero point: onnxruntime's u8 x s8 GEMM with scales and bias in its epilogue
        zp = src.zp or emit.const(0, "x_zp", np.uint8)
        ins = [src.q, w_name, src.scale, ws_name, zp, wz_name, bias]
        return emit("MatMulIntegerToFloat", ins, "mitf", domain=MS), bool(bias)
    if src.q_dtype == DType.UINT8 and src.zp_const is not None:
        # 2c: per-row scales, one zero point (symmetric): the row scale is MatMulIntegerToFloat's a_scale
        zp = emit.const(src.zp_const, "x_zp", np.uint8)
        ins = [src.q, w_name, src.scale, ws_name, zp, wz_name]
        return emit("MatMulIntegerToFloat", ins, "mitf", domain=MS), False
    if src.q_dtype == DType.UINT8:
        # 2d: per-row scales and zero points: the zero-point term zp * scale * colsum(W) * w_scale is subtracted
        y = emit("MatMulIntegerToFloat", [src.q, w_name, src.scale, ws_name, "", wz_name], "mitf", domain=MS)
        wcent = wq.astype(np.int64) - (0 if wz is None else np.asarray(wz, np.int64).reshape(1, -1))
        colsum = (wcent.sum(axis=0).astype(np.float64) * np.asarray(ws, np.float64).reshape(-1)).astype(np.float32)
        zpf = _float_zero_points(ctx).get(src.zp) or emit("Cast", [src.zp], "x_zp_float", to=DType.FLOAT32)
        zps = emit("Mul", [zpf, src.scale], "zp_scaled")
        term = emit("Mul", [zps, emit.const(np.broadcast_to(colsum, (n,)), "colsum")], "zp_term")
        return emit("Sub", [y, term], "centered"), False
    if src.q_dtype == DType.INT8 and not src.per_row and src.x_float and src.zp_const is not None:
        # 2e: a static int8 quantizer written again for uint8: the same integers + 128
        zp = emit.const(src.zp_const + 128, "x_zp_u8", np.uint8)
        q = emit("QuantizeLinear", [src.x_float, src.scale, zp], "x_u8")
        ins = [q, w_name, src.scale, ws_name, zp, wz_name, bias]
        return emit("MatMulIntegerToFloat", ins, "mitf", domain=MS), bool(bias)
    # 2f: int8 activations: the exact integer matmul (one zero point), then the scales and any per-row zero points
    zp_in = (
        ""
        if src.zp_const == 0
        else (emit.const(src.zp_const, "x_zp", src.q_dtype.np) if src.zp_const is not None else "")
    )
    acc = emit("Cast", [emit("MatMulInteger", [src.q, w_name, zp_in, wz_name], "mmi")], "acc_float", to=DType.FLOAT32)
    if src.zp_const is None:
        wcent = wq.astype(np.int64) - (0 if wz is None else np.asarray(wz, np.int64).reshape(1, -1))
        colsum = wcent.sum(axis=0).astype(np.float32)
        term = emit(
            "Mul", [emit("Cast", [src.zp], "x_zp_float", to=DType.FLOAT32), emit.const(colsum, "colsum")], "zp_term"
        )
        acc = emit("Sub", [acc, term], "centered")
    y = emit("Mul", [acc, src.scale], "x_scaled")
    return emit("Mul", [y, ws_name], "w_scaled"), False


def _activation(emit: NodeEmitter, y: str, act: str, bias: str, out: str) -> None:
    """The bias (when not added yet) and the activation, writing ``out``."""
    if bias:
        if act == "gelu":
            emit("BiasGelu", [y, bias], "bias_gelu", outputs=[out], domain=MS)
            return
        if act == "gelu_tanh":
            emit("FastGelu", [y, bias], "fast_gelu", outputs=[out], domain=MS)
            return
        y = emit("Add", [y, bias], "bias", outputs=[out] if act == "none" else None)
        if act == "none":
            return
    if act == "none":
        emit("Identity", [y], "out", outputs=[out])
    elif act == "gelu":
        emit("Gelu", [y], "gelu", outputs=[out], domain=MS)
    elif act == "gelu_tanh":
        emit("FastGelu", [y], "fast_gelu", outputs=[out], domain=MS)
    elif act == "gelu_sigmoid":
        emit("QuickGelu", [y], "quick_gelu", outputs=[out], domain=MS, alpha=1.702)
    elif act == "relu":
        emit("Relu", [y], "relu", outputs=[out])
    else:
        raise TargetError(f"node {emit.node.name} (QLinear): unknown activation {act!r}")


@register_exporter("QLinear")
def export_qlinear(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = NodeEmitter(ctx, node)
    a = _attrs(node)
    bias = ctx.name(_opt(node, 6))
    out = ctx.name(node.outputs[0])
    y_scale, y_zp = _opt(node, 7), _opt(node, 8)
    act = str(a["activation"])
    # a bias goes into the GEMM epilogue unless a contrib activation takes it (BiasGelu, FastGelu)
    src = _source(ctx, node)
    y, done = _matmul_float(emit, node, src, "" if act in ("gelu", "gelu_tanh") else bias)
    target = out if y_scale is None else ctx.fresh(f"{node.name}_float")
    if done and act == "none":
        emit.made[-1].output[0] = target
    else:
        _activation(emit, y, act, "" if done else bias, target)
    if y_scale is not None:
        per_channel = y_scale.shape is not None and len(y_scale.shape) == 1 and y_scale.shape[0] != 1
        axis: dict[str, Any] = {"axis": (node.outputs[0].type.rank or 1) - 1} if per_channel else {}  # power2
        emit("QuantizeLinear", [target, ctx.name(y_scale), ctx.name(y_zp)], "requantize", outputs=[out], **axis)
    return emit.made


# ------------------------------------------------------------------ case 3
@register_exporter("QAttention")
def export_qattention(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = ContribEmitter(ctx, node)
    a = _attrs(node)
    heads = int(a["num_heads"])
    scale = float(a["scale"])
    causal = int(a["unidirectional"])
    mask_v = _opt(node, 7)
    bias_v = _opt(node, 6)
    ab_v = _opt(node, 8)
    out = ctx.name(node.outputs[0])
    src = _source(ctx, node)
    wq, ws, wz = _weight_parts(node)
    mask = emit.int32(mask_v, "mask")
    bias = ctx.name(bias_v) if bias_v is not None else emit.const(np.zeros(wq.shape[1], np.float32), "zero_bias")
    filt = float(a["mask_filter_value"]) if mask or causal else None
    attention_attrs: dict[str, Any] = {
        "num_heads": heads,
        "scale": scale if scale else None,
        "mask_filter_value": filt,
        "unidirectional": 1 if causal else None,
    }
    plain = ab_v is None  # com.microsoft.QAttention has no attention_bias input
    if plain and src.q_dtype == DType.UINT8 and not src.per_row and (wz is None or not np.any(wz)):
        zp = src.zp or emit.const(0, "x_zp", np.uint8)
        emit(
            "QAttention",
            [src.q, ctx.name(node.inputs[3]), bias, src.scale, ctx.name(node.inputs[4]), mask, zp],
            "qattention",
            outputs=[out],
            domain=MS,
            **attention_attrs,
        )
        return emit.made
    qkv, _ = _matmul_float(emit, node, src, "")  # MultiHeadAttention adds the packed bias itself
    hidden = wq.shape[1] // 3
    emit("Split", [qkv, emit.const([hidden] * 3, "split", np.int64)], "split_qkv", outputs=3, axis=-1)
    qn, kn, vn = emit.outs()
    x = node.inputs[0]
    assert x is not None
    ab = attention_bias(emit, ab_v, x, x)
    emit("MultiHeadAttention", [qn, kn, vn, bias, mask, ab], "mha", outputs=[out], domain=MS, **attention_attrs)
    return emit.made


__all__ = ["export_dynamic_quantize", "export_qattention", "export_qlinear"]
