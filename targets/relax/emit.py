"""Relax building blocks shared by the op lowerings and the default ``Kernels``.

Each helper takes a ``LowerCtx`` and Relax expressions (or numpy arrays,
which become constants or parameters) and emits bindings; results are Relax
variables. The numerics mirror the registry's numpy kernels:

1. ``activation``: Linear's epilogues (``gelu`` exact through erf,
   ``gelu_tanh``, ``gelu_sigmoid`` = ``x * sigmoid(1.702 x)``, ``relu``).
2. ``quantize``: ``saturate(round_half_even(x / scale) + zero_point)`` in
   float32, as ``quantize_values`` (a division, not a multiply by the
   reciprocal, so the integers agree bit for bit).
3. ``int_matmul``: ``(a - a_zp) @ (b - b_zp)`` in int32, exact.
4. ``layer_norm``: two-pass statistics (mean, then the mean of squared
   deviations) in float32, as the reference; half inputs are computed in
   float32 and cast back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tvm import relax

from accelopt.targets.relax.lowering import LowerCtx

R = relax.op
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LOW_FLOATS = ("float16", "bfloat16")


def scalar(ctx: LowerCtx, value: float, like: Any) -> relax.Expr:
    """A scalar constant in ``like``'s dtype."""
    return ctx.const(np.asarray(value), ctx.dtype(like))


def compute_dtype(ctx: LowerCtx, x: Any) -> str:
    """float64 stays float64; every other float type computes in float32 (the reference kernels' rule)."""
    return "float64" if ctx.dtype(x) == "float64" else "float32"


def gelu(ctx: LowerCtx, x: relax.Expr, approximate: str = "none") -> relax.Var:
    """GELU in x's dtype: exact ``0.5 x (1 + erf(x / sqrt 2))`` or the tanh approximation."""
    if approximate == "tanh":
        inner = ctx.emit(R.multiply(x, x))
        inner = ctx.emit(R.multiply(inner, scalar(ctx, 0.044715, x)))
        inner = ctx.emit(R.add(inner, scalar(ctx, 1.0, x)))
        inner = ctx.emit(R.multiply(inner, x))
        inner = ctx.emit(R.tanh(R.multiply(inner, scalar(ctx, _SQRT_2_OVER_PI, x))))
    else:
        inner = ctx.emit(R.erf(R.multiply(x, scalar(ctx, 1.0 / math.sqrt(2.0), x))))
    inner = ctx.emit(R.multiply(R.add(inner, scalar(ctx, 1.0, x)), x))
    return ctx.emit(R.multiply(inner, scalar(ctx, 0.5, x)))


def quick_gelu(ctx: LowerCtx, x: relax.Expr, alpha: float = 1.702) -> relax.Var:
    """``x * sigmoid(alpha x)``."""
    return ctx.emit(R.multiply(x, R.sigmoid(R.multiply(x, scalar(ctx, alpha, x)))))


def activation(ctx: LowerCtx, y: relax.Expr, act: str) -> relax.Expr:
    """Case 1: Linear's activation epilogue."""
    if act == "none":
        return y
    if act == "gelu":
        return gelu(ctx, y, "none")
    if act == "gelu_tanh":
        return gelu(ctx, y, "tanh")
    if act == "gelu_sigmoid":
        return quick_gelu(ctx, y)
    if act == "relu":
        return ctx.emit(R.maximum(y, scalar(ctx, 0.0, y)))
    raise ValueError(f"unknown activation {act!r}")


def quantize(ctx: LowerCtx, x: Any, scale: Any, zero_point: Any, dtype: str) -> relax.Var:
    """Case 2: ``saturate(round_half_even(x / scale) + zero_point)`` computed in float32, cast to ``dtype``."""
    info = np.iinfo(np.dtype(dtype))
    xf = ctx.expr(x, "float32")
    q = ctx.emit(R.round(R.divide(xf, ctx.expr(scale, "float32"))))
    if zero_point is not None:
        q = ctx.emit(R.add(q, ctx.expr(zero_point, "float32")))
    q = ctx.emit(R.clip(q, float(info.min), float(info.max)))
    return ctx.emit(R.astype(q, dtype))


def centered(ctx: LowerCtx, q: Any, zero_point: Any) -> relax.Expr:
    """``q - zero_point`` as int32 (a zero point known to be all zeros costs nothing)."""
    qi = ctx.expr(q, "int32")
    if zero_point is None or (ctx.is_static(zero_point) and not np.any(zero_point)):
        return qi
    return ctx.emit(R.subtract(qi, ctx.expr(zero_point, "int32")))


def int_matmul(ctx: LowerCtx, a: Any, b: Any, a_zp: Any = None, b_zp: Any = None) -> relax.Var:
    """Case 3: ``(a - a_zp) @ (b - b_zp)`` in int32 (exact: int8 products summed in int32)."""
    return ctx.emit(R.matmul(centered(ctx, a, a_zp), centered(ctx, b, b_zp), out_dtype="int32"))


def layer_norm(ctx: LowerCtx, x: relax.Expr, gamma: Any, beta: Any, axis: int, epsilon: float) -> relax.Expr:
    """Case 4: ``(x - mean) / sqrt(var + eps) * gamma + beta`` over the axes ``axis..``."""
    rank = ctx.ndim(x)
    axes = list(range(axis % rank, rank))
    in_dt = ctx.dtype(x)
    ct = compute_dtype(ctx, x)
    xf = ctx.astype(x, ct)
    mean = ctx.emit(R.mean(xf, axes, keepdims=True))
    d = ctx.emit(R.subtract(xf, mean))
    var = ctx.emit(R.mean(R.multiply(d, d), axes, keepdims=True))
    inv = ctx.emit(R.rsqrt(R.add(var, ctx.const(np.asarray(epsilon), ct))))
    y = ctx.emit(R.multiply(d, inv))
    if in_dt in _LOW_FLOATS:  # the reference normalizes in float32 and scales in the input's type
        y = ctx.astype(y, in_dt)
        ct = in_dt
    y = ctx.emit(R.multiply(y, ctx.expr(gamma, ct)))
    if beta is not None:
        y = ctx.emit(R.add(y, ctx.expr(beta, ct)))
    return ctx.astype(y, in_dt)


def np_of(ctx: LowerCtx, x: Any) -> np.dtype:
    """The numpy dtype of an operand."""
    from accelopt.targets.relax.lowering import np_dtype

    return np_dtype(ctx.dtype(x))
