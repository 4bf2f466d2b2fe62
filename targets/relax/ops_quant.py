"""Relax lowerings of quantization ops and integer matmuls, exact to the interpreter's integer semantics.

Cases:

1. ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)``
   in float32 (float64 for a float64 scale or ``precision``), per tensor, per
   axis or blocked; ``DequantizeLinear``: ``(x - zero_point) * scale`` in
   float32. Scales and zero points known at compile time are expanded with
   the registry's ``expand_qparam``; run-time ones (per-row scales from
   ``DynamicQuantize``) are reshaped / repeated in Relax.
2. ``DynamicQuantizeLinear`` (ONNX, uint8 per tensor, scale 1 for an
   all-zero input) and ``DynamicQuantize`` (the ``dynamic_quantize`` hook).
3. ``MatMulInteger``: int32 products of the centered operands (zero points
   scalar, per row of A, per column of B): exact.
4. ``QLinear``: the ``qlinear`` hook when the int8 weight is known at compile
   time (always, from the int8 pass); ``QAttention``: its projection through
   the same hook, then the ``attention`` hook.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node
from accelopt.ir.ops.common import normalize_axis
from accelopt.ir.ops.onnx_quant import expand_qparam
from accelopt.targets.relax import emit
from accelopt.targets.relax.kernels import QWeight, scales_product
from accelopt.targets.relax.lowering import LowerCtx, lower, relax_dtype
from accelopt.targets.relax.ops_fused import attention_from_qkv

R = relax.op


def _opt(ins: list[Any], i: int) -> Any:
    return ins[i] if len(ins) > i else None


def qparam(
    ctx: LowerCtx, node: Node, i: int, value: Any, shape: tuple[int, ...], axis: int, block: int, dtype: str
) -> relax.Expr:
    """Case 1: a scale or zero point shaped to broadcast against ``shape`` (``expand_qparam``), in ``dtype``."""
    if ctx.is_static(value):
        arr = expand_qparam(np.asarray(value), shape, axis, block)
        return ctx.expr(arr, dtype, name=f"{ctx.key(node, i)}@{'x'.join(map(str, arr.shape))}")
    v = ctx.expr(value, dtype)
    vs = ctx.shape(v)
    size = int(np.prod(vs)) if vs else 1
    if not vs or (size == 1 and not block):
        return ctx.emit(R.reshape(v, ())) if vs else v
    ax = normalize_axis(axis, len(shape))
    if not block:
        dims = [1] * len(shape)
        dims[ax] = size
        return ctx.emit(R.reshape(v, dims))
    if vs[ax] == 1:  # one block covers the axis (per-row scales): plain broadcasting
        return v
    rep = ctx.emit(R.repeat(v, block, axis=ax))
    if ctx.shape(rep)[ax] != shape[ax]:
        rep = ctx.emit(R.strided_slice(rep, [ax], [0], [shape[ax]]))
    return rep


@lower("QuantizeLinear")
def _quantize_linear(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis, block = int(attrs["axis"]), int(attrs["block_size"])
    out = relax_dtype(node.outputs[0].dtype)
    precision = int(attrs.get("precision", 0) or 0)
    work = "float64" if (ctx.dtype(ins[1]) == "float64" or (precision and DType.from_onnx(precision).np == np.float64)) else "float32"
    s = qparam(ctx, node, 1, ins[1], shape, axis, block, work)
    q = ctx.emit(R.round(R.divide(ctx.astype(x, work), s)))
    zp = _opt(ins, 2)
    if zp is not None:
        q = ctx.emit(R.add(q, qparam(ctx, node, 2, zp, shape, axis, block, work)))
    info = np.iinfo(np.dtype(out))
    q = ctx.emit(R.clip(q, float(info.min), float(info.max)))
    return [ctx.emit(R.astype(q, out))]


@lower("DequantizeLinear")
def _dequantize_linear(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis, block = int(attrs["axis"]), int(attrs["block_size"])
    d = ctx.astype(x, "float32")
    zp = _opt(ins, 2)
    if zp is not None:
        d = ctx.emit(R.subtract(d, qparam(ctx, node, 2, zp, shape, axis, block, "float32")))
    d = ctx.emit(R.multiply(d, qparam(ctx, node, 1, ins[1], shape, axis, block, "float32")))
    return [ctx.astype(d, relax_dtype(node.outputs[0].dtype))]


# ---------------------------------------------------------------- case 2
@lower("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0], "float32")
    f32 = np.float32
    zero = ctx.const(f32(0))
    hi = ctx.emit(R.maximum(R.max(x), zero))
    lo = ctx.emit(R.minimum(R.min(x), zero))
    rng = ctx.emit(R.divide(R.subtract(hi, lo), ctx.const(f32(255))))
    scale = ctx.emit(R.where(R.equal(hi, lo), ctx.const(f32(1)), rng))
    zpf = ctx.emit(R.round(R.clip(R.subtract(zero, R.divide(lo, scale)), 0.0, 255.0)))
    y = emit.quantize(ctx, x, scale, zpf, "uint8")
    return [y, scale, ctx.emit(R.astype(zpf, "uint8"))][: len(node.outputs)]


@lower("DynamicQuantize")
def _dynamic_quantize(ctx, node, ins, attrs):
    to = attrs["to"]
    to = to if isinstance(to, DType) else DType.parse(str(to))
    y, s, z = ctx.kernels.dynamic_quantize(
        ctx, node, ctx.operand(node, 0, ins[0]), relax_dtype(to), bool(attrs["symmetric"]), str(attrs["granularity"])
    )
    return [y, s, z][: len(node.outputs)]


# ---------------------------------------------------------------- case 3
@lower("MatMulInteger")
def _matmul_integer(ctx, node, ins, attrs):
    a, b = ctx.operand(node, 0, ins[0]), ctx.operand(node, 1, ins[1])
    azp, bzp = _opt(ins, 2), _opt(ins, 3)
    if azp is not None:
        if ctx.is_static(azp):
            z = np.asarray(azp)
            azp = z.reshape(-1, 1) if z.ndim == 1 and z.size > 1 else z.reshape(()) if z.size == 1 else z
        else:
            zs = ctx.shape(azp)
            azp = ctx.emit(R.reshape(azp, (-1, 1) if len(zs) == 1 and zs[0] > 1 else ())) if zs else azp
    if bzp is not None and ctx.is_static(bzp) and np.size(bzp) == 1:
        bzp = np.asarray(bzp).reshape(())
    return [emit.int_matmul(ctx, a, b, azp, bzp)]


# ---------------------------------------------------------------- case 4
def _qweight(ctx: LowerCtx, node: Node, ins: list[Any]) -> QWeight | None:
    """The int8 weight (input 3) with its scale (4) and zero point (5) when all are known at compile time."""
    w, s, z = ins[3], ins[4], _opt(ins, 5)
    if not (ctx.is_static(w) and ctx.is_static(s) and (z is None or ctx.is_static(z))):
        return None
    return QWeight(np.asarray(w), np.asarray(s, np.float32), None if z is None else np.asarray(z), ctx.key(node, 3))


def qproject(ctx: LowerCtx, node: Node, ins: list[Any], bias: Any, y_scale: Any, y_zp: Any, act: str) -> relax.Expr:
    """``QLinear``'s computation: the ``qlinear`` hook, or a generic exact path for a run-time weight."""
    x_q = ctx.operand(node, 0, ins[0])
    x_scale, x_zp = ins[1], _opt(ins, 2)
    if not ctx.is_static(x_scale):
        x_scale = ctx.expr(x_scale)
    if x_zp is not None and not ctx.is_static(x_zp):
        x_zp = ctx.expr(x_zp)
    w = _qweight(ctx, node, ins)
    if w is not None:
        return ctx.kernels.qlinear(ctx, node, x_q, x_scale, x_zp, w, bias, y_scale, y_zp, act)
    wz = _opt(ins, 5)
    acc = emit.int_matmul(ctx, x_q, ctx.operand(node, 3, ins[3]), x_zp, ctx.operand(node, 5, wz) if wz is not None else None)
    ws = ins[4] if ctx.is_static(ins[4]) else ctx.emit(R.reshape(ctx.expr(ins[4]), (-1,)))
    y = ctx.emit(R.multiply(R.astype(acc, "float32"), scales_product(ctx, x_scale, ws, ctx.key(node, 3))))
    if bias is not None:
        y = ctx.emit(R.add(y, ctx.expr(bias, "float32")))
    y = emit.activation(ctx, y, act)
    if y_scale is None:
        return y
    return emit.quantize(ctx, y, y_scale, y_zp, "int8" if y_zp is None else ctx.dtype(y_zp))


@lower("QLinear")
def _qlinear(ctx, node, ins, attrs):
    bias, y_scale, y_zp = _opt(ins, 6), _opt(ins, 7), _opt(ins, 8)
    return [qproject(ctx, node, ins, bias, y_scale, y_zp, str(attrs["activation"]))]


@lower("QAttention")
def _qattention(ctx, node, ins, attrs):
    qkv = qproject(ctx, node, ins, _opt(ins, 6), None, None, "none")
    return [attention_from_qkv(ctx, node, qkv, ins, 7, attrs)]
