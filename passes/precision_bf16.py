"""``convert-bf16`` (group ``bf16``): weights and compute in bfloat16, normalizations and reductions in float32.

bfloat16 has float32's exponent range, so there is no overflow guard; its
8-bit mantissa is what costs accuracy. Options (``bf16{keep=...,exclude=...}``):

- ``keep``: op types kept in float32 (default: LayerNorm, SkipLayerNorm,
  EmbedLayerNorm, LayerNormalization, Softmax, LogSoftmax and the summing
  Reduce ops);
- ``exclude``: node names (or op types) kept in float32.

Cases: see ``accelopt.passes.quant_lowprec`` (1, 3 and 4; 2 is fp16 only).
A target whose capability descriptor lists dtypes without ``bfloat16`` gets
the graph unchanged, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.quant_lowprec import DEFAULT_KEEP, lower_precision, target_lacks_dtype


@dataclass(frozen=True)
class Bf16Options:
    keep: tuple[str, ...] = DEFAULT_KEEP
    exclude: tuple[str, ...] = ()


@register_pass
class Bf16(Pass):
    """bfloat16 weights and compute; LayerNorm/Softmax/reductions float32."""

    name: ClassVar[str] = "convert-bf16"
    family: ClassVar[str] = "precision"
    Options: ClassVar[type] = Bf16Options
    dtype: ClassVar[DType] = DType.BFLOAT16

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o: Bf16Options = self.options
        unsupported = target_lacks_dtype(ctx.target, self.dtype)
        if unsupported:
            return PassResult(graph, False, notes=[unsupported])
        return lower_precision(graph, self.dtype, self.name, o.keep, o.exclude)


__all__ = ["Bf16", "Bf16Options"]
