"""Passes planted by the tests; ``tests/conftest.py`` registers them, so users never see them.

``damage`` deliberately breaks accuracy so that tests can see the pass manager
roll a pass back, the report name the failing metric, and localization find
the first diverging node. ``break-graph`` deliberately breaks the graph so
that tests can see a pass error rolled back while the run goes on.

Cases:

1. ``damage{scale=S,seed=N,node=NAME}``: picks the first ``MatMul`` (or the one
   named ``node``) whose second input is an initializer, and replaces that
   weight by ``W + S * std(W) * noise`` (seeded standard normal noise; ``std(W)``
   is 1 when ``W`` is constant). The new weight is a new initializer named
   ``<W>_damaged``; the old one is removed if nothing else uses it. A ``node``
   that is not there is a ``PassOptionError`` (the run ends).
2. No such MatMul, or ``scale=0``: the graph is returned unchanged
   (``modified=False``) with a note saying why.
3. ``break-graph``: removes the producer of the first node's first input that
   is computed by a node, leaving that node reading a dangling value (a result
   the verifier rejects); ``break-graph{crash=true}`` raises instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelopt.errors import PassOptionError
from accelopt.ir.graph import Graph, Node
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass


@dataclass(frozen=True)
class DamageOptions:
    scale: float = 1.0
    seed: int = 0
    node: str = ""


@register_pass
class Damage(Pass):
    """TEST ONLY: perturb one MatMul weight to break accuracy (exercises rollback)."""

    name = "damage"
    family = "test"
    Options = DamageOptions

    def _target(self, graph: Graph) -> Node | None:
        for node in graph.nodes:
            if node.op != "MatMul" or len(node.inputs) < 2 or node.inputs[1] is None:
                continue
            if self.options.node and node.name != self.options.node:
                continue
            if node.inputs[1].name in graph.initializers:
                return node
        if self.options.node:
            raise PassOptionError(f"damage: no MatMul named {self.options.node!r} with a constant weight")
        return None

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.options.scale == 0.0:
            return PassResult(graph, False, notes=["scale is 0: nothing to do"])
        node = self._target(graph)  # case 1
        if node is None:  # case 2
            return PassResult(graph, False, notes=["no MatMul with a constant weight"])
        w = node.inputs[1]
        assert w is not None and w.const is not None
        arr = w.const.astype(np.float64)
        std = float(arr.std()) or 1.0
        noise = np.random.default_rng(self.options.seed).standard_normal(arr.shape)
        damaged = (arr + self.options.scale * std * noise).astype(w.const.dtype)
        new = graph.add_initializer(f"{w.name}_damaged", damaged, unique=True)
        node.set_input(1, new)
        if not w.uses and w not in graph.outputs:
            graph.remove_initializer(w.name)
        return PassResult(
            graph,
            True,
            stats={"damaged_node": node.name, "scale": self.options.scale},
            notes=[f"TEST PASS: perturbed the weight of {node.name} by {self.options.scale} x std"],
        )


@dataclass(frozen=True)
class BreakOptions:
    crash: bool = False


@register_pass
class BreakGraph(Pass):
    """TEST ONLY: leave a node reading a value nothing defines (exercises pass-error rollback)."""

    name = "break-graph"
    family = "test"
    Options = BreakOptions

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.options.crash:
            raise RuntimeError("break-graph was asked to crash")
        for node in graph.nodes:  # case 3
            src = node.inputs[0].producer if node.inputs and node.inputs[0] is not None else None
            if src is not None:
                graph.remove_node(src, force=True)
                return PassResult(graph, True, notes=[f"removed {src.name}, which {node.name} reads"])
        return PassResult(graph, False, notes=["no node reads a computed value"])
