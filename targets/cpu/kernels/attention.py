"""Fused attention core ``softmax(q k^T * scale + mask) v`` in one kernel, parallel over batch x heads.

One PrimFunc computes the whole attention of every (batch, head) pair; the
head split and merge are folded into its indexing, so the projected
``qkv [B, S, 3, NH, D]`` (a free reshape of ``Attention``'s ``[B, S, 3H]``) is
read in place and the context is written straight into ``[B, S, NH, D]``
(a free reshape of ``[B, S, H]``). ``attention_compute`` takes accessors for
``q``, ``k``, ``v``, an additive bias and an ``allowed`` predicate, so the same
compute serves ``Attention`` / ``QAttention`` (key-padding mask, onnxruntime's
``mask_filter_value``) and ``ScaledDotProductAttention`` (bool or float
masks, causal).

Blocks, per (batch, head) and per block of ``MR`` query rows (``schedule_attention``):

1. ``attn_kt``: the head's keys transposed to ``[D, S]`` once per (batch, head),
   so the score tile loads 16 keys per vector;
2. ``attn_qk`` / ``attn_scores``: ``MR x 16 NV`` score tiles accumulated in
   registers over ``d``, then scaled and masked into a row-block scratch of
   ``MR x S`` floats (L1-resident: the scores never leave the cache);
3. ``attn_max16`` / ``attn_max``, ``attn_exp``, ``attn_sum16`` / ``attn_sum``: the
   stable softmax, with the row maximum and sum first reduced across 16 lanes
   (vectorized) and then across the lanes; ``exp`` is ``fastmath.exp``;
4. ``attn_pv`` / ``attn_out``: ``MR x Dv`` context accumulated in registers over
   the keys, divided by the row sum as it is stored (the softmax is never
   normalized separately).

Semantics match the interpreter: scores ``(q . k) * scale + bias``; with an
``allowed`` predicate a disallowed pair is ``-inf`` (its weight exactly 0) and a
row with no allowed key gives zeros (torch's safe softmax); without one the
maximum is taken over every key, as onnxruntime's Attention does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tvm import te, tirx
from tvm.s_tir import Schedule

from accelopt.targets.cpu.kernels import fastmath
from accelopt.targets.cpu.kernels.dense import KERNEL_ATTR, LANES, finish_accumulators, vectorize_inner

#: a TIR expression (TVM has no type stubs)
Expr = Any

ATTENTION_FP32 = "attention_fp32"

#: ``(b, h, i, j) -> PrimExpr``
PairFn = Callable[..., Expr]
#: ``(b, h, row, col) -> PrimExpr`` reading q (row = query, col = d), k (key, d) or v (key, dv)
Accessor = Callable[..., Expr]


@dataclass(frozen=True)
class AttentionShape:
    batch: int
    heads: int
    queries: int
    keys: int
    head_dim: int
    value_dim: int


def _neg_inf() -> Expr:
    return tirx.const(float("-inf"), "float32")


def attention_compute(
    shape: AttentionShape,
    q: Accessor,
    k: Accessor,
    v: Accessor,
    scale: float,
    *,
    bias: PairFn | None = None,
    allowed: PairFn | None = None,
    layout: str = "bshd",
) -> te.Tensor:
    """The blocks of the module docstring; the output is ``[B, L, NH, Dv]`` (``bshd``) or ``[B, NH, L, Dv]``."""
    bsz, nh, nq, nk, d, dv = (
        shape.batch, shape.heads, shape.queries, shape.keys, shape.head_dim, shape.value_dim
    )
    f32 = "float32"
    kt = te.compute((bsz, nh, d, nk), lambda b, h, c, j: k(b, h, j, c), name="attn_kt")
    rd = te.reduce_axis((0, d), name="d")
    qk = te.compute(
        (bsz, nh, nq, nk), lambda b, h, i, j: te.sum(q(b, h, i, rd) * kt[b, h, rd, j], axis=rd), name="attn_qk"
    )

    def score(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        s = qk[b, h, i, j] * tirx.const(scale, f32)
        if bias is not None:
            s = s + bias(b, h, i, j)
        if allowed is not None:
            s = tirx.if_then_else(allowed(b, h, i, j), s, _neg_inf())
        return s

    scores = te.compute((bsz, nh, nq, nk), score, name="attn_scores")
    chunks = -(-nk // LANES)
    rc = te.reduce_axis((0, chunks), name="jc")

    def lane(b: Expr, h: Expr, i: Expr, c: Expr, lane_: Expr, fill: Expr) -> Expr:
        j = c * LANES + lane_
        return tirx.if_then_else(j < nk, scores[b, h, i, tirx.min(j, nk - 1)], fill) if nk % LANES else scores[
            b, h, i, j
        ]

    max16 = te.compute(
        (bsz, nh, nq, LANES),
        lambda b, h, i, ln: te.max(lane(b, h, i, rc, ln, _neg_inf()), axis=rc),
        name="attn_max16",
    )
    rl = te.reduce_axis((0, LANES), name="lane")
    rowmax = te.compute((bsz, nh, nq), lambda b, h, i: te.max(max16[b, h, i, rl], axis=rl), name="attn_max")

    def weight(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        m = rowmax[b, h, i]
        if allowed is None:
            return fastmath.exp(scores[b, h, i, j] - m)
        m = tirx.if_then_else(m == _neg_inf(), tirx.const(0.0, f32), m)
        return tirx.if_then_else(allowed(b, h, i, j), fastmath.exp(scores[b, h, i, j] - m), tirx.const(0.0, f32))

    ex = te.compute((bsz, nh, nq, nk), weight, name="attn_exp")
    rc2 = te.reduce_axis((0, chunks), name="jc")

    def ex_lane(b: Expr, h: Expr, i: Expr, ln: Expr) -> Expr:
        j = rc2 * LANES + ln
        if nk % LANES:
            return tirx.if_then_else(j < nk, ex[b, h, i, tirx.min(j, nk - 1)], tirx.const(0.0, f32))
        return ex[b, h, i, j]

    sum16 = te.compute((bsz, nh, nq, LANES), lambda b, h, i, ln: te.sum(ex_lane(b, h, i, ln), axis=rc2), name="attn_sum16")
    rl2 = te.reduce_axis((0, LANES), name="lane")
    rowsum = te.compute((bsz, nh, nq), lambda b, h, i: te.sum(sum16[b, h, i, rl2], axis=rl2), name="attn_sum")
    rj = te.reduce_axis((0, nk), name="j")
    pv = te.compute(
        (bsz, nh, nq, dv), lambda b, h, i, c: te.sum(ex[b, h, i, rj] * v(b, h, rj, c), axis=rj), name="attn_pv"
    )

    def out(b: Expr, h: Expr, i: Expr, c: Expr) -> Expr:
        z = rowsum[b, h, i]
        if allowed is None:
            return pv[b, h, i, c] / z
        return tirx.if_then_else(z > tirx.const(0.0, f32), pv[b, h, i, c] / z, tirx.const(0.0, f32))

    if layout == "bshd":
        return te.compute((bsz, nq, nh, dv), lambda b, i, h, c: out(b, h, i, c), name="attn_out")
    if layout == "bhsd":
        return te.compute((bsz, nh, nq, dv), out, name="attn_out")
    raise ValueError(f"attention output layout must be bshd or bhsd, got {layout!r}")


def choose_attention_rows(queries: int, value_dim: int) -> int:
    """Query rows per block: the context tile ``MR x Dv`` must fit 24 zmm accumulators."""
    vectors = -(-value_dim // LANES)
    for mr in (8, 6, 4, 2, 1):
        if queries % mr == 0 and mr * vectors <= 24 and mr * 4 <= 32:
            return mr
    return 1


def schedule_attention(sch: Schedule, mr: int | None = None, nv: int = 4, *, sample: bool = False) -> None:
    """Schedule the blocks of ``attention_compute`` (cases 1-4 of the module docstring).

    ``sample``: the query rows per block are a sampled decision (MetaSchedule's design space).
    """
    out = sch.get_sblock("attn_out")
    loops = sch.get_loops(out)
    b, x1, x2, c = loops
    # the output is [B, L, NH, Dv] or [B, NH, L, Dv]: find the query loop by the pv block's shape
    pv_shape = sch.get(sch.get_sblock("attn_pv")).writes[0].source.shape
    nh, nq, dv = int(pv_shape[1]), int(pv_shape[2]), int(pv_shape[3])
    if int(sch.get(x1).extent) == nq and int(sch.get(x2).extent) == nh and nh != nq:
        i, h = x1, x2
    else:
        h, i = x1, x2
    sch.reorder(b, h, i, c)
    if sample:
        vectors = -(-dv // LANES)
        io, ii = sch.split(i, sch.sample_perfect_tile(i, n=2, max_innermost_factor=max(1, 24 // vectors)))
    else:
        io, ii = sch.split(i, [None, mr or choose_attention_rows(nq, dv)])
    bh = sch.fuse(b, h)
    sch.parallel(bh)
    vectorize_inner(sch, out)
    # 4: context accumulated in registers over the keys
    pv = sch.get_sblock("attn_pv")
    sch.compute_at(pv, io, preserve_unit_loops=True)
    pi, pc, pj = sch.get_loops(pv)[-3:]
    pco, pcl = sch.split(pc, [None, LANES])
    sch.reorder(pj, pi, pco, pcl)
    sch.set_scope(pv, 0, "local")
    sch.vectorize(pcl)
    finish_accumulators(sch, pv, [pi, pco], pj)
    # 3: softmax of the row block
    for name in ("attn_sum", "attn_sum16", "attn_exp", "attn_max", "attn_max16"):
        sch.compute_at(sch.get_sblock(name), io, preserve_unit_loops=True)
    for name in ("attn_max16", "attn_sum16"):
        blk = sch.get_sblock(name)
        ri, rl, rc = sch.get_loops(blk)[-3:]
        sch.reorder(ri, rc, rl)
        sch.vectorize(rl)
        init = sch.decompose_reduction(blk, rc)
        sch.vectorize(sch.get_loops(init)[-1])
    vectorize_inner(sch, sch.get_sblock("attn_exp"))
    # 2: score tiles
    scores = sch.get_sblock("attn_scores")
    sch.compute_at(scores, io, preserve_unit_loops=True)
    qk = sch.get_sblock("attn_qk")
    sch.compute_at(qk, io, preserve_unit_loops=True)
    qi, qj, qd = sch.get_loops(qk)[-3:]
    nk = int(sch.get(qj).extent)
    width = nv * LANES
    while nv > 1 and nk % width:
        nv -= 1
        width = nv * LANES
    qjo, qjv, qjl = sch.split(qj, [None, nv, LANES])
    sch.reorder(qjo, qd, qi, qjv, qjl)
    sch.reverse_compute_at(scores, qjo, preserve_unit_loops=True)
    sch.set_scope(qk, 0, "local")
    sch.vectorize(qjl)
    finish_accumulators(sch, qk, [qi, qjv], qd)
    vectorize_inner(sch, scores)
    # 1: transposed keys once per (batch, head)
    kt = sch.get_sblock("attn_kt")
    sch.compute_at(kt, bh, preserve_unit_loops=True)
    vectorize_inner(sch, kt)


def broadcast_reader(t: te.Tensor, rank: int) -> Callable[..., Expr]:
    """``(i0, ..., i{rank-1}) -> t[...]`` with ``t`` right-aligned to ``rank`` dims and size-1 dims broadcast."""
    dims = [int(d) for d in t.shape]
    lead = rank - len(dims)
    if lead < 0:
        raise ValueError(f"tensor of shape {tuple(dims)} has more than {rank} dims")

    def read(*idx: Expr) -> Expr:
        return t[tuple(0 if d == 1 else idx[lead + a] for a, d in enumerate(dims))]

    return read


def padding_bias(mask: te.Tensor, fill: float) -> PairFn:
    """``Attention``'s key-padding mask ``[B, S]`` (0 = padded) as an additive bias: ``fill`` on padded keys."""
    zero = tirx.const(0, str(mask.dtype))
    value = tirx.const(fill, "float32")

    def bias(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        return tirx.if_then_else(mask[b, j] == zero, value, tirx.const(0.0, "float32"))

    return bias


def allowed_pairs(read: PairFn | None, causal: bool) -> PairFn | None:
    """The ``allowed`` predicate of SDPA: a bool mask reader and/or the causal triangle ``j <= i``."""
    if read is None and not causal:
        return None

    def allowed(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        ok = read(b, h, i, j) if read is not None else None
        if not causal:
            return ok
        tri = j <= i
        return tri if ok is None else tirx.all(ok, tri)

    return allowed


def qkv_attention(qkv: te.Tensor, mask: te.Tensor | None, scale: float, mask_filter_value: float) -> te.Tensor:
    """``Attention``'s core on ``qkv [B, S, 3, NH, D]`` with a key-padding ``mask [B, S]``: ``[B, S, NH, D]``."""
    bsz, s, _, nh, d = (int(x) for x in qkv.shape)
    return attention_compute(
        AttentionShape(bsz, nh, s, s, d, d),
        lambda b, h, i, c: qkv[b, i, 0, h, c],
        lambda b, h, j, c: qkv[b, j, 1, h, c],
        lambda b, h, j, c: qkv[b, j, 2, h, c],
        scale if scale else 1.0 / math.sqrt(d),
        bias=padding_bias(mask, mask_filter_value) if mask is not None else None,
    )


def sdpa_attention(
    q: te.Tensor, k: te.Tensor, v: te.Tensor, mask: te.Tensor | None, scale: float, causal: bool
) -> te.Tensor:
    """``ScaledDotProductAttention``'s core on ``[B, NH, L|S, E|Ev]`` tensors: ``[B, NH, L, Ev]``.

    ``mask``: bool (True takes part) or float (added), broadcastable to ``[B, NH, L, S]``; ``causal`` lets
    query ``i`` see keys ``j <= i``.
    """
    bsz, nh, nq, e = (int(x) for x in q.shape)
    nk, ev = int(k.shape[2]), int(v.shape[3])
    read = broadcast_reader(mask, 4) if mask is not None else None
    is_bool = mask is not None and str(mask.dtype) == "bool"
    return attention_compute(
        AttentionShape(bsz, nh, nq, nk, e, ev),
        lambda b, h, i, c: q[b, h, i, c],
        lambda b, h, j, c: k[b, h, j, c],
        lambda b, h, j, c: v[b, h, j, c],
        scale if scale else 1.0 / math.sqrt(e),
        bias=None if is_bool else read,
        allowed=allowed_pairs(read if is_bool else None, causal),
        layout="bhsd",
    )


def sdpa_primfunc(
    shape: AttentionShape, scale: float, *, mask: tuple[str, tuple[int, ...]] | None = None, causal: bool = False
) -> tirx.PrimFunc:
    """``(q[B,NH,L,E], k[B,NH,S,E], v[B,NH,S,Ev][, mask], out[B,NH,L,Ev])`` (``mask``: its dtype and shape)."""
    bsz, nh, nq, nk = shape.batch, shape.heads, shape.queries, shape.keys
    q = te.placeholder((bsz, nh, nq, shape.head_dim), "float32", name="q")
    k = te.placeholder((bsz, nh, nk, shape.head_dim), "float32", name="k")
    v = te.placeholder((bsz, nh, nk, shape.value_dim), "float32", name="v")
    m = te.placeholder(mask[1], mask[0], name="mask") if mask is not None else None
    out = sdpa_attention(q, k, v, m, scale, causal)
    args = [q, k, v] + ([m] if m is not None else []) + [out]
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, ATTENTION_FP32)


def attention_primfunc(shape: AttentionShape, scale: float, mask_filter_value: float | None) -> tirx.PrimFunc:
    """``(qkv[B, S, 3, NH, D][, mask[B, S] int64], out[B, S, NH, D])``; no mask when ``mask_filter_value`` is None."""
    bsz, nh, s, d = shape.batch, shape.heads, shape.queries, shape.head_dim
    qkv = te.placeholder((bsz, s, 3, nh, d), "float32", name="qkv")
    mask = te.placeholder((bsz, s), "int64", name="mask") if mask_filter_value is not None else None
    out = qkv_attention(qkv, mask, scale, mask_filter_value or 0.0)
    args = [qkv] + ([mask] if mask is not None else []) + [out]
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, ATTENTION_FP32)
