"""Lowering: an IR graph -> Relax functions in one ``IRModule`` (shared by the cpu, gpu and fpga host targets).

The lowering is a table from op name to a function that emits Relax
(``@lower("MatMul")`` in ``ops_*.py``); the heavy ops go through a
``Kernels`` object (``kernels.py``) that a target may subclass. How a graph
is lowered (``build_module``):

1. One Relax function per *bucket* (a static binding of the graph's symbolic
   dims: batch and sequence), all in one module, named by the target
   (``b1_s128``...). Every shape inside a function is static, so shape
   arithmetic is plain Python.
2. Graph inputs become the function's first parameters, in graph order, with
   the IR's dtypes (int64 stays int64 on these targets).
3. Values known at lowering time stay numpy arrays: initializers, ``Shape``
   results and everything computed from them. A node whose inputs are all
   static is folded with the op's numpy reference kernel from the registry
   (unless the fold would create more than ``FOLD_GROWTH_ELEMENTS`` new
   elements, e.g. an ``Expand`` of a constant; then it is emitted).
4. A static array that reaches run-time code enters the function as a
   constant when small (fewer than ``MIN_PARAM_NUMEL`` elements) and as a
   *parameter* otherwise (``LowerCtx.param``): parameters follow the graph
   inputs in the function's signature and are saved outside the compiled
   library (``LoweredModule.params``). Parameters are shared by name across
   the buckets' functions; kernels add their own (pre-packed weights).
5. After each node the result is checked against the IR: the dtype is
   coerced to the IR's, static dims are compared (a mismatch is a lowering
   bug: ``TargetError`` naming the node).
6. An op without a lowering, or one that cannot be lowered with these inputs
   (``Unlowerable``: e.g. ``NonZero`` of run-time data, whose output size
   depends on the data), is collected, and ``build_module`` raises ONE
   ``TargetError`` naming every such node and op. Nothing runs elsewhere.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import tvm
from tvm import relax

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op

if TYPE_CHECKING:
    from accelopt.targets.relax.kernels import Kernels

log = logging.getLogger(__name__)

#: static arrays with fewer elements than this enter a function as constants; others as parameters
MIN_PARAM_NUMEL = 64
#: folding never creates more elements than its inputs have plus this many
FOLD_GROWTH_ELEMENTS = 1 << 18

#: what a lowering sees for an input: a numpy array (static), a Relax expression (run time), or None (omitted)
Operand = Any
LoweringFn = Callable[["LowerCtx", Node, list[Any], dict[str, Any]], Sequence[Any]]

BF16 = np.dtype(ml_dtypes.bfloat16)


class Unlowerable(Exception):
    """Raised by a lowering function: this node cannot be lowered (the reason is the message).

    ``build_module`` collects these and reports every such node at once (case 6).
    """


# --------------------------------------------------------------- the table
@dataclass(frozen=True)
class Lowering:
    op: str
    fn: LoweringFn
    #: fold with the numpy kernel when every input is static (case 3)
    fold: bool = True


_LOWERINGS: dict[str, Lowering] = {}


def lower(*ops: str, fold: bool = True) -> Callable[[LoweringFn], LoweringFn]:
    """Register ``fn`` as the Relax lowering of each op in ``ops``."""

    def deco(fn: LoweringFn) -> LoweringFn:
        for op in ops:
            if op in _LOWERINGS:
                raise ValueError(f"op {op!r} already has a Relax lowering")
            _LOWERINGS[op] = Lowering(op, fn, fold)
        return fn

    return deco


def _ensure_loaded() -> None:
    import accelopt.targets.relax.ops_elementwise  # noqa: F401
    import accelopt.targets.relax.ops_fused  # noqa: F401
    import accelopt.targets.relax.ops_index  # noqa: F401
    import accelopt.targets.relax.ops_matmul  # noqa: F401
    import accelopt.targets.relax.ops_quant  # noqa: F401
    import accelopt.targets.relax.ops_reduce  # noqa: F401
    import accelopt.targets.relax.ops_shape  # noqa: F401


def lowering_for(op: str) -> Lowering | None:
    _ensure_loaded()
    return _LOWERINGS.get(op)


def lowered_ops() -> set[str]:
    """Names of every op with a Relax lowering."""
    _ensure_loaded()
    return set(_LOWERINGS)


def unlowered_ops(ops: Iterable[str]) -> list[str]:
    """The ops among ``ops`` that have no Relax lowering, sorted."""
    _ensure_loaded()
    return sorted({op for op in ops if op not in _LOWERINGS})


# ------------------------------------------------------------------ dtypes
def relax_dtype(dt: DType | np.dtype | str) -> str:
    """The Relax dtype string of an IR or numpy dtype."""
    if isinstance(dt, DType):
        return dt.value
    d = np.dtype(dt)
    return "bfloat16" if d == BF16 else str(d)


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of a Relax dtype string (bfloat16 through ml_dtypes)."""
    return BF16 if name == "bfloat16" else np.dtype(name)


# -------------------------------------------------------------- parameters
@dataclass
class ParamStore:
    """Parameters shared by every function of one module: name -> array, in order of first use (case 4)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, array: np.ndarray, taken: Iterable[str] = ()) -> str:
        """Store ``array`` under ``name``; returns the name used.

        The same array under the same name is stored once (the buckets'
        functions share it). A name already holding a different array (a
        folded value that depends on the bucket's sequence length), or one in
        ``taken``, gets a suffix: ``name#2``, ``name#3``...
        """
        candidate, i = name, 1
        while True:
            have = self.arrays.get(candidate)
            if have is None and candidate not in taken:
                self.arrays[candidate] = array
                return candidate
            if have is not None and candidate not in taken and _same(have, array):
                return candidate
            i += 1
            candidate = f"{name}#{i}"

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b)))


_NAME_RE = re.compile(r"[^A-Za-z0-9_]")


def var_name(name: str) -> str:
    """A Relax-friendly name hint for an IR name."""
    s = _NAME_RE.sub("_", name).strip("_") or "v"
    return s if not s[0].isdigit() else f"v{s}"


# ---------------------------------------------------------------- context
class LowerCtx:
    """What a lowering function (and a ``Kernels`` method) sees while one Relax function is built.

    - ``bb``: the ``relax.BlockBuilder`` (inside a dataflow block); ``emit`` /
      ``emit_te`` add bindings;
    - ``param(name, array)``: a function parameter holding ``array`` (saved
      outside the library); ``expr(x)``: any operand as a Relax expression;
    - ``static(node, i, x)``: an input that must be known at lowering time;
    - ``shape(x)`` / ``dtype(x)``: static shape and dtype of an operand;
    - ``node``: the node being lowered (for names in errors), ``graph``,
      ``dims`` (the bucket's symbol sizes), ``kernels``, ``notes``.
    """

    def __init__(
        self,
        bb: relax.BlockBuilder,
        graph: Graph,
        store: ParamStore,
        kernels: Kernels,
        dims: Mapping[str, int],
    ) -> None:
        self.bb = bb
        self.graph = graph
        self.store = store
        self.kernels = kernels
        self.dims = dict(dims)
        self.node: Node | None = None
        self.notes: list[str] = []
        #: value id -> lowered value (numpy when static)
        self.env: dict[int, Any] = {}
        #: parameter name -> its Var in this function, in order of first use
        self.param_vars: dict[str, relax.Var] = {}

    # -- values
    @staticmethod
    def is_static(x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def value(self, v: Value | None) -> Any:
        """The lowered value of an IR value already lowered (``None`` for an omitted input)."""
        return None if v is None else self.env.get(id(v))

    def key(self, node: Node, index: int) -> str:
        """A stable parameter name for input ``index`` of ``node``: the IR value's name."""
        v = node.inputs[index]
        return v.name if v is not None else f"{node.name}:{index}"

    def param(self, name: str, array: np.ndarray) -> relax.Var:
        """A function parameter holding ``array`` (shared by name across the module's functions)."""
        arr = np.ascontiguousarray(array)
        var = self.param_vars.get(name)
        if var is not None and _same(self.store.arrays[name], arr):
            return var
        name = self.store.add(name, arr, taken=self.param_vars)
        var = self.param_vars.get(name)
        if var is None:
            ty = relax.TensorType(list(arr.shape), relax_dtype(arr.dtype))
            var = relax.Var(f"p_{var_name(name)}", ty)
            self.param_vars[name] = var
        return var

    def const(self, array: Any, dtype: str | None = None) -> relax.Expr:
        """A constant baked into the function (small arrays: shapes, scalars, masks)."""
        arr = np.asarray(array)
        want = dtype or relax_dtype(arr.dtype)
        if arr.dtype == BF16 or want == "bfloat16":
            return relax.op.astype(relax.const(arr.astype(np.float32), "float32"), want)
        if arr.dtype == np.bool_ or want == "bool":
            return relax.const(arr.astype(np.bool_), "bool")
        return relax.const(arr.astype(np_dtype(want), copy=False), want)

    def expr(self, x: Any, dtype: str | None = None, *, name: str = "") -> relax.Expr:
        """``x`` as a Relax expression: a static array becomes a constant or a parameter (case 4)."""
        if x is None:
            raise TargetError(f"{self._where()}: an omitted input is used")
        if not self.is_static(x):
            if dtype is not None and self.dtype(x) != dtype:
                return self.emit(relax.op.astype(x, dtype))
            return x
        arr = np.asarray(x)
        name = name or self._input_name(x)
        if dtype is not None and relax_dtype(arr.dtype) != dtype:
            arr = arr.astype(np_dtype(dtype))
            name = f"{name}@{dtype}" if name else ""
        if arr.size >= MIN_PARAM_NUMEL:
            return self.param(name or self._fresh_param_name(arr), arr)
        return self.const(arr)

    def _input_name(self, x: Any) -> str:
        """The IR value name of ``x`` when it is one of the current node's static inputs."""
        if self.node is None:
            return ""
        for v in self.node.inputs:
            if v is not None and self.env.get(id(v)) is x:
                return v.name
        return ""

    def _fresh_param_name(self, arr: np.ndarray) -> str:
        return f"{self.node.name if self.node is not None else 'const'}.const"

    def operand(self, node: Node, i: int, x: Any, dtype: str | None = None) -> relax.Expr:
        """Input ``i`` of ``node`` as a Relax expression; a large static one is a parameter named after its value."""
        return self.expr(x, dtype, name=self.key(node, i) if self.is_static(x) else "")

    def static(self, node: Node, i: int, x: Any, what: str = "") -> np.ndarray:
        """Input ``i`` as a numpy array; ``Unlowerable`` if it is only known at run time."""
        if x is None:
            raise TargetError(f"node {node.name} ({node.op}): input {i} {what} is missing")
        if not self.is_static(x):
            raise Unlowerable(
                f"input {i} {what} must be known at compile time (static shapes per bucket), "
                "but it is computed from the model inputs"
            )
        return np.asarray(x)

    @staticmethod
    def shape(x: Any) -> tuple[int, ...]:
        """The static shape of an operand."""
        if isinstance(x, (np.ndarray, np.generic)):
            return tuple(int(d) for d in np.shape(x))
        ty = x.ty if hasattr(x, "ty") else x.struct_info
        shape = ty.shape
        if shape is None:
            raise TargetError(f"Relax value {x} has no static shape")
        return tuple(int(d) for d in shape.values)

    @staticmethod
    def dtype(x: Any) -> str:
        """The dtype of an operand as a Relax dtype string."""
        if isinstance(x, (np.ndarray, np.generic)):
            return relax_dtype(np.asarray(x).dtype)
        ty = x.ty if hasattr(x, "ty") else x.struct_info
        return str(ty.dtype)

    def ndim(self, x: Any) -> int:
        return len(self.shape(x))

    # -- emitting
    def emit(self, expr: relax.Expr, name: str = "") -> relax.Var:
        return self.bb.emit(expr, name_hint=var_name(name) if name else "")

    def emit_te(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> relax.Var:
        """``bb.emit_te``: a TE compute (topi or hand-written) as one PrimFunc called from Relax."""
        return self.bb.emit_te(fn, *args, **kwargs)

    def astype(self, x: Any, dtype: str) -> Any:
        """``x`` in ``dtype`` (numpy stays numpy)."""
        if self.is_static(x):
            return np.asarray(x).astype(np_dtype(dtype))
        return x if self.dtype(x) == dtype else self.emit(relax.op.astype(x, dtype))

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def _where(self) -> str:
        return f"node {self.node.name} ({self.node.op})" if self.node is not None else "lowering"


# ------------------------------------------------------------- the module
@dataclass(frozen=True)
class Bucket:
    """One compiled function: its name and the sizes of the graph's symbolic dims."""

    name: str
    dims: Mapping[str, int]


@dataclass
class LoweredModule:
    """The Relax module of a graph: one function per bucket, and the parameters they take after the inputs."""

    mod: tvm.IRModule
    params: dict[str, np.ndarray]
    #: function name -> parameter names, in signature order (after the graph inputs)
    signatures: dict[str, list[str]]
    notes: list[str]
    #: function name -> {input name: static shape}, {output name: static shape}
    input_shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    output_shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def parameter_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.params.values()))


def symbol_key(v: Value, axis: int, d: Any) -> str:
    """The name a dim binds under: its symbol, or ``?<input>:<axis>`` for an unnamed one."""
    return d if isinstance(d, str) else f"?{v.name}:{axis}"


def bind_shape(v: Value, dims: Mapping[str, int]) -> list[int]:
    """``v``'s shape with symbols replaced by ``dims``."""
    if v.shape is None:
        raise TargetError(f"input %{v.name} has unknown rank; the Relax lowering needs static shapes")
    out = []
    for axis, d in enumerate(v.shape):
        if isinstance(d, int):
            out.append(d)
            continue
        key = symbol_key(v, axis, d)
        if key not in dims:
            raise TargetError(f"input %{v.name}: dimension {axis} ({d or 'unknown'}) has no size in this bucket")
        out.append(int(dims[key]))
    return out


def build_module(graph: Graph, buckets: Sequence[Bucket], kernels: Kernels | None = None) -> LoweredModule:
    """Lower ``graph`` once per bucket into one ``IRModule`` (cases 1-6); ``TargetError`` lists every problem."""
    return build_functions([(b.name, graph, b.dims) for b in buckets], kernels)


def build_functions(
    functions: Sequence[tuple[str, Graph, Mapping[str, int]]], kernels: Kernels | None = None
) -> LoweredModule:
    """Lower each ``(function name, graph, dims)`` into one ``IRModule`` with shared parameters.

    ``build_module`` is the one-graph form (one function per bucket); tests
    lower many small graphs at once to compile them together.
    """
    from accelopt.targets.relax.kernels import Kernels

    kernels = kernels if kernels is not None else Kernels()
    problems = []
    for _, graph, _ in functions:
        missing = unlowered_ops(n.op for n in graph.nodes)
        if missing:
            nodes = [f"{n.name} ({n.op})" for n in graph.nodes if n.op in missing]
            problems.append(
                f"graph {graph.name!r}: no Relax lowering for {len(missing)} op(s): {', '.join(missing)}; "
                f"node(s): {', '.join(nodes[:20])}{' ...' if len(nodes) > 20 else ''}"
            )
    if problems:
        raise TargetError("; ".join(dict.fromkeys(problems)))
    bb = relax.BlockBuilder()
    store = ParamStore()
    signatures: dict[str, list[str]] = {}
    notes: list[str] = []
    in_shapes: dict[str, dict[str, list[int]]] = {}
    out_shapes: dict[str, dict[str, list[int]]] = {}
    for name, graph, dims in functions:
        inputs = [
            relax.Var(var_name(v.name), relax.TensorType(bind_shape(v, dims), relax_dtype(v.dtype)))
            for v in graph.inputs
        ]
        ctx = LowerCtx(bb, graph, store, kernels, dims)
        with bb.function(name):
            with bb.dataflow():
                outs = _lower_nodes(ctx, graph, inputs)
                result = bb.emit_output(relax.Tuple(outs))
            bb.emit_func_output(result, params=inputs + list(ctx.param_vars.values()))
        signatures[name] = list(ctx.param_vars)
        in_shapes[name] = {v.name: list(LowerCtx.shape(x)) for v, x in zip(graph.inputs, inputs)}
        out_shapes[name] = {v.name: list(LowerCtx.shape(x)) for v, x in zip(graph.outputs, outs)}
        notes.extend(n for n in ctx.notes if n not in notes)
    mod = bb.get()
    return LoweredModule(mod, dict(store.arrays), signatures, notes, in_shapes, out_shapes)


def _lower_nodes(ctx: LowerCtx, graph: Graph, inputs: Sequence[relax.Var]) -> list[relax.Expr]:
    """Cases 3-6 for one function; returns the graph outputs as Relax expressions."""
    env = ctx.env
    for v, x in zip(graph.inputs, inputs):
        env[id(v)] = x
    for v in graph.initializers.values():
        env[id(v)] = v.const
    problems: list[str] = []
    poisoned: set[int] = set()
    for node in graph.nodes:
        ins = [None if v is None else env.get(id(v)) for v in node.inputs]
        if any(v is not None and id(v) in poisoned for v in node.inputs):
            poisoned.update(id(o) for o in node.outputs)
            continue
        low = _LOWERINGS[node.op]
        opdef = get_op(node.op)
        attrs = opdef.full_attrs(node.attrs)
        ctx.node = node
        try:
            outs = _fold(node, opdef, ins, attrs) if low.fold else None
            if outs is None:
                outs = list(low.fn(ctx, node, ins, attrs))
        except Unlowerable as e:
            problems.append(f"{node.name} ({node.op}): {e}")
            poisoned.update(id(o) for o in node.outputs)
            continue
        except TargetError:
            raise
        except Exception as e:
            shapes = ", ".join(_describe(ctx, x) for x in ins)
            raise TargetError(
                f"node {node.name} ({node.op}): Relax lowering failed on ({shapes}): {type(e).__name__}: {e}"
            ) from e
        if len(outs) < len(node.outputs):
            raise TargetError(f"node {node.name} ({node.op}): lowering returned {len(outs)} outputs")
        for v, x in zip(node.outputs, outs):
            env[id(v)] = _check(ctx, node, v, x)
    ctx.node = None
    if problems:
        raise TargetError(
            f"graph {graph.name!r}: {len(problems)} node(s) cannot be lowered to Relax: " + "; ".join(problems)
        )
    results = []
    for v in graph.outputs:
        x = env.get(id(v))
        if x is None:
            raise TargetError(f"graph output %{v.name} was not computed")
        results.append(ctx.expr(x, name=v.name) if ctx.is_static(x) else x)
    return results


def _fold(node: Node, opdef: Any, ins: list[Any], attrs: dict[str, Any]) -> list[Any] | None:
    """Case 3: the node's outputs computed now, when every input is static and the fold stays small."""
    if not all(x is None or isinstance(x, (np.ndarray, np.generic)) for x in ins):
        return None
    try:
        outs = [np.asarray(o) for o in opdef.kernel(ins, attrs, len(node.outputs))]
    except Exception as e:
        raise TargetError(f"node {node.name} ({node.op}): folding static inputs failed: {e}") from e
    grown = sum(o.size for o in outs) - sum(np.size(a) for a in ins if a is not None)
    if grown > FOLD_GROWTH_ELEMENTS:
        return None
    return outs


def _describe(ctx: LowerCtx, x: Any) -> str:
    if x is None:
        return "_"
    try:
        kind = "const " if ctx.is_static(x) else ""
        return f"{kind}{ctx.dtype(x)}{list(ctx.shape(x))}"
    except Exception:  # pragma: no cover - a value without static type info
        return type(x).__name__


def _check(ctx: LowerCtx, node: Node, v: Value, x: Any) -> Any:
    """Case 5: coerce the dtype to the IR's and compare static dims."""
    if x is None:
        return None
    want = relax_dtype(v.dtype)
    if ctx.is_static(x):
        arr = np.asarray(x)
        out: Any = arr if arr.dtype == v.dtype.np else arr.astype(v.dtype.np)
    else:
        out = x if ctx.dtype(x) == want else ctx.emit(relax.op.astype(x, want))
    if v.shape is not None:
        shape = ctx.shape(out)
        ok = len(shape) == len(v.shape) and all(not isinstance(d, int) or d == s for d, s in zip(v.shape, shape))
        if not ok:
            raise TargetError(
                f"node {node.name} ({node.op}): lowered output %{v.name} has shape {list(shape)}, IR says {v.type}"
            )
    return out


def numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))
