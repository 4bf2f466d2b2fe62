"""Shared building blocks for op definitions.

What lives here:

1. Symbolic broadcasting (``broadcast_dims``, ``broadcast_shapes``) and the
   generic inference factories (``same_as_input``, ``broadcast_infer``).
2. Axis handling (``normalize_axis``, ``normalize_axes``) and dtype checks
   (``check_same_dtype``, ``check_dtype_in``).
3. Symbolic *values*: ``sym_value`` follows small integer tensors back
   through ``Shape``/``Gather``/``Concat``/``Unsqueeze``/``Slice``/``Cast``/...
   so that a ``Reshape`` whose target shape is computed from ``Shape(x)`` still
   gets a symbolic output shape such as ``[batch, seq, 12, 64]``.
4. Dim arithmetic on ints and symbols (``dim_product``).
5. Kernel helpers (``unary_kernel``, ``binary_kernel``, ``float_compute``) and
   ``fast_erf``, a float32 error function (torch's vectorized kernel) about
   twenty times faster than ``scipy.special.erf`` and within one float32 ulp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.special

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import constant_of
from accelopt.ir.registry import InferContext, InferFn
from accelopt.ir.types import Dim, TensorType

FLOAT_TYPES = frozenset({DType.FLOAT64, DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16})
INT_TYPES = frozenset({DType.INT64, DType.INT32, DType.INT16, DType.INT8, DType.UINT8})
SIGNED_TYPES = FLOAT_TYPES | (INT_TYPES - {DType.UINT8})
NUMERIC_TYPES = FLOAT_TYPES | INT_TYPES
ALL_TYPES = NUMERIC_TYPES | {DType.BOOL}

#: kernel argument types: input arrays (None for omitted inputs) and attributes with defaults
Ins = Sequence[Any]
Attrs = Mapping[str, Any]


# ---------------------------------------------------------------- broadcasting
def broadcast_dims(a: Dim, b: Dim) -> Dim:
    """Broadcast two dims: 1 yields to the other; a symbol against an int > 1 takes the int."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None:
        return b if isinstance(b, int) and b != 1 else None
    if b is None:
        return a if isinstance(a, int) and a != 1 else None
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"dimensions {a} and {b} do not broadcast")
    # a symbol against a different symbol or int: the int wins if not 1
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(shapes: Sequence[tuple[Dim, ...] | None]) -> tuple[Dim, ...] | None:
    """Numpy-style multidirectional broadcasting over symbolic shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)  # type: ignore[arg-type]
        out = [broadcast_dims(x, y) for x, y in zip(out, padded)]
    return tuple(out)


def same_as_input(i: int = 0) -> InferFn:
    def infer(ctx: InferContext) -> list[TensorType]:
        return [ctx.type(i)] * ctx.num_outputs

    return infer


def fits_into(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """An array of ``shape`` broadcasts to ``target`` without growing it (concrete shapes)."""
    if shape == target:
        return True
    return len(shape) <= len(target) and all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(target)))


def broadcast_infer(
    out_dtype: DType | None = None,
    inputs: int | None = None,
    *,
    same_dtype: bool = True,
    allowed: frozenset[DType] | None = None,
) -> InferFn:
    """Output shape is the broadcast of the inputs; dtype is input 0's unless given.

    ``same_dtype`` requires all inputs to share a dtype; ``allowed`` restricts it.
    """

    def infer(ctx: InferContext) -> list[TensorType]:
        n = len(ctx.input_types) if inputs is None else inputs
        idx = [i for i in range(n) if ctx.has(i)]
        types = [ctx.type(i) for i in idx]
        if same_dtype:
            check_same_dtype(ctx, idx)
        if allowed is not None:
            check_dtype_in(ctx, 0, allowed)
        try:
            shape = broadcast_shapes([t.shape for t in types])
        except ValueError as e:
            raise ctx.error(f"{e}: shapes {', '.join(str(t) for t in types)}") from None
        return [TensorType(out_dtype or types[0].dtype, shape)]

    return infer


# ------------------------------------------------------------- axes and dtypes
def normalize_axis(axis: int, rank: int) -> int:
    """``axis`` in ``[-rank, rank)`` mapped to ``[0, rank)`` (rank 0 accepts 0 and -1)."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def normalize_axes(axes: Sequence[int], rank: int) -> list[int]:
    """Normalize a list of axes; duplicates are an error."""
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"axes {list(axes)} contain duplicates")
    return out


def infer_axis(ctx: InferContext, axis: int, rank: int) -> int:
    """``normalize_axis`` during type inference: an out-of-range axis is the node's error."""
    try:
        return normalize_axis(axis, rank)
    except ValueError as e:
        raise ctx.error(str(e)) from None


def infer_axes(ctx: InferContext, axes: Sequence[int], rank: int) -> list[int]:
    """``normalize_axes`` during type inference: a bad axis list is the node's error."""
    try:
        return normalize_axes(axes, rank)
    except ValueError as e:
        raise ctx.error(str(e)) from None


def check_same_dtype(ctx: InferContext, indices: Sequence[int]) -> DType:
    """All the given (present) inputs share one dtype; returns it."""
    dts = [(i, ctx.type(i).dtype) for i in indices if ctx.has(i)]
    if dts and any(d != dts[0][1] for _, d in dts):
        shown = ", ".join(f"input {i}: {d}" for i, d in dts)
        raise ctx.error(f"inputs must share one dtype ({shown})")
    return dts[0][1]


def check_dtype_in(ctx: InferContext, i: int, allowed: frozenset[DType]) -> DType:
    dt = ctx.type(i).dtype
    if dt not in allowed:
        names = ", ".join(sorted(str(d) for d in allowed))
        raise ctx.error(f"input {i} has dtype {dt}; expected one of {names}")
    return dt


def static_ints(arr: np.ndarray | None) -> list[int] | None:
    if arr is None:
        return None
    return [int(x) for x in np.asarray(arr).reshape(-1)]


def onnx_dtype(code: int, ctx: InferContext | None = None) -> DType:
    """An ONNX ``TensorProto`` element type code as a DType (ctx turns failures into VerifyError)."""
    try:
        return DType.from_onnx(int(code))
    except TypeError as e:
        if ctx is not None:
            raise ctx.error(str(e)) from None
        raise


# -------------------------------------------------------------- dim arithmetic
def dim_product(dims: Sequence[Dim]) -> Dim:
    """Product of dims: an int when all are ints; a symbol times ones is the symbol; else None."""
    total = 1
    syms: list[Dim] = []
    for d in dims:
        if isinstance(d, int):
            total *= d
        else:
            syms.append(d)
    if not syms:
        return total
    if total == 0:
        return 0
    if len(syms) == 1 and total == 1 and syms[0] is not None:
        return syms[0]
    return None


def dims_compatible_k(a: Dim, b: Dim) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


# ------------------------------------------------------------ symbolic values
#: (shape of the tensor, rank 0 or 1; flat elements: ints, symbols or None)
SymVal = tuple[tuple[int, ...], tuple[Dim, ...]]
_MAX_SYM = 64
_MAX_DEPTH = 32


const_of = constant_of  # the registry modules' short name for it


def sym_value(v: Any, depth: int = 0) -> SymVal | None:
    """The value of a small rank-0/1 integer tensor, as ints and symbols where known.

    Handles constants and the shape-computation ops exporters emit: Shape, Size,
    Identity, Cast (to an int type), Gather, Unsqueeze, Squeeze, Concat, Slice,
    Reshape, ConstantOfShape, and Add/Sub/Mul/Div on known ints (``x*1``,
    ``x+0`` keep a symbol). Returns None when the value cannot be derived.
    """
    if v is None or depth > _MAX_DEPTH:
        return None
    c = const_of(v)
    if c is not None:
        if c.dtype.kind in "iu" and c.ndim <= 1 and c.size <= _MAX_SYM:
            return tuple(c.shape), tuple(int(x) for x in c.reshape(-1))
        return None
    node = v.producer
    if node is None or v.type.dtype not in INT_TYPES:
        return None
    rule = _SYM_RULES.get(node.op)
    if rule is None:
        return None
    try:
        return rule(node, depth + 1)
    except (ValueError, IndexError, TypeError, KeyError, ZeroDivisionError):
        return None


def ctx_sym(ctx: InferContext, i: int) -> SymVal | None:
    """``sym_value`` of input ``i`` (constants work even without the Value)."""
    v = ctx.value(i)
    if v is not None:
        return sym_value(v)
    c = ctx.const(i)
    if c is not None and c.dtype.kind in "iu" and c.ndim <= 1 and c.size <= _MAX_SYM:
        return tuple(c.shape), tuple(int(x) for x in c.reshape(-1))
    return None


def shape_arg(ctx: InferContext, i: int) -> list[Dim] | None:
    """A 1-D shape-like input as a list of dims (None entries where unknown); None if even its length is unknown."""
    sv = ctx_sym(ctx, i)
    if sv is not None:
        return list(sv[1])
    t = ctx.type(i)
    if t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], int):
        return [None] * t.shape[0]
    return None


def ints_arg(ctx: InferContext, i: int) -> list[int] | None:
    """Input ``i`` as a list of ints when it is constant (or derivable, see ``ctx_sym``); else None."""
    if not ctx.has(i):
        return None
    sv = ctx_sym(ctx, i)
    if sv is None:
        return None
    ints = [x for x in sv[1] if isinstance(x, int)]
    return ints if len(ints) == len(sv[1]) else None


def _sym_shape(node: Any, depth: int) -> SymVal | None:
    shape = node.inputs[0].type.shape
    if shape is None:
        return None
    r = len(shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = tuple(shape[start:end])
    return (len(dims),), dims


def _sym_size(node: Any, depth: int) -> SymVal | None:
    shape = node.inputs[0].type.shape
    if shape is None:
        return None
    d = dim_product(shape)
    return (), (d if isinstance(d, int) else None,)


def _sym_passthrough(node: Any, depth: int) -> SymVal | None:
    src = node.inputs[0]
    if src is None or src.type.dtype not in INT_TYPES:
        return None
    return sym_value(src, depth)


def _sym_gather(node: Any, depth: int) -> SymVal | None:
    data = sym_value(node.inputs[0], depth)
    idx = sym_value(node.inputs[1], depth)
    if data is None or idx is None or len(data[0]) != 1 or node.attrs.get("axis", 0) not in (0, -1):
        return None
    n = data[0][0]
    out = []
    for i in idx[1]:
        if not isinstance(i, int):
            return None
        out.append(data[1][i + n if i < 0 else i])
    return idx[0], tuple(out)


def _sym_unsqueeze(node: Any, depth: int) -> SymVal | None:
    data = sym_value(node.inputs[0], depth)
    axes = static_ints(const_of(node.inputs[1])) if len(node.inputs) > 1 else None
    if data is None or data[0] != () or axes is None or axes not in ([0], [-1]):
        return None
    return (1,), data[1]


def _sym_squeeze(node: Any, depth: int) -> SymVal | None:
    data = sym_value(node.inputs[0], depth)
    if data is None or data[0] != (1,):
        return None
    return (), data[1]


def _sym_concat(node: Any, depth: int) -> SymVal | None:
    if node.attrs.get("axis") not in (0, -1):
        return None
    elems: list[Dim] = []
    for v in node.inputs:
        sv = sym_value(v, depth)
        if sv is None or len(sv[0]) != 1:
            return None
        elems.extend(sv[1])
    return (len(elems),), tuple(elems)


def _sym_slice(node: Any, depth: int) -> SymVal | None:
    data = sym_value(node.inputs[0], depth)
    if data is None or len(data[0]) != 1:
        return None
    params = [static_ints(const_of(v)) if v is not None else None for v in list(node.inputs[1:]) + [None] * 4]
    starts, ends, axes, steps = params[:4]
    if starts is None or ends is None or len(starts) != 1:
        return None
    if axes is not None and axes not in ([0], [-1]):
        return None
    step = steps[0] if steps else 1
    s, e, k = slice_bounds(starts[0], ends[0], step, data[0][0])
    out = tuple(data[1][slice(s, e, k)])
    return (len(out),), out


def _sym_reshape(node: Any, depth: int) -> SymVal | None:
    data = sym_value(node.inputs[0], depth)
    target = static_ints(const_of(node.inputs[1]))
    if data is None or target is None or len(target) > 1:
        return None
    if target == [] and len(data[1]) == 1:
        return (), data[1]
    if len(target) == 1 and target[0] in (-1, len(data[1])):
        return (len(data[1]),), data[1]
    return None


def _sym_constant_of_shape(node: Any, depth: int) -> SymVal | None:
    shape = sym_value(node.inputs[0], depth)
    value = node.attrs.get("value")
    if shape is None or len(shape[1]) != 1 or not isinstance(shape[1][0], int) or shape[1][0] > _MAX_SYM:
        return None
    fill = 0 if value is None else int(np.asarray(value).reshape(-1)[0])
    return (shape[1][0],), (fill,) * shape[1][0]


def _sym_arith(node: Any, depth: int) -> SymVal | None:
    a = sym_value(node.inputs[0], depth)
    b = sym_value(node.inputs[1], depth)
    if a is None or b is None:
        return None
    shape = a[0] if len(a[1]) >= len(b[1]) else b[0]
    n = max(len(a[1]), len(b[1]))
    if len(a[1]) not in (1, n) or len(b[1]) not in (1, n):
        return None
    xs = a[1] * n if len(a[1]) == 1 else a[1]
    ys = b[1] * n if len(b[1]) == 1 else b[1]
    op = node.op
    out: list[Dim] = []
    for x, y in zip(xs, ys):
        if isinstance(x, int) and isinstance(y, int):
            if op == "Add":
                out.append(x + y)
            elif op == "Sub":
                out.append(x - y)
            elif op == "Mul":
                out.append(x * y)
            else:
                out.append(int(math.trunc(x / y)) if y else None)
        elif op in ("Mul", "Div") and y == 1 or op in ("Add", "Sub") and y == 0:
            out.append(x)
        elif op == "Mul" and x == 1 or op == "Add" and x == 0:
            out.append(y)
        else:
            out.append(None)
    return shape, tuple(out)


_SYM_RULES: dict[str, Callable[[Any, int], SymVal | None]] = {
    "Shape": _sym_shape,
    "Size": _sym_size,
    "Identity": _sym_passthrough,
    "Cast": _sym_passthrough,
    "Gather": _sym_gather,
    "Unsqueeze": _sym_unsqueeze,
    "Squeeze": _sym_squeeze,
    "Concat": _sym_concat,
    "Slice": _sym_slice,
    "Reshape": _sym_reshape,
    "ConstantOfShape": _sym_constant_of_shape,
    "Add": _sym_arith,
    "Sub": _sym_arith,
    "Mul": _sym_arith,
    "Div": _sym_arith,
}


def slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int | None, int]:
    """ONNX Slice clamping for one axis, as Python ``slice`` arguments."""
    if step == 0:
        raise ValueError("slice step cannot be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        return start, end, step
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return start, (end if end >= 0 else None), step


def slice_length(start: int, end: int | None, step: int) -> int:
    if step > 0:
        assert end is not None
        return max(0, -(-(end - start) // step))
    stop = -1 if end is None else end
    return max(0, -(-(start - stop) // -step))


# --------------------------------------------------------------------- kernels
def unary_kernel(fn: Callable[[np.ndarray], np.ndarray]):
    """A kernel applying ``fn`` and keeping the input dtype."""

    def kernel(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
        x = ins[0]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]

    return kernel


def binary_kernel(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], out_dtype: np.dtype | None = None):
    """A kernel applying a broadcasting ``fn``; the result has input 0's dtype unless given."""

    def kernel(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
        r = np.asarray(fn(ins[0], ins[1]))
        return [r.astype(out_dtype if out_dtype is not None else ins[0].dtype, copy=False)]

    return kernel


_LOW_FLOATS = (np.dtype(np.float16), DType.BFLOAT16.np)


def float_compute(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run ``fn`` in float32 for float16/bfloat16 arrays and cast the result back."""

    def wrapped(x: np.ndarray, *args: Any) -> np.ndarray:
        if x.dtype in _LOW_FLOATS:
            return np.asarray(fn(x.astype(np.float32), *args)).astype(x.dtype)
        return np.asarray(fn(x, *args))

    return wrapped


_torch = None


def _torch_one_thread(fn: Callable[[Any], None]) -> None:
    """Run ``fn(torch)`` with torch on one thread: torch's OpenMP workers spin after a parallel region
    and then fight OpenBLAS's threads for the cores in the next matmul (measured 1.3x slower)."""
    global _torch
    if _torch is None:
        import torch

        _torch = torch
    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)
    try:
        fn(_torch)
    finally:
        _torch.set_num_threads(threads)


def fast_erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Error function in x's dtype; float32 through torch's vectorized erf (<= 1 ulp, ~10x numpy).

    float64 uses scipy; float16/bfloat16 are computed in float32 and rounded back. ``out``
    (float32 only, x's shape) receives the result, and may be ``x`` itself.
    """
    if x.dtype == np.float64:
        return scipy.special.erf(x)
    if x.dtype != np.float32:
        return fast_erf(x.astype(np.float32)).astype(x.dtype)
    res = np.empty_like(x) if out is None else out
    _torch_one_thread(lambda t: t.special.erf(t.from_numpy(np.ascontiguousarray(x)), out=t.from_numpy(res)))
    return res


def fast_gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    """float32 GELU (``approximate`` "none": erf, "tanh": the tanh form) in one pass through torch's
    vectorized kernel, a new array (about 3x faster than four numpy passes over a [8, 128, 4096]
    tensor; they differ by at most 1.2e-6 on standard-normal inputs)."""
    res = np.empty_like(x)
    _torch_one_thread(
        lambda t: t.nn.functional.gelu(
            t.from_numpy(np.ascontiguousarray(x)), approximate=approximate, out=t.from_numpy(res)
        )
    )
    return res
