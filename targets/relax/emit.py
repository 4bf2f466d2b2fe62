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
from tvm import relax, te

from accelopt.targets.relax.lowering import LowerCtx

R = relax.op
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LOW_FLOATS = ("float16", "bfloat16")
#: TVM's operator pattern for GEMM-like functions: Relax fuses elementwise epilogues into them, but not the
#: producers of their inputs (a reduction pattern would pull the activation quantization into the GEMM and
#: recompute it for every output column)
OUT_EWISE_FUSABLE = 4


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
    """Case 3: ``(a - a_zp) @ (b - b_zp)`` in int32 (exact: int8 products summed in int32).

    With a 2-D ``b`` (weights) it is one TE compute that widens and centers
    the operands as it reads them (``a_zp`` scalar or per row ``[..., M, 1]``,
    ``b_zp`` scalar or per column ``[N]``): no int32 copy of either operand.
    Other shapes (batched ``MatMulInteger``) go through Relax's matmul.
    """
    av, bv = ctx.expr(a), ctx.expr(b)
    ash, bsh = ctx.shape(av), ctx.shape(bv)
    za = None if a_zp is None or (ctx.is_static(a_zp) and not np.any(a_zp)) else a_zp
    zb = None if b_zp is None or (ctx.is_static(b_zp) and not np.any(b_zp)) else b_zp
    za_shape = np.shape(za) if za is not None and ctx.is_static(za) else (ctx.shape(za) if za is not None else ())
    zb_shape = np.shape(zb) if zb is not None and ctx.is_static(zb) else (ctx.shape(zb) if zb is not None else ())
    za_rows = len(ash) >= 2 and tuple(za_shape) == tuple(ash[:-1]) + (1,)
    zb_cols = tuple(zb_shape) == (bsh[-1],) and len(bsh) == 2
    scalar_za = int(np.prod(za_shape)) == 1 and len(za_shape) <= 1
    scalar_zb = int(np.prod(zb_shape)) == 1 and len(zb_shape) <= 1
    if len(bsh) != 2 or len(ash) < 1 or (za is not None and not (za_rows or scalar_za)) or (
        zb is not None and not (zb_cols or scalar_zb)
    ):
        return ctx.emit(R.matmul(centered(ctx, a, a_zp), centered(ctx, b, b_zp), out_dtype="int32"))
    args = [av, bv]
    if za is not None:
        args.append(ctx.expr(np.asarray(za).reshape(()) if scalar_za and ctx.is_static(za) else za, "int32"))
    if zb is not None:
        args.append(ctx.expr(np.asarray(zb).reshape(()) if scalar_zb and ctx.is_static(zb) else zb, "int32"))
    if za is not None and scalar_za and not ctx.is_static(za) and len(za_shape):
        args[2] = ctx.emit(R.reshape(args[2], ()))
    if zb is not None and scalar_zb and not ctx.is_static(zb) and len(zb_shape):
        args[-1] = ctx.emit(R.reshape(args[-1], ()))
    return ctx.emit_te(
        _int_dense(za is not None, za_rows, zb is not None, zb_cols),
        *args,
        primfunc_name_hint="int_matmul",
        primfunc_attrs={"op_pattern": OUT_EWISE_FUSABLE},
    )


def _int_dense(has_za: bool, za_rows: bool, has_zb: bool, zb_cols: bool) -> Any:
    """The TE compute of ``int_matmul``'s 2-D-weight case."""

    def compute(a: te.Tensor, b: te.Tensor, *zps: te.Tensor) -> te.Tensor:
        za = zps[0] if has_za else None
        zb = zps[-1] if has_zb else None
        kdim, n = b.shape
        k = te.reduce_axis((0, kdim), name="k")
        out_shape = [*a.shape[:-1], n]

        def body(*idx: Any) -> Any:
            lead, j = idx[:-1], idx[-1]
            x = a[(*lead, k)].astype("int32")
            if za is not None:
                x = x - (za[(*lead, 0)] if za_rows else za[()])
            w = b[k, j].astype("int32")
            if zb is not None:
                w = w - (zb[j] if zb_cols else zb[()])
            return te.sum(x * w, axis=k)

        return te.compute(out_shape, body, name="int_matmul")

    return compute


def layer_norm(ctx: LowerCtx, x: relax.Expr, gamma: Any, beta: Any, axis: int, epsilon: float) -> relax.Expr:
    """Case 4: ``(x - mean) / sqrt(var + eps) * gamma + beta`` over the axes ``axis..``.

    float32/float64 inputs: one TE function (the sum, the squared deviations'
    sum and the normalization: one pass per statistic, no intermediate
    tensor); half inputs: normalized in float32 and scaled in their own type,
    as the reference.
    """
    rank = ctx.ndim(x)
    axis = axis % rank
    in_dt = ctx.dtype(x)
    ct = compute_dtype(ctx, x)
    norm_shape = list(ctx.shape(x)[axis:])
    if in_dt not in _LOW_FLOATS:
        g = _broadcast_to(ctx, ctx.expr(gamma, ct), norm_shape)
        args = [ctx.expr(x), g]
        if beta is not None:
            args.append(_broadcast_to(ctx, ctx.expr(beta, ct), norm_shape))
        return ctx.emit_te(_layer_norm_te(axis, float(epsilon), beta is not None), *args, primfunc_name_hint="layer_norm")
    xf = ctx.astype(x, ct)
    axes = list(range(axis, rank))
    mean = ctx.emit(R.mean(xf, axes, keepdims=True))
    d = ctx.emit(R.subtract(xf, mean))
    var = ctx.emit(R.mean(R.multiply(d, d), axes, keepdims=True))
    inv = ctx.emit(R.rsqrt(R.add(var, ctx.const(np.asarray(epsilon), ct))))
    y = ctx.astype(ctx.emit(R.multiply(d, inv)), in_dt)  # normalized in float32, scaled in the input's type
    y = ctx.emit(R.multiply(y, ctx.expr(gamma, in_dt)))
    if beta is not None:
        y = ctx.emit(R.add(y, ctx.expr(beta, in_dt)))
    return y


def _broadcast_to(ctx: LowerCtx, v: relax.Expr, shape: list[int]) -> relax.Expr:
    return v if list(ctx.shape(v)) == shape else ctx.emit(R.broadcast_to(v, shape))


def _layer_norm_te(axis: int, epsilon: float, has_beta: bool) -> Any:
    """The TE compute of ``layer_norm`` for float32/float64: three stages over the normalized axes."""

    def compute(x: te.Tensor, gamma: te.Tensor, *rest: te.Tensor) -> te.Tensor:
        shape = list(x.shape)
        lead, norm = shape[:axis], shape[axis:]
        count = 1
        for d in norm:
            count *= int(d)
        inv_n = 1.0 / count

        def axes(tag: str) -> list[Any]:
            return [te.reduce_axis((0, d), name=f"{tag}{i}") for i, d in enumerate(norm)]

        r1 = axes("k")
        total = te.compute(lead, lambda *i: te.sum(x[(*i, *r1)], axis=r1), name="ln_sum")
        r2 = axes("j")

        def sq(*i: Any) -> Any:
            dev = x[(*i, *r2)] - total[i] * inv_n
            return te.sum(dev * dev, axis=r2)

        sqs = te.compute(lead, sq, name="ln_sqsum")
        beta = rest[0] if has_beta else None

        def out(*i: Any) -> Any:
            row, col = i[:axis], i[axis:]
            y = (x[i] - total[row] * inv_n) / te.sqrt(sqs[row] * inv_n + epsilon) * gamma[col]
            return y + beta[col] if beta is not None else y

        return te.compute(shape, out, name="layer_norm")

    return compute


def np_of(ctx: LowerCtx, x: Any) -> np.dtype:
    """The numpy dtype of an operand."""
    from accelopt.targets.relax.lowering import np_dtype

    return np_dtype(ctx.dtype(x))
