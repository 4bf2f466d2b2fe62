"""``CudaKernels``: the gpu target's emitters for the heavy ops (the ``Kernels`` hook of the Relax lowering).

The generic emitters compute every float op in float32 (the reference
kernels' rule). On a GPU that throws away the tensor cores for attention:
an fp16 graph's ``Q K^T`` and ``P V`` would run as fp32 SIMT matmuls. Here:

1. ``attention`` / ``sdpa`` with fp16 (or bf16) inputs: ``Q K^T`` multiplies
   fp16 operands into an fp32 accumulator; scale, mask and softmax run in
   fp32; the probabilities are rounded to fp16 for ``P V`` (fp32 accumulator)
   as fused-attention kernels do; the result is cast to the input's dtype.
   The products are batched matmuls [B*heads, S, 64]: ``schedules.py``'s
   ``small-fp16-matmul`` rule puts them on the tensor cores.
2. ``linear`` and ``matmul`` keep the generic forms, which already multiply
   fp16 operands into fp32 (``R.matmul(..., out_dtype="float32")``); bias and
   activation follow in fp32 and FuseOps makes them the matmul kernel's
   epilogue (one kernel per projection, bias + GELU included), which
   dlight's Matmul rule schedules on the tensor cores.
3. float32 inputs: the generic emitters, unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.targets.relax import emit
from accelopt.targets.relax.kernels import Kernels, head_scale, merge_heads, scale_and_mask, split_heads
from accelopt.targets.relax.lowering import LowerCtx

R = relax.op
_HALF = ("float16", "bfloat16")


class CudaKernels(Kernels):
    """fp16 attention on tensor cores (case 1); everything else generic (cases 2-3)."""

    name = "cuda"

    def attention(
        self,
        ctx: LowerCtx,
        node: Node,
        qkv: Any,
        mask: Any,
        num_heads: int,
        scale: float,
        mask_filter_value: float,
    ) -> relax.Expr:
        in_dt = ctx.dtype(qkv)
        if in_dt not in _HALF:
            return super().attention(ctx, node, qkv, mask, num_heads, scale, mask_filter_value)
        q, k, v = split_heads(ctx, qkv, num_heads)
        scores = ctx.emit(R.matmul(q, R.permute_dims(k, [0, 1, 3, 2]), out_dtype="float32"))
        scores = scale_and_mask(ctx, scores, mask, head_scale(ctx, q, scale), mask_filter_value)
        probs = ctx.emit(R.astype(R.nn.softmax(scores, axis=-1), in_dt))
        out = ctx.emit(R.astype(R.matmul(probs, v, out_dtype="float32"), in_dt))  # [B, N, S, D]
        return merge_heads(ctx, out)

    def sdpa(
        self, ctx: LowerCtx, node: Node, q: Any, k: Any, v: Any, mask: Any, scale: float, is_causal: bool
    ) -> relax.Expr:
        in_dt = ctx.dtype(q)
        if in_dt not in _HALF or mask is not None or is_causal:
            # masks with fully-masked rows need the generic safe softmax; unmasked fp16 SDPA is the common case
            return super().sdpa(ctx, node, q, k, v, mask, scale, is_causal)
        q, k, v = (ctx.astype(ctx.expr(t), in_dt) for t in (q, k, v))
        e = ctx.shape(q)[-1]
        sc = scale if scale else 1.0 / float(np.sqrt(e))
        nd = ctx.ndim(k)
        kt = ctx.emit(R.permute_dims(k, [*range(nd - 2), nd - 1, nd - 2]))
        scores = ctx.emit(R.matmul(q, kt, out_dtype="float32"))
        scores = ctx.emit(R.multiply(scores, emit.scalar(ctx, sc, scores)))
        probs = ctx.emit(R.astype(R.nn.softmax(scores, axis=-1), in_dt))
        out = ctx.emit(R.matmul(probs, v, out_dtype="float32"))
        return ctx.astype(out, in_dt)
