"""Write an accelopt graph back to ONNX so that onnxruntime can run it.

``write_onnx(graph)`` returns an ``onnx.ModelProto`` that passes
``onnx.checker.check_model(model, full_check=True)``; ``save_onnx(graph, path)``
writes it atomically (temporary file + ``os.replace``), with large weights as
external data beside the file when asked to, or when they exceed 2 GB.

Cases handled:

1. **Standard ops** (registry domain ``""``) are written one to one. The IR
   follows the latest-opset semantics, so the writer picks the lowest opset,
   at least the requested one (default 18), at which the ONNX schema of every
   node accepts it: the op exists and is not deprecated, the input and output
   counts fit, every non-default attribute is known, and every input/output
   element type is allowed (e.g. ReduceMean with ``axes`` as an input needs
   18, Gelu needs 20). A few semantic changes that signatures do not show are
   listed in ``_SEMANTIC_MIN_OPSET`` (e.g. Pad ``mode="wrap"`` needs 19, a
   ceil-mode pool 22, where ONNX drops a last window starting in the padding).
   Opsets below 13 are never written (Softmax and friends changed there).
2. **Attributes** are written by their registry kind: int, float, str, ints,
   floats, strs, tensor (``numpy_helper.from_array``, bfloat16 included), dtype
   (``DType.onnx``). Registry defaults are filled in, then attributes equal to
   the ONNX default are dropped (an attribute the chosen opset does not know
   is dropped too when it holds the default of the newest schema).
3. **Exporters**: any op, standard or not, may have an entry in ``EXPORTERS``
   (added with ``@register_exporter("Op")``) that turns one node into a list
   of ``NodeProto`` through an ``ExportContext``: contrib ops in the
   ``com.microsoft`` domain, or an expansion into standard ops. Modules named
   ``accelopt.targets.onnx_export*`` are imported on first use, so other files
   add exporters without touching this one. An exporter that needs a newer
   opset calls ``ctx.require_opset(v)``; the writer then starts over at ``v``.
4. **Unsupported ops**: a node that is neither standard-and-writable nor has
   an exporter is collected; all of them are reported at once in one
   ``TargetError`` naming each node and op.
5. **Values**: initializers become ``TensorProto`` initializers; inputs,
   outputs and intermediate values get value_info with their element type
   and shape: int dims as ``dim_value``, symbols as ``dim_param``, unknown
   dims as empty dims, unknown rank as a type without shape. The checker
   wants a shape on graph inputs and outputs: an input of unknown rank is a
   ``TargetError``; an output of unknown rank gets the shape ONNX shape
   inference finds (else ``TargetError``). Omitted optional inputs are
   written as ``""``.
6. **Outputs that ONNX cannot name directly**: an output that is an
   initializer, or that is listed twice, is produced by an ``Identity`` node
   (the initializer is renamed ``<name>__const``; a repeated output gets a
   fresh name).
7. **Versions**: ``ir_version`` defaults to the lowest one that the chosen
   default-domain opset needs; custom domains are imported at version 1.
8. **External data**: ``save_onnx`` moves initializers of at least
   ``external_data_threshold`` bytes into ``<file>.data`` (4 KiB-aligned)
   when ``external_data=True``, or automatically when the weights exceed
   2 GB. ``write_onnx(..., external_data_threshold=n)`` instead marks such
   tensors for ``onnx.save_model`` (location ``<graph>.onnx.data``); a marked
   model must be checked by path once saved. ``write_onnx_detached`` never
   copies large initializers into the model: each becomes an external-data
   reference and the graph's array is kept aside (``onnx_external``), so the
   model stays small, is checked with those tensors as typed inputs, runs in
   onnxruntime from the arrays, and is saved by streaming them to disk.
9. **Provenance**: each node's provenance (pass, rule, origins) is kept in its
   ``doc_string``.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, NodeProto, TensorProto, helper, numpy_helper

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import REQUIRED, OpDef, all_ops
from accelopt.ir.types import TensorType
from accelopt.targets.onnx_external import DetachedWeights

log = logging.getLogger(__name__)

#: the lowest default-domain opset ever written (pre-13 semantics differ from the IR's)
MIN_OPSET = 13
#: the newest default-domain opset the installed onnx knows
MAX_OPSET = onnx.defs.onnx_opset_version()
#: protobuf cannot serialize a message over 2 GiB
PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_ALIGN = 4096

ExporterFn = Callable[["ExportContext", Node], list[NodeProto]]

#: op name -> function turning one IR node into ONNX nodes (see ``register_exporter``)
EXPORTERS: dict[str, ExporterFn] = {}

#: exporter modules of other files, imported lazily: ``accelopt.targets.onnx_export*``
_PLUGIN_PREFIX = "onnx_export"
_plugins_loaded = False


def register_exporter(op: str, *, replace: bool = False) -> Callable[[ExporterFn], ExporterFn]:
    """Decorator registering ``fn(ctx, node) -> list[NodeProto]`` as the ONNX exporter of ``op``."""

    def deco(fn: ExporterFn) -> ExporterFn:
        if op in EXPORTERS and not replace and EXPORTERS[op] is not fn:
            raise ValueError(f"an ONNX exporter for op {op!r} is already registered")
        EXPORTERS[op] = fn
        return fn

    return deco


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import accelopt.targets as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith(_PLUGIN_PREFIX):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


# ----------------------------------------------------------------------- types
_TYPE_STR: dict[DType, str] = {
    DType.FLOAT64: "tensor(double)",
    DType.FLOAT32: "tensor(float)",
    DType.FLOAT16: "tensor(float16)",
    DType.BFLOAT16: "tensor(bfloat16)",
    DType.INT64: "tensor(int64)",
    DType.INT32: "tensor(int32)",
    DType.INT16: "tensor(int16)",
    DType.INT8: "tensor(int8)",
    DType.UINT8: "tensor(uint8)",
    DType.BOOL: "tensor(bool)",
}


def type_proto(t: TensorType) -> onnx.TypeProto:
    """The ONNX tensor type of ``t`` (symbols as dim_param, unknown dims empty, unknown rank unshaped)."""
    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = t.dtype.onnx
    if t.shape is not None:
        shape = tp.tensor_type.shape
        shape.SetInParent()  # rank 0 must still carry an (empty) shape
        for d in t.shape:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    return tp


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = name
    vi.type.CopyFrom(type_proto(t))
    return vi


def tensor_proto(array: np.ndarray, name: str) -> TensorProto:
    """A ``TensorProto`` with raw data (bfloat16 arrays from ml_dtypes included)."""
    arr = np.asarray(array)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array 1-d)
    DType.from_numpy(arr.dtype)  # raises TypeError for dtypes the IR does not know
    return numpy_helper.from_array(arr, name)


# ------------------------------------------------------------------ attributes
_ATTR_TYPES = {
    "int": AttributeProto.INT,
    "float": AttributeProto.FLOAT,
    "str": AttributeProto.STRING,
    "ints": AttributeProto.INTS,
    "floats": AttributeProto.FLOATS,
    "strs": AttributeProto.STRINGS,
    "tensor": AttributeProto.TENSOR,
    "dtype": AttributeProto.INT,
}


def _guess_kind(value: Any) -> str:
    if isinstance(value, DType):
        return "dtype"
    if isinstance(value, np.ndarray):
        return "tensor"
    if isinstance(value, (bool, int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        if all(isinstance(v, (bool, int, np.integer)) for v in value):
            return "ints"
        if all(isinstance(v, (int, float, np.number)) for v in value):
            return "floats"
        if all(isinstance(v, str) for v in value):
            return "strs"
    raise TypeError(f"cannot write attribute value {value!r} ({type(value).__name__}) to ONNX")


def make_attribute(name: str, value: Any, kind: str | None = None) -> AttributeProto:
    """An ``AttributeProto`` for an IR attribute value of registry kind ``kind`` (guessed if None)."""
    kind = kind or _guess_kind(value)
    if kind == "int":
        v: Any = int(value)
    elif kind == "float":
        v = float(value)
    elif kind == "str":
        v = str(value)
    elif kind == "ints":
        v = [int(x) for x in value]
    elif kind == "floats":
        v = [float(x) for x in value]
    elif kind == "strs":
        v = [str(x) for x in value]
    elif kind == "tensor":
        v = tensor_proto(np.asarray(value), "")
    elif kind == "dtype":
        v = value.onnx if isinstance(value, DType) else int(value)
    else:
        raise TypeError(f"unknown attribute kind {kind!r}")
    return helper.make_attribute(name, v, attr_type=_ATTR_TYPES[kind])


def _attr_equal(a: AttributeProto, b: AttributeProto) -> bool:
    """Whether two attributes hold the same value (floats compared as float32)."""
    if a.type != b.type:
        return False
    if a.type == AttributeProto.FLOAT:
        return bool(np.float32(a.f) == np.float32(b.f))
    if a.type == AttributeProto.FLOATS:
        return bool(np.array_equal(np.asarray(a.floats, dtype=np.float32), np.asarray(b.floats, dtype=np.float32)))
    x, y = helper.get_attribute_value(a), helper.get_attribute_value(b)
    if isinstance(x, TensorProto):
        return x.SerializeToString() == y.SerializeToString()
    return bool(x == y)


def _schema_default(schema: onnx.defs.OpSchema, name: str) -> AttributeProto | None:
    spec = schema.attributes.get(name)
    if spec is None or not spec.default_value.name:
        return None
    return spec.default_value


# ------------------------------------------------------------ schema checking
_SchemaKey = tuple[str, int]
_schema_cache: dict[_SchemaKey, onnx.defs.OpSchema | None] = {}


def _schema(op: str, version: int) -> onnx.defs.OpSchema | None:
    """The ONNX schema of ``op`` in force at ``version`` (None if the op does not exist there)."""
    key = (op, version)
    if key not in _schema_cache:
        try:
            s = onnx.defs.get_schema(op, version, "")
        except onnx.defs.SchemaError:
            s = None
        if s is not None and s.deprecated:
            s = None
        _schema_cache[key] = s
    return _schema_cache[key]


def _pad_min_opset(attrs: Mapping[str, Any]) -> int:
    return 19 if attrs.get("mode") == "wrap" else MIN_OPSET


def _scatter_min_opset(attrs: Mapping[str, Any]) -> int:
    return 18 if attrs.get("reduction") in ("min", "max") else MIN_OPSET


def _pool_min_opset(attrs: Mapping[str, Any]) -> int:
    # opset 22 drops a last ceil-mode window that starts in the end padding (as torch and the IR do)
    return 22 if attrs.get("ceil_mode") else MIN_OPSET


def _resize_min_opset(attrs: Mapping[str, Any]) -> int:
    return 19 if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric" else MIN_OPSET


#: semantic changes that a schema signature does not show: op -> attrs -> lowest opset
_SEMANTIC_MIN_OPSET: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "Pad": _pad_min_opset,
    "AveragePool": _pool_min_opset,
    "MaxPool": _pool_min_opset,
    "Resize": _resize_min_opset,
    "ScatterElements": _scatter_min_opset,
    "ScatterND": _scatter_min_opset,
}


def _formal_type_strs(schema: onnx.defs.OpSchema, params: Sequence[Any], i: int) -> set[str] | None:
    if not params:
        return None
    if i < len(params):
        p = params[i]
    elif params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        p = params[-1]
    else:
        return None
    for c in schema.type_constraints:
        if c.type_param_str == p.type_str:
            return set(c.allowed_type_strs)
    return {p.type_str}


@dataclass
class _StdNode:
    """A standard-domain node prepared for writing: its candidate attributes and signature."""

    node: Node
    attrs: dict[str, AttributeProto]
    in_types: tuple[DType | None, ...]
    out_types: tuple[DType, ...]
    semantic_min: int
    latest: onnx.defs.OpSchema | None = None

    def misfit(self, version: int) -> str | None:
        """Why the node cannot be written at ``version`` (None if it can)."""
        s = _schema(self.node.op, version)
        if s is None:
            return f"{self.node.op} does not exist in opset {version}"
        if version < self.semantic_min:
            return f"its attributes need opset {self.semantic_min}"
        n_in, n_out = len(self.in_types), len(self.out_types)
        if not s.min_input <= n_in <= s.max_input:
            return f"{n_in} inputs, opset {version} takes {s.min_input}..{s.max_input}"
        if not s.min_output <= n_out <= s.max_output:
            return f"{n_out} outputs, opset {version} takes {s.min_output}..{s.max_output}"
        for name, a in self.attrs.items():
            if name not in s.attributes and not self._is_latest_default(name, a):
                return f"attribute {name!r} is unknown in opset {version}"
        for i, dt in enumerate(self.in_types):
            allowed = _formal_type_strs(s, s.inputs, i)
            if dt is not None and allowed is not None and _TYPE_STR[dt] not in allowed:
                return f"input {i} of type {dt} is not allowed in opset {version}"
        for i, dt in enumerate(self.out_types):
            allowed = _formal_type_strs(s, s.outputs, i)
            if allowed is not None and _TYPE_STR[dt] not in allowed:
                return f"output {i} of type {dt} is not allowed in opset {version}"
        return None

    def _is_latest_default(self, name: str, a: AttributeProto) -> bool:
        if self.latest is None:
            return False
        d = _schema_default(self.latest, name)
        return d is not None and _attr_equal(a, d)

    def attributes(self, version: int) -> list[AttributeProto]:
        """The attributes to write at ``version``: those differing from the schema's defaults."""
        s = _schema(self.node.op, version)
        assert s is not None  # misfit(version) was None
        out = []
        for name, a in sorted(self.attrs.items()):
            if name not in s.attributes:
                continue  # equal to the newest default (checked by misfit)
            d = _schema_default(s, name)
            if d is not None and _attr_equal(a, d):
                continue
            out.append(a)
        return out


def _prepare_std(node: Node, opdef: OpDef) -> _StdNode:
    attrs: dict[str, AttributeProto] = {}
    for name, value in opdef.full_attrs(node.attrs).items():
        if value is None or value is REQUIRED:
            continue
        spec = opdef.attrs.get(name)
        attrs[name] = make_attribute(name, value, spec.kind if spec else None)
    rule = _SEMANTIC_MIN_OPSET.get(node.op)
    return _StdNode(
        node=node,
        attrs=attrs,
        in_types=tuple(None if v is None else v.dtype for v in node.inputs),
        out_types=tuple(v.dtype for v in node.outputs),
        semantic_min=rule(opdef.full_attrs(node.attrs)) if rule else MIN_OPSET,
        latest=_schema(node.op, MAX_OPSET),
    )


# -------------------------------------------------------------------- context
class _OpsetBump(Exception):
    def __init__(self, version: int, why: str) -> None:
        super().__init__(why)
        self.version = version
        self.why = why


@dataclass
class ExportContext:
    """What an exporter sees while one graph is written.

    ``opset`` is the default-domain opset being written. Exporters name IR
    values with ``name(v)``, make fresh names with ``fresh``, add constants
    with ``add_initializer``, build nodes with ``make_node`` (which records the
    node's domain in the model's opset imports) and may declare the type of a
    value they create with ``set_type`` (written as value_info).
    """

    graph: Graph
    opset: int
    initializers: list[TensorProto] = field(default_factory=list)
    value_infos: dict[str, TensorType] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    weights: DetachedWeights | None = None
    _used: set[str] = field(default_factory=set)
    _counter: int = 0

    def tensor(self, array: np.ndarray, name: str) -> TensorProto:
        """An initializer's ``TensorProto``: a placeholder into the detached weights when large (case 8)."""
        if self.weights is not None:
            placeholder = self.weights.placeholder(array, name)
            if placeholder is not None:
                return placeholder
        return tensor_proto(np.asarray(array), name)

    def name(self, v: Value | None) -> str:
        """The ONNX name of an IR value ("" for an omitted optional input)."""
        if v is None:
            return ""
        return self.renames.get(v.name, v.name)

    def fresh(self, hint: str) -> str:
        """A value or node name used nowhere else in the model."""
        cand = hint
        while cand in self._used:
            self._counter += 1
            cand = f"{hint}_{self._counter}"
        self._used.add(cand)
        return cand

    def require_opset(self, version: int, why: str = "") -> None:
        """Ask for a default-domain opset of at least ``version`` (the writer restarts if needed)."""
        if self.opset < version:
            raise _OpsetBump(version, why)

    def use_domain(self, domain: str, version: int = 1) -> None:
        """Import ``domain`` at ``version`` (at least) in the model."""
        if domain in ("", "ai.onnx"):
            self.require_opset(version)
            return
        self.domains[domain] = max(version, self.domains.get(domain, 0))

    def add_initializer(self, array: np.ndarray, hint: str = "const") -> str:
        """Add a constant tensor to the model; returns its (fresh) name."""
        name = self.fresh(hint)
        self.initializers.append(self.tensor(np.asarray(array), name))
        return name

    def set_type(self, name: str, t: TensorType) -> None:
        self.value_infos[name] = t

    def make_node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        *,
        domain: str = "",
        name: str | None = None,
        doc_string: str | None = None,
        **attrs: Any,
    ) -> NodeProto:
        """A ``NodeProto``; attribute kinds are guessed from the Python values (None values skipped)."""
        if domain not in ("", "ai.onnx"):
            self.use_domain(domain, self.domains.get(domain, 1))
        node = onnx.NodeProto()
        node.op_type = op_type
        node.domain = domain
        node.name = self.fresh(name or op_type.lower())
        node.input.extend(inputs)
        node.output.extend(outputs)
        for key, value in sorted(attrs.items()):
            if value is None:
                continue
            node.attribute.append(value if isinstance(value, AttributeProto) else make_attribute(key, value))
        if doc_string:
            node.doc_string = doc_string
        return node


# --------------------------------------------------------------------- writer
def _provenance_doc(node: Node) -> str | None:
    text = str(node.provenance)
    return text or None


def _export_standard(ctx: ExportContext, std: _StdNode) -> NodeProto:
    node = std.node
    proto = onnx.NodeProto()
    proto.op_type = node.op
    proto.name = node.name
    proto.input.extend(ctx.name(v) for v in node.inputs)
    while proto.input and proto.input[-1] == "":
        del proto.input[-1]  # trailing omitted optional inputs are simply left out
    proto.output.extend(ctx.name(v) for v in node.outputs)
    proto.attribute.extend(std.attributes(ctx.opset))
    doc = _provenance_doc(node)
    if doc:
        proto.doc_string = doc
    return proto


def _plan(graph: Graph, floor: int) -> tuple[int, dict[int, _StdNode]]:
    """Classify nodes and pick the default-domain opset (case 1); collect problems (case 4)."""
    ops = all_ops()
    std: dict[int, _StdNode] = {}
    problems: list[str] = []
    for node in graph.nodes:
        where = f"node {node.name} ({node.op})"
        opdef = ops.get(node.op)
        if node.op in EXPORTERS:
            continue
        if opdef is None:
            problems.append(f"{where}: op is not in the registry and has no ONNX exporter")
            continue
        if opdef.domain != "":
            problems.append(f"{where}: {opdef.domain}-domain op has no ONNX exporter")
            continue
        try:
            prepared = _prepare_std(node, opdef)
        except TypeError as e:
            problems.append(f"{where}: {e}")
            continue
        if prepared.latest is None:
            problems.append(f"{where}: no ONNX op of that name in opsets up to {MAX_OPSET} and no exporter")
            continue
        std[id(node)] = prepared
    if problems:
        raise TargetError(
            f"cannot write graph {graph.name!r} to ONNX: {len(problems)} node(s) are not supported:\n  "
            + "\n  ".join(problems)
        )
    # the lowest opset >= floor at which every standard node fits
    opset = floor
    for prepared in std.values():
        v = opset
        while v <= MAX_OPSET and prepared.misfit(v) is not None:
            v += 1
        if v > MAX_OPSET:
            why = prepared.misfit(opset)
            problems.append(
                f"node {prepared.node.name} ({prepared.node.op}): fits no opset {opset}..{MAX_OPSET}: {why}"
            )
        else:
            opset = v
    while not problems and opset <= MAX_OPSET:
        bad = [p for p in std.values() if p.misfit(opset) is not None]
        if not bad:
            break
        if opset == MAX_OPSET:
            problems.extend(f"node {p.node.name} ({p.node.op}): {p.misfit(opset)}" for p in bad)
        opset += 1
    if problems:
        raise TargetError(
            f"cannot write graph {graph.name!r} to ONNX: no opset fits {len(problems)} node(s):\n  "
            + "\n  ".join(problems)
        )
    return opset, std


def _build(
    graph: Graph,
    opset: int,
    std: dict[int, _StdNode],
    ir_version: int | None,
    value_infos: bool,
    weights: DetachedWeights | None = None,
) -> onnx.ModelProto:
    ctx = ExportContext(graph=graph, opset=opset, weights=weights)
    ctx._used.update(v.name for v in graph.values())
    ctx._used.update(n.name for n in graph.nodes)
    nodes: list[NodeProto] = []

    # case 6: outputs that are initializers, or repeated, go through Identity
    out_names: list[str] = []
    tail: list[NodeProto] = []
    seen: set[str] = set()
    for v in graph.outputs:
        if v.is_const and v.name not in ctx.renames:
            ctx.renames[v.name] = ctx.fresh(f"{v.name}__const")
            tail.append(ctx.make_node("Identity", [ctx.renames[v.name]], [v.name], name=f"{v.name}__output"))
            out_names.append(v.name)
        elif v.name in seen:
            alias = ctx.fresh(v.name)
            tail.append(ctx.make_node("Identity", [ctx.name(v)], [alias], name=f"{alias}__output"))
            out_names.append(alias)
        else:
            out_names.append(v.name)
        seen.add(v.name)

    initializers = [ctx.tensor(v.const, ctx.name(v)) for v in graph.initializers.values()]  # type: ignore[arg-type]

    for node in graph.nodes:
        prepared = std.get(id(node))
        if prepared is not None:
            nodes.append(_export_standard(ctx, prepared))
            continue
        made = EXPORTERS[node.op](ctx, node)
        missing = {ctx.name(v) for v in node.outputs} - {o for p in made for o in p.output}
        if missing:
            raise TargetError(
                f"ONNX exporter of node {node.name} ({node.op}) did not produce output(s) {', '.join(sorted(missing))}"
            )
        doc = _provenance_doc(node)
        for p in made:
            if doc and not p.doc_string:
                p.doc_string = doc
        nodes.extend(made)
    nodes.extend(tail)

    unranked = [v.name for v in graph.inputs if v.shape is None]
    if unranked:
        raise TargetError(
            f"graph {graph.name!r}: ONNX needs a rank for every graph input; unknown for {', '.join(unranked)}"
        )
    inputs = [value_info(v.name, v.type) for v in graph.inputs]
    outputs = [value_info(name, v.type) for name, v in zip(out_names, graph.outputs)]
    infos: list[onnx.ValueInfoProto] = []
    if value_infos:
        io_names = {v.name for v in graph.inputs} | set(out_names)
        for n in graph.nodes:
            for v in n.outputs:
                if v.name not in io_names:
                    infos.append(value_info(ctx.name(v), v.type))
        infos.extend(value_info(k, t) for k, t in ctx.value_infos.items() if k not in io_names)

    g = helper.make_graph(
        nodes,
        graph.name,
        inputs,
        outputs,
        initializer=initializers + ctx.initializers,
        value_info=infos,
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in sorted(ctx.domains.items())]
    model = helper.make_model(
        g,
        opset_imports=imports,
        producer_name="accelopt",
        producer_version=_version(),
        ir_version=ir_version or helper.find_min_ir_version_for([imports[0]]),
    )
    if any(v.shape is None for v in graph.outputs):
        _infer_output_shapes(model, weights)
    return model


def _infer_output_shapes(model: onnx.ModelProto, weights: DetachedWeights | None = None) -> None:
    """Give graph outputs of unknown rank the shape ONNX infers (the checker requires one, case 5)."""
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    try:
        inferred = onnx.shape_inference.infer_shapes(weights.checkable(model) if weights else model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        raise TargetError(f"graph {model.graph.name!r}: cannot infer the rank of output(s): {e}") from e
    found = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in missing:
        vi = found.get(out.name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            raise TargetError(
                f"graph {model.graph.name!r}: output {out.name!r} has unknown rank and ONNX cannot infer it"
            )
        out.type.tensor_type.shape.CopyFrom(vi.type.tensor_type.shape)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("accelopt")
    except Exception:  # not installed as a distribution
        return "0"


def write_onnx(
    graph: Graph,
    *,
    opset: int = 18,
    ir_version: int | None = None,
    external_data_threshold: int | None = None,
    value_infos: bool = True,
    check: bool = True,
) -> onnx.ModelProto:
    """Write ``graph`` as an ONNX model (see the module docstring for the cases handled).

    ``opset`` is the lowest default-domain opset to write; it is raised to what
    the graph needs. ``external_data_threshold`` marks initializers of at least
    that many bytes for external storage by ``onnx.save_model`` (case 8).
    ``value_infos`` writes the types of intermediate values. ``check`` runs
    ``onnx.checker.check_model(full_check=True)`` (skipped when the model is
    over 2 GB or marked for external data) and turns a failure into a
    ``TargetError``.
    """
    model, _ = _write(graph, opset, ir_version, value_infos, check and external_data_threshold is None, None)
    if external_data_threshold is not None:
        from onnx.external_data_helper import convert_model_to_external_data

        convert_model_to_external_data(
            model,
            all_tensors_to_one_file=True,
            location=f"{graph.name}.onnx.data",
            size_threshold=external_data_threshold,
        )
    return model


def write_onnx_detached(
    graph: Graph,
    *,
    threshold: int = 1024,
    location: str = "model.onnx.data",
    opset: int = 18,
    ir_version: int | None = None,
    value_infos: bool = True,
    check: bool = True,
) -> tuple[onnx.ModelProto, DetachedWeights]:
    """Write ``graph`` with its initializers of at least ``threshold`` bytes detached (case 8): the model
    refers to them as external data in ``location``; the returned ``DetachedWeights`` holds the graph's
    arrays (not copies). The checker runs on the model with those initializers as typed inputs."""
    model, weights = _write(graph, opset, ir_version, value_infos, check, DetachedWeights(threshold, location))
    assert weights is not None
    return model, weights


def _write(
    graph: Graph, opset: int, ir_version: int | None, value_infos: bool, check: bool, weights: DetachedWeights | None
) -> tuple[onnx.ModelProto, DetachedWeights | None]:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise TargetError(f"opset {opset} is out of range: accelopt writes opsets {MIN_OPSET}..{MAX_OPSET}")
    _load_plugins()
    chosen, std = _plan(graph, opset)
    while True:
        if weights is not None:
            weights = DetachedWeights(weights.threshold, weights.location)
        try:
            model = _build(graph, chosen, std, ir_version, value_infos, weights)
            break
        except _OpsetBump as bump:
            if bump.version > MAX_OPSET:
                raise TargetError(
                    f"graph {graph.name!r}: an exporter needs opset {bump.version} ({bump.why}), "
                    f"the newest known is {MAX_OPSET}"
                ) from None
            chosen, std = _plan(graph, max(bump.version, chosen))
    if chosen != opset:
        log.info("graph %r written at opset %d (requested %d)", graph.name, chosen, opset)
    checked = weights.checkable(model) if weights is not None else model
    if check and checked.ByteSize() <= PROTOBUF_LIMIT:
        try:
            onnx.checker.check_model(checked, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise TargetError(f"ONNX written for graph {graph.name!r} fails the checker: {e}") from e
    return model, weights


def save_onnx(
    graph: Graph,
    path: str | os.PathLike[str],
    *,
    opset: int = 18,
    ir_version: int | None = None,
    external_data: bool | None = None,
    external_data_threshold: int = 1024,
    value_infos: bool = True,
) -> onnx.ModelProto:
    """Write ``graph`` to ``path`` atomically; returns the model as saved (case 8).

    ``external_data``: True moves initializers of at least
    ``external_data_threshold`` bytes to ``<path>.data``; None (default) does
    so only when the initializers exceed 2 GB; False never (and fails over 2 GB).
    """
    path = os.fspath(path)
    total = sum(int(v.const.nbytes) for v in graph.initializers.values() if v.const is not None)
    if external_data is None:
        external_data = total > PROTOBUF_LIMIT - (64 << 20)
    # checked in memory here (write_onnx skips the check for a model over 2 GB)
    model = write_onnx(graph, opset=opset, ir_version=ir_version, value_infos=value_infos)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    data_name = os.path.basename(path) + ".data"
    data_tmp: str | None = None
    model_tmp: str | None = None
    try:
        if external_data:
            data_tmp = _externalize(model, directory, data_name, external_data_threshold)
        if model.ByteSize() > PROTOBUF_LIMIT:
            raise TargetError(
                f"graph {graph.name!r} is over 2 GB ({total} bytes of weights): save it with external_data=True"
            )
        fd, model_tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        if data_tmp is not None:
            os.replace(data_tmp, os.path.join(directory, data_name))
            data_tmp = None
        os.replace(model_tmp, path)
        model_tmp = None
    finally:
        for p in (data_tmp, model_tmp):
            if p is not None and os.path.exists(p):
                os.unlink(p)
    log.info(
        "wrote %s (%d nodes, %d bytes of weights%s)",
        path,
        len(model.graph.node),
        total,
        ", external data" if external_data else "",
    )
    return model


def _externalize(model: onnx.ModelProto, directory: str, data_name: str, threshold: int) -> str:
    """Move large initializer data into a temporary data file; returns its path."""
    fd, data_tmp = tempfile.mkstemp(dir=directory, prefix=f".{data_name}.", suffix=".tmp")
    offset = 0
    with os.fdopen(fd, "wb") as f:
        for t in model.graph.initializer:
            if not t.HasField("raw_data") or len(t.raw_data) < threshold:
                continue
            pad = (-offset) % _EXTERNAL_ALIGN
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            length = len(t.raw_data)
            f.write(t.raw_data)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            del t.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key = key
                entry.value = value
            offset += length
        f.flush()
        os.fsync(f.fileno())
    return data_tmp


# ------------------------------------------------------------------ exporters
def _float_tensor(value: float, dtype: DType) -> np.ndarray:
    return np.array(value, dtype=dtype.np)


@register_exporter("ScaledDotProductAttention")
def export_sdpa(ctx: ExportContext, node: Node) -> list[NodeProto]:
    """``ScaledDotProductAttention`` as standard ops (the cases of ``accelopt.ir.ops.sdpa``).

    ``Transpose(k) -> MatMul(q, .) -> Mul(scale)``, then ``Where`` for a bool
    mask / ``Add`` for a float mask, ``Trilu`` lower triangle for ``is_causal``,
    ``Softmax(-1)`` with fully masked rows (NaN) set to 0, ``MatMul(., v)``.
    float16/bfloat16 inputs are computed in float32 and cast back, as the
    reference kernel does.
    """
    q, k, v = node.inputs[0], node.inputs[1], node.inputs[2]
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    assert q is not None and k is not None and v is not None
    out = ctx.name(node.output)
    base = node.name
    if k.shape is None:
        raise TargetError(f"node {node.name} ({node.op}): key rank is unknown, cannot transpose it for ONNX")
    dt = q.dtype
    compute = DType.FLOAT64 if dt == DType.FLOAT64 else DType.FLOAT32
    made: list[NodeProto] = []

    def emit(op: str, inputs: Sequence[str], hint: str, output: str | None = None, **attrs: Any) -> str:
        name = output or ctx.fresh(f"{base}_{hint}")
        made.append(ctx.make_node(op, inputs, [name], name=f"{base}/{hint}", **attrs))
        return name

    qn, kn, vn = ctx.name(q), ctx.name(k), ctx.name(v)
    if dt != compute:
        qn = emit("Cast", [qn], "q_cast", to=compute)
        kn = emit("Cast", [kn], "k_cast", to=compute)
        vn = emit("Cast", [vn], "v_cast", to=compute)
    rank = len(k.shape)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    kt = emit("Transpose", [kn], "kT", perm=perm)
    scores = emit("MatMul", [qn, kt], "scores")
    scale = float(node.attrs.get("scale", 0.0))
    e = q.shape[-1] if q.shape is not None else None
    if scale:
        scale_name = ctx.add_initializer(_float_tensor(scale, compute), f"{base}_scale")
    elif isinstance(e, int):
        scale_name = ctx.add_initializer(_float_tensor(1.0 / float(np.sqrt(e)), compute), f"{base}_scale")
    else:  # head size known only at run time: 1 / sqrt(shape(q)[-1])
        e_dim = emit("Shape", [qn], "head_size", start=-1)
        e_f = emit("Cast", [e_dim], "head_size_f", to=compute)
        scale_name = emit("Reciprocal", [emit("Sqrt", [e_f], "sqrt_head_size")], "scale")
    scores = emit("Mul", [scores, scale_name], "scaled")
    masked = False
    if mask is not None:
        mn = ctx.name(mask)
        if mask.dtype == DType.BOOL:  # case 2
            neg_inf = ctx.add_initializer(_float_tensor(-np.inf, compute), f"{base}_neg_inf")
            scores = emit("Where", [mn, scores, neg_inf], "masked")
        else:  # case 3
            if mask.dtype != compute:
                mn = emit("Cast", [mn], "mask_cast", to=compute)
            scores = emit("Add", [scores, mn], "masked")
        masked = True
    if int(node.attrs.get("is_causal", 0)):  # case 4
        length = q.shape[-2] if q.shape is not None else None
        keys = k.shape[-2]
        if isinstance(length, int) and isinstance(keys, int):
            tri = ctx.add_initializer(np.tril(np.ones((length, keys), dtype=np.bool_)), f"{base}_causal")
        else:
            lk = emit("Shape", [scores], "score_dims", start=-2)
            ones = emit("ConstantOfShape", [lk], "ones", value=np.array([True]))
            tri = emit("Trilu", [ones], "causal", upper=0)
        neg_inf = ctx.add_initializer(_float_tensor(-np.inf, compute), f"{base}_neg_inf")
        scores = emit("Where", [tri, scores, neg_inf], "causal_masked")
        masked = True
    probs = emit("Softmax", [scores], "probs", axis=-1)
    if masked:  # case 5: a row with every key masked is 0, not NaN
        zero = ctx.add_initializer(_float_tensor(0.0, compute), f"{base}_zero")
        probs = emit("Where", [emit("IsNaN", [probs], "nan_rows"), zero, probs], "safe_probs")
    if dt != compute:
        res = emit("MatMul", [probs, vn], "context")
        emit("Cast", [res], "out_cast", output=out, to=dt)
    else:
        emit("MatMul", [probs, vn], "context", output=out)
    return made


class NodeEmitter:
    """Collects the ONNX nodes one IR node becomes (for exporters of accelopt-domain ops).

    ``emit(op, inputs, hint, outputs=None|n|names, domain=, **attrs)`` adds a node with fresh output
    names derived from the IR node's name and returns the first output; trailing empty inputs are dropped.
    """

    def __init__(self, ctx: ExportContext, node: Node) -> None:
        self.ctx = ctx
        self.node = node
        self.made: list[NodeProto] = []

    def __call__(
        self,
        op: str,
        inputs: Sequence[str],
        hint: str,
        *,
        outputs: Sequence[str] | int | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        if outputs is None or isinstance(outputs, int):
            count = 1 if outputs is None else outputs
            outs = [self.ctx.fresh(f"{self.node.name}_{hint}" + (f"_{i}" if count > 1 else "")) for i in range(count)]
        else:
            outs = list(outputs)
        ins = list(inputs)
        while ins and ins[-1] == "":
            ins.pop()
        self.made.append(self.ctx.make_node(op, ins, outs, domain=domain, name=f"{self.node.name}/{hint}", **attrs))
        return outs[0]

    def outs(self) -> list[str]:
        return list(self.made[-1].output)

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        return self.ctx.add_initializer(np.asarray(value, dtype=dtype), f"{self.node.name}_{hint}")
