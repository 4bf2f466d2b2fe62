"""ONNX exporters of the quantized ops, chosen for what onnxruntime runs fast.

The ONNX writer imports this module on first use (its name starts with
``onnx_export``). onnxruntime's fast integer GEMM is uint8 activations x
int8 weights, so int8 symmetric activations are written as uint8 with zero
point 128 (the same integers shifted by 128: exact). Mappings:

1. ``DynamicQuantize`` -> standard ops computing exactly its ``(y, scale,
   zero_point)`` (``ReduceMax``/``ReduceMin`` per row or tensor, ``Div``,
   ``Round``, ``Clip``, ``Cast``). When its consumers are ``QLinear`` /
   ``QAttention`` (which quantize again from the float input, case 2), these
   nodes are dead and onnxruntime drops them.
2. ``QLinear``: the float input ``x`` behind a dynamic quantizer is read
   directly:

   a. per tensor, asymmetric uint8 (``DynamicQuantizeLinear``) ->
      ``com.microsoft.DynamicQuantizeMatMul(x, W, w_scale, w_zp, bias)``;
   b. per tensor, symmetric -> ``scale = max|x| / 127``,
      ``QuantizeLinear(x, scale, 128)`` and
      ``com.microsoft.MatMulIntegerToFloat(q, W, scale, w_scale, 128, w_zp, bias)``;
   c. per row, symmetric -> ``q = Cast(Clip(Round(x / scale) + 128))`` and
      ``MatMulIntegerToFloat(q, W, 1, w_scale, 128, w_zp)`` times the row
      scale, plus bias;
   d. per row, asymmetric -> ``q`` as in 1 and
      ``MatMulIntegerToFloat(q, W, 1, w_scale, 0, w_zp)``, minus the
      zero-point term ``zp_row * colsum(W) * w_scale``, times the row scale,
      plus bias;
   e. a static (or any other) quantized input with a per-tensor scale ->
      ``MatMulIntegerToFloat(x_q, W, x_scale, w_scale, x_zp, w_zp, bias)``
      (int8 data from a ``QuantizeLinear`` is quantized again as uint8 with
      the zero point + 128);
   f. otherwise ``MatMulInteger`` + ``Cast`` + scales (any zero points).

   The activation follows as onnxruntime contrib ops (``Gelu``,
   ``FastGelu``, ``QuickGelu``) or ``Relu``; with ``y_scale`` the result is
   requantized by ``QuantizeLinear``.
3. ``QAttention``: with a per-tensor dynamic asymmetric uint8 or static
   uint8 input -> ``com.microsoft.QAttention(x_q, W, bias, x_scale, w_scale,
   mask_index, x_zp)``; otherwise the QKV projection as in 2 followed by
   ``Split`` and ``com.microsoft.MultiHeadAttention(q, k, v,
   key_padding_mask)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import NodeProto

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op
from accelopt.targets.onnx_writer import ExportContext, register_exporter

MS = "com.microsoft"


class _Emit:
    """Collects the ONNX nodes one IR node becomes."""

    def __init__(self, ctx: ExportContext, node: Node) -> None:
        self.ctx = ctx
        self.node = node
        self.made: list[NodeProto] = []

    def __call__(
        self,
        op: str,
        inputs: Sequence[str],
        hint: str,
        *,
        outputs: Sequence[str] | int | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        if outputs is None or isinstance(outputs, int):
            count = 1 if outputs is None else outputs
            outs = [self.ctx.fresh(f"{self.node.name}_{hint}" + (f"_{i}" if count > 1 else "")) for i in range(count)]
        else:
            outs = list(outputs)
        ins = list(inputs)
        while ins and ins[-1] == "":
            ins.pop()
        self.made.append(self.ctx.make_node(op, ins, outs, domain=domain, name=f"{self.node.name}/{hint}", **attrs))
        return outs[0]

    def outs(self) -> list[str]:
        return list(self.made[-1].output)

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        return self.ctx.add_initializer(np.asarray(value, dtype=dtype), f"{self.node.name}_{hint}")


def _attrs(node: Node) -> dict[str, Any]:
    return get_op(node.op).full_attrs(node.attrs)


def _const(graph: Graph | None, v: Value | None) -> np.ndarray | None:
    return None if v is None or graph is None else graph.const_value(v)


def _opt(node: Node, i: int) -> Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


# ------------------------------------------------------------------ case 1
def _reduce(emit: _Emit, op: str, x: str, per_row: bool, hint: str) -> str:
    if per_row:
        return emit(op, [x, emit.const([-1], f"{hint}_axes", np.int64)], hint, keepdims=1)
    return emit(op, [x], hint, keepdims=0)


@register_exporter("DynamicQuantize")
def export_dynamic_quantize(ctx: ExportContext, node: Node) -> list[NodeProto]:
    """Case 1: standard ops computing ``(y, scale, zero_point)`` exactly as the op defines them."""
    emit = _Emit(ctx, node)
    a = _attrs(node)
    to: DType = a["to"]
    symmetric, per_row = bool(a["symmetric"]), a["granularity"] == "row"
    x_v = node.inputs[0]
    assert x_v is not None
    x = ctx.name(x_v)
    if x_v.dtype != DType.FLOAT32:
        x = emit("Cast", [x], "x_float", to=DType.FLOAT32)
    outs = [ctx.name(v) for v in node.outputs] + ["", ""]
    one, zero = emit.const(1.0, "one"), emit.const(0.0, "zero")
    if symmetric:
        amax = _reduce(emit, "ReduceMax", emit("Abs", [x], "abs"), per_row, "absmax")
        raw = emit("Div", [amax, emit.const(127.0, "c127")], "scale_raw")
    else:
        hi = emit("Max", [_reduce(emit, "ReduceMax", x, per_row, "max"), zero], "hi")
        lo = emit("Min", [_reduce(emit, "ReduceMin", x, per_row, "min"), zero], "lo")
        raw = emit("Div", [emit("Sub", [hi, lo], "range"), emit.const(255.0, "c255")], "scale_raw")
    scale = emit(
        "Where",
        [emit("Equal", [raw, zero], "scale_is_zero"), one, raw],
        "scale",
        outputs=[outs[1]] if outs[1] else None,
    )
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
        zp = emit(
            "Cast", [emit("Round", [raw_zp], "zp_float")], "zero_point", to=to, outputs=[outs[2]] if outs[2] else None
        )
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


def _matmul_float(emit: _Emit, node: Node, src: _Source, bias: str) -> tuple[str, bool]:
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
        zps = emit("Mul", [emit("Cast", [src.zp], "x_zp_float", to=DType.FLOAT32), src.scale], "zp_scaled")
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


def _activation(emit: _Emit, y: str, act: str, bias: str, out: str) -> None:
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
    emit = _Emit(ctx, node)
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
        emit("QuantizeLinear", [target, ctx.name(y_scale), ctx.name(y_zp)], "requantize", outputs=[out])
    return emit.made


# ------------------------------------------------------------------ case 3
@register_exporter("QAttention")
def export_qattention(ctx: ExportContext, node: Node) -> list[NodeProto]:
    emit = _Emit(ctx, node)
    a = _attrs(node)
    heads = int(a["num_heads"])
    scale = float(a["scale"])
    mask_v = _opt(node, 7)
    bias_v = _opt(node, 6)
    out = ctx.name(node.outputs[0])
    src = _source(ctx, node)
    wq, ws, wz = _weight_parts(node)
    mask = ""
    if mask_v is not None:
        mask = (
            ctx.name(mask_v)
            if mask_v.dtype == DType.INT32
            else emit("Cast", [ctx.name(mask_v)], "mask", to=DType.INT32)
        )
    bias = ctx.name(bias_v) if bias_v is not None else emit.const(np.zeros(wq.shape[1], np.float32), "zero_bias")
    filt = float(a["mask_filter_value"]) if mask else None
    if src.q_dtype == DType.UINT8 and not src.per_row and (wz is None or not np.any(wz)):
        zp = src.zp or emit.const(0, "x_zp", np.uint8)
        emit(
            "QAttention",
            [src.q, ctx.name(node.inputs[3]), bias, src.scale, ctx.name(node.inputs[4]), mask, zp],
            "qattention",
            outputs=[out],
            domain=MS,
            num_heads=heads,
            scale=scale if scale else None,
            mask_filter_value=filt,
        )
        return emit.made
    qkv, done = _matmul_float(emit, node, src, bias)
    if not done:
        qkv = emit("Add", [qkv, bias], "qkv_bias")
    hidden = wq.shape[1] // 3
    emit("Split", [qkv, emit.const([hidden] * 3, "split", np.int64)], "split_qkv", outputs=3, axis=-1)
    qn, kn, vn = emit.outs()
    emit(
        "MultiHeadAttention",
        [qn, kn, vn, "", mask],
        "mha",
        outputs=[out],
        domain=MS,
        num_heads=heads,
        scale=scale if scale else None,
        mask_filter_value=filt,
    )
    return emit.made


__all__ = ["export_dynamic_quantize", "export_qattention", "export_qlinear"]
