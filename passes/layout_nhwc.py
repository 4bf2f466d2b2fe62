"""``layout-nhwc{to=auto|NHWC|NCHW}``: convolutions between channels-first and channels-last layouts.

Cases:

1. ``to=NHWC``: ``Conv(x, W, b?)`` with a constant weight ->
   ``Transpose(ConvNHWC(Transpose(x, [0, 2.., 1]), W_hwio, b), [0, n-1, 1..])``:
   the convolution runs channels-last with its weight stored ``[*kernel, C/g, O]``;
   the transposes around it keep the graph's interface. Run
   ``layout-cancel-transposes`` afterwards so that consecutive convolutions
   (and the elementwise ops between them) stay channels-last.
2. ``to=NCHW``: the reverse, ``ConvNHWC`` -> transposes around ``Conv``.
3. ``to=auto``: the target's ``preferred_layouts["conv"]`` (``NHWC`` when no
   target says otherwise).

A convolution whose weight is not constant, or of unknown rank, is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelopt.errors import PassOptionError
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import replace_node


@dataclass(frozen=True)
class NhwcOptions:
    to: str = "auto"


def _to_last(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


def _to_first(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


@register_pass
class ConvLayout(Pass):
    """Run convolutions channels-last (NHWC) or channels-first (NCHW), as the target prefers."""

    name = "layout-nhwc"
    family = "layout"
    Options = NhwcOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        to = self.options.to.upper()
        if to == "AUTO":  # case 3
            layouts = getattr(ctx.target, "preferred_layouts", None) or {}
            to = str(layouts.get("conv", "NHWC")).upper()
        if to not in ("NHWC", "NCHW"):
            raise PassOptionError(f"layout-nhwc: 'to' must be auto, NHWC or NCHW, not {self.options.to!r}")
        src = "Conv" if to == "NHWC" else "ConvNHWC"
        count = 0
        for node in list(graph.nodes):
            if node.op != src:
                continue
            x = node.inputs[0]
            w = const_of(graph, node.inputs[1])
            if x is None or x.type.rank is None or w is None:
                continue
            self._rewrite(graph, node, w, x.type.rank, to)
            count += 1
        return PassResult(graph, count > 0, stats={"conv": {"candidates": count, "matched": count}})

    def _rewrite(self, graph: Graph, node: Node, w: np.ndarray, rank: int, to: str) -> None:
        prov = Provenance(self.name, "to-" + to.lower(), node.provenance.origins or (node.name,))
        sp = rank - 2
        if to == "NHWC":  # case 1: OIHW -> HWIO
            w_new = np.ascontiguousarray(np.transpose(w, (*range(2, 2 + sp), 1, 0)))
            into, back, op = _to_last(rank), _to_first(rank), "ConvNHWC"
        else:  # case 2: HWIO -> OIHW
            w_new = np.ascontiguousarray(np.transpose(w, (sp + 1, sp, *range(sp))))
            into, back, op = _to_first(rank), _to_last(rank), "Conv"
        wv = graph.add_initializer(f"{node.inputs[1].name}_{to.lower()}", w_new, unique=True)  # type: ignore[union-attr]
        t_in = graph.add_node("Transpose", [node.inputs[0]], {"perm": into}, name=f"{node.name}_to_{to.lower()}",
                              before=node, provenance=prov)
        ins: list[Value | None] = [t_in.outputs[0], wv, *node.inputs[2:]]
        conv = graph.add_node(op, ins, dict(node.attrs), name=f"{node.name}_{to.lower()}", before=node, provenance=prov)
        t_out = graph.add_node("Transpose", [conv.outputs[0]], {"perm": back}, name=f"{node.name}_back",
                               before=node, provenance=prov)
        replace_node(graph, node, t_out.outputs[0])
