"""The torch.export importer: walks an ``ExportedProgram``'s fx graph and emits IR.

``Importer(ep, source).run()`` implements cases 3-7 and 10 of
``accelopt.frontends.torch_export`` (parameters as initializers, inputs and
their symbolic dims, symbolic sizes rebuilt from ``Shape``, outputs named from
the output pytree, types refined from torch's metadata, unsupported ops listed
at once). Each ``call_function`` node goes to its converter in
``accelopt.frontends.torch_ops``; converters use the emission helpers here
(``emit``, ``const``, ``tensor``, ``operand``, ``sym``, ``shape_vec``...).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import accelopt.frontends.torch_ops  # noqa: F401  (fills the converter table)
from accelopt.errors import FrontendError, VerifyError
from accelopt.frontends.torch_ops.base import (
    CONVERTERS,
    IGNORED,
    SMALL_CONST,
    SymArg,
    ValueTuple,
    expr_of,
    is_constant_input,
    is_symbolic_scalar,
    target_name,
    to_numpy,
    torch_dtype,
    torch_module,
    unsupported_ops,
)
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Value
from accelopt.ir.types import Dim, TensorType

log = logging.getLogger(__name__)


class Importer:
    def __init__(self, ep: Any, source: str) -> None:
        self.torch = torch_module()
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
        missing = unsupported_ops(self.ep)
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
        name = target_name(node.target)
        if name in IGNORED:
            return
        if name not in CONVERTERS and is_symbolic_scalar(node):
            self.env[node] = SymArg(self._sym_of(node.meta["val"]))
            return
        fn = CONVERTERS[name]
        try:
            result = fn(self, node, *node.args, **node.kwargs)
        except FrontendError:
            raise
        except Exception as e:
            raise FrontendError(
                f"{self.source}: node {node.name} ({name}) could not be converted: {type(e).__name__}: {e}"
            ) from e
        if isinstance(result, Value):
            result = self.finish(result, node.meta.get("val"))
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
                expr = expr_of(size)
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
            if kind == "USER_INPUT" and s is not None and is_constant_input(s):
                self.env[n] = s.arg.value  # a python constant (use_cache=False): torch specialized on it
            elif kind == "USER_INPUT":
                val = n.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise FrontendError(
                        f"{self.source}: input {n.name} is a {type(val).__name__}, only tensor inputs are supported"
                    )
                v = self.g.add_input(n.name, self._type_of(val, n.name))
                for d, size in enumerate(val.shape):
                    expr = expr_of(size)
                    if expr is not None and getattr(expr, "is_Symbol", False):
                        self.sym_src.setdefault(expr, (v, d))
                self.env[n] = v
            elif s is not None and kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                t = self._state_tensor(s)
                if isinstance(t, torch.Tensor):
                    self.env[n] = self.g.add_initializer(s.target, to_numpy(t), unique=True)
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
        dtype = torch_dtype(val.dtype, where)
        return TensorType(dtype, tuple(self.dim_of(s) for s in val.shape))

    def dim_of(self, size: Any) -> Dim:
        if isinstance(size, int):
            return size
        expr = expr_of(size)
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
        expr = expr_of(val)
        if expr is None:
            raise FrontendError(f"{self.source}: node {self.fx.name}: cannot read symbolic value {val!r}")
        if expr.is_number:
            return int(expr) if expr.is_integer else float(expr)
        return expr

    def finish(self, v: Value, val: Any) -> Value:
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
                f"{self.source}: node {self.fx.name} ({target_name(self.fx.target)}): "
                f"mapped to rank {len(v.shape)} {v.type}, torch says {want}"
            )
        merged = []
        for a, b in zip(v.shape, want.shape or ()):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise FrontendError(
                    f"{self.source}: node {self.fx.name} ({target_name(self.fx.target)}): "
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
        return node.output if n_out == 1 else ValueTuple(node.outputs)

    def const(self, array: Any, hint: str = "const") -> Value:
        arr = np.asarray(array)
        key = None
        if arr.size <= SMALL_CONST:
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
            if isinstance(v, SymArg):
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
        return torch_dtype(self.fx.meta["val"].dtype, self.fx.name)

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
        return torch_dtype(torch.result_type(pa, pb), self.fx.name)


def _graph_name(source: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", source.strip("<>").split("/")[-1]) or "main"
    return base[:64]


def _output_names(ep: Any, n: int) -> list[str]:
    """Output names from the program's output pytree (case 6)."""
    torch = torch_module()
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
