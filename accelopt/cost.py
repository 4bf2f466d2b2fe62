"""Cost estimates for the report: multiply-accumulate (MAC) counts of a graph.

``estimate_macs(graph, bindings)`` sums the MACs of the ops that dominate a
transformer's compute. Symbolic dims (``"batch"``, ``"seq"``) are resolved
through ``bindings`` (e.g. ``{"batch": 1, "seq": 128}``); when any counted op
has a dim that stays unknown, the estimate is ``None`` rather than a wrong
number. Cases:

1. ``MatMul`` (and the integer forms ``MatMulInteger``, ``QLinearMatMul``,
   ``QLinear``, ``DynamicQuantizeMatMul``): ``batch * M * N * K``; a dim
   unknown in the output type is taken from the operands (``M`` from A, ``N``
   and ``K`` from B, batch dims broadcast), and ``K`` from B when A's is unknown.
2. ``Gemm``: ``M * N * K`` with ``K`` taken from A (honouring ``transA``).
3. ``Linear`` (fused, any activation): ``numel(output) * K`` with ``K`` the last
   dim of input 0.
4. ``Attention`` (fused): with a 2-D packed weight as input 1 (``x[B,S,H] @
   W[H,3H']``): the projection ``B*S*numel(W)`` plus ``Q K^T`` and ``P V``:
   ``2*B*S*S*H'``.
5. ``ScaledDotProductAttention(q[...,L,E], k[...,S,E], v[...,S,Ev])``:
   ``batch*L*S*(E + Ev)`` with ``batch`` the product of the leading dims;
   ``MultiHeadAttention(q[B,L,E], k[B,S,E], v[B,S,Ev])`` the same (heads split
   ``E`` and ``Ev`` without changing the count).
6. ``Conv``: ``numel(output) * numel(W) / W.shape[0]`` (per output element one
   filter's worth of products; grouping is already in ``W``'s shape).

Other ops count zero (elementwise work is small next to these).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.types import Dim

MATMUL_LIKE = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul", "QLinear", "DynamicQuantizeMatMul", "Linear"})


class _Unknown(Exception):
    pass


def _dim(d: Dim, bindings: Mapping[str, int]) -> int:
    if isinstance(d, int):
        return d
    if isinstance(d, str) and d in bindings:
        return int(bindings[d])
    raise _Unknown(d)


def _shape(v: Value | None, bindings: Mapping[str, int]) -> list[int]:
    if v is None or v.type.shape is None:
        raise _Unknown("rank")
    return [_dim(d, bindings) for d in v.type.shape]


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _dims(v: Value | None, bindings: Mapping[str, int]) -> list[int | None]:
    """Dims with symbols bound; unknown dims are None (an unknown rank raises)."""
    if v is None or v.type.shape is None:
        raise _Unknown("rank")
    out: list[int | None] = []
    for d in v.type.shape:
        try:
            out.append(_dim(d, bindings))
        except _Unknown:
            out.append(None)
    return out


def _pick(*candidates: int | None) -> int:
    for c in candidates:
        if c is not None:
            return c
    raise _Unknown(None)


def _broadcast(x: int | None, y: int | None) -> int | None:
    if x is not None and y is not None:
        return max(x, y) if 1 in (x, y) else x
    known = x if x is not None else y
    return known if known is not None and known != 1 else None


def _matmul_macs(node: Node, b: Mapping[str, int]) -> int:
    """Cases 1 and 3; a dim unknown in one operand's or the output's type is taken from another."""
    a, w = _dims(node.inputs[0], b), _dims(node.inputs[1], b)
    out = _dims(node.outputs[0], b)
    if node.op == "Linear":
        k = _pick(a[-1], w[0])
        rows = [_pick(o, x) for o, x in zip(out[:-1], a[:-1])] if len(out) == len(a) else _all(out[:-1])
        return _numel(rows) * _pick(out[-1], w[-1]) * k
    if len(a) < 2 or len(w) < 2 or len(out) != max(len(a), len(w)):
        return _numel(_all(out)) * _pick(a[-1], w[0] if len(w) == 1 else w[-2])
    k = _pick(a[-1], w[-2])
    m, n = _pick(out[-2], a[-2]), _pick(out[-1], w[-1])
    rank = len(out) - 2
    pa = [1] * (rank - (len(a) - 2)) + a[:-2]
    pw = [1] * (rank - (len(w) - 2)) + w[:-2]
    batch = [_pick(o, _broadcast(x, y)) for o, x, y in zip(out[:-2], pa, pw)]
    return _numel(batch) * m * n * k


def _all(dims: Sequence[int | None]) -> list[int]:
    return [_pick(d) for d in dims]


def node_macs(node: Node, bindings: Mapping[str, int] | None = None) -> int:
    """MACs of one node (0 for ops that are not counted); raises ``ValueError`` when a dim is unknown."""
    b = bindings or {}
    try:
        return _node_macs(node, b)
    except _Unknown as e:
        raise ValueError(f"node {node.name} ({node.op}): unknown dimension {e.args[0]!r}") from None


def _node_macs(node: Node, b: Mapping[str, int]) -> int:
    op = node.op
    if op in MATMUL_LIKE:  # cases 1 and 3
        return _matmul_macs(node, b)
    if op == "Gemm":  # case 2
        a = _shape(node.inputs[0], b)
        out = _shape(node.outputs[0], b)
        inner = a[0] if node.attr("transA", 0) else a[-1]
        return _numel(out) * inner
    if op in ("ScaledDotProductAttention", "MultiHeadAttention"):  # case 5
        q, key, v = (_shape(node.inputs[i], b) for i in range(3))
        return _numel(q[:-2]) * q[-2] * key[-2] * (q[-1] + v[-1])
    if op == "Attention":  # case 4
        ins = node.inputs
        x = _shape(ins[0], b)
        if len(ins) > 1 and ins[1] is not None and ins[1].type.rank == 2:
            w = _shape(ins[1], b)
            tokens = _numel(x[:-1])
            seq = x[-2] if len(x) >= 2 else 1
            hidden = w[1] // 3
            return tokens * _numel(w) + 2 * tokens * seq * hidden
        raise _Unknown("Attention layout")
    if op == "Conv":  # case 6
        w = _shape(node.inputs[1], b)
        out = _shape(node.outputs[0], b)
        return _numel(out) * _numel(w[1:])
    return 0


def estimate_macs(graph: Graph, bindings: Mapping[str, int] | None = None) -> int | None:
    """Total MACs of ``graph`` with symbols bound from ``bindings``; ``None`` if a counted op's dims are unknown."""
    b = bindings or {}
    total = 0
    for node in graph.nodes:
        try:
            total += _node_macs(node, b)
        except (_Unknown, ValueError, IndexError):
            return None
    return total
