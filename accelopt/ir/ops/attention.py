"""Fused attention ops (domain ``accelopt``) and their float reference kernels.

Both ops compute multi-head attention the same way (the *core*); they differ
in where Q, K and V come from:

1. ``Attention(x[B,S,K], qkv_weight[K,3H], qkv_bias?[3H], mask?[B,S],
   attention_bias?){num_heads, scale, mask_filter_value, unidirectional}``:
   self-attention with the packed projection ``qkv = x @ qkv_weight +
   qkv_bias`` split into Q, K, V (columns ``[0,H)``, ``[H,2H)``, ``[2H,3H)``),
   as in onnxruntime's com.microsoft.Attention.
2. ``MultiHeadAttention(query[B,S,Hq], key[B,T,Hq], value[B,T,Hv],
   key_padding_mask?[B,T], attention_bias?){num_heads, scale,
   mask_filter_value, unidirectional}``: Q, K and V already projected (by
   ``Linear`` ops or anything else), as in com.microsoft.MultiHeadAttention.
   It is what attention fuses into when Q and K read another input than V
   (MobileBERT), when the projections are used elsewhere too (DeBERTa's
   disentangled bias, ConvBERT's convolution half) or are not constant.

The core, in float32 (float64 for float64 inputs), per case:

a. Heads: ``[B, S, N*D] -> [B, N, S, D]`` for Q and K (``D = Hq / N``),
   ``[B, T, N*Dv] -> [B, N, T, Dv]`` for V.
b. ``scores = (Q @ K^T) * scale``; ``scale`` 0 means ``1/sqrt(D)`` (T5 has no
   scaling at all: its attention carries ``scale=1``).
c. ``attention_bias`` (a relative position bias, a computed disentangled
   bias, an additive mask that is not a plain key-padding mask) is added; it
   broadcasts to ``[B, N, S, T]`` (rank <= 4, aligned to the right).
d. Masked pairs get ``mask_filter_value`` added once: keys whose
   ``mask``/``key_padding_mask`` entry is 0 and, with ``unidirectional=1``,
   keys after the query (``j > i``, the top-left aligned causal mask).
   A row in which every key is masked gets a near-uniform distribution
   (as onnxruntime does), not zeros.
e. Softmax over the keys, ``probs @ V``, heads merged back to ``[B, S, N*Dv]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import dims_compatible_k
from accelopt.ir.ops.onnx_math import matmul, softmax
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType, dims_compatible

DOMAIN = "accelopt"

#: attributes shared by Attention, MultiHeadAttention and the quantized QAttention
ATTENTION_ATTRS = {
    "num_heads": AttrSpec("int"),
    "scale": AttrSpec("float", 0.0),
    "mask_filter_value": AttrSpec("float", -10000.0),
    "unidirectional": AttrSpec("int", 0),
}


def _compute_dtype(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


# ----------------------------------------------------------------------- core
def attention_core(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    num_heads: int,
    *,
    scale: float = 0.0,
    mask: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    unidirectional: bool = False,
    mask_filter_value: float = -10000.0,
) -> np.ndarray:
    """Cases a-e on projected ``q [B,S,Hq]``, ``k [B,T,Hq]``, ``v [B,T,Hv]`` (already in the compute dtype)."""
    ct = q.dtype.type
    bsz, seq, hq = q.shape
    keys, hv = k.shape[1], v.shape[-1]
    d, dv = hq // num_heads, hv // num_heads
    qh = q.reshape(bsz, seq, num_heads, d).transpose(0, 2, 1, 3)
    kt = k.reshape(bsz, keys, num_heads, d).transpose(0, 2, 3, 1)
    vh = v.reshape(bsz, keys, num_heads, dv).transpose(0, 2, 1, 3)
    scores = matmul(qh, kt)  # [B, N, S, T]
    scores *= ct(scale if scale else 1.0 / np.sqrt(d))
    if bias is not None:  # case c
        b = np.asarray(bias)
        if b.ndim > 4 or np.broadcast_shapes(b.shape, scores.shape) != scores.shape:
            raise ValueError(f"attention_bias of shape {b.shape} does not broadcast to the scores {scores.shape}")
        scores += b.astype(ct, copy=False)
    blocked: np.ndarray | None = None  # case d
    if mask is not None:
        blocked = (np.asarray(mask) == 0)[:, None, None, :]
    if unidirectional:
        future = np.triu(np.ones((seq, keys), dtype=np.bool_), 1)
        blocked = future if blocked is None else blocked | future
    if blocked is not None:
        scores += np.where(blocked, ct(mask_filter_value), ct(0))
    probs = softmax(scores, -1, out=scores)
    ctx = matmul(probs, vh)  # [B, N, S, Dv]
    return ctx.transpose(0, 2, 1, 3).reshape(bsz, seq, hv)


def attention_from_qkv(
    qkv: np.ndarray,
    mask: np.ndarray | None,
    num_heads: int,
    scale: float,
    mask_filter_value: float,
    *,
    bias: np.ndarray | None = None,
    unidirectional: bool = False,
) -> np.ndarray:
    """The core on a packed projection ``qkv [B, S, 3H]`` (the layout of ``Attention``)."""
    hidden = qkv.shape[-1] // 3
    return attention_core(
        qkv[..., :hidden],
        qkv[..., hidden : 2 * hidden],
        qkv[..., 2 * hidden :],
        num_heads,
        scale=scale,
        mask=mask,
        bias=bias,
        unidirectional=unidirectional,
        mask_filter_value=mask_filter_value,
    )


def attention(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    mask: np.ndarray | None,
    num_heads: int,
    scale: float,
    mask_filter_value: float,
    *,
    bias: np.ndarray | None = None,
    unidirectional: bool = False,
) -> np.ndarray:
    """Reference ``Attention``: packed QKV projection of ``x``, then the core."""
    ct = _compute_dtype(x)
    qkv = matmul(x.astype(ct, copy=False), w.astype(ct, copy=False))
    if b is not None:
        qkv += b.astype(ct, copy=False)
    out = attention_from_qkv(
        qkv, mask, num_heads, scale, mask_filter_value, bias=bias, unidirectional=unidirectional
    )
    return out.astype(x.dtype, copy=False)


def multi_head_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    bias: np.ndarray | None,
    num_heads: int,
    *,
    scale: float = 0.0,
    unidirectional: bool = False,
    mask_filter_value: float = -10000.0,
) -> np.ndarray:
    """Reference ``MultiHeadAttention``: the core on projected q, k, v."""
    ct = _compute_dtype(q)
    out = attention_core(
        q.astype(ct, copy=False),
        k.astype(ct, copy=False),
        v.astype(ct, copy=False),
        num_heads,
        scale=scale,
        mask=mask,
        bias=bias,
        unidirectional=unidirectional,
        mask_filter_value=mask_filter_value,
    )
    return out.astype(q.dtype, copy=False)


# ------------------------------------------------------------ type inference
def _check_heads(ctx: InferContext) -> int:
    heads = int(ctx.attrs["num_heads"])
    if heads <= 0:
        raise ctx.error(f"num_heads must be positive, got {heads}")
    if int(ctx.attrs["unidirectional"]) not in (0, 1):
        raise ctx.error(f"unidirectional must be 0 or 1, got {ctx.attrs['unidirectional']}")
    return heads


def check_attention_bias(ctx: InferContext, index: int, queries: Dim, keys: Dim) -> None:
    """The optional ``attention_bias`` at ``index``: float, rank <= 4, last dims ``[queries|1, keys|1]``."""
    if not ctx.has(index):
        return
    t = ctx.type(index)
    if not t.dtype.is_float:
        raise ctx.error(f"attention_bias must be a float tensor, got {t}")
    if t.shape is None:
        return
    if len(t.shape) > 4:
        raise ctx.error(f"attention_bias must broadcast to [batch, heads, queries, keys], got {t}")
    tail = [queries, keys][-len(t.shape) :] if t.shape else []
    for got, want in zip(t.shape[-2:], tail):
        if got != 1 and not dims_compatible(got, want):
            raise ctx.error(f"attention_bias {t} does not broadcast to [.., {queries}, {keys}]")


def _check_mask(ctx: InferContext, index: int, what: str) -> None:
    if ctx.has(index):
        m = ctx.type(index)
        if m.shape is not None and len(m.shape) != 2:
            raise ctx.error(f"{what} must be a key-padding mask [batch, keys], got {m}")


def attention_result(
    ctx: InferContext, x: TensorType, w: TensorType, mask_index: int, dtype: DType, bias_index: int | None = None
) -> list[TensorType]:
    """Type of ``Attention`` and ``QAttention``: checks the attributes, the input ``x [B, S, K]``, the packed weight
    ``w [K, 3H]``, the key-padding mask ``[B, S]`` at ``mask_index`` and the attention bias at ``bias_index``
    (when given); returns ``[B, S, H]`` of ``dtype``."""
    heads = _check_heads(ctx)
    if x.shape is not None and len(x.shape) != 3:
        raise ctx.error(f"input must be [batch, seq, hidden], got {x}")
    hidden: Dim = None
    if w.shape is not None:
        if len(w.shape) != 2:
            raise ctx.error(f"qkv_weight must be [hidden, 3*hidden], got {w}")
        n3 = w.shape[1]
        if isinstance(n3, int):
            if n3 % 3 or (n3 // 3) % heads:
                raise ctx.error(f"qkv_weight {w}: 3*hidden is not divisible by 3*num_heads={3 * heads}")
            hidden = n3 // 3
        if x.shape is not None and not dims_compatible_k(x.shape[-1], w.shape[0]):
            raise ctx.error(f"input {x} does not match qkv_weight {w}")
    _check_mask(ctx, mask_index, "mask")
    seq = None if x.shape is None else x.shape[1]
    if bias_index is not None:
        check_attention_bias(ctx, bias_index, seq, seq)
    if x.shape is None:
        return [TensorType(dtype, None)]
    return [TensorType(dtype, (x.shape[0], x.shape[1], hidden))]


def _attention_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    return attention_result(ctx, x, ctx.type(1), 3, x.dtype, bias_index=4)


def _heads_divide(ctx: InferContext, t: TensorType, heads: int, what: str) -> None:
    if t.shape is None:
        return
    if len(t.shape) != 3:
        raise ctx.error(f"{what} must be [batch, seq, heads*head_size], got {t}")
    h = t.shape[-1]
    if isinstance(h, int) and h % heads:
        raise ctx.error(f"{what} {t}: hidden size {h} is not divisible by num_heads={heads}")


def _mha_infer(ctx: InferContext) -> list[TensorType]:
    heads = _check_heads(ctx)
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    if not q.dtype.is_float:
        raise ctx.error(f"query must be a float tensor, got {q}")
    for name, t in (("key", k), ("value", v)):
        if t.dtype != q.dtype:
            raise ctx.error(f"{name} is {t} but query is {q}")
    for name, t in (("query", q), ("key", k), ("value", v)):
        _heads_divide(ctx, t, heads, name)
    if q.shape is not None and k.shape is not None and not dims_compatible(q.shape[-1], k.shape[-1]):
        raise ctx.error(f"query {q} and key {k} differ in hidden size")
    if k.shape is not None and v.shape is not None and not dims_compatible(k.shape[1], v.shape[1]):
        raise ctx.error(f"key {k} and value {v} differ in length")
    _check_mask(ctx, 3, "key_padding_mask")
    seq = None if q.shape is None else q.shape[1]
    keys = None if k.shape is None else k.shape[1]
    check_attention_bias(ctx, 4, seq, keys)
    if int(ctx.attrs["unidirectional"]) and isinstance(seq, int) and isinstance(keys, int) and seq != keys:
        raise ctx.error(f"unidirectional attention needs as many queries as keys, got {seq} and {keys}")
    if q.shape is None or v.shape is None:
        return [TensorType(q.dtype, None)]
    return [TensorType(q.dtype, (q.shape[0], q.shape[1], v.shape[2]))]


# ------------------------------------------------------------------- kernels
def _opt(ins: list[Any], i: int) -> Any:
    return ins[i] if len(ins) > i else None


def core_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``attention_core`` held in an attention op's attributes."""
    return {
        "scale": float(attrs["scale"]),
        "unidirectional": bool(int(attrs["unidirectional"])),
        "mask_filter_value": float(attrs["mask_filter_value"]),
    }


def _attention_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    out = attention(
        ins[0], ins[1], _opt(ins, 2), _opt(ins, 3), int(attrs["num_heads"]), bias=_opt(ins, 4), **core_attrs(attrs)
    )
    return [out]


def _mha_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    out = multi_head_attention(
        ins[0], ins[1], ins[2], _opt(ins, 3), _opt(ins, 4), int(attrs["num_heads"]), **core_attrs(attrs)
    )
    return [out]


define_op(
    "Attention",
    domain=DOMAIN,
    inputs=(2, 5),
    attrs=ATTENTION_ATTRS,
    infer=_attention_infer,
    kernel=_attention_kernel,
    doc=(
        "Multi-head self-attention with packed QKV weights [K, 3H], a key-padding mask [B, S], an additive "
        "attention_bias and an optional causal (unidirectional) mask."
    ),
)

define_op(
    "MultiHeadAttention",
    domain=DOMAIN,
    inputs=(3, 5),
    attrs=ATTENTION_ATTRS,
    infer=_mha_infer,
    kernel=_mha_kernel,
    doc=(
        "Multi-head attention of projected query [B,S,H], key [B,T,H], value [B,T,Hv] with a key-padding mask "
        "[B, T], an additive attention_bias and an optional causal (unidirectional) mask."
    ),
)

__all__ = [
    "ATTENTION_ATTRS",
    "attention",
    "attention_core",
    "attention_from_qkv",
    "attention_result",
    "check_attention_bias",
    "core_attrs",
    "multi_head_attention",
]
