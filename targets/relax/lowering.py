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

``LowerCtx`` (what a lowering sees), ``ParamStore`` and the dtype names live
in ``context.py`` and are re-exported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tvm import relax

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op
from accelopt.targets import buckets as bk
from accelopt.targets.lowering_table import LoweringTable
from accelopt.targets.relax.context import (  # noqa: F401 - re-exported: lowerings import them from here
    BF16,
    MIN_PARAM_NUMEL,
    LowerCtx,
    ParamStore,
    Unlowerable,
    np_dtype,
    relax_dtype,
    var_name,
)

if TYPE_CHECKING:
    from accelopt.targets.relax.kernels import Kernels

log = logging.getLogger(__name__)

#: folding never creates more elements than its inputs have plus this many
FOLD_GROWTH_ELEMENTS = 1 << 18

#: what a lowering sees for an input: a numpy array (static), a Relax expression (run time), or None (omitted)
Operand = Any
LoweringFn = Callable[["LowerCtx", Node, list[Any], dict[str, Any]], Sequence[Any]]


# --------------------------------------------------------------- the table
@dataclass(frozen=True)
class Lowering:
    op: str
    fn: LoweringFn
    #: fold with the numpy kernel when every input is static (case 3)
    fold: bool = True


_TABLE: LoweringTable[Lowering] = LoweringTable(
    "Relax",
    [
        f"accelopt.targets.relax.{m}"
        for m in (
            "ops_elementwise",
            "ops_fused",
            "ops_index",
            "ops_matmul",
            "ops_pool",
            "ops_quant",
            "ops_reduce",
            "ops_shape",
        )
    ],
)


def lower(*ops: str, fold: bool = True) -> Callable[[LoweringFn], LoweringFn]:
    """Register ``fn`` as the Relax lowering of each op in ``ops``."""
    return _TABLE.register(ops, lambda op, fn: Lowering(op, fn, fold))


#: the Relax lowering of an op (None if it has none)
lowering_for = _TABLE.get
#: names of every op with a Relax lowering
lowered_ops = _TABLE.ops
#: the ops among the given ones that have no Relax lowering, sorted
unlowered_ops = _TABLE.missing


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


def bind_shape(v: Value, dims: Mapping[str, int]) -> list[int]:
    """``v``'s shape with symbols replaced by ``dims``."""
    return list(bk.bind_shape(v, dims, needs="the Relax lowering", scope="in this bucket"))


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
        low = _TABLE[node.op]
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
