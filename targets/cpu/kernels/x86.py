"""``X86Kernels``: the cpu target's emitters of the heavy ops (the ``Kernels`` hook of ``accelopt.targets.relax``).

Each method emits one of this package's TE computes as its own PrimFunc,
tagged for the schedule-rule dispatcher (``"accelopt.kernel": NAME``; the
rules are registered in ``rules.py``) and marked opaque to Relax's operator
fusion (``op_pattern`` 8), so the PrimFunc reaches its rule exactly as written
here. What each method covers, and when it hands over to the generic
``Kernels`` method (``super()``: correct, slower):

1. ``linear``: float32 ``act(x @ W + b)`` -> ``dense`` with ``W`` packed at
   compile time into ``[N/48, K, 48]`` panels, stored as the parameter
   ``<weight>@x86p48``; other dtypes go generic.
2. ``qlinear``: int8/uint8 activations x an int8 weight with no zero point
   -> ``qdense`` (VNNI) with the weight packed for ``vpdpbusd`` and its
   column sums as parameters; needs the target's ``avx512vnni``, K a multiple
   of 4, static requantization parameters.
3. ``dynamic_quantize`` per row -> ``quantize`` (one pass per row);
   per-tensor goes generic.
4. ``attention`` (float32 packed QKV) and ``sdpa`` (float32, leading dims
   equal for q/k/v, at most two of them) -> the fused attention core; the
   head split/merge are free reshapes.
5. ``layer_norm`` over the last axis with ``[N]`` gamma/beta and
   ``skip_layer_norm`` -> ``norm``.

Leading dims are flattened with ``R.reshape`` (a view in the Relax VM).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from tvm import relax, te

from accelopt.ir.graph import Node
from accelopt.targets.cpu.kernels import attention as attn
from accelopt.targets.cpu.kernels import dense, norm, qdense, quantize
from accelopt.targets.cpu.kernels.dense import KERNEL_ATTR
from accelopt.targets.relax.kernels import Kernels, QWeight, Weight
from accelopt.targets.relax.lowering import LowerCtx, var_name

log = logging.getLogger(__name__)
R = relax.op
_F32 = "float32"
#: TVM's OpPatternKind kOpaque: FuseOps leaves the function alone
OPAQUE = 8


def kernel_attrs(kernel: str) -> dict[str, Any]:
    return {KERNEL_ATTR: kernel, "op_pattern": OPAQUE}


def _prod(dims: Iterable[int]) -> int:
    return int(math.prod(dims))


class X86Kernels(Kernels):
    """The x86 kernels (see the module docstring); ``features``: the target's LLVM CPU features."""

    name = "x86"

    def __init__(self, features: Iterable[str] | None = None) -> None:
        if features is None:
            from accelopt.targets.cpu import host

            features = host.llvm_features(host.detect_mcpu())
        self.features = frozenset(features)

    def _emit(self, ctx: LowerCtx, node: Node, kernel: str, fn: Callable[..., Any], *args: Any) -> relax.Var:
        return ctx.emit_te(
            fn, *args, primfunc_name_hint=f"{kernel}_{var_name(node.name)}", primfunc_attrs=kernel_attrs(kernel)
        )

    def _flat(self, ctx: LowerCtx, x: relax.Expr) -> tuple[relax.Expr, tuple[int, ...]]:
        """``x [..., K]`` as ``[M, K]`` and the leading dims."""
        shape = ctx.shape(x)
        lead = shape[:-1]
        if len(lead) == 1:
            return x, lead
        return ctx.emit(R.reshape(x, (_prod(lead), shape[-1]))), lead

    def _vector(self, ctx: LowerCtx, v: Any, n: int, name: str) -> relax.Expr | None:
        """A float32 ``[n]`` operand (static or run time), or None if it has another shape."""
        if v is None or ctx.shape(v) != (n,):
            return None
        return ctx.expr(v, _F32, name=name) if ctx.is_static(v) else ctx.expr(v, _F32)

    # ------------------------------------------------------------ case 1
    def linear(self, ctx: LowerCtx, node: Node, x: Any, w: Weight, bias: Any, activation: str) -> relax.Expr:
        if ctx.is_static(x) or ctx.dtype(x) != _F32 or w.array.dtype.kind != "f" or ctx.ndim(x) < 1:
            return super().linear(ctx, node, x, w, bias, activation)
        b = self._vector(ctx, bias, w.n, f"{w.name}@bias")
        if bias is not None and b is None:
            return super().linear(ctx, node, x, w, bias, activation)
        x2, lead = self._flat(ctx, x)
        wp = ctx.param(f"{w.name}@x86p{dense.DEFAULT_NV * dense.LANES}", dense.pack_weight(w.array.astype(np.float32)))
        n = w.n

        def compute(xt: te.Tensor, wt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
            return dense.dense_compute(xt, wt, n, rest[0] if rest else None, activation)

        y = self._emit(ctx, node, dense.DENSE_FP32, compute, x2, wp, *([b] if b is not None else []))
        return y if len(lead) == 1 else ctx.emit(R.reshape(y, (*lead, n)))

    # ------------------------------------------------------------ case 2
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
        why = self._qlinear_refusal(ctx, x_q, x_scale, x_zp, w, bias, y_scale, y_zp)
        if why is not None:
            ctx.note(f"{node.op} {node.name}: generic int8 kernel ({why})")
            return super().qlinear(ctx, node, x_q, x_scale, x_zp, w, bias, y_scale, y_zp, activation)
        x2, lead = self._flat(ctx, x_q)
        wp, colsum = qdense.pack_weight(w.q)
        args: list[Any] = [x2, self._per_row(ctx, x_scale, lead, _F32)]
        if x_zp is not None:
            args.append(self._per_row(ctx, x_zp, lead, ctx.dtype(x_q)))
        nr = dense.DEFAULT_NV * dense.LANES
        args += [ctx.param(f"{w.name}@vnni{nr}", wp), ctx.param(f"{w.name}@colsum{nr}", colsum)]
        ws = np.asarray(w.scale, np.float32).reshape(-1)
        args.append(ctx.expr(ws if ws.size > 1 else ws.reshape(()), _F32, name=f"{w.name}@scale"))
        b = self._vector(ctx, bias, w.n, f"{w.name}@bias")
        if b is not None:
            args.append(b)
        requant = None
        if y_scale is not None:
            dt = "int8" if y_zp is None else ctx.dtype(y_zp)
            zp = 0 if y_zp is None else int(np.asarray(y_zp).reshape(()))
            requant = qdense.Requant(float(np.asarray(y_scale, np.float32).reshape(())), zp, dt)
        has_zp, has_bias, n = x_zp is not None, b is not None, w.n

        def compute(*ts: te.Tensor) -> te.Tensor:
            it = iter(ts)
            xt, xs = next(it), next(it)
            xz = next(it) if has_zp else None
            wt, cs, wst = next(it), next(it), next(it)
            bt = next(it) if has_bias else None
            ops = qdense.QDenseOperands(xt, wt, cs, xs, wst, xz, bt)
            return qdense.qdense_compute(ops, n, activation, requant)

        y = self._emit(ctx, node, qdense.DENSE_INT8, compute, *args)
        return y if len(lead) == 1 else ctx.emit(R.reshape(y, (*lead, n)))

    def _qlinear_refusal(
        self, ctx: LowerCtx, x_q: Any, x_scale: Any, x_zp: Any, w: QWeight, bias: Any, y_scale: Any, y_zp: Any
    ) -> str | None:
        if "avx512vnni" not in self.features:
            return "the target CPU has no AVX-512 VNNI"
        if ctx.is_static(x_q):
            return "static activations"
        why = qdense.supported(ctx.dtype(x_q), w.k, w.q, w.zero_point)
        if why is not None:
            return why
        lead = ctx.shape(x_q)[:-1]
        for what, v in (("x_scale", x_scale), ("x_zero_point", x_zp)):
            if v is not None and ctx.shape(v) not in ((), (*lead, 1), (1,) * (len(lead) + 1)):
                return f"{what} of shape {ctx.shape(v)} is neither per tensor nor per row"
        if bias is not None and ctx.shape(bias) != (w.n,):
            return f"bias of shape {ctx.shape(bias)}"
        for what, v in (("y_scale", y_scale), ("y_zero_point", y_zp)):
            if v is not None and not (ctx.is_static(v) and np.size(v) == 1):
                return f"{what} is not a compile-time scalar"
        return None

    def _per_row(self, ctx: LowerCtx, v: Any, lead: tuple[int, ...], dtype: str) -> relax.Expr:
        """A per-row ``[..., 1]`` operand as ``[M]``; a per-tensor one as a scalar."""
        shape = ctx.shape(v)
        if _prod(shape) == 1 and not (shape == (*lead, 1) and _prod(lead) == 1 and not ctx.is_static(v)):
            if ctx.is_static(v):
                return ctx.const(np.asarray(v).reshape(()), dtype)
            return ctx.emit(R.reshape(ctx.expr(v, dtype), ()))
        return ctx.emit(R.reshape(ctx.expr(v, dtype), (_prod(lead),)))

    # ------------------------------------------------------------ case 3
    def dynamic_quantize(
        self, ctx: LowerCtx, node: Node, x: Any, to: str, symmetric: bool, granularity: str
    ) -> tuple[relax.Expr, relax.Expr, relax.Expr]:
        if granularity != "row" or ctx.is_static(x) or ctx.ndim(x) < 1 or to not in ("int8", "uint8"):
            return super().dynamic_quantize(ctx, node, x, to, symmetric, granularity)
        x2, lead = self._flat(ctx, ctx.expr(x, _F32))
        k = ctx.shape(x)[-1]

        def compute(xt: te.Tensor) -> list[te.Tensor]:
            return list(quantize.quantize_compute(xt, to, symmetric))

        out = self._emit(ctx, node, quantize.QUANTIZE_ROW, compute, x2)
        q, s, z = (ctx.emit(relax.TupleGetItem(out, i)) for i in range(3))
        return (
            ctx.emit(R.reshape(q, (*lead, k))),
            ctx.emit(R.reshape(s, (*lead, 1))),
            ctx.emit(R.reshape(z, (*lead, 1))),
        )

    # ------------------------------------------------------------ case 4
    def attention(
        self, ctx: LowerCtx, node: Node, qkv: Any, mask: Any, num_heads: int, scale: float, mask_filter_value: float
    ) -> relax.Expr:
        qkv = ctx.expr(qkv)
        if ctx.dtype(qkv) != _F32 or ctx.ndim(qkv) != 3 or (mask is not None and ctx.ndim(mask) != 2):
            return super().attention(ctx, node, qkv, mask, num_heads, scale, mask_filter_value)
        b, s, n3 = ctx.shape(qkv)
        d = n3 // 3 // num_heads
        q5 = ctx.emit(R.reshape(qkv, (b, s, 3, num_heads, d)))

        def compute(qt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
            return attn.qkv_attention(qt, rest[0] if rest else None, scale, mask_filter_value)

        out = self._emit(ctx, node, attn.ATTENTION_FP32, compute, q5, *([ctx.expr(mask)] if mask is not None else []))
        return ctx.emit(R.reshape(out, (b, s, num_heads * d)))

    def sdpa(
        self, ctx: LowerCtx, node: Node, q: Any, k: Any, v: Any, mask: Any, scale: float, is_causal: bool
    ) -> relax.Expr:
        q, k, v = (ctx.expr(t) for t in (q, k, v))
        qs, ks, vs = ctx.shape(q), ctx.shape(k), ctx.shape(v)
        lead = qs[:-2]
        if (
            any(ctx.dtype(t) != _F32 for t in (q, k, v))
            or len(lead) > 2
            or ks[:-2] != lead
            or vs[:-2] != lead
            or (mask is not None and ctx.ndim(mask) > 4)
        ):
            return super().sdpa(ctx, node, q, k, v, mask, scale, is_causal)
        b, h = ((1, 1) + lead)[-2:]
        q4, k4, v4 = (ctx.emit(R.reshape(t, (b, h, *ctx.shape(t)[-2:]))) for t in (q, k, v))
        mexpr = ctx.expr(mask) if mask is not None else None
        if mexpr is not None and ctx.dtype(mexpr) != "bool":
            mexpr = ctx.expr(mexpr, _F32)

        def compute(qt: te.Tensor, kt: te.Tensor, vt: te.Tensor, *rest: te.Tensor) -> te.Tensor:
            return attn.sdpa_attention(qt, kt, vt, rest[0] if rest else None, scale, is_causal)

        out = self._emit(ctx, node, attn.ATTENTION_FP32, compute, q4, k4, v4, *([mexpr] if mexpr is not None else []))
        return ctx.emit(R.reshape(out, (*lead, qs[-2], vs[-1])))

    # ------------------------------------------------------------ case 5
    def layer_norm(
        self, ctx: LowerCtx, node: Node, x: Any, gamma: Any, beta: Any, axis: int, epsilon: float
    ) -> relax.Expr:
        x = ctx.expr(x)
        n = ctx.shape(x)[-1] if ctx.ndim(x) else 0
        g = self._vector(ctx, gamma, n, "")
        bt = self._vector(ctx, beta, n, "")
        if ctx.dtype(x) != _F32 or axis % max(ctx.ndim(x), 1) != ctx.ndim(x) - 1 or g is None or (beta is not None and bt is None):
            return super().layer_norm(ctx, node, x, gamma, beta, axis, epsilon)
        y, _ = self._norm(ctx, node, x, None, g, bt, None, epsilon, want_sum=False)
        return y

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
        x = ctx.expr(x)
        n = ctx.shape(x)[-1] if ctx.ndim(x) else 0
        g, bt, bi = (self._vector(ctx, t, n, "") for t in (gamma, beta, bias))
        skip = ctx.expr(skip, ctx.dtype(x))
        if (
            ctx.dtype(x) != _F32
            or ctx.shape(skip) != ctx.shape(x)
            or g is None
            or (beta is not None and bt is None)
            or (bias is not None and bi is None)
        ):
            return super().skip_layer_norm(ctx, node, x, skip, gamma, beta, bias, epsilon, want_sum)
        return self._norm(ctx, node, x, skip, g, bt, bi, epsilon, want_sum)

    def _norm(
        self,
        ctx: LowerCtx,
        node: Node,
        x: relax.Expr,
        skip: relax.Expr | None,
        gamma: relax.Expr,
        beta: relax.Expr | None,
        bias: relax.Expr | None,
        epsilon: float,
        want_sum: bool,
    ) -> tuple[relax.Expr, relax.Expr | None]:
        shape = ctx.shape(x)
        x2, lead = self._flat(ctx, x)
        args = [x2] + ([self._flat(ctx, skip)[0]] if skip is not None else []) + [gamma]
        args += ([beta] if beta is not None else []) + ([bias] if bias is not None else [])
        flags = (skip is not None, beta is not None, bias is not None)

        def compute(*ts: te.Tensor) -> Any:
            it = iter(ts)
            xt = next(it)
            st = next(it) if flags[0] else None
            gt = next(it)
            btt = next(it) if flags[1] else None
            bit = next(it) if flags[2] else None
            y, s = norm.layer_norm_compute(xt, gt, btt, epsilon, skip=st, bias=bit)
            return [y, s] if want_sum and s is not None else y

        out = self._emit(ctx, node, norm.LAYER_NORM_FP32, compute, *args)
        if want_sum and skip is not None:
            y, s = (ctx.emit(relax.TupleGetItem(out, i)) for i in range(2))
            return ctx.emit(R.reshape(y, shape)), ctx.emit(R.reshape(s, shape))
        y = out if len(lead) == 1 else ctx.emit(R.reshape(out, shape))
        if want_sum:  # a LayerNorm asked for its input (no skip): the sum is x itself
            return y, x
        return y, None
