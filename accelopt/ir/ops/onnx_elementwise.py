"""Elementwise standard ONNX ops (latest opset) with numpy kernels.

Cases handled:

1. Unary math on floats (Exp, Log, Sqrt, Erf, Tanh, Sin, ...) and activations
   (Sigmoid, Softplus, Gelu, Elu, LeakyRelu, HardSigmoid, Mish, ...). float16 and
   bfloat16 are computed in float32 and rounded back; float32 stays float32.
2. Unary ops on any number (Neg, Abs, Sign, Relu, Floor, Ceil, Round) and bool
   (Not); predicates (IsNaN, IsInf) return bool.
3. Broadcasting binary arithmetic (Add, Sub, Mul, Div, Pow, Mod, PRelu,
   BitShift, Bitwise*): integer Div truncates toward zero like C; Mod follows
   the ``fmod`` attribute; Pow returns the base's dtype.
4. Comparisons (Equal, Less, ...) and logic (And, Or, Xor) returning bool.
5. Variadic broadcasting Max, Min, Sum, Mean; Where; Clip with optional bounds.
6. Cast (``to`` is a DType) and CastLike. ``saturate``/``round_mode`` only
   matter for float8/float4 targets, which the IR does not have.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import (
    ALL_TYPES,
    FLOAT_TYPES,
    INT_TYPES,
    NUMERIC_TYPES,
    SIGNED_TYPES,
    Attrs,
    Ins,
    binary_kernel,
    broadcast_infer,
    broadcast_shapes,
    check_dtype_in,
    check_same_dtype,
    fast_erf,
    fast_gelu,
    fits_into,
    float_compute,
)
from accelopt.ir.registry import AttrSpec, InferContext, InferFn, InplaceFn, KernelFn, define_op
from accelopt.ir.types import TensorType

BOOL = frozenset({DType.BOOL})


def _unary_infer(allowed: frozenset[DType], out: DType | None = None) -> InferFn:
    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.type(0)
        check_dtype_in(ctx, 0, allowed)
        return [TensorType(out or t.dtype, t.shape)]

    return infer


def _keep_dtype(fn) -> KernelFn:
    """Kernel: ``fn(x, attrs)`` computed in float32 for half types, result in x's dtype."""
    wrapped = float_compute(fn)

    def kernel(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
        x = ins[0]
        return [np.asarray(wrapped(x, attrs)).astype(x.dtype, copy=False)]

    return kernel


_FULL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def unary_inplace(ufunc) -> InplaceFn:
    """Inplace kernel: ``ufunc(x, out=x)`` for float32/float64 (half types take the plain kernel)."""

    def inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
        x = ins[0]
        if x.dtype not in _FULL_FLOATS:
            return None
        with np.errstate(all="ignore"):
            ufunc(x, out=x)
        return [x]

    return inplace


def binary_inplace(ufunc, quiet: bool = False) -> InplaceFn:
    """Inplace kernel: ``ufunc(a, b, out=<input i>)`` when input i has the broadcast shape (floats).

    ``quiet``: divide-by-zero and invalid-value warnings are silenced, as the op's plain kernel does.
    """

    def inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
        a, b = ins
        d = ins[i]
        if d.dtype not in _FULL_FLOATS or a.dtype != b.dtype or not fits_into(ins[1 - i].shape, d.shape):
            return None
        if quiet:
            with np.errstate(divide="ignore", invalid="ignore"):
                ufunc(a, b, out=d)
        else:
            ufunc(a, b, out=d)
        return [d]

    return inplace


def _float_unary(
    name: str, fn, attrs: dict[str, AttrSpec] | None = None, doc: str = "", inplace: InplaceFn | None = None
) -> None:
    define_op(name, infer=_unary_infer(FLOAT_TYPES), kernel=_keep_dtype(fn), attrs=attrs, doc=doc, inplace=inplace)


# ------------------------------------------------------------ 1. float unary
_SIMPLE_FLOAT = {
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Tanh": np.tanh,
    "Sin": np.sin,
    "Cos": np.cos,
    "Tan": np.tan,
    "Asin": np.arcsin,
    "Acos": np.arccos,
    "Atan": np.arctan,
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
    "Sigmoid": scipy.special.expit,
}
for _name, _fn in _SIMPLE_FLOAT.items():

    def _mk(f):
        def k(x, attrs):
            with np.errstate(all="ignore"):
                return f(x)

        return k

    _float_unary(_name, _mk(_fn), inplace=unary_inplace(_fn))


def _erf_inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
    x = ins[0]
    return [fast_erf(x, out=x)] if x.dtype == np.float32 else None


_float_unary(
    "Erf",
    lambda x, a: fast_erf(x),
    doc="float32 through torch's vectorized erf (<= 1 ulp), float64 scipy",
    inplace=_erf_inplace,
)


def _reciprocal(x: np.ndarray, a: Attrs) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.reciprocal(x)


_float_unary("Reciprocal", _reciprocal)


def _softplus(x: np.ndarray, a: Attrs) -> np.ndarray:
    return np.logaddexp(x.dtype.type(0), x)


def _softsign(x: np.ndarray, a: Attrs) -> np.ndarray:
    return x / (np.abs(x) + x.dtype.type(1))


def _mish(x: np.ndarray, a: Attrs) -> np.ndarray:
    return x * np.tanh(np.logaddexp(x.dtype.type(0), x))


def _hard_sigmoid(x: np.ndarray, a: Attrs) -> np.ndarray:
    y = x * a["alpha"]
    y += a["beta"]
    return np.clip(y, 0, 1, out=y)


def _hard_swish(x: np.ndarray, a: Attrs) -> np.ndarray:
    return x * np.clip(x * (1 / 6) + 0.5, 0, 1)


def _leaky_relu(x: np.ndarray, a: Attrs) -> np.ndarray:
    return np.where(x < 0, x * a["alpha"], x)


def _elu(x: np.ndarray, a: Attrs) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x < 0, np.expm1(x) * a["alpha"], x)


def _selu(x: np.ndarray, a: Attrs) -> np.ndarray:
    with np.errstate(over="ignore"):
        y = np.where(x > 0, x, np.expm1(x) * a["alpha"])
    return y * a["gamma"]


def _celu(x: np.ndarray, a: Attrs) -> np.ndarray:
    alpha = a["alpha"]
    with np.errstate(over="ignore"):
        neg = np.minimum(np.expm1(x / alpha) * alpha, 0)
    return np.maximum(x, 0) + neg


def _thresholded_relu(x: np.ndarray, a: Attrs) -> np.ndarray:
    return np.where(x > a["alpha"], x, x.dtype.type(0))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU in x's precision: exact (erf) or the tanh approximation (float32: ``fast_gelu``)."""
    if x.dtype == np.float32 and approximate in ("none", "tanh"):
        return fast_gelu(x, approximate)
    if approximate == "tanh":
        inner = x * x
        inner *= 0.044715
        inner += 1.0
        inner *= x
        inner *= _SQRT_2_OVER_PI
        np.tanh(inner, out=inner)
    elif approximate == "none":
        inner = fast_erf(x * _INV_SQRT_2)
    else:
        raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    inner += 1.0
    inner *= x
    inner *= 0.5
    return inner


_float_unary("Softplus", _softplus)
_float_unary("Softsign", _softsign)
_float_unary("Mish", _mish)
_float_unary("HardSigmoid", _hard_sigmoid, {"alpha": AttrSpec("float", 0.2), "beta": AttrSpec("float", 0.5)})
_float_unary("HardSwish", _hard_swish)
_float_unary("LeakyRelu", _leaky_relu, {"alpha": AttrSpec("float", 0.01)})
_float_unary("Elu", _elu, {"alpha": AttrSpec("float", 1.0)})
_float_unary(
    "Selu",
    _selu,
    {"alpha": AttrSpec("float", 1.67326319217681884765625), "gamma": AttrSpec("float", 1.05070102214813232421875)},
)
_float_unary("Celu", _celu, {"alpha": AttrSpec("float", 1.0)})
_float_unary("ThresholdedRelu", _thresholded_relu, {"alpha": AttrSpec("float", 1.0)})


def _gelu_infer(ctx: InferContext) -> list[TensorType]:
    if ctx.attrs["approximate"] not in ("none", "tanh"):
        raise ctx.error(f"approximate must be 'none' or 'tanh', got {ctx.attrs['approximate']!r}")
    return _unary_infer(FLOAT_TYPES)(ctx)


define_op(
    "Gelu",
    infer=_gelu_infer,
    kernel=_keep_dtype(lambda x, a: gelu(x, a["approximate"])),
    attrs={"approximate": AttrSpec("str", "none")},
    doc="0.5*x*(1+erf(x/sqrt(2))), or the tanh approximation",
)


def _shrink(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    lambd, bias = attrs["lambd"], attrs["bias"]
    xf = x.astype(np.float64) if x.dtype.kind in "iu" else x
    y = np.where(xf < -lambd, xf + bias, np.where(xf > lambd, xf - bias, 0))
    return [y.astype(x.dtype)]


define_op(
    "Shrink",
    infer=_unary_infer(NUMERIC_TYPES),
    kernel=_shrink,
    attrs={"bias": AttrSpec("float", 0.0), "lambd": AttrSpec("float", 0.5)},
)


# ----------------------------------------------------- 2. any-number unary ops
def _plain(fn) -> KernelFn:
    def kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
        x = ins[0]
        if x.dtype == DType.BFLOAT16.np:
            return [np.asarray(fn(x.astype(np.float32))).astype(x.dtype)]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]

    return kernel


define_op("Neg", infer=_unary_infer(SIGNED_TYPES), kernel=_plain(np.negative), inplace=unary_inplace(np.negative))
define_op("Abs", infer=_unary_infer(NUMERIC_TYPES), kernel=_plain(np.abs))
define_op("Sign", infer=_unary_infer(NUMERIC_TYPES), kernel=_plain(np.sign))
define_op(
    "Relu",
    infer=_unary_infer(SIGNED_TYPES),
    kernel=_plain(lambda x: np.maximum(x, x.dtype.type(0))),
    inplace=unary_inplace(lambda x, out: np.maximum(x, x.dtype.type(0), out=out)),
)
define_op("Floor", infer=_unary_infer(FLOAT_TYPES), kernel=_plain(np.floor))
define_op("Ceil", infer=_unary_infer(FLOAT_TYPES), kernel=_plain(np.ceil))
define_op("Round", infer=_unary_infer(FLOAT_TYPES), kernel=_plain(np.round), doc="half to even")
define_op("Not", infer=_unary_infer(BOOL), kernel=lambda ins, a, n: [np.asarray(np.logical_not(ins[0]))])
define_op("BitwiseNot", infer=_unary_infer(INT_TYPES), kernel=lambda ins, a, n: [np.asarray(np.invert(ins[0]))])
define_op("Identity", infer=_unary_infer(ALL_TYPES), kernel=lambda ins, a, n: [ins[0]])


def _as_f32_if_bf16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == DType.BFLOAT16.np else x


define_op(
    "IsNaN",
    infer=_unary_infer(FLOAT_TYPES, DType.BOOL),
    kernel=lambda ins, a, n: [np.asarray(np.isnan(_as_f32_if_bf16(ins[0])))],
)


def _isinf(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = _as_f32_if_bf16(ins[0])
    if attrs["detect_positive"] and attrs["detect_negative"]:
        return [np.asarray(np.isinf(x))]
    if attrs["detect_positive"]:
        return [np.asarray(np.isposinf(x))]
    if attrs["detect_negative"]:
        return [np.asarray(np.isneginf(x))]
    return [np.zeros(x.shape, dtype=bool)]


define_op(
    "IsInf",
    infer=_unary_infer(FLOAT_TYPES, DType.BOOL),
    kernel=_isinf,
    attrs={"detect_negative": AttrSpec("int", 1), "detect_positive": AttrSpec("int", 1)},
)


# --------------------------------------------------------- 3. binary arithmetic
def _arith(fn):
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.dtype == DType.BFLOAT16.np:
            return fn(a.astype(np.float32), b.astype(np.float32))
        return fn(a, b)

    return f


for _name, _fn in {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}.items():
    define_op(
        _name,
        inputs=2,
        infer=broadcast_infer(allowed=NUMERIC_TYPES),
        kernel=binary_kernel(_arith(_fn)),
        inplace=binary_inplace(_fn),
    )


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        # C semantics: truncate toward zero (numpy's // floors)
        with np.errstate(divide="ignore", invalid="ignore"):
            if a.dtype.kind == "u":
                return np.floor_divide(a, b)
            return np.floor_divide(a - np.fmod(a, b), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _arith(np.true_divide)(a, b)


define_op(
    "Div",
    inputs=2,
    infer=broadcast_infer(allowed=NUMERIC_TYPES),
    kernel=binary_kernel(_div),
    inplace=binary_inplace(np.true_divide, quiet=True),
)


def _pow_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    check_dtype_in(ctx, 1, NUMERIC_TYPES)
    return broadcast_infer(same_dtype=False)(ctx)


def _pow(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, y = ins
    if x.dtype == DType.BFLOAT16.np or (x.dtype.kind == "f" and x.dtype not in (np.dtype(np.float32), np.dtype(np.float64))):
        r = np.power(x.astype(np.float32), y.astype(np.float32))
    elif x.dtype.kind == "f":
        r = np.power(x, y.astype(x.dtype, copy=False))
    elif y.dtype.kind == "f" or (y < 0).any():
        with np.errstate(all="ignore"):
            r = np.trunc(np.power(x.astype(np.float64), y.astype(np.float64)))
    else:
        r = np.power(x, y.astype(x.dtype, copy=False))
    return [np.asarray(r).astype(x.dtype, copy=False)]


define_op("Pow", inputs=2, infer=_pow_infer, kernel=_pow, doc="result has the base's dtype")


def _mod(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    a, b = ins
    fn = np.fmod if attrs["fmod"] else np.mod
    with np.errstate(divide="ignore", invalid="ignore"):
        r = _arith(fn)(a, b)
    return [np.asarray(r).astype(a.dtype, copy=False)]


def _mod_infer(ctx: InferContext) -> list[TensorType]:
    if ctx.attrs["fmod"] not in (0, 1):
        raise ctx.error(f"fmod must be 0 or 1, got {ctx.attrs['fmod']}")
    return broadcast_infer(allowed=NUMERIC_TYPES)(ctx)


define_op("Mod", inputs=2, infer=_mod_infer, kernel=_mod, attrs={"fmod": AttrSpec("int", 0)})


def _prelu_infer(ctx: InferContext) -> list[TensorType]:
    check_same_dtype(ctx, [0, 1])
    check_dtype_in(ctx, 0, SIGNED_TYPES)
    x, s = ctx.type(0), ctx.type(1)
    try:
        out = broadcast_shapes([x.shape, s.shape])
    except ValueError as e:
        raise ctx.error(f"slope does not broadcast to X: {e}") from None
    if out is not None and x.shape is not None and len(out) != len(x.shape):
        raise ctx.error(f"slope {s} has a higher rank than X {x}")
    return [x]


define_op(
    "PRelu",
    inputs=2,
    infer=_prelu_infer,
    kernel=lambda ins, a, n: [np.where(ins[0] < 0, ins[0] * ins[1], ins[0]).astype(ins[0].dtype, copy=False)],
)


def _bitshift(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, y = ins
    bits = x.dtype.itemsize * 8
    direction = attrs["direction"]
    yy = y.astype(np.int64)
    out_of_range = (yy < 0) | (yy >= bits)
    safe = np.clip(yy, 0, bits - 1).astype(x.dtype)
    if direction == "LEFT":
        r = np.left_shift(x, safe)
        fill = np.zeros((), x.dtype)
    elif direction == "RIGHT":
        r = np.right_shift(x, safe)
        fill = np.where(x < 0, x.dtype.type(-1), x.dtype.type(0)) if x.dtype.kind == "i" else np.zeros((), x.dtype)
    else:
        raise ValueError(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")
    return [np.where(out_of_range, fill, r).astype(x.dtype, copy=False)]


def _bitshift_infer(ctx: InferContext) -> list[TensorType]:
    if ctx.attrs["direction"] not in ("LEFT", "RIGHT"):
        raise ctx.error(f"direction must be LEFT or RIGHT, got {ctx.attrs['direction']!r}")
    return broadcast_infer(allowed=INT_TYPES)(ctx)


define_op("BitShift", inputs=2, infer=_bitshift_infer, kernel=_bitshift, attrs={"direction": AttrSpec("str")})
for _name, _fn in {"BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor}.items():
    define_op(_name, inputs=2, infer=broadcast_infer(allowed=INT_TYPES), kernel=binary_kernel(_fn))


# ------------------------------------------------------- 4. comparisons, logic
def _cmp(fn):
    def kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
        a, b = ins
        if a.dtype == DType.BFLOAT16.np:
            a, b = a.astype(np.float32), b.astype(np.float32)
        return [np.asarray(fn(a, b))]

    return kernel


for _name, _fn, _allowed in (
    ("Equal", np.equal, ALL_TYPES),
    ("Less", np.less, NUMERIC_TYPES),
    ("LessOrEqual", np.less_equal, NUMERIC_TYPES),
    ("Greater", np.greater, NUMERIC_TYPES),
    ("GreaterOrEqual", np.greater_equal, NUMERIC_TYPES),
    ("And", np.logical_and, BOOL),
    ("Or", np.logical_or, BOOL),
    ("Xor", np.logical_xor, BOOL),
):
    define_op(_name, inputs=2, infer=broadcast_infer(DType.BOOL, allowed=_allowed), kernel=_cmp(_fn))


# ------------------------------------------------- 5. variadic, Where, Clip
def _variadic(fn, mean: bool = False) -> KernelFn:
    def kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
        dt = ins[0].dtype
        arrs = [a.astype(np.float32) for a in ins] if dt == DType.BFLOAT16.np else list(ins)
        acc = arrs[0]
        for a in arrs[1:]:
            acc = fn(acc, a)
        if mean:
            acc = acc / len(arrs)
        if len(arrs) == 1:
            acc = np.array(acc, copy=True)
        return [np.asarray(acc).astype(dt, copy=False)]

    return kernel


define_op("Max", inputs=(1, -1), infer=broadcast_infer(allowed=NUMERIC_TYPES), kernel=_variadic(np.maximum))
define_op("Min", inputs=(1, -1), infer=broadcast_infer(allowed=NUMERIC_TYPES), kernel=_variadic(np.minimum))
define_op("Sum", inputs=(1, -1), infer=broadcast_infer(allowed=NUMERIC_TYPES), kernel=_variadic(np.add))
define_op("Mean", inputs=(1, -1), infer=broadcast_infer(allowed=FLOAT_TYPES), kernel=_variadic(np.add, mean=True))


def _where_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, BOOL)
    check_same_dtype(ctx, [1, 2])
    types = [ctx.type(i) for i in range(3)]
    try:
        shape = broadcast_shapes([t.shape for t in types])
    except ValueError as e:
        raise ctx.error(f"{e}: shapes {', '.join(str(t) for t in types)}") from None
    return [TensorType(types[1].dtype, shape)]


def _where_inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
    """Where into input 1 or 2 when it already has the result's shape (any dtype)."""
    cond, a, b = ins
    d = ins[i]
    if i == 0 or a.dtype != b.dtype or not all(fits_into(x.shape, d.shape) for x in ins):
        return None
    if i == 2:
        np.copyto(d, a, where=cond)
    else:
        np.copyto(d, b, where=np.logical_not(cond))
    return [d]


def _where(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    cond, a, b = ins
    return [np.asarray(np.where(cond, a, b))]


define_op("Where", inputs=3, infer=_where_infer, kernel=_where, inplace=_where_inplace)


def _clip_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    check_same_dtype(ctx, [0, 1, 2])
    for i in (1, 2):
        if ctx.has(i) and ctx.type(i).shape not in (None, (), (1,)):
            raise ctx.error(f"input {i} must be a scalar, got {ctx.type(i)}")
    return [ctx.type(0)]


def _clip(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else None
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if lo is None and hi is None:
        return [x]
    r = x
    if lo is not None:
        r = np.maximum(r, lo.reshape(()))
    if hi is not None:
        r = np.minimum(r, hi.reshape(()))
    return [np.asarray(r).astype(x.dtype, copy=False)]


define_op("Clip", inputs=(1, 3), infer=_clip_infer, kernel=_clip)


# ------------------------------------------------------------ 6. Cast, CastLike
_CAST_ATTRS = {"saturate": AttrSpec("int", 1), "round_mode": AttrSpec("str", "up")}


def cast_array(x: np.ndarray, to: np.dtype) -> np.ndarray:
    """ONNX Cast between the IR's dtypes (floats to ints truncate; out-of-range floats give inf)."""
    if x.dtype == to:
        return x
    with np.errstate(invalid="ignore", over="ignore"):
        if to == DType.BFLOAT16.np and x.dtype.kind in "iub":
            return x.astype(np.float32).astype(to)
        if x.dtype == DType.BFLOAT16.np and to.kind in "iu":
            return x.astype(np.float32).astype(to)
        return x.astype(to)


def _cast_infer(ctx: InferContext) -> list[TensorType]:
    to = ctx.attrs["to"]
    if not isinstance(to, DType):
        raise ctx.error(f"attribute 'to' must be a DType, got {to!r}")
    return [ctx.type(0).with_dtype(to)]


define_op(
    "Cast",
    infer=_cast_infer,
    kernel=lambda ins, a, n: [cast_array(ins[0], a["to"].np)],
    attrs={"to": AttrSpec("dtype"), **_CAST_ATTRS},
)
define_op(
    "CastLike",
    inputs=2,
    infer=lambda ctx: [ctx.type(0).with_dtype(ctx.type(1).dtype)],
    kernel=lambda ins, a, n: [cast_array(ins[0], ins[1].dtype)],
    attrs=dict(_CAST_ATTRS),
)
