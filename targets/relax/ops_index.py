"""Relax lowerings of indexing, sorting and scanning ops.

Cases:

1. ``Gather``, ``GatherElements``, ``GatherND``: negative indices are wrapped
   (``i + dim``) before the gather, as the reference kernels do; indices
   still out of range are clamped (``Gather`` through ``take``'s clip mode):
   the reference raises on them, a compiled kernel must not read out of
   bounds.
2. ``ScatterND`` / ``ScatterElements`` with ``none/add/mul/max/min``
   reductions (Relax ``update`` is ONNX's ``none``).
3. ``TopK`` (sorted, ties to the lower index as the reference's stable
   argsort), ``ArgMax`` / ``ArgMin`` (``select_last_index`` through a flip),
   ``CumSum`` (``exclusive`` / ``reverse``), ``OneHot``.
4. ``NonZero``: its output size depends on the data, so it lowers only when
   its input is known at compile time (then it folds); otherwise the node is
   ``Unlowerable`` and reported with every other one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.ir.ops.common import normalize_axis
from accelopt.targets.relax.lowering import LowerCtx, Unlowerable, lower

R = relax.op


def wrap_index(ctx: LowerCtx, node: Node, i: int, idx: Any, dim: Any, *, clamp: bool = False) -> relax.Expr:
    """Case 1: indices with negatives wrapped (``i + dim``), clamped into ``[0, dim)`` when static or ``clamp``."""
    if ctx.is_static(idx):
        a = np.asarray(idx).astype(np.int64)
        d = np.asarray(dim, np.int64)
        a = np.clip(np.where(a < 0, a + d, a), 0, d - 1)
        return ctx.expr(a, name=f"{ctx.key(node, i)}@wrapped")
    x = ctx.expr(idx, "int64")
    dv = ctx.expr(np.asarray(dim, np.int64))
    zero = ctx.const(np.asarray(0, np.int64))
    x = ctx.emit(R.where(R.less(x, zero), R.add(x, dv), x))
    if not clamp:
        return x
    return ctx.emit(R.maximum(R.minimum(x, R.subtract(dv, ctx.const(np.asarray(1, np.int64)))), zero))


def _data_axis_index(
    ctx: LowerCtx, node: Node, ins: list[Any], attrs: Mapping[str, Any], *, clamp: bool
) -> tuple[relax.Expr, int, relax.Expr]:
    """Gather's and the *Elements ops' operands: the data (input 0), the ``axis`` attribute normalized, and the
    indices (input 1) wrapped into that axis (``wrap_index``)."""
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis = normalize_axis(int(attrs.get("axis", 0)), len(shape))
    return x, axis, wrap_index(ctx, node, 1, ins[1], shape[axis], clamp=clamp)


@lower("Gather")
def _gather(ctx, node, ins, attrs):
    x, axis, idx = _data_axis_index(ctx, node, ins, attrs, clamp=False)
    return [ctx.emit(R.take(x, idx, axis=axis, mode="clip"))]


@lower("GatherElements")
def _gather_elements(ctx, node, ins, attrs):
    x, axis, idx = _data_axis_index(ctx, node, ins, attrs, clamp=True)
    return [ctx.emit(R.gather_elements(x, idx, axis=axis))]


def _nd_dims(shape: tuple[int, ...], b: int, k: int, rank: int) -> np.ndarray:
    """The sizes the last index axis runs over, shaped to broadcast against the indices."""
    return np.array(shape[b : b + k], np.int64).reshape((1,) * (rank - 1) + (k,))


@lower("GatherND")
def _gather_nd(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    b = int(attrs.get("batch_dims", 0))
    ishape = ctx.shape(ins[1])
    idx = wrap_index(ctx, node, 1, ins[1], _nd_dims(ctx.shape(x), b, ishape[-1], len(ishape)), clamp=True)
    return [ctx.emit(R.gather_nd(x, idx, batch_dims=b))]


# ---------------------------------------------------------------- case 2
_REDUCTIONS = {"none": "update", "": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


@lower("ScatterND")
def _scatter_nd(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    ishape = ctx.shape(ins[1])
    idx = wrap_index(ctx, node, 1, ins[1], _nd_dims(ctx.shape(x), 0, ishape[-1], len(ishape)), clamp=True)
    upd = ctx.operand(node, 2, ins[2], ctx.dtype(x))
    return [ctx.emit(R.scatter_nd(x, idx, upd, _REDUCTIONS[attrs.get("reduction", "none")]))]


@lower("ScatterElements")
def _scatter_elements(ctx, node, ins, attrs):
    x, axis, idx = _data_axis_index(ctx, node, ins, attrs, clamp=True)
    upd = ctx.operand(node, 2, ins[2], ctx.dtype(x))
    red = _REDUCTIONS[attrs.get("reduction", "none")]
    return [ctx.emit(R.scatter_elements(x, idx, upd, axis=axis, reduction=red))]


# ---------------------------------------------------------------- case 3
@lower("TopK")
def _topk(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    k = int(ctx.static(node, 1, ins[1], "(k)").reshape(-1)[0])
    axis = normalize_axis(int(attrs.get("axis", -1)), ctx.ndim(x))
    out = ctx.emit(R.topk(x, k, axis=axis, ret_type="both", largest=bool(attrs.get("largest", 1)), dtype="int64"))
    return [ctx.emit(relax.TupleGetItem(out, 0)), ctx.emit(relax.TupleGetItem(out, 1))]


def _arg(fn: Any) -> Any:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.operand(node, 0, ins[0])
        shape = ctx.shape(x)
        axis = normalize_axis(int(attrs.get("axis", 0)), len(shape))
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            r = ctx.emit(fn(R.flip(x, axis), axis=axis, keepdims=keep))
            r = ctx.emit(R.subtract(ctx.const(np.asarray(shape[axis] - 1, np.int64)), R.astype(r, "int64")))
        else:
            r = ctx.emit(fn(x, axis=axis, keepdims=keep))
        return [ctx.astype(r, "int64")]

    return low


lower("ArgMax")(_arg(R.argmax))
lower("ArgMin")(_arg(R.argmin))


@lower("CumSum")
def _cumsum(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    dt = ctx.dtype(x)
    axis = normalize_axis(int(ctx.static(node, 1, ins[1], "(axis)").reshape(-1)[0]), ctx.ndim(x))
    work = "float32" if dt in ("float16", "bfloat16") else dt
    a = ctx.astype(x, work)
    if attrs.get("reverse", 0):
        a = ctx.emit(R.flip(a, axis))
    c = ctx.emit(R.cumsum(a, axis=axis, dtype=work, exclusive=bool(attrs.get("exclusive", 0))))
    if attrs.get("reverse", 0):
        c = ctx.emit(R.flip(c, axis))
    return [ctx.astype(c, dt)]


@lower("OneHot")
def _one_hot(ctx, node, ins, attrs):
    depth = int(ctx.static(node, 1, ins[1], "(depth)").reshape(-1)[0])
    ishape = ctx.shape(ins[0])
    idx = wrap_index(ctx, node, 0, ins[0], depth)
    values = ctx.operand(node, 2, ins[2])
    r = len(ishape) + 1
    axis = normalize_axis(int(attrs.get("axis", -1)), r)
    ar_shape = [1] * r
    ar_shape[axis] = depth
    ar = ctx.const(np.arange(depth, dtype=np.int64).reshape(ar_shape))
    hot = ctx.emit(R.equal(R.expand_dims(idx, axis), ar))
    on = ctx.emit(R.take(values, ctx.const(np.asarray(1, np.int64)), axis=0, mode="clip"))
    off = ctx.emit(R.take(values, ctx.const(np.asarray(0, np.int64)), axis=0, mode="clip"))
    # the reference wraps negatives but gives all-off for indices out of range
    raw = ctx.operand(node, 0, ins[0], "int64")
    lo, hi = ctx.const(np.asarray(-depth, np.int64)), ctx.const(np.asarray(depth, np.int64))
    ok = ctx.emit(R.logical_and(R.greater_equal(raw, lo), R.less(raw, hi)))
    hot = ctx.emit(R.logical_and(hot, R.expand_dims(ok, axis)))
    return [ctx.emit(R.where(hot, on, off))]


# ---------------------------------------------------------------- case 4
@lower("NonZero")
def _nonzero(ctx, node, ins, attrs):
    raise Unlowerable("its output size depends on run-time data (only a NonZero of a constant folds)")
