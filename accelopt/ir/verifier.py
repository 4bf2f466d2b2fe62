"""Graph invariants: names, topological order, use lists, attributes and types."""

from __future__ import annotations

from accelopt.errors import VerifyError
from accelopt.ir.graph import Graph
from accelopt.ir.registry import get_op
from accelopt.ir.types import shapes_compatible


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Raise ``VerifyError`` listing every broken invariant of ``graph``."""
    problems: list[str] = []
    at: dict[str, None] = {}  # nodes with a problem, in order
    defined: set[int] = set()
    names: set[str] = set()

    def define(v, where: str) -> None:
        if v.name in names:
            problems.append(f"{where}: value name %{v.name} is defined twice")
        names.add(v.name)
        defined.add(id(v))
        if v.graph is not graph:
            problems.append(f"{where}: %{v.name} does not belong to this graph")

    for v in graph.inputs:
        define(v, "graph input")
        if v.producer is not None:
            problems.append(f"graph input %{v.name} has a producer")
    for name, v in graph.initializers.items():
        define(v, "initializer")
        if v.name != name or v.const is None:
            problems.append(f"initializer {name!r} is malformed")
    expected_uses: dict[int, list] = {}
    node_names: set[str] = set()
    for node in graph.nodes:
        where = f"node {node.name} ({node.op})"
        before = len(problems)
        if node.name in node_names:
            problems.append(f"{where}: node name is used twice")
        node_names.add(node.name)
        if node.graph is not graph:
            problems.append(f"{where}: does not belong to this graph")
        try:
            opdef = get_op(node.op)
        except VerifyError as e:
            problems.append(f"{where}: {e}")
            at[node.name] = None
            continue
        lo, hi = opdef.inputs
        if len(node.inputs) < lo or (hi >= 0 and len(node.inputs) > hi):
            problems.append(f"{where}: {len(node.inputs)} inputs, expected {lo}..{hi if hi >= 0 else 'n'}")
        lo, hi = opdef.outputs
        if len(node.outputs) < lo or (hi >= 0 and len(node.outputs) > hi):
            problems.append(f"{where}: {len(node.outputs)} outputs, expected {lo}..{hi if hi >= 0 else 'n'}")
        for key in node.attrs:
            if key not in opdef.attrs:
                problems.append(f"{where}: unknown attribute {key!r}")
        for key, spec in opdef.attrs.items():
            if spec.required and key not in node.attrs:
                problems.append(f"{where}: missing required attribute {key!r}")
        for i, inp in enumerate(node.inputs):
            if inp is None:
                continue
            if id(inp) not in defined:
                problems.append(f"{where}: input {i} %{inp.name} is used before it is defined (or is dangling)")
            expected_uses.setdefault(id(inp), []).append((node, i))
        for i, v in enumerate(node.outputs):
            define(v, where)
            if v.producer is not node or v.index != i:
                problems.append(f"{where}: output %{v.name} has a wrong producer link")
        if check_types and not problems:
            try:
                inferred = opdef.infer_types(list(node.inputs), node.attrs, len(node.outputs), node_name=node.name)
            except Exception as e:  # inference errors are verify findings
                problems.append(f"{where}: type inference failed: {e}")
                at[node.name] = None
                continue
            for v, t in zip(node.outputs, inferred):
                if v.type.dtype != t.dtype:
                    problems.append(f"{where}: output %{v.name} has dtype {v.type.dtype}, inferred {t.dtype}")
                elif not shapes_compatible(v.type.shape, t.shape):
                    problems.append(f"{where}: output %{v.name} has shape {v.type}, inferred {t}")
        if len(problems) > before:
            at[node.name] = None
    for v in graph.values():
        actual = sorted((id(n), i) for n, i in v.uses)
        expect = sorted((id(n), i) for n, i in expected_uses.get(id(v), []))
        if actual != expect:
            problems.append(f"value %{v.name}: use list is out of date")
    for v in graph.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is not defined")
    if problems:
        head = f"graph {graph.name!r} failed verification ({len(problems)} problem(s)):\n  "
        raise VerifyError(head + "\n  ".join(problems[:50]), tuple(at))
