"""Relax lowerings of MatMul, Gemm, Einsum and convolutions.

Cases:

1. ``MatMul`` of a run-time float activation by a 2-D float weight known at
   compile time is a ``linear`` (the kernel hook: targets pre-pack the
   weight); two run-time operands go through the ``matmul`` hook; integer
   operands multiply in their type (int32 accumulation is the IR's MatMul).
2. ``Gemm`` with a compile-time B is a ``linear`` (B transposed at compile
   time when ``transB``); ``alpha`` / ``beta`` scale the product and C
   afterwards, as the reference does (a bias is fused only when both are 1).
3. ``Einsum`` lowers to Relax's einsum with the output term made explicit.
4. ``Conv`` / ``ConvNHWC``: Relax conv1d/2d/3d (NCW/NCHW/NCDHW) with explicit
   pads, strides, dilations and groups (``auto_pad`` resolved first);
   channels-last inputs are transposed around it.
5. ``ConvTranspose``: the case-4 convolution of the input dilated by the
   strides (zeros interleaved with pad + reshape) with the flipped kernel, its
   in/out channels swapped per group, padded ``dilation * (kernel - 1) - pad``
   at each end plus ``output_padding`` at the end (a negative amount crops the
   dilated input); geometry from the reference's ``transpose_geometry``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.ir.ops.onnx_conv import resolve_pads
from accelopt.ir.ops.onnx_conv_transpose import transpose_geometry
from accelopt.ir.ops.onnx_math import parse_einsum
from accelopt.targets.relax import emit
from accelopt.targets.relax.kernels import Weight
from accelopt.targets.relax.lowering import LowerCtx, lower

R = relax.op
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def is_float_weight(ctx: LowerCtx, x: Any, w: Any) -> bool:
    """Case 1: a run-time float activation and a 2-D float weight known at compile time."""
    return (
        not ctx.is_static(x)
        and ctx.is_static(w)
        and np.ndim(w) == 2
        and ctx.dtype(w) in _FLOATS
        and ctx.dtype(x) in _FLOATS
        and ctx.ndim(x) >= 1
    )


@lower("MatMul")
def _matmul(ctx, node, ins, attrs):
    a, b = ins
    if is_float_weight(ctx, a, b):
        return [ctx.kernels.linear(ctx, node, a, Weight(np.asarray(b), ctx.key(node, 1)), None, "none")]
    dt = ctx.dtype(a) if not ctx.is_static(a) else ctx.dtype(b)
    return [ctx.kernels.matmul(ctx, node, ctx.operand(node, 0, a, dt), ctx.operand(node, 1, b, dt))]


@lower("Gemm")
def _gemm(ctx, node, ins, attrs):
    a = ctx.operand(node, 0, ins[0])
    dt = ctx.dtype(a)
    if attrs.get("transA", 0):
        a = ctx.emit(R.permute_dims(a, [1, 0]))
    b = ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if dt.startswith(("int", "uint")):
        # the reference scales integer products in float64 and casts back
        bb = ctx.operand(node, 1, b, dt)
        if attrs.get("transB", 0):
            bb = ctx.emit(R.permute_dims(bb, [1, 0]))
        y = ctx.emit(R.multiply(R.astype(R.matmul(a, bb), "float64"), ctx.const(np.float64(alpha))))
        if c is not None:
            y = ctx.emit(R.add(y, R.multiply(ctx.operand(node, 2, c, "float64"), ctx.const(np.float64(beta)))))
        return [ctx.astype(y, dt)]
    fused_bias = c if (alpha == 1.0 and beta == 1.0 and c is not None and np.ndim(c) <= 1) else None
    if ctx.is_static(b) and dt in _FLOATS:
        w = np.asarray(b)
        w = w.T if attrs.get("transB", 0) else w
        name = ctx.key(node, 1) + ("@T" if attrs.get("transB", 0) else "")
        y = ctx.kernels.linear(ctx, node, a, Weight(np.ascontiguousarray(w), name), fused_bias, "none")
    else:
        bb = ctx.operand(node, 1, b, dt)
        if attrs.get("transB", 0):
            bb = ctx.emit(R.permute_dims(bb, [1, 0]))
        y = ctx.kernels.matmul(ctx, node, a, bb)
        if fused_bias is not None:
            y = ctx.emit(R.add(y, ctx.operand(node, 2, c, dt)))
    if fused_bias is None:
        ct = emit.compute_dtype(ctx, y)
        y = ctx.astype(y, ct)
        if alpha != 1.0:
            y = ctx.emit(R.multiply(y, emit.scalar(ctx, alpha, y)))
        if c is not None:
            cc = ctx.operand(node, 2, c, ct)
            y = ctx.emit(R.add(y, cc if beta == 1.0 else R.multiply(cc, emit.scalar(ctx, beta, cc))))
        y = ctx.astype(y, dt)
    return [y]


@lower("Einsum")
def _einsum(ctx, node, ins, attrs):
    terms, rhs = parse_einsum(str(attrs["equation"]), len(ins))
    dt = next((ctx.dtype(x) for x in ins if not ctx.is_static(x)), ctx.dtype(ins[0]))
    work = "float32" if dt in ("float16", "bfloat16") else dt
    ops = [ctx.operand(node, i, x, work) for i, x in enumerate(ins)]
    out = ctx.emit(R.einsum(ops, ",".join(terms) + "->" + rhs))
    return [ctx.astype(out, dt)]


# ---------------------------------------------------------------- case 4
_CONV = {1: (R.nn.conv1d, "NCW", "OIW"), 2: (R.nn.conv2d, "NCHW", "OIHW"), 3: (R.nn.conv3d, "NCDHW", "OIDHW")}


def conv_nchw(ctx: LowerCtx, node: Node, x: relax.Expr, w: relax.Expr, b: Any, attrs: dict[str, Any]) -> relax.Expr:
    """``Conv`` of channels-first ``x`` by ``w`` [O, C/group, *kernel] with ONNX attributes (case 4)."""
    xs, ws = ctx.shape(x), ctx.shape(w)
    sp = len(xs) - 2
    if sp not in _CONV:
        raise ValueError(f"{sp}-d convolutions are not supported (1-3 spatial dims)")
    strides, dil, pads = resolve_pads(xs[2:], ws[2:], attrs)
    fn, layout, klayout = _CONV[sp]
    dt = ctx.dtype(x)
    ct = emit.compute_dtype(ctx, x)
    y = ctx.emit(
        fn(
            ctx.astype(x, ct),
            ctx.astype(w, ct),
            strides=strides,
            padding=pads,
            dilation=dil,
            groups=int(attrs.get("group", 1)),
            data_layout=layout,
            kernel_layout=klayout,
            out_dtype=ct,
        )
    )
    if b is not None:
        bias = ctx.expr(b, ct)
        y = ctx.emit(R.add(y, R.reshape(bias, [1, ws[0]] + [1] * sp)))
    return ctx.astype(y, dt)


@lower("Conv")
def _conv(ctx, node, ins, attrs):
    x, w = ctx.operand(node, 0, ins[0]), ctx.operand(node, 1, ins[1])
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    return [conv_nchw(ctx, node, x, w, ctx.operand(node, 2, b) if b is not None else None, attrs)]


@lower("ConvNHWC")
def _conv_nhwc(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    rank = ctx.ndim(x)
    sp = rank - 2
    to_first = [0, rank - 1, *range(1, rank - 1)]
    xc = ctx.emit(R.permute_dims(x, to_first))
    wperm = [sp + 1, sp, *range(sp)]  # [*kernel, C/group, O] -> [O, C/group, *kernel]
    if ctx.is_static(ins[1]):
        w = ctx.expr(np.ascontiguousarray(np.transpose(ins[1], wperm)), name=ctx.key(node, 1) + "@OI")
    else:
        w = ctx.emit(R.permute_dims(ctx.operand(node, 1, ins[1]), wperm))
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    y = conv_nchw(ctx, node, xc, w, ctx.operand(node, 2, b) if b is not None else None, attrs)
    return [ctx.emit(R.permute_dims(y, [0, *range(2, rank), 1]))]


# ---------------------------------------------------------------- case 5
def _dilate(ctx: LowerCtx, x: relax.Expr, axis: int, stride: int) -> relax.Expr:
    """``stride - 1`` zeros between the elements of ``axis``."""
    shape = list(ctx.shape(x))
    n = shape[axis]
    if stride == 1 or n <= 1:
        return x
    y = ctx.emit(R.reshape(x, shape[: axis + 1] + [1] + shape[axis + 1 :]))
    widths = [0] * (2 * len(shape) + 2)
    widths[2 * (axis + 1) + 1] = stride - 1
    y = ctx.emit(R.nn.pad(y, widths, "constant", 0.0))
    y = ctx.emit(R.reshape(y, shape[:axis] + [n * stride] + shape[axis + 1 :]))
    return ctx.emit(R.strided_slice(y, [axis], [0], [(n - 1) * stride + 1]))


@lower("ConvTranspose")
def _conv_transpose(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    xs = ctx.shape(x)
    sp = len(xs) - 2
    wshape = ctx.shape(ins[1])
    kernel = list(wshape[2:])
    strides, dil, extra, pads, _ = transpose_geometry(list(xs[2:]), kernel, attrs)
    group = int(attrs.get("group", 1))
    c, mg = wshape[0], wshape[1]
    swap = [0, 2, 1, *range(3, 3 + sp)]
    if ctx.is_static(ins[1]):
        w = np.asarray(ins[1]).reshape(group, c // group, mg, *kernel).transpose(swap)
        w = np.flip(w.reshape(group * mg, c // group, *kernel), axis=tuple(range(2, 2 + sp)))
        weight = ctx.expr(np.ascontiguousarray(w), name=ctx.key(node, 1) + "@flipped")
    else:
        wv = ctx.emit(R.reshape(ctx.operand(node, 1, ins[1]), [group, c // group, mg, *kernel]))
        weight = ctx.emit(R.reshape(R.permute_dims(wv, swap), [group * mg, c // group, *kernel]))
        for a in range(2, 2 + sp):
            weight = ctx.emit(R.flip(weight, a))
    y = x
    conv_pads = [0] * (2 * sp)
    for i in range(sp):
        y = _dilate(ctx, y, 2 + i, strides[i])
        reach = dil[i] * (kernel[i] - 1)
        lo, hi = reach - pads[i], reach - pads[i + sp] + extra[i]
        if lo < 0 or hi < 0:
            n = ctx.shape(y)[2 + i]
            y = ctx.emit(R.strided_slice(y, [2 + i], [max(-lo, 0)], [n - max(-hi, 0)]))
        conv_pads[i], conv_pads[i + sp] = max(lo, 0), max(hi, 0)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    conv_attrs = {"pads": conv_pads, "dilations": dil, "group": group}
    return [conv_nchw(ctx, node, y, weight, ctx.operand(node, 2, b) if b is not None else None, conv_attrs)]
