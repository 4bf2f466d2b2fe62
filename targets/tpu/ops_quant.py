"""TPU lowerings of the quantization ops: the ONNX ones and the accelopt integer ops.

Cases:

1. ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)``
   to int8/uint8, per tensor, per axis or blocked (``block_size``: the
   parameter repeated along ``axis``; a ``[..., 1]`` scale with
   ``block_size`` equal to the axis's size is one scale per row).
2. ``DequantizeLinear``: ``(q - zero_point) * scale``, with the same
   parameter forms. In int8 mode a DequantizeLinear of a constant int8
   weight that only feeds matmul weight slots is absorbed by the weight plan
   (see lowering.py), and one of an activation (per tensor, or per row as
   the int8 pass writes dynamic activations: ``axis=-1, block_size=K``) is
   read directly by the matmul (``LowerCtx.dq_source``); its float form is
   then unused and dropped by XLA.
3. ``DynamicQuantizeLinear``: uint8 with scale and zero point from the
   tensor's range (including 0), as ONNX defines it.
4. ``DynamicQuantize{to, symmetric, granularity}``: scales from the values
   per tensor or per row (last axis), computed as the reference kernel does
   (float32, round half to even, the ``2**-126`` scale of an all-zero
   range). A symmetric zero point is a constant (0 for int8, 128 for
   uint8), known at export time, so the int8 matmuls that read it skip
   zero-point corrections.
5. ``MatMulInteger``: ``(A - a_zero) @ (B - b_zero)`` in int32 through an
   int8 x int8 -> int32 ``dot_general``.
6. ``QLinearMatMul``: case 5 followed by requantization with the output
   scale and zero point.
7. ``QLinear``: ``act(((x_q - x_zp) @ (w_q - w_zp)) * (x_scale * w_scale) + bias)``
   through ``LowerCtx.scaled_int_matmul`` (int8 x int8 -> int32 unless the
   policy is bf16, e.g. chip v4); the constant int8 weight is prepared
   (padded to the MXU tile) like a float one. With ``y_scale`` the result is
   requantized as in case 1.
8. ``QAttention``: the packed QKV projection as in 7 (float32 plus bias),
   then the float attention of the ``Attention`` lowering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node
from accelopt.ir.ops.quantized import ZERO_RANGE_SCALE, qrange, symmetric_zero_point
from accelopt.targets.tpu.lowering import LowerCtx, jax_dtype, lower, rhs_weight
from accelopt.targets.tpu.ops_fused import _activation, _add_bias, _opt, attention_from_qkv

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _qparam(ctx: LowerCtx, node: Node, param: Any, shape: tuple[int, ...], attrs: Mapping[str, Any]) -> Any:
    """A scale / zero point broadcastable against ``shape`` (cases 1 and 2), as ``expand_qparam`` does.

    One element -> a scalar; ``block_size`` 0 -> a 1-D parameter along
    ``axis``; otherwise each entry repeated ``block_size`` times along
    ``axis`` (a size-1 axis simply broadcasts).
    """
    p = ctx.jx(param)
    block = int(attrs.get("block_size", 0) or 0)
    if p.ndim == 0 or (p.size == 1 and not block):
        return p.reshape(())
    rank = len(shape)
    axis = int(attrs.get("axis", 1)) % rank
    if not block:
        if p.ndim != 1 or p.shape[0] != shape[axis]:
            raise TargetError(
                f"node {node.name} ({node.op}): per-axis parameter {list(p.shape)} does not match axis {axis} "
                f"of {list(shape)}"
            )
        return p.reshape([-1 if i == axis else 1 for i in range(rank)])
    if p.ndim != rank or any(p.shape[i] != shape[i] for i in range(rank) if i != axis):
        raise TargetError(
            f"node {node.name} ({node.op}): blocked parameter {list(p.shape)} does not match {list(shape)}"
        )
    if p.shape[axis] == 1 and block >= shape[axis]:
        return p  # one block along the axis (per row): broadcasts as is
    p = jnp.repeat(p, block, axis=axis)
    if p.shape[axis] != shape[axis]:
        p = jnp.take(p, jnp.arange(shape[axis]), axis=axis)
    return p


def _out_int_dtype(node: Node, i: int = 0) -> np.dtype:
    return np.dtype(node.outputs[i].dtype.np)


@lower("QuantizeLinear")
def _quantize(ctx, node, ins, attrs):
    x = ctx.jx(ins[0]).astype(jnp.float32)
    scale = _qparam(ctx, node, ins[1], x.shape, attrs).astype(jnp.float32)
    out_dt = _out_int_dtype(node)
    lo, hi = _RANGES.get(out_dt, (np.iinfo(out_dt).min, np.iinfo(out_dt).max))
    y = jnp.round(x / scale)
    if len(ins) > 2 and ins[2] is not None:
        y = y + _qparam(ctx, node, ins[2], x.shape, attrs).astype(jnp.float32)
    return [jnp.clip(y, lo, hi).astype(out_dt)]


@lower("DequantizeLinear")
def _dequantize(ctx, node, ins, attrs):
    q = ctx.jx(ins[0])
    scale = _qparam(ctx, node, ins[1], q.shape, attrs)
    x = q.astype(jnp.float32)
    if len(ins) > 2 and ins[2] is not None:
        x = x - _qparam(ctx, node, ins[2], q.shape, attrs).astype(jnp.float32)
    return [(x * scale.astype(jnp.float32)).astype(ctx.out_dtype(node))]


@lower("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx, node, ins, attrs):
    x = ctx.jx(ins[0]).astype(jnp.float32)
    lo = jnp.minimum(jnp.min(x), 0.0)
    hi = jnp.maximum(jnp.max(x), 0.0)
    scale = (hi - lo) / 255.0
    safe = jnp.where(scale == 0, 1.0, scale)
    zp = jnp.clip(jnp.round(-lo / safe), 0, 255)
    y = jnp.clip(jnp.round(x / safe) + zp, 0, 255).astype(jnp.uint8)
    return [y, scale.astype(jnp.float32), zp.astype(jnp.uint8)]


@lower("DynamicQuantize")
def _dynamic_quantize(ctx, node, ins, attrs):
    """Case 4."""
    x = ctx.jx(ins[0]).astype(jnp.float32)
    to: DType = attrs["to"]
    dt = np.dtype(to.np)
    symmetric = bool(attrs["symmetric"])
    qmin, qmax = qrange(dt, symmetric)
    if attrs["granularity"] == "row":
        axis, keep = -1, True
        pshape: tuple[int, ...] = tuple(x.shape[:-1]) + (1,)
    else:
        axis, keep, pshape = None, False, ()
    tiny = jnp.float32(ZERO_RANGE_SCALE)
    empty = math.prod(x.shape) == 0
    if symmetric:
        amax = jnp.zeros(pshape, jnp.float32) if empty else jnp.max(jnp.abs(x), axis=axis, keepdims=keep)
        scale = jnp.maximum(amax / jnp.float32(127), tiny)
        zp: Any = np.full(pshape, symmetric_zero_point(dt), dtype=dt)  # a constant (case 4)
        zf: Any = jnp.float32(symmetric_zero_point(dt))
    else:
        if empty:
            lo = hi = jnp.zeros(pshape, jnp.float32)
        else:
            lo = jnp.minimum(jnp.min(x, axis=axis, keepdims=keep), jnp.float32(0))
            hi = jnp.maximum(jnp.max(x, axis=axis, keepdims=keep), jnp.float32(0))
        scale = jnp.maximum((hi - lo) / jnp.float32(qmax - qmin), tiny)
        zf = jnp.round(jnp.clip(jnp.float32(qmin) - lo / scale, qmin, qmax))
        zp = zf.astype(dt)
    info = np.iinfo(dt)
    y = jnp.clip(jnp.round(x / scale) + zf, info.min, info.max).astype(dt)
    outs = [y, scale.astype(jnp.float32), zp]
    return outs[: len(node.outputs)]


@lower("MatMulInteger", weights=rhs_weight)
def _matmul_integer(ctx, node, ins, attrs):
    return [ctx.int_matmul(node, ins[0], ins[1], _opt(ins, 2), _opt(ins, 3))]


def _qlinear_weights(node: Node, attrs: Any) -> dict[int, bool]:
    return {3: False}


def _requantize(y: Any, y_scale: Any, y_zero: Any, out_dt: np.dtype, ctx: LowerCtx) -> Any:
    """``saturate(round(y / y_scale) + y_zero)`` in ``out_dt``'s full range (cases 6 and 7)."""
    q = jnp.round(y / ctx.jx(y_scale).astype(jnp.float32).reshape(()))
    if y_zero is not None:
        q = q + ctx.jx(y_zero).astype(jnp.float32).reshape(())
    lo, hi = _RANGES.get(out_dt, (np.iinfo(out_dt).min, np.iinfo(out_dt).max))
    return jnp.clip(q, lo, hi).astype(out_dt)


@lower("QLinearMatMul", weights=_qlinear_weights)
def _qlinear_matmul(ctx, node, ins, attrs):
    acc = ctx.int_matmul(node, ins[0], ins[3], ins[2], ins[5])
    sa = ctx.jx(ins[1]).astype(jnp.float32)
    sb = ctx.jx(ins[4]).astype(jnp.float32)
    sy = ctx.jx(ins[6]).astype(jnp.float32)
    y = jnp.round(acc.astype(jnp.float32) * (sa * sb / sy))
    if len(ins) > 7 and ins[7] is not None:
        y = y + ctx.jx(ins[7]).astype(jnp.float32)
    out_dt = _out_int_dtype(node)
    lo, hi = _RANGES.get(out_dt, (-128, 127))
    return [jnp.clip(y, lo, hi).astype(out_dt)]


def _projection(ctx: LowerCtx, node: Node, ins: list[Any]) -> Any:
    """Inputs 0-6 of QLinear / QAttention -> the float32 projection plus bias (cases 7 and 8)."""
    y = ctx.scaled_int_matmul(node, ins[0], ins[1], _opt(ins, 2), ins[3], ins[4], _opt(ins, 5))
    return _add_bias(ctx, y, _opt(ins, 6))


@lower("QLinear", weights=_qlinear_weights)
def _qlinear(ctx, node, ins, attrs):
    """Case 7."""
    y = _activation(_projection(ctx, node, ins), str(attrs.get("activation", "none")))
    y_scale = _opt(ins, 7)
    if y_scale is None:
        return [y.astype(jnp.float32)]
    return [_requantize(y, y_scale, _opt(ins, 8), _out_int_dtype(node), ctx)]


@lower("QAttention", weights=_qlinear_weights)
def _qattention(ctx, node, ins, attrs):
    """Case 8."""
    qkv = _projection(ctx, node, ins)
    out = attention_from_qkv(ctx, node, qkv, _opt(ins, 7), attrs, _opt(ins, 8))
    return [out.astype(ctx.out_dtype(node))]


__all__ = ["DType", "jax_dtype"]
