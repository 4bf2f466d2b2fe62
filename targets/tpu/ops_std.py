"""TPU lowerings of the standard ONNX ops (latest-opset semantics: axes, splits, pads as inputs).

Cases, by family:

1. Elementwise unary/binary/ternary ops map to jax.numpy; broadcasting is numpy's.
2. Shape ops (Shape, Size) return numpy values even for traced inputs, so the
   shape arithmetic after them folds at trace time; ops that take shapes,
   axes, pads or repeats (Reshape, Expand, Slice, Squeeze, Pad, Tile...) need
   those inputs static and raise ``TargetError`` otherwise.
3. Reductions, Softmax and LayerNormalization compute in f32 when their input
   is bf16/f16 and cast back (TPU vector units run f32; it keeps accuracy).
4. MatMul, Gemm and Einsum go through the policy matmul (bf16 x bf16 -> f32
   by default); their weight inputs arrive pre-transposed and padded.
5. Ops whose output size depends on data (NonZero) lower only when their
   input is static (folded with the reference kernel).
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node
from accelopt.targets.tpu.lowering import (
    BF16,
    LowerCtx,
    _nbytes,
    jax_dtype,
    lower,
    rhs_weight,
)

_LOW_FLOATS = (jnp.bfloat16, jnp.float16)


def _f32(x: Any) -> Any:
    """Compute dtype for accuracy-sensitive ops: bf16/f16 -> f32 (case 3)."""
    return x.astype(jnp.float32) if x.dtype in _LOW_FLOATS else x


def _axis(axis: int, rank: int, node: Node) -> int:
    if not -rank <= axis < max(rank, 1):
        raise TargetError(f"node {node.name} ({node.op}): axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def _ints(arr: np.ndarray | None) -> list[int]:
    return [] if arr is None else [int(x) for x in np.asarray(arr).reshape(-1)]


def _other(ctx: LowerCtx, node: Node, ins: Sequence[Any], outs: Sequence[Any]) -> None:
    """Record the bytes an op moves (for the roofline estimate)."""
    nbytes = 0
    for x in list(ins) + list(outs):
        if x is not None and not ctx.is_static(x) and hasattr(x, "shape"):
            nbytes += int(math.prod(x.shape)) * np.dtype(x.dtype).itemsize
    flops = sum(int(math.prod(o.shape)) for o in outs if o is not None and hasattr(o, "shape"))
    ctx.record(node, "other", flops, nbytes)


def _emit(ctx: LowerCtx, node: Node, ins: Sequence[Any], outs: Sequence[Any]) -> list[Any]:
    _other(ctx, node, ins, outs)
    return list(outs)


# ---------------------------------------------------------------- case 1
_UNARY: dict[str, Callable[[Any], Any]] = {
    "Abs": jnp.abs,
    "Neg": jnp.negative,
    "Exp": jnp.exp,
    "Log": jnp.log,
    "Sqrt": jnp.sqrt,
    "Reciprocal": jnp.reciprocal,
    "Floor": jnp.floor,
    "Ceil": jnp.ceil,
    "Round": jnp.round,  # half to even, as ONNX
    "Sign": jnp.sign,
    "Sin": jnp.sin,
    "Cos": jnp.cos,
    "Tan": jnp.tan,
    "Asin": jnp.arcsin,
    "Acos": jnp.arccos,
    "Atan": jnp.arctan,
    "Sinh": jnp.sinh,
    "Cosh": jnp.cosh,
    "Asinh": jnp.arcsinh,
    "Acosh": jnp.arccosh,
    "Atanh": jnp.arctanh,
    "Tanh": jnp.tanh,
    "Sigmoid": jax.nn.sigmoid,
    "Erf": jax.lax.erf,
    "Relu": lambda x: jnp.maximum(x, jnp.zeros((), x.dtype)),
    "Softplus": jax.nn.softplus,
    "Softsign": lambda x: x / (1 + jnp.abs(x)),
    "Not": jnp.logical_not,
    "BitwiseNot": jnp.bitwise_not,
    "IsNaN": jnp.isnan,
    "Identity": lambda x: x,
    "Mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "HardSwish": lambda x: x * jnp.clip(x / 6 + 0.5, 0, 1),
}


def _unary(fn: Callable[[Any], Any]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        return _emit(ctx, node, ins, [fn(ctx.jx(ins[0]))])

    return low


for _name, _fn in _UNARY.items():
    lower(_name)(_unary(_fn))


@lower("LeakyRelu")
def _leaky_relu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    a = attrs.get("alpha", 0.01)
    return _emit(ctx, node, ins, [jnp.where(x >= 0, x, x * a)])


@lower("Elu")
def _elu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    a = attrs.get("alpha", 1.0)
    return _emit(ctx, node, ins, [jnp.where(x > 0, x, a * jnp.expm1(x))])


@lower("Celu")
def _celu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    a = attrs.get("alpha", 1.0)
    return _emit(ctx, node, ins, [jnp.maximum(x, 0) + jnp.minimum(0, a * jnp.expm1(x / a))])


@lower("Selu")
def _selu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    a = attrs.get("alpha", 1.67326319217681884765625)
    g = attrs.get("gamma", 1.05070102214813232421875)
    return _emit(ctx, node, ins, [g * jnp.where(x > 0, x, a * jnp.expm1(x))])


@lower("HardSigmoid")
def _hard_sigmoid(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    return _emit(ctx, node, ins, [jnp.clip(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0, 1)])


@lower("ThresholdedRelu")
def _thresholded_relu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    return _emit(ctx, node, ins, [jnp.where(x > attrs.get("alpha", 1.0), x, jnp.zeros((), x.dtype))])


@lower("IsInf")
def _isinf(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    pos = bool(attrs.get("detect_positive", 1))
    neg = bool(attrs.get("detect_negative", 1))
    out = jnp.logical_or(jnp.logical_and(pos, jnp.isposinf(x)), jnp.logical_and(neg, jnp.isneginf(x)))
    return _emit(ctx, node, ins, [out])


@lower("Gelu")
def _gelu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    approx = attrs.get("approximate", "none") == "tanh"
    return _emit(ctx, node, ins, [jax.nn.gelu(_f32(x), approximate=approx).astype(x.dtype)])


@lower("Clip")
def _clip(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    lo = ctx.jx(ins[1]) if len(ins) > 1 and ins[1] is not None else None
    hi = ctx.jx(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if lo is not None:
        x = jnp.maximum(x, lo.astype(x.dtype))
    if hi is not None:
        x = jnp.minimum(x, hi.astype(x.dtype))
    return _emit(ctx, node, ins, [x])


def _int_div(a: Any, b: Any) -> Any:
    if a.dtype.kind in "iu":
        return jax.lax.div(a, b.astype(a.dtype))  # truncates toward zero, as C and ONNX
    return a / b


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": jnp.add,
    "Sub": jnp.subtract,
    "Mul": jnp.multiply,
    "Div": lambda a, b: _int_div(*jnp.broadcast_arrays(a, b)),
    "Pow": lambda a, b: jnp.power(a, b.astype(a.dtype)) if a.dtype.kind == "f" or a.dtype == BF16 else jnp.power(a, b),
    "And": jnp.logical_and,
    "Or": jnp.logical_or,
    "Xor": jnp.logical_xor,
    "Equal": jnp.equal,
    "Greater": jnp.greater,
    "GreaterOrEqual": jnp.greater_equal,
    "Less": jnp.less,
    "LessOrEqual": jnp.less_equal,
    "BitwiseAnd": jnp.bitwise_and,
    "BitwiseOr": jnp.bitwise_or,
    "BitwiseXor": jnp.bitwise_xor,
    "PRelu": lambda x, s: jnp.where(x < 0, x * s.astype(x.dtype), x),
}


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        a, b = _same_kind(ctx, ins[0], ins[1])
        return _emit(ctx, node, ins, [fn(a, b)])

    return low


def _same_kind(ctx: LowerCtx, a: Any, b: Any) -> tuple[Any, Any]:
    """Both operands as jax values of one dtype (a static operand takes the traced one's dtype)."""
    sa, sb = ctx.is_static(a), ctx.is_static(b)
    a, b = ctx.jx(a), ctx.jx(b)
    if a.dtype != b.dtype:
        if sa and not sb:
            a = a.astype(b.dtype)
        elif sb and not sa:
            b = b.astype(a.dtype)
        else:
            b = b.astype(a.dtype)
    return a, b


for _name, _binary_fn in _BINARY.items():
    lower(_name)(_binary(_binary_fn))


@lower("Mod")
def _mod(ctx, node, ins, attrs):
    a, b = _same_kind(ctx, ins[0], ins[1])
    out = jnp.fmod(a, b) if attrs.get("fmod", 0) else jnp.mod(a, b)
    return _emit(ctx, node, ins, [out])


@lower("BitShift")
def _bitshift(ctx, node, ins, attrs):
    a, b = _same_kind(ctx, ins[0], ins[1])
    left = attrs.get("direction", "LEFT") == "LEFT"
    return _emit(ctx, node, ins, [jnp.left_shift(a, b) if left else jnp.right_shift(a, b)])


def _variadic(fn: Callable[[Any, Any], Any], mean: bool = False) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        vals = [x for x in ins if x is not None]
        acc = ctx.jx(vals[0])
        for x in vals[1:]:
            acc, y = _same_kind(ctx, acc, x)
            acc = fn(acc, y)
        if mean:
            acc = acc / len(vals)
        return _emit(ctx, node, ins, [acc])

    return low


lower("Max")(_variadic(jnp.maximum))
lower("Min")(_variadic(jnp.minimum))
lower("Sum")(_variadic(jnp.add))
lower("Mean")(_variadic(jnp.add, mean=True))


@lower("Where")
def _where(ctx, node, ins, attrs):
    c = ctx.jx(ins[0])
    x, y = _same_kind(ctx, ins[1], ins[2])
    return _emit(ctx, node, ins, [jnp.where(c, x, y)])


@lower("Cast")
def _cast(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    to = attrs["to"]
    to = to if isinstance(to, DType) else DType.from_onnx(int(to))
    if to == DType.BOOL:
        return _emit(ctx, node, ins, [x != 0])
    return _emit(ctx, node, ins, [x.astype(jax_dtype(to))])


@lower("CastLike")
def _cast_like(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    return _emit(ctx, node, ins, [x.astype(ctx.out_dtype(node))])


# ---------------------------------------------------------------- case 2
@lower("Shape")
def _shape(ctx, node, ins, attrs):
    shape = list(ins[0].shape)
    rank = len(shape)
    start = attrs.get("start", 0) or 0
    end = attrs.get("end", None)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else max(0, min(rank, end + rank if end < 0 else end))
    return [np.array(shape[start:end], dtype=np.int64)]


@lower("Size")
def _size(ctx, node, ins, attrs):
    return [np.array(int(math.prod(ins[0].shape)), dtype=np.int64)]


@lower("Constant")
def _constant(ctx, node, ins, attrs):
    return [np.asarray(attrs["value"])]


@lower("ConstantOfShape")
def _constant_of_shape(ctx, node, ins, attrs):
    shape = _ints(ctx.static(node, 0, ins[0], "(shape)"))
    value = attrs.get("value")
    fill = np.zeros((1,), np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.full(shape, fill[0], dtype=fill.dtype)]


@lower("Range")
def _range(ctx, node, ins, attrs):
    start, limit, delta = (ctx.static(node, i, ins[i]) for i in range(3))
    return [np.arange(start.item(), limit.item(), delta.item()).astype(start.dtype)]


@lower("Reshape")
def _reshape(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    shape = _ints(ctx.static(node, 1, ins[1], "(shape)"))
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [jnp.reshape(x, shape)]


@lower("Flatten")
def _flatten(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [jnp.reshape(x, (int(math.prod(x.shape[:axis])), int(math.prod(x.shape[axis:]))))]


@lower("Squeeze")
def _squeeze(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    if len(ins) > 1 and ins[1] is not None:
        axes = tuple(_axis(a, x.ndim, node) for a in _ints(ctx.static(node, 1, ins[1], "(axes)")))
    else:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    return [jnp.squeeze(x, axes) if axes else x]


@lower("Unsqueeze")
def _unsqueeze(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    raw = _ints(ctx.static(node, 1, ins[1], "(axes)"))
    rank = x.ndim + len(raw)
    axes = sorted(_axis(a, rank, node) for a in raw)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [jnp.reshape(x, shape)]


@lower("Transpose")
def _transpose(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    perm = attrs.get("perm") or tuple(reversed(range(x.ndim)))
    return _emit(ctx, node, ins, [jnp.transpose(x, [int(p) for p in perm])])


@lower("Concat")
def _concat(ctx, node, ins, attrs):
    vals = [ctx.jx(x) for x in ins if x is not None]
    dt = ctx.out_dtype(node)
    vals = [v.astype(dt) for v in vals if v.size > 0] or [vals[0].astype(dt)]
    axis = _axis(attrs["axis"], vals[0].ndim, node)
    return _emit(ctx, node, ins, [jnp.concatenate(vals, axis=axis)])


@lower("Split")
def _split(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    axis = _axis(attrs.get("axis", 0), x.ndim, node)
    n_out = len(node.outputs)
    dim = x.shape[axis]
    if len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ctx.static(node, 1, ins[1], "(split)"))
    else:
        n = attrs.get("num_outputs") or n_out
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    points = list(np.cumsum(sizes)[:-1])
    return _emit(ctx, node, ins, jnp.split(x, points, axis=axis))


def _slice_spec(shape: Sequence[int], starts, ends, axes, steps) -> tuple[slice, ...]:
    rank = len(shape)
    out = [slice(None)] * rank
    for i, a in enumerate(axes):
        a = a + rank if a < 0 else a
        dim = shape[a]
        s, e, st = starts[i], ends[i], steps[i]
        if st == 0:
            raise ValueError("Slice step 0")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            out[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            out[a] = slice(s, None if e < 0 else e, st)
    return tuple(out)


@lower("Slice")
def _slice(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    starts = _ints(ctx.static(node, 1, ins[1], "(starts)"))
    ends = _ints(ctx.static(node, 2, ins[2], "(ends)"))
    axes = _ints(ctx.static(node, 3, ins[3], "(axes)")) if len(ins) > 3 and ins[3] is not None else None
    steps = _ints(ctx.static(node, 4, ins[4], "(steps)")) if len(ins) > 4 and ins[4] is not None else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    return _emit(ctx, node, ins, [x[_slice_spec(x.shape, starts, ends, axes, steps)]])


def _norm_index(idx: Any, dim: int, ctx: LowerCtx) -> Any:
    if ctx.is_static(idx):
        arr = np.asarray(idx)
        return ctx.jx(np.where(arr < 0, arr + dim, arr))
    idx = ctx.jx(idx)
    return jnp.where(idx < 0, idx + dim, idx)


def _gather_along(take: Callable[..., Any]) -> Callable[..., list[Any]]:
    """Gather (``jnp.take``) and GatherElements (``jnp.take_along_axis``): negative indices wrapped."""

    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.jx(ins[0])
        axis = _axis(attrs.get("axis", 0), x.ndim, node)
        idx = _norm_index(ins[1], x.shape[axis], ctx)
        return _emit(ctx, node, ins, [take(x, idx, axis=axis, mode="clip")])

    return low


lower("Gather")(_gather_along(jnp.take))
lower("GatherElements")(_gather_along(jnp.take_along_axis))


def _gather_nd(x: Any, idx: Any, batch_dims: int) -> Any:
    if batch_dims:
        return jax.vmap(lambda a, b: _gather_nd(a, b, batch_dims - 1))(x, idx)
    k = idx.shape[-1]
    dims = jnp.asarray(x.shape[:k], dtype=idx.dtype)
    idx = jnp.where(idx < 0, idx + dims, idx)
    return x[tuple(idx[..., j] for j in range(k))]


@lower("GatherND")
def _gathernd(ctx, node, ins, attrs):
    x, idx = ctx.jx(ins[0]), ctx.jx(ins[1])
    return _emit(ctx, node, ins, [_gather_nd(x, idx, int(attrs.get("batch_dims", 0)))])


def _scatter_update(ref: Any, upd: Any, reduction: str) -> Any:
    if reduction in ("none", "", None):
        return ref.set(upd)
    if reduction == "add":
        return ref.add(upd)
    if reduction == "mul":
        return ref.multiply(upd)
    if reduction == "max":
        return ref.max(upd)
    if reduction == "min":
        return ref.min(upd)
    raise ValueError(f"unknown reduction {reduction!r}")


@lower("ScatterND")
def _scatternd(ctx, node, ins, attrs):
    x, idx, upd = ctx.jx(ins[0]), ctx.jx(ins[1]), ctx.jx(ins[2])
    k = idx.shape[-1]
    dims = jnp.asarray(x.shape[:k], dtype=idx.dtype)
    idx = jnp.where(idx < 0, idx + dims, idx)
    ref = x.at[tuple(idx[..., j] for j in range(k))]
    return _emit(ctx, node, ins, [_scatter_update(ref, upd.astype(x.dtype), attrs.get("reduction", "none"))])


@lower("ScatterElements")
def _scatter_elements(ctx, node, ins, attrs):
    x, upd = ctx.jx(ins[0]), ctx.jx(ins[2])
    axis = _axis(attrs.get("axis", 0), x.ndim, node)
    idx = _norm_index(ins[1], x.shape[axis], ctx)
    grids = jnp.meshgrid(*[jnp.arange(d) for d in idx.shape], indexing="ij")
    grids[axis] = idx
    ref = x.at[tuple(grids)]
    return _emit(ctx, node, ins, [_scatter_update(ref, upd.astype(x.dtype), attrs.get("reduction", "none"))])


@lower("Expand")
def _expand(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    shape = _ints(ctx.static(node, 1, ins[1], "(shape)"))
    out_shape = np.broadcast_shapes(tuple(x.shape), tuple(shape))
    return _emit(ctx, node, ins, [jnp.broadcast_to(x, out_shape)])


@lower("Tile")
def _tile(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    reps = _ints(ctx.static(node, 1, ins[1], "(repeats)"))
    return _emit(ctx, node, ins, [jnp.tile(x, reps)])


@lower("Pad")
def _pad(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    pads = _ints(ctx.static(node, 1, ins[1], "(pads)"))
    value = ctx.static(node, 2, ins[2]).reshape(()).item() if len(ins) > 2 and ins[2] is not None else 0
    axes = _ints(ctx.static(node, 3, ins[3], "(axes)")) if len(ins) > 3 and ins[3] is not None else None
    axes = [_axis(a, x.ndim, node) for a in axes] if axes is not None else list(range(x.ndim))
    n = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + n])
    # negative pads crop
    crop = tuple(slice(max(0, -lo), d - max(0, -hi)) for (lo, hi), d in zip(widths, x.shape))
    x = x[crop]
    widths = [(max(0, lo), max(0, hi)) for lo, hi in widths]
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        out = jnp.pad(x, widths, mode="constant", constant_values=jnp.asarray(value, dtype=x.dtype))
    else:
        out = jnp.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])
    return _emit(ctx, node, ins, [out])


@lower("CumSum")
def _cumsum(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    axis = _axis(int(ctx.static(node, 1, ins[1], "(axis)").reshape(())), x.ndim, node)
    if attrs.get("reverse", 0):
        x = jnp.flip(x, axis)
    y = jnp.cumsum(x, axis=axis, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = y - x
    if attrs.get("reverse", 0):
        y = jnp.flip(y, axis)
    return _emit(ctx, node, ins, [y])


@lower("Trilu")
def _trilu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    k = int(ctx.static(node, 1, ins[1], "(k)").reshape(())) if len(ins) > 1 and ins[1] is not None else 0
    out = jnp.triu(x, k) if attrs.get("upper", 1) else jnp.tril(x, k)
    return _emit(ctx, node, ins, [out])


@lower("OneHot")
def _one_hot(ctx, node, ins, attrs):
    idx = ctx.jx(ins[0])
    depth = int(ctx.static(node, 1, ins[1], "(depth)").reshape(-1)[0])
    values = ctx.jx(ins[2])
    idx = jnp.where(idx < 0, idx + depth, idx)
    axis = attrs.get("axis", -1)
    axis = axis + idx.ndim + 1 if axis < 0 else axis
    hot = jnp.expand_dims(idx, axis) == jnp.arange(depth).reshape([-1 if i == axis else 1 for i in range(idx.ndim + 1)])
    return _emit(ctx, node, ins, [jnp.where(hot, values[1], values[0])])


@lower("NonZero")
def _nonzero(ctx, node, ins, attrs):
    x = ctx.static(node, 0, ins[0], "(data: the output size depends on it)")
    return [np.array(np.nonzero(x), dtype=np.int64)]


@lower("Dropout")
def _dropout(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    outs = [x]
    if len(node.outputs) > 1:
        outs.append(jnp.ones(x.shape, dtype=jnp.bool_))
    return outs


@lower("TopK")
def _topk(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    k = int(ctx.static(node, 1, ins[1], "(k)").reshape(-1)[0])
    axis = _axis(attrs.get("axis", -1), x.ndim, node)
    largest = bool(attrs.get("largest", 1))
    xt = jnp.moveaxis(x, axis, -1)
    vals, idx = jax.lax.top_k(xt if largest else -xt, k)
    if not largest:
        vals = -vals
    return _emit(ctx, node, ins, [jnp.moveaxis(vals, -1, axis), jnp.moveaxis(idx, -1, axis)])


def _arg(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.jx(ins[0])
        axis = _axis(attrs.get("axis", 0), x.ndim, node)
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(jnp.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        if keep:
            r = jnp.expand_dims(r, axis)
        return _emit(ctx, node, ins, [r])

    return low


lower("ArgMax")(_arg(jnp.argmax))
lower("ArgMin")(_arg(jnp.argmin))


# ---------------------------------------------------------------- case 3
def _reduce(fn: Callable[[Any, tuple[int, ...], bool], Any]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.jx(ins[0])
        axes_in = ins[1] if len(ins) > 1 else None
        axes = _ints(ctx.static(node, 1, axes_in, "(axes)")) if axes_in is not None else []
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return _emit(ctx, node, ins, [x])
            axes = list(range(x.ndim))
        ax = tuple(sorted(_axis(a, x.ndim, node) for a in axes))
        keep = bool(attrs.get("keepdims", 1))
        out = fn(_f32(x), ax, keep).astype(ctx.out_dtype(node))
        return _emit(ctx, node, ins, [out])

    return low


_REDUCTIONS: dict[str, Callable[[Any, tuple[int, ...], bool], Any]] = {
    "ReduceSum": lambda x, a, k: jnp.sum(x, axis=a, keepdims=k),
    "ReduceMean": lambda x, a, k: jnp.mean(x, axis=a, keepdims=k),
    "ReduceMax": lambda x, a, k: jnp.max(x, axis=a, keepdims=k),
    "ReduceMin": lambda x, a, k: jnp.min(x, axis=a, keepdims=k),
    "ReduceProd": lambda x, a, k: jnp.prod(x, axis=a, keepdims=k),
    "ReduceL1": lambda x, a, k: jnp.sum(jnp.abs(x), axis=a, keepdims=k),
    "ReduceL2": lambda x, a, k: jnp.sqrt(jnp.sum(x * x, axis=a, keepdims=k)),
    "ReduceLogSum": lambda x, a, k: jnp.log(jnp.sum(x, axis=a, keepdims=k)),
    "ReduceLogSumExp": lambda x, a, k: jax.nn.logsumexp(x, axis=a, keepdims=k),
    "ReduceSumSquare": lambda x, a, k: jnp.sum(x * x, axis=a, keepdims=k),
}
for _name, _reduce_fn in _REDUCTIONS.items():
    lower(_name)(_reduce(_reduce_fn))


def _softmax_like(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
    """Softmax / LogSoftmax over ``axis`` (default -1), computed in float32."""

    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = ctx.jx(ins[0])
        axis = _axis(attrs.get("axis", -1), x.ndim, node)
        return _emit(ctx, node, ins, [fn(_f32(x), axis=axis).astype(x.dtype)])

    return low


lower("Softmax")(_softmax_like(jax.nn.softmax))
lower("LogSoftmax")(_softmax_like(jax.nn.log_softmax))


@lower("Hardmax")
def _hardmax(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    axis = _axis(attrs.get("axis", -1), x.ndim, node)
    hot = jax.nn.one_hot(jnp.argmax(x, axis=axis), x.shape[axis], axis=axis, dtype=x.dtype)
    return _emit(ctx, node, ins, [hot])


@lower("LayerNormalization")
def _layer_norm(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    scale = ctx.jx(ins[1])
    bias = ctx.jx(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    axis = _axis(attrs.get("axis", -1), x.ndim, node)
    eps = attrs.get("epsilon", 1e-5)
    axes = tuple(range(axis, x.ndim))
    xf = _f32(x) if attrs.get("stash_type", 1) == 1 else x
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    d = xf - mean
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    inv = jax.lax.rsqrt(var + eps)
    y = d * inv * scale.astype(xf.dtype)
    if bias is not None:
        y = y + bias.astype(xf.dtype)
    outs = [y.astype(x.dtype), mean, inv][: len(node.outputs)]
    return _emit(ctx, node, ins, outs)


@lower("BatchNormalization")
def _batch_norm(ctx, node, ins, attrs):
    if attrs.get("training_mode", 0) == 1 or len(node.outputs) > 1:
        raise TargetError(f"node {node.name} (BatchNormalization): training_mode=1 has no TPU lowering")
    x, scale, b, mean, var = (ctx.jx(v) for v in ins[:5])
    shape = [1, -1] + [1] * (x.ndim - 2)
    xf = _f32(x)
    inv = jax.lax.rsqrt(var.astype(xf.dtype).reshape(shape) + attrs.get("epsilon", 1e-5))
    y = (xf - mean.astype(xf.dtype).reshape(shape)) * inv * scale.astype(xf.dtype).reshape(shape)
    y = y + b.astype(xf.dtype).reshape(shape)
    return _emit(ctx, node, ins, [y.astype(x.dtype)])


# ---------------------------------------------------------------- case 4
@lower("MatMul", weights=rhs_weight)
def _matmul(ctx, node, ins, attrs):
    return [ctx.matmul(node, ins[0], ins[1])]


def _gemm_weights(node: Node, attrs: Mapping[str, Any]) -> Mapping[int, bool]:
    return {1: bool(attrs.get("transB", 0))}


@lower("Gemm", weights=_gemm_weights)
def _gemm(ctx, node, ins, attrs):
    a = ctx.jx(ins[0])
    if attrs.get("transA", 0):
        a = a.T
    b = ins[1]
    if not hasattr(b, "k"):  # not prepared: a traced or static operand
        b = ctx.jx(b)
        if attrs.get("transB", 0):
            b = b.T
    y = ctx.matmul(node, a, b)
    alpha = attrs.get("alpha", 1.0)
    if alpha != 1.0:
        y = y * jnp.asarray(alpha, y.dtype)
    if len(ins) > 2 and ins[2] is not None:
        beta = attrs.get("beta", 1.0)
        c = ctx.jx(ins[2]).astype(y.dtype)
        y = y + (c if beta == 1.0 else c * jnp.asarray(beta, y.dtype))
    return [y]


@lower("Einsum")
def _einsum(ctx, node, ins, attrs):
    eq = attrs["equation"].replace(" ", "")
    ops = [ctx.jx(x) for x in ins]
    if all(o.dtype.kind == "f" or o.dtype == BF16 for o in ops):
        cdt = jnp.float32 if ctx.policy.precision == "fp32" else jnp.bfloat16
        prec = jax.lax.Precision.HIGHEST if ctx.policy.precision == "fp32" else None
        out = jnp.einsum(eq, *[o.astype(cdt) for o in ops], preferred_element_type=jnp.float32, precision=prec)
    else:
        out = jnp.einsum(eq, *ops)
    # work: output size times the product of contracted index sizes
    lhs = eq.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, o in zip(lhs, ops):
        letters = [c for c in term if c in string.ascii_letters]
        for c, d in zip(letters[-o.ndim :] if "..." in term else letters, o.shape[-len(letters) :] if letters else ()):
            sizes[c] = int(d)
    out_letters = set(eq.split("->")[1]) if "->" in eq else set()
    contracted = math.prod(v for c, v in sizes.items() if c not in out_letters)
    nbytes = sum(_nbytes(o) for o in ops) + _nbytes(out)
    ctx.record(node, "matmul", 2 * int(math.prod(out.shape)) * contracted, nbytes)
    return [out.astype(ctx.out_dtype(node))]
