"""Relax lowerings of the ops that create, reshape, join and split tensors.

Cases:

1. Shape queries (``Shape``, ``Size``) return numpy values computed from the
   static shape of their input, so the shape arithmetic after them folds at
   lowering time (every function has static shapes).
2. Ops that take shapes, axes, pads or repeats (Reshape, Expand, Slice,
   Squeeze, Unsqueeze, Pad, Tile, Split...) need those inputs known at compile
   time; otherwise the node is ``Unlowerable`` (reported with every other one).
3. Constants that are too large to fold (``ConstantOfShape``, ``Range``,
   ``EyeLike`` of a big shape) are computed by the compiled function
   (``R.full``, ``R.arange``...) instead of being stored.
4. ``Slice`` with positive steps is ``strided_slice``; negative steps, and
   ``Pad`` in reflect/edge/wrap modes, are index maps written as TE computes.
5. ``Dropout`` is inference-only: the output is the input, the mask all true.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tvm import relax, te, tirx

from accelopt.ir.graph import Node
from accelopt.ir.ops.common import normalize_axes, normalize_axis, slice_bounds, slice_length
from accelopt.targets.relax.lowering import LowerCtx, Unlowerable, lower, relax_dtype

R = relax.op


def ints(arr: Any) -> list[int]:
    return [] if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]


def static_ints(ctx: LowerCtx, node: Node, ins: list[Any], i: int, what: str) -> list[int] | None:
    """Input ``i`` as a list of ints (None when omitted); ``Unlowerable`` when only known at run time."""
    if len(ins) <= i or ins[i] is None:
        return None
    return ints(ctx.static(node, i, ins[i], what))


def index_map(
    ctx: LowerCtx, x: relax.Expr, out_shape: Sequence[int], fn: Callable[[list[Any]], list[Any]], name: str
) -> relax.Var:
    """A TE gather ``out[i] = x[fn(i)]`` (case 4): ``fn`` maps output index expressions to input ones."""

    def compute(t: te.Tensor) -> te.Tensor:
        return te.compute(list(out_shape), lambda *idx: t[tuple(fn(list(idx)))], name=name)

    return ctx.emit_te(compute, x, primfunc_name_hint=name)


# ---------------------------------------------------------------- case 1
@lower("Shape")
def _shape(ctx, node, ins, attrs):
    shape = list(ctx.shape(ins[0]))
    rank = len(shape)
    start = attrs.get("start", 0) or 0
    end = attrs.get("end")
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else max(0, min(rank, end + rank if end < 0 else end))
    return [np.array(shape[start:end], dtype=np.int64)]


@lower("Size")
def _size(ctx, node, ins, attrs):
    return [np.array(math.prod(ctx.shape(ins[0])), dtype=np.int64)]


# ---------------------------------------------------------------- case 3
@lower("Constant")
def _constant(ctx, node, ins, attrs):
    return [np.asarray(attrs["value"])]


@lower("ConstantOfShape")
def _constant_of_shape(ctx, node, ins, attrs):
    shape = static_ints(ctx, node, ins, 0, "(shape)") or []
    value = attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dt = relax_dtype(fill.dtype)
    return [ctx.emit(R.full(shape, ctx.const(fill.reshape(())), dt))]


@lower("Range")
def _range(ctx, node, ins, attrs):
    start, limit, delta = (ctx.static(node, i, ins[i], "(range bound)").reshape(()) for i in range(3))
    from accelopt.ir.registry import get_op

    return [ctx.expr(get_op("Range").kernel([start, limit, delta], attrs, 1)[0], name=node.outputs[0].name)]


@lower("EyeLike")
def _eye_like(ctx, node, ins, attrs):
    n, m = ctx.shape(ins[0])
    dt = node.outputs[0].dtype.np
    return [ctx.expr(np.eye(n, m, k=int(attrs["k"]), dtype=dt), name=node.outputs[0].name)]


# ---------------------------------------------------------------- case 2
@lower("Reshape")
def _reshape(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    in_shape = ctx.shape(x)
    target = static_ints(ctx, node, ins, 1, "(shape)") or []
    if not attrs.get("allowzero", 0):
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(in_shape) // known if known else 0
    return [ctx.emit(R.reshape(x, target))]


@lower("Flatten")
def _flatten(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis = normalize_axis(int(attrs.get("axis", 1)), len(shape) + 1) if shape else 0
    return [ctx.emit(R.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:]))))]


@lower("Squeeze")
def _squeeze(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = list(ctx.shape(x))
    axes = static_ints(ctx, node, ins, 1, "(axes)")
    drop = set(normalize_axes(axes, len(shape))) if axes is not None else {i for i, d in enumerate(shape) if d == 1}
    return [ctx.emit(R.reshape(x, [d for i, d in enumerate(shape) if i not in drop]))]


@lower("Unsqueeze")
def _unsqueeze(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = list(ctx.shape(x))
    raw = static_ints(ctx, node, ins, 1, "(axes)") or []
    for a in sorted(normalize_axes(raw, len(shape) + len(raw))):
        shape.insert(a, 1)
    return [ctx.emit(R.reshape(x, shape))]


@lower("Transpose")
def _transpose(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    perm = attrs.get("perm") or tuple(reversed(range(ctx.ndim(x))))
    return [ctx.emit(R.permute_dims(x, [int(p) for p in perm]))]


@lower("Expand")
def _expand(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = static_ints(ctx, node, ins, 1, "(shape)") or []
    out = np.broadcast_shapes(ctx.shape(x), tuple(shape))
    return [ctx.emit(R.broadcast_to(x, out)) if tuple(out) != ctx.shape(x) else x]


@lower("Tile")
def _tile(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    return [ctx.emit(R.tile(x, static_ints(ctx, node, ins, 1, "(repeats)") or []))]


@lower("Concat")
def _concat(ctx, node, ins, attrs):
    dt = relax_dtype(node.outputs[0].dtype)
    vals = [ctx.operand(node, i, x, dt) for i, x in enumerate(ins) if x is not None]
    nonempty = [v for v in vals if math.prod(ctx.shape(v)) > 0] or vals[:1]
    axis = normalize_axis(int(attrs["axis"]), ctx.ndim(vals[0]))
    if len(nonempty) == 1:
        return [nonempty[0]]
    return [ctx.emit(R.concat(nonempty, axis=axis))]


@lower("Split")
def _split(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    axis = normalize_axis(int(attrs.get("axis", 0)), len(shape))
    n_out = len(node.outputs)
    sizes = static_ints(ctx, node, ins, 1, "(split)")
    if sizes is None:
        dim = shape[axis]
        chunk = -(-dim // n_out)
        sizes = [chunk if i < n_out - 1 else dim - chunk * (n_out - 1) for i in range(n_out)]
    outs = []
    start = 0
    for s in sizes:
        outs.append(ctx.emit(R.strided_slice(x, [axis], [start], [start + s])))
        start += s
    return outs


# ---------------------------------------------------------------- case 4
@lower("Slice")
def _slice(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    starts = static_ints(ctx, node, ins, 1, "(starts)") or []
    ends = static_ints(ctx, node, ins, 2, "(ends)") or []
    axes = static_ints(ctx, node, ins, 3, "(axes)")
    steps = static_ints(ctx, node, ins, 4, "(steps)")
    axes = normalize_axes(axes, len(shape)) if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    begin = [0] * len(shape)
    step = [1] * len(shape)
    out_shape = list(shape)
    for a, s0, e0, st in zip(axes, starts, ends, steps):
        s, e, st = slice_bounds(s0, e0, st, shape[a])
        begin[a], step[a], out_shape[a] = s, st, slice_length(s, e, st)
    if all(st > 0 for st in step):
        ends_ = [b + (n - 1) * st + 1 if n else b for b, n, st in zip(begin, out_shape, step)]
        if out_shape == list(shape):
            return [x]
        return [ctx.emit(R.strided_slice(x, list(range(len(shape))), begin, ends_, step))]
    return [index_map(ctx, x, out_shape, lambda i: [b + j * st for j, b, st in zip(i, begin, step)], "slice")]


def _pad_index(mode: str, j: Any, lo: int, n: int) -> Any:
    """Input index of output index ``j`` along an axis of size ``n`` padded by ``lo`` in front."""
    k = j - lo
    if mode == "edge":
        return tirx.max(tirx.min(k, n - 1), 0)
    if mode == "wrap":
        return tirx.floormod(k, n)
    # reflect (numpy's, without repeating the edge): period 2n - 2
    if n == 1:
        return k * 0
    p = tirx.floormod(k, 2 * n - 2)
    return tirx.if_then_else(p < n, p, 2 * n - 2 - p)


@lower("Pad")
def _pad(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    shape = ctx.shape(x)
    rank = len(shape)
    pads = static_ints(ctx, node, ins, 1, "(pads)") or []
    axes = static_ints(ctx, node, ins, 3, "(axes)")
    axes = normalize_axes(axes, rank) if axes is not None else list(range(rank))
    widths = [(0, 0)] * rank
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[k + len(axes)])
    if any(lo < 0 or hi < 0 for lo, hi in widths):  # negative pads crop first
        begin = [max(-lo, 0) for lo, _ in widths]
        end = [d - max(-hi, 0) for d, (_, hi) in zip(shape, widths)]
        x = ctx.emit(R.strided_slice(x, list(range(rank)), begin, end))
        shape = ctx.shape(x)
        widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    if not any(lo or hi for lo, hi in widths):
        return [x]
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        fill: float | int = 0
        if len(ins) > 2 and ins[2] is not None:
            v = ctx.static(node, 2, ins[2], "(constant_value)")
            fill = np.asarray(v).reshape(-1)[0].item() if v.size else 0
        return [ctx.emit(R.nn.pad(x, _flat_pads(widths), "constant", fill))]
    out_shape = [d + lo + hi for d, (lo, hi) in zip(shape, widths)]
    return [
        index_map(
            ctx, x, out_shape, lambda i: [_pad_index(mode, j, lo, n) for j, (lo, _), n in zip(i, widths, shape)], "pad"
        )
    ]


def _flat_pads(widths: Sequence[tuple[int, int]]) -> list[int]:
    """Relax ``nn.pad`` widths: ``[before_0, after_0, before_1, after_1, ...]``."""
    return [w for pair in widths for w in pair]


@lower("Trilu")
def _trilu(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    k = static_ints(ctx, node, ins, 1, "(k)")
    kk = k[0] if k else 0
    return [ctx.emit(R.triu(x, kk) if attrs.get("upper", 1) else R.tril(x, kk))]


# ---------------------------------------------------------------- case 5
@lower("Dropout")
def _dropout(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    outs: list[Any] = [x]
    if len(node.outputs) > 1:
        outs.append(ctx.emit(R.ones(ctx.shape(x), "bool")))
    if len(ins) > 2 and ins[2] is not None and not ctx.is_static(ins[2]):
        raise Unlowerable("training_mode must be known at compile time")
    return outs
