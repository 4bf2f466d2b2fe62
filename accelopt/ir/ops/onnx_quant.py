"""Standard ONNX quantization ops (latest opset) over the IR's integer types.

Cases handled:

1. QuantizeLinear: ``y = saturate(round_half_even(x / scale) + zero_point)``
   per tensor (scalar scale), per axis (1-D scale along ``axis``) or blocked
   (``block_size``); output dtype from the zero point, else ``output_dtype``
   (an ONNX TensorProto code), else uint8. Targets uint8, int8, int16.
2. DequantizeLinear: ``y = (x - zero_point) * scale`` computed in float32,
   output dtype from the scale (or ``output_dtype``); x may be int32.
3. DynamicQuantizeLinear: uint8 with the range widened to include 0; when the
   input is all zero the scale is 1.0, as in ONNX Runtime.
4. MatMulInteger: int8/uint8 operands with optional zero points (scalar,
   per-row of A, per-column of B), int32 result, computed exactly through
   float64 BLAS (sums stay far below 2**53).
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import (
    FLOAT_TYPES,
    Attrs,
    Ins,
    check_dtype_in,
    normalize_axis,
    onnx_dtype,
)
from accelopt.ir.ops.onnx_math import _matmul_infer
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import TensorType

Q_TYPES = frozenset({DType.UINT8, DType.INT8, DType.INT16})
DQ_TYPES = Q_TYPES | {DType.INT32}
_RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.int16): (-32768, 32767),
}


def expand_qparam(value: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """Reshape/replicate a scale or zero point so it broadcasts against ``shape``."""
    if value.ndim == 0 or value.size == 1 and not block_size:
        return value.reshape(())
    axis = normalize_axis(axis, len(shape))
    if not block_size:
        if value.ndim != 1 or value.shape[0] != shape[axis]:
            raise ValueError(
                f"per-axis parameter of shape {list(value.shape)} does not match axis {axis} of {list(shape)}"
            )
        dims = [1] * len(shape)
        dims[axis] = value.size
        return value.reshape(dims)
    if block_size < 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    value = np.repeat(value, block_size, axis=axis)
    if value.shape[axis] != shape[axis]:
        value = np.take(value, np.arange(shape[axis]), axis=axis)
    if value.shape != tuple(shape):
        raise ValueError(f"blocked parameter of shape {list(value.shape)} does not match {list(shape)}")
    return value


def _q_out_dtype(ctx: InferContext) -> DType:
    code = ctx.attrs["output_dtype"]
    if ctx.has(2):
        dt = ctx.type(2).dtype
        if code and onnx_dtype(code, ctx) != dt:
            raise ctx.error(f"output_dtype {onnx_dtype(code, ctx)} differs from the zero point's {dt}")
    else:
        dt = onnx_dtype(code, ctx) if code else DType.UINT8
    if dt not in Q_TYPES:
        raise ctx.error(f"quantized dtype {dt} is not supported (uint8, int8, int16)")
    return dt


def _quantize_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, FLOAT_TYPES | {DType.INT32})
    check_dtype_in(ctx, 1, FLOAT_TYPES)
    return [ctx.type(0).with_dtype(_q_out_dtype(ctx))]


def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    out_dtype: np.dtype,
    axis: int = 1,
    block_size: int = 0,
    precision: int = 0,
) -> np.ndarray:
    s = expand_qparam(scale, x.shape, axis, block_size)
    work = DType.from_onnx(precision).np if precision else s.dtype
    if work not in (np.dtype(np.float32), np.dtype(np.float64)):
        work = np.dtype(np.float32)
    q = np.rint(x.astype(work, copy=False) / s.astype(work, copy=False))
    if zero_point is not None:
        q += expand_qparam(zero_point, x.shape, axis, block_size).astype(work)
    lo, hi = _RANGES[np.dtype(out_dtype)]
    np.clip(q, lo, hi, out=q)
    return q.astype(out_dtype)


def _quantize(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    code = attrs["output_dtype"]
    out = zp.dtype if zp is not None else (DType.from_onnx(code).np if code else np.dtype(np.uint8))
    return [quantize(x, scale, zp, out, attrs["axis"], attrs["block_size"], attrs["precision"])]


define_op(
    "QuantizeLinear",
    inputs=(2, 3),
    infer=_quantize_infer,
    kernel=_quantize,
    attrs={
        "axis": AttrSpec("int", 1),
        "block_size": AttrSpec("int", 0),
        "output_dtype": AttrSpec("int", 0),
        "precision": AttrSpec("int", 0),
        "saturate": AttrSpec("int", 1),
    },
    doc="output_dtype/precision are ONNX TensorProto codes; saturate only matters for float8",
)


def _dequantize_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, DQ_TYPES)
    check_dtype_in(ctx, 1, FLOAT_TYPES)
    if ctx.has(2) and ctx.type(2).dtype != ctx.type(0).dtype:
        raise ctx.error(f"zero point dtype {ctx.type(2).dtype} differs from x's {ctx.type(0).dtype}")
    code = ctx.attrs["output_dtype"]
    dt = onnx_dtype(code, ctx) if code else ctx.type(1).dtype
    return [ctx.type(0).with_dtype(dt)]


def dequantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """(x - zero_point) * scale in float32, returned in float32."""
    d = x.astype(np.float32)
    if zero_point is not None:
        d -= expand_qparam(zero_point, x.shape, axis, block_size).astype(np.float32)
    d *= expand_qparam(scale, x.shape, axis, block_size).astype(np.float32)
    return d


def _dequantize(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    code = attrs["output_dtype"]
    out = DType.from_onnx(code).np if code else scale.dtype
    return [dequantize(x, scale, zp, attrs["axis"], attrs["block_size"]).astype(out, copy=False)]


define_op(
    "DequantizeLinear",
    inputs=(2, 3),
    infer=_dequantize_infer,
    kernel=_dequantize,
    attrs={"axis": AttrSpec("int", 1), "block_size": AttrSpec("int", 0), "output_dtype": AttrSpec("int", 0)},
)


def _dql_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, frozenset({DType.FLOAT32}))
    return [ctx.type(0).with_dtype(DType.UINT8), TensorType(DType.FLOAT32, ()), TensorType(DType.UINT8, ())][
        : ctx.num_outputs
    ]


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.float32(np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)))
    y = np.rint(x / scale)
    y += zp
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8), np.array(scale, dtype=np.float32), np.array(zp, dtype=np.uint8)


define_op(
    "DynamicQuantizeLinear",
    outputs=3,
    infer=_dql_infer,
    kernel=lambda ins, a, n: list(dynamic_quantize(ins[0])),
)


def _mmi_infer(ctx: InferContext) -> list[TensorType]:
    i8 = frozenset({DType.INT8, DType.UINT8})
    check_dtype_in(ctx, 0, i8)
    check_dtype_in(ctx, 1, i8)
    for zi, xi in ((2, 0), (3, 1)):
        if ctx.has(zi) and ctx.type(zi).dtype != ctx.type(xi).dtype:
            raise ctx.error(f"zero point {zi} has dtype {ctx.type(zi).dtype}, expected {ctx.type(xi).dtype}")
    # shape rules are MatMul's; the dtype check there needs same dtypes, so call it on a view
    a, b = ctx.type(0), ctx.type(1)
    sub = InferContext(
        ctx.op, ctx.node_name, [a.with_dtype(DType.INT32), b.with_dtype(DType.INT32)], [None, None], {}, 1
    )
    return [_matmul_infer(sub)[0].with_dtype(DType.INT32)]


def matmul_integer(
    a: np.ndarray, b: np.ndarray, a_zero_point: np.ndarray | None = None, b_zero_point: np.ndarray | None = None
) -> np.ndarray:
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    if a_zero_point is not None:
        azp = a_zero_point.astype(np.float64)
        if azp.ndim == 1 and azp.size > 1:
            azp = azp.reshape(-1, 1)  # one zero point per row of A
        af -= azp
    if b_zero_point is not None:
        bf -= b_zero_point.astype(np.float64)  # scalar or per column (last axis) of B
    return np.asarray(np.matmul(af, bf)).astype(np.int64).astype(np.int32)


define_op(
    "MatMulInteger",
    inputs=(2, 4),
    infer=_mmi_infer,
    kernel=lambda ins, a, n: [matmul_integer(*ins, *([None] * (4 - len(ins))))],
)
