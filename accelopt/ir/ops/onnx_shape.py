"""Standard ONNX ops that create, index and reshape tensors (latest opset).

Cases handled:

1. Constants: Constant (attr ``value`` only; frontends convert
   ``value_float``/``value_ints``/...), ConstantOfShape, Range, EyeLike, OneHot.
2. Shape queries: Shape (``start``/``end``), Size; both keep symbolic dims in
   their *values* (see ``common.sym_value``), so shapes computed from them stay
   symbolic downstream.
3. Reshaping: Reshape (``0`` copies, ``-1`` inferred, also symbolically when
   the symbols cancel), Flatten, Squeeze/Unsqueeze (axes as inputs),
   Transpose, Expand, Tile, Pad (constant/reflect/edge/wrap, negative pads crop).
4. Joining and splitting: Concat, Split (``split`` input or ``num_outputs``).
5. Indexing: Slice (ONNX clamping, negative steps), Gather, GatherElements,
   GatherND (``batch_dims``), Trilu, NonZero, ScatterND, ScatterElements.
6. Dropout in inference form: output is the input, mask is all true.
   Training mode with a nonzero ratio is random and is refused.

Kernels return numpy views where numpy does (Transpose, Slice, Squeeze,
Expand); kernels never write into their inputs.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import (
    NUMERIC_TYPES,
    Attrs,
    Ins,
    broadcast_shapes,
    check_dtype_in,
    check_same_dtype,
    ctx_sym,
    dim_product,
    infer_axes,
    infer_axis,
    ints_arg,
    normalize_axes,
    normalize_axis,
    onnx_dtype,
    shape_arg,
    slice_bounds,
    slice_length,
)
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

INDEX_TYPES = frozenset({DType.INT32, DType.INT64})
I64 = DType.INT64


def _err(ctx: InferContext, e: Exception) -> Exception:
    return ctx.error(str(e))


# ------------------------------------------------------------- 1. constants
def _constant_infer(ctx: InferContext) -> list[TensorType]:
    v = ctx.attrs["value"]
    if not isinstance(v, np.ndarray):
        raise ctx.error(f"attribute 'value' must be a tensor, got {type(v).__name__}")
    return [TensorType(DType.from_numpy(v.dtype), v.shape)]


define_op(
    "Constant",
    inputs=0,
    attrs={"value": AttrSpec("tensor")},
    infer=_constant_infer,
    kernel=lambda ins, attrs, n: [attrs["value"]],
    doc="attr value (a tensor); the frontend converts value_float/value_ints/...",
)


def _check_shape_dims(ctx: InferContext, dims: list[Dim]) -> list[Dim]:
    for d in dims:
        if isinstance(d, int) and d < 0:
            raise ctx.error(f"negative dimension {d} in shape {dims}")
    return dims


def _cos_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, frozenset({I64}))
    value = ctx.attrs["value"]
    dt = DType.FLOAT32 if value is None else DType.from_numpy(value.dtype)
    if value is not None and value.size != 1:
        raise ctx.error(f"value must have one element, got shape {list(value.shape)}")
    dims = shape_arg(ctx, 0)
    return [TensorType(dt, None if dims is None else tuple(_check_shape_dims(ctx, dims)))]


def _cos_kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    value = attrs["value"]
    if value is None:
        value = np.zeros(1, np.float32)
    return [np.full(tuple(int(d) for d in ins[0]), value.reshape(-1)[0], dtype=value.dtype)]


define_op("ConstantOfShape", infer=_cos_infer, kernel=_cos_kernel, attrs={"value": AttrSpec("tensor", None)})


def _range_infer(ctx: InferContext) -> list[TensorType]:
    dt = check_same_dtype(ctx, [0, 1, 2])
    check_dtype_in(ctx, 0, NUMERIC_TYPES - {DType.UINT8})
    for i in range(3):
        if ctx.type(i).shape not in (None, (), (1,)):
            raise ctx.error(f"input {i} must be a scalar, got {ctx.type(i)}")
    consts = [ctx.const(i) for i in range(3)]
    if all(c is not None for c in consts):
        n = _range_len(*(np.asarray(c).reshape(()) for c in consts))
        return [TensorType(dt, (n,))]
    syms = [ctx_sym(ctx, i) for i in range(3)]
    if all(s is not None for s in syms):
        start, limit, delta = (s[1][0] for s in syms)  # type: ignore[index]
        if isinstance(start, int) and isinstance(limit, int) and isinstance(delta, int) and delta != 0:
            return [TensorType(dt, (max(0, -((start - limit) // delta)),))]
        if start == 0 and delta == 1 and limit is not None:
            return [TensorType(dt, (limit if not isinstance(limit, int) else max(limit, 0),))]
    return [TensorType(dt, (None,))]


def _range_len(start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> int:
    if start.dtype.kind in "iu":
        s, l_, d = int(start), int(limit), int(delta)
        if d == 0:
            raise ValueError("Range delta cannot be 0")
        return max(0, -((s - l_) // d))
    span = np.asarray(limit - start).astype(np.float64)
    return max(int(np.ceil(span / np.float64(delta))), 0)


def _range_kernel(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
    start, limit, delta = (np.asarray(a).reshape(()) for a in ins)
    dt = start.dtype
    n = _range_len(start, limit, delta)
    if dt.kind in "iu":
        return [(np.arange(n, dtype=np.int64) * int(delta) + int(start)).astype(dt)]
    work = np.float32 if dt.itemsize < 4 and attrs["stash_type"] == 1 else dt
    if dt == DType.BFLOAT16.np:
        work = np.float32
    s, d = start.astype(work), delta.astype(work)
    return [(s + np.arange(n).astype(work) * d).astype(dt)]


define_op(
    "Range",
    inputs=3,
    infer=_range_infer,
    kernel=_range_kernel,
    attrs={"stash_type": AttrSpec("int", 1)},
    doc="n = max(ceil((limit-start)/delta), 0); out[i] = start + i*delta",
)


def _eyelike_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is not None and len(t.shape) != 2:
        raise ctx.error(f"input must be 2-D, got {t}")
    dt = t.dtype if ctx.attrs["dtype"] is None else onnx_dtype(ctx.attrs["dtype"], ctx)
    return [TensorType(dt, t.shape)]


def _eyelike(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    dt = x.dtype if attrs["dtype"] is None else DType.from_onnx(attrs["dtype"]).np
    return [np.eye(x.shape[0], x.shape[1], k=attrs["k"], dtype=dt)]


define_op(
    "EyeLike",
    infer=_eyelike_infer,
    kernel=_eyelike,
    attrs={"dtype": AttrSpec("int", None), "k": AttrSpec("int", 0)},
    doc="dtype is an ONNX TensorProto code (default: the input's dtype)",
)


def _onehot_infer(ctx: InferContext) -> list[TensorType]:
    ind, vals = ctx.type(0), ctx.type(2)
    if vals.shape is not None and vals.shape not in ((2,), (None,)):
        raise ctx.error(f"values must have shape [2], got {vals}")
    depth = ctx.const(1)
    d: Dim = int(np.asarray(depth).reshape(-1)[0]) if depth is not None else None
    if ind.shape is None:
        return [TensorType(vals.dtype, None)]
    r = len(ind.shape) + 1
    axis = infer_axis(ctx, ctx.attrs["axis"], r)
    shape = list(ind.shape)
    shape.insert(axis, d)
    return [TensorType(vals.dtype, tuple(shape))]


def _onehot(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    indices, depth, values = ins
    d = int(np.asarray(depth).reshape(-1)[0])
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)
    r = idx.ndim + 1
    axis = normalize_axis(attrs["axis"], r)
    ar_shape = [1] * r
    ar_shape[axis] = d
    hot = np.expand_dims(idx, axis) == np.arange(d).reshape(ar_shape)
    return [np.where(hot, values[1], values[0]).astype(values.dtype, copy=False)]


define_op("OneHot", inputs=3, infer=_onehot_infer, kernel=_onehot, attrs={"axis": AttrSpec("int", -1)})


# --------------------------------------------------------- 2. shape queries
def _shape_bounds(rank: int, start: int, end: int | None) -> tuple[int, int]:
    end = rank if end is None else end
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, end


def _shape_infer(ctx: InferContext) -> list[TensorType]:
    shape = ctx.type(0).shape
    if shape is None:
        return [TensorType(I64, (None,))]
    s, e = _shape_bounds(len(shape), ctx.attrs["start"], ctx.attrs["end"])
    return [TensorType(I64, (max(e - s, 0),))]


def _shape_kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    shape = ins[0].shape
    s, e = _shape_bounds(len(shape), attrs["start"], attrs["end"])
    return [np.array(shape[s:e], dtype=np.int64)]


define_op(
    "Shape",
    infer=_shape_infer,
    kernel=_shape_kernel,
    attrs={"start": AttrSpec("int", 0), "end": AttrSpec("int", None)},
)
define_op(
    "Size",
    infer=lambda ctx: [TensorType(I64, ())],
    kernel=lambda ins, a, n: [np.array(ins[0].size, dtype=np.int64)],
)


# -------------------------------------------------------------- 3. reshaping
def _resolve_minus_one(in_shape: tuple[Dim, ...] | None, others: list[Dim]) -> Dim:
    """The dim a ``-1`` stands for, given the input shape and the other target dims."""
    if in_shape is None or any(d is None for d in in_shape) or any(d is None for d in others):
        return None
    in_int = int(np.prod([d for d in in_shape if isinstance(d, int)], dtype=np.int64))
    out_int = int(np.prod([d for d in others if isinstance(d, int)], dtype=np.int64))
    in_syms = Counter(d for d in in_shape if isinstance(d, str))
    out_syms = Counter(d for d in others if isinstance(d, str))
    if out_syms - in_syms:
        return None
    rest = in_syms - out_syms
    if out_int == 0:
        return None
    if in_int % out_int:
        if not rest:
            raise ValueError(f"cannot reshape {list(in_shape)} into {others} with -1")
        return None
    ratio = in_int // out_int
    if not rest:
        return ratio
    if sum(rest.values()) == 1 and ratio == 1:
        return next(iter(rest))
    return None


def reshape_dims(in_shape: tuple[Dim, ...] | None, target: list[Dim], allowzero: int) -> tuple[Dim, ...]:
    """Output dims of Reshape(in_shape, target) with ONNX ``0``/``-1`` rules."""
    out: list[Dim] = []
    minus = [i for i, d in enumerate(target) if d == -1]
    if len(minus) > 1:
        raise ValueError(f"shape {target} has more than one -1")
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            out.append(in_shape[i] if in_shape is not None and i < len(in_shape) else None)
        elif isinstance(d, int) and d < -1:
            raise ValueError(f"invalid dimension {d} in shape {target}")
        else:
            out.append(d)
    if minus:
        if allowzero and 0 in target:
            raise ValueError("allowzero=1 shape cannot contain both 0 and -1")
        i = minus[0]
        out[i] = _resolve_minus_one(in_shape, out[:i] + out[i + 1 :])
    elif in_shape is not None:
        in_ints = [d for d in in_shape if isinstance(d, int)]
        out_ints = [d for d in out if isinstance(d, int)]
        static = len(in_ints) == len(in_shape) and len(out_ints) == len(out)
        if static and math.prod(in_ints) != math.prod(out_ints):
            raise ValueError(f"cannot reshape {list(in_shape)} into {out}")
    return tuple(out)


def _reshape_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype_in(ctx, 1, frozenset({I64}))
    target = shape_arg(ctx, 1)
    if target is None:
        return [TensorType(t.dtype, None)]
    try:
        return [TensorType(t.dtype, reshape_dims(t.shape, target, ctx.attrs["allowzero"]))]
    except ValueError as e:
        raise _err(ctx, e) from None


def _reshape(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, shape = ins
    target = [int(d) for d in shape]
    if not attrs["allowzero"]:
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [np.reshape(x, target)]


define_op("Reshape", inputs=2, infer=_reshape_infer, kernel=_reshape, attrs={"allowzero": AttrSpec("int", 0)})


def _flatten_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, (None, None))]
    r = len(t.shape)
    axis = ctx.attrs["axis"]
    if not -r <= axis <= r:
        raise ctx.error(f"axis {axis} is out of range for rank {r}")
    axis = axis + r if axis < 0 else axis
    return [TensorType(t.dtype, (dim_product(t.shape[:axis]), dim_product(t.shape[axis:])))]


def _flatten(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    axis = attrs["axis"]
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(lead, int(np.prod(x.shape[axis:], dtype=np.int64)))]


define_op("Flatten", infer=_flatten_infer, kernel=_flatten, attrs={"axis": AttrSpec("int", 1)})


def _squeeze_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if ctx.has(1):
        axes = ints_arg(ctx, 1)
        if axes is None:
            n_axes = ctx.type(1).shape
            if t.shape is not None and n_axes is not None and len(n_axes) == 1 and isinstance(n_axes[0], int):
                return [TensorType(t.dtype, (None,) * (len(t.shape) - n_axes[0]))]
            return [TensorType(t.dtype, None)]
    else:
        axes = None
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if axes is None:
        if any(not isinstance(d, int) for d in t.shape):
            return [TensorType(t.dtype, None)]
        return [TensorType(t.dtype, tuple(d for d in t.shape if d != 1))]
    axes = infer_axes(ctx, axes, len(t.shape))
    for a in axes:
        if isinstance(t.shape[a], int) and t.shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {t.shape[a]} in {t}")
    return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in axes))]


def _squeeze(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    axes = ins[1] if len(ins) > 1 and ins[1] is not None else None
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(normalize_axes([int(a) for a in axes], x.ndim)))]


define_op("Squeeze", inputs=(1, 2), infer=_squeeze_infer, kernel=_squeeze)


def _unsqueeze_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    axes = ints_arg(ctx, 1)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if axes is None:
        n_axes = ctx.type(1).shape
        if n_axes is not None and len(n_axes) == 1 and isinstance(n_axes[0], int):
            return [TensorType(t.dtype, (None,) * (len(t.shape) + n_axes[0]))]
        return [TensorType(t.dtype, None)]
    r = len(t.shape) + len(axes)
    axes = infer_axes(ctx, axes, r)
    it = iter(t.shape)
    return [TensorType(t.dtype, tuple(1 if i in axes else next(it) for i in range(r)))]


def _unsqueeze(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, axes = ins
    r = x.ndim + axes.size
    return [np.expand_dims(x, tuple(normalize_axes([int(a) for a in axes.reshape(-1)], r)))]


define_op("Unsqueeze", inputs=2, infer=_unsqueeze_infer, kernel=_unsqueeze)


def _transpose_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    perm = ctx.attrs["perm"]
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    r = len(t.shape)
    if perm is None:
        perm = tuple(reversed(range(r)))
    if sorted(perm) != list(range(r)):
        raise ctx.error(f"perm {list(perm)} is not a permutation of {r} axes")
    return [TensorType(t.dtype, tuple(t.shape[p] for p in perm))]


define_op(
    "Transpose",
    infer=_transpose_infer,
    kernel=lambda ins, a, n: [np.transpose(ins[0], a["perm"])],
    attrs={"perm": AttrSpec("ints", None)},
)


def _expand_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype_in(ctx, 1, frozenset({I64}))
    target = shape_arg(ctx, 1)
    if target is None or t.shape is None:
        return [TensorType(t.dtype, None)]
    try:
        return [TensorType(t.dtype, broadcast_shapes([t.shape, tuple(target)]))]
    except ValueError as e:
        raise _err(ctx, e) from None


def _expand(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, shape = ins
    out = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))
    return [np.broadcast_to(x, out)]


define_op("Expand", inputs=2, infer=_expand_infer, kernel=_expand)


def _tile_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    reps = shape_arg(ctx, 1)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    if reps is None:
        return [TensorType(t.dtype, (None,) * len(t.shape))]
    if len(reps) != len(t.shape):
        raise ctx.error(f"repeats has {len(reps)} entries for a rank-{len(t.shape)} input")
    out: list[Dim] = []
    for d, r in zip(t.shape, reps):
        if isinstance(d, int) and isinstance(r, int):
            out.append(d * r)
        elif r == 1:
            out.append(d)
        else:
            out.append(0 if d == 0 or r == 0 else None)
    return [TensorType(t.dtype, tuple(out))]


define_op(
    "Tile",
    inputs=2,
    infer=_tile_infer,
    kernel=lambda ins, a, n: [np.tile(ins[0], [int(r) for r in ins[1]])],
)


_PadMode = Literal["constant", "reflect", "edge", "wrap"]
_PAD_MODES: dict[str, _PadMode] = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad_per_axis(pads: list[int], axes: list[int] | None, rank: int) -> list[tuple[int, int]]:
    axes = list(range(rank)) if axes is None else normalize_axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads has {len(pads)} entries for {len(axes)} axes")
    out = [(0, 0)] * rank
    for k, a in enumerate(axes):
        out[a] = (pads[k], pads[k + len(axes)])
    return out


def _pad_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if ctx.attrs["mode"] not in _PAD_MODES:
        raise ctx.error(f"unknown mode {ctx.attrs['mode']!r}")
    if ctx.has(2):
        check_same_dtype(ctx, [0, 2])
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    pads = ints_arg(ctx, 1)
    axes = ints_arg(ctx, 3) if ctx.has(3) else None
    if pads is None or (ctx.has(3) and axes is None):
        return [TensorType(t.dtype, (None,) * len(t.shape))]
    try:
        per_axis = _pad_per_axis(pads, axes, len(t.shape))
    except ValueError as e:
        raise _err(ctx, e) from None
    out: list[Dim] = []
    for d, (lo, hi) in zip(t.shape, per_axis):
        if isinstance(d, int):
            out.append(d + lo + hi)
        else:
            out.append(d if lo == hi == 0 else None)
    return [TensorType(t.dtype, tuple(out))]


def _pad(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, pads = ins[0], [int(p) for p in ins[1]]
    value = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axes = [int(a) for a in ins[3]] if len(ins) > 3 and ins[3] is not None else None
    per_axis = _pad_per_axis(pads, axes, x.ndim)
    # negative pads crop first
    crop = tuple(slice(max(-lo, 0), x.shape[i] - max(-hi, 0)) for i, (lo, hi) in enumerate(per_axis))
    x = x[crop]
    width = [(max(lo, 0), max(hi, 0)) for lo, hi in per_axis]
    mode = attrs["mode"]
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
        return [np.pad(x, width, mode="constant", constant_values=fill)]
    return [np.pad(x, width, mode=_PAD_MODES[mode])]


define_op(
    "Pad",
    inputs=(2, 4),
    infer=_pad_infer,
    kernel=_pad,
    attrs={"mode": AttrSpec("str", "constant")},
    doc="pads/constant_value/axes as inputs; negative pads crop",
)


# ------------------------------------------------------- 4. joining, splitting
def _concat_infer(ctx: InferContext) -> list[TensorType]:
    idx = [i for i in range(len(ctx.input_types)) if ctx.has(i)]
    dt = check_same_dtype(ctx, idx)
    shapes = [ctx.type(i).shape for i in idx]
    known = [s for s in shapes if s is not None]
    if not known:
        return [TensorType(dt, None)]
    r = len(known[0])
    if any(len(s) != r for s in known):
        raise ctx.error(f"inputs have different ranks: {', '.join(str(ctx.type(i)) for i in idx)}")
    axis = infer_axis(ctx, ctx.attrs["axis"], r)
    out: list[Dim] = []
    for k in range(r):
        if k == axis:
            if len(known) != len(shapes):
                out.append(None)
                continue
            parts = [s[k] for s in known]
            nonzero = [p for p in parts if p != 0]
            if all(isinstance(p, int) for p in parts):
                out.append(sum(parts))  # type: ignore[arg-type]
            elif len(nonzero) == 1:
                out.append(nonzero[0])
            else:
                out.append(None)
            continue
        d: Dim = None
        first = True
        for s in known:
            if first:
                d, first = s[k], False
                continue
            e = s[k]
            if isinstance(d, int) and isinstance(e, int) and d != e:
                raise ctx.error(f"dimension {k} differs: {', '.join(str(ctx.type(i)) for i in idx)}")
            if not isinstance(d, int) and isinstance(e, int):
                d = e
            elif d is None:
                d = e
        out.append(d)
    return [TensorType(dt, tuple(out))]


def _concat(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    arrs = [a for a in ins if a is not None]
    if len(arrs) == 1:
        return [arrs[0]]
    return [np.concatenate(arrs, axis=normalize_axis(attrs["axis"], arrs[0].ndim))]


define_op("Concat", inputs=(1, -1), infer=_concat_infer, kernel=_concat, attrs={"axis": AttrSpec("int")})


def _split_sizes(dim: Dim, n: int, split: list[int] | None, num_outputs: int | None) -> list[Dim]:
    if split is not None:
        if len(split) != n:
            raise ValueError(f"split {split} has {len(split)} entries for {n} outputs")
        if isinstance(dim, int) and sum(split) != dim:
            raise ValueError(f"split {split} does not add up to dimension {dim}")
        return list(split)
    if num_outputs is not None and num_outputs != n:
        raise ValueError(f"num_outputs={num_outputs} but the node has {n} outputs")
    if not isinstance(dim, int):
        return [None] * n
    chunk = -(-dim // n)
    last = dim - chunk * (n - 1)
    if last < 0:
        raise ValueError(f"cannot split dimension {dim} into {n} parts")
    return [chunk if i < n - 1 else last for i in range(n)]


def _split_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    n = ctx.num_outputs
    if t.shape is None:
        return [TensorType(t.dtype, None)] * n
    axis = infer_axis(ctx, ctx.attrs["axis"], len(t.shape))
    split = ints_arg(ctx, 1) if ctx.has(1) else None
    if ctx.has(1) and split is None:
        sizes: list[Dim] = [None] * n
    else:
        try:
            sizes = _split_sizes(t.shape[axis], n, split, ctx.attrs["num_outputs"])
        except ValueError as e:
            raise _err(ctx, e) from None
    out = []
    for s in sizes:
        shape = list(t.shape)
        shape[axis] = s
        out.append(TensorType(t.dtype, tuple(shape)))
    return out


def _split(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    axis = normalize_axis(attrs["axis"], x.ndim)
    split = [int(s) for s in ins[1]] if len(ins) > 1 and ins[1] is not None else None
    sizes = _split_sizes(x.shape[axis], n, split, attrs["num_outputs"])
    bounds = np.cumsum([0, *sizes])
    sl = [slice(None)] * x.ndim
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sl[axis] = slice(int(lo), int(hi))
        outs.append(x[tuple(sl)])
    return outs


define_op(
    "Split",
    inputs=(1, 2),
    outputs=(1, -1),
    infer=_split_infer,
    kernel=_split,
    attrs={"axis": AttrSpec("int", 0), "num_outputs": AttrSpec("int", None)},
    doc="split sizes from input 'split' or num_outputs (last chunk smaller); "
    "with neither, an equal split into the node's outputs (opset 13 form)",
)


# ------------------------------------------------------------------ 5. indexing
def _slice_params(ctx: InferContext, rank: int) -> tuple[list[int], list[int], list[int], list[int]] | None:
    starts, ends = ints_arg(ctx, 1), ints_arg(ctx, 2)
    axes = ints_arg(ctx, 3) if ctx.has(3) else None
    steps = ints_arg(ctx, 4) if ctx.has(4) else None
    if starts is None or ends is None or (ctx.has(3) and axes is None) or (ctx.has(4) and steps is None):
        return None
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps must have the same length")
    axes = infer_axes(ctx, axes, rank)
    return starts, ends, axes, steps


_BIG = 2**62


def _slice_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is None:
        return [TensorType(t.dtype, None)]
    params = _slice_params(ctx, len(t.shape))
    out = list(t.shape)
    r = len(t.shape)
    if params is None:
        # unknown parameters: the touched axes get unknown sizes
        axes = ints_arg(ctx, 3) if ctx.has(3) else None
        n_starts = ctx.type(1).shape
        if axes is not None:
            touched = [a % r for a in axes]
        elif not ctx.has(3) and n_starts is not None and isinstance(n_starts[0], int):
            touched = list(range(n_starts[0]))
        else:
            return [TensorType(t.dtype, (None,) * r)]
        starts, sym_ends = ints_arg(ctx, 1), ctx_sym(ctx, 2)
        steps = ints_arg(ctx, 4) if ctx.has(4) else [1] * len(touched)
        for k, a in enumerate(touched):
            out[a] = None
            # x[:, :seq] with a symbolic end keeps the symbol
            if starts is not None and sym_ends is not None and steps is not None and len(sym_ends[1]) == len(touched):
                e = sym_ends[1][k]
                if starts[k] == 0 and steps[k] == 1 and isinstance(e, str):
                    out[a] = e
        return [TensorType(t.dtype, tuple(out))]
    starts, ends, axes, steps = params
    for s, e, a, k in zip(starts, ends, axes, steps):
        if k == 0:
            raise ctx.error("slice step cannot be 0")
        d = t.shape[a]
        if isinstance(d, int):
            lo, hi, kk = slice_bounds(s, e, k, d)
            out[a] = slice_length(lo, hi, kk)
        elif s == 0 and k == 1 and e >= _BIG:
            out[a] = d
        elif k == 1 and 0 <= s <= e < _BIG:
            out[a] = None if e - s > 0 else 0
        else:
            out[a] = None
    return [TensorType(t.dtype, tuple(out))]


def _slice(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    starts = [int(v) for v in ins[1]]
    ends = [int(v) for v in ins[2]]
    axes = [int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, a, k in zip(starts, ends, normalize_axes(axes, x.ndim), steps):
        sl[a] = slice(*slice_bounds(s, e, k, x.shape[a]))
    return [x[tuple(sl)]]


define_op("Slice", inputs=(3, 5), infer=_slice_infer, kernel=_slice)


def _gather_infer(ctx: InferContext) -> list[TensorType]:
    data, ind = ctx.type(0), ctx.type(1)
    check_dtype_in(ctx, 1, INDEX_TYPES)
    if data.shape is None or ind.shape is None:
        return [TensorType(data.dtype, None)]
    axis = infer_axis(ctx, ctx.attrs["axis"], len(data.shape))
    return [TensorType(data.dtype, data.shape[:axis] + ind.shape + data.shape[axis + 1 :])]


def _gather(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    data, ind = ins
    axis = normalize_axis(attrs["axis"], data.ndim)
    size = data.shape[axis]
    if ind.size and (int(ind.max()) >= size or int(ind.min()) < -size):  # ONNX: an error, as in onnxruntime
        bad = int(ind[(ind >= size) | (ind < -size)].reshape(-1)[0])
        raise IndexError(f"index {bad} is out of range for axis {axis} of size {size} (valid: {-size}..{size - 1})")
    return [np.asarray(np.take(data, ind, axis=axis))]


define_op("Gather", inputs=2, infer=_gather_infer, kernel=_gather, attrs={"axis": AttrSpec("int", 0)})


def _gather_elements_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 1, INDEX_TYPES)
    data, ind = ctx.type(0), ctx.type(1)
    if data.shape is not None:
        infer_axis(ctx, ctx.attrs["axis"], len(data.shape))
    return [TensorType(data.dtype, ind.shape)]


def _gather_elements(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    data, ind = ins
    axis = normalize_axis(attrs["axis"], data.ndim)
    ind = np.where(ind < 0, ind + data.shape[axis], ind)
    return [np.take_along_axis(data, ind, axis=axis)]


define_op(
    "GatherElements",
    inputs=2,
    infer=_gather_elements_infer,
    kernel=_gather_elements,
    attrs={"axis": AttrSpec("int", 0)},
)


def _gather_nd_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 1, frozenset({I64}))
    data, ind = ctx.type(0), ctx.type(1)
    b = ctx.attrs["batch_dims"]
    if data.shape is None or ind.shape is None or not isinstance(ind.shape[-1], int):
        return [TensorType(data.dtype, None)]
    k = ind.shape[-1]
    if b + k > len(data.shape):
        raise ctx.error(f"indices last dim {k} + batch_dims {b} exceeds data rank {len(data.shape)}")
    return [TensorType(data.dtype, tuple(ind.shape[:-1]) + tuple(data.shape[b + k :]))]


def _gather_nd(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    data, ind = ins
    b = attrs["batch_dims"]
    k = ind.shape[-1]
    dims = np.array(data.shape[b : b + k], dtype=np.int64)
    ind = np.where(ind < 0, ind + dims, ind)
    if b == 0:
        return [np.asarray(data[tuple(np.moveaxis(ind, -1, 0))])]
    batch = int(np.prod(data.shape[:b], dtype=np.int64))
    data_r = data.reshape((batch,) + data.shape[b:])
    ind_r = ind.reshape(batch, -1, k)
    bi = np.arange(batch).reshape(batch, 1)
    out = data_r[(bi,) + tuple(ind_r[..., j] for j in range(k))]
    return [out.reshape(ind.shape[:-1] + data.shape[b + k :])]


define_op(
    "GatherND",
    inputs=2,
    infer=_gather_nd_infer,
    kernel=_gather_nd,
    attrs={"batch_dims": AttrSpec("int", 0)},
)


def _trilu_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if t.shape is not None and len(t.shape) < 2:
        raise ctx.error(f"input must have rank >= 2, got {t}")
    return [t]


def _trilu(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    k = int(np.asarray(ins[1]).reshape(())) if len(ins) > 1 and ins[1] is not None else 0
    return [np.triu(x, k) if attrs["upper"] else np.tril(x, k)]


define_op("Trilu", inputs=(1, 2), infer=_trilu_infer, kernel=_trilu, attrs={"upper": AttrSpec("int", 1)})


def _nonzero_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    return [TensorType(I64, (None if t.shape is None else len(t.shape), None))]


def _nonzero(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    if x.ndim == 0:
        return [np.zeros((0, 1 if x else 0), dtype=np.int64)]
    return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


define_op("NonZero", infer=_nonzero_infer, kernel=_nonzero)

_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 1, INDEX_TYPES)
    check_same_dtype(ctx, [0, 2])
    if ctx.attrs["reduction"] not in ("none", *_REDUCERS):
        raise ctx.error(f"unknown reduction {ctx.attrs['reduction']!r}")
    return [ctx.type(0)]


def _scatter_nd(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    data, ind, upd = ins
    out = np.array(data, copy=True)
    k = ind.shape[-1]
    ind = np.where(ind < 0, ind + np.array(data.shape[:k], dtype=np.int64), ind)
    idx = tuple(np.moveaxis(ind, -1, 0))
    red = attrs["reduction"]
    if red == "none":
        out[idx] = upd
    else:
        _REDUCERS[red].at(out, idx, upd)
    return [out]


def _scatter_elements(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    data, ind, upd = ins
    axis = normalize_axis(attrs["axis"], data.ndim)
    out = np.array(data, copy=True)
    ind = np.where(ind < 0, ind + data.shape[axis], ind)
    grids = list(np.indices(ind.shape, sparse=True))
    grids[axis] = ind
    red = attrs["reduction"]
    if red == "none":
        out[tuple(grids)] = upd
    else:
        _REDUCERS[red].at(out, tuple(grids), upd)
    return [out]


define_op(
    "ScatterND",
    inputs=3,
    infer=_scatter_infer,
    kernel=_scatter_nd,
    attrs={"reduction": AttrSpec("str", "none")},
)
define_op(
    "ScatterElements",
    inputs=3,
    infer=_scatter_infer,
    kernel=_scatter_elements,
    attrs={"axis": AttrSpec("int", 0), "reduction": AttrSpec("str", "none")},
)


# ------------------------------------------------------------------- 6. Dropout
def _dropout_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    if ctx.has(2):
        check_dtype_in(ctx, 2, frozenset({DType.BOOL}))
    out = [t]
    if ctx.num_outputs > 1:
        out.append(TensorType(DType.BOOL, t.shape))
    return out


def _dropout(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    ratio = float(np.asarray(ins[1]).reshape(())) if len(ins) > 1 and ins[1] is not None else 0.5
    training = bool(np.asarray(ins[2]).reshape(())) if len(ins) > 2 and ins[2] is not None else False
    if training and ratio != 0.0:
        raise ValueError("training-mode Dropout with a nonzero ratio is random; the interpreter runs inference only")
    outs = [x]
    if n > 1:
        outs.append(np.ones(x.shape, dtype=bool))
    return outs


define_op(
    "Dropout",
    inputs=(1, 3),
    outputs=(1, 2),
    infer=_dropout_infer,
    kernel=_dropout,
    attrs={"seed": AttrSpec("int", None)},
    doc="inference: output = data, mask = all true",
)
