"""Old ONNX op versions rewritten to the latest-opset semantics the IR uses (case 5 of ``accelopt.frontends.onnx``).

``REWRITES`` maps a default-domain op type to ``fn(importer, node) -> node | None``;
a rewrite edits the decoded node (attributes that became inputs in later opsets
turn into initializers) or emits replacement nodes itself and returns None.
Comments cite the sub-cases 5a-5j.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.frontends.onnx_node import ONode, Unsupported
from accelopt.ir.graph import Provenance, Value

if TYPE_CHECKING:
    from accelopt.frontends.onnx_importer import Importer

# ================================================================= rewrites (case 5)
Rewrite = Callable[["Importer", ONode], "ONode | None"]
_REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)


def _attr_to_input(
    imp: Importer, node: ONode, attr: str, index: int, dtype: np.dtype, *, scalar: bool = False
) -> None:
    """Move attribute ``attr`` to input ``index`` as a new initializer (5a-5f)."""
    if attr not in node.attrs:
        return
    val = node.attrs.pop(attr)
    arr = np.asarray(val, dtype=dtype)
    if scalar:
        arr = arr.reshape(())
    while len(node.inputs) < index:
        node.inputs.append("")
    if len(node.inputs) > index and node.inputs[index] != "":
        raise imp.fail(f"has both attribute {attr!r} and input {index}", node)
    v = imp.const(f"{node.name}_{attr}", arr)
    if len(node.inputs) == index:
        node.inputs.append(v.name)
    else:
        node.inputs[index] = v.name


def _input_np_dtype(imp: Importer, node: ONode, i: int = 0) -> np.dtype:
    t = imp.input_type(node, i)
    return np.dtype(np.float32) if t is None else t.dtype.np


def _rw_axes_input(since: int) -> Rewrite:
    def rewrite(imp: Importer, node: ONode) -> ONode:  # 5a
        if imp.opset < since:
            _attr_to_input(imp, node, "axes", 1, np.dtype(np.int64))
        return node

    return rewrite


def _rw_split(imp: Importer, node: ONode) -> ONode:  # 5a
    if imp.opset < 13:
        _attr_to_input(imp, node, "split", 1, np.dtype(np.int64))
    return node


def _rw_slice(imp: Importer, node: ONode) -> ONode:  # 5b
    if imp.opset < 10:
        for i, key in enumerate(("starts", "ends", "axes"), start=1):
            _attr_to_input(imp, node, key, i, np.dtype(np.int64))
    return node


def _rw_softmax(imp: Importer, node: ONode) -> ONode | None:  # 5c
    if imp.opset >= 13:
        return node
    axis = int(node.attrs.pop("axis", 1))
    t = imp.input_type(node, 0)
    rank = None if t is None or t.shape is None else len(t.shape)
    if rank is not None and (axis % max(rank, 1) == rank - 1 or rank <= 1):
        node.attrs["axis"] = -1
        return node
    # coerce-to-2D semantics: flatten at ``axis``, normalize the last axis, restore the shape
    prov = Provenance(pass_name="onnx-import", rule=f"{node.op.lower()}-opset{imp.opset}", origins=(node.name,))
    x = node.inputs[0]

    def part(suffix: str, op: str, ins: list[str], attrs: dict[str, Any]) -> Value:
        out = imp.fresh(f"{node.name}_{suffix}")
        (v,) = imp.emit(ONode(f"{node.name}/{suffix}", op, "", ins, [out], attrs), provenance=prov)
        return v

    shape = part("shape", "Shape", [x], {})
    flat = part("flatten", "Flatten", [x], {"axis": axis})
    norm = part("2d", node.op, [flat.name], {"axis": -1})
    imp.emit(ONode(node.name, "Reshape", "", [norm.name, shape.name], node.outputs[:1]), provenance=prov)
    return None


def _rw_clip(imp: Importer, node: ONode) -> ONode:  # 5d
    if imp.opset < 11:
        dt = _input_np_dtype(imp, node)
        if "min" not in node.attrs and "max" in node.attrs:
            node.inputs.append("")
        _attr_to_input(imp, node, "min", 1, dt, scalar=True)
        _attr_to_input(imp, node, "max", 2, dt, scalar=True)
    return node


def _rw_pad(imp: Importer, node: ONode) -> ONode:  # 5d
    if imp.opset < 11:
        _attr_to_input(imp, node, "pads", 1, np.dtype(np.int64))
        _attr_to_input(imp, node, "value", 2, _input_np_dtype(imp, node), scalar=True)
    return node


def _rw_dropout(imp: Importer, node: ONode) -> ONode:  # 5e
    if imp.opset < 12:
        node.attrs.pop("is_test", None)
        _attr_to_input(imp, node, "ratio", 1, _input_np_dtype(imp, node), scalar=True)
    return node


def _rw_topk(imp: Importer, node: ONode) -> ONode:  # 5f
    if imp.opset < 10:
        k = node.attrs.pop("k", None)
        if k is not None:
            node.attrs["k"] = [int(k)]
            _attr_to_input(imp, node, "k", 1, np.dtype(np.int64))
    return node


def _rw_constant(imp: Importer, node: ONode) -> ONode:  # 5g
    forms: dict[str, Callable[[Any], np.ndarray]] = {
        "value_float": lambda v: np.array(v, dtype=np.float32),
        "value_floats": lambda v: np.array(v, dtype=np.float32).reshape(-1),
        "value_int": lambda v: np.array(v, dtype=np.int64),
        "value_ints": lambda v: np.array(v, dtype=np.int64).reshape(-1),
        "sparse_value": lambda v: np.asarray(v),
    }
    for key, make in forms.items():
        if key in node.attrs:
            node.attrs["value"] = make(node.attrs.pop(key))
    for key in ("value_string", "value_strings"):
        if key in node.attrs:
            raise imp.fail("string constants are not supported", node)
    if isinstance(node.attrs.get("value"), Unsupported):
        raise imp.fail(f"value holds {node.attrs['value'].what}, which is not supported", node)
    return node


def _rw_batchnorm(imp: Importer, node: ONode) -> ONode:  # 5j
    if node.attrs.pop("spatial", 1) != 1:
        raise imp.fail("spatial=0 (per-activation statistics, opset < 9) is not supported", node)
    return node


def _rw_resize(imp: Importer, node: ONode) -> ONode:  # 5i
    if imp.opset < 11:
        raise imp.fail(f"{node.op} before opset 11 has different semantics; upgrade the model's opset", node)
    return node


REWRITES: dict[str, Rewrite] = {
    "Squeeze": _rw_axes_input(13),
    "Unsqueeze": _rw_axes_input(13),
    "ReduceSum": _rw_axes_input(13),
    **{op: _rw_axes_input(18) for op in _REDUCE_OPS},
    "Split": _rw_split,
    "Slice": _rw_slice,
    "Softmax": _rw_softmax,
    "LogSoftmax": _rw_softmax,
    "Hardmax": _rw_softmax,
    "Clip": _rw_clip,
    "Pad": _rw_pad,
    "Dropout": _rw_dropout,
    "TopK": _rw_topk,
    "Constant": _rw_constant,
    "BatchNormalization": _rw_batchnorm,
    "Resize": _rw_resize,
    "Upsample": _rw_resize,
}
