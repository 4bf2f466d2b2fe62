"""Shared machinery of the ``fp16`` and ``bf16`` passes: convert a float32 graph to a lower float precision.

How the graph is converted (``convert``), cases:

1. Every node gets a precision: low when its op is not kept float32
   (``keep``: by default LayerNorm-like ops, Softmax and reductions, whose
   statistics need float32), its name is not in ``exclude``, it produces a
   float32 value, and the overflow guard (2) does not pin it; float32
   otherwise. Quantization ops (QDQ, ``QLinear``...) and ``Cast`` always keep
   their types.
2. Overflow guard (fp16 only, ``limit=65504``): the float32 graph runs on
   calibration samples; a node whose float inputs or outputs reach
   ``|x| > limit`` (observed, or in a constant it reads) stays float32, and
   the notes say where and how large the values were.
3. The graph is rebuilt in order with the same value and node names: a low
   node reads its float32 inputs in the low type, constants as converted
   copies (``<name>_fp16``), other values through one shared
   ``Cast`` each; a float32 node reading a low value gets a ``Cast`` back.
   Graph inputs and outputs keep their float32 types (outputs are cast back).
4. A low node whose op rejects the low type (type inference fails) is built
   in float32 instead and named in the notes.

The reference kernels compute float16/bfloat16 matmuls with float32
accumulation, rounded back, which is what accelerators do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import VerifyError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.passes.base import PassResult
from accelopt.passes.quant_calibration import run_values, sample_batches, static_batch_of

log = logging.getLogger(__name__)

#: ops kept in float32 by default: normalizations, softmax and reductions
DEFAULT_KEEP: tuple[str, ...] = (
    "LayerNorm",
    "SkipLayerNorm",
    "EmbedLayerNorm",
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
)
#: ops whose types are part of their meaning: never converted
NEVER = frozenset(
    {
        "Cast",
        "CastLike",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantize",
        "QLinear",
        "QAttention",
        "MatMulInteger",
        "Constant",
        "ConstantOfShape",
    }
)
FP16_MAX = 65504.0
#: ops that read only their input's shape: they take a converted value as it is
SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclass
class Conversion:
    """What ``convert`` did, for the pass's notes and stats."""

    low: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # node -> reason
    overflow: dict[str, tuple[str, float]] = field(default_factory=dict)  # node -> (value, max |x|)
    casts: int = 0
    converted_constants: int = 0


def _float_out(node: Node) -> bool:
    return any(v.dtype == DType.FLOAT32 for v in node.outputs)


def observe_absmax(
    graph: Graph, calibration: Sequence[Mapping[str, np.ndarray]] | None, samples: int
) -> dict[str, float]:
    """max |x| of every float32 value (graph inputs and node outputs) on calibration samples."""
    batches = sample_batches(calibration, samples)
    names = [v.name for v in graph.inputs if v.dtype == DType.FLOAT32]
    names += [v.name for n in graph.nodes for v in n.outputs if v.dtype == DType.FLOAT32]
    out: dict[str, float] = {}
    if not batches or not names:
        return out
    small = [{k: v[i : i + 2] for k, v in b.items()} for b in batches for i in range(0, _rows(b), 2)]
    for res in run_values(graph, names, small, static_batch_of(graph)):
        for n, a in res.items():
            if a.size:
                m = float(np.max(np.abs(a)))
                out[n] = max(out.get(n, 0.0), m)
    return out


def _rows(b: Mapping[str, np.ndarray]) -> int:
    for v in b.values():
        return int(np.asarray(v).shape[0]) if np.asarray(v).ndim else 1
    return 0


def target_lacks_dtype(target: Any, dtype: DType) -> str | None:
    """Why a low-precision pass must not run for ``target`` (it lists dtypes without ``dtype``), else None."""
    dtypes = getattr(target, "dtypes", None)
    if target is not None and dtypes and str(dtype) not in dtypes:
        why = (getattr(target, "extra", None) or {}).get("unsupported_dtypes", {}).get(str(dtype))
        return f"target {getattr(target, 'name', '?')} does not compute in {dtype}" + (f": {why}" if why else "")
    return None


def decide(
    graph: Graph,
    keep: Sequence[str],
    exclude: Sequence[str],
    absmax: Mapping[str, float] | None,
    limit: float | None,
) -> tuple[set[str], Conversion]:
    """Case 1-2: the names of the nodes computed in low precision, and the reasons for the others."""
    conv = Conversion()
    low: set[str] = set()
    keep_ops, excluded = set(keep), set(exclude)
    for node in graph.nodes:
        if not _float_out(node):
            continue
        if node.op in NEVER:
            continue
        if node.op in keep_ops:
            conv.kept[node.name] = f"{node.op} kept float32"
            continue
        if node.name in excluded or node.op in excluded:
            conv.kept[node.name] = "excluded"
            continue
        if limit is not None:
            hit = _overflow(graph, node, absmax or {}, limit)
            if hit is not None:
                conv.overflow[node.name] = hit
                conv.kept[node.name] = f"overflow guard: max |%{hit[0]}| = {hit[1]:.4g} > {limit:g}"
                continue
        low.add(node.name)
    return low, conv


def _overflow(graph: Graph, node: Node, absmax: Mapping[str, float], limit: float) -> tuple[str, float] | None:
    worst: tuple[str, float] | None = None
    for v in list(node.inputs) + list(node.outputs):
        if v is None or v.dtype != DType.FLOAT32:
            continue
        c = graph.const_value(v)
        m = float(np.max(np.abs(c))) if c is not None and c.size else absmax.get(v.name)
        if m is not None and (m > limit or not np.isfinite(m)) and (worst is None or m > worst[1]):
            worst = (v.name, m)
    return worst


def convert(graph: Graph, low: set[str], dtype: DType, conv: Conversion, pass_name: str) -> Graph:
    """Case 3-4: a new graph with the nodes in ``low`` computed in ``dtype``."""
    suffix = "fp16" if dtype == DType.FLOAT16 else "bf16"
    taken = {v.name for v in graph.values()}
    g = Graph(graph.name, metadata=dict(graph.metadata))
    vmap: dict[int, Value] = {}
    for v in graph.inputs:
        vmap[id(v)] = g.add_input(v.name, v.type)
    init_users: dict[str, bool] = {}
    for node in graph.nodes:
        is_low = node.name in low
        for inp in node.inputs:
            if inp is not None and inp.const is not None:
                wants_low = is_low and inp.dtype == DType.FLOAT32
                init_users[inp.name] = init_users.get(inp.name, False) or not wants_low
    for v in graph.outputs:
        if v.const is not None:
            init_users[v.name] = True
    for name, v in graph.initializers.items():
        if init_users.get(name, False):
            vmap[id(v)] = g.add_initializer(name, v.const)  # type: ignore[arg-type]

    def fresh(hint: str) -> str:
        name, i = hint, 0
        while name in taken:
            i += 1
            name = f"{hint}_{i}"
        taken.add(name)
        return name

    casts: dict[tuple[int, DType], Value] = {}
    low_consts: dict[int, Value] = {}
    output_ids = {id(v) for v in graph.outputs}

    def cast(src: Value, to: DType, orig: Value, before_anchor: str) -> Value:
        key = (id(orig), to)
        hit = casts.get(key)
        if hit is None:
            tag = suffix if to == dtype else "fp32"
            node = g.add_node(
                "Cast",
                [src],
                {"to": to},
                outputs=[fresh(f"{orig.name}_{tag}")],
                name=fresh(f"{orig.name}_to_{tag}"),
                provenance=Provenance(pass_name, "cast", (before_anchor,)),
            )
            hit = node.output
            casts[key] = hit
            conv.casts += 1
        return hit

    def operand(v: Value, want_low: bool, anchor: str, shape_only: bool = False) -> Value:
        if v.const is not None and want_low and v.dtype == DType.FLOAT32:
            hit = low_consts.get(id(v))
            if hit is None:
                data = np.asarray(v.const).astype(dtype.np)
                hit = g.add_initializer(fresh(f"{v.name}_{suffix}"), data)
                low_consts[id(v)] = hit
                conv.converted_constants += 1
            return hit
        mv = vmap[id(v)]
        want = dtype if (want_low and v.dtype == DType.FLOAT32) else v.dtype
        if mv.dtype == want or shape_only:
            return mv
        return cast(mv, want, v, anchor)

    for node in graph.nodes:
        is_low = node.name in low
        shape_only = node.op in SHAPE_ONLY
        ins = [None if v is None else operand(v, is_low, node.name, shape_only) for v in node.inputs]
        names = [fresh(f"{v.name}_{suffix}") if (is_low and id(v) in output_ids) else v.name for v in node.outputs]
        try:
            new = g.add_node(node.op, ins, node.attrs, outputs=names, name=node.name, provenance=node.provenance)
        except VerifyError as e:
            if not is_low:
                raise
            conv.kept[node.name] = f"{node.op} does not take {dtype}: {e}"
            low.discard(node.name)
            ins = [None if v is None else operand(v, False, node.name) for v in node.inputs]
            new = g.add_node(
                node.op,
                ins,
                node.attrs,
                outputs=[v.name for v in node.outputs],
                name=node.name,
                provenance=node.provenance,
            )
            is_low = False
        if is_low:
            conv.low.append(node.name)
        for old_v, new_v in zip(node.outputs, new.outputs):
            vmap[id(old_v)] = new_v
    outs = []
    for v in graph.outputs:
        mv = vmap[id(v)]
        if mv.dtype != v.dtype:
            c = g.add_node(
                "Cast",
                [mv],
                {"to": v.dtype},
                outputs=[v.name],
                name=fresh(f"{v.name}_output_fp32"),
                provenance=Provenance(pass_name, "output", ()),
            )
            conv.casts += 1
            mv = c.output
        outs.append(mv)
    g.set_outputs(outs)
    g.remove_unused()
    return g


def notes_for(conv: Conversion, dtype: DType, total: int) -> list[str]:
    """Human-readable lines for the report."""
    notes = [
        f"{len(conv.low)} of {total} float node(s) compute in {dtype}; {conv.converted_constants} constant(s) "
        f"converted; {conv.casts} Cast(s) inserted"
    ]
    by_reason: dict[str, list[str]] = {}
    for name, why in conv.kept.items():
        if name in conv.overflow:
            continue
        key = why if not why.endswith("kept float32") else "kept float32 by op type (LayerNorm, Softmax, reductions)"
        by_reason.setdefault(key, []).append(name)
    for why, names in sorted(by_reason.items()):
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        notes.append(f"float32: {len(names)} node(s), {why}: {shown}")
    for name in conv.overflow:
        why = conv.kept[name].removeprefix("overflow guard: ")  # names the limit the pass was given
        notes.append(f"fp16 overflow guard: {name} stays float32 ({why})")
    return notes


def stats_for(conv: Conversion) -> dict[str, Any]:
    return {
        "low_nodes": len(conv.low),
        "float32_nodes": len(conv.kept),
        "casts": conv.casts,
        "overflow_guard": {k: {"value": v, "max_abs": m} for k, (v, m) in conv.overflow.items()},
    }


def lower_precision(
    graph: Graph,
    dtype: DType,
    pass_name: str,
    keep: Sequence[str],
    exclude: Sequence[str],
    absmax: Mapping[str, float] | None = None,
    limit: float | None = None,
    extra_notes: Sequence[str] = (),
) -> PassResult:
    """The body of the ``fp16`` and ``bf16`` passes: cases 1-4, then the report's stats and notes.

    A graph with no node to compute in ``dtype`` comes back unchanged, with a note saying so;
    ``extra_notes`` are appended when the graph was converted.
    """
    low, conv = decide(graph, keep, exclude, absmax, limit)
    total = sum(1 for n in graph.nodes if any(v.dtype == DType.FLOAT32 for v in n.outputs))
    if not low:
        return PassResult(graph, False, notes=[f"no node to compute in {dtype}"] + notes_for(conv, dtype, total))
    new = convert(graph, low, dtype, conv, pass_name)
    notes = notes_for(conv, dtype, total) + list(extra_notes)
    return PassResult(new, True, stats=stats_for(conv), notes=notes)


__all__ = [
    "DEFAULT_KEEP",
    "FP16_MAX",
    "Conversion",
    "convert",
    "decide",
    "lower_precision",
    "notes_for",
    "observe_absmax",
    "stats_for",
    "target_lacks_dtype",
]
