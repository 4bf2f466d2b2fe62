"""TPU lowerings of pooling and resizing (channels first, static shapes).

Cases:

1. ``MaxPool`` / ``AveragePool``: one ``lax.reduce_window`` (max or add) with
   the geometry of the reference (``onnx_pool.PoolGeometry``: pads, strides,
   dilations, ``ceil_mode``); the ceil-mode overhang is padded with the
   reduction's identity and cut back to the output length. Averages divide by
   the reference's per-position counts (a constant), in float32.
2. ``MaxPool``'s ``Indices`` output: the windows gathered with a static index
   table (padding masked to -inf), first maximum per window, mapped to the
   reference's flat input positions (``storage_order`` 0 or 1).
3. ``GlobalAveragePool`` / ``GlobalMaxPool``: a mean / max over the spatial axes.
4. ``Resize``: each resized axis is a static ``[out, in]`` matrix from the
   reference (``onnx_resize.axis_weights``) applied with a float32 ``tensordot``
   at HIGHEST precision; ``nearest`` becomes a ``take`` instead. ``sizes``,
   ``scales`` and ``roi`` must be known at export time.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Node
from accelopt.ir.ops.onnx_pool import PoolGeometry
from accelopt.ir.ops.onnx_resize import axis_weights, output_plan, source_coords
from accelopt.targets.tpu.lowering import LowerCtx, lower
from accelopt.targets.tpu.ops_std import _emit, _f32


def _geometry(node: Node, x: Any, attrs: dict[str, Any]) -> PoolGeometry:
    try:
        return PoolGeometry([int(d) for d in x.shape[2:]], attrs)
    except ValueError as e:
        raise TargetError(f"node {node.name} ({node.op}): {e}") from e


def _reduce_window(x: Any, geo: PoolGeometry, init: Any, op: Any) -> Any:
    """Case 1: pooled values, ``[N, C, *out]``."""
    sp = len(geo.kernel)
    padding = [(0, 0), (0, 0)]
    for i in range(sp):
        need = (geo.out[i] - 1) * geo.strides[i] + geo.window[i] - geo.spatial[i] - geo.begin[i]
        padding.append((geo.begin[i], max(need, 0)))
    y = jax.lax.reduce_window(
        x,
        init,
        op,
        window_dimensions=(1, 1, *geo.kernel),
        window_strides=(1, 1, *geo.strides),
        padding=padding,
        window_dilation=(1, 1, *geo.dilations),
    )
    return y[(slice(None), slice(None), *(slice(0, n) for n in geo.out))]


def _max_indices(x: Any, geo: PoolGeometry, column_major: bool) -> Any:
    """Case 2: int64 flat input positions of each window's first maximum."""
    row, inside, stored = geo.window_table(column_major)
    n_out, n_k = row.shape
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    win = jnp.take(flat, jnp.asarray(row.reshape(-1)), axis=2).reshape(n, c, n_out, n_k)
    win = jnp.where(jnp.asarray(inside), win, -jnp.inf)
    arg = jnp.argmax(win, axis=-1)  # first maximum
    pos = jnp.take_along_axis(jnp.asarray(stored)[None, None], arg[..., None], axis=-1)[..., 0]
    plane = math.prod(geo.spatial)
    channel = (jnp.arange(n)[:, None] * c + jnp.arange(c)[None, :])[..., None] * plane
    return (channel + pos).reshape(n, c, *geo.out)


@lower("MaxPool")
def _max_pool(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
    """Cases 1, 2."""
    x = ctx.jx(ins[0])
    geo = _geometry(node, x, attrs)
    init = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
    y = _reduce_window(x, geo, jnp.asarray(init, x.dtype), jax.lax.max)
    outs = [y]
    if len(node.outputs) > 1:
        idx = _max_indices(x.astype(jnp.float32), geo, int(attrs.get("storage_order", 0)) == 1)
        outs.append(idx.astype(ctx.out_dtype(node, 1)))
    return _emit(ctx, node, ins, outs)


@lower("AveragePool")
def _avg_pool(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
    """Case 1."""
    x = ctx.jx(ins[0])
    geo = _geometry(node, x, attrs)
    total = _reduce_window(_f32(x), geo, jnp.asarray(0, _f32(x).dtype), jax.lax.add)
    counts = geo.counts(bool(attrs.get("count_include_pad", 0))).astype(np.float32)
    return _emit(ctx, node, ins, [(total / counts).astype(ctx.out_dtype(node))])


@lower("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
    """Case 3."""
    x = ctx.jx(ins[0])
    axes = tuple(range(2, x.ndim))
    if node.op == "GlobalMaxPool":
        return _emit(ctx, node, ins, [jnp.max(x, axis=axes, keepdims=True)])
    return _emit(ctx, node, ins, [jnp.mean(_f32(x), axis=axes, keepdims=True).astype(ctx.out_dtype(node))])


@lower("Resize")
def _resize(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
    """Case 4."""
    x = ctx.jx(ins[0])
    opt = list(ins[1:]) + [None] * (4 - len(ins))
    roi, scales, sizes = (None if v is None else ctx.static(node, i + 1, v) for i, v in enumerate(opt[:3]))
    try:
        out_shape, scale = output_plan(x.shape, attrs, scales, sizes)
    except ValueError as e:
        raise TargetError(f"node {node.name} (Resize): {e}") from e
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    axes = list(range(x.ndim)) if attrs.get("axes") is None else [a % x.ndim for a in attrs["axes"]]
    box = [(0.0, 1.0)] * x.ndim
    if ctm == "tf_crop_and_resize" and roi is not None and roi.size:
        r = [float(v) for v in roi.reshape(-1)]
        owners = axes if len(r) // 2 == len(axes) else list(range(x.ndim))
        for i, a in enumerate(owners):
            box[a] = (r[i], r[len(r) // 2 + i])
    fill = float(attrs.get("extrapolation_value", 0.0))
    y = x if attrs.get("mode", "nearest") == "nearest" else x.astype(jnp.float32)
    for a in axes:
        if out_shape[a] == x.shape[a] and scale[a] == 1.0 and box[a] == (0.0, 1.0):
            continue
        coords, outside = source_coords(ctm, out_shape[a], x.shape[a], scale[a], box[a])
        w = axis_weights(coords, x.shape[a], scale[a], attrs)
        one_hot = bool(np.all((w == 0) | (w == 1)) and np.all(w.sum(axis=1) == 1))
        if one_hot:
            y = jnp.take(y, jnp.asarray(w.argmax(axis=1)), axis=a)
        else:
            y = jnp.moveaxis(
                jnp.tensordot(
                    jnp.asarray(w, jnp.float32),
                    y.astype(jnp.float32),
                    axes=([1], [a]),
                    precision=jax.lax.Precision.HIGHEST,
                ),
                0,
                a,
            )
        if outside is not None and outside.any():
            shape = [1] * x.ndim
            shape[a] = out_shape[a]
            y = jnp.where(jnp.asarray(outside.reshape(shape)), jnp.asarray(fill, y.dtype), y)
    dt = ctx.out_dtype(node)
    if jnp.issubdtype(dt, jnp.integer) and y.dtype != dt:
        info = jnp.iinfo(dt)
        y = jnp.clip(jnp.round(y), info.min, info.max)
    return _emit(ctx, node, ins, [y.astype(dt)])
