"""Vectorizable float32 math as TIR expressions, for kernel epilogues and softmax.

LLVM lowers TVM's ``exp`` and ``erf`` on x86 to scalar libm calls (``expf@PLT``,
``erff@PLT``), one call per lane, which stalls a vectorized loop; ``tanh`` is
expanded through ``exp`` and so calls ``expf`` too. The expressions below use only
arithmetic, ``floor`` and a bit reinterpretation, so a vectorized loop stays
vectorized:

1. ``exp(x)``: ``x = n ln2 + r`` with ``|r| <= ln2/2`` (``ln2`` split in two
   parts so that ``n ln2`` is exact), ``e^r`` by its Taylor series to degree 7
   (relative error below 1e-8 on that interval, so float32 rounding dominates:
   measured 1.2e-7), and ``2^n`` built in the exponent bits. ``x`` is clamped
   to [-87.3, 88.3], the normal float32 range: ``exp`` of anything below gives
   about 1e-38 instead of 0 (or a denormal), which a softmax cannot tell apart.
2. ``erf(x)``: Abramowitz and Stegun 7.1.26, ``1 - t (a1 + t (a2 + ...)) e^{-x^2}``
   with ``t = 1 / (1 + p |x|)`` and the sign restored, absolute error below
   1.5e-7.
3. ``tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1))`` through 1 (absolute error
   about 1e-7, which is what ``1 + tanh`` in GELU needs).
4. The activations of ``Linear`` / ``QLinear`` (``LINEAR_ACTIVATIONS``): GELU
   exact through 2, GELU tanh through 3, GELU sigmoid (``x sigmoid(1.702 x)``)
   through 1, ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import tirx
from tvm.ir.expr import Expr as PrimExpr

_LN2_HI = 0.693359375  # 10 significant bits: n * _LN2_HI is exact for |n| < 2**13
_LN2_LO = math.log(2.0) - _LN2_HI
_EXP_LO, _EXP_HI = -87.3, 88.3
# Abramowitz & Stegun 7.1.26
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _f(v: float) -> PrimExpr:
    return tirx.const(v, "float32")


def _let(value: PrimExpr, body: Callable[[PrimExpr], PrimExpr], name: str) -> PrimExpr:
    """``body(value)``: the value is shared by the expression DAG (LLVM evaluates it once).

    Not a TIR ``Let``: MetaSchedule's FLOP estimator and feature extractor cannot read ``Let``
    expressions, and a kernel must stay tunable. ``name`` documents the role of the value.
    """
    del name
    return body(value)


def exp(x: PrimExpr) -> PrimExpr:
    """Case 1: ``e^x`` for float32 ``x``."""

    def scaled(xc: PrimExpr) -> PrimExpr:
        return _let(tirx.floor(xc * _f(1.0 / math.log(2.0)) + _f(0.5)), lambda n: series(xc, n), "exp_n")

    def series(xc: PrimExpr, n: PrimExpr) -> PrimExpr:
        def poly(r: PrimExpr) -> PrimExpr:
            p = _f(1.0 / math.factorial(7))
            for i in range(6, -1, -1):
                p = p * r + _f(1.0 / math.factorial(i))
            return p

        bits = (tirx.Cast("int32", n) + 127) << 23
        return _let(xc - n * _f(_LN2_HI) - n * _f(_LN2_LO), poly, "exp_r") * tirx.reinterpret("float32", bits)

    return _let(tirx.max(tirx.min(x, _f(_EXP_HI)), _f(_EXP_LO)), scaled, "exp_x")


def erf(x: PrimExpr) -> PrimExpr:
    """Case 2: ``erf(x)`` for float32 ``x``."""

    def positive(ax: PrimExpr) -> PrimExpr:
        return _let(_f(1.0) / (_f(1.0) + _f(_AS_P) * ax), lambda t: series(ax, t), "erf_t")

    def series(ax: PrimExpr, t: PrimExpr) -> PrimExpr:
        poly = _f(_AS_A[-1])
        for a in reversed(_AS_A[:-1]):
            poly = poly * t + _f(a)
        return _f(1.0) - poly * t * exp(-(ax * ax))

    return _let(x, lambda v: _signed(v, _let(tirx.abs(v), positive, "erf_ax")), "erf_x")


def _signed(x: PrimExpr, y: PrimExpr) -> PrimExpr:
    """``y`` with the sign of ``x`` (``y`` is an odd function's value at ``|x|``)."""
    return _let(y, lambda v: tirx.if_then_else(x < _f(0.0), -v, v), "odd")


def tanh(x: PrimExpr) -> PrimExpr:
    """Case 3."""
    return _let(x, lambda v: _signed(v, _f(1.0) - _f(2.0) / (exp(_f(2.0) * tirx.abs(v)) + _f(1.0))), "tanh_x")


def sigmoid(x: PrimExpr) -> PrimExpr:
    return _f(1.0) / (_f(1.0) + exp(-x))


def activation(y: PrimExpr, name: str) -> PrimExpr:
    """Case 4: ``Linear``'s activation ``name`` applied to ``y``."""
    if name == "none":
        return y
    if name == "relu":
        return tirx.max(y, _f(0.0))
    if name == "gelu":
        return _let(y, lambda v: _f(0.5) * v * (_f(1.0) + erf(v * _f(1.0 / math.sqrt(2.0)))), "gelu_x")
    if name == "gelu_tanh":
        return _let(
            y,
            lambda v: _f(0.5) * v * (_f(1.0) + tanh(_f(math.sqrt(2.0 / math.pi)) * (v + _f(0.044715) * v * v * v))),
            "gelu_x",
        )
    if name == "gelu_sigmoid":
        return _let(y, lambda v: v * sigmoid(_f(1.702) * v), "gelu_x")
    raise ValueError(f"unknown activation {name!r}")
