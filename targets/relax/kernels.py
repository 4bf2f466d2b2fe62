"""The kernel hook: how the heavy ops are emitted, overridable per target.

The Relax lowering (``lowering.py``, ``ops_*.py``) emits every op itself
except the ones that decide a model's speed; for those it calls a method of
the ``Kernels`` object it was given. The methods here are the generic,
correct defaults (Relax ops, legalized to TOPI/TE by the target's
pipeline). A target passes a subclass that overrides some of them: the cpu
target's ``X86Kernels`` (``targets/cpu/kernels/``), the gpu target's own.

Contract (stable; other targets code against it):

- Every method receives ``ctx`` (a ``LowerCtx``) and ``node`` (the IR node
  being lowered: use ``node.name`` in errors and PrimFunc names) and returns
  Relax expression(s) already emitted through ``ctx``. Run-time tensors are
  Relax expressions with static shapes (``ctx.shape(x)``, ``ctx.dtype(x)``).
- "Operand" arguments (scales, zero points, biases, gamma/beta) are either a
  numpy array (known at compile time) or a Relax expression; ``ctx.expr(x,
  dtype)`` turns either into a Relax expression (small arrays become
  constants, larger ones parameters named after their IR value).
- Weights known at compile time arrive as ``Weight`` / ``QWeight``: numpy
  arrays plus a stable ``name``. Store what the kernel needs with
  ``ctx.param(name, array) -> relax.Var``: a function parameter, saved
  outside the compiled library, shared by name across the module's
  functions (sequence buckets). Name derived arrays after the weight
  (``f"{w.name}@x86p16"``) so two layouts of one weight never collide.
- Emit TE computes with ``ctx.emit_te(fn, *args, primfunc_name_hint=...)``;
  to have the cpu target schedule a PrimFunc with a kernel-specific rule,
  mark its main ``te.compute`` with ``attrs={"accelopt.kernel": NAME}`` (a
  block annotation: it survives Relax's operator fusion, which drops PrimFunc
  attributes; the PrimFunc attribute is read too) and register the rule with
  ``accelopt.targets.cpu.schedule_rules.register_rule(NAME, fn)``.
- Results have the dtype stated per method; the lowering casts to the IR's
  dtype afterwards if they differ.
- A kernel that cannot handle a case calls the base method
  (``super().linear(...)``): the defaults handle every case.

Methods (shapes for the common case; all accept leading batch dims):

``linear(ctx, node, x, w, bias, activation)``
    ``act(x @ W + b)``: ``x`` [..., K] float; ``w.array`` [K, N] (float, known
    at compile time); ``bias`` [N] operand or None; ``activation`` one of
    ``none, gelu, gelu_tanh, gelu_sigmoid, relu``. Result: x's dtype.
``qlinear(ctx, node, x_q, x_scale, x_zp, w, bias, y_scale, y_zp, activation)``
    ``QLinear``: ``acc = (x_q - x_zp) @ (w_q - w_zp)`` in int32, exact, then
    ``act(acc * (x_scale * w_scale) + bias)`` in float32, requantized when
    ``y_scale`` is given (``saturate(round(y / y_scale) + y_zp)``, int8 when
    ``y_zp`` is None). ``x_q`` int8/uint8 [..., K]; ``x_scale`` float32 ``()``
    or per row ``[..., 1]``; ``x_zp`` like ``x_scale`` in x_q's type, or None;
    ``w`` a ``QWeight``. Result float32, or the requantized integer type.
``attention(ctx, node, qkv, mask, num_heads, scale, mask_filter_value)``
    the core of ``Attention`` / ``QAttention`` after the packed projection:
    ``qkv`` [B, S, 3H] float (q, k, v each [B, S, H], heads of size H /
    num_heads); ``mask`` [B, S] key-padding mask (nonzero keeps; padded keys
    get ``mask_filter_value`` added) or None; ``scale`` (0: 1/sqrt(head
    size)). Result [B, S, H] in qkv's dtype.
``multi_head_attention(ctx, node, q, k, v, mask, bias, num_heads, scale, mask_filter_value, unidirectional)``
    the core of ``MultiHeadAttention`` (and of ``Attention`` / ``QAttention``
    with an ``attention_bias`` or ``unidirectional=1``): ``q`` [B, S, H], ``k``
    [B, T, H], ``v`` [B, T, Hv] float; ``bias`` broadcastable to [B, N, S, T]
    (operand) or None, added after the scale; masked pairs (``mask`` [B, T]
    entry 0, and keys after the query when ``unidirectional``) get
    ``mask_filter_value`` added once. Result [B, S, Hv] in q's dtype.
``sdpa(ctx, node, q, k, v, mask, scale, is_causal)``
    ``ScaledDotProductAttention``: q [..., L, E], k [..., S, E], v [..., S,
    Ev]; ``mask`` bool (True takes part) or float (added) broadcastable to
    [..., L, S], or None; rows with every key masked give zeros. Result q's dtype.
``matmul(ctx, node, a, b)``
    two run-time operands with numpy ``matmul`` semantics (batched,
    broadcast, 1-D). Result a's dtype (int32 for integers).
``layer_norm(ctx, node, x, gamma, beta, axis, epsilon)``
    normalization over the axes ``axis..`` with two-pass statistics in
    float32. Result x's dtype.
``skip_layer_norm(ctx, node, x, skip, gamma, beta, bias, epsilon, want_sum)``
    ``s = x + skip (+ bias)``; returns ``(layer_norm(s), s if want_sum else None)``.
``dynamic_quantize(ctx, node, x, to, symmetric, granularity)``
    ``DynamicQuantize``: returns ``(y, scale, zero_point)`` as the op defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import relax

from accelopt.ir.graph import Node
from accelopt.ir.ops.quantized import ZERO_RANGE_SCALE, qrange, symmetric_zero_point
from accelopt.targets.relax import emit
from accelopt.targets.relax.lowering import LowerCtx

R = relax.op


@dataclass(frozen=True)
class Weight:
    """A float weight known at compile time: ``array`` [K, N] and the stable ``name`` to derive parameter names from."""

    array: np.ndarray
    name: str

    @property
    def k(self) -> int:
        return int(self.array.shape[0])

    @property
    def n(self) -> int:
        return int(self.array.shape[1])


@dataclass(frozen=True)
class QWeight:
    """An integer weight known at compile time: ``q`` [K, N] int8/uint8, ``scale`` float32 ``()`` or [N],
    ``zero_point`` ``()`` / [N] in q's type or None, and the stable ``name``."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    name: str

    @property
    def k(self) -> int:
        return int(self.q.shape[0])

    @property
    def n(self) -> int:
        return int(self.q.shape[1])


class Kernels:
    """Generic, correct emitters of the heavy ops (see the module docstring for the contract)."""

    #: a short name for reports ("generic", "x86", "cuda"...)
    name = "generic"

    # ------------------------------------------------------------ matmuls
    def linear(self, ctx: LowerCtx, node: Node, x: Any, w: Weight, bias: Any, activation: str) -> relax.Expr:
        in_dt = ctx.dtype(x)
        ct = emit.compute_dtype(ctx, x)
        wv = ctx.param(w.name, w.array if w.array.dtype == np.dtype(in_dt) else w.array.astype(in_dt))
        y = ctx.emit(R.matmul(x, wv, out_dtype=ct))
        if bias is not None:
            y = ctx.emit(R.add(y, ctx.expr(bias, ct)))
        y = emit.activation(ctx, y, activation)
        return ctx.astype(y, in_dt)

    def qlinear(
        self,
        ctx: LowerCtx,
        node: Node,
        x_q: Any,
        x_scale: Any,
        x_zp: Any,
        w: QWeight,
        bias: Any,
        y_scale: Any,
        y_zp: Any,
        activation: str,
    ) -> relax.Expr:
        wq = ctx.param(w.name, w.q)
        wz = None if w.zero_point is None else ctx.expr(w.zero_point, name=f"{w.name}@zero_point")
        acc = emit.int_matmul(ctx, x_q, wq, x_zp, wz)
        y = ctx.emit(R.multiply(R.astype(acc, "float32"), scales_product(ctx, x_scale, w.scale, w.name)))
        if bias is not None:
            y = ctx.emit(R.add(y, ctx.expr(bias, "float32")))
        y = emit.activation(ctx, y, activation)
        if y_scale is None:
            return y
        dt = "int8" if y_zp is None else ctx.dtype(y_zp)
        return emit.quantize(ctx, y, y_scale, y_zp, dt)

    def matmul(self, ctx: LowerCtx, node: Node, a: Any, b: Any) -> relax.Expr:
        a, b = ctx.expr(a), ctx.expr(b)
        dt = ctx.dtype(a)
        if dt in ("float16", "bfloat16"):
            return ctx.astype(ctx.emit(R.matmul(a, b, out_dtype="float32")), dt)
        return ctx.emit(R.matmul(a, b))

    # ---------------------------------------------------------- attention
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
        qkv = ctx.astype(qkv, emit.compute_dtype(ctx, qkv))
        q, k, v = split_heads(ctx, qkv, num_heads)
        scores = ctx.emit(R.matmul(q, R.permute_dims(k, [0, 1, 3, 2])))
        scores = scale_and_mask(ctx, scores, mask, head_scale(ctx, q, scale), mask_filter_value)
        probs = ctx.emit(R.nn.softmax(scores, axis=-1))
        out = ctx.emit(R.matmul(probs, v))  # [B, N, S, D]
        return ctx.astype(merge_heads(ctx, out), in_dt)

    def multi_head_attention(
        self,
        ctx: LowerCtx,
        node: Node,
        q: Any,
        k: Any,
        v: Any,
        mask: Any,
        bias: Any,
        num_heads: int,
        scale: float,
        mask_filter_value: float,
        unidirectional: bool,
    ) -> relax.Expr:
        in_dt = ctx.dtype(q)
        ct = emit.compute_dtype(ctx, q)
        q, k, v = (ctx.astype(ctx.expr(t), ct) for t in (q, k, v))
        b, s, hq = ctx.shape(q)
        t, hv = ctx.shape(k)[1], ctx.shape(v)[-1]
        d, dv = hq // num_heads, hv // num_heads
        qh = ctx.emit(R.permute_dims(R.reshape(q, (b, s, num_heads, d)), [0, 2, 1, 3]))
        kt = ctx.emit(R.permute_dims(R.reshape(k, (b, t, num_heads, d)), [0, 2, 3, 1]))
        vh = ctx.emit(R.permute_dims(R.reshape(v, (b, t, num_heads, dv)), [0, 2, 1, 3]))
        scores = ctx.emit(R.multiply(R.matmul(qh, kt), emit.scalar(ctx, head_scale(ctx, qh, scale), qh)))
        if bias is not None:
            scores = ctx.emit(R.add(scores, ctx.expr(bias, ct)))
        blocked: Any = None
        if mask is not None:
            m = ctx.expr(mask)
            pad = ctx.emit(R.equal(m, ctx.const(np.zeros((), emit.np_of(ctx, m)))))
            blocked = ctx.emit(R.reshape(pad, (b, 1, 1, t)))
        if unidirectional:
            future = ctx.const(np.triu(np.ones((s, t), dtype=np.bool_), 1))
            blocked = future if blocked is None else ctx.emit(R.logical_or(blocked, future))
        if blocked is not None:
            shift = R.where(blocked, emit.scalar(ctx, mask_filter_value, scores), emit.scalar(ctx, 0.0, scores))
            scores = ctx.emit(R.add(scores, shift))
        probs = ctx.emit(R.nn.softmax(scores, axis=-1))
        return ctx.astype(merge_heads(ctx, ctx.emit(R.matmul(probs, vh))), in_dt)

    def sdpa(
        self, ctx: LowerCtx, node: Node, q: Any, k: Any, v: Any, mask: Any, scale: float, is_causal: bool
    ) -> relax.Expr:
        in_dt = ctx.dtype(q)
        ct = emit.compute_dtype(ctx, q)
        q, k, v = (ctx.astype(ctx.expr(t), ct) for t in (q, k, v))
        e = ctx.shape(q)[-1]
        sc = scale if scale else 1.0 / float(np.sqrt(e))
        kt = ctx.emit(R.permute_dims(k, [*range(ctx.ndim(k) - 2), ctx.ndim(k) - 1, ctx.ndim(k) - 2]))
        scores = ctx.emit(R.multiply(R.matmul(q, kt), emit.scalar(ctx, sc, q)))
        allowed: Any = None
        if mask is not None:
            m = ctx.expr(mask)
            if ctx.dtype(m) == "bool":
                allowed = m
            else:
                scores = ctx.emit(R.add(scores, ctx.astype(m, ct)))
        if is_causal:
            length, keys = ctx.shape(scores)[-2:]
            causal = ctx.const(np.tril(np.ones((length, keys), dtype=np.bool_)))
            allowed = causal if allowed is None else ctx.emit(R.logical_and(allowed, causal))
        if allowed is not None:
            neg = ctx.const(np.asarray(-np.inf, np.dtype(ct)))
            scores = ctx.emit(R.where(allowed, scores, neg))
        # the stable softmax; a row without any finite score gives zeros (torch's _safe_softmax)
        row_max = ctx.emit(R.max(scores, axis=-1, keepdims=True))
        row_max = ctx.emit(R.where(R.isfinite(row_max), row_max, emit.scalar(ctx, 0.0, row_max)))
        ex = ctx.emit(R.exp(R.subtract(scores, row_max)))
        denom = ctx.emit(R.sum(ex, axis=-1, keepdims=True))
        safe = ctx.emit(R.where(R.greater(denom, emit.scalar(ctx, 0.0, denom)), denom, emit.scalar(ctx, 1.0, denom)))
        probs = ctx.emit(R.divide(ex, safe))
        out = ctx.emit(R.matmul(probs, v))
        return ctx.astype(out, in_dt)

    # ------------------------------------------------------- normalization
    def layer_norm(
        self, ctx: LowerCtx, node: Node, x: Any, gamma: Any, beta: Any, axis: int, epsilon: float
    ) -> relax.Expr:
        return emit.layer_norm(ctx, ctx.expr(x), gamma, beta, axis, epsilon)

    def skip_layer_norm(
        self,
        ctx: LowerCtx,
        node: Node,
        x: Any,
        skip: Any,
        gamma: Any,
        beta: Any,
        bias: Any,
        epsilon: float,
        want_sum: bool,
    ) -> tuple[relax.Expr, relax.Expr | None]:
        dt = ctx.dtype(x)
        s = ctx.emit(R.add(ctx.expr(x), ctx.expr(skip, dt)))
        if bias is not None:
            s = ctx.emit(R.add(s, ctx.expr(bias, dt)))
        y = emit.layer_norm(ctx, s, gamma, beta, -1, epsilon)
        return y, (s if want_sum else None)

    # -------------------------------------------------------- quantization
    def dynamic_quantize(
        self, ctx: LowerCtx, node: Node, x: Any, to: str, symmetric: bool, granularity: str
    ) -> tuple[relax.Expr, relax.Expr, relax.Expr]:
        xf = ctx.expr(x, "float32")
        shape = ctx.shape(xf)
        qmin, qmax = qrange(np.dtype(to), symmetric)
        if granularity == "row":
            axis: list[int] | None = [len(shape) - 1]
            keep = True
        else:
            axis, keep = None, False
        tiny = ctx.const(np.asarray(ZERO_RANGE_SCALE, np.float32))
        f32 = np.float32
        if symmetric:
            amax = ctx.emit(R.max(R.abs(xf), axis=axis, keepdims=keep))
            scale = ctx.emit(R.maximum(R.divide(amax, ctx.const(f32(127))), tiny))
            zp = ctx.emit(R.full_like(scale, ctx.const(np.asarray(symmetric_zero_point(np.dtype(to)))), to))
            y = emit.quantize(ctx, xf, scale, zp, to)
            return y, scale, zp
        zero = ctx.const(f32(0))
        lo = ctx.emit(R.minimum(R.min(xf, axis=axis, keepdims=keep), zero))
        hi = ctx.emit(R.maximum(R.max(xf, axis=axis, keepdims=keep), zero))
        scale = ctx.emit(R.maximum(R.divide(R.subtract(hi, lo), ctx.const(f32(qmax - qmin))), tiny))
        zpf = ctx.emit(R.subtract(ctx.const(f32(qmin)), R.divide(lo, scale)))
        zpf = ctx.emit(R.round(R.clip(zpf, float(qmin), float(qmax))))
        zp = ctx.emit(R.astype(zpf, to))
        y = emit.quantize(ctx, xf, scale, zp, to)
        return y, scale, zp


def split_heads(ctx: LowerCtx, qkv: Any, num_heads: int) -> tuple[relax.Expr, relax.Expr, relax.Expr]:
    """Packed ``qkv`` [B, S, 3H] -> q, k, v [B, heads, S, H / heads] (the Attention op's layout)."""
    b, s, n3 = ctx.shape(qkv)
    d = n3 // 3 // num_heads
    parts = ctx.emit(R.permute_dims(R.reshape(qkv, (b, s, 3, num_heads, d)), [2, 0, 3, 1, 4]))  # [3,B,N,S,D]
    q, k, v = (ctx.emit(R.squeeze(R.strided_slice(parts, [0], [i], [i + 1]), [0])) for i in range(3))
    return q, k, v


def scale_and_mask(ctx: LowerCtx, scores: Any, mask: Any, scale: float, mask_filter_value: float) -> relax.Expr:
    """``scores`` [B, N, S, S] times ``scale``, plus ``mask_filter_value`` on the keys the [B, S] ``mask``
    pads (its 0 entries)."""
    b, _, _, s = ctx.shape(scores)
    scores = ctx.emit(R.multiply(scores, emit.scalar(ctx, scale, scores)))
    if mask is not None:
        m = ctx.expr(mask)
        pad = ctx.emit(R.equal(m, ctx.const(np.zeros((), emit.np_of(ctx, m)))))
        bias = ctx.emit(R.where(pad, emit.scalar(ctx, mask_filter_value, scores), emit.scalar(ctx, 0.0, scores)))
        scores = ctx.emit(R.add(scores, R.reshape(bias, (b, 1, 1, s))))
    return scores


def head_scale(ctx: LowerCtx, q: Any, scale: float) -> float:
    """The attention scale: ``scale``, or 1/sqrt(head size) when it is 0."""
    return scale if scale else 1.0 / float(np.sqrt(ctx.shape(q)[-1]))


def merge_heads(ctx: LowerCtx, out: Any) -> relax.Expr:
    """[B, heads, S, D] -> [B, S, heads * D]."""
    b, n, s, d = ctx.shape(out)
    return ctx.emit(R.reshape(R.permute_dims(out, [0, 2, 1, 3]), (b, s, n * d)))


def scales_product(ctx: LowerCtx, x_scale: Any, w_scale: np.ndarray | Any, w_name: str) -> relax.Expr:
    """``x_scale * w_scale`` as the reference forms it (``w_scale`` flattened to [N] or a scalar), float32."""
    ws = np.asarray(w_scale, np.float32).reshape(-1) if ctx.is_static(w_scale) else w_scale
    if ctx.is_static(ws) and ws.size == 1:
        ws = ws.reshape(())
    wsv = ctx.expr(ws, "float32", name=f"{w_name}@scale")
    if ctx.is_static(x_scale):
        xs = np.asarray(x_scale, np.float32)
        if ctx.is_static(ws):
            return ctx.expr((xs * ws).astype(np.float32), name=f"{w_name}@x_scale")
    return ctx.emit(R.multiply(ctx.expr(x_scale, "float32"), wsv))
