"""TPU lowerings of the ONNX quantization ops.

Cases:

1. ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)``
   to int8/uint8, per tensor or per axis.
2. ``DequantizeLinear``: ``(q - zero_point) * scale``, per tensor or per axis.
   In int8 mode a DequantizeLinear of a constant int8 weight that only feeds
   matmul weight slots is absorbed by the weight plan (see lowering.py), and
   one of an activation is read directly by the matmul (``LowerCtx.dq_source``);
   its float form is then unused and dropped by XLA.
3. ``DynamicQuantizeLinear``: uint8 with scale and zero point from the
   tensor's range (including 0), as ONNX defines it.
4. ``MatMulInteger``: ``(A - a_zero) @ (B - b_zero)`` in int32 through an
   int8 x int8 -> int32 ``dot_general``.
5. ``QLinearMatMul``: case 4 followed by requantization with the output
   scale and zero point.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node
from accelopt.targets.tpu.lowering import LowerCtx, jax_dtype, lower, rhs_weight

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _per_axis(ctx: LowerCtx, node: Node, param: Any, rank: int, attrs: dict[str, Any]) -> Any:
    """A scale / zero point broadcastable along ``axis`` (a scalar stays a scalar)."""
    p = ctx.jx(param)
    if p.ndim == 0 or p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    axis = attrs.get("axis", 1)
    axis = axis % rank
    return p.reshape([-1 if i == axis else 1 for i in range(rank)])


def _out_int_dtype(node: Node, i: int = 0) -> np.dtype:
    return np.dtype(node.outputs[i].dtype.np)


@lower("QuantizeLinear")
def _quantize(ctx, node, ins, attrs):
    x = ctx.jx(ins[0]).astype(jnp.float32)
    scale = _per_axis(ctx, node, ins[1], x.ndim, attrs).astype(jnp.float32)
    out_dt = _out_int_dtype(node)
    lo, hi = _RANGES.get(out_dt, (np.iinfo(out_dt).min, np.iinfo(out_dt).max))
    y = jnp.round(x / scale)
    if len(ins) > 2 and ins[2] is not None:
        y = y + _per_axis(ctx, node, ins[2], x.ndim, attrs).astype(jnp.float32)
    return [jnp.clip(y, lo, hi).astype(out_dt)]


@lower("DequantizeLinear")
def _dequantize(ctx, node, ins, attrs):
    q = ctx.jx(ins[0])
    scale = _per_axis(ctx, node, ins[1], q.ndim, attrs)
    x = q.astype(jnp.float32)
    if len(ins) > 2 and ins[2] is not None:
        x = x - _per_axis(ctx, node, ins[2], q.ndim, attrs).astype(jnp.float32)
    return [(x * scale.astype(jnp.float32)).astype(ctx.out_dtype(node))]


@lower("DynamicQuantizeLinear")
def _dynamic_quantize(ctx, node, ins, attrs):
    x = ctx.jx(ins[0]).astype(jnp.float32)
    lo = jnp.minimum(jnp.min(x), 0.0)
    hi = jnp.maximum(jnp.max(x), 0.0)
    scale = (hi - lo) / 255.0
    safe = jnp.where(scale == 0, 1.0, scale)
    zp = jnp.clip(jnp.round(-lo / safe), 0, 255)
    y = jnp.clip(jnp.round(x / safe) + zp, 0, 255).astype(jnp.uint8)
    return [y, scale.astype(jnp.float32), zp.astype(jnp.uint8)]


def _zero(ins: list[Any], i: int) -> Any:
    return ins[i] if len(ins) > i and ins[i] is not None else None


@lower("MatMulInteger", weights=rhs_weight)
def _matmul_integer(ctx, node, ins, attrs):
    return [ctx.int_matmul(node, ins[0], ins[1], _zero(ins, 2), _zero(ins, 3))]


def _qlinear_weights(node: Node, attrs: Any) -> dict[int, bool]:
    return {3: False}


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


__all__ = ["DType", "jax_dtype"]
