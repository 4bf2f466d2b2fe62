"""The stable text form of a graph (see ``parser.py`` for the reader).

Example::

    graph tiny(%x: float32[batch,4]) {
      %w: float32[4,4] = const <sha:0123456789abcdef>
      %b: float32[4] = const [0.0, 1.0, 2.0, 3.0]
      %y: float32[batch,4] = MatMul(%x, %w) @matmul
      %z: float32[batch,4] = Add(%y, %b) @add
      return %z
    }

Small constants (at most ``INLINE_LIMIT`` elements) are printed in full,
larger ones by a content hash. Attributes are printed sorted by name. Names
that are not plain identifiers are quoted as JSON strings.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value, tensor_digest

INLINE_LIMIT = 16
_PLAIN = re.compile(r"^[A-Za-z0-9_.]+$")


def fmt_name(name: str) -> str:
    return name if _PLAIN.match(name) else json.dumps(name)


def fmt_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return repr(float(x))


def fmt_tensor_data(arr: np.ndarray, digest: str | None = None) -> str:
    if digest is not None or arr.size > INLINE_LIMIT:
        return f"<sha:{digest or tensor_digest(arr)}>"
    return "[" + ", ".join(fmt_scalar(x) for x in arr.reshape(-1).tolist()) + "]"


def fmt_attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        data = fmt_tensor_data(value, getattr(value, "digest", None))
        return f"tensor<{DType.from_numpy(value.dtype)}{_shape(value.shape)}>{data}"
    if isinstance(value, DType):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(fmt_attr(v) for v in value) + "]"
    if value is None:
        return "none"
    return fmt_scalar(value)


def _shape(shape: tuple) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def fmt_value(v: Value) -> str:
    return f"%{fmt_name(v.name)}: {v.type}"


def fmt_node(node: Node, *, provenance: bool = False) -> str:
    outs = ", ".join(fmt_value(v) for v in node.outputs)
    attrs = ""
    if node.attrs:
        attrs = "{" + ", ".join(f"{k}={fmt_attr(v)}" for k, v in node.attrs.items()) + "}"
    ins = ", ".join("_" if v is None else "%" + fmt_name(v.name) for v in node.inputs)
    line = f"{outs} = {node.op}{attrs}({ins}) @{fmt_name(node.name)}"
    if provenance and (node.provenance.pass_name or node.provenance.origins):
        line += f"  # {node.provenance}"
    return line


def print_graph(graph: Graph, *, provenance: bool = False) -> str:
    """Render ``graph`` in the text form; ``provenance`` appends it as comments."""
    lines = [f"graph {fmt_name(graph.name)}(" + ", ".join(fmt_value(v) for v in graph.inputs) + ") {"]
    for v in graph.initializers.values():
        assert v.const is not None
        lines.append(f"  {fmt_value(v)} = const {fmt_tensor_data(v.const, v.const_digest)}")
    for node in graph.nodes:
        lines.append("  " + fmt_node(node, provenance=provenance))
    lines.append("  return " + ", ".join("%" + fmt_name(v.name) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
