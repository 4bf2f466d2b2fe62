"""``fuse-rmsnorm``: root-mean-square normalization (T5's norm) -> ``RMSNorm``.

Rules (rewrite cases):

1. ``rmsnorm-core``: ``ms = ReduceMean(x^2)`` (``Pow(x, 2)`` or ``Mul(x, x)``),
   ``r = sqrt(ms + eps)``, then one of
   1a ``x / r``,
   1b ``x * Reciprocal(r)`` (dynamo's ``rsqrt``),
   1c ``x * (1 / r)`` (the TorchScript exporter's ``rsqrt``),
   1d ``x * Pow(ms + eps, -0.5)``
   (any operand order) -> ``RMSNorm(x, ones){axis, epsilon}``. The mean
   reduces trailing axes with ``keepdims=1``; ``eps`` is a non-negative scalar
   constant. There is no mean subtraction: with one (``x = a - mean(a)``) it
   is a LayerNorm, which ``fuse-layernorm`` takes (this pass leaves it).
2. ``rmsnorm-scale``: ``RMSNorm(x, s) * c`` with a constant ``c`` that
   broadcasts over the normalized axes only -> ``RMSNorm(x, s*c)`` (T5's
   ``weight * hidden_states``).

Not fused: a mean over other axes than the trailing ones, ``keepdims=0``, an
epsilon outside the square root, a non-constant weight (kept as a ``Mul``
after the ``RMSNorm``).
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.graph import Value
from accelopt.passes.base import register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.fuse_layernorm import (
    affine_check,
    affine_operand,
    fold_in_place,
    norm_axes,
    normalized_patterns,
    param_shape,
)
from accelopt.passes.patterns.driver import RulePass
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import P, Pattern
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-rmsnorm"


# ------------------------------------------------------------- case 1
def _core_patterns() -> list[tuple[str, Pattern]]:
    return normalized_patterns(P.var("x"), "axes", "ms", "r")  # 1a-1d


def _centered(x: Value) -> bool:
    """``x = a - ReduceMean(a)``: then the norm is a LayerNorm's."""
    node = x.producer
    if node is None or node.op != "Sub" or node.inputs[1] is None:
        return False
    mean = node.inputs[1].producer
    return mean is not None and mean.op == "ReduceMean" and mean.inputs[0] is node.inputs[0]


def _core_check(m: Match) -> MatchResult | None:
    x = m["x"]
    if not x.dtype.is_float:
        return MatchResult.fail(f"%{x.name} is {x.type}, expected a float tensor", progress=1)
    if _centered(x):
        return MatchResult.fail(f"%{x.name} has its mean subtracted: a LayerNorm (fuse-layernorm)", progress=1)
    if norm_axes(m, "axes") is None:
        return MatchResult.fail("the mean does not reduce trailing axes", node=m.node("ms").name, where="ReduceMean")
    if int(m.attr("ms", "keepdims")) != 1:
        return MatchResult.fail("ReduceMean has keepdims=0", node=m.node("ms").name, where="ReduceMean")
    eps = const_of(m.graph, m["eps"])
    if eps is None or eps.size != 1 or float(eps.reshape(-1)[0]) < 0:
        return MatchResult.fail("epsilon is not a non-negative scalar", node=m.node("ve").name, where="Add(eps)")
    return None


def _core_rewrite(rw: Rewriter, m: Match) -> Value:
    x = m["x"]
    axes = norm_axes(m, "axes")
    assert axes is not None and x.shape is not None
    name = f"{m.root.name}_rmsnorm"
    scale = rw.const(f"{name}_scale", np.ones(param_shape(x, axes[0]), dtype=x.dtype.np))
    eps = float(const_of(rw.graph, m["eps"]).reshape(-1)[0])  # type: ignore[union-attr]
    return rw.op("RMSNorm", [x, scale], {"axis": axes[0] - len(x.shape), "epsilon": eps}, name=name)


# ------------------------------------------------------------- case 2
def _scale_rewrite(rw: Rewriter, m: Match) -> Value:
    c = affine_operand(m)
    assert isinstance(c, np.ndarray)
    s = const_of(rw.graph, m.node("ln").inputs[1])
    assert s is not None
    return fold_in_place(rw, m, s * c, None)


def rmsnorm_rules() -> list[Rule]:
    rules = [
        Rule(f"rmsnorm-{label}", pat, check=_core_check, rewrite=_core_rewrite, near_miss_min=4)
        for label, pat in _core_patterns()
    ]
    scaled = P.op("Mul", P.op("RMSNorm", P.var(), P.var(), name="ln"), P.var("c"), commute=True)
    rules.append(Rule("rmsnorm-scale", scaled, check=affine_check, rewrite=_scale_rewrite, near_miss_min=3))
    return rules


@register_pass
class FuseRMSNorm(RulePass):
    """Fuse root-mean-square normalization (x / sqrt(mean(x^2) + eps) * w) into RMSNorm."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return rmsnorm_rules()
