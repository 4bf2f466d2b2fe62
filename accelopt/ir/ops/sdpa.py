"""``ScaledDotProductAttention`` (accelopt domain): torch's ``scaled_dot_product_attention``.

Inputs ``(q, k, v[, attn_mask])`` with shapes ``q: [..., L, E]``, ``k: [..., S, E]``,
``v: [..., S, Ev]``; the output is ``[..., L, Ev]`` in q's dtype. Semantics, case by case:

1. ``scores = (q @ k^T) * scale``, with ``scale = attrs["scale"]``, or ``1/sqrt(E)`` when
   the attribute is 0 (torch's ``scale=None``).
2. ``attn_mask`` of dtype bool: ``True`` marks a pair that takes part in attention; a
   ``False`` pair gets ``-inf`` before the softmax.
3. ``attn_mask`` of a float dtype: added to the scores (an additive mask).
4. ``is_causal=1``: query ``i`` sees keys ``j <= i`` (the top-left aligned lower triangle
   of an ``L x S`` matrix, as in torch). It may be combined with a mask.
5. The softmax over the last axis is the stable one (max subtracted); a row in which
   every key is masked gives zeros, not NaN (torch's ``_safe_softmax``).
6. No dropout: the frontend refuses a ``dropout_p`` other than 0.

The kernel computes in float32 for float16/bfloat16 inputs and float64 for float64.
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import broadcast_shapes
from accelopt.ir.ops.onnx_math import matmul
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import TensorType, dims_compatible


def _sdpa_infer(ctx: InferContext) -> list[TensorType]:
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    if not q.dtype.is_float:
        raise ctx.error(f"query must be a float tensor, got {q}")
    for name, t in (("key", k), ("value", v)):
        if t.dtype != q.dtype:
            raise ctx.error(f"{name} dtype {t.dtype} differs from query dtype {q.dtype}")
    if ctx.has(3):
        m = ctx.type(3)
        if m.dtype != DType.BOOL and not m.dtype.is_float:
            raise ctx.error(f"attn_mask must be bool or float, got {m}")
    if q.shape is None or k.shape is None or v.shape is None:
        return [TensorType(q.dtype, None)]
    if len(q.shape) < 2 or len(k.shape) < 2 or len(v.shape) < 2:
        raise ctx.error(f"q, k, v need rank >= 2, got {q}, {k}, {v}")
    if not dims_compatible(q.shape[-1], k.shape[-1]):
        raise ctx.error(f"query and key head sizes differ: {q} vs {k}")
    if not dims_compatible(k.shape[-2], v.shape[-2]):
        raise ctx.error(f"key and value lengths differ: {k} vs {v}")
    try:
        batch = broadcast_shapes([q.shape[:-2], k.shape[:-2], v.shape[:-2]])
    except ValueError as e:
        raise ctx.error(f"batch dimensions do not broadcast: {e}") from None
    return [TensorType(q.dtype, tuple(batch or ()) + (q.shape[-2], v.shape[-1]))]


def sdpa_reference(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    attn_mask: np.ndarray | None = None,
    *,
    scale: float = 0.0,
    is_causal: bool = False,
) -> np.ndarray:
    """Numpy scaled dot-product attention (cases 1-5 of the module docstring)."""
    out_dtype = q.dtype
    compute = np.float64 if q.dtype == np.float64 else np.float32
    q, k, v = (np.asarray(a, dtype=compute) for a in (q, k, v))
    s = float(scale) if scale else 1.0 / float(np.sqrt(q.shape[-1]))
    scores = matmul(q, np.swapaxes(k, -1, -2))  # case 1
    scores *= compute(s)
    allowed: np.ndarray | None = None
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:  # case 2
            allowed = attn_mask
        else:  # case 3
            scores = scores + attn_mask.astype(compute)
    if is_causal:  # case 4
        length, keys = scores.shape[-2], scores.shape[-1]
        causal = np.tril(np.ones((length, keys), dtype=np.bool_))
        allowed = causal if allowed is None else np.logical_and(allowed, causal)
    if allowed is not None:
        scores = np.where(allowed, scores, compute(-np.inf))
    # case 5: stable softmax; rows without any finite score become zeros
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, compute(0))
    e = np.exp(scores - row_max)
    denom = np.sum(e, axis=-1, keepdims=True)
    probs = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return matmul(probs, v).astype(out_dtype, copy=False)


def _sdpa_kernel(ins, attrs, n_out):
    q, k, v = ins[0], ins[1], ins[2]
    mask = ins[3] if len(ins) > 3 else None
    return [sdpa_reference(q, k, v, mask, scale=attrs["scale"], is_causal=bool(attrs["is_causal"]))]


define_op(
    "ScaledDotProductAttention",
    inputs=(3, 4),
    attrs={"scale": AttrSpec("float", 0.0), "is_causal": AttrSpec("int", 0)},
    infer=_sdpa_infer,
    kernel=_sdpa_kernel,
    domain="accelopt",
    doc=__doc__ or "",
)
