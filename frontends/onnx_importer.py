"""ONNX ``ModelProto`` -> accelopt ``Graph`` (cases 2-10 of ``accelopt.frontends.onnx``).

``Importer(model, source, payloads).run()`` inlines functions, lists every
unsupported op at once, runs the checker on the weight-less skeleton, reads
opsets ``MIN_OPSET``..``MAX_OPSET`` (old op versions go through
``onnx_rewrites.REWRITES`` first), merges the registry's type inference with
ONNX's and the file's, and verifies the result.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from onnx import AttributeProto, TensorProto, numpy_helper

from accelopt.errors import FrontendError, VerifyError
from accelopt.frontends.onnx_interface import check_interface, type_name
from accelopt.frontends.onnx_node import ONode, Unsupported, onnx_domain, qualified, sparse_to_array
from accelopt.frontends.onnx_rewrites import REWRITES
from accelopt.frontends.onnx_weights import PROTO_LIMIT, Payload, skeleton
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import ORIGINAL, Graph, Provenance, Value, freeze_attrs
from accelopt.ir.registry import REQUIRED, OpDef, all_ops
from accelopt.ir.types import Dim, TensorType

log = logging.getLogger(__name__)

#: oldest / newest default-domain opset read (case 5)
MIN_OPSET = 7
MAX_OPSET = 23
_IGNORABLE_ATTRS: dict[tuple[str, str], str] = {
    ("Cast", "saturate"): "only affects float8 targets",
    ("CastLike", "saturate"): "only affects float8 targets",
    ("Dropout", "seed"): "inference only",
    ("Dropout", "is_test"): "inference only (opset < 7 form)",
}
_IMPORT = Provenance(pass_name="onnx-import")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class Importer:
    def __init__(self, model: onnx.ModelProto, source: str, payloads: Mapping[str, Payload] | None = None) -> None:
        self.model = model
        self.source = source
        self.payloads = dict(payloads or {})  # large initializers left out of ``model`` (1a, 1b)
        self.skeleton: onnx.ModelProto | None = None  # the model without large weights (4, 7)
        self.opset = next((o.version for o in model.opset_import if onnx_domain(o.domain) == ""), 0)
        self.g = Graph(model.graph.name or "main")
        self.values: dict[str, Value] = {}
        self.file_names: set[str] = set()  # every value name in the file, filled by run()
        self.onnx_types: dict[str, TensorType] = {}

    def fail(self, msg: str, node: ONode | None = None) -> FrontendError:
        where = f"node {node.name} ({qualified(node.domain, node.op)}): " if node is not None else ""
        return FrontendError(f"{self.source}: {where}{msg}")

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        model = self.model
        if model.functions:  # case 2
            try:
                model = onnx.inliner.inline_local_functions(model)
            except Exception as e:
                raise self.fail(f"cannot inline model-local functions: {e}") from e
            self.model = model
        g = model.graph
        self.file_names = {v.name for v in g.input} | {t.name for t in g.initializer}
        self.file_names |= {s.values.name for s in g.sparse_initializer}
        self.file_names |= {o for n in g.node for o in n.output}
        check_interface(model, lambda msg: self.fail(msg))  # case 6: outputs exist, inputs can hold values
        nodes = self._decode_nodes(g)
        self._check_supported(nodes)  # case 3
        order = self._toposort(nodes)  # case 9
        if order != list(range(len(nodes))):
            log.info("%s: nodes were not in topological order; sorted", self.source)
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            del model.graph.node[:]
            model.graph.node.extend(self.model.graph.node[i] for i in order)
            self.model = model
            nodes = [nodes[i] for i in order]
        self.skeleton = skeleton(self.model)
        self._check_model()  # case 4
        if not MIN_OPSET <= self.opset <= MAX_OPSET:  # case 5
            raise self.fail(
                f"default-domain opset {self.opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}"
            )
        self._infer_onnx_types()  # case 7
        self._import_inputs_and_initializers()  # case 6
        for node in nodes:
            self._import_node(node)
        self._import_outputs()
        try:
            self.g.verify()
        except VerifyError as e:
            raise self.fail(f"imported graph is inconsistent: {e}") from e
        self.g.metadata.update(  # case 10
            {
                "source": self.source,
                "opset": self.opset,
                "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
                "ir_version": model.ir_version,
            }
        )
        log.debug("imported %s: %d nodes, opset %d", self.source, len(self.g.nodes), self.opset)
        return self.g

    # ------------------------------------------------------------- decoding
    def _decode_nodes(self, graph: onnx.GraphProto) -> list[ONode]:
        used = {n.name for n in graph.node if n.name}
        seen: set[str] = set()
        counter = Counter[str]()
        out = []
        for n in graph.node:
            name = n.name
            if not name or name in seen:  # case 8: generate names, keep them unique
                base = n.name or n.op_type
                while True:
                    counter[base] += 1
                    name = f"{base}_{counter[base]}"
                    if name not in used and name not in seen:
                        break
            seen.add(name)
            attrs = {a.name: self._decode_attr(a) for a in n.attribute}
            out.append(ONode(name, n.op_type, onnx_domain(n.domain), list(n.input), list(n.output), attrs))
        return out

    def _decode_attr(self, a: AttributeProto) -> Any:
        t = a.type
        if t == AttributeProto.INT:
            return int(a.i)
        if t == AttributeProto.FLOAT:
            return float(a.f)
        if t == AttributeProto.STRING:
            return a.s.decode("utf-8", errors="replace")
        if t == AttributeProto.INTS:
            return [int(x) for x in a.ints]
        if t == AttributeProto.FLOATS:
            return [float(x) for x in a.floats]
        if t == AttributeProto.STRINGS:
            return [s.decode("utf-8", errors="replace") for s in a.strings]
        if t == AttributeProto.TENSOR:
            return self._tensor_to_array(a.t, f"attribute {a.name}")
        if t == AttributeProto.SPARSE_TENSOR:
            return sparse_to_array(a.sparse_tensor)
        if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            return Unsupported("a subgraph")
        return Unsupported(f"an attribute of type {AttributeProto.AttributeType.Name(t)}")

    def _tensor_to_array(self, t: TensorProto, what: str) -> np.ndarray | Unsupported:
        try:
            DType.from_onnx(t.data_type)
        except TypeError:
            return Unsupported(f"{what} of element type {TensorProto.DataType.Name(t.data_type)}")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:  # wrong data size for its dims, unreadable external data...
            raise self.fail(f"{what} ({TensorProto.DataType.Name(t.data_type)}{list(t.dims)}) is corrupt: {e}") from e
        if arr.base is not None or not arr.flags.c_contiguous or not arr.flags.writeable:
            arr = np.array(arr, copy=True, order="C")  # 1d: owned, so the graph keeps it without a copy
        return arr

    # ------------------------------------------------------------- case 3
    def _check_supported(self, nodes: list[ONode]) -> None:
        ops = all_ops()
        bad: dict[str, list[str]] = {}
        for n in nodes:
            key = qualified(n.domain, n.op)
            opdef = ops.get(n.op)
            subgraph = any(isinstance(v, Unsupported) and v.what == "a subgraph" for v in n.attrs.values())
            if opdef is None or opdef.domain != n.domain or subgraph:
                bad.setdefault(key + (" (subgraphs)" if subgraph and opdef is not None else ""), []).append(n.name)
        if bad:
            total = sum(len(v) for v in bad.values())
            parts = []
            for key, names in bad.items():
                shown = ", ".join(names[:8]) + (f", ... {len(names) - 8} more" if len(names) > 8 else "")
                parts.append(f"{key} ({'node' if len(names) == 1 else 'nodes'} {shown})")
            raise FrontendError(f"{self.source}: {total} unsupported op(s): {', '.join(parts)}")

    # ------------------------------------------------------------- case 4
    def _check_model(self) -> None:
        """``onnx.checker`` on the skeleton, whose large initializers are typed inputs (case 4)."""
        skel = self.skeleton or skeleton(self.model)
        if skel.ByteSize() > PROTO_LIMIT:  # nodes alone past 2 GiB (huge Constant attributes)
            log.warning("%s: model over 2 GiB without its initializers; onnx.checker skipped", self.source)
            return
        try:
            onnx.checker.check_model(skel)
        except onnx.checker.ValidationError as e:
            raise self.fail(f"model fails the ONNX checker: {str(e).strip()}") from e

    # ------------------------------------------------------------- case 7
    def _infer_onnx_types(self) -> None:
        """Types from ONNX shape inference on a copy whose large weights are typed inputs."""
        skel = self.skeleton or skeleton(self.model)
        try:
            inferred = onnx.shape_inference.infer_shapes(skel, data_prop=True)
        except Exception as e:  # inference is advisory: the registry decides
            log.warning("%s: ONNX shape inference failed (%s); using registry inference only", self.source, e)
            inferred = skel
        g = inferred.graph
        for vi in list(g.value_info) + list(g.output) + list(self.model.graph.value_info):
            t = self._value_info_type(vi, intermediate=True)
            if t is not None and vi.name not in self.onnx_types:
                self.onnx_types[vi.name] = t

    def _value_info_type(self, vi: onnx.ValueInfoProto, *, intermediate: bool) -> TensorType | None:
        if not vi.type.HasField("tensor_type"):
            return None
        tt = vi.type.tensor_type
        try:
            dtype = DType.from_onnx(tt.elem_type)
        except TypeError:
            return None
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        return TensorType(dtype, tuple(_dim(d, intermediate=intermediate) for d in tt.shape.dim))

    # ------------------------------------------------------------- case 6
    def _import_inputs_and_initializers(self) -> None:
        graph = self.model.graph
        init_names = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        overridable = []
        for vi in graph.input:
            if vi.name in init_names:
                overridable.append(vi.name)
                continue
            if not vi.type.HasField("tensor_type"):
                raise self.fail(f"graph input {vi.name!r} is not a tensor")
            code = vi.type.tensor_type.elem_type
            try:
                DType.from_onnx(code)
            except TypeError:
                raise self.fail(f"graph input {vi.name!r} has unsupported element type {type_name(code)}") from None
            t = self._value_info_type(vi, intermediate=False)
            assert t is not None  # tensor type with a known dtype was checked above
            self.values[vi.name] = self._claim(functools.partial(self.g.add_input, vi.name, t), vi.name)
        if overridable:
            self.g.metadata["overridable_initializers"] = overridable
        for t in graph.initializer:
            payload = None if t.HasField("raw_data") else self.payloads.pop(t.name, None)
            if payload is not None:  # 1a, 1b: straight from the file
                arr: np.ndarray | Unsupported = payload.read(self.source)
            else:
                arr = self._tensor_to_array(t, f"initializer {t.name!r}")
            if isinstance(arr, Unsupported):
                raise self.fail(f"{arr.what} is not supported")
            self._add_initializer(t.name, arr)
        for s in graph.sparse_initializer:
            self._add_initializer(s.values.name, sparse_to_array(s))

    def _add_initializer(self, name: str, arr: np.ndarray) -> None:
        self.values[name] = self._claim(lambda: self.g.add_initializer(name, arr), name)

    def _claim(self, make: Callable[[], Any], name: str) -> Any:
        if name in self.values:
            raise self.fail(f"value {name!r} is defined more than once")
        try:
            return make()
        except VerifyError as e:
            raise self.fail(str(e)) from e

    def fresh(self, hint: str) -> str:
        """A value name free in the IR graph and in the file (whose later names are not claimed yet)."""
        name, i = self.g.unique_name(hint), 0
        while name in self.file_names:
            i += 1
            name = self.g.unique_name(f"{hint}_{i}")
        self.file_names.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> Value:
        """A new initializer (used by the old-opset rewrites)."""
        v = self.g.add_initializer(self.fresh(hint), array)
        self.values[v.name] = v
        return v

    # ------------------------------------------------------------- case 9
    def _toposort(self, nodes: list[ONode]) -> list[int]:
        """A stable topological order of ``nodes`` (indices); names nobody produces count as ready."""
        produced = {o for n in nodes for o in n.outputs if o}
        ready: set[str] = set()
        order: list[int] = []
        pending = list(range(len(nodes)))
        while pending:
            rest = []
            for i in pending:
                if all(name in ready or name not in produced for name in nodes[i].inputs):
                    order.append(i)
                    ready.update(nodes[i].outputs)
                else:
                    rest.append(i)
            if len(rest) == len(pending):
                names = ", ".join(nodes[i].name for i in rest[:5])
                raise self.fail(f"graph has a cycle among nodes {names}")
            pending = rest
        return order

    # ------------------------------------------------------------- nodes
    def _import_node(self, node: ONode) -> None:
        rewrite = REWRITES.get(node.op) if node.domain == "" else None
        if rewrite is not None:
            rewritten = rewrite(self, node)
            if rewritten is None:
                return
            node = rewritten
        self.emit(node)

    def input_value(self, node: ONode, name: str) -> Value | None:
        if name == "":
            return None
        v = self.values.get(name)
        if v is None:
            raise self.fail(f"input {name!r} is not defined by any node, input or initializer", node)
        return v

    def input_type(self, node: ONode, i: int) -> TensorType | None:
        if i >= len(node.inputs) or node.inputs[i] == "":
            return None
        v = self.input_value(node, node.inputs[i])
        return None if v is None else v.type

    def emit(self, node: ONode, *, provenance: Provenance | None = None) -> list[Value]:
        """Add ``node`` to the IR with registry-checked attributes and merged types."""
        from accelopt.ir.registry import get_op

        opdef = get_op(node.op)
        attrs = self._coerce_attrs(opdef, node)
        inputs = list(node.inputs)
        while inputs and inputs[-1] == "":
            inputs.pop()
        ins = [self.input_value(node, name) for name in inputs]
        lo, hi = opdef.inputs
        if len(ins) < lo or (hi >= 0 and len(ins) > hi):
            raise self.fail(f"{len(ins)} inputs, the op takes {lo}..{hi if hi >= 0 else 'n'}", node)
        outs = list(node.outputs)
        while outs and outs[-1] == "":
            outs.pop()
        lo, hi = opdef.outputs
        if len(outs) < lo:  # the registry needs outputs the file omitted: add unused ones
            outs += [""] * (lo - len(outs))
        if hi >= 0 and len(outs) > hi:
            raise self.fail(f"{len(outs)} outputs, the op has at most {hi}", node)
        out_names = [o or self.fresh(f"{node.name}_unused_{i}") for i, o in enumerate(outs)]
        frozen = freeze_attrs(attrs)
        try:
            inferred = opdef.infer_types(ins, frozen, len(out_names), node_name=node.name)
        except Exception as e:
            raise self.fail(f"shape inference failed: {e}", node) from e
        if len(inferred) != len(out_names):
            raise self.fail(f"registry inferred {len(inferred)} output types for {len(out_names)} outputs", node)
        types = [self._merge(node, name, t, self.onnx_types.get(name)) for name, t in zip(out_names, inferred)]
        for name in out_names:
            if name in self.values:
                raise self.fail(f"output {name!r} is already defined", node)
        try:
            ir = self.g.add_node(
                node.op,
                ins,
                frozen,
                outputs=out_names,
                types=types,
                name=node.name,
                provenance=provenance or ORIGINAL,
            )
        except VerifyError as e:
            raise self.fail(str(e), node) from e
        for v in ir.outputs:
            self.values[v.name] = v
        return list(ir.outputs)

    def _coerce_attrs(self, opdef: OpDef, node: ONode) -> dict[str, Any]:
        """Attributes in the registry's kinds (case 5h); undeclared ones are errors."""
        out: dict[str, Any] = {}
        for key, val in node.attrs.items():
            spec = opdef.attrs.get(key)
            if spec is None:
                if (node.op, key) in _IGNORABLE_ATTRS:
                    log.debug("node %s: dropping attribute %s (%s)", node.name, key, _IGNORABLE_ATTRS[(node.op, key)])
                    continue
                raise self.fail(f"attribute {key!r} (opset {self.opset}) is not supported by the IR op", node)
            if isinstance(val, Unsupported):
                raise self.fail(f"attribute {key!r} holds {val.what}, which is not supported", node)
            try:
                out[key] = _coerce(spec.kind, val)
            except (TypeError, ValueError) as e:
                raise self.fail(f"attribute {key!r}: {e}", node) from e
        for key, spec in opdef.attrs.items():
            if spec.default is REQUIRED and key not in out:
                raise self.fail(f"missing required attribute {key!r}", node)
        return out

    def _merge(self, node: ONode | None, name: str, reg: TensorType, other: TensorType | None) -> TensorType:
        """Merge the IR's inferred type with the file's / ONNX inference's (case 7)."""
        if other is None:
            return reg
        if other.dtype != reg.dtype:
            raise self.fail(f"output {name!r}: the file/ONNX inference says {other}, the IR infers {reg}", node)
        if reg.shape is None:
            return TensorType(reg.dtype, other.shape)
        if other.shape is None:
            return reg
        if len(reg.shape) != len(other.shape):
            raise self.fail(f"output {name!r}: the file/ONNX inference says {other}, the IR infers {reg}", node)
        dims: list[Dim] = []
        for a, b in zip(reg.shape, other.shape):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise self.fail(
                    f"inconsistent shapes: output {name!r} is {other} per the file/ONNX inference, {reg} per the IR",
                    node,
                )
            dims.append(_better_dim(a, b))
        return TensorType(reg.dtype, tuple(dims))

    # ------------------------------------------------------------- outputs
    def _import_outputs(self) -> None:
        outs = []
        for vi in self.model.graph.output:
            v = self.values.get(vi.name)
            if v is None:
                raise self.fail(f"graph output {vi.name!r} is not produced by any node")
            declared = self._value_info_type(vi, intermediate=False)
            if declared is not None and v.producer is not None:
                v.type = self._merge(None, vi.name, v.type, declared)
            outs.append(v)
        self.g.set_outputs(outs)


def _better_dim(a: Dim, b: Dim) -> Dim:
    """Prefer a static size, then a symbol, then unknown; ``a`` wins ties."""
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    if a is not None:
        return a
    return b


def _dim(d: onnx.TensorShapeProto.Dimension, *, intermediate: bool) -> Dim:
    if d.HasField("dim_value") and d.dim_value >= 0:
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        p = d.dim_param
        if intermediate:
            # ONNX inference invents ``unk__N``; exporters write expressions ("2*sequence")
            return p if _IDENT.match(p) and not p.startswith("unk__") else None
        return p if _IDENT.match(p) else (re.sub(r"[^A-Za-z0-9_.]", "_", p).lstrip("0123456789.") or None)
    return None


def _coerce(kind: str, val: Any) -> Any:
    if kind == "dtype":
        if isinstance(val, DType):
            return val
        return DType.from_onnx(int(val))
    if kind == "int":
        if isinstance(val, (list, np.ndarray)):
            raise TypeError(f"expected an int, got {val!r}")
        return int(val)
    if kind == "float":
        return float(val)
    if kind == "str":
        return str(val)
    if kind == "ints":
        return tuple(int(x) for x in np.asarray(val).reshape(-1))
    if kind == "floats":
        return tuple(float(x) for x in np.asarray(val).reshape(-1))
    if kind == "strs":
        return tuple(str(x) for x in val)
    if kind == "tensor":
        if not isinstance(val, np.ndarray):
            raise TypeError(f"expected a tensor, got {type(val).__name__}")
        return val
    raise TypeError(f"unknown attribute kind {kind!r}")
