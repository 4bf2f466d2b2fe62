"""``convert-fp16`` (group ``fp16``): float16 weights and compute; LayerNorm, Softmax, sums in float32; overflow guard.

Options (``fp16{keep=LayerNorm+Softmax,exclude=node_a,samples=8}``):

- ``keep``: op types kept in float32 (default: LayerNorm, SkipLayerNorm,
  EmbedLayerNorm, LayerNormalization, Softmax, LogSoftmax and the Reduce ops
  that sum: their statistics need float32's range and precision);
- ``exclude``: node names (or op types) kept in float32;
- ``samples``: calibration samples the overflow guard runs (0: none; only
  constants are checked then);
- ``limit``: the overflow bound, float16's largest finite value 65504 by
  default: a node whose inputs or outputs reach beyond it stays float32.

Cases: see ``accelopt.passes.quant_lowprec`` (1. which nodes go low, 2. the
overflow guard, 3. the rebuild with casts at the precision boundaries, 4.
ops that reject float16 stay float32). A graph with no float32 node to
convert is returned unchanged. The notes list the float32 islands and every
node the overflow guard kept, with the value and its magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.quant_lowprec import (
    DEFAULT_KEEP,
    FP16_MAX,
    lower_precision,
    observe_absmax,
    target_lacks_dtype,
)


@dataclass(frozen=True)
class Fp16Options:
    keep: tuple[str, ...] = DEFAULT_KEEP
    exclude: tuple[str, ...] = ()
    samples: int = 8
    limit: float = FP16_MAX

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if not 0 < self.limit <= FP16_MAX:
            raise ValueError(f"limit must be in (0, {FP16_MAX:g}], got {self.limit}")


@register_pass
class Fp16(Pass):
    """float16 weights and compute; LayerNorm/Softmax/reductions float32; overflow guard on calibration data."""

    name: ClassVar[str] = "convert-fp16"
    family: ClassVar[str] = "precision"
    Options: ClassVar[type] = Fp16Options
    dtype: ClassVar[DType] = DType.FLOAT16

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o: Fp16Options = self.options
        unsupported = target_lacks_dtype(ctx.target, self.dtype)
        if unsupported:
            return PassResult(graph, False, notes=[unsupported])
        absmax = observe_absmax(graph, ctx.calibration, o.samples) if o.samples else {}
        guard = () if absmax else ("overflow guard: no calibration samples; only constants were checked",)
        return lower_precision(graph, self.dtype, self.name, o.keep, o.exclude, absmax, o.limit, extra_notes=guard)


__all__ = ["Fp16", "Fp16Options"]
