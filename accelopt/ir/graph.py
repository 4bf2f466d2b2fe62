"""The graph IR: ``Graph``, ``Node`` and ``Value``.

A graph holds inputs, outputs, initializers (named constant tensors) and nodes
kept in topological order. Every change goes through the small mutation API
here (``add_node``, ``Value.replace_all_uses_with``, ``Node.set_input``,
``remove_node``...), which keeps ``producer`` and ``uses`` right, so a pass
never edits a list by hand.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from accelopt.errors import VerifyError
from accelopt.ir.dtypes import DType
from accelopt.ir.types import TensorType

Attrs = Mapping[str, Any]
EMPTY_ATTRS: Attrs = MappingProxyType({})


class ElidedTensor(np.ndarray):
    """A tensor whose data the text form did not carry: zeros that remember the printed digest."""

    digest: str | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.digest = getattr(obj, "digest", None)


def freeze_attr(value: Any) -> Any:
    """Make an attribute value immutable: lists become tuples, arrays read-only copies."""
    if isinstance(value, np.ndarray):
        arr = np.array(value, copy=True, subok=isinstance(value, ElidedTensor))
        arr.setflags(write=False)
        return arr
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, DType):
        return value
    raise TypeError(f"unsupported attribute value {value!r} ({type(value).__name__})")


def freeze_attrs(attrs: Mapping[str, Any] | None) -> Attrs:
    if not attrs:
        return EMPTY_ATTRS
    return MappingProxyType({k: freeze_attr(v) for k, v in sorted(attrs.items())})


def attr_key(value: Any) -> Any:
    """A hashable key for an attribute value (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ("tensor", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, tuple):
        return tuple(attr_key(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def tensor_digest(array: np.ndarray) -> str:
    """A short content hash of a tensor, used in the text form for large constants."""
    h = hashlib.sha1()
    h.update(str(array.dtype).encode())
    h.update(repr(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Provenance:
    """Where a node came from: the pass and rule that made it, from which original nodes."""

    pass_name: str | None = None
    rule: str | None = None
    origins: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = []
        if self.pass_name:
            parts.append(self.pass_name + (f"/{self.rule}" if self.rule else ""))
        if self.origins:
            parts.append("from " + ",".join(self.origins))
        return " ".join(parts)


ORIGINAL = Provenance()


def constant_of(v: Value | None) -> np.ndarray | None:
    """The constant data behind ``v`` (an initializer or a ``Constant`` node's value), else ``None``."""
    if v is None:
        return None
    if v.const is not None:
        return v.const
    p = v.producer
    if p is not None and p.op == "Constant":
        return p.attrs.get("value")
    return None


class Value:
    """A tensor-valued edge: a graph input, an initializer, or a node output."""

    __slots__ = ("name", "type", "producer", "index", "uses", "const", "const_digest", "graph")

    def __init__(self, name: str, type: TensorType) -> None:
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.index = 0  # output index in the producer
        self.uses: list[tuple[Node, int]] = []
        self.const: np.ndarray | None = None
        self.const_digest: str | None = None  # set by the parser for elided tensor data
        self.graph: Graph | None = None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple | None:
        return self.type.shape

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def is_input(self) -> bool:
        return self.graph is not None and self.producer is None and self.const is None

    @property
    def consumers(self) -> list[Node]:
        """Distinct nodes using this value, in first-use order."""
        seen: dict[int, Node] = {}
        for n, _ in self.uses:
            seen.setdefault(id(n), n)
        return list(seen.values())

    def replace_all_uses_with(self, new: Value) -> int:
        """Point every use of this value (node inputs and graph outputs) at ``new``."""
        if new is self:
            return 0
        count = 0
        for node, i in list(self.uses):
            node.set_input(i, new)
            count += 1
        if self.graph is not None:
            outs = self.graph.outputs
            for i, v in enumerate(outs):
                if v is self:
                    outs[i] = new
                    count += 1
        return count

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One operation: ``op`` applied to ``inputs`` (``None`` marks an omitted optional input)."""

    __slots__ = ("name", "op", "inputs", "outputs", "attrs", "provenance", "graph")

    def __init__(
        self,
        name: str,
        op: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value],
        attrs: Attrs,
        provenance: Provenance,
    ) -> None:
        self.name = name
        self.op = op
        self.inputs: tuple[Value | None, ...] = tuple(inputs)
        self.outputs: tuple[Value, ...] = tuple(outputs)
        self.attrs = attrs
        self.provenance = provenance
        self.graph: Graph | None = None

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.name} ({self.op}) has {len(self.outputs)} outputs")
        return self.outputs[0]

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def set_input(self, index: int, value: Value | None) -> None:
        """Rewire input ``index`` to ``value``, keeping both use lists right."""
        old = self.inputs[index]
        if old is value:
            return
        if old is not None:
            old.uses.remove((self, index))
        if value is not None:
            value.uses.append((self, index))
        ins = list(self.inputs)
        ins[index] = value
        self.inputs = tuple(ins)

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        self.attrs = freeze_attrs(attrs)

    def __repr__(self) -> str:
        ins = ", ".join("_" if v is None else "%" + v.name for v in self.inputs)
        outs = ", ".join("%" + v.name for v in self.outputs)
        return f"<Node {self.name}: {outs} = {self.op}({ins})>"


@dataclass
class Graph:
    """A dataflow graph with nodes in topological order."""

    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    initializers: dict[str, Value] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # ------------------------------------------------------------------ naming
    def unique_name(self, hint: str = "v") -> str:
        """A value name not used yet in this graph, derived from ``hint``."""
        return self._fresh(_sanitize(hint) or "v", self._names)

    def _unique_node_name(self, hint: str) -> str:
        # kept verbatim (the printer quotes names that are not plain), so imported
        # node names such as "/encoder/layer.0/Add" survive import and text round trips
        return self._fresh(hint or "node", self._node_names)

    def _fresh(self, base: str, taken: set[str]) -> str:
        """``base`` if it is not in ``taken``, else ``base_<n>`` with the first counter value that is not."""
        if base not in taken:
            return base
        while True:
            cand = f"{base}_{next(self._counter)}"
            if cand not in taken:
                return cand

    def _claim(self, value: Value) -> Value:
        if value.name in self._names:
            raise VerifyError(f"value name {value.name!r} is already used in graph {self.name!r}")
        self._names.add(value.name)
        value.graph = self
        return value

    # ------------------------------------------------------------- construction
    def add_input(self, name: str, type: TensorType) -> Value:
        v = self._claim(Value(name, type))
        self.inputs.append(v)
        return v

    def add_initializer(self, name: str, array: np.ndarray, *, unique: bool = False) -> Value:
        """Add a named constant tensor; ``unique=True`` renames on a clash instead of failing."""
        arr = np.asarray(array)
        if not arr.flags.writeable or arr.base is not None or not arr.flags.c_contiguous:
            arr = np.array(arr, copy=True, order="C")  # keeps 0-d arrays 0-d
        arr.setflags(write=False)
        if unique:
            name = self.unique_name(name)
        v = self._claim(Value(name, TensorType(DType.from_numpy(arr.dtype), arr.shape)))
        v.const = arr
        self.initializers[name] = v
        return v

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        outputs: int | Sequence[str] = 1,
        types: Sequence[TensorType] | None = None,
        name: str | None = None,
        before: Node | None = None,
        after: Node | None = None,
        provenance: Provenance = ORIGINAL,
    ) -> Node:
        """Create a node, infer its output types through the op registry, and insert it.

        Inserted at the end unless ``before`` or ``after`` names an anchor node.
        Output names are generated from the node name unless given.
        """
        from accelopt.ir.registry import get_op

        opdef = get_op(op)
        frozen = freeze_attrs(attrs)
        node_name = self._unique_node_name(name or op.lower())
        n_out = outputs if isinstance(outputs, int) else len(outputs)
        if types is None:
            types = opdef.infer_types(list(inputs), frozen, n_out, node_name=node_name)
        if len(types) != n_out:
            raise VerifyError(f"node {node_name} ({op}): {len(types)} output types for {n_out} outputs")
        if isinstance(outputs, int):
            out_names = [self.unique_name(node_name if n_out == 1 else f"{node_name}_{i}") for i in range(n_out)]
        else:
            out_names = list(outputs)
        out_values = []
        for oname, t in zip(out_names, types):
            v = self._claim(Value(oname, t))
            out_values.append(v)
        node = Node(node_name, op, inputs, out_values, frozen, provenance)
        for i, v in enumerate(out_values):
            v.producer = node
            v.index = i
        self._insert(node, before=before, after=after)
        return node

    def _insert(self, node: Node, *, before: Node | None, after: Node | None) -> None:
        for i, v in enumerate(node.inputs):
            if v is not None:
                if v.graph is not self:
                    raise VerifyError(f"node {node.name} ({node.op}): input %{v.name} is not in graph {self.name!r}")
                v.uses.append((node, i))
        node.graph = self
        self._node_names.add(node.name)
        if before is not None:
            self.nodes.insert(self.nodes.index(before), node)
        elif after is not None:
            self.nodes.insert(self.nodes.index(after) + 1, node)
        else:
            self.nodes.append(node)

    # ---------------------------------------------------------------- mutation
    def remove_node(self, node: Node, *, force: bool = False) -> None:
        """Remove a node whose outputs are unused (``force`` drops the uses too)."""
        for v in node.outputs:
            if (v.uses or v in self.outputs) and not force:
                users = ", ".join(n.name for n in v.consumers) or "graph output"
                raise VerifyError(f"cannot remove node {node.name} ({node.op}): %{v.name} is used by {users}")
        for i, inp in enumerate(node.inputs):
            if inp is not None:
                inp.uses.remove((node, i))
        node.inputs = tuple(None for _ in node.inputs)
        self.nodes.remove(node)
        self._node_names.discard(node.name)
        for v in node.outputs:
            self._names.discard(v.name)
            v.graph = None
        node.graph = None

    def remove_nodes(self, nodes: Iterable[Node]) -> int:
        """Remove a set of nodes that are dead once removed together (reverse order)."""
        doomed = {id(n) for n in nodes}
        count = 0
        for node in reversed(list(self.nodes)):
            if id(node) in doomed:
                self.remove_node(node)
                count += 1
        return count

    def remove_initializer(self, name: str) -> None:
        v = self.initializers[name]
        if v.uses or v in self.outputs:
            raise VerifyError(f"cannot remove initializer %{name}: it is still used")
        del self.initializers[name]
        self._names.discard(name)
        v.graph = None

    def set_outputs(self, values: Sequence[Value]) -> None:
        self.outputs = list(values)

    def rename_value(self, value: Value, name: str) -> None:
        """Give ``value`` a name not used yet in this graph (initializers keep their position)."""
        if value.graph is not self:
            raise VerifyError(f"cannot rename %{value.name}: it is not in graph {self.name!r}")
        if name == value.name:
            return
        if name in self._names:
            raise VerifyError(f"cannot rename %{value.name} to %{name}: the name is already used")
        old = value.name
        if self.initializers.get(old) is value:
            self.initializers = {(name if k == old else k): v for k, v in self.initializers.items()}
        self._names.discard(old)
        self._names.add(name)
        value.name = name

    def rename_node(self, node: Node, name: str) -> None:
        """Give ``node`` a name no other node of this graph has (e.g. a replacement keeping the old name)."""
        if node.graph is not self:
            raise VerifyError(f"cannot rename node {node.name}: it is not in graph {self.name!r}")
        if name == node.name:
            return
        if name in self._node_names:
            raise VerifyError(f"cannot rename node {node.name} to {name}: the name is already used")
        self._node_names.discard(node.name)
        self._node_names.add(name)
        node.name = name

    def remove_unused(self) -> int:
        """Dead-code elimination: drop nodes and initializers nothing reaches. Returns the count."""
        live: set[int] = {id(v) for v in self.outputs}
        keep: list[Node] = []
        for node in reversed(self.nodes):
            if any(id(v) in live for v in node.outputs):
                keep.append(node)
                for v in node.inputs:
                    if v is not None:
                        live.add(id(v))
        keep_ids = {id(n) for n in keep}
        removed = self.remove_nodes([n for n in self.nodes if id(n) not in keep_ids])
        for name, v in list(self.initializers.items()):
            if id(v) not in live and not v.uses:
                self.remove_initializer(name)
                removed += 1
        return removed

    def toposort(self) -> None:
        """Restore topological order (stable: keeps the current order where it is valid)."""
        ready: set[int] = {id(v) for v in self.inputs} | {id(v) for v in self.initializers.values()}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progressed = False
            rest = []
            for n in pending:
                if all(v is None or id(v) in ready for v in n.inputs):
                    ordered.append(n)
                    ready.update(id(v) for v in n.outputs)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                names = ", ".join(n.name for n in rest[:5])
                raise VerifyError(f"graph {self.name!r} has a cycle or a dangling input among: {names}")
            pending = rest
        self.nodes = ordered

    # ----------------------------------------------------------------- queries
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.initializers.values()
        for n in self.nodes:
            yield from n.outputs

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def op_counts(self) -> Counter[str]:
        return Counter(n.op for n in self.nodes)

    def parameter_bytes(self) -> dict[str, int]:
        """Bytes of initializer data by dtype name."""
        out: Counter[str] = Counter()
        for v in self.initializers.values():
            assert v.const is not None
            out[str(v.dtype)] += int(v.const.nbytes)
        return dict(out)

    def const_value(self, v: Value | None) -> np.ndarray | None:
        """The constant data behind ``v`` (an initializer or a Constant node), else ``None``."""
        return constant_of(v)

    # ----------------------------------------------------------------- copying
    def copy(self) -> Graph:
        """A structural copy; constant arrays (read-only) are shared."""
        g = Graph(self.name, metadata=dict(self.metadata))
        vmap: dict[int, Value] = {}

        def clone(v: Value) -> Value:
            nv = Value(v.name, v.type)
            nv.const = v.const
            nv.const_digest = v.const_digest
            vmap[id(v)] = g._claim(nv)
            return nv

        g.inputs = [clone(v) for v in self.inputs]
        for name, v in self.initializers.items():
            g.initializers[name] = clone(v)
        for n in self.nodes:
            outs = [clone(v) for v in n.outputs]
            ins = [None if v is None else vmap[id(v)] for v in n.inputs]
            nn = Node(n.name, n.op, ins, outs, n.attrs, n.provenance)
            for i, v in enumerate(outs):
                v.producer = nn
                v.index = i
            g._insert(nn, before=None, after=None)
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    # ------------------------------------------------------------------ checks
    def verify(self) -> None:
        from accelopt.ir.verifier import verify

        verify(self)

    def __str__(self) -> str:
        from accelopt.ir.printer import print_graph

        return print_graph(self)

    def to_networkx(self) -> Any:
        from accelopt.ir.analysis import to_networkx

        return to_networkx(self)


_NAME_RE = re.compile(r"[^A-Za-z0-9_.]")


def _sanitize(name: str) -> str:
    s = _NAME_RE.sub("_", name)
    if s and s[0].isdigit():
        s = "v" + s
    return s
