"""Quantized ops (domain ``accelopt``): run-time quantization and integer matmuls.

The int8 passes write quantization first in QDQ form (the standard
``QuantizeLinear`` / ``DequantizeLinear``, plus ``DynamicQuantize`` below for
scales computed at run time); ``lower-quantized`` then turns each
dequantize-matmul pattern into ``QLinear`` / ``QAttention``, which multiply
the integers themselves. Ops:

1. ``DynamicQuantize(x){to, symmetric, granularity}`` -> ``(y, scale,
   zero_point)``: scales from the values themselves, per tensor
   (``granularity="tensor"``, scale shape ``[]``) or per row of the last axis
   (``"row"``, scale shape ``x.shape[:-1] + [1]``). ``to`` is ``int8`` or
   ``uint8``. Symmetric: ``scale = max|x| / 127``, zero point 0 (int8) or 128
   (uint8), values in [-127, 127] (or [1, 255]). Asymmetric: the range
   ``[min(x, 0), max(x, 0)]`` maps onto [-128, 127] (or [0, 255]),
   ``scale = range / 255``, ``zero_point = round(qmin - min / scale)``.
   A zero range (all zeros) gives the smallest normal float32 scale,
   ``2**-126``: every integer is then the zero point. ``y =
   saturate(round_half_even(x / scale) + zero_point)``, all in float32: for
   uint8, asymmetric, per tensor this is ONNX's ``DynamicQuantizeLinear``
   exactly, except that ONNX gives an all-zero tensor scale 1 (the integers
   agree). A per-row result dequantizes with the standard
   ``DequantizeLinear{axis=-1, block_size=K}``.
2. ``QLinear(x_q, x_scale, x_zero_point?, w_q[K,N], w_scale, w_zero_point?,
   bias?, y_scale?, y_zero_point?){activation}``: the integer form of
   ``Linear``: ``acc = (x_q - x_zp) @ (w_q - w_zp)`` in int32 (exact), then
   ``y = act(acc * (x_scale * w_scale) + bias)`` in float32. ``x_scale`` is
   per tensor or per row (``[..., 1]``), ``w_scale`` per tensor or per output
   channel (``[N]``). With ``y_scale`` the result is requantized:
   ``saturate(round(y / y_scale) + y_zero_point)`` in the zero point's type
   (int8 when absent); otherwise the output is float32.
3. ``QAttention(x_q, x_scale, x_zero_point?, w_q[H,3H], w_scale, w_zero_point?,
   qkv_bias?, mask?, attention_bias?){num_heads, scale, mask_filter_value,
   unidirectional}``: ``Attention`` whose packed QKV projection is an integer
   matmul as in 2; the scores and the context (``softmax(QK^T) V``, with the
   bias and masks of ``Attention``) stay float32. Output float32.

The integer matmul (``int_matmul``) is exact and BLAS-fast: the operands are
cast to float32 when ``K * max|a| * max|b| < 2**24`` (every partial sum is
then an exactly representable integer), else to float64 (exact below
``2**53``), and the result is converted to int32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.attention import ATTENTION_ATTRS, attention_from_qkv, attention_result, core_attrs
from accelopt.ir.ops.common import check_dtype_in
from accelopt.ir.ops.fused import DOMAIN, apply_activation, check_linear_operands, linear_result
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

#: integer types the quantized ops take
QINT_TYPES = frozenset({DType.INT8, DType.UINT8})
GRANULARITIES = ("tensor", "row")
#: the scale of an all-zero tensor or row: the smallest normal float32 (every integer is then the zero point)
ZERO_RANGE_SCALE = np.float32(np.finfo(np.float32).tiny)
_FLOAT_EXACT = 2.0**24
_DOUBLE_EXACT = 2.0**53


# ------------------------------------------------------------------ helpers
def qrange(dtype: np.dtype | DType, symmetric: bool) -> tuple[int, int]:
    """The integer range used: symmetric ranges are restricted to 255 levels around the zero point."""
    dt = dtype.np if isinstance(dtype, DType) else np.dtype(dtype)
    if dt == np.int8:
        return (-127, 127) if symmetric else (-128, 127)
    if dt == np.uint8:
        return (1, 255) if symmetric else (0, 255)
    raise ValueError(f"quantized type must be int8 or uint8, got {dt}")


def symmetric_zero_point(dtype: np.dtype | DType) -> int:
    dt = dtype.np if isinstance(dtype, DType) else np.dtype(dtype)
    return 128 if dt == np.uint8 else 0


def dynamic_qparams(x: np.ndarray, dtype: np.dtype, symmetric: bool, granularity: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (``dtype``) of case 1, shaped ``[]`` or ``x.shape[:-1] + [1]``."""
    xf = np.asarray(x, dtype=np.float32)
    qmin, qmax = qrange(dtype, symmetric)
    f32 = np.float32
    if granularity == "tensor":
        axis: int | None = None
        keep = False
    elif granularity == "row":
        axis, keep = -1, True
    else:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    empty = xf.size == 0
    if symmetric:
        amax = (
            np.zeros(xf.shape[:-1] + (1,) if keep else (), f32) if empty else np.abs(xf).max(axis=axis, keepdims=keep)
        )
        scale = (np.asarray(amax, f32) / f32(127)).astype(f32)
        scale = np.maximum(scale, ZERO_RANGE_SCALE)
        zp = np.full(scale.shape, symmetric_zero_point(dtype), dtype=dtype)
        return scale, zp
    if empty:
        lo = hi = np.zeros(xf.shape[:-1] + (1,) if keep else (), f32)
    else:
        lo = np.minimum(xf.min(axis=axis, keepdims=keep), f32(0))
        hi = np.maximum(xf.max(axis=axis, keepdims=keep), f32(0))
    scale = ((np.asarray(hi, f32) - np.asarray(lo, f32)) / f32(qmax - qmin)).astype(f32)
    scale = np.maximum(scale, ZERO_RANGE_SCALE)
    zp = np.rint(np.clip(f32(qmin) - np.asarray(lo, f32) / scale, qmin, qmax)).astype(dtype)
    return scale, zp


def quantize_values(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``saturate(round_half_even(x / scale) + zero_point)`` in float32; scale/zp broadcast against x."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    q += np.asarray(zero_point, np.float32)
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def dynamic_quantize(
    x: np.ndarray, dtype: np.dtype | DType = DType.INT8, symmetric: bool = True, granularity: str = "row"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Case 1: ``(y, scale, zero_point)``."""
    dt = dtype.np if isinstance(dtype, DType) else np.dtype(dtype)
    scale, zp = dynamic_qparams(x, dt, symmetric, granularity)
    return quantize_values(x, scale, zp, dt), scale, zp


def int_matmul(
    a: np.ndarray,
    b: np.ndarray,
    a_zero_point: np.ndarray | None = None,
    b_zero_point: np.ndarray | None = None,
) -> np.ndarray:
    """``(a - a_zp) @ (b - b_zp)`` as int32, computed exactly through float32 or float64 BLAS.

    ``a`` is ``[..., M, K]`` (int8/uint8); ``b`` is ``[K, N]``. ``a_zero_point``
    broadcasts against ``a`` (scalar or per row ``[..., M, 1]``);
    ``b_zero_point`` is a scalar or per column ``[N]``.
    """
    k = a.shape[-1]
    amax = _centered_max(a, a_zero_point)
    bmax = _centered_max(b, b_zero_point)
    bound = float(k) * amax * bmax
    if bound >= _DOUBLE_EXACT:
        raise ValueError(f"integer matmul with K={k} could exceed the exact float64 range")
    work = np.dtype(np.float32) if bound < _FLOAT_EXACT else np.dtype(np.float64)
    af: np.ndarray = a.astype(work)
    if a_zero_point is not None:
        af = af - np.asarray(a_zero_point).astype(work)
    bf: np.ndarray = b.astype(work)
    if b_zero_point is not None:
        bf = bf - np.asarray(b_zero_point).astype(work)
    if af.ndim > 2 and bf.ndim == 2:
        out = np.matmul(af.reshape(-1, k), bf).reshape(af.shape[:-1] + (bf.shape[-1],))
    else:
        out = np.matmul(af, bf)
    return np.asarray(out).astype(np.int32)


def _centered_max(x: np.ndarray, zp: np.ndarray | None) -> float:
    """An upper bound of ``|x - zp|`` (exact maxima, cheap next to the matmul)."""
    if x.size == 0:
        return 0.0
    hi, lo = float(x.max()), float(x.min())
    if zp is None:
        return max(abs(hi), abs(lo))
    z = np.asarray(zp, dtype=np.float64)
    return max(abs(hi - float(z.min())), abs(lo - float(z.max())), abs(hi - float(z.max())), abs(lo - float(z.min())))


def dequantized_matmul(
    x_q: np.ndarray,
    x_scale: np.ndarray,
    x_zp: np.ndarray | None,
    w_q: np.ndarray,
    w_scale: np.ndarray,
    w_zp: np.ndarray | None,
    bias: np.ndarray | None,
) -> np.ndarray:
    """``acc * (x_scale * w_scale) + bias`` in float32 with ``acc`` the exact int32 matmul (case 2)."""
    acc = int_matmul(x_q, w_q, x_zp, w_zp)
    mult = np.asarray(x_scale, np.float32) * np.asarray(w_scale, np.float32).reshape(-1)
    if mult.ndim == 1 and mult.size == 1:
        mult = mult.reshape(())
    y = acc.astype(np.float32) * mult
    if bias is not None:
        y = y + np.asarray(bias, np.float32)
    return y.astype(np.float32, copy=False)


def _opt(ins: Sequence[Any], i: int) -> Any:
    return ins[i] if len(ins) > i else None


# ------------------------------------------------------------ DynamicQuantize
def _dq_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64}))
    to = ctx.attrs["to"]
    if to not in QINT_TYPES:
        raise ctx.error(f"to must be int8 or uint8, got {to}")
    gran = ctx.attrs["granularity"]
    if gran not in GRANULARITIES:
        raise ctx.error(f"granularity must be one of {', '.join(GRANULARITIES)}, got {gran!r}")
    x = ctx.type(0)
    if gran == "tensor":
        pshape: tuple[Dim, ...] | None = ()
    elif x.shape is None:
        pshape = None
    else:
        if len(x.shape) < 1:
            raise ctx.error(f"per-row quantization needs rank >= 1, got {x}")
        pshape = tuple(x.shape[:-1]) + (1,)
    return [x.with_dtype(to), TensorType(DType.FLOAT32, pshape), TensorType(to, pshape)][: ctx.num_outputs]


def _dq_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    to: DType = attrs["to"]
    y, scale, zp = dynamic_quantize(ins[0], to.np, bool(attrs["symmetric"]), str(attrs["granularity"]))
    return [y, scale, zp][:n_out]


define_op(
    "DynamicQuantize",
    domain=DOMAIN,
    outputs=(1, 3),
    attrs={
        "to": AttrSpec("dtype", DType.INT8),
        "symmetric": AttrSpec("int", 1),
        "granularity": AttrSpec("str", "row"),
    },
    infer=_dq_infer,
    kernel=_dq_kernel,
    doc="Run-time quantization per tensor or per row (last axis) to int8/uint8; outputs y, scale, zero point.",
)


# ------------------------------------------------------------------- QLinear
def _check_qparams(ctx: InferContext, x_i: int, s_i: int, z_i: int, what: str) -> None:
    check_dtype_in(ctx, x_i, QINT_TYPES)
    check_dtype_in(ctx, s_i, frozenset({DType.FLOAT32}))
    if ctx.has(z_i) and ctx.type(z_i).dtype != ctx.type(x_i).dtype:
        raise ctx.error(f"{what} zero point is {ctx.type(z_i).dtype}, expected {ctx.type(x_i).dtype}")


def _check_weight_params(ctx: InferContext, w: TensorType, s_i: int, z_i: int) -> None:
    n = None if w.shape is None else w.shape[1]
    for i in (s_i, z_i):
        if not ctx.has(i):
            continue
        t = ctx.type(i)
        if t.shape is None:
            continue
        size = 1
        for d in t.shape:
            size = size * d if isinstance(d, int) and size != -1 else -1
        if len(t.shape) > 1 or (size not in (1, -1) and isinstance(n, int) and size != n):
            raise ctx.error(f"weight scale/zero point must be a scalar or [N={n}], got {t}")


def _qlinear_infer(ctx: InferContext) -> list[TensorType]:
    _check_qparams(ctx, 0, 1, 2, "x")
    _check_qparams(ctx, 3, 4, 5, "weight")
    check_linear_operands(ctx, 3, 6)
    x, w = ctx.type(0), ctx.type(3)
    _check_weight_params(ctx, w, 4, 5)
    out_dt = DType.FLOAT32
    if ctx.has(7):
        check_dtype_in(ctx, 7, frozenset({DType.FLOAT32}))
        out_dt = ctx.type(8).dtype if ctx.has(8) else DType.INT8
        if out_dt not in QINT_TYPES:
            raise ctx.error(f"output zero point must be int8 or uint8, got {out_dt}")
    elif ctx.has(8):
        raise ctx.error("an output zero point needs an output scale (input 7)")
    return linear_result(ctx, x, w, out_dt)


def _qlinear_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    x_q, x_scale, x_zp, w_q, w_scale = ins[0], ins[1], _opt(ins, 2), ins[3], ins[4]
    w_zp, bias, y_scale, y_zp = _opt(ins, 5), _opt(ins, 6), _opt(ins, 7), _opt(ins, 8)
    y = dequantized_matmul(x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias)
    y = apply_activation(y, str(attrs["activation"])).astype(np.float32, copy=False)
    if y_scale is None:
        return [y]
    dt = np.dtype(np.int8) if y_zp is None else y_zp.dtype
    zp = np.zeros((), dt) if y_zp is None else y_zp
    return [quantize_values(y, y_scale, zp, dt)]


define_op(
    "QLinear",
    domain=DOMAIN,
    inputs=(5, 9),
    attrs={"activation": AttrSpec("str", "none")},
    infer=_qlinear_infer,
    kernel=_qlinear_kernel,
    doc=(
        "act(((x_q - x_zp) @ (w_q - w_zp)) * x_scale * w_scale + bias): exact int32 accumulation, float32 "
        "result, or requantized with y_scale/y_zero_point."
    ),
)


# ----------------------------------------------------------------- QAttention
def _qattention_infer(ctx: InferContext) -> list[TensorType]:
    _check_qparams(ctx, 0, 1, 2, "x")
    _check_qparams(ctx, 3, 4, 5, "weight")
    x, w = ctx.type(0), ctx.type(3)
    result = attention_result(ctx, x, w, 7, DType.FLOAT32, bias_index=8)
    if w.shape is not None:
        _check_weight_params(ctx, w, 4, 5)
    return result


def _qattention_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    qkv = dequantized_matmul(ins[0], ins[1], _opt(ins, 2), ins[3], ins[4], _opt(ins, 5), _opt(ins, 6))
    out = attention_from_qkv(qkv, _opt(ins, 7), int(attrs["num_heads"]), bias=_opt(ins, 8), **core_attrs(attrs))
    return [out]


define_op(
    "QAttention",
    domain=DOMAIN,
    inputs=(5, 9),
    attrs=ATTENTION_ATTRS,
    infer=_qattention_infer,
    kernel=_qattention_kernel,
    doc=(
        "Attention whose packed QKV projection is an exact integer matmul (inputs as QLinear's 0-6, then mask "
        "and attention_bias)."
    ),
)

__all__ = [
    "GRANULARITIES",
    "QINT_TYPES",
    "attention_from_qkv",
    "dequantized_matmul",
    "dynamic_qparams",
    "dynamic_quantize",
    "int_matmul",
    "qrange",
    "quantize_values",
    "symmetric_zero_point",
]
