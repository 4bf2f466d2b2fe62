"""``layout-transpose-weights``: matmul weights stored pre-transposed, as a target prefers.

The pass (and ``layout-pack-weights``, which shares this module's rewriter)
rewrites a ``Linear`` (or a ``MatMul`` by a constant 2-D weight) into a
``PackedLinear`` whose constant weight is stored in the target's layout; the
op unpacks it, so outputs are unchanged bit for bit.

``layout-transpose-weights{layout=auto|NK|KN}``:

1. ``NK``: ``Linear(x, W[K, N], b?)`` -> ``PackedLinear{transposed=1}(x, W^T)``
   (the ``[out, in]`` layout of dense kernels in TVM, XLA, oneDNN).
2. ``KN``: an untiled transposed ``PackedLinear`` goes back to ``Linear``.
3. ``auto``: the target's ``preferred_layouts["matmul_weight"]`` (``NK`` when
   there is no target or it names none).

Weights that are not constant, and Linear nodes already in the requested layout,
are left alone. A shared weight is converted once and the result shared.

4. Quantized layers (``QLinear``, ``QAttention``: int8 ran first) keep their int8
   weights as they are; both layout passes name them as near misses with a note
   (int8 weights are not packed yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.errors import PassOptionError
from accelopt.ir.graph import Graph, Node, Provenance, Value, tensor_digest
from accelopt.ir.ops.fused import pack_weight, unpack_weight
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import replace_node


@dataclass(frozen=True)
class TransposeOptions:
    layout: str = "auto"


def _linear_parts(graph: Graph, node: Node) -> tuple[np.ndarray, bool, tuple[int, ...], str] | None:
    """(W [K, N], transposed, tile, activation) of a Linear-like node with a constant weight."""
    if node.op == "MatMul":
        w = const_of(graph, node.inputs[1])
        x = node.inputs[0]
        if w is None or w.ndim != 2 or x is None or const_of(graph, x) is not None:
            return None
        return w, False, (), "none"
    if node.op == "Linear":
        w = const_of(graph, node.inputs[1])
        return None if w is None or w.ndim != 2 else (w, False, (), str(node.attr("activation", "none")))
    if node.op == "PackedLinear":
        wp = const_of(graph, node.inputs[1])
        if wp is None:
            return None
        t = bool(node.attr("transposed", 0))
        tile = tuple(int(v) for v in node.attr("tile", ()) or ())
        k, n = int(node.attrs["k"]), int(node.attrs["n"])
        return unpack_weight(wp, k=k, n=n, transposed=t, tile=tile), t, tile, str(node.attr("activation", "none"))
    return None


_QUANTIZED_LAYERS = ("QLinear", "QAttention")
_QUANTIZED_REASON = "int8 weight left as it is: the layout passes rewrite float weights only"


def layout_result(graph: Graph, count: int, stat: str) -> PassResult:
    """The result of a layout pass that rewrote ``count`` layers; quantized layers are named (case 4)."""
    quantized = [n.name for n in graph.nodes if n.op in _QUANTIZED_LAYERS]
    notes = [f"{len(quantized)} quantized layer(s) not rewritten: {_QUANTIZED_REASON}"] if quantized else []
    return PassResult(
        graph,
        count > 0,
        stats={stat: {"candidates": count, "matched": count}},
        near_misses=[f"{name}: {_QUANTIZED_REASON}" for name in quantized],
        notes=notes,
    )


class _Rewriter:
    """Replaces Linear-like nodes by PackedLinear / Linear, sharing converted weights."""

    def __init__(self, graph: Graph, pass_name: str) -> None:
        self.graph = graph
        self.pass_name = pass_name
        self.cache: dict[tuple[str, bool, tuple[int, ...]], Value] = {}

    def weight(self, w: np.ndarray, transposed: bool, tile: tuple[int, ...], hint: str) -> Value:
        key = (tensor_digest(w), transposed, tile)
        got = self.cache.get(key)
        if got is None or got.graph is not self.graph:
            arr = pack_weight(w, transposed=transposed, tile=tile)
            got = self.graph.add_initializer(f"{hint}_packed" if (transposed or tile) else hint, arr, unique=True)
            self.cache[key] = got
        return got

    def replace(self, node: Node, w: np.ndarray, act: str, transposed: bool, tile: tuple[int, ...], rule: str) -> None:
        graph = self.graph
        wv = self.weight(w, transposed, tile, node.inputs[1].name)  # type: ignore[union-attr]
        ins: list[Value | None] = [node.inputs[0], wv] + ([node.inputs[2]] if len(node.inputs) > 2 else [])
        prov = Provenance(self.pass_name, rule, node.provenance.origins or (node.name,))
        attrs: dict[str, Any] = {"activation": act} if act != "none" else {}
        if transposed or tile:
            op = "PackedLinear"
            attrs.update({"k": int(w.shape[0]), "n": int(w.shape[1])})
            if transposed:
                attrs["transposed"] = 1
            if tile:
                attrs["tile"] = list(tile)
        else:
            op = "Linear"
        new = graph.add_node(op, ins, attrs, name=f"{node.name}_{rule}", after=node, provenance=prov)
        replace_node(graph, node, new.outputs[0])


def _target_layout(ctx: PassContext) -> str:
    caps = ctx.target
    layouts = getattr(caps, "preferred_layouts", None) or {}
    return str(layouts.get("matmul_weight", "NK")).upper()


@register_pass
class TransposeWeights(Pass):
    """Store matmul weights pre-transposed ([N, K]) or back in [K, N], as the target prefers."""

    name = "layout-transpose-weights"
    family = "layout"
    Options = TransposeOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        layout = self.options.layout.upper()
        if layout == "AUTO":  # case 3
            layout = _target_layout(ctx)
        if layout not in ("NK", "KN"):
            raise PassOptionError(f"layout-transpose-weights: layout must be auto, NK or KN, not {self.options.layout!r}")
        rw = _Rewriter(graph, self.name)
        count = 0
        for node in list(graph.nodes):
            parts = _linear_parts(graph, node)
            if parts is None:
                continue
            w, transposed, tile, act = parts
            want = layout == "NK"
            if transposed == want or tile or (node.op == "MatMul" and not want):
                continue  # tiled weights belong to layout-pack-weights; a plain MatMul is already KN
            rw.replace(node, w, act, want, tile, "transpose")  # cases 1, 2
            count += 1
        return layout_result(graph, count, "transpose")
