"""Checks of an ONNX graph's interface before its nodes are imported (``Importer.run``, case 6).

A file can parse and pass ``onnx.checker`` and still describe nothing
accelopt can run. Each case is a ``FrontendError`` naming the file and the
input or output:

1. no graph outputs (nothing to compute, and onnxruntime refuses to run it);
2. a graph input whose element type is not an ONNX type (``elem_type`` 99)
   or not a tensor;
3. a name, op type or domain that is not valid UTF-8 (a flipped bit in a
   string field: protobuf hands such a field over as bytes): the file is
   corrupt.

(Empty inputs, a dimension of 0, are valid ONNX and import; ``optimize``
refuses them, see ``accelopt.model_checks``.)

Inputs that are also initializers (overridable defaults) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
from onnx import TensorProto

from accelopt.errors import FrontendError

Fail = Callable[[str], FrontendError]


def type_name(code: int) -> str:
    """The ONNX element type's name, or ``"99 (not an ONNX element type)"``."""
    try:
        return str(TensorProto.DataType.Name(code))
    except ValueError:
        return f"{code} (not an ONNX element type)"


def _check_text(graph: onnx.GraphProto, fail: Fail) -> None:
    """Case 3."""

    def bad(what: str, values: Iterable[object]) -> None:
        for v in values:
            if not isinstance(v, str):
                raise fail(f"{what} holds {v!r:.60} where text is expected: the file is corrupt")

    for i, n in enumerate(graph.node):
        bad(f"node #{i}", (n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)))
    for kind, items in (("graph input", graph.input), ("graph output", graph.output), ("value info", graph.value_info)):
        bad(kind, (vi.name for vi in items))
        bad(kind, (d.dim_param for vi in items if vi.type.tensor_type.HasField("shape") for d in vi.type.tensor_type.shape.dim))
    bad("an initializer", (t.name for t in graph.initializer))


def check_interface(model: onnx.ModelProto, fail: Fail) -> None:
    """Cases 1-3."""
    graph = model.graph
    _check_text(graph, fail)  # case 3
    for what, v in [("the producer name", model.producer_name), ("the producer version", model.producer_version)] + [
        ("an opset domain", o.domain) for o in model.opset_import
    ]:
        if not isinstance(v, str):
            raise fail(f"{what} holds {v!r:.60} where text is expected: the file is corrupt")
    if not graph.output:  # case 1
        raise fail("the graph has no outputs: there is nothing to compute")
    inits = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):  # case 2
            raise fail(f"graph input {vi.name!r} is not a tensor")
        tt = vi.type.tensor_type
        if tt.elem_type == TensorProto.UNDEFINED or tt.elem_type not in TensorProto.DataType.values():
            raise fail(f"graph input {vi.name!r} has element type {type_name(tt.elem_type)}")
