"""Relax lowerings of pooling, BatchNormalization and Resize (channels first, static shapes per bucket).

Cases:

1. ``MaxPool`` / ``AveragePool``: the reference's geometry (``onnx_pool.PoolGeometry``:
   pads, strides, dilations, ``ceil_mode``) is applied by an explicit ``nn.pad``
   (with -inf / the dtype's minimum, or 0) to exactly the extent the windows
   use, then an unpadded, floor-mode ``nn.max_pool*d`` / ``nn.avg_pool*d``; the
   average (over the whole window) is rescaled by ``window / counts``, the
   reference's per-position element counts, so ``count_include_pad`` and the
   ceil-mode overhang follow the reference, not TVM's own conventions. Half
   types average in float32.
2. ``MaxPool``'s ``Indices``: the windows gathered with a static index table
   (padding masked to -inf), ``argmax`` (the first maximum) and a second
   ``take`` mapping it to the reference's flat input position (``storage_order``).
3. ``GlobalAveragePool`` / ``GlobalMaxPool``: ``mean`` / ``max`` over the spatial axes.
4. ``BatchNormalization`` (inference): ``x * k + (B - mean * k)``, ``k = scale / sqrt(var + eps)``,
   in float32 (float64 stays); training mode is ``Unlowerable``.
5. ``Resize``: per resized axis, the reference's static ``[out, in]`` weight
   matrix (``onnx_resize.axis_weights``) as a ``matmul`` along that axis in float32,
   or a ``take`` when every row picks one element (nearest); extrapolated
   positions (``tf_crop_and_resize``) take the fill value. ``scales``/``sizes``/``roi``
   must be static.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.ops.onnx_pool import PoolGeometry
from accelopt.ir.ops.onnx_resize import axis_weights, output_plan, source_coords
from accelopt.targets.relax import emit
from accelopt.targets.relax.lowering import LowerCtx, Unlowerable, lower

R = relax.op
_POOLS = {1: ("NCW", R.nn.max_pool1d, R.nn.avg_pool1d), 2: ("NCHW", R.nn.max_pool2d, R.nn.avg_pool2d),
          3: ("NCDHW", R.nn.max_pool3d, R.nn.avg_pool3d)}  # fmt: skip


def _geometry(x: Any, ctx: LowerCtx, attrs: dict[str, Any]) -> PoolGeometry:
    try:
        return PoolGeometry(list(ctx.shape(x)[2:]), attrs)
    except ValueError as e:
        raise Unlowerable(str(e)) from e


def _pool(ctx: LowerCtx, x: relax.Expr, geo: PoolGeometry, kind: str, fill: float) -> relax.Expr:
    """Case 1: the pooled values, ``[N, C, *out]``, over ``x`` padded with ``fill``."""
    sp = len(geo.kernel)
    if sp not in _POOLS:
        raise Unlowerable(f"{sp}-d pooling is not supported (1-3 spatial dims)")
    widths = [0, 0, 0, 0]
    for i in range(sp):
        need = (geo.out[i] - 1) * geo.strides[i] + geo.window[i] - geo.spatial[i] - geo.begin[i]
        widths += [geo.begin[i], max(need, 0)]
    if any(widths):
        x = ctx.emit(R.nn.pad(x, widths, "constant", fill))
    layout, max_fn, avg_fn = _POOLS[sp]
    fn = max_fn if kind == "max" else avg_fn
    kw: dict[str, Any] = {"count_include_pad": True} if kind == "avg" else {}
    return ctx.emit(fn(x, geo.kernel, geo.strides, [0] * (2 * sp), geo.dilations, False, layout=layout, **kw))


def _indices(ctx: LowerCtx, x: relax.Expr, geo: PoolGeometry, column_major: bool) -> relax.Expr:
    """Case 2: int64 flat input positions of each window's first maximum."""
    row, inside, stored = geo.window_table(column_major)
    n_out, n_k = row.shape
    n, c = ctx.shape(x)[:2]
    flat = ctx.emit(R.reshape(x, [n, c, math.prod(geo.spatial)]))
    win = ctx.emit(R.reshape(R.take(flat, ctx.expr(row.reshape(-1)), axis=2), [n, c, n_out, n_k]))
    lowest = ctx.const(np.asarray(-np.inf, dtype=np.float32), ctx.dtype(win))
    win = ctx.emit(R.where(ctx.expr(inside), win, lowest))
    arg = ctx.emit(R.astype(R.argmax(win, axis=3), "int64"))  # [n, c, n_out]
    arg = ctx.emit(R.add(arg, ctx.expr(np.arange(n_out, dtype=np.int64) * n_k)))
    pos = ctx.emit(R.take(ctx.expr(stored.reshape(-1)), arg))  # [n, c, n_out]
    plane = math.prod(geo.spatial)
    channel = (np.arange(n)[:, None] * c + np.arange(c)[None, :]).astype(np.int64)[..., None] * plane
    return ctx.emit(R.reshape(R.add(pos, ctx.expr(channel)), [n, c, *geo.out]))


@lower("MaxPool")
def _max_pool(ctx, node, ins, attrs):
    """Cases 1, 2."""
    x = ctx.operand(node, 0, ins[0])
    geo = _geometry(x, ctx, attrs)
    dt = ctx.dtype(x)
    fill = float(np.iinfo(np.dtype(dt)).min) if dt.startswith(("int", "uint")) else -math.inf
    outs = [_pool(ctx, x, geo, "max", fill)]
    if len(node.outputs) > 1:
        outs.append(_indices(ctx, ctx.astype(x, "float32"), geo, int(attrs.get("storage_order", 0)) == 1))
    return outs


@lower("AveragePool")
def _avg_pool(ctx, node, ins, attrs):
    """Case 1."""
    x = ctx.operand(node, 0, ins[0])
    geo = _geometry(x, ctx, attrs)
    ct = emit.compute_dtype(ctx, x)
    mean = _pool(ctx, ctx.astype(x, ct), geo, "avg", 0.0)
    counts = geo.counts(bool(attrs.get("count_include_pad", 0)))
    rescale = (math.prod(geo.kernel) / counts).astype(ct)
    return [ctx.astype(ctx.emit(R.multiply(mean, ctx.expr(rescale))), ctx.dtype(x))]


@lower("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node, ins, attrs):
    """Case 3."""
    x = ctx.operand(node, 0, ins[0])
    axes = list(range(2, ctx.ndim(x)))
    if node.op == "GlobalMaxPool":
        return [ctx.emit(R.max(x, axes, keepdims=True))]
    ct = emit.compute_dtype(ctx, x)
    return [ctx.astype(ctx.emit(R.mean(ctx.astype(x, ct), axes, keepdims=True)), ctx.dtype(x))]


@lower("BatchNormalization")
def _batch_norm(ctx, node, ins, attrs):
    """Case 4."""
    if int(attrs.get("training_mode", 0)) == 1 or len(node.outputs) > 1:
        raise Unlowerable("training_mode=1 (batch statistics) is not lowered: inference graphs only")
    x = ctx.operand(node, 0, ins[0])
    ct = emit.compute_dtype(ctx, x)
    scale, bias, mean, var = (ctx.operand(node, i, ins[i], ct) for i in range(1, 5))
    eps = ctx.const(np.asarray(float(attrs.get("epsilon", 1e-5))), ct)
    k = ctx.emit(R.multiply(scale, R.rsqrt(R.add(var, eps))))
    shift = ctx.emit(R.subtract(bias, R.multiply(mean, k)))
    shape = [1, -1] + [1] * (ctx.ndim(x) - 2)
    y = ctx.emit(R.add(R.multiply(ctx.astype(x, ct), R.reshape(k, shape)), R.reshape(shift, shape)))
    return [ctx.astype(y, ctx.dtype(x))]


def _resize_axis(ctx: LowerCtx, y: relax.Expr, axis: int, w: np.ndarray) -> relax.Expr:
    """``tensordot(w, y, axes=([1], [axis]))`` with the new axis back at ``axis`` (case 5)."""
    rank = ctx.ndim(y)
    if np.all((w == 0) | (w == 1)) and np.all(w.sum(axis=1) == 1):
        return ctx.emit(R.take(y, ctx.expr(w.argmax(axis=1).astype(np.int64)), axis=axis))
    last = [i for i in range(rank) if i != axis] + [axis]
    moved = ctx.emit(R.permute_dims(y, last)) if axis != rank - 1 else y
    out = ctx.emit(R.matmul(ctx.astype(moved, "float32"), ctx.expr(np.ascontiguousarray(w.T).astype(np.float32))))
    if axis == rank - 1:
        return out
    back = [0] * rank
    for i, a in enumerate(last):
        back[a] = i
    return ctx.emit(R.permute_dims(out, back))


@lower("Resize")
def _resize(ctx, node, ins, attrs):
    """Case 5."""
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    rank = len(shape)
    opt = (list(ins[1:]) + [None, None, None])[:3]
    roi, scales, sizes = (None if v is None else ctx.static(node, i + 1, v) for i, v in enumerate(opt))
    try:
        out_shape, scale = output_plan(shape, attrs, scales, sizes)
    except ValueError as e:
        raise Unlowerable(str(e)) from e
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    axes = list(range(rank)) if attrs.get("axes") is None else [a % rank for a in attrs["axes"]]
    box = [(0.0, 1.0)] * rank
    if ctm == "tf_crop_and_resize" and roi is not None and roi.size:
        r = [float(v) for v in roi.reshape(-1)]
        owners = axes if len(r) // 2 == len(axes) else list(range(rank))
        for i, a in enumerate(owners):
            box[a] = (r[i], r[len(r) // 2 + i])
    dt = ctx.dtype(x)
    y = x
    for a in axes:
        if out_shape[a] == shape[a] and scale[a] == 1.0 and box[a] == (0.0, 1.0):
            continue
        coords, outside = source_coords(ctm, out_shape[a], shape[a], scale[a], box[a])
        y = _resize_axis(ctx, y, a, axis_weights(coords, shape[a], scale[a], attrs))
        if outside is not None and outside.any():
            where = [1] * rank
            where[a] = out_shape[a]
            fill = ctx.const(np.asarray(float(attrs.get("extrapolation_value", 0.0))), ctx.dtype(y))
            y = ctx.emit(R.where(ctx.expr(outside.reshape(where)), fill, y))
    if ctx.dtype(y) != dt and dt.startswith(("int", "uint")):
        info = np.iinfo(np.dtype(dt))
        y = ctx.emit(R.clip(R.round(y), float(info.min), float(info.max)))
    return [ctx.astype(y, dt)]
