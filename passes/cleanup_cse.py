"""``cse``: common subexpression elimination.

Cases:

1. Two nodes with the same op, the same inputs (the same values, in order)
   and the same attributes compute the same thing: users of the later one are
   pointed at the earlier one and the later one is removed.
2. For commutative ops (``Add``, ``Mul``, ``Max``, ``Min``, ``Sum``, ``And``,
   ``Or``, ``Xor``, ``Equal``) the input order does not matter.
3. Identical initializers (same dtype, shape and bytes, at most
   ``max_const_elements`` elements) are merged first, so that nodes reading
   separate copies of one constant (exporters emit many scalar ``1.0``) become
   equal under case 1.

Never merged: ops with random results. A duplicate whose output is a graph
output is kept when the surviving value is itself a graph output (merging would
drop an output name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accelopt.ir.graph import Graph, Node, Value, attr_key
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.cleanup_constant_fold import NONDETERMINISTIC
from accelopt.passes.patterns.driver import replace_value

COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Xor", "Equal"})


@dataclass(frozen=True)
class CSEOptions:
    max_const_elements: int = 1 << 16


def _node_key(node: Node) -> tuple[Any, ...]:
    ins = [None if v is None else id(v) for v in node.inputs]
    if node.op in COMMUTATIVE and None not in ins:  # case 2
        ins = sorted(ins)  # type: ignore[type-var]
    attrs = tuple((k, attr_key(v)) for k, v in sorted(node.attrs.items()))
    return (node.op, tuple(ins), attrs, len(node.outputs))


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge nodes that compute the same thing from the same inputs, and identical constants."""

    name = "cse"
    family = "cleanup"
    Options = CSEOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        merged_consts = self._merge_constants(graph)
        merged_nodes = 0
        seen: dict[tuple[Any, ...], Node] = {}
        for node in list(graph.nodes):
            if node.op in NONDETERMINISTIC:
                continue
            key = _node_key(node)
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            if not self._merge(graph, node, first):
                continue
            merged_nodes += 1
        stats = {"nodes_merged": merged_nodes, "constants_merged": merged_consts}
        return PassResult(graph, merged_nodes + merged_consts > 0, stats=stats)

    @staticmethod
    def _merge(graph: Graph, dup: Node, keep: Node) -> bool:
        outs = {id(v) for v in graph.outputs}
        for old, new in zip(dup.outputs, keep.outputs):
            if id(old) in outs and id(new) in outs:
                return False
        for old, new in zip(dup.outputs, keep.outputs):
            replace_value(graph, old, new)  # case 1
        graph.remove_node(dup)
        return True

    def _merge_constants(self, graph: Graph) -> int:
        """Case 3."""
        outs = {id(v) for v in graph.outputs}
        seen: dict[tuple[Any, ...], Value] = {}
        merged = 0
        for name, v in list(graph.initializers.items()):
            arr = v.const
            if arr is None or arr.size > self.options.max_const_elements or id(v) in outs:
                continue
            # a tensor parsed from the text form without its data is known by its digest only
            key = (str(arr.dtype), arr.shape, v.const_digest or arr.tobytes())
            first = seen.get(key)
            if first is None:
                seen[key] = v
                continue
            v.replace_all_uses_with(first)
            graph.remove_initializer(name)
            merged += 1
        return merged
