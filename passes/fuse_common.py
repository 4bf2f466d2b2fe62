"""Helpers shared by the fusion passes: constants seen through Identity, probe evaluation, liveness.

The imperative matchers (attention, embeddings) recognise a candidate
structurally and then confirm it numerically: they evaluate the original
subgraph with the registry kernels on small seeded *probe* inputs and compare
with the fused op. ``Prober`` does that evaluation:

1. Graph inputs get concrete shapes from their symbols (``batch`` -> 2 in
   axis 0, ``sequence`` -> 6 in axis 1, any other symbol -> 3; other sizes
   by axis can be asked for), the same symbol always the same size, so shape
   subgraphs agree with the probes.
2. Integer inputs are zeros (valid token ids), float inputs seeded normals,
   bool inputs True; callers override any value (a probe attention mask, a
   cut point such as the attention block's input).
3. Only the backward cone of the requested values is computed.

``data_sources`` tells which graph inputs a value depends on through data
(``Shape``/``Size`` cut the dependence: they read shapes only).
``dead_after_replacing`` tells which nodes of a region would be dead once a
value's users are pointed elsewhere, so a matcher can refuse to fuse when an
intermediate result is used outside the block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from accelopt.errors import InterpreterError
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op
from accelopt.ir.types import TensorType

#: probe sizes by axis for symbolic / unknown dims (axis 0: batch, axis 1: sequence)
PROBE_SIZES = {0: 2, 1: 6}
OTHER_SIZE = 3
#: ops that only read their input's shape
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})


def looked_through(v: Value | None) -> Value | None:
    """``v`` with Identity producers skipped."""
    while v is not None and v.producer is not None and v.producer.op == "Identity":
        v = v.producer.inputs[0]
    return v


def const_of(graph: Graph, v: Value | None) -> np.ndarray | None:
    """Constant data behind ``v`` (an initializer or Constant, also through Identity nodes)."""
    return graph.const_value(looked_through(v))


def scalar_of(graph: Graph, v: Value | None) -> float | None:
    """The value of a one-element constant, else None."""
    arr = const_of(graph, v)
    if arr is None or arr.size != 1:
        return None
    return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])


def describe(v: Value | None) -> str:
    if v is None:
        return "an absent input"
    if v.producer is not None:
        return f"{v.producer.op} (node {v.producer.name})"
    if v.is_const:
        return f"constant %{v.name}"
    return f"graph input %{v.name}"


def data_sources(v: Value, stop: Iterable[Value] = ()) -> set[Value]:
    """Graph inputs that ``v`` depends on through data (not only through their shapes), not looking
    upstream of the ``stop`` values."""
    found: dict[int, Value] = {}
    seen: set[int] = {id(s) for s in stop}
    stack = [v]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if cur.is_input:
            found[id(cur)] = cur
            continue
        node = cur.producer
        if node is None or node.op in SHAPE_ONLY_OPS:
            continue
        stack.extend(i for i in node.inputs if i is not None)
    return set(found.values())


def cone(targets: Iterable[Value], stop: Iterable[Value] = ()) -> list[Node]:
    """Nodes in the backward cone of ``targets``, not crossing ``stop`` values (graph order not kept)."""
    stop_ids = {id(s) for s in stop}
    out: dict[int, Node] = {}
    stack = list(targets)
    while stack:
        v = stack.pop()
        if id(v) in stop_ids:
            continue
        node = v.producer
        if node is None or id(node) in out:
            continue
        out[id(node)] = node
        stack.extend(i for i in node.inputs if i is not None)
    return list(out.values())


class Prober:
    """Evaluates parts of a graph on concrete seeded probe inputs (see the module docstring)."""

    def __init__(self, graph: Graph, *, seed: int = 0, sizes: Mapping[int, int] | None = None) -> None:
        self.graph = graph
        self.seed = seed
        #: probe sizes by axis (``PROBE_SIZES`` unless given)
        self.sizes = dict(PROBE_SIZES if sizes is None else sizes)
        self.bindings: dict[str, int] = {}
        for v in graph.inputs:
            for axis, d in enumerate(v.shape or ()):
                if isinstance(d, str) and d not in self.bindings:
                    self.bindings[d] = self.sizes.get(axis, OTHER_SIZE)

    def shape(self, t: TensorType, fallback: Sequence[int] | None = None) -> tuple[int, ...]:
        """A concrete shape for ``t``: symbols bound, unknown dims from ``fallback`` or by axis."""
        if t.shape is None:
            if fallback is None:
                raise InterpreterError(f"cannot make a probe of unknown rank for {t}")
            return tuple(fallback)
        out = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                out.append(d)
            elif isinstance(d, str) and d in self.bindings:
                out.append(self.bindings[d])
            elif fallback is not None and axis < len(fallback):
                out.append(int(fallback[axis]))
            else:
                out.append(self.sizes.get(axis, OTHER_SIZE))
        return tuple(out)

    def default_input(self, v: Value) -> np.ndarray:
        shape = self.shape(v.type)
        dt = v.dtype
        if dt.is_float:
            rng = np.random.default_rng([self.seed, len(v.name)])
            return rng.standard_normal(shape).astype(dt.np)
        if dt.np == np.bool_:
            return np.ones(shape, dtype=np.bool_)
        return np.zeros(shape, dtype=dt.np)

    def run(self, targets: Sequence[Value], feeds: Mapping[Value, np.ndarray] | None = None) -> list[np.ndarray]:
        """Values of ``targets`` given ``feeds`` (unfed graph inputs get default probes)."""
        env: dict[int, np.ndarray] = {id(v): np.asarray(a) for v, a in (feeds or {}).items()}
        needed: set[int] = set()
        stack = list(targets)
        while stack:
            v = stack.pop()
            if id(v) in env or v.const is not None:
                continue
            node = v.producer
            if node is None:
                env[id(v)] = self.default_input(v)
                continue
            if id(node) in needed:
                continue
            needed.add(id(node))
            stack.extend(i for i in node.inputs if i is not None)
        for node in self.graph.nodes:
            if id(node) not in needed:
                continue
            args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in node.inputs]
            opdef = get_op(node.op)
            try:
                outs = opdef.kernel(args, opdef.full_attrs(node.attrs), len(node.outputs))
            except Exception as e:
                raise InterpreterError(f"probe evaluation of node {node.name} ({node.op}) failed: {e}") from e
            for v, o in zip(node.outputs, outs):
                env[id(v)] = np.asarray(o)
        return [v.const if v.const is not None else env[id(v)] for v in targets]


def dead_after_replacing(graph: Graph, old: Value | Sequence[Value], region: Sequence[Node]) -> set[int]:
    """Ids of the ``region`` nodes that are dead once every use of ``old`` (one value or several) points elsewhere."""
    replaced = {id(old)} if isinstance(old, Value) else {id(v) for v in old}
    outs = {id(v) for v in graph.outputs}
    in_region = {id(n) for n in region}
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    dead: set[int] = set()
    for node in sorted(region, key=lambda n: order[id(n)], reverse=True):
        alive = False
        for v in node.outputs:
            if id(v) in replaced:
                continue
            if id(v) in outs:
                alive = True
                break
            if any(id(c) not in dead or id(c) not in in_region for c in v.consumers):
                alive = True
                break
        if not alive:
            dead.add(id(node))
    return dead


def first_escape(graph: Graph, node: Node, dead: set[int]) -> str:
    """Why ``node`` stays alive: the first user that is not dead (for near-miss messages)."""
    outs = {id(v) for v in graph.outputs}
    for v in node.outputs:
        if id(v) in outs:
            return f"%{v.name} is a graph output"
        users = [c for c in v.consumers if id(c) not in dead]
        if users:
            return f"%{v.name} is also used by {users[0].op} (node {users[0].name}) outside the block"
    return f"node {node.name} stays alive"
