"""``layout-pack-weights``: matmul weights packed into the zero-padded tiles of a target's GEMM unit.

Case (``layout-pack-weights{tile_k=0,tile_n=0}``):

1. ``Linear``/``MatMul`` by a constant, or an untiled ``PackedLinear``, ->
   ``PackedLinear{tile=[tk, tn]}``: blocks of ``tk x tn`` (zero-padded at the
   edges), keeping any transposition. 0 takes the target's
   ``tile_sizes["gemm"]`` (the fpga target: 16 x 16; the cpu target: a vector-width
   blocking such as 1 x 16), else 16 x 16.

The packed ``PackedLinear`` unpacks its weight, so outputs are unchanged bit for
bit. Quantized layers (``QLinear``, ``QAttention``) are named as near misses and
left alone. Weights that are not constant are left alone; a shared weight is packed
once and the packed initializer shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelopt.errors import PassOptionError
from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.layout_transpose_weights import _linear_parts, _Rewriter, layout_result


@dataclass(frozen=True)
class PackOptions:
    tile_k: int = 0
    tile_n: int = 0


@register_pass
class PackWeights(Pass):
    """Pack matmul weights into zero-padded tiles of the target's GEMM size."""

    name = "layout-pack-weights"
    family = "layout"
    Options = PackOptions

    def tiles(self, ctx: PassContext) -> tuple[int, int]:
        tk, tn = self.options.tile_k, self.options.tile_n
        sizes = getattr(ctx.target, "tile_sizes", None) or {}
        default = tuple(sizes.get("gemm", (16, 16)))[-2:]
        tk = tk or int(default[0])
        tn = tn or int(default[-1])
        if tk <= 0 or tn <= 0:
            raise PassOptionError(f"layout-pack-weights: tile sizes must be positive, got {tk} x {tn}")
        return tk, tn

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        tile = self.tiles(ctx)
        rw = _Rewriter(graph, self.name)
        count = 0
        for node in list(graph.nodes):
            parts = _linear_parts(graph, node)
            if parts is None or parts[2]:
                continue  # already tiled weights are left alone
            w, transposed, _, act = parts
            rw.replace(node, w, act, transposed, tile, "pack")  # case 1
            count += 1
        return layout_result(graph, count, "pack")
