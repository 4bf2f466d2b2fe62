"""What a rewrite changed: the region of a new graph that differs from an old one, and where they meet.

A pass that rewrites a subgraph exactly (cleanup, fusion, layout) changes a few
regions of the graph and leaves every other node alone. ``diff_graphs(old,
new)`` finds them:

1. a node of ``new`` *corresponds* to the node of ``old`` with the same name
   when op, attributes, input and output counts and output types are the same;
   its outputs compute what the old node's outputs computed, provided its
   inputs do;
2. values that compute the same: graph inputs with the same name and type,
   initializers holding the same array (or equal ones under the same name), and
   the outputs of corresponding nodes;
3. the *region* is the set of new nodes without a counterpart;
4. the *pairs* are the edges where the two graphs may disagree: an input of a
   corresponding node that is not the same value as the old node's input at
   that position (a region output, a folded constant, a value CSE merged), and
   each graph output that is not the same value. A corresponding node whose
   input changes type, or changes from one constant to a different one, is
   moved into the region (its outputs are compared instead).

If every pair agrees, the new graph computes what the old one did: each
corresponding node sees the same inputs as before (by induction in topological
order), so everything downstream agrees too. The check compares the pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.ir.graph import Graph, Node, Value, attr_key


@dataclass
class Rewrite:
    """What one pass changed: see the module docstring (cases 1-4)."""

    old: Graph
    new: Graph
    value_map: dict[int, Value]  # id(new value) -> the old value it computes the same as
    region: list[Node]  # new nodes without a counterpart, in topological order
    pairs: list[tuple[Value, Value]]  # (new value, old value) that must agree, in topological order
    problem: str = ""  # set when the rewrite cannot be checked locally

    @property
    def region_ids(self) -> set[int]:
        return {id(n) for n in self.region}


def _same_attrs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a is b:
        return True
    if a.keys() != b.keys():
        return False
    return all(attr_key(a[k]) == attr_key(b[k]) for k in a)


def _corresponds(h: Node, g: Node) -> bool:
    return (
        h.op == g.op
        and len(h.inputs) == len(g.inputs)
        and len(h.outputs) == len(g.outputs)
        and all(x.type == y.type for x, y in zip(h.outputs, g.outputs))
        and _same_attrs(h.attrs, g.attrs)
    )


def _same_const(a: Value, b: Value) -> bool:
    ca, cb = a.const, b.const
    if ca is None or cb is None:
        return False
    return ca is cb or (ca.dtype == cb.dtype and ca.shape == cb.shape and bool(np.array_equal(ca, cb)))


def _leaf_map(old: Graph, new: Graph) -> tuple[dict[int, Value], str]:
    """Case 2 for graph inputs and initializers; a problem when a graph input has no counterpart."""
    vmap: dict[int, Value] = {}
    old_inputs = {v.name: v for v in old.inputs}
    changed = []
    for v in new.inputs:
        u = old_inputs.get(v.name)
        if u is not None and u.type == v.type:
            vmap[id(v)] = u
        else:
            changed.append(v.name)
    by_array = {id(v.const): v for v in old.initializers.values()}
    for name, v in new.initializers.items():
        u = by_array.get(id(v.const))
        if u is None:
            w = old.initializers.get(name)
            if w is not None and _same_const(v, w):
                u = w
        if u is not None:
            vmap[id(v)] = u
    problem = f"graph inputs changed: {', '.join(changed)}" if changed else ""
    return vmap, problem


def diff_graphs(old: Graph, new: Graph) -> Rewrite:
    """The region ``new`` rewrote and the pairs that must agree (module docstring, cases 1-4)."""
    leaves, problem = _leaf_map(old, new)
    if len(new.outputs) != len(old.outputs):
        problem = problem or f"the graph has {len(new.outputs)} outputs, the previous one {len(old.outputs)}"
    old_nodes = {n.name: n for n in old.nodes}
    corr: dict[int, Node] = {}
    for h in new.nodes:
        g = old_nodes.get(h.name)
        if g is not None and _corresponds(h, g):
            corr[id(h)] = g
    while True:  # case 4: move nodes whose inputs cannot be compared into the region, until none is left
        vmap = dict(leaves)
        for h in new.nodes:
            g = corr.get(id(h))
            if g is not None:
                vmap.update((id(o), p) for o, p in zip(h.outputs, g.outputs))
        demote = []
        pairs: dict[tuple[int, int], tuple[Value, Value]] = {}
        for h in new.nodes:
            g = corr.get(id(h))
            if g is None:
                continue
            found = []
            for a, b in zip(h.inputs, g.inputs):
                if a is None or b is None:
                    if a is not b:
                        break
                    continue
                if vmap.get(id(a)) is b or _same_const(a, b):
                    continue
                if a.type != b.type or (a.const is not None and b.const is not None):
                    break
                found.append((a, b))
            else:
                pairs.update(((id(a), id(b)), (a, b)) for a, b in found)
                continue
            demote.append(id(h))
        if not demote:
            break
        for k in demote:
            del corr[k]
    for a, b in zip(new.outputs, old.outputs):
        if vmap.get(id(a)) is not b:
            pairs[(id(a), id(b))] = (a, b)
    order = {id(n): i for i, n in enumerate(new.nodes)}
    ordered = sorted(pairs.values(), key=lambda p: order.get(id(p[0].producer), -1))
    region = [h for h in new.nodes if id(h) not in corr]
    return Rewrite(old, new, vmap, region, ordered, problem)
