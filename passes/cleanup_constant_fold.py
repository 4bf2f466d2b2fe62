"""``constant-fold``: evaluate what is known before the model runs and store it as initializers.

Cases (comments below cite the numbers):

1. A ``Constant`` node becomes an initializer of the same name.
2. A node whose present inputs are all constants is run through its registry
   kernel; each output becomes an initializer named like the output. Ops with
   random results (``RandomNormal``, ``Bernoulli``, ...) are never folded; a
   kernel that fails, or returns a dtype/shape other than the inferred type,
   leaves the node alone (counted in ``stats["kernel_failed"]``).
3. Shape computations with symbolic dims fold where their value is known:
   an integer tensor whose value is derived from shapes (``Shape``, ``Size``,
   ``Gather``/``Slice``/``Concat``/``Unsqueeze``/``Cast``/arithmetic of them,
   through ``accelopt.ir.ops.common.sym_value``) folds when every element is a
   static int, e.g. ``Gather(Shape(x), 2)`` with ``x: [batch, seq, 768]``
   becomes ``768`` while ``Gather(Shape(x), 0)`` stays.
4. Size cap: a result with more than ``max_elements`` elements that is also
   larger than all its constant inputs together is not materialized (an
   ``Expand`` of a scalar to a large shape stays an ``Expand``); counted in
   ``stats["too_large"]``. A node whose inferred outputs would take more than
   ``max_bytes`` (default 64 MiB; a ``ConstantOfShape`` of [10**4, 10**4] is
   400 MB) is not even run: it stays, counted in ``stats["too_large"]``, with
   a note naming it and the size.
5. Initializers that only the folded nodes used are removed.

Tensors parsed from the text form without their data (printed as
``<sha:...>``) are treated as unknown and never folded.

Graph outputs keep their names (the new initializer takes the output's name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.ops.common import sym_value
from accelopt.ir.registry import get_op
from accelopt.ir.types import shapes_compatible
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass

log = logging.getLogger(__name__)

#: ops whose results are random: never folded (case 2)
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


@dataclass(frozen=True)
class ConstantFoldOptions:
    max_elements: int = 1 << 20
    max_bytes: int = 64 << 20


def _static_bytes(v: Value) -> int | None:
    """Bytes of ``v`` when its type is static (a dim of 0 or a symbol: None)."""
    n = v.type.numel
    return None if n is None else n * v.dtype.np.itemsize


def _is_const(graph: Graph, v: Value | None) -> bool:
    # a tensor parsed from the text form without its data (``<sha:...>``) is not known
    return v is None or (graph.const_value(v) is not None and v.const_digest is None)


def _shape_value(v: Value) -> np.ndarray | None:
    """Case 3: the value of an integer shape tensor when every element is a static int."""
    if not v.type.dtype.is_int:
        return None
    sv = sym_value(v)
    if sv is None:
        return None
    shape, vals = sv
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
        return None
    return np.array(vals, dtype=v.type.dtype.np).reshape(shape)


@register_pass
class ConstantFold(Pass):
    """Fold constant subgraphs (and the static parts of shape computations) into initializers."""

    name = "constant-fold"
    family = "cleanup"
    Options = ConstantFoldOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = {"constants": 0, "folded": 0, "shape_values": 0, "too_large": 0, "kernel_failed": 0}
        notes: list[str] = []
        used_consts: dict[int, Value] = {}
        for node in list(graph.nodes):
            if node.op in NONDETERMINISTIC:
                continue
            results: list[np.ndarray] | None = None
            kind = ""
            if node.op == "Constant":  # case 1
                results = [graph.const_value(node.outputs[0])]  # type: ignore[list-item]
                kind = "constants"
            elif all(_is_const(graph, v) for v in node.inputs):  # case 2
                results = self._evaluate(graph, node, stats, notes)
                kind = "folded"
            else:  # case 3
                shaped = [_shape_value(v) for v in node.outputs]
                if all(a is not None for a in shaped):
                    results = shaped  # type: ignore[assignment]
                    kind = "shape_values"
            if results is None:
                continue
            for v in node.inputs:
                if v is not None and v.is_const:
                    used_consts[id(v)] = v
            self._replace(graph, node, results)
            stats[kind] += 1
        # case 5
        outs = {id(v) for v in graph.outputs}
        for v in used_consts.values():
            if not v.uses and id(v) not in outs and graph.initializers.get(v.name) is v:
                graph.remove_initializer(v.name)
        modified = stats["constants"] + stats["folded"] + stats["shape_values"] > 0
        return PassResult(graph, modified, stats=stats, notes=notes)

    def _evaluate(self, graph: Graph, node: Node, stats: dict[str, int], notes: list[str]) -> list[np.ndarray] | None:
        opdef = get_op(node.op)
        planned = sum(_static_bytes(v) or 0 for v in node.outputs)
        if planned > self.options.max_bytes:  # case 4: refused before anything is computed
            stats["too_large"] += 1
            notes.append(
                f"node {node.name} ({node.op}) not folded: its output would take {planned / 2**20:,.0f} MiB, "
                f"over max_bytes={self.options.max_bytes}"
            )
            return None
        args = [None if v is None else graph.const_value(v) for v in node.inputs]
        try:
            outs = [np.asarray(o) for o in opdef.kernel(args, opdef.full_attrs(node.attrs), len(node.outputs))]
        except Exception as e:  # a kernel refusing its inputs leaves the node for run time
            stats["kernel_failed"] += 1
            notes.append(f"node {node.name} ({node.op}) not folded: {type(e).__name__}: {e}")
            return None
        if len(outs) != len(node.outputs):
            stats["kernel_failed"] += 1
            return None
        for o, v in zip(outs, node.outputs):
            if o.dtype != v.type.dtype.np or not shapes_compatible(tuple(o.shape), v.type.shape):
                stats["kernel_failed"] += 1
                notes.append(f"node {node.name} ({node.op}) not folded: kernel gave {o.dtype}{list(o.shape)}, type is {v.type}")
                return None
        # case 4
        in_size = sum(a.size for a in args if a is not None)
        biggest = max((o.size for o in outs), default=0)
        if (biggest > self.options.max_elements and biggest > in_size) or sum(o.nbytes for o in outs) > self.options.max_bytes:
            stats["too_large"] += 1
            return None
        return outs

    @staticmethod
    def _replace(graph: Graph, node: Node, results: list[np.ndarray]) -> None:
        names = [v.name for v in node.outputs]
        new_values = [graph.add_initializer(f"{name}_folded", arr, unique=True) for name, arr in zip(names, results)]
        for old, new in zip(node.outputs, new_values):
            old.replace_all_uses_with(new)  # graph outputs included
        graph.remove_node(node)
        for name, new in zip(names, new_values):
            graph.rename_value(new, name)
