"""Relax lowerings of the fused transformer ops (``accelopt`` domain).

Cases:

1. ``Linear`` / ``PackedLinear`` with a weight known at compile time go
   through the ``linear`` kernel hook (``PackedLinear``'s stored layout is
   unpacked to [K, N] first: targets pack weights their own way); a run-time
   weight is a ``matmul`` plus the bias and activation epilogue.
2. ``Attention``: the packed QKV projection is a ``linear`` and the rest the
   ``attention`` hook, or, with an ``attention_bias`` or ``unidirectional=1``,
   the ``multi_head_attention`` hook on the three slices of the projection;
   ``MultiHeadAttention`` is that hook; ``ScaledDotProductAttention`` the
   ``sdpa`` hook.
3. ``LayerNorm`` / ``SkipLayerNorm``: the ``layer_norm`` / ``skip_layer_norm``
   hooks (``SkipLayerNorm``'s optional second output is the sum); ``RMSNorm``:
   mean of squares, ``rsqrt`` and the scale in float32.
4. ``EmbedLayerNorm``: three gathers (positions ``0..S-1`` when no
   ``position_ids``: a slice of the table), summed, then the
   ``layer_norm`` hook.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.ir.ops.fused import unpack_weight
from accelopt.targets.relax import emit
from accelopt.targets.relax.kernels import Weight
from accelopt.targets.relax.lowering import LowerCtx, lower
from accelopt.targets.relax.ops_index import wrap_index
from accelopt.targets.relax.ops_matmul import is_float_weight

R = relax.op


def _opt(ins: list[Any], i: int) -> Any:
    return ins[i] if len(ins) > i else None


def runtime_linear(ctx: LowerCtx, node: Node, x: relax.Expr, w: relax.Expr, bias: Any, activation: str) -> relax.Expr:
    """``act(x @ w + b)`` with a run-time weight: the ``matmul`` hook and a generic epilogue."""
    dt = ctx.dtype(x)
    ct = emit.compute_dtype(ctx, x)
    y = ctx.astype(ctx.kernels.matmul(ctx, node, x, ctx.expr(w, dt)), ct)
    if bias is not None:
        y = ctx.emit(R.add(y, ctx.expr(bias, ct)))
    return ctx.astype(emit.activation(ctx, y, activation), dt)


def project(ctx: LowerCtx, node: Node, x: Any, w: Any, bias: Any, activation: str, w_index: int = 1) -> relax.Expr:
    """Case 1: ``act(x @ W + b)`` through the ``linear`` hook when W is known at compile time."""
    x = ctx.operand(node, 0, x)
    if bias is not None and not ctx.is_static(bias):
        bias = ctx.expr(bias)
    if is_float_weight(ctx, x, w):
        return ctx.kernels.linear(ctx, node, x, Weight(np.asarray(w), ctx.key(node, w_index)), bias, activation)
    return runtime_linear(ctx, node, x, ctx.operand(node, w_index, w), bias, activation)


@lower("Linear")
def _linear(ctx, node, ins, attrs):
    return [project(ctx, node, ins[0], ins[1], _opt(ins, 2), str(attrs["activation"]))]


def _unpack_relax(ctx: LowerCtx, wp: relax.Expr, k: int, n: int, transposed: bool, tile: tuple[int, ...]) -> relax.Expr:
    """``unpack_weight`` in Relax, for a packed weight known only at run time."""
    if tile:
        b0, b1, t0, t1 = ctx.shape(wp)
        wp = ctx.emit(R.reshape(R.permute_dims(wp, [0, 2, 1, 3]), (b0 * t0, b1 * t1)))
    rows, cols = (n, k) if transposed else (k, n)
    m = ctx.emit(R.strided_slice(wp, [0, 1], [0, 0], [rows, cols]))
    return ctx.emit(R.permute_dims(m, [1, 0])) if transposed else m


@lower("PackedLinear")
def _packed_linear(ctx, node, ins, attrs):
    transposed = bool(attrs["transposed"])
    tile = tuple(int(t) for t in (attrs.get("tile") or ()))
    k, n = int(attrs["k"]), int(attrs["n"])
    x, wp, bias = ins[0], ins[1], _opt(ins, 2)
    act = str(attrs["activation"])
    if ctx.is_static(wp) and not ctx.is_static(x):
        w = np.ascontiguousarray(unpack_weight(np.asarray(wp), k=k, n=n, transposed=transposed, tile=tile))
        if is_float_weight(ctx, x, w):
            b = ctx.expr(bias) if bias is not None and not ctx.is_static(bias) else bias
            return [ctx.kernels.linear(ctx, node, x, Weight(w, ctx.key(node, 1) + "@unpacked"), b, act)]
    w = _unpack_relax(ctx, ctx.operand(node, 1, wp), k, n, transposed, tile)
    b = ctx.operand(node, 2, bias) if bias is not None else None
    return [runtime_linear(ctx, node, ctx.operand(node, 0, x), w, b, act)]


# ---------------------------------------------------------------- case 2
def attention_from_qkv(ctx: LowerCtx, node: Node, qkv: relax.Expr, ins: list[Any], mask_index: int,
                       attrs: Any) -> relax.Expr:
    """Case 2 after the packed projection: the ``attention`` hook, or the ``multi_head_attention`` hook on the
    three slices of ``qkv`` when there is an attention bias (input ``mask_index + 1``) or a causal mask."""
    mask, bias = _opt(ins, mask_index), _opt(ins, mask_index + 1)
    mask = ctx.operand(node, mask_index, mask) if mask is not None else None
    heads, scale, fill = int(attrs["num_heads"]), float(attrs["scale"]), float(attrs["mask_filter_value"])
    causal = bool(int(attrs.get("unidirectional", 0)))
    if bias is None and not causal:
        return ctx.kernels.attention(ctx, node, qkv, mask, heads, scale, fill)
    b, s, n3 = ctx.shape(qkv)
    h = n3 // 3
    q, k, v = (ctx.emit(R.strided_slice(qkv, [2], [i * h], [(i + 1) * h])) for i in range(3))
    bias = ctx.operand(node, mask_index + 1, bias) if bias is not None and not ctx.is_static(bias) else bias
    return ctx.kernels.multi_head_attention(ctx, node, q, k, v, mask, bias, heads, scale, fill, causal)


@lower("Attention")
def _attention(ctx, node, ins, attrs):
    qkv = project(ctx, node, ins[0], ins[1], _opt(ins, 2), "none")
    return [attention_from_qkv(ctx, node, qkv, ins, 3, attrs)]


@lower("MultiHeadAttention")
def _multi_head_attention(ctx, node, ins, attrs):
    q, k, v = (ctx.operand(node, i, ins[i]) for i in range(3))
    mask, bias = _opt(ins, 3), _opt(ins, 4)
    mask = ctx.operand(node, 3, mask) if mask is not None else None
    bias = ctx.operand(node, 4, bias) if bias is not None and not ctx.is_static(bias) else bias
    causal = bool(int(attrs.get("unidirectional", 0)))
    return [
        ctx.kernels.multi_head_attention(
            ctx, node, q, k, v, mask, bias, int(attrs["num_heads"]), float(attrs["scale"]),
            float(attrs["mask_filter_value"]), causal,
        )
    ]


@lower("ScaledDotProductAttention")
def _sdpa(ctx, node, ins, attrs):
    q, k, v = (ctx.operand(node, i, ins[i]) for i in range(3))
    mask = _opt(ins, 3)
    mask = ctx.operand(node, 3, mask) if mask is not None else None
    return [ctx.kernels.sdpa(ctx, node, q, k, v, mask, float(attrs["scale"]), bool(attrs["is_causal"]))]


# ---------------------------------------------------------------- case 3
@lower("LayerNorm")
def _layer_norm(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    axis = int(attrs.get("axis", -1)) % ctx.ndim(x)
    return [ctx.kernels.layer_norm(ctx, node, x, ins[1], _opt(ins, 2), axis, float(attrs["epsilon"]))]


@lower("SkipLayerNorm")
def _skip_layer_norm(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    skip = ctx.operand(node, 1, ins[1], ctx.dtype(x))
    want_sum = len(node.outputs) > 1
    y, s = ctx.kernels.skip_layer_norm(
        ctx, node, x, skip, ins[2], _opt(ins, 3), _opt(ins, 4), float(attrs["epsilon"]), want_sum
    )
    return [y, s] if want_sum else [y]


@lower("RMSNorm")
def _rms_norm(ctx, node, ins, attrs):
    x = ctx.operand(node, 0, ins[0])
    rank = ctx.ndim(x)
    axes = list(range(int(attrs.get("axis", -1)) % rank, rank))
    in_dt = ctx.dtype(x)
    ct = emit.compute_dtype(ctx, x)
    xf = ctx.astype(x, ct)
    ms = ctx.emit(R.mean(R.multiply(xf, xf), axes, keepdims=True))
    inv = ctx.emit(R.rsqrt(R.add(ms, ctx.const(np.asarray(float(attrs["epsilon"])), ct))))
    y = ctx.emit(R.multiply(R.multiply(xf, inv), ctx.expr(ins[1], ct)))
    return [ctx.astype(y, in_dt)]


# ---------------------------------------------------------------- case 4
@lower("EmbedLayerNorm")
def _embed_layer_norm(ctx, node, ins, attrs):
    ids, types, word, pos, type_emb, gamma, beta = ins[:7]
    pos_ids = _opt(ins, 7)
    seq = ctx.shape(ids)[-1]
    word_v = ctx.operand(node, 2, word)
    s = ctx.emit(R.take(word_v, wrap_index(ctx, node, 0, ids, ctx.shape(word_v)[0]), axis=0, mode="clip"))
    dt = ctx.dtype(s)
    if pos_ids is None:  # positions 0..S-1: a slice of the whole table (one parameter for every bucket)
        p = ctx.emit(R.strided_slice(ctx.operand(node, 3, pos), [0], [0], [seq]))
    else:
        p = ctx.emit(R.take(ctx.operand(node, 3, pos), wrap_index(ctx, node, 7, pos_ids, ctx.shape(pos)[0]), axis=0, mode="clip"))
    s = ctx.emit(R.add(s, ctx.expr(p, dt)))
    if types is not None:
        te_v = ctx.operand(node, 4, type_emb, dt)
        s = ctx.emit(R.add(s, R.take(te_v, wrap_index(ctx, node, 1, types, ctx.shape(te_v)[0]), axis=0, mode="clip")))
    y = ctx.kernels.layer_norm(ctx, node, s, gamma, beta, -1, float(attrs["epsilon"]))
    return [y, s][: len(node.outputs)]
