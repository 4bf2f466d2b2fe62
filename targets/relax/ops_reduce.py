"""Relax lowerings of reductions, softmax and the standard LayerNormalization.

Cases:

1. ``Reduce*`` with axes given as a (static) input; no axes reduces all,
   unless ``noop_with_empty_axes`` (then the op is the identity, or its
   elementwise part for L1/L2/SumSquare/LogSum/LogSumExp). Half inputs
   accumulate in float32 (Max/Min in their own type); integer results of a
   float computation (L2) are truncated, as the reference.
2. ``Softmax`` / ``LogSoftmax`` over one axis, stable (max subtracted), in
   float32 for half inputs; ``Hardmax`` is a one-hot of the first maximum.
3. ``LayerNormalization`` (ONNX) goes through the ``layer_norm`` kernel, its
   optional Mean / InvStdDev outputs are computed alongside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.ir.ops.common import normalize_axes, normalize_axis
from accelopt.targets.relax import emit
from accelopt.targets.relax.lowering import LowerCtx, lower, relax_dtype
from accelopt.targets.relax.ops_shape import static_ints

R = relax.op
_HALF = ("float16", "bfloat16")


def _stable_lse(ctx: LowerCtx, x: relax.Expr, axes: list[int], keep: bool) -> relax.Expr:
    """``log(sum(exp(x - m))) + m`` with ``m`` the max (0 where it is not finite), as the reference."""
    m = ctx.emit(R.max(x, axes, keepdims=True))
    m = ctx.emit(R.where(R.isfinite(m), m, emit.scalar(ctx, 0.0, m)))
    s = ctx.emit(R.add(R.log(R.sum(R.exp(R.subtract(x, m)), axes, keepdims=True)), m))
    return s if keep else ctx.emit(R.squeeze(s, axes))


_REDUCE: dict[str, Callable[[LowerCtx, relax.Expr, list[int], bool], relax.Expr]] = {
    "ReduceSum": lambda c, x, a, k: c.emit(R.sum(x, a, keepdims=k)),
    "ReduceMean": lambda c, x, a, k: c.emit(R.mean(x, a, keepdims=k)),
    "ReduceMax": lambda c, x, a, k: c.emit(R.max(x, a, keepdims=k)),
    "ReduceMin": lambda c, x, a, k: c.emit(R.min(x, a, keepdims=k)),
    "ReduceProd": lambda c, x, a, k: c.emit(R.prod(x, a, keepdims=k)),
    "ReduceL1": lambda c, x, a, k: c.emit(R.sum(R.abs(x), a, keepdims=k)),
    "ReduceL2": lambda c, x, a, k: c.emit(R.sqrt(R.sum(R.multiply(x, x), a, keepdims=k))),
    "ReduceSumSquare": lambda c, x, a, k: c.emit(R.sum(R.multiply(x, x), a, keepdims=k)),
    "ReduceLogSum": lambda c, x, a, k: c.emit(R.log(R.sum(x, a, keepdims=k))),
    "ReduceLogSumExp": _stable_lse,
}
#: the elementwise part of a reduction, for ``noop_with_empty_axes`` with no axes
_NOOP: dict[str, Callable[[LowerCtx, relax.Expr], relax.Expr]] = {
    "ReduceL1": lambda c, x: c.emit(R.abs(x)),
    "ReduceL2": lambda c, x: c.emit(R.abs(x)),
    "ReduceSumSquare": lambda c, x: c.emit(R.multiply(x, x)),
    "ReduceLogSum": lambda c, x: c.emit(R.log(x)),
    "ReduceLogSumExp": lambda c, x: c.emit(R.log(R.exp(x))),
}


def _reduce(op: str) -> Callable[..., list[Any]]:
    fn = _REDUCE[op]

    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.operand(node, 0, ins[0])
        dt = ctx.dtype(x)
        rank = ctx.ndim(x)
        axes = static_ints(ctx, node, ins, 1, "(axes)") or []
        work = dt
        if dt in _HALF and op not in ("ReduceMax", "ReduceMin"):
            work = "float32"
        elif dt == "bfloat16":
            work = "float32"
        elif op == "ReduceL2" and dt.startswith(("int", "uint")):
            work = "float64"
        xw = ctx.astype(x, work)
        if not axes and attrs.get("noop_with_empty_axes", 0):
            r = _NOOP[op](ctx, xw) if op in _NOOP else xw
        else:
            ax = normalize_axes(axes, rank) if axes else list(range(rank))
            r = fn(ctx, xw, sorted(ax), bool(attrs.get("keepdims", 1)))
        if dt.startswith(("int", "uint")) and ctx.dtype(r).startswith("float"):
            r = ctx.emit(R.trunc(r))
        return [ctx.astype(r, dt)]

    return low


for _name in _REDUCE:
    lower(_name)(_reduce(_name))


# ---------------------------------------------------------------- case 2
def _softmax_like(log: bool) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.operand(node, 0, ins[0])
        dt = ctx.dtype(x)
        axis = normalize_axis(int(attrs.get("axis", -1)), ctx.ndim(x))
        xf = ctx.astype(x, emit.compute_dtype(ctx, x))
        if log:
            d = ctx.emit(R.subtract(xf, R.max(xf, [axis], keepdims=True)))
            y = ctx.emit(R.subtract(d, R.log(R.sum(R.exp(d), [axis], keepdims=True))))
        else:
            y = ctx.emit(R.nn.softmax(xf, axis=axis))
        return [ctx.astype(y, dt)]

    return low


lower("Softmax")(_softmax_like(False))
lower("LogSoftmax")(_softmax_like(True))


@lower("Hardmax")
def _hardmax(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis = normalize_axis(int(attrs.get("axis", -1)), len(shape))
    idx = ctx.emit(R.argmax(ctx.astype(x, "float32") if ctx.dtype(x) in _HALF else x, axis=axis, keepdims=True))
    ar_shape = [1] * len(shape)
    ar_shape[axis] = shape[axis]
    ar = ctx.const(np.arange(shape[axis], dtype=np.int64).reshape(ar_shape))
    hot = ctx.emit(R.equal(R.astype(idx, "int64"), ar))
    return [ctx.astype(hot, ctx.dtype(x))]


# ---------------------------------------------------------------- case 3
@lower("LayerNormalization")
def _layer_normalization(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    axis = normalize_axis(int(attrs.get("axis", -1)), ctx.ndim(x))
    eps = float(attrs.get("epsilon", 1e-5))
    beta = ins[2] if len(ins) > 2 else None
    y = ctx.kernels.layer_norm(ctx, node, x, ins[1], beta, axis, eps)
    outs: list[Any] = [y]
    if len(node.outputs) > 1:  # Mean and InvStdDev, in the stash type
        rank = ctx.ndim(x)
        axes = list(range(axis, rank))
        xf = ctx.astype(x, emit.compute_dtype(ctx, x))
        mean = ctx.emit(R.mean(xf, axes, keepdims=True))
        d = ctx.emit(R.subtract(xf, mean))
        var = ctx.emit(R.mean(R.multiply(d, d), axes, keepdims=True))
        inv = ctx.emit(R.divide(emit.scalar(ctx, 1.0, var), R.sqrt(R.add(var, emit.scalar(ctx, eps, var)))))
        stash = relax_dtype(node.outputs[1].dtype)
        outs += [ctx.astype(mean, stash), ctx.astype(inv, stash)][: len(node.outputs) - 1]
    return outs
