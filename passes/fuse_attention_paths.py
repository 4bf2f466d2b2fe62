"""fuse-attention, Q/K/V paths: from an operand of the attention matmuls back to where its heads were split.

A path starts at an operand of the scores matmul (Q, K) or of the context
matmul (V) and walks back (cases 2 and 3 of ``fuse_attention``):

1. through layout ops (Reshape, Transpose, Squeeze, Unsqueeze, Flatten,
   Identity, Expand: any split-heads form) and ``Mul``/``Div`` by scalar constants
   (a scale on Q or K, as in DistilBERT, GPT-2 and dynamo's SDPA
   decomposition), collecting the factors, or by scalars computed from shapes
   only (DeBERTa's ``sqrt(head_size * 3)`` where a dim is unknown to the IR:
   evaluated on the probes, which must agree at two sizes);
2. to a projection: ``Add(MatMul(X, W), b)`` (either order), ``MatMul(X, W)``,
   ``Linear(X, W, b?)`` without activation, or ``Gemm``, with constant
   weights; a projection of the rows ``Reshape(X, [-1, K])`` (torch.export's
   2-D ``addmm``) reads ``X``;
3. or to one output of a ``Split`` (or a ``Slice``) along the last axis of a
   fused projection (GPT-2's ``c_attn`` computes Q, K and V in one matmul and
   splits them): the path then holds those columns of the projection's weight
   and bias.

``merged`` is the value nearest the source whose rank is 3: ``[batch, seq,
hidden]`` before the heads were split, the input a ``MultiHeadAttention``
takes when the three paths cannot be packed into one ``Attention``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op
from accelopt.passes.fuse_common import const_of, data_sources, describe, looked_through, scalar_of

#: ops that only move data around (splitting or merging heads; torch.export's matmul decomposition expands its
#: operands to the shape they already have before viewing them 3-D: the proof checks what any of them does)
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand"})


class AttentionMiss(Exception):
    """A candidate that is not fused: why, at which node, and at which step (``where``)."""

    def __init__(self, reason: str, node: Node | None, where: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node
        self.where = where


@dataclass
class Proj:
    """A projection with constant weights: ``x @ w + b`` (the columns this path uses)."""

    x: Value
    w: np.ndarray
    b: np.ndarray | None
    nodes: list[Node]


@dataclass
class Path:
    """One of Q, K, V: the walked nodes, the scalar factor they apply, where the heads were split."""

    what: str
    end: Value
    nodes: list[Node] = field(default_factory=list)
    factor: float = 1.0
    merged: Value | None = None
    proj: Proj | None = None
    #: why no constant projection was reached (when ``proj`` is None)
    stop: str = ""
    #: scalars computed from shapes that multiply (False) or divide (True) the path
    dyn: list[tuple[Value, bool]] = field(default_factory=list)


def scalar_operand(graph: Graph, node: Node) -> tuple[Value, float] | None:
    """For Mul/Div by a scalar constant: (the other operand, the factor it is multiplied by)."""
    if node.op == "Mul":
        for i in (0, 1):
            c = scalar_of(graph, node.inputs[i])
            other = node.inputs[1 - i]
            if c is not None and other is not None and const_of(graph, other) is None:
                return other, c
    if node.op == "Div":
        c = scalar_of(graph, node.inputs[1])
        if c is not None and c != 0 and node.inputs[0] is not None:
            return node.inputs[0], 1.0 / c
    return None


def shape_scalar(graph: Graph, v: Value | None) -> Value | None:
    """``v`` when it is a one-element float computed from shapes and constants only (a scale exported as
    ``sqrt(size(-1))`` that constant folding could not fold because a dim is unknown), else None."""
    if v is None or v.producer is None or not v.dtype.is_float or v.shape is None:
        return None
    if any(d != 1 for d in v.shape) or const_of(graph, v) is not None or data_sources(v):
        return None
    return v


def dyn_operand(graph: Graph, node: Node) -> tuple[Value, Value, bool] | None:
    """For Mul/Div by a ``shape_scalar``: (the other operand, the scalar, whether it divides)."""
    if node.op == "Mul":
        for i in (0, 1):
            s, other = shape_scalar(graph, node.inputs[i]), node.inputs[1 - i]
            if s is not None and other is not None and shape_scalar(graph, other) is None:
                return other, s, False
    if node.op == "Div":
        s, other = shape_scalar(graph, node.inputs[1]), node.inputs[0]
        if s is not None and other is not None:
            return other, s, True
    return None


def walk_path(graph: Graph, end: Value, what: str) -> Path:
    """Cases 1-3: walk back from ``end``; never fails (``proj`` is None with a reason when none is found)."""
    path = Path(what, end)
    chain = [end]
    cur = end
    while True:
        node = cur.producer
        if node is None:
            path.stop = f"{what} path reached {describe(cur)}"
            break
        if node.op in LAYOUT_OPS and node.inputs[0] is not None:
            path.nodes.append(node)
            cur = node.inputs[0]
            chain.append(cur)
            continue
        so = scalar_operand(graph, node) if node.op in ("Mul", "Div") else None
        if so is not None:
            path.nodes.append(node)
            cur, c = so
            path.factor *= c
            chain.append(cur)
            continue
        dyn = dyn_operand(graph, node) if node.op in ("Mul", "Div") else None
        if dyn is not None:
            path.nodes.append(node)
            cur = dyn[0]
            path.dyn.append((dyn[1], dyn[2]))
            chain.append(cur)
            continue
        if node.op in ("Split", "Slice"):
            path.proj = _split_projection(graph, node, cur, path)
        else:
            path.proj = projection(graph, node)
            if path.proj is not None:
                path.nodes.extend(path.proj.nodes)
                _unflatten_input(path.proj, path.nodes)
        if path.proj is None and not path.stop:
            path.stop = (
                f"{what} path stopped at {node.op} (node {node.name}): expected a layout op, a scalar scale or "
                "a projection (MatMul + bias Add, Linear, Gemm) with constant weights"
            )
        break
    path.merged = next((v for v in reversed(chain) if v.type.rank == 3), None)
    return path


def _split_projection(graph: Graph, node: Node, out: Value, path: Path) -> Proj | None:
    """Case 3: ``out`` is one piece of a fused projection split along its last axis."""
    src = node.inputs[0]
    rank = src.type.rank if src is not None else None
    if src is None or rank is None:
        path.stop = f"{path.what} path reached {node.op} (node {node.name}) of an input of unknown rank"
        return None
    cols = _split_columns(graph, node, out, rank)
    if cols is None:
        path.stop = (
            f"{path.what} path reached {node.op} (node {node.name}), which does not cut the last axis into "
            "constant pieces"
        )
        return None
    lo, hi = cols
    nodes = [node]
    cur = src
    while cur.producer is not None and cur.producer.op in LAYOUT_OPS and cur.producer.inputs[0] is not None:
        nodes.append(cur.producer)
        cur = cur.producer.inputs[0]
    proj = projection(graph, cur.producer) if cur.producer is not None else None
    if proj is None:
        path.stop = f"{path.what} path: the fused projection split at node {node.name} is not a constant projection"
        return None
    width = proj.w.shape[1]
    if src.shape is None or src.shape[-1] != width or not 0 <= lo < hi <= width:
        path.stop = f"{path.what} path: the split at node {node.name} does not cut the projection's {width} columns"
        return None
    nodes.extend(proj.nodes)
    path.nodes.extend(nodes)
    out_proj = Proj(proj.x, proj.w[:, lo:hi], None if proj.b is None else proj.b[lo:hi], nodes)
    _unflatten_input(out_proj, path.nodes)
    return out_proj


def _split_columns(graph: Graph, node: Node, out: Value, rank: int) -> tuple[int, int] | None:
    """The column range ``[lo, hi)`` of the last axis that ``out`` holds, if the node cuts only that axis."""
    src = node.inputs[0]
    assert src is not None
    width = src.shape[-1] if src.shape is not None else None
    if not isinstance(width, int):
        return None
    attrs = get_op(node.op).full_attrs(node.attrs)
    if node.op == "Split":
        if int(attrs.get("axis", 0)) % rank != rank - 1:
            return None
        k = node.outputs.index(out)
        given = const_of(graph, node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if given is None:
            n = len(node.outputs)
            if width % n:
                return None
            given = np.full(n, width // n)
        sizes = [int(s) for s in np.asarray(given).reshape(-1)]
        if len(sizes) != len(node.outputs) or sum(sizes) != width:
            return None
        return sum(sizes[:k]), sum(sizes[: k + 1])
    # Slice(data, starts, ends, axes?, steps?)
    consts = [const_of(graph, v) if v is not None else None for v in node.inputs[1:]]
    starts, ends = consts[0], consts[1] if len(consts) > 1 else None
    axes = consts[2] if len(consts) > 2 and node.inputs[3] is not None else np.arange(rank)
    steps = consts[3] if len(consts) > 3 and node.inputs[4] is not None else None
    if starts is None or ends is None or axes is None or starts.size != 1 or ends.size != 1 or axes.size != 1:
        return None
    if int(axes.reshape(-1)[0]) % rank != rank - 1 or (steps is not None and int(steps.reshape(-1)[0]) != 1):
        return None
    lo, hi, _ = slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])).indices(width)
    return (lo, hi) if hi > lo else None


def _unflatten_input(proj: Proj, nodes: list[Node]) -> None:
    """A projection of rows ``Reshape(X [B, S, K], [-1, K])`` (torch.export's 2-D addmm) reads ``X`` itself."""
    x = proj.x
    node = x.producer
    if node is None or node.op not in ("Reshape", "Flatten") or x.type.rank != 2:
        return
    src = node.inputs[0]
    if src is None or src.type.rank != 3 or src.shape is None or src.shape[-1] != proj.w.shape[0]:
        return
    if node.op == "Flatten" and int(node.attr("axis", 1)) != 2:
        return
    proj.x = src
    nodes.append(node)


def projection(graph: Graph, node: Node) -> Proj | None:
    """``Add(MatMul(X, W), b)``, ``MatMul(X, W)``, ``Linear(X, W, b?)`` or ``Gemm(X, W, b)`` with constant weights."""

    def weight(v: Value | None) -> np.ndarray | None:
        w = const_of(graph, v)
        return w if w is not None and w.ndim == 2 else None

    if node.op == "Add":
        for i in (0, 1):
            b = const_of(graph, node.inputs[i])
            mm = looked_through(node.inputs[1 - i])
            if b is None or mm is None or mm.producer is None or mm.producer.op != "MatMul":
                continue
            w = weight(mm.producer.inputs[1])
            x = mm.producer.inputs[0]
            if w is None or x is None or b.size != w.shape[1] or const_of(graph, x) is not None:
                continue
            if b.ndim > 1 and any(d != 1 for d in b.shape[:-1]):
                continue
            if len(mm.consumers) != 1:
                continue
            return Proj(x, w, b.reshape(-1), [node, mm.producer])
        return None
    if node.op == "MatMul":
        w = weight(node.inputs[1])
        if w is None or node.inputs[0] is None or const_of(graph, node.inputs[0]) is not None:
            return None
        return Proj(node.inputs[0], w, None, [node])
    if node.op == "Linear":
        if node.attr("activation", "none") != "none":
            return None
        w = weight(node.inputs[1])
        has_b = len(node.inputs) > 2 and node.inputs[2] is not None
        b = const_of(graph, node.inputs[2]) if has_b else None
        if w is None or node.inputs[0] is None or (has_b and b is None):
            return None
        return Proj(node.inputs[0], w, None if b is None else b.reshape(-1), [node])
    if node.op == "Gemm":
        full = get_op("Gemm").full_attrs(node.attrs)
        if full.get("transA", 0) or float(full.get("alpha", 1.0)) != 1.0 or float(full.get("beta", 1.0)) != 1.0:
            return None
        w = weight(node.inputs[1])
        if w is None or node.inputs[0] is None:
            return None
        if full.get("transB", 0):
            w = w.T
        gb = None
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            gb = const_of(graph, node.inputs[2])
            if gb is None or gb.size != w.shape[1]:
                return None
        return Proj(node.inputs[0], w, None if gb is None else gb.reshape(-1), [node])
    return None


def packed_arrays(q: Proj, k: Proj, v: Proj, v_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The packed ``[K, 3H]`` weight and ``[3H]`` bias (V's scalar factor folded in)."""
    dt = q.x.dtype.np
    ws, bs = [], []
    for p, extra in ((q, 1.0), (k, 1.0), (v, v_factor)):
        n = p.w.shape[1]
        w = p.w.astype(dt)
        bias = p.b.astype(dt) if p.b is not None else np.zeros(n, dtype=dt)
        if extra != 1.0:
            w, bias = w * dt.type(extra), bias * dt.type(extra)
        ws.append(w)
        bs.append(bias)
    return np.concatenate(ws, axis=1), np.concatenate(bs)
