"""Graph analysis through networkx, and DOT/SVG drawings."""

from __future__ import annotations

import html
import shutil
import subprocess
from typing import Any

import networkx as nx

from accelopt.ir.graph import Graph


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """Nodes are node names (plus ``input:``/``output:`` markers); edges carry the value name."""
    g = nx.MultiDiGraph(name=graph.name)
    for v in graph.inputs:
        g.add_node(f"input:{v.name}", kind="input", type=str(v.type))
    for n in graph.nodes:
        g.add_node(n.name, kind="op", op=n.op)
    for n in graph.nodes:
        for inp in n.inputs:
            if inp is None:
                continue
            if inp.producer is not None:
                g.add_edge(inp.producer.name, n.name, value=inp.name)
            elif inp.is_input:
                g.add_edge(f"input:{inp.name}", n.name, value=inp.name)
    for v in graph.outputs:
        g.add_node(f"output:{v.name}", kind="output", type=str(v.type))
        src = v.producer.name if v.producer is not None else f"input:{v.name}"
        if src in g:
            g.add_edge(src, f"output:{v.name}", value=v.name)
    return g


def has_cycle(graph: Graph) -> bool:
    return not nx.is_directed_acyclic_graph(to_networkx(graph))


def to_dot(graph: Graph, *, max_nodes: int = 2000) -> str:
    """A Graphviz DOT drawing: ops as boxes, edges labelled with tensor types."""
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB; node [shape=box, fontname=Helvetica, fontsize=10];"]
    for v in graph.inputs:
        lines.append(f'  "in:{v.name}" [shape=ellipse, label="{_esc(v.name)}\\n{v.type}"];')
    for n in graph.nodes[:max_nodes]:
        lines.append(f'  "{_esc(n.name)}" [label="{_esc(n.op)}"];')
    for n in graph.nodes[:max_nodes]:
        for inp in n.inputs:
            if inp is None or inp.is_const:
                continue
            src = f"in:{inp.name}" if inp.producer is None else inp.producer.name
            lines.append(f'  "{_esc(src)}" -> "{_esc(n.name)}" [label="{inp.type}", fontsize=8];')
    for v in graph.outputs:
        lines.append(f'  "out:{v.name}" [shape=ellipse, label="{_esc(v.name)}"];')
        src = f"in:{v.name}" if v.producer is None else v.producer.name
        lines.append(f'  "{_esc(src)}" -> "out:{v.name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(graph: Graph) -> str | None:
    """Render through the ``dot`` program when it is installed; else ``None``."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    res = subprocess.run([exe, "-Tsvg"], input=to_dot(graph).encode(), capture_output=True, check=False)
    return res.stdout.decode() if res.returncode == 0 else None


def _esc(s: Any) -> str:
    return html.escape(str(s)).replace('"', '\\"')
