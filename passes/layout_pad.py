"""``layout-pad{multiple=0,dims=hidden+sequence}``: pad hidden and sequence dims to a tile multiple.

The graph's interface does not change: padding happens inside, and slices give
every output its original shape back. Cases:

1. **hidden**: each ``Linear`` (and ``MatMul`` by a constant 2-D weight) whose
   ``K`` or ``N`` is not a multiple gets a zero-padded weight ``[Kp, Np]`` and
   bias ``[Np]``; its input is zero-padded on the last axis to ``Kp``
   (``Pad``) and its output sliced back to ``N`` (``Slice``). The padded output
   columns are exactly 0 (zero weights and bias, and every Linear activation
   maps 0 to 0), so
2. a ``Linear`` that reads such a sliced output takes the padded tensor
   directly when its ``Kp`` equals that ``Np``: no Slice + Pad in between
   (the FFN's two matmuls stay padded end to end).
3. **sequence**: when every attention in the graph is a fused ``Attention``
   or ``MultiHeadAttention`` whose key-padding mask is a graph input (no
   unfused ``Softmax`` or SDPA left), every graph input whose axis 1 is the mask's sequence dim is padded
   with zeros to a multiple (the mask with 0 = padded key, so the padded
   positions are never attended to), and every output with that dim on axis 1
   is sliced back. Static sequence lengths get constant pads; symbolic ones a
   small Shape/Mod subgraph. Otherwise the sequence is not padded and a note
   says why.

``multiple=0`` takes the target's ``pad_multiple`` (tpu: 128, fpga: 16), else
its GEMM tile, else 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelopt.errors import PassOptionError
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.ir.types import TensorType
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.fuse_common import const_of
from accelopt.passes.patterns.driver import replace_node

DIMS = ("hidden", "sequence")


@dataclass(frozen=True)
class PadOptions:
    multiple: int = 0
    dims: tuple[str, ...] = DIMS


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@register_pass
class PadDims(Pass):
    """Pad hidden and sequence dims to a tile multiple; slices restore the original output shapes."""

    name = "layout-pad"
    family = "layout"
    Options = PadOptions

    def multiple(self, ctx: PassContext) -> int:
        m = self.options.multiple
        if not m:
            caps = ctx.target
            m = int(getattr(caps, "pad_multiple", 0) or 0)
            if not m:
                tiles = (getattr(caps, "tile_sizes", None) or {}).get("gemm")
                m = int(max(tiles)) if tiles else 16
        if m <= 0:
            raise PassOptionError(f"layout-pad: multiple must be positive, got {m}")
        return m

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        unknown = set(self.options.dims) - set(DIMS)
        if unknown:
            raise PassOptionError(f"layout-pad: unknown dims {sorted(unknown)}; known: {'+'.join(DIMS)}")
        m = self.multiple(ctx)
        stats: dict[str, dict[str, int]] = {}
        notes: list[str] = []
        changed = False
        if "hidden" in self.options.dims:
            n, k = self._pad_hidden(graph, m)
            stats["hidden"] = {"candidates": n, "matched": n, "kept_padded": k}
            changed |= n > 0
        if "sequence" in self.options.dims:
            n, why = self._pad_sequence(graph, m)
            stats["sequence"] = {"candidates": n, "matched": n}
            if why:
                notes.append(f"sequence not padded: {why}")
            changed |= n > 0
        return PassResult(graph, changed, stats=stats, notes=notes)

    # ------------------------------------------------------------- cases 1, 2
    def _pad_hidden(self, graph: Graph, m: int) -> tuple[int, int]:
        padded_tail: dict[int, tuple[Value, int]] = {}  # id(slice output) -> (padded value, padded width)
        count = kept = 0
        for node in list(graph.nodes):
            if node.op not in ("Linear", "MatMul"):
                continue
            w = const_of(graph, node.inputs[1])
            x = node.inputs[0]
            if w is None or w.ndim != 2 or x is None or x.type.rank is None:
                continue
            k, n = w.shape
            kp, np_ = _round_up(k, m), _round_up(n, m)
            if (kp, np_) == (k, n):
                continue
            prov = Provenance(self.name, "hidden", node.provenance.origins or (node.name,))
            dt = w.dtype
            wp = np.zeros((kp, np_), dtype=dt)
            wp[:k, :n] = w
            ins: list[Value | None] = [None, graph.add_initializer(f"{node.inputs[1].name}_padded", wp, unique=True)]  # type: ignore[union-attr]
            b = const_of(graph, node.inputs[2]) if node.op == "Linear" and len(node.inputs) > 2 else None
            if b is not None:
                bp = np.zeros(np_, dtype=b.dtype)
                bp[:n] = b.reshape(-1)
                ins.append(graph.add_initializer(f"{node.inputs[2].name}_padded", bp, unique=True))  # type: ignore[union-attr]
            elif node.op == "Linear" and len(node.inputs) > 2 and node.inputs[2] is not None:
                continue  # a non-constant bias cannot be padded here
            if kp == k:
                ins[0] = x
            elif id(x) in padded_tail and padded_tail[id(x)][1] == kp:  # case 2
                ins[0] = padded_tail[id(x)][0]
                kept += 1
            else:
                ins[0] = self._pad_last(graph, x, kp - k, node, prov)
            attrs = {"activation": node.attr("activation", "none")} if node.op == "Linear" else {}
            if attrs.get("activation") == "none":
                attrs = {}
            lin = graph.add_node("Linear", ins, attrs, name=f"{node.name}_padded", before=node, provenance=prov)
            y = lin.outputs[0]
            if np_ != n:
                ends = graph.add_initializer(f"{node.name}_n", np.array([n], np.int64), unique=True)
                y = graph.add_node(
                    "Slice", [y, self._const(graph, "zero", [0]), ends, self._const(graph, "last_axis", [-1])],
                    name=f"{node.name}_slice", before=node, provenance=prov, types=[node.outputs[0].type],
                ).outputs[0]
                padded_tail[id(y)] = (lin.outputs[0], np_)
            replace_node(graph, node, y)
            count += 1
        # Slices whose every user now reads the padded tensor are dead (with their constants)
        for node in list(reversed(graph.nodes)):
            if node.op in ("Slice", "Pad") and node.provenance.pass_name == self.name and not node.outputs[0].uses \
                    and node.outputs[0] not in graph.outputs:
                consts = [v for v in node.inputs if v is not None and v.is_const]
                graph.remove_node(node)
                for v in consts:
                    if not v.uses and graph.initializers.get(v.name) is v:
                        graph.remove_initializer(v.name)
        return count, kept

    def _pad_last(self, graph: Graph, x: Value, amount: int, before: Node, prov: Provenance) -> Value:
        pads = graph.add_initializer(f"{before.name}_pads", np.array([0, amount], np.int64), unique=True)
        zero = graph.add_initializer(f"{before.name}_pad_value", np.zeros((), x.dtype.np), unique=True)
        return graph.add_node(
            "Pad", [x, pads, zero, self._const(graph, "last_axis", [-1])], name=f"{before.name}_pad",
            before=before, provenance=prov,
        ).outputs[0]

    @staticmethod
    def _const(graph: Graph, name: str, values: list[int]) -> Value:
        key = f"layout_pad_{name}"
        v = graph.initializers.get(key)
        if v is None:
            v = graph.add_initializer(key, np.array(values, np.int64))
        return v

    # ----------------------------------------------------------------- case 3
    def _pad_sequence(self, graph: Graph, m: int) -> tuple[int, str]:
        ops = graph.op_counts()
        fused = [n for n in graph.nodes if n.op in ("Attention", "MultiHeadAttention")]
        if not (fused or ops.get("Softmax") or ops.get("ScaledDotProductAttention")):
            return 0, ""  # no attention: nothing says which dim is a sequence
        if ops.get("Softmax") or ops.get("ScaledDotProductAttention"):
            return 0, "the graph has unfused attention (run fuse first); padded keys might be attended to"
        masks = [n.inputs[3] if len(n.inputs) > 3 else None for n in fused]
        if any(v is None or not v.is_input for v in masks):
            return 0, "not every attention has a key-padding mask input that masks padded positions"
        seq = {v.shape[1] for v in masks if v is not None and v.shape is not None and len(v.shape) == 2}
        if len(seq) != 1:
            return 0, "the attention masks do not share one sequence dimension"
        (dim,) = seq
        if dim is None:
            return 0, "the sequence dimension is unnamed"
        if isinstance(dim, int) and dim % m == 0:
            return 0, ""
        inputs = [v for v in graph.inputs if v.shape is not None and len(v.shape) >= 2 and v.shape[1] == dim]
        prov = Provenance(self.name, "sequence", ())
        first = graph.nodes[0] if graph.nodes else None
        if isinstance(dim, int):
            amount: Value = self._const(graph, f"seq_pad_{dim}", [0, _round_up(dim, m) - dim])
            length: Value = self._const(graph, f"seq_len_{dim}", [dim])
        else:
            length, amount = self._seq_amount(graph, inputs[0], m, first, prov)
        for v in inputs:
            zero = graph.add_initializer(f"{v.name}_pad_value", np.zeros((), v.dtype.np), unique=True)
            pad = graph.add_node("Pad", [v, amount, zero, self._const(graph, "axis1", [1])], name=f"{v.name}_pad",
                                 before=first, provenance=prov)
            for node, i in list(v.uses):
                if node is not pad and node.provenance is not prov:
                    node.set_input(i, pad.outputs[0])
        zero1 = self._const(graph, "zero", [0])
        axis1 = self._const(graph, "axis1", [1])
        for i, out in enumerate(list(graph.outputs)):
            if out.shape is None or len(out.shape) < 2 or out.shape[1] != dim:
                continue
            sl = graph.add_node("Slice", [out, zero1, length, axis1], name=f"{out.name}_unpad", provenance=prov,
                                types=[TensorType(out.dtype, out.shape)])
            name = out.name
            graph.rename_value(out, graph.unique_name(f"{name}_padded"))
            graph.outputs[i] = sl.outputs[0]
            graph.rename_value(sl.outputs[0], name)
        graph.toposort()
        return len(inputs), ""

    def _seq_amount(self, graph: Graph, v: Value, m: int, first: Node | None, prov: Provenance) -> tuple[Value, Value]:
        """(the sequence length [1], the pads [0, (m - len % m) % m]) computed from ``v``'s shape."""
        mm = self._const(graph, f"multiple_{m}", [m])

        def op(name: str, kind: str, ins: list[Value], attrs: dict | None = None) -> Value:
            return graph.add_node(kind, ins, attrs or {}, name=f"seq_pad_{name}", before=first,
                                  provenance=prov).outputs[0]

        length = op("len", "Shape", [v], {"start": 1, "end": 2})
        rest = op("rest", "Mod", [op("sub", "Sub", [mm, op("mod", "Mod", [length, mm])]), mm])
        pads = op("pads", "Concat", [self._const(graph, "zero", [0]), rest], {"axis": 0})
        return length, pads
