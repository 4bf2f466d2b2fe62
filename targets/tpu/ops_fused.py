"""TPU lowerings of the fused transformer ops (accelopt domain) and the remaining standard ops.

Cases:

1. ``LayerNorm`` / ``SkipLayerNorm`` / ``EmbedLayerNorm`` / ``RMSNorm``:
   statistics in f32 (the vector unit's type), result cast to the input's type.
2. ``Linear``: the policy matmul with a prepared [K, N] weight; bias and
   activation applied to the f32 accumulator before the cast (XLA fuses them
   into the matmul's epilogue).
3. ``Attention`` / ``MultiHeadAttention``: packed QKV projection (policy
   matmul, prepared weight) or the projected q, k, v; per-head scaled scores
   and context as batched policy matmuls (bf16 x bf16 -> f32), the
   ``attention_bias`` added, masked pairs (padded keys, and later keys when
   ``unidirectional``) shifted by ``mask_filter_value``, softmax in f32.
   The head dim is not padded: it would double attention FLOPs for BERT's 64.
4. ``ScaledDotProductAttention``: torch semantics: bool mask selects, float
   mask adds, causal lower triangle, fully masked rows give zeros.
5. ``QuickGelu``, ``Shrink``, ``EyeLike``: elementwise / constant forms.
6. ``PackedLinear``: ``Linear`` whose weight is stored transposed and/or in
   zero-padded tiles (the layout passes): a constant weight is unpacked to
   ``[k, n]`` at lowering time and then prepared like any other (padded to
   the MXU tile, cast), so the program is the one ``Linear`` gives; a weight
   computed at run time is unpacked in the program.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.ops.fused import unpack_weight
from accelopt.targets.tpu.lowering import LowerCtx, PreparedWeight, jax_dtype, lower, rhs_weight

_SQRT_2_OVER_PI = 0.7978845608028654


def _opt(ins: list[Any], i: int) -> Any:
    """Optional input ``i``: None when it is left out or not given."""
    return ins[i] if len(ins) > i else None


def _add_bias(ctx: LowerCtx, y: Any, bias: Any) -> Any:
    """``y + bias`` with the bias in float32; ``y`` itself when there is no bias."""
    return y if bias is None else y + ctx.jx(bias).astype(jnp.float32)


def _layer_norm(x: Any, gamma: Any, beta: Any, eps: float, axis: int = -1) -> Any:
    """Case 1: normalization over ``axis..`` in f32."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    d = xf - mean
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    y = d * jax.lax.rsqrt(var + jnp.float32(eps)) * gamma.astype(jnp.float32)
    if beta is not None:
        y = y + beta.astype(jnp.float32)
    return y


def _record_other(ctx: LowerCtx, node: Any, ins: list[Any], outs: list[Any]) -> None:
    nbytes = 0
    for x in list(ins) + list(outs):
        if x is not None and not ctx.is_static(x) and hasattr(x, "shape") and hasattr(x, "dtype"):
            nbytes += int(math.prod(x.shape)) * np.dtype(x.dtype).itemsize
    ctx.record(node, "other", sum(int(math.prod(o.shape)) for o in outs), nbytes)


@lower("LayerNorm")
def _layernorm(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    beta = _opt(ins, 2)
    y = _layer_norm(x, ctx.jx(ins[1]), None if beta is None else ctx.jx(beta), attrs["epsilon"], attrs.get("axis", -1))
    out = y.astype(x.dtype)
    _record_other(ctx, node, ins, [out])
    return [out]


@lower("RMSNorm")
def _rmsnorm(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    xf = x.astype(jnp.float32)
    axes = tuple(range(int(attrs.get("axis", -1)) % x.ndim, x.ndim))
    ms = jnp.mean(xf * xf, axis=axes, keepdims=True)
    y = xf * jax.lax.rsqrt(ms + jnp.float32(attrs["epsilon"])) * ctx.jx(ins[1]).astype(jnp.float32)
    out = y.astype(x.dtype)
    _record_other(ctx, node, ins, [out])
    return [out]


@lower("SkipLayerNorm")
def _skip_layernorm(ctx, node, ins, attrs):
    x, skip = ctx.jx(ins[0]), ctx.jx(ins[1])
    s = x + skip.astype(x.dtype)
    bias = _opt(ins, 4)
    if bias is not None:
        s = s + ctx.jx(bias).astype(x.dtype)
    beta = _opt(ins, 3)
    y = _layer_norm(s, ctx.jx(ins[2]), None if beta is None else ctx.jx(beta), attrs["epsilon"])
    outs = [y.astype(x.dtype), s][: len(node.outputs)]
    _record_other(ctx, node, ins, outs)
    return outs


@lower("EmbedLayerNorm", fold=False)
def _embed_layernorm(ctx, node, ins, attrs):
    ids = ctx.jx(ins[0])
    word, pos = ctx.jx(ins[2]), ctx.jx(ins[3])
    s = jnp.take(word, ids, axis=0, mode="clip").astype(jnp.float32)
    pos_ids = _opt(ins, 7)
    if pos_ids is None:
        p = pos[: ids.shape[-1]]
    else:
        p = jnp.take(pos, ctx.jx(pos_ids), axis=0, mode="clip")
    s = s + p.astype(jnp.float32)
    if ins[1] is not None:
        s = s + jnp.take(ctx.jx(ins[4]), ctx.jx(ins[1]), axis=0, mode="clip").astype(jnp.float32)
    s = s.astype(word.dtype)
    y = _layer_norm(s, ctx.jx(ins[5]), ctx.jx(ins[6]), attrs["epsilon"])
    outs = [y.astype(word.dtype), s][: len(node.outputs)]
    _record_other(ctx, node, [ids], outs)
    return outs


def _activation(y: Any, act: str) -> Any:
    if act == "none":
        return y
    if act == "gelu":
        return jax.nn.gelu(y, approximate=False)
    if act == "gelu_tanh":
        return 0.5 * y * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (y + 0.044715 * y * y * y)))
    if act == "gelu_sigmoid":
        return y * jax.nn.sigmoid(1.702 * y)
    if act == "relu":
        return jnp.maximum(y, 0)
    raise TargetError(f"unknown Linear activation {act!r}")


def _project(ctx: LowerCtx, node: Any, ins: list[Any]) -> Any:
    """``x @ W (+ b)`` in float32: inputs 0-2 of Linear and Attention."""
    return _add_bias(ctx, ctx.matmul(node, ins[0], ins[1], out_dtype=np.dtype(np.float32)), _opt(ins, 2))


@lower("Linear", weights=rhs_weight)
def _linear(ctx, node, ins, attrs):
    y = _activation(_project(ctx, node, ins), attrs.get("activation", "none"))
    return [y.astype(ctx.out_dtype(node))]


@lower("QuickGelu")
def _quick_gelu(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    xf = x.astype(jnp.float32)
    out = (xf * jax.nn.sigmoid(attrs.get("alpha", 1.702) * xf)).astype(x.dtype)
    _record_other(ctx, node, ins, [out])
    return [out]


@lower("Shrink")
def _shrink(ctx, node, ins, attrs):
    x = ctx.jx(ins[0])
    lambd, bias = attrs.get("lambd", 0.5), attrs.get("bias", 0.0)
    out = jnp.where(x < -lambd, x + bias, jnp.where(x > lambd, x - bias, jnp.zeros((), x.dtype))).astype(x.dtype)
    return [out]


@lower("EyeLike")
def _eye_like(ctx, node, ins, attrs):
    shape = ins[0].shape
    return [np.eye(shape[0], shape[1], k=int(attrs.get("k", 0)), dtype=node.outputs[0].dtype.np)]


def _softmax_f32(scores: Any) -> Any:
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


def _scores(ctx: LowerCtx, node: Any, q: Any, k: Any, scale: float) -> Any:
    """``scale * q @ k^T`` in float32 (an activation-by-activation matmul: no weight operand)."""
    scores = ctx.matmul(
        node, q, jnp.swapaxes(k, -1, -2), out_dtype=np.dtype(np.float32), lhs_index=None, rhs_index=None
    )
    return scores * jnp.float32(scale)


@lower("Attention", weights=rhs_weight)
def _attention(ctx, node, ins, attrs):
    out = attention_from_qkv(ctx, node, _project(ctx, node, ins), _opt(ins, 3), attrs, _opt(ins, 4))
    return [out.astype(ctx.out_dtype(node))]


@lower("MultiHeadAttention")
def _multi_head_attention(ctx, node, ins, attrs):
    q, k, v = (ctx.jx(ins[i]).astype(jnp.float32) for i in range(3))
    out = attention_core(ctx, node, q, k, v, _opt(ins, 3), attrs, _opt(ins, 4))
    return [out.astype(ctx.out_dtype(node))]


def attention_from_qkv(ctx: LowerCtx, node: Any, qkv: Any, mask: Any, attrs: Mapping[str, Any], bias: Any = None) -> Any:
    """Case 3 after the projection: packed ``qkv [B, S, 3H]`` (f32) -> context ``[B, S, H]`` (f32)."""
    hidden = qkv.shape[-1] // 3
    return attention_core(ctx, node, qkv[..., :hidden], qkv[..., hidden : 2 * hidden], qkv[..., 2 * hidden :], mask,
                          attrs, bias)


def attention_core(
    ctx: LowerCtx, node: Any, q: Any, k: Any, v: Any, mask: Any, attrs: Mapping[str, Any], bias: Any = None
) -> Any:
    """Cases 3 and 4: projected ``q [B,S,H]``, ``k [B,T,H]``, ``v [B,T,Hv]`` (f32) -> ``[B, S, Hv]`` (f32): scaled
    scores, the bias added, masked pairs (padded keys, later keys when causal) shifted by ``mask_filter_value``."""
    heads = int(attrs["num_heads"])
    bsz, seq, keys = q.shape[0], q.shape[1], k.shape[1]
    d, dv = q.shape[-1] // heads, v.shape[-1] // heads
    qh = q.reshape(bsz, seq, heads, d).transpose(0, 2, 1, 3)
    kh = k.reshape(bsz, keys, heads, d).transpose(0, 2, 1, 3)
    vh = v.reshape(bsz, keys, heads, dv).transpose(0, 2, 1, 3)
    scores = _scores(ctx, node, qh, kh, attrs.get("scale", 0.0) or 1.0 / math.sqrt(d))
    if bias is not None:
        scores = scores + ctx.jx(bias).astype(jnp.float32)
    blocked = None
    if mask is not None:
        blocked = (ctx.jx(mask) == 0)[:, None, None, :]
    if attrs.get("unidirectional", 0):
        future = jnp.triu(jnp.ones((seq, keys), dtype=jnp.bool_), 1)
        blocked = future if blocked is None else jnp.logical_or(blocked, future)
    if blocked is not None:
        scores = scores + jnp.where(blocked, jnp.float32(attrs.get("mask_filter_value", -10000.0)), 0.0)
    probs = _softmax_f32(scores)
    ctxt = ctx.matmul(node, probs, vh, out_dtype=np.dtype(np.float32), lhs_index=None, rhs_index=None)
    return ctxt.transpose(0, 2, 1, 3).reshape(bsz, seq, heads * dv)


def _packed_weights(node: Any, attrs: Mapping[str, Any]) -> dict[int, bool]:
    return {1: False}


def _unpacked(arr: Any, attrs: Mapping[str, Any]) -> Any:
    """The stored tiles / transposed matrix of a PackedLinear (numpy or jax) -> ``W [k, n]``."""
    return unpack_weight(
        arr,
        k=int(attrs["k"]),
        n=int(attrs["n"]),
        transposed=bool(attrs["transposed"]),
        tile=tuple(int(t) for t in attrs.get("tile") or ()),
    )


def _unpack(node: Any, attrs: Mapping[str, Any], idx: int, arr: np.ndarray) -> np.ndarray:
    """Case 6 at plan time."""
    return np.asarray(_unpacked(arr, attrs))


@lower("PackedLinear", weights=_packed_weights, unpack=_unpack)
def _packed_linear(ctx, node, ins, attrs):
    w = ins[1]
    if not isinstance(w, PreparedWeight):  # a weight computed at run time: unpack it in the program
        w = _unpacked(ctx.jx(w), attrs)
    return _linear(ctx, node, [ins[0], w, *ins[2:]], attrs)


@lower("ScaledDotProductAttention")
def _sdpa(ctx, node, ins, attrs):
    q, k, v = ctx.jx(ins[0]), ctx.jx(ins[1]), ctx.jx(ins[2])
    scores = _scores(ctx, node, q, k, attrs.get("scale", 0.0) or 1.0 / math.sqrt(q.shape[-1]))
    allowed = None
    mask = _opt(ins, 3)
    if mask is not None:
        m = ctx.jx(mask)
        if m.dtype == jnp.bool_:
            allowed = m
        else:
            scores = scores + m.astype(jnp.float32)
    if attrs.get("is_causal", 0):
        causal = jnp.tril(jnp.ones((scores.shape[-2], scores.shape[-1]), dtype=jnp.bool_))
        allowed = causal if allowed is None else jnp.logical_and(allowed, causal)
    if allowed is not None:
        scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    e = jnp.exp(scores - row_max)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    probs = jnp.where(denom > 0, e / jnp.where(denom > 0, denom, 1.0), 0.0)
    out = ctx.matmul(node, probs, v, out_dtype=np.dtype(np.float32), lhs_index=None, rhs_index=None)
    return [out.astype(jax_dtype(node.outputs[0].dtype))]
