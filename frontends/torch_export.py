"""The torch.export frontend: an ``nn.Module`` or ``ExportedProgram`` -> accelopt ``Graph``.

Two entry points:

* ``load_torch(module_or_ep, example_inputs, dynamic=True) -> Model`` exports an
  ``nn.Module`` (in eval mode) with ``torch.export.export``, decomposes it to core
  ATen, imports it, and keeps the original module as the reference runtime.
* ``import_exported_program(ep) -> Graph`` imports an ``ExportedProgram``.

What the import does, case by case:

1. Export: the module is put in eval mode and exported with a dynamic ``batch``
   dimension (dim 0 of every tensor input) and ``seq`` dimension (dim 1 of inputs
   of rank >= 2). An example dim of size 1 is tiled to 2 for the export only, so
   torch does not specialize it. When torch reports constraint violations its
   suggested fixes are applied once; if export still fails, ``seq`` is dropped,
   then ``batch`` (each fallback logged as a warning), ending with a static export.
2. Decomposition: ``ep.run_decompositions`` with torch's default table minus
   ``aten.scaled_dot_product_attention``, which therefore stays one op and becomes
   ``ScaledDotProductAttention`` (accelopt domain). ``import_exported_program``
   decomposes only when the program holds an op this importer does not map.
3. Parameters, buffers and lifted constants become initializers named by their
   module path (``encoder.layer.0.attention.self.query.weight``), in the
   model's own dtype.
4. User inputs become graph inputs named as the placeholders (the forward
   argument names). Dims are ints, or symbols: the first symbol seen at dim 0 is
   ``batch``, at dim 1 ``seq``, elsewhere ``dim<k>``; a later distinct symbol at
   the same position gets a suffix (``seq_2``). Dims that are expressions of
   symbols (``batch*seq``) are left unknown in types.
5. Symbolic sizes used as values (view/expand shapes, slice bounds, arange ends)
   are rebuilt from the graph inputs: ``Shape(x){start=d,end=d+1}`` per symbol,
   combined with Add/Mul/Div/Max/Min following the sympy expression. A reshape
   with a single symbolic entry uses ``-1`` instead.
6. Outputs follow the user outputs of the program; their names come from the
   output pytree (``last_hidden_state``, ``pooler_output``, ``logits``,
   ``hidden_states_0``...; ``output`` / ``output_<i>`` for plain tensors/tuples).
7. Each value's type is the registry's inference refined by torch's own
   metadata (a dim inference leaves unknown is taken from torch); when torch's
   dtype differs from the mapped op's dtype a ``Cast`` is added.
8. Dropout (``dropout``, ``native_dropout``) in eval mode, and aliasing ops
   (``clone``, ``alias``, ``detach``, ``lift_fresh_copy``, ``contiguous``...)
   vanish; metadata assertions are dropped. Dropout in training mode, or SDPA
   with ``dropout_p > 0``, is a ``FrontendError``.
9. ``permute``/``t``/``transpose`` of a parameter is folded into a transposed
   initializer (``<name>_T``), so ``linear`` becomes ``MatMul(x, W^T) + b``.
10. ATen ops without a mapping: one ``FrontendError`` lists all of them, with
    counts and node names.

The per-op mapping is in the ``_CONVERTERS`` table (see ``supported_aten_ops()``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.errors import FrontendError, VerifyError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Value
from accelopt.ir.types import Dim, TensorType
from accelopt.model import Model

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1
_SMALL_CONST = 64  # constants up to this many elements are shared by content


# ============================================================== public API
def import_exported_program(ep: Any, *, source: str = "<torch>") -> Graph:
    """Import a ``torch.export.ExportedProgram`` into a verified ``Graph`` (cases 2-10)."""
    torch = _torch()
    if not isinstance(ep, torch.export.ExportedProgram):
        raise FrontendError(f"{source}: expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    if _unsupported(ep):
        ep = _decompose(ep, source)
    return _Importer(ep, source).run()


def load_torch(
    module_or_ep: Any,
    example_inputs: Any = None,
    *,
    dynamic: bool = True,
    source: str | None = None,
) -> Model:
    """Load an ``nn.Module`` (with example inputs) or an ``ExportedProgram`` as a ``Model``.

    ``example_inputs`` is a dict of keyword arguments, a tuple of positional
    arguments, or one tensor. ``dynamic`` exports with symbolic batch/sequence
    dims (case 1). ``Model.reference_fn`` runs the original module (or
    ``ep.module()``) under ``torch.no_grad()``.
    """
    torch = _torch()
    if isinstance(module_or_ep, torch.export.ExportedProgram):
        ep = module_or_ep
        src = source or "<ExportedProgram>"
        graph = import_exported_program(ep, source=src)
        runner = ep.module()
        binder = _InputBinder.from_program(ep, src)
    elif isinstance(module_or_ep, torch.nn.Module):
        module = module_or_ep.eval()
        src = source or f"<{type(module).__name__}>"
        if example_inputs is None:
            raise FrontendError(f"{src}: example_inputs are needed to export an nn.Module")
        args, kwargs = _as_args_kwargs(example_inputs, src)
        ep = export_module(module, args, kwargs, dynamic=dynamic, source=src)
        graph = import_exported_program(_decompose(ep, src), source=src)
        runner = module
        binder = _InputBinder.from_program(ep, src)
    else:
        raise FrontendError(f"cannot load a {type(module_or_ep).__name__} with the torch frontend")
    out_names = [v.name for v in graph.outputs]
    out_leaves: list[int] = graph.metadata.get("output_leaves", list(range(len(out_names))))
    in_names = [v.name for v in graph.inputs]
    in_dtypes = {v.name: v.dtype.np for v in graph.inputs}

    def reference(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in in_names if n not in inputs]
        if missing:
            raise FrontendError(f"{src}: reference run is missing input(s) {', '.join(missing)}")
        tensors = {n: torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=in_dtypes[n])) for n in in_names}
        call_args, call_kwargs = binder.bind(tensors)
        with torch.no_grad():
            out = runner(*call_args, **call_kwargs)
        leaves = torch.utils._pytree.tree_leaves(out)
        return {name: _to_numpy(leaves[i]) for name, i in zip(out_names, out_leaves)}

    model = Model(graph=graph, source=src, kind="torch", reference_fn=reference)
    model.metadata["exported_program"] = ep
    return model


def export_module(
    module: Any,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    dynamic: bool = True,
    source: str = "<torch>",
) -> Any:
    """``torch.export.export`` with dynamic batch/seq dims and the fallbacks of case 1."""
    _torch()
    from torch.export import Dim

    kwargs = dict(kwargs or {})
    module = module.eval()
    attempts: list[tuple[str, bool, bool]] = [("batch+seq", True, True), ("batch", True, False)] if dynamic else []
    attempts.append(("static", False, False))
    last: Exception | None = None
    max_seq = _max_positions(module)
    for label, want_batch, want_seq in attempts:
        seq = Dim("seq", max=max_seq) if max_seq else Dim("seq")
        dims = {0: Dim("batch") if want_batch else None, 1: seq if want_seq else None}
        ex_args, ex_kwargs = _tile_for_export((args, kwargs), dims)
        spec = _dynamic_spec((ex_args, ex_kwargs), dims) if (want_batch or want_seq) else None
        try:
            return _export(module, ex_args, ex_kwargs, spec)
        except Exception as e:  # torch raises many types here; any failure moves to the next attempt
            last = e
            fixes = _suggested_fixes(str(e)) if spec is not None else None
            if fixes is not None and spec is not None:
                try:
                    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

                    refined = refine_dynamic_shapes_from_suggested_fixes(fixes, spec)
                    return _export(module, ex_args, ex_kwargs, refined)
                except Exception as e2:
                    last = e2
            if label != "static":
                log.warning("%s: export with dynamic %s dims failed (%s); retrying", source, label, _first_line(last))
    raise FrontendError(f"{source}: torch.export failed: {type(last).__name__}: {_first_line(last)}") from last


def supported_aten_ops() -> list[str]:
    """Names of the ATen/builtin targets this frontend maps."""
    return sorted(_CONVERTERS)


# ======================================================= export helpers
def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        raise FrontendError("the torch frontend needs torch installed") from e
    return torch


def _export(module: Any, args: tuple, kwargs: dict, spec: Any) -> Any:
    torch = _torch()
    with torch.no_grad():
        return torch.export.export(module, args, kwargs, dynamic_shapes=spec)


def _max_positions(module: Any) -> int | None:
    """A Hugging Face model's ``max_position_embeddings``: the likely bound of ``seq`` (saves a re-export)."""
    n = getattr(getattr(module, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 2 else None


def _suggested_fixes(msg: str) -> str | None:
    """The "Suggested fixes:" block of a constraint violation, without torch's trailing advice."""
    if "Suggested fixes:" not in msg:
        return None
    lines = []
    for line in msg.split("Suggested fixes:", 1)[1].splitlines():
        if re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]* = \S", line):
            lines.append(line.strip())
        elif lines:
            break
    return "Suggested fixes:\n" + "\n".join(lines) if lines else None


def _first_line(e: BaseException | None) -> str:
    text = str(e).strip() if e is not None else ""
    return text.splitlines()[0] if text else type(e).__name__


def _as_args_kwargs(example_inputs: Any, src: str) -> tuple[tuple, dict]:
    torch = _torch()
    if isinstance(example_inputs, Mapping):
        return (), {str(k): _as_torch(v) for k, v in example_inputs.items()}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(_as_torch(v) for v in example_inputs), {}
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        return (_as_torch(example_inputs),), {}
    raise FrontendError(
        f"{src}: example_inputs must be a dict, a tuple or a tensor, not {type(example_inputs).__name__}"
    )


def _as_torch(x: Any) -> Any:
    torch = _torch()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _tile_for_export(inputs: tuple[tuple, dict], dims: Mapping[int, Any]) -> tuple[tuple, dict]:
    """Tile tensors whose dynamic dims have size 1 up to 2, so torch does not specialize them."""
    torch = _torch()

    def tile(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        for d, dim in dims.items():
            if dim is not None and x.dim() > d and x.shape[d] == 1:
                reps = [1] * x.dim()
                reps[d] = 2
                x = x.repeat(*reps)
        return x

    args, kwargs = inputs
    return tuple(tile(a) for a in args), {k: tile(v) for k, v in kwargs.items()}


def _dynamic_spec(inputs: tuple[tuple, dict], dims: Mapping[int, Any]) -> Any:
    torch = _torch()

    def spec(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return None
        out = {d: dim for d, dim in dims.items() if dim is not None and x.dim() > d}
        return out or None

    args, kwargs = inputs
    if kwargs and not args:
        return {k: spec(v) for k, v in kwargs.items()}
    if args and not kwargs:
        return tuple(spec(a) for a in args)
    return (tuple(spec(a) for a in args), {k: spec(v) for k, v in kwargs.items()})


def _decomposition_table() -> dict:
    torch = _torch()
    table = torch.export.default_decompositions()
    for op in (torch.ops.aten.scaled_dot_product_attention.default,):
        table.pop(op, None)
    return table


def _decompose(ep: Any, source: str) -> Any:
    try:
        return ep.run_decompositions(_decomposition_table())
    except Exception as e:
        raise FrontendError(f"{source}: decomposition to core ATen failed: {type(e).__name__}: {_first_line(e)}") from e


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, "_name", None)  # OpOverload: "aten::add.Tensor"
    overload = getattr(target, "_overloadname", None)
    if isinstance(name, str) and "::" in name:
        ns, op = name.split("::", 1)
        base = f"{ns}.{op}"
        if overload is not None and not base.endswith("." + overload):
            base += "." + (overload or "default")
        return base
    module = getattr(target, "__module__", "") or ""
    qual = getattr(target, "__name__", repr(target))
    if module in ("_operator", "operator"):
        return f"operator.{qual}"
    if module.startswith("torch"):
        return f"{module}.{qual}"
    return f"{module}.{qual}" if module else qual


def _is_symbolic_scalar(node: Any) -> bool:
    """A call producing a SymInt/int/float/bool (shape arithmetic), not a tensor."""
    torch = _torch()
    val = node.meta.get("val")
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool))


def _unsupported(ep: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = _target_name(node.target)
        if name in _CONVERTERS or name in _IGNORED:
            continue
        if _is_symbolic_scalar(node):
            continue
        out.setdefault(name, []).append(node.name)
    return out


def _to_numpy(t: Any) -> np.ndarray:
    torch = _torch()
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(DType.BFLOAT16.np)
    return t.numpy()


_TORCH_DTYPES: dict[str, DType] = {
    "torch.float64": DType.FLOAT64,
    "torch.float32": DType.FLOAT32,
    "torch.float16": DType.FLOAT16,
    "torch.bfloat16": DType.BFLOAT16,
    "torch.int64": DType.INT64,
    "torch.int32": DType.INT32,
    "torch.int16": DType.INT16,
    "torch.int8": DType.INT8,
    "torch.uint8": DType.UINT8,
    "torch.bool": DType.BOOL,
}


def _dtype(tdtype: Any, where: str) -> DType:
    try:
        return _TORCH_DTYPES[str(tdtype)]
    except KeyError:
        raise FrontendError(f"{where}: torch dtype {tdtype} has no accelopt equivalent") from None


# ====================================================== input binding
@dataclass
class _InputBinder:
    """Rebuilds the module's ``(args, kwargs)`` from named tensors (the reference run)."""

    flat: list[Any]
    spec: Any
    positions: list[int]  # positions of the tensor leaves, in user-input order
    names: list[str]

    @classmethod
    def from_program(cls, ep: Any, src: str) -> _InputBinder:
        torch = _torch()
        pytree = torch.utils._pytree
        names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        if ep.example_inputs is not None:
            flat, spec = pytree.tree_flatten(ep.example_inputs)
        else:
            spec = ep.call_spec.in_spec
            flat = [None] * spec.num_leaves
        positions = [i for i, x in enumerate(flat) if x is None or isinstance(x, torch.Tensor)]
        if len(positions) != len(names):
            raise FrontendError(f"{src}: {len(names)} user inputs but {len(positions)} tensor leaves in the input spec")
        return cls(list(flat), spec, positions, names)

    def bind(self, tensors: Mapping[str, Any]) -> tuple[tuple, dict]:
        flat = list(self.flat)
        for name, pos in zip(self.names, self.positions):
            flat[pos] = tensors[name]
        args, kwargs = _torch().utils._pytree.tree_unflatten(flat, self.spec)
        return tuple(args), dict(kwargs)


# ============================================================ importer
class _Tuple(tuple):
    """Several values produced by one ATen node (accessed through getitem)."""


class _Importer:
    def __init__(self, ep: Any, source: str) -> None:
        self.torch = _torch()
        self.ep = ep
        self.source = source
        self.g = Graph(name=_graph_name(source))
        self.env: dict[Any, Any] = {}
        self.sym_src: dict[Any, tuple[Value, int]] = {}  # sympy Symbol -> (input, dim)
        self.sym_names: dict[Any, str] = {}
        self.sym_cache: dict[str, Value] = {}
        self.const_cache: dict[tuple, Value] = {}
        self.fx: Any = None  # the fx node being converted

    # ------------------------------------------------------------ driver
    def run(self) -> Graph:
        missing = _unsupported(self.ep)
        if missing:
            total = sum(len(v) for v in missing.values())
            lines = [
                f"  {name} x{len(nodes)}: {', '.join(nodes[:6])}{' ...' if len(nodes) > 6 else ''}"
                for name, nodes in sorted(missing.items())
            ]
            raise FrontendError(
                f"{self.source}: {total} node(s) use {len(missing)} unsupported ATen op(s):\n" + "\n".join(lines)
            )
        self._check_mutations()
        self._placeholders()
        for node in self.ep.graph.nodes:
            if node.op == "call_function":
                self.fx = node
                self._convert(node)
        self._outputs()
        self.g.remove_unused()
        try:
            self.g.verify()
        except VerifyError as e:
            raise FrontendError(f"{self.source}: the imported graph does not verify: {e}") from e
        self.g.metadata["source"] = self.source
        return self.g

    def _convert(self, node: Any) -> None:
        name = _target_name(node.target)
        if name in _IGNORED:
            return
        if name not in _CONVERTERS and _is_symbolic_scalar(node):
            self.env[node] = _SymArg(self._sym_of(node.meta["val"]))
            return
        fn = _CONVERTERS[name]
        try:
            result = fn(self, node, *node.args, **node.kwargs)
        except FrontendError:
            raise
        except Exception as e:
            raise FrontendError(
                f"{self.source}: node {node.name} ({name}) could not be converted: {type(e).__name__}: {e}"
            ) from e
        if isinstance(result, Value):
            result = self._finish(result, node.meta.get("val"))
        self.env[node] = result

    def _check_mutations(self) -> None:
        bad = [
            f"{s.kind.name} of {s.target or s.arg.name}"
            for s in self.ep.graph_signature.output_specs
            if s.kind.name not in ("USER_OUTPUT",)
        ]
        if bad:
            raise FrontendError(
                f"{self.source}: the program mutates state in forward ({'; '.join(bad)}); not supported"
            )

    # ------------------------------------------------------ placeholders
    def _placeholders(self) -> None:
        torch = self.torch
        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs}
        nodes = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        # name the symbols first, in input order (case 4)
        taken: set[str] = set()
        for n in nodes:
            s = specs.get(n.name)
            if s is None or s.kind.name != "USER_INPUT":
                continue
            val = n.meta.get("val")
            if not isinstance(val, torch.Tensor):
                continue
            for d, size in enumerate(val.shape):
                expr = _expr_of(size)
                if expr is None or not getattr(expr, "is_Symbol", False) or expr in self.sym_names:
                    continue
                base = {0: "batch", 1: "seq"}.get(d, f"dim{d}")
                name, k = base, 2
                while name in taken:
                    name, k = f"{base}_{k}", k + 1
                taken.add(name)
                self.sym_names[expr] = name
        for n in nodes:
            s = specs.get(n.name)
            kind = s.kind.name if s is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                val = n.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise FrontendError(
                        f"{self.source}: input {n.name} is a {type(val).__name__}, only tensor inputs are supported"
                    )
                v = self.g.add_input(n.name, self._type_of(val, n.name))
                for d, size in enumerate(val.shape):
                    expr = _expr_of(size)
                    if expr is not None and getattr(expr, "is_Symbol", False):
                        self.sym_src.setdefault(expr, (v, d))
                self.env[n] = v
            elif s is not None and kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                t = self._state_tensor(s)
                if isinstance(t, torch.Tensor):
                    self.env[n] = self.g.add_initializer(s.target, _to_numpy(t), unique=True)
                else:
                    raise FrontendError(f"{self.source}: {kind} {s.target} is a {type(t).__name__}, not a tensor")
            else:
                raise FrontendError(f"{self.source}: input {n.name} of kind {kind} is not supported")

    def _state_tensor(self, spec: Any) -> Any:
        target = spec.target
        if target in self.ep.state_dict:
            return self.ep.state_dict[target]
        if target in self.ep.constants:
            return self.ep.constants[target]
        raise FrontendError(f"{self.source}: no tensor for {spec.kind.name} {target}")

    # ----------------------------------------------------------- outputs
    def _outputs(self) -> None:
        torch = self.torch
        out_node = next(n for n in self.ep.graph.nodes if n.op == "output")
        results = list(out_node.args[0])
        user = [s for s in self.ep.graph_signature.output_specs if s.kind.name == "USER_OUTPUT"]
        if len(user) != len(results):
            raise FrontendError(f"{self.source}: {len(results)} outputs but {len(user)} user outputs in the signature")
        names = _output_names(self.ep, len(results))
        values: list[Value] = []
        leaves: list[int] = []
        used: set[str] = {v.name for v in self.g.inputs} | set(self.g.initializers)
        for i, (res, want) in enumerate(zip(results, names)):
            if not isinstance(res, torch.fx.Node) or not isinstance(self.env.get(res), Value):
                log.debug("%s: output %d (%s) is not a tensor; dropped", self.source, i, want)
                continue
            v = self.env[res]
            want = self._free_name(want, used)
            used.add(want)
            if v.producer is None or any(v is o for o in values) or not hasattr(self.g, "rename_value"):
                v = self.g.add_node("Identity", [v], name=want, outputs=[want]).output
            else:
                self._rename(v, want)
            values.append(v)
            leaves.append(i)
        self.g.set_outputs(values)
        self.g.metadata["output_leaves"] = leaves

    def _free_name(self, want: str, used: set[str]) -> str:
        name, k = want, 1
        while name in used:
            name, k = f"{want}_{k}", k + 1
        return name

    def _rename(self, v: Value, name: str) -> None:
        if v.name == name:
            return
        try:
            other = self.g.value(name)
        except KeyError:
            other = None
        if other is not None:  # an intermediate holds the name: move it aside first
            self.g.rename_value(other, self.g.unique_name(name + "_inner"))
        self.g.rename_value(v, name)

    # ------------------------------------------------------ types & syms
    def _type_of(self, val: Any, where: str) -> TensorType:
        dtype = _dtype(val.dtype, where)
        return TensorType(dtype, tuple(self._dim(s) for s in val.shape))

    def _dim(self, size: Any) -> Dim:
        if isinstance(size, int):
            return size
        expr = _expr_of(size)
        if expr is None:
            return None
        if expr.is_number:
            return int(expr)
        if expr in self.sym_names:
            return self.sym_names[expr]
        return None

    def _sym_of(self, val: Any) -> Any:
        """A python int, or the sympy expression of a SymInt."""
        if isinstance(val, (bool, int, float)):
            return val
        expr = _expr_of(val)
        if expr is None:
            raise FrontendError(f"{self.source}: node {self.fx.name}: cannot read symbolic value {val!r}")
        if expr.is_number:
            return int(expr) if expr.is_integer else float(expr)
        return expr

    def _finish(self, v: Value, val: Any) -> Value:
        """Refine ``v``'s type from torch's metadata; cast when the dtypes disagree (case 7)."""
        torch = self.torch
        if not isinstance(val, torch.Tensor):
            return v
        want = self._type_of(val, self.fx.name)
        if v.dtype != want.dtype:
            v = self.emit("Cast", [v], {"to": want.dtype}, part="cast")
        if v.shape is None:
            v.type = want
            return v
        if len(v.shape) != len(want.shape or ()):
            raise FrontendError(
                f"{self.source}: node {self.fx.name} ({_target_name(self.fx.target)}): "
                f"mapped to rank {len(v.shape)} {v.type}, torch says {want}"
            )
        merged = []
        for a, b in zip(v.shape, want.shape or ()):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise FrontendError(
                    f"{self.source}: node {self.fx.name} ({_target_name(self.fx.target)}): "
                    f"mapped shape {v.type} disagrees with torch's {want}"
                )
            merged.append(a if a is not None else b)
        v.type = TensorType(v.dtype, tuple(merged))
        return v

    # ---------------------------------------------------------- emission
    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        n_out: int = 1,
        *,
        part: str | None = None,
        name: str | None = None,
    ):
        """Add a node; returns its output (or outputs).

        The node is named after the fx node being converted; helper nodes pass
        ``part`` (``view_1_shape``) so that the final node keeps the fx name.
        """
        if name is None:
            base = self.fx.name if self.fx is not None else op.lower()
            name = f"{base}_{part}" if part else base
        node = self.g.add_node(op, list(inputs), dict(attrs or {}), outputs=n_out, name=name)
        return node.output if n_out == 1 else _Tuple(node.outputs)

    def const(self, array: Any, hint: str = "const") -> Value:
        arr = np.asarray(array)
        key = None
        if arr.size <= _SMALL_CONST:
            key = (str(arr.dtype), arr.shape, arr.tobytes())
            hit = self.const_cache.get(key)
            if hit is not None:
                return hit
        v = self.g.add_initializer(hint, arr, unique=True)
        if key is not None:
            self.const_cache[key] = v
        return v

    def ints(self, values: Sequence[int]) -> Value:
        return self.const(np.asarray(list(values), dtype=np.int64), "ints")

    def scalar(self, value: Any, dtype: DType) -> Value:
        return self.const(np.asarray(value, dtype=dtype.np), "scalar")

    # ----------------------------------------------------------- operands
    def tensor(self, arg: Any) -> Value:
        v = self.env.get(arg) if isinstance(arg, self.torch.fx.Node) else None
        if isinstance(v, Value):
            return v
        raise FrontendError(f"{self.source}: node {self.fx.name}: argument {arg!r} is not a tensor")

    def sym(self, arg: Any) -> Any:
        """An int/float argument, or the sympy expression of a symbolic one."""
        if isinstance(arg, self.torch.fx.Node):
            v = self.env.get(arg)
            if isinstance(v, _SymArg):
                return v.expr
            raise FrontendError(f"{self.source}: node {self.fx.name}: argument {arg.name} is not a scalar")
        return self._sym_of(arg)

    def meta(self, arg: Any) -> Any:
        return arg.meta.get("val") if isinstance(arg, self.torch.fx.Node) else arg

    def operand(self, arg: Any, dtype: DType) -> Value:
        """A tensor, python scalar or SymInt as a Value of ``dtype`` (scalars become 0-d)."""
        if isinstance(arg, self.torch.fx.Node) and isinstance(self.env.get(arg), Value):
            v = self.env[arg]
            return v if v.dtype == dtype else self.emit("Cast", [v], {"to": dtype}, part=f"{arg.name}_cast")
        s = self.sym(arg)
        if isinstance(s, (bool, int, float)):
            return self.scalar(s, dtype)
        v = self.sym_scalar(s)
        return v if dtype == DType.INT64 else self.emit("Cast", [v], {"to": dtype}, name=f"{v.name}_{dtype}")

    # ----------------------------------------------------- symbolic values
    def sym_vec(self, expr: Any) -> Value:
        """A sympy/int expression as a runtime int64 tensor of shape [1] (case 5)."""
        if isinstance(expr, int):
            return self.ints([expr])
        key = str(expr)
        hit = self.sym_cache.get(key)
        if hit is not None:
            return hit
        v = self._build_sym(expr)
        self.sym_cache[key] = v
        return v

    def sym_scalar(self, expr: Any) -> Value:
        if isinstance(expr, int):
            return self.scalar(expr, DType.INT64)
        key = "scalar:" + str(expr)
        hit = self.sym_cache.get(key)
        if hit is None:
            hit = self.emit("Squeeze", [self.sym_vec(expr), self.ints([0])], name=self._sym_label(expr) + "_scalar")
            self.sym_cache[key] = hit
        return hit

    def _build_sym(self, expr: Any) -> Value:
        import sympy

        if expr.is_number:
            return self.ints([int(expr)])
        if expr.is_Symbol:
            if expr not in self.sym_src:
                raise FrontendError(f"{self.source}: node {self.fx.name}: symbol {expr} is not an input dimension")
            v, d = self.sym_src[expr]
            return self.emit("Shape", [v], {"start": d, "end": d + 1}, name=self._sym_label(expr))
        fname = type(expr).__name__
        if isinstance(expr, (sympy.Add, sympy.Mul)):
            op = "Add" if isinstance(expr, sympy.Add) else "Mul"
            args = sorted(expr.args, key=lambda a: (a.is_number, str(a)))
            acc = self.sym_vec(args[0])
            for a in args[1:]:
                acc = self.emit(op, [acc, self.sym_vec(int(a) if a.is_number else a)], name=self._sym_label(expr))
            return acc
        if fname in ("FloorDiv", "CleanDiv", "IntTrueDiv"):
            a, b = expr.args
            return self.emit("Div", [self.sym_vec(a), self.sym_vec(b)], name=self._sym_label(expr))
        if fname in ("Max", "Min"):
            vals = [self.sym_vec(int(a) if a.is_number else a) for a in expr.args]
            return self.emit(fname, vals, name=self._sym_label(expr))
        raise FrontendError(
            f"{self.source}: node {self.fx.name}: symbolic expression {expr} ({fname}) is not supported"
        )

    def shape_vec(self, sizes: Sequence[Any], *, allow_infer: bool) -> Value:
        """A list of ints/SymInts as a 1-D int64 shape Value.

        ``allow_infer`` (reshape): a lone symbolic entry becomes -1.
        """
        exprs = [self.sym(s) for s in sizes]
        dynamic = [i for i, e in enumerate(exprs) if not isinstance(e, int)]
        if not dynamic:
            return self.ints(exprs)
        if allow_infer and len(dynamic) == 1 and -1 not in exprs:
            return self.ints([-1 if i == dynamic[0] else e for i, e in enumerate(exprs)])
        key = "shape:" + ",".join(str(e) for e in exprs)
        hit = self.sym_cache.get(key)
        if hit is not None:
            return hit
        pieces: list[Value] = []
        run: list[int] = []
        for e in exprs:
            if isinstance(e, int):
                run.append(e)
                continue
            if run:
                pieces.append(self.ints(run))
                run = []
            pieces.append(self.sym_vec(e))
        if run:
            pieces.append(self.ints(run))
        out = pieces[0] if len(pieces) == 1 else self.emit("Concat", pieces, {"axis": 0}, part="shape")
        self.sym_cache[key] = out
        return out

    def _sym_label(self, expr: Any) -> str:
        """A value name for a symbolic size: ``seq``, ``batch_x_seq``..."""
        import sympy

        named = expr.subs({s: sympy.Symbol(n) for s, n in self.sym_names.items()}) if self.sym_names else expr
        text = str(named).replace(" ", "")
        for a, b in (("//", "_div_"), ("*", "_x_"), ("+", "_p_"), ("-", "_m_"), ("/", "_div_")):
            text = text.replace(a, b)
        label = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "size"
        return label + "_size" if label in ("batch", "seq") or label.startswith(("batch", "seq")) else label

    def rank(self, arg: Any) -> int:
        val = self.meta(arg)
        return len(val.shape)

    def out_dtype(self) -> DType:
        return _dtype(self.fx.meta["val"].dtype, self.fx.name)

    def promoted(self, a: Any, b: Any) -> DType:
        """torch's result dtype of two operands (for comparisons)."""
        torch = self.torch

        def probe(x: Any) -> Any:
            m = self.meta(x)
            if isinstance(m, torch.Tensor):
                return torch.zeros(() if m.dim() == 0 else (1,), dtype=m.dtype)
            if isinstance(m, (torch.SymBool, bool)):
                return True
            if isinstance(m, (torch.SymInt, int)):
                return 1
            if isinstance(m, (torch.SymFloat, float)):
                return 1.0
            raise FrontendError(f"{self.source}: node {self.fx.name}: cannot compare {type(m).__name__}")

        pa, pb = probe(a), probe(b)
        if not isinstance(pa, torch.Tensor) and not isinstance(pb, torch.Tensor):
            pa = torch.tensor(pa)
        return _dtype(torch.result_type(pa, pb), self.fx.name)


@dataclass(frozen=True)
class _SymArg:
    expr: Any


def _expr_of(size: Any) -> Any:
    """The sympy expression behind a SymInt (sympy Integer for ints)."""
    import sympy

    if isinstance(size, int):
        return sympy.Integer(size)
    node = getattr(size, "node", None)
    expr = getattr(node, "expr", None)
    if expr is None:
        return None
    return expr


def _graph_name(source: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", source.strip("<>").split("/")[-1]) or "main"
    return base[:64]


def _output_names(ep: Any, n: int) -> list[str]:
    """Output names from the program's output pytree (case 6)."""
    torch = _torch()
    pytree = torch.utils._pytree
    try:
        spec = ep.call_spec.out_spec
        obj = pytree.tree_unflatten(list(range(n)), spec)
        paths = pytree.tree_flatten_with_path(obj)[0]
    except Exception:  # an exotic output container: fall back to positions
        paths = []
    if len(paths) != n:
        return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    names: list[str] = []
    for path, _ in paths:
        parts = []
        for key in path:
            for attr in ("key", "name", "idx"):
                if hasattr(key, attr):
                    parts.append(str(getattr(key, attr)))
                    break
        names.append(re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts)))
    if all(not nm for nm in names):
        return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    out = []
    for nm in names:
        if not nm:
            nm = "output"
        elif nm[0].isdigit():
            nm = "output_" + nm
        out.append(nm)
    return out


# ================================================================= converters
Converter = Callable[..., Any]
_CONVERTERS: dict[str, Converter] = {}

#: targets that produce nothing the graph needs (metadata checks)
_IGNORED = {
    "aten._assert_tensor_metadata.default",
    "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default",
    "aten.sym_constrain_range.default",
    "aten._assert_async.msg",
    "aten._assert_async.default",
    "aten.sym_constrain_range_for_size",
}


def _conv(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            _CONVERTERS[n] = fn
        return fn

    return deco


# ------------------------------------------------------------ identity-like (case 8)
@_conv(
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.detach_.default",
    "aten.lift_fresh_copy.default",
    "aten.contiguous.default",
)
def _identity(imp: _Importer, node: Any, x: Any, *args: Any, **kwargs: Any) -> Value:
    return imp.tensor(x)


@_conv("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def _dropout(imp: _Importer, node: Any, x: Any, p: float = 0.5, train: bool | None = False, **kw: Any) -> Any:
    if train and p > 0:
        raise FrontendError(
            f"{imp.source}: node {node.name} ({_target_name(node.target)}) applies dropout p={p} in training mode; "
            "export the model in eval mode"
        )
    v = imp.tensor(x)
    if _target_name(node.target) == "aten.native_dropout.default":
        mask = _full_like(imp, v, True, DType.BOOL)
        return _Tuple((v, mask))
    return v


@_conv("operator.getitem")
def _getitem(imp: _Importer, node: Any, seq: Any, index: int) -> Any:
    vals = imp.env.get(seq)
    if isinstance(vals, tuple):
        return vals[index]
    raise FrontendError(f"{imp.source}: node {node.name}: getitem on {seq!r} which is not a tuple of tensors")


@_conv("aten._to_copy.default", "aten.to.dtype", "aten.type_as.default", "aten._to_dim_order_copy.default")
def _to_copy(imp: _Importer, node: Any, x: Any, *args: Any, **kwargs: Any) -> Value:
    v = imp.tensor(x)
    want = imp.out_dtype()
    return v if v.dtype == want else imp.emit("Cast", [v], {"to": want})


# --------------------------------------------------------------- elementwise
def _arith(onnx_op: str) -> Converter:
    def conv(imp: _Importer, node: Any, a: Any, b: Any, *, alpha: Any = 1, **kw: Any) -> Value:
        dt = imp.out_dtype()
        va = imp.operand(a, dt)
        neutral = {"Add": 0, "Sub": 0, "Mul": 1}.get(onnx_op)
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b * alpha == neutral:
            if tuple(imp._dim(d) for d in imp.fx.meta["val"].shape) == va.shape:
                return va  # x + 0, x - 0, x * 1
        if alpha != 1:
            vb = imp.emit("Mul", [imp.operand(b, dt), imp.scalar(alpha, dt)], part="alpha")
        else:
            vb = imp.operand(b, dt)
        return imp.emit(onnx_op, [va, vb])

    return conv


for _n, _o in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul")):
    _CONVERTERS[f"aten.{_n}.Tensor"] = _arith(_o)
    _CONVERTERS[f"aten.{_n}.Scalar"] = _arith(_o)
_CONVERTERS["aten.maximum.default"] = _arith("Max")
_CONVERTERS["aten.minimum.default"] = _arith("Min")


@_conv("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(imp: _Importer, node: Any, a: Any, b: Any, alpha: Any = 1) -> Value:
    dt = imp.out_dtype()
    va = imp.operand(a, dt)
    if alpha != 1:
        va = imp.emit("Mul", [va, imp.scalar(alpha, dt)], part="alpha")
    return imp.emit("Sub", [imp.operand(b, dt), va])


@_conv("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div(imp: _Importer, node: Any, a: Any, b: Any, *, rounding_mode: str | None = None) -> Value:
    dt = imp.out_dtype()
    if rounding_mode is None:
        return imp.emit("Div", [imp.operand(a, dt), imp.operand(b, dt)])
    # floor / trunc division: computed in float64 (exact for |x| < 2**53), then back to dt
    q = imp.emit("Div", [imp.operand(a, DType.FLOAT64), imp.operand(b, DType.FLOAT64)], part="div")
    if rounding_mode == "floor":
        q = imp.emit("Floor", [q], part="floor")
    elif rounding_mode == "trunc":
        q = imp.emit(
            "Mul",
            [imp.emit("Sign", [q], part="sign"), imp.emit("Floor", [imp.emit("Abs", [q], part="abs")], part="floor")],
            part="trunc",
        )
    else:
        raise FrontendError(f"{imp.source}: node {node.name}: unknown rounding_mode {rounding_mode!r}")
    return imp.emit("Cast", [q], {"to": dt}) if dt != DType.FLOAT64 else q


@_conv("aten.remainder.Scalar", "aten.remainder.Tensor", "aten.fmod.Scalar", "aten.fmod.Tensor")
def _remainder(imp: _Importer, node: Any, a: Any, b: Any) -> Value:
    """``remainder`` takes the divisor's sign (Python ``%``), ``fmod`` the dividend's (C ``fmod``)."""
    dt = imp.out_dtype()
    va, vb = imp.operand(a, dt), imp.operand(b, dt)
    if _target_name(node.target).startswith("aten.fmod"):
        return imp.emit("Mod", [va, vb], {"fmod": 1})
    if not dt.is_float:
        return imp.emit("Mod", [va, vb], {"fmod": 0})
    q = imp.emit("Floor", [imp.emit("Div", [va, vb], part="div")], part="floor")
    return imp.emit("Sub", [va, imp.emit("Mul", [q, vb], part="mul")])


@_conv("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(imp: _Importer, node: Any, a: Any, b: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Pow", [imp.operand(a, dt), imp.operand(b, dt)])


def _unary(onnx_op: str) -> Converter:
    def conv(imp: _Importer, node: Any, x: Any, *args: Any, **kw: Any) -> Value:
        dt = imp.out_dtype()
        return imp.emit(onnx_op, [imp.operand(x, dt)])

    return conv


for _n, _o in {
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "erf": "Erf",
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "abs": "Abs",
    "reciprocal": "Reciprocal",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "sin": "Sin",
    "cos": "Cos",
    "round": "Round",
}.items():
    _CONVERTERS[f"aten.{_n}.default"] = _unary(_o)


@_conv("aten.isnan.default", "aten.isinf.default")
def _isnan(imp: _Importer, node: Any, x: Any) -> Value:
    return imp.emit("IsNaN" if "isnan" in _target_name(node.target) else "IsInf", [imp.tensor(x)])


@_conv("aten.rsqrt.default")
def _rsqrt(imp: _Importer, node: Any, x: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Div", [imp.scalar(1, dt), imp.emit("Sqrt", [imp.operand(x, dt)], part="sqrt")])


@_conv("aten.silu.default")
def _silu(imp: _Importer, node: Any, x: Any) -> Value:
    v = imp.operand(x, imp.out_dtype())
    return imp.emit("Mul", [v, imp.emit("Sigmoid", [v], part="sigmoid")])


@_conv("aten.gelu.default")
def _gelu(imp: _Importer, node: Any, x: Any, *, approximate: str = "none") -> Value:
    if approximate not in ("none", "tanh"):
        raise FrontendError(f"{imp.source}: node {node.name}: gelu approximate={approximate!r} is not supported")
    return imp.emit("Gelu", [imp.tensor(x)], {"approximate": approximate})


@_conv("aten.clamp.default", "aten.clamp.Tensor", "aten.hardtanh.default")
def _clamp(imp: _Importer, node: Any, x: Any, lo: Any = None, hi: Any = None) -> Value:
    dt = imp.out_dtype()
    if _target_name(node.target) == "aten.hardtanh.default":
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    v = imp.operand(x, dt)
    if lo is not None:
        v = imp.emit("Max", [v, imp.operand(lo, dt)], part="min" if hi is not None else None)
    if hi is not None:
        v = imp.emit("Min", [v, imp.operand(hi, dt)])
    return v


def _compare(onnx_op: str, negate: bool = False) -> Converter:
    def conv(imp: _Importer, node: Any, a: Any, b: Any) -> Value:
        dt = imp.promoted(a, b)
        out = imp.emit(onnx_op, [imp.operand(a, dt), imp.operand(b, dt)], part="eq" if negate else None)
        return imp.emit("Not", [out]) if negate else out

    return conv


for _n, (_o, _neg) in {
    "eq": ("Equal", False),
    "ne": ("Equal", True),
    "lt": ("Less", False),
    "gt": ("Greater", False),
    "le": ("LessOrEqual", False),
    "ge": ("GreaterOrEqual", False),
}.items():
    _CONVERTERS[f"aten.{_n}.Tensor"] = _compare(_o, _neg)
    _CONVERTERS[f"aten.{_n}.Scalar"] = _compare(_o, _neg)


def _as_bool(imp: _Importer, arg: Any) -> Value:
    v = imp.tensor(arg)
    if v.dtype == DType.BOOL:
        return v
    return imp.emit(
        "Not", [imp.emit("Equal", [v, imp.scalar(0, v.dtype)], name=f"{v.name}_is_zero")], name=f"{v.name}_bool"
    )


@_conv("aten.logical_not.default", "aten.bitwise_not.default")
def _not(imp: _Importer, node: Any, x: Any) -> Value:
    v = imp.tensor(x)
    if _target_name(node.target) == "aten.bitwise_not.default" and v.dtype != DType.BOOL:
        raise FrontendError(f"{imp.source}: node {node.name}: bitwise_not is supported on bool tensors only")
    return imp.emit("Not", [_as_bool(imp, x)])


def _logical(onnx_op: str, bitwise: bool) -> Converter:
    def conv(imp: _Importer, node: Any, a: Any, b: Any) -> Value:
        if bitwise and imp.out_dtype() != DType.BOOL:
            raise FrontendError(f"{imp.source}: node {node.name}: bitwise ops are supported on bool tensors only")
        vb = _as_bool(imp, b) if isinstance(b, imp.torch.fx.Node) else imp.scalar(bool(b), DType.BOOL)
        return imp.emit(onnx_op, [_as_bool(imp, a), vb])

    return conv


for _n, _o in (("and", "And"), ("or", "Or"), ("xor", "Xor")):
    _CONVERTERS[f"aten.logical_{_n}.default"] = _logical(_o, False)
    _CONVERTERS[f"aten.bitwise_{_n}.Tensor"] = _logical(_o, True)
    _CONVERTERS[f"aten.bitwise_{_n}.Scalar"] = _logical(_o, True)


@_conv("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(imp: _Importer, node: Any, cond: Any, a: Any, b: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Where", [_as_bool(imp, cond), imp.operand(a, dt), imp.operand(b, dt)])


@_conv("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(imp: _Importer, node: Any, x: Any, mask: Any, value: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Where", [_as_bool(imp, mask), imp.operand(value, dt), imp.operand(x, dt)])


@_conv("aten.scalar_tensor.default")
def _scalar_tensor(imp: _Importer, node: Any, value: Any, **kw: Any) -> Value:
    return imp.operand(value, imp.out_dtype())


# ------------------------------------------------------------ creation ops
def _full_like(imp: _Importer, like: Value, value: Any, dtype: DType) -> Value:
    if like.type.is_static and (like.type.numel or 0) <= _SMALL_CONST:
        return imp.const(np.full(like.shape, value, dtype=dtype.np), "full")
    return imp.emit(
        "ConstantOfShape", [imp.emit("Shape", [like], part="shape")], {"value": np.full((1,), value, dtype=dtype.np)}
    )


def _full_of_shape(imp: _Importer, sizes: Sequence[Any], value: Any, dtype: DType) -> Value:
    exprs = [imp.sym(s) for s in sizes]
    if all(isinstance(e, int) for e in exprs) and math.prod(exprs) <= _SMALL_CONST:
        return imp.const(np.full(exprs, value, dtype=dtype.np), "full")
    shape = imp.shape_vec(sizes, allow_infer=False)
    return imp.emit("ConstantOfShape", [shape], {"value": np.full((1,), value, dtype=dtype.np)})


def _fill_value(imp: _Importer, value: Any) -> Any:
    s = imp.sym(value)
    if not isinstance(s, (bool, int, float)):
        raise FrontendError(f"{imp.source}: node {imp.fx.name}: a symbolic fill value is not supported")
    return s


@_conv("aten.full.default", "aten.new_full.default")
def _full(imp: _Importer, node: Any, *args: Any, **kw: Any) -> Value:
    if _target_name(node.target) == "aten.new_full.default":
        args = args[1:]
    sizes, value = args[0], args[1]
    return _full_of_shape(imp, sizes, _fill_value(imp, value), imp.out_dtype())


@_conv(
    "aten.zeros.default",
    "aten.ones.default",
    "aten.empty.memory_format",
    "aten.new_zeros.default",
    "aten.new_ones.default",
    "aten.new_empty.default",
)
def _zeros_ones(imp: _Importer, node: Any, *args: Any, **kw: Any) -> Value:
    name = _target_name(node.target)
    if name.startswith("aten.new_"):
        args = args[1:]
    value = 1 if "ones" in name else 0
    return _full_of_shape(imp, args[0], value, imp.out_dtype())


@_conv(
    "aten.full_like.default",
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.empty_like.default",
    "aten.fill.Scalar",
)
def _full_like_conv(imp: _Importer, node: Any, x: Any, value: Any = None, **kw: Any) -> Value:
    name = _target_name(node.target)
    if name in ("aten.full_like.default", "aten.fill.Scalar"):
        fill = _fill_value(imp, value)
    else:
        fill = 1 if "ones" in name else 0
    return _full_like(imp, imp.tensor(x), fill, imp.out_dtype())


@_conv("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(imp: _Importer, node: Any, *args: Any, **kw: Any) -> Value:
    name = _target_name(node.target)
    if name == "aten.arange.default":
        start, end, step = 0, args[0], 1
    elif name == "aten.arange.start":
        start, end, step = args[0], args[1], 1
    else:
        start, end = args[0], args[1]
        step = args[2] if len(args) > 2 else 1
    dt = imp.out_dtype()
    parts = [imp.sym(a) for a in (start, end, step)]
    if all(isinstance(p, (int, float)) for p in parts):
        return imp.const(np.arange(parts[0], parts[1], parts[2]).astype(dt.np), "arange")
    return imp.emit("Range", [imp.operand(a, dt) for a in (start, end, step)])


# ------------------------------------------------------------- shape ops
@_conv("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten._reshape_alias.default")
def _view(imp: _Importer, node: Any, x: Any, sizes: Sequence[Any], *rest: Any) -> Value:
    v = imp.tensor(x)
    out_shape = tuple(imp.fx.meta["val"].shape)
    if v.shape is not None and tuple(imp._dim(s) for s in out_shape) == v.shape and None not in v.shape:
        return v  # a view to the same shape
    attrs = {"allowzero": 1} if any(isinstance(s, int) and s == 0 for s in sizes) else {}
    return imp.emit("Reshape", [v, imp.shape_vec(sizes, allow_infer=True)], attrs)


def _transpose(imp: _Importer, v: Value, perm: list[int]) -> Value:
    if perm == list(range(len(perm))):
        return v
    if v.const is not None:  # case 9: fold into a transposed initializer
        folded = np.ascontiguousarray(np.transpose(v.const, perm))
        return imp.g.add_initializer(f"{v.name}_T", folded, unique=True)
    return imp.emit("Transpose", [v], {"perm": perm})


@_conv("aten.permute.default")
def _permute(imp: _Importer, node: Any, x: Any, dims: Sequence[int]) -> Value:
    rank = imp.rank(x)
    return _transpose(imp, imp.tensor(x), [d % rank if rank else 0 for d in dims])


@_conv("aten.transpose.int")
def _transpose_int(imp: _Importer, node: Any, x: Any, d0: int, d1: int) -> Value:
    rank = imp.rank(x)
    perm = list(range(rank))
    a, b = d0 % rank, d1 % rank
    perm[a], perm[b] = perm[b], perm[a]
    return _transpose(imp, imp.tensor(x), perm)


@_conv("aten.t.default", "aten.numpy_T.default")
def _t(imp: _Importer, node: Any, x: Any) -> Value:
    rank = imp.rank(x)
    return _transpose(imp, imp.tensor(x), list(range(rank))[::-1])


@_conv("aten.expand.default")
def _expand(imp: _Importer, node: Any, x: Any, sizes: Sequence[Any], *, implicit: bool = False) -> Value:
    v = imp.tensor(x)
    exprs = [imp.sym(s) for s in sizes]
    rank = len(exprs)
    in_shape = list(imp.meta(x).shape)
    offset = rank - len(in_shape)
    same = offset == 0 and all(
        (isinstance(e, int) and e == -1) or _expr_of(e) == _expr_of(in_shape[i]) for i, e in enumerate(exprs)
    )
    if same:
        return v
    ones = [1 if isinstance(e, int) and e == -1 else s for e, s in zip(exprs, sizes)]
    return imp.emit("Expand", [v, imp.shape_vec(ones, allow_infer=False)])


@_conv("aten.flip.default")
def _flip(imp: _Importer, node: Any, x: Any, dims: Sequence[int]) -> Value:
    """Reversed axes: ``Slice`` with step -1 from the end to before the start."""
    rank = imp.rank(x)
    axes = [d % rank for d in dims]
    n = len(axes)
    return imp.emit(
        "Slice",
        [imp.tensor(x), imp.ints([-1] * n), imp.ints([-INT64_MAX] * n), imp.ints(axes), imp.ints([-1] * n)],
    )


@_conv("aten.repeat.default")
def _repeat(imp: _Importer, node: Any, x: Any, repeats: Sequence[Any]) -> Value:
    v = imp.tensor(x)
    extra = len(repeats) - imp.rank(x)
    if extra > 0:
        v = imp.emit("Unsqueeze", [v, imp.ints(list(range(extra)))], part="expand_rank")
    return imp.emit("Tile", [v, imp.shape_vec(list(repeats), allow_infer=False)])


@_conv("aten.tril.default", "aten.triu.default")
def _trilu(imp: _Importer, node: Any, x: Any, diagonal: Any = 0) -> Value:
    upper = int("triu" in _target_name(node.target))
    k = imp.sym(diagonal)
    kv = imp.scalar(k, DType.INT64) if isinstance(k, int) else imp.sym_scalar(k)
    return imp.emit("Trilu", [imp.tensor(x), kv], {"upper": upper})


@_conv("aten.unsqueeze.default")
def _unsqueeze(imp: _Importer, node: Any, x: Any, dim: int) -> Value:
    rank = imp.rank(x) + 1
    return imp.emit("Unsqueeze", [imp.tensor(x), imp.ints([dim % rank])])


@_conv("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(imp: _Importer, node: Any, x: Any, dims: Any = None) -> Value:
    shape = list(imp.meta(x).shape)
    rank = len(shape)
    if dims is None:
        cand = list(range(rank))
    elif isinstance(dims, int):
        cand = [dims % max(rank, 1)]
    else:
        cand = [d % max(rank, 1) for d in dims]
    axes = [d for d in cand if d < rank and isinstance(shape[d], int) and shape[d] == 1]
    v = imp.tensor(x)
    if not axes:  # torch leaves non-1 dims alone
        return v
    return imp.emit("Squeeze", [v, imp.ints(axes)])


@_conv("aten.slice.Tensor")
def _slice(imp: _Importer, node: Any, x: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Value:
    v = imp.tensor(x)
    shape = list(imp.meta(x).shape)
    rank = len(shape)
    dim = dim % rank
    s = 0 if start is None else imp.sym(start)
    e = INT64_MAX if end is None else imp.sym(end)
    size = _expr_of(shape[dim])
    full_end = (isinstance(e, int) and (e >= INT64_MAX or (size.is_number and e >= int(size)))) or (
        not isinstance(e, int) and e == size
    )
    if s == 0 and step == 1 and full_end:
        return v
    starts = imp.sym_vec(s) if not isinstance(s, int) else imp.ints([s])
    ends = imp.sym_vec(e) if not isinstance(e, int) else imp.ints([min(e, INT64_MAX)])
    return imp.emit("Slice", [v, starts, ends, imp.ints([dim]), imp.ints([step])])


@_conv("aten.select.int")
def _select(imp: _Importer, node: Any, x: Any, dim: int, index: Any) -> Value:
    rank = imp.rank(x)
    idx = imp.sym(index)
    iv = imp.scalar(idx, DType.INT64) if isinstance(idx, int) else imp.sym_scalar(idx)
    return imp.emit("Gather", [imp.tensor(x), iv], {"axis": dim % rank})


@_conv("aten.embedding.default")
def _embedding(imp: _Importer, node: Any, weight: Any, indices: Any, *args: Any, **kw: Any) -> Value:
    return imp.emit("Gather", [imp.tensor(weight), imp.tensor(indices)], {"axis": 0})


@_conv("aten.index_select.default")
def _index_select(imp: _Importer, node: Any, x: Any, dim: int, index: Any) -> Value:
    return imp.emit("Gather", [imp.tensor(x), imp.tensor(index)], {"axis": dim % imp.rank(x)})


@_conv("aten.gather.default")
def _gather(imp: _Importer, node: Any, x: Any, dim: int, index: Any, *, sparse_grad: bool = False) -> Value:
    return imp.emit("GatherElements", [imp.tensor(x), imp.tensor(index)], {"axis": dim % imp.rank(x)})


@_conv("aten.index.Tensor")
def _index(imp: _Importer, node: Any, x: Any, indices: Sequence[Any]) -> Value:
    """``x[i0, i1, ...]`` (advanced indexing).

    One index tensor at position p becomes ``Gather(axis=p)``. Index tensors on
    all the leading dims become one flat index ``sum_j i_j * stride_j`` into
    ``x`` reshaped to ``[-1, rest...]``; negative indices are wrapped unless the
    index provably comes from a non-negative ``arange``.
    """
    v = imp.tensor(x)
    shape = list(imp.meta(x).shape)
    present = [i for i, ix in enumerate(indices) if ix is not None]
    for i in present:
        if imp.tensor(indices[i]).dtype == DType.BOOL:
            raise FrontendError(
                f"{imp.source}: node {node.name} (aten.index.Tensor): boolean mask indexing is not supported"
            )
    if len(present) == 1:
        return imp.emit("Gather", [v, imp.tensor(indices[present[0]])], {"axis": present[0]})
    k = len(indices)
    if present != list(range(k)):
        raise FrontendError(
            f"{imp.source}: node {node.name} (aten.index.Tensor): index tensors must cover the leading dims "
            f"without gaps; got positions {present}"
        )
    flat: Value | None = None
    for j in range(k):
        idx = imp.tensor(indices[j])
        if idx.dtype != DType.INT64:
            idx = imp.emit("Cast", [idx], {"to": DType.INT64}, part=f"index{j}")
        if not _nonnegative(indices[j]):
            size = _expr_of(shape[j])
            sv = imp.scalar(int(size), DType.INT64) if size.is_number else imp.sym_scalar(size)
            neg = imp.emit("Less", [idx, imp.scalar(0, DType.INT64)], part=f"index{j}_neg")
            idx = imp.emit("Where", [neg, imp.emit("Add", [idx, sv], part=f"index{j}_wrap"), idx], part=f"index{j}")
        stride = [_expr_of(s) for s in shape[j + 1 : k]]
        if stride:
            prod = math.prod(stride[1:], start=stride[0])
            sv = imp.scalar(int(prod), DType.INT64) if prod.is_number else imp.sym_scalar(prod)
            idx = imp.emit("Mul", [idx, sv], part=f"index{j}_offset")
        flat = idx if flat is None else imp.emit("Add", [flat, idx], part="flat_index")
    rest = [imp.sym(s) for s in shape[k:]]
    data = imp.emit("Reshape", [v, imp.shape_vec([-1, *rest], allow_infer=False)], part="flat_data")
    return imp.emit("Gather", [data, flat], {"axis": 0})


_NONNEG_PASSTHROUGH = {
    "aten.unsqueeze.default",
    "aten.view.default",
    "aten.reshape.default",
    "aten.expand.default",
    "aten.clone.default",
    "aten.slice.Tensor",
    "aten.permute.default",
    "aten.squeeze.dim",
    "aten._to_copy.default",
}


def _nonnegative(arg: Any, depth: int = 0) -> bool:
    """True when an fx index tensor is provably >= 0 (an arange from >= 0, reshaped or shifted up)."""
    if depth > 16 or not hasattr(arg, "target"):
        return False
    name = _target_name(arg.target)
    if name in _NONNEG_PASSTHROUGH:
        return _nonnegative(arg.args[0], depth + 1)
    if name.startswith("aten.arange."):
        start = 0 if name == "aten.arange.default" else arg.args[0]
        step = arg.args[2] if name == "aten.arange.start_step" and len(arg.args) > 2 else 1
        start_ok = not isinstance(start, (int, float)) or start >= 0  # a SymInt start is a size
        return start_ok and isinstance(step, (int, float)) and step > 0
    if name in ("aten.add.Tensor", "aten.add.Scalar"):
        a, b = arg.args[0], arg.args[1]
        ok_b = _nonnegative(b, depth + 1) if hasattr(b, "target") else isinstance(b, (int, float)) and b >= 0
        return _nonnegative(a, depth + 1) and ok_b and arg.kwargs.get("alpha", 1) == 1
    return False


@_conv("aten.cat.default", "aten.concat.default")
def _cat(imp: _Importer, node: Any, tensors: Sequence[Any], dim: int = 0) -> Value:
    rank = imp.rank(node)
    dt = imp.out_dtype()
    parts = []
    for t in tensors:
        m = imp.meta(t)
        if m.dim() == 1 and isinstance(m.shape[0], int) and m.shape[0] == 0 and rank != 1:
            continue  # torch skips legacy empty tensors
        parts.append(imp.operand(t, dt))
    if len(parts) == 1:
        return parts[0]
    return imp.emit("Concat", parts, {"axis": dim % rank})


@_conv("aten.split.Tensor", "aten.split_with_sizes.default", "aten.unbind.int")
def _split(imp: _Importer, node: Any, x: Any, split: Any = None, dim: int = 0) -> Any:
    name = _target_name(node.target)
    if name == "aten.unbind.int":
        dim = split if split is not None else 0
    rank = imp.rank(x)
    dim = dim % rank
    outs = imp.fx.meta["val"]
    sizes = [imp.sym(o.shape[dim]) if name != "aten.unbind.int" else 1 for o in outs]
    v = imp.tensor(x)
    if not all(isinstance(s, int) for s in sizes):
        raise FrontendError(f"{imp.source}: node {node.name} ({name}): split sizes must be static, got {sizes}")
    parts = imp.emit(
        "Split",
        [v, imp.ints(sizes)],
        {"axis": dim},
        n_out=len(sizes),
        part="parts" if name == "aten.unbind.int" else None,
    )
    if len(sizes) == 1:
        parts = _Tuple((parts,))
    if name == "aten.unbind.int":
        parts = _Tuple(imp.emit("Squeeze", [p, imp.ints([dim])]) for p in parts)
    return _Tuple(imp._finish(p, o) for p, o in zip(parts, outs))


# ------------------------------------------------------------- linear algebra
@_conv("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(imp: _Importer, node: Any, a: Any, b: Any) -> Value:
    return imp.emit("MatMul", [imp.tensor(a), imp.tensor(b)])


@_conv("aten.addmm.default", "aten.baddbmm.default")
def _addmm(imp: _Importer, node: Any, bias: Any, a: Any, b: Any, *, beta: Any = 1, alpha: Any = 1) -> Value:
    dt = imp.out_dtype()
    prod = imp.emit("MatMul", [imp.tensor(a), imp.tensor(b)], part="matmul")
    if alpha != 1:
        prod = imp.emit("Mul", [prod, imp.scalar(alpha, dt)], part="alpha")
    if beta == 0:
        return prod
    bv = imp.operand(bias, dt)
    if beta != 1:
        bv = imp.emit("Mul", [bv, imp.scalar(beta, dt)], part="beta")
    return imp.emit("Add", [prod, bv])


@_conv("aten.linear.default")
def _linear(imp: _Importer, node: Any, x: Any, w: Any, b: Any = None) -> Value:
    wt = _transpose(imp, imp.tensor(w), [1, 0])
    out = imp.emit("MatMul", [imp.tensor(x), wt], part="matmul" if b is not None else None)
    return out if b is None else imp.emit("Add", [out, imp.tensor(b)])


# ------------------------------------------------------------- normalization
@_conv("aten.native_layer_norm.default", "aten.layer_norm.default")
def _layer_norm(
    imp: _Importer,
    node: Any,
    x: Any,
    normalized_shape: Sequence[int],
    w: Any = None,
    b: Any = None,
    eps: float = 1e-5,
    *rest: Any,
) -> Any:
    v = imp.tensor(x)
    dt = v.dtype
    ns = [int(s) for s in normalized_shape]
    scale = imp.tensor(w) if w is not None else imp.const(np.ones(ns, dtype=dt.np), "ln_scale")
    bias = imp.tensor(b) if b is not None else None
    attrs = {"axis": -len(ns), "epsilon": float(eps)}
    native = _target_name(node.target) == "aten.native_layer_norm.default"
    if not native:
        return imp.emit("LayerNormalization", [v, scale, bias], attrs)
    needed = 1 + max((u.args[1] for u in node.users if u.args and isinstance(u.args[1], int)), default=0)
    if needed == 1:
        return _Tuple((imp.emit("LayerNormalization", [v, scale, bias], attrs), None, None))
    outs = imp.emit("LayerNormalization", [v, scale, bias], attrs, n_out=3)
    return _Tuple(imp._finish(o, m) for o, m in zip(outs, imp.fx.meta["val"]))


def _softmax_like(onnx_op: str) -> Converter:
    """(Log)softmax over ``dim``, in the output dtype (a ``dtype=`` argument casts the input first)."""

    def conv(imp: _Importer, node: Any, x: Any, dim: int, *rest: Any, **kw: Any) -> Value:
        v = imp.tensor(x)
        dt = imp.out_dtype()
        if v.dtype != dt:
            v = imp.emit("Cast", [v], {"to": dt}, part="cast")
        return imp.emit(onnx_op, [v], {"axis": dim % imp.rank(x)})

    return conv


_conv("aten._softmax.default", "aten.softmax.int", "aten._safe_softmax.default")(_softmax_like("Softmax"))
_conv("aten._log_softmax.default", "aten.log_softmax.int")(_softmax_like("LogSoftmax"))


# ------------------------------------------------------------- reductions
def _reduce(onnx_op: str) -> Converter:
    def conv(imp: _Importer, node: Any, x: Any, dims: Any = None, keepdim: bool = False, **kw: Any) -> Value:
        rank = imp.rank(x)
        dt = imp.out_dtype()
        v = imp.tensor(x)
        if onnx_op in ("ReduceSum", "ReduceMean") and v.dtype != dt:
            v = imp.emit("Cast", [v], {"to": dt}, part="cast")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            axes = list(range(rank))
        elif isinstance(dims, int):
            axes = [dims % max(rank, 1)]
        else:
            axes = [d % max(rank, 1) for d in dims]
        if not axes:  # a 0-d tensor: nothing to reduce
            return v
        return imp.emit(onnx_op, [v, imp.ints(axes)], {"keepdims": int(bool(keepdim))})

    return conv


_CONVERTERS["aten.sum.dim_IntList"] = _reduce("ReduceSum")
_CONVERTERS["aten.sum.default"] = _reduce("ReduceSum")
_CONVERTERS["aten.mean.dim"] = _reduce("ReduceMean")
_CONVERTERS["aten.mean.default"] = _reduce("ReduceMean")
_CONVERTERS["aten.amax.default"] = _reduce("ReduceMax")
_CONVERTERS["aten.amin.default"] = _reduce("ReduceMin")


@_conv("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def _any_all(imp: _Importer, node: Any, x: Any, dims: Any = None, keepdim: bool = False) -> Value:
    """``any``/``all`` as ReduceMax/ReduceMin over the 0/1 values of the bool tensor."""
    is_any = _target_name(node.target).startswith("aten.any")
    rank = imp.rank(x)
    flags = imp.emit("Cast", [_as_bool(imp, x)], {"to": DType.INT64}, part="int")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        axes = list(range(rank))
    else:
        axes = [d % max(rank, 1) for d in ([dims] if isinstance(dims, int) else dims)]
    if not axes:
        return imp.emit("Cast", [flags], {"to": DType.BOOL})
    red = imp.emit(
        "ReduceMax" if is_any else "ReduceMin", [flags, imp.ints(axes)], {"keepdims": int(bool(keepdim))}, part="reduce"
    )
    return imp.emit("Cast", [red], {"to": DType.BOOL})


@_conv("aten.max.dim", "aten.min.dim")
def _max_dim(imp: _Importer, node: Any, x: Any, dim: int, keepdim: bool = False) -> Any:
    """``(values, indices)`` as ReduceMax/ReduceMin plus ArgMax/ArgMin (first occurrence, like torch)."""
    is_max = _target_name(node.target) == "aten.max.dim"
    axis = dim % max(imp.rank(x), 1)
    v = imp.tensor(x)
    kd = int(bool(keepdim))
    vals = imp.emit("ReduceMax" if is_max else "ReduceMin", [v, imp.ints([axis])], {"keepdims": kd}, part="values")
    idx = imp.emit("ArgMax" if is_max else "ArgMin", [v], {"axis": axis, "keepdims": kd}, part="indices")
    metas = imp.fx.meta["val"]
    return _Tuple((imp._finish(vals, metas[0]), imp._finish(idx, metas[1])))


@_conv("aten.topk.default")
def _topk(imp: _Importer, node: Any, x: Any, k: Any, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
    kk = imp.sym(k)
    kv = imp.ints([kk]) if isinstance(kk, int) else imp.sym_vec(kk)
    attrs = {"axis": dim % max(imp.rank(x), 1), "largest": int(largest), "sorted": int(sorted)}
    outs = imp.emit("TopK", [imp.tensor(x), kv], attrs, n_out=2)
    return _Tuple(imp._finish(o, m) for o, m in zip(outs, imp.fx.meta["val"]))


@_conv("aten.cumsum.default")
def _cumsum(imp: _Importer, node: Any, x: Any, dim: int, **kw: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("CumSum", [imp.operand(x, dt), imp.scalar(dim % max(imp.rank(x), 1), DType.INT64)])


@_conv("aten.argmax.default", "aten.argmin.default")
def _argmax(imp: _Importer, node: Any, x: Any, dim: Any = None, keepdim: bool = False) -> Value:
    op = "ArgMax" if "argmax" in _target_name(node.target) else "ArgMin"
    v = imp.tensor(x)
    if dim is None:
        v = imp.emit("Reshape", [v, imp.ints([-1])], part="flat")
        return imp.emit(op, [v], {"axis": 0, "keepdims": 0})
    return imp.emit(op, [v], {"axis": dim % imp.rank(x), "keepdims": int(bool(keepdim))})


# ------------------------------------------------------------- attention
@_conv("aten.scaled_dot_product_attention.default")
def _sdpa(
    imp: _Importer,
    node: Any,
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Value:
    if dropout_p:
        raise FrontendError(
            f"{imp.source}: node {node.name} (scaled_dot_product_attention) has dropout_p={dropout_p}; "
            "export the model in eval mode"
        )
    qv, kv, vv = imp.tensor(q), imp.tensor(k), imp.tensor(v)
    if enable_gqa and imp.meta(q).shape[-3] != imp.meta(k).shape[-3]:
        raise FrontendError(f"{imp.source}: node {node.name}: grouped-query attention (enable_gqa) is not supported")
    inputs = [qv, kv, vv]
    if attn_mask is not None:
        m = imp.tensor(attn_mask)
        if m.dtype != DType.BOOL and m.dtype != qv.dtype:
            m = imp.emit("Cast", [m], {"to": qv.dtype}, part="mask")
        inputs.append(m)
    attrs = {"scale": float(scale) if scale else 0.0, "is_causal": int(bool(is_causal))}
    return imp.emit("ScaledDotProductAttention", inputs, attrs)


@_conv("aten._scaled_dot_product_flash_attention_for_cpu.default")
def _sdpa_cpu(
    imp: _Importer,
    node: Any,
    q: Any,
    k: Any,
    v: Any,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    attn_mask: Any = None,
    scale: float | None = None,
) -> Any:
    out = _sdpa(imp, node, q, k, v, attn_mask, dropout_p, is_causal, scale=scale)
    out = imp._finish(out, imp.fx.meta["val"][0])
    return _Tuple((out, None))
