"""``fuse-gelu``: GELU written out in elementwise ops -> the ``Gelu`` op (or ``QuickGelu``).

The inner term ``t`` is one of

- erf: ``1 + Erf(x / sqrt 2)`` (``Div`` by sqrt 2 or ``Mul`` by 1/sqrt 2),
- tanh: ``1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))``, the cube as
  ``Pow(x, 3)``, ``x * (x * x)`` or ``(x * x) * x``, and the product also
  distributed as ``sqrt(2/pi) * x + 0.0356774 * x^3``,

and the half is applied in any of these placements (operands in any order):

1. ``(x * t) * 0.5``
2. ``(x * 0.5) * t``
3. ``x * (t * 0.5)``
4. ``(x / 2) * t``
5. ``x * (0.5 + 0.5 * Erf(...))`` / ``x * (0.5 + 0.5 * Tanh(...))``

Rewrites: the erf forms -> ``Gelu{approximate="none"}``, the tanh forms ->
``Gelu{approximate="tanh"}``, and

6. ``x * Sigmoid(1.702 * x)`` -> ``QuickGelu{alpha=1.702}`` (the sigmoid
   approximation; only for alpha within 1e-3 of 1.702, plain SiLU is left alone).

An existing ``Gelu`` op is already in the target form and is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from accelopt.ir.graph import Value
from accelopt.passes.base import register_pass
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P, Pattern
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-gelu"
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
QUICK_ALPHA = 1.702


def _mul(a: Pattern, b: Pattern, name: str | None = None) -> Pattern:
    return P.op("Mul", a, b, commute=True, name=name)


def _add(a: Pattern, b: Pattern) -> Pattern:
    return P.op("Add", a, b, commute=True)


def _erf_inner(x: Pattern) -> Pattern:
    return P.op(
        "Erf",
        P.one_of(P.op("Div", x, P.scalar(SQRT2, atol=1e-5)), _mul(x, P.scalar(1 / SQRT2, atol=1e-5))),
    )


def _tanh_inner(x: Pattern) -> Pattern:
    cube = P.one_of(P.op("Pow", x, P.scalar(3.0)), _mul(x, _mul(x, x)))
    poly = _mul(P.scalar(SQRT_2_OVER_PI, atol=1e-5), _add(x, _mul(cube, P.scalar(0.044715, atol=1e-6))))
    distributed = _add(_mul(x, P.scalar(SQRT_2_OVER_PI, atol=1e-5)), _mul(cube, P.scalar(SQRT_2_OVER_PI * 0.044715, atol=1e-6)))
    return P.op("Tanh", P.one_of(poly, distributed))


def _placements(inner: Callable[[Pattern], Pattern]) -> list[tuple[str, Pattern]]:
    """Cases 1-5 for one inner function."""

    def forms() -> list[tuple[str, Pattern]]:
        x = P.var("x")
        t = _add(inner(x), P.scalar(1.0))
        half = P.scalar(0.5)
        return [
            ("x-t-half", _mul(_mul(x, t), half)),  # 1
            ("x-half-t", _mul(_mul(x, half), t)),  # 2
            ("t-half", _mul(x, _mul(t, P.scalar(0.5)))),  # 3
            ("xdiv2-t", _mul(P.op("Div", x, P.scalar(2.0)), t)),  # 4
        ]

    out = forms()
    x = P.var("x")
    out.append(("half-plus-half", _mul(x, _add(_mul(inner(x), P.scalar(0.5)), P.scalar(0.5)))))  # 5
    return out


def _float_check(m: Match) -> MatchResult | None:
    if not m["x"].dtype.is_float:
        return MatchResult.fail("not a float tensor", progress=1)
    return None


def _gelu_rewrite(approximate: str) -> Callable[[Rewriter, Match], Value]:
    def rewrite(rw: Rewriter, m: Match) -> Value:
        return rw.op("Gelu", [m["x"]], {"approximate": approximate}, name=f"{m.root.name}_gelu")

    return rewrite


def _quick_check(m: Match) -> MatchResult | None:
    alpha = m.scalar("alpha") if m.const("alpha") is not None and m.const("alpha").size == 1 else None  # type: ignore[union-attr]
    if alpha is None or abs(alpha - QUICK_ALPHA) > 1e-3:
        return MatchResult.fail("sigmoid slope is not 1.702", progress=1)
    return _float_check(m)


def _quick_rewrite(rw: Rewriter, m: Match) -> Value:
    return rw.op("QuickGelu", [m["x"]], {"alpha": m.scalar("alpha")}, name=f"{m.root.name}_quickgelu")


def gelu_rules() -> list[Rule]:
    rules: list[Rule] = []
    for kind, inner, approx in (("erf", _erf_inner, "none"), ("tanh", _tanh_inner, "tanh")):
        for label, pat in _placements(inner):
            rules.append(Rule(f"gelu-{kind}-{label}", pat, check=_float_check, rewrite=_gelu_rewrite(approx)))
    x = P.var("x")
    quick = _mul(x, P.op("Sigmoid", _mul(x, P.const("alpha"))))  # 6
    rules.append(Rule("gelu-sigmoid", quick, check=_quick_check, rewrite=_quick_rewrite, near_miss_min=3))
    return rules


@register_pass
class FuseGelu(RulePass):
    """Fuse GELU written with Erf or Tanh (and x*sigmoid(1.702x)) into Gelu / QuickGelu."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return gelu_rules()
