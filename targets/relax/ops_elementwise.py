"""Relax lowerings of elementwise ops: unary math and activations, binary arithmetic, comparisons, casts.

Cases:

1. Unary float ops map to Relax ops (``R.exp``...) or short compositions
   that follow the reference kernels (Softplus as ``log(1 + exp(x))`` in its
   stable form, Elu/Selu/Celu through ``exp(x) - 1``...).
2. Binary ops broadcast as numpy does (Relax's rule is the same); a static
   operand enters as a constant/parameter in the other operand's dtype.
   Integer ``Div`` truncates toward zero (TIR's ``/`` on integers), ``Mod``
   floors (``fmod=0``, Python's ``%``) or truncates (``fmod=1``).
3. Comparisons and logic give bool; ``Where`` selects; ``Clip`` clamps with
   optional scalar bounds.
4. ``Cast`` follows ONNX (float -> int truncates; -> bool is ``!= 0``).
5. Half types compute per op in their own type (LLVM promotes each op to
   float32 and rounds back, as numpy does); Gelu, QuickGelu and the
   transcendental activations compute in float32 and cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Node
from accelopt.targets.relax import emit
from accelopt.targets.relax.lowering import LowerCtx, lower, relax_dtype

R = relax.op


def _x(ctx: LowerCtx, node: Node, ins: list[Any]) -> relax.Expr:
    return ctx.operand(node, 0, ins[0])


def _k(ctx: LowerCtx, v: float, like: relax.Expr) -> relax.Expr:
    return emit.scalar(ctx, v, like)


# ---------------------------------------------------------------- case 1
def _softplus(ctx: LowerCtx, x: relax.Expr) -> relax.Expr:
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), the stable form of numpy's logaddexp(0, x)
    m = ctx.emit(R.maximum(x, _k(ctx, 0.0, x)))
    t = ctx.emit(R.exp(R.negative(R.abs(x))))
    return ctx.emit(R.add(m, R.log(R.add(t, _k(ctx, 1.0, x)))))


def _expm1(ctx: LowerCtx, x: relax.Expr) -> relax.Expr:
    return ctx.emit(R.subtract(R.exp(x), _k(ctx, 1.0, x)))


#: unary ops that are one Relax op
_ONE_OP: dict[str, Callable[[relax.Expr], relax.Expr]] = {
    "Abs": R.abs,
    "Neg": R.negative,
    "Exp": R.exp,
    "Log": R.log,
    "Sqrt": R.sqrt,
    "Floor": R.floor,
    "Ceil": R.ceil,
    "Round": R.round,  # half to even (nearbyint), as numpy
    "Sign": R.sign,
    "Sin": R.sin,
    "Cos": R.cos,
    "Tan": R.tan,
    "Asin": R.asin,
    "Acos": R.acos,
    "Atan": R.atan,
    "Asinh": R.asinh,
    "Acosh": R.acosh,
    "Atanh": R.atanh,
    "Tanh": R.tanh,
    "Sigmoid": R.sigmoid,
    "Erf": R.erf,
    "Not": R.logical_not,
    "BitwiseNot": R.bitwise_not,
    "IsNaN": R.isnan,
}


def _one_op(f: Callable[[relax.Expr], relax.Expr]) -> Callable[[LowerCtx, relax.Expr], relax.Expr]:
    return lambda c, x: c.emit(f(x))


_UNARY: dict[str, Callable[[LowerCtx, relax.Expr], relax.Expr]] = {
    **{op: _one_op(f) for op, f in _ONE_OP.items()},
    "Reciprocal": lambda c, x: c.emit(R.divide(_k(c, 1.0, x), x)),
    # (e^x -/+ e^-x) / 2: LLVM has no vector form of TIR's sinh/cosh intrinsics
    "Sinh": lambda c, x: c.emit(R.multiply(R.subtract(R.exp(x), R.exp(R.negative(x))), _k(c, 0.5, x))),
    "Cosh": lambda c, x: c.emit(R.multiply(R.add(R.exp(x), R.exp(R.negative(x))), _k(c, 0.5, x))),
    "Relu": lambda c, x: c.emit(R.maximum(x, _k(c, 0, x))),
    "Softplus": _softplus,
    "Softsign": lambda c, x: c.emit(R.divide(x, R.add(R.abs(x), _k(c, 1.0, x)))),
    "Mish": lambda c, x: c.emit(R.multiply(x, R.tanh(_softplus(c, x)))),
    "HardSwish": lambda c, x: c.emit(R.multiply(x, R.clip(R.add(R.multiply(x, _k(c, 1 / 6, x)), _k(c, 0.5, x)), 0, 1))),
    "Identity": lambda c, x: x,
}
#: unary ops whose reference computes half types in float32
_F32_FOR_HALF = {"Erf", "Sigmoid", "Tanh", "Softplus", "Mish", "Exp", "Log"}


def _unary(op: str, fn: Callable[[LowerCtx, relax.Expr], relax.Expr]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = _x(ctx, node, ins)
        dt = ctx.dtype(x)
        if dt == "bfloat16" or (dt == "float16" and op in _F32_FOR_HALF):
            return [ctx.astype(fn(ctx, ctx.astype(x, "float32")), dt)]
        return [fn(ctx, x)]

    return low


for _name, _fn in _UNARY.items():
    lower(_name)(_unary(_name, _fn))


def _float_act(fn: Callable[[LowerCtx, relax.Expr, dict[str, Any]], relax.Expr]) -> Callable[..., list[Any]]:
    """An activation with attributes, computed in float32 for half inputs."""

    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        x = _x(ctx, node, ins)
        dt = ctx.dtype(x)
        xc = ctx.astype(x, emit.compute_dtype(ctx, x))
        return [ctx.astype(fn(ctx, xc, attrs), dt)]

    return low


@lower("LeakyRelu")
def _leaky_relu(ctx, node, ins, attrs):
    x = _x(ctx, node, ins)
    neg = ctx.emit(R.less(x, _k(ctx, 0.0, x)))
    return [ctx.emit(R.where(neg, R.multiply(x, _k(ctx, attrs["alpha"], x)), x))]


def _elu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    neg = ctx.emit(R.less(x, _k(ctx, 0.0, x)))
    return ctx.emit(R.where(neg, R.multiply(_expm1(ctx, x), _k(ctx, a["alpha"], x)), x))


def _selu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    pos = ctx.emit(R.greater(x, _k(ctx, 0.0, x)))
    y = ctx.emit(R.where(pos, x, R.multiply(_expm1(ctx, x), _k(ctx, a["alpha"], x))))
    return ctx.emit(R.multiply(y, _k(ctx, a["gamma"], x)))


def _celu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    alpha = _k(ctx, a["alpha"], x)
    neg = ctx.emit(R.minimum(R.multiply(_expm1(ctx, ctx.emit(R.divide(x, alpha))), alpha), _k(ctx, 0, x)))
    return ctx.emit(R.add(R.maximum(x, _k(ctx, 0.0, x)), neg))


def _hard_sigmoid(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    y = ctx.emit(R.add(R.multiply(x, _k(ctx, a["alpha"], x)), _k(ctx, a["beta"], x)))
    return ctx.emit(R.clip(y, 0, 1))


def _thresholded_relu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    return ctx.emit(R.where(R.greater(x, _k(ctx, a["alpha"], x)), x, _k(ctx, 0.0, x)))


def _gelu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    return emit.gelu(ctx, x, str(a["approximate"]))


def _quick_gelu(ctx: LowerCtx, x: relax.Expr, a: dict[str, Any]) -> relax.Expr:
    return emit.quick_gelu(ctx, x, float(a["alpha"]))


for _name, _act in {
    "Elu": _elu,
    "Selu": _selu,
    "Celu": _celu,
    "HardSigmoid": _hard_sigmoid,
    "ThresholdedRelu": _thresholded_relu,
    "Gelu": _gelu,
    "QuickGelu": _quick_gelu,
}.items():
    lower(_name)(_float_act(_act))


@lower("Shrink")
def _shrink(ctx, node, ins, attrs):
    x = _x(ctx, node, ins)
    dt = ctx.dtype(x)
    xf = ctx.astype(x, "float64" if dt.startswith(("int", "uint")) else dt)
    lam, bias = float(attrs["lambd"]), float(attrs["bias"])
    inner = ctx.emit(R.where(R.greater(xf, _k(ctx, lam, xf)), R.subtract(xf, _k(ctx, bias, xf)), _k(ctx, 0, xf)))
    y = ctx.emit(R.where(R.less(xf, _k(ctx, -lam, xf)), R.add(xf, _k(ctx, bias, xf)), inner))
    return [ctx.astype(y, dt)]


@lower("IsInf")
def _isinf(ctx, node, ins, attrs):
    x = _x(ctx, node, ins)
    if ctx.dtype(x) == "bfloat16":
        x = ctx.astype(x, "float32")
    pos, neg = bool(attrs["detect_positive"]), bool(attrs["detect_negative"])
    inf = ctx.emit(R.isinf(x))
    if pos and neg:
        return [inf]
    if not pos and not neg:
        return [ctx.emit(R.zeros(ctx.shape(x), "bool"))]
    side = R.greater(x, _k(ctx, 0.0, x)) if pos else R.less(x, _k(ctx, 0.0, x))
    return [ctx.emit(R.logical_and(inf, side))]


# ---------------------------------------------------------------- case 2
def same_dtype(ctx: LowerCtx, node: Node, ins: list[Any], indices: tuple[int, ...] = (0, 1)) -> list[relax.Expr]:
    """The inputs at ``indices`` as Relax expressions of one dtype (a static one takes a run-time one's dtype)."""
    runtime = [ctx.dtype(ins[i]) for i in indices if not ctx.is_static(ins[i])]
    dt = runtime[0] if runtime else ctx.dtype(ins[indices[0]])
    return [ctx.operand(node, i, ins[i], dt) for i in indices]


def _binary(fn: Callable[[relax.Expr, relax.Expr], relax.Expr]) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        a, b = same_dtype(ctx, node, ins)
        if ctx.dtype(a) == "bfloat16":  # the reference computes bf16 arithmetic in float32
            return [ctx.astype(ctx.emit(fn(ctx.astype(a, "float32"), ctx.astype(b, "float32"))), "bfloat16")]
        return [ctx.emit(fn(a, b))]

    return low


_BINARY: dict[str, Callable[[relax.Expr, relax.Expr], relax.Expr]] = {
    "Add": R.add,
    "Sub": R.subtract,
    "Mul": R.multiply,
    "Div": R.divide,  # integers: truncating, as the reference
    "And": R.logical_and,
    "Or": R.logical_or,
    "Xor": R.logical_xor,
    "Equal": R.equal,
    "Greater": R.greater,
    "GreaterOrEqual": R.greater_equal,
    "Less": R.less,
    "LessOrEqual": R.less_equal,
    "BitwiseAnd": R.bitwise_and,
    "BitwiseOr": R.bitwise_or,
    "BitwiseXor": R.bitwise_xor,
}
for _name, _bfn in _BINARY.items():
    lower(_name)(_binary(_bfn))


@lower("PRelu")
def _prelu(ctx, node, ins, attrs):
    x, s = same_dtype(ctx, node, ins)
    return [ctx.emit(R.where(R.less(x, _k(ctx, 0, x)), R.multiply(x, s), x))]


@lower("Mod")
def _mod(ctx, node, ins, attrs):
    a, b = same_dtype(ctx, node, ins)
    dt = ctx.dtype(a)
    if dt in ("float16", "bfloat16"):
        a, b = ctx.astype(a, "float32"), ctx.astype(b, "float32")
    if attrs["fmod"]:
        r = ctx.emit(R.mod(a, b))  # truncated: the sign of the dividend
    else:
        r = ctx.emit(R.floor_mod(a, b))  # floored: the sign of the divisor
    return [ctx.astype(r, dt)]


@lower("Pow")
def _pow(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    dt = ctx.dtype(x)
    if dt in ("float32", "float64"):
        return [ctx.emit(R.power(x, ctx.operand(node, 1, ins[1], dt)))]
    if dt in ("float16", "bfloat16"):
        y = ctx.emit(R.power(ctx.astype(x, "float32"), ctx.operand(node, 1, ins[1], "float32")))
        return [ctx.astype(y, dt)]
    # integer base: exact powers through float64 (|result| < 2**53 for any value that fits), truncated
    y = ctx.emit(R.power(ctx.astype(x, "float64"), ctx.operand(node, 1, ins[1], "float64")))
    return [ctx.astype(ctx.emit(R.trunc(y)), dt)]


@lower("BitShift")
def _bitshift(ctx, node, ins, attrs):
    x, y = same_dtype(ctx, node, ins)
    dt = ctx.dtype(x)
    bits = np.dtype(dt).itemsize * 8
    yi = ctx.astype(y, "int64")
    out = ctx.emit(R.logical_or(R.less(yi, _k(ctx, 0, yi)), R.greater_equal(yi, _k(ctx, bits, yi))))
    safe = ctx.astype(ctx.emit(R.clip(yi, 0, bits - 1)), dt)
    if attrs["direction"] == "LEFT":
        r = ctx.emit(R.left_shift(x, safe))
        fill: relax.Expr = _k(ctx, 0, x)
    else:
        r = ctx.emit(R.right_shift(x, safe))
        fill = (
            ctx.emit(R.where(R.less(x, _k(ctx, 0, x)), _k(ctx, -1, x), _k(ctx, 0, x)))
            if dt[0] == "i"
            else _k(ctx, 0, x)
        )
    return [ctx.emit(R.where(out, fill, r))]


def _variadic(fn: Callable[[relax.Expr, relax.Expr], relax.Expr], mean: bool = False) -> Callable[..., list[Any]]:
    def low(ctx: LowerCtx, node: Node, ins: list[Any], attrs: dict[str, Any]) -> list[Any]:
        idx = tuple(i for i, x in enumerate(ins) if x is not None)
        vals = same_dtype(ctx, node, ins, idx)
        dt = ctx.dtype(vals[0])
        if dt == "bfloat16":
            vals = [ctx.astype(v, "float32") for v in vals]
        acc = vals[0]
        for v in vals[1:]:
            acc = ctx.emit(fn(acc, v))
        if mean:
            acc = ctx.emit(R.divide(acc, _k(ctx, float(len(vals)), acc)))
        return [ctx.astype(acc, dt)]

    return low


lower("Max")(_variadic(R.maximum))
lower("Min")(_variadic(R.minimum))
lower("Sum")(_variadic(R.add))
lower("Mean")(_variadic(R.add, mean=True))


# ---------------------------------------------------------------- case 3
@lower("Where")
def _where(ctx, node, ins, attrs):
    c = ctx.operand(node, 0, ins[0])
    a, b = same_dtype(ctx, node, ins, (1, 2))
    return [ctx.emit(R.where(c, a, b))]


@lower("Clip")
def _clip(ctx, node, ins, attrs):
    x = _x(ctx, node, ins)
    dt = ctx.dtype(x)
    for i, fn in ((1, R.maximum), (2, R.minimum)):
        if len(ins) > i and ins[i] is not None:
            bound = ins[i] if not ctx.is_static(ins[i]) else np.asarray(ins[i]).reshape(())
            b = ctx.expr(bound, dt)
            if not ctx.is_static(ins[i]) and ctx.ndim(b):
                b = ctx.emit(R.reshape(b, ()))
            x = ctx.emit(fn(x, b))
    return [x]


# ---------------------------------------------------------------- case 4
def _cast_to(ctx: LowerCtx, x: relax.Expr, to: str) -> relax.Expr:
    src = ctx.dtype(x)
    if to == "bool":
        return ctx.emit(R.not_equal(x, _k(ctx, 0, x)))
    if src == "bool":
        return ctx.astype(x, to)
    if src == "bfloat16" and to != "float32":
        x = ctx.astype(x, "float32")
    if to == "bfloat16" and src not in ("float32", "bfloat16"):
        x = ctx.astype(x, "float32")
    return ctx.astype(x, to)


@lower("Cast")
def _cast(ctx, node, ins, attrs):
    to = attrs["to"]
    to = to if isinstance(to, DType) else DType.from_onnx(int(to))
    return [_cast_to(ctx, _x(ctx, node, ins), relax_dtype(to))]


@lower("CastLike")
def _cast_like(ctx, node, ins, attrs):
    return [_cast_to(ctx, _x(ctx, node, ins), relax_dtype(node.outputs[0].dtype))]
