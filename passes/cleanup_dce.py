"""``dce``: dead code elimination.

Cases:

1. A node none of whose outputs reaches a graph output is removed (also
   chains and multi-output nodes whose outputs are all unused).
2. An initializer that no node uses and that is not a graph output is removed.

Graph inputs are never removed, even when unused: they are the model's
interface.
"""

from __future__ import annotations

from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass


@register_pass
class DeadCodeElimination(Pass):
    """Remove nodes and initializers that do not contribute to any graph output."""

    name = "dce"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        nodes_before = len(graph.nodes)
        inits_before = len(graph.initializers)
        removed = graph.remove_unused()  # cases 1 and 2
        stats = {
            "nodes_removed": nodes_before - len(graph.nodes),
            "initializers_removed": inits_before - len(graph.initializers),
        }
        return PassResult(graph, removed > 0, stats=stats)
