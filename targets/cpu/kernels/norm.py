"""LayerNorm and SkipLayerNorm over the last axis: one kernel per op, rows in parallel, vectorized.

``layer_norm_compute`` normalizes the rows of ``x [M, N]`` (leading dims are
flattened by the caller: a free reshape); with a ``skip`` (and ``bias``) it is
SkipLayerNorm: the row ``s = x + skip (+ bias)`` is formed first and is also an
output when the graph wants the sum. Statistics are two-pass, as the
interpreter computes them (mean, then the mean of squared deviations), in
float32. Blocks, all computed per row (``schedule_norm``) so a row is read
from memory once and then stays in L1:

1. ``ln_sum`` (SkipLayerNorm only): ``s = x + skip (+ bias)``;
2. ``ln_mean16`` / ``ln_mean``: the row sum over 16 lanes (vectorized), then
   across the lanes (``mean`` is that sum over ``N``);
3. ``ln_var16`` / ``ln_rstd``: the same for the squared deviations, then
   ``1 / sqrt(var + epsilon)``;
4. ``ln_out``: ``(s - mean) * rstd * gamma (+ beta)``.

The row loop is split in two chunks per core and run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.target import Target

from accelopt.targets.cpu.kernels.dense import KERNEL_ATTR, LANES, vectorize_inner

#: a TIR expression (TVM has no type stubs)
Expr = Any

LAYER_NORM_FP32 = "layer_norm_fp32"
_F32 = "float32"


def _lanes(src: te.Tensor, n: int, fn: Callable[[Expr, Expr], Expr], name: str) -> te.Tensor:
    """``out[m, l] = sum_c fn(src, m, c * 16 + l)`` over the row's 16-lane chunks (a ragged tail reads 0)."""
    m = int(src.shape[0])
    rc = te.reduce_axis((0, -(-n // LANES)), name="c")

    def body(i: Expr, ln: Expr) -> Expr:
        j = rc * LANES + ln
        val = fn(i, tirx.min(j, n - 1) if n % LANES else j)
        return te.sum(tirx.if_then_else(j < n, val, tirx.const(0.0, _F32)) if n % LANES else val, axis=rc)

    return te.compute((m, LANES), body, name=name)


def layer_norm_compute(
    x: te.Tensor,
    gamma: te.Tensor,
    beta: te.Tensor | None,
    epsilon: float,
    *,
    skip: te.Tensor | None = None,
    bias: te.Tensor | None = None,
) -> tuple[te.Tensor, te.Tensor | None]:
    """Cases 1-4: ``(y, s)`` with ``s`` the SkipLayerNorm sum (None for plain LayerNorm)."""
    m, n = (int(d) for d in x.shape)
    src = x
    total: te.Tensor | None = None
    if skip is not None:

        def add(i: Expr, j: Expr) -> Expr:
            s = x[i, j] + skip[i, j]
            return s + bias[j] if bias is not None else s

        total = te.compute((m, n), add, name="ln_sum")
        src = total
    inv_n = tirx.const(1.0 / n, _F32)
    mean16 = _lanes(src, n, lambda i, j: src[i, j], "ln_mean16")
    rl = te.reduce_axis((0, LANES), name="lane")
    total_sum = te.compute((m,), lambda i: te.sum(mean16[i, rl], axis=rl), name="ln_mean")

    def mean(i: Expr) -> Expr:
        return total_sum[i] * inv_n

    def dev2(i: Expr, j: Expr) -> Expr:
        d = src[i, j] - mean(i)
        return d * d

    var16 = _lanes(src, n, dev2, "ln_var16")
    rl2 = te.reduce_axis((0, LANES), name="lane")
    var = te.compute((m,), lambda i: te.sum(var16[i, rl2], axis=rl2), name="ln_var")
    rstd = te.compute(
        (m,), lambda i: tirx.const(1.0, _F32) / tirx.sqrt(var[i] * inv_n + tirx.const(epsilon, _F32)), name="ln_rstd"
    )

    def out(i: Expr, j: Expr) -> Expr:
        y = (src[i, j] - mean(i)) * rstd[i] * gamma[j]
        return y + beta[j] if beta is not None else y

    return te.compute((m, n), out, name="ln_out"), total


def schedule_norm(sch: Schedule, target: Target | None = None) -> Schedule:
    """Schedule the blocks of ``layer_norm_compute`` (cases 1-4 of the module docstring)."""
    out = sch.get_sblock("ln_out")
    rows = int(sch.get(sch.get_loops(out)[0]).extent)
    try:
        total = sch.get_sblock("ln_sum")
    except Exception:  # plain LayerNorm
        total = None
    chain = ["ln_mean16", "ln_mean", "ln_var16", "ln_var", "ln_rstd"]
    # the per-row work hangs under the row loop of the first output: the sum when it is one (TIR cannot move
    # an output block under another block's loop), else the normalized row
    if total is not None and _is_output(sch, "ln_sum"):
        anchor, moved = total, [*chain, "ln_out"]
    else:
        anchor, moved = out, (["ln_sum"] if total is not None else []) + chain
    row = sch.get_loops(anchor)[0]
    outer, inner = sch.split(row, [min(rows, 4), None])
    sch.parallel(outer)
    if anchor is out:
        for name in reversed(moved):
            sch.compute_at(sch.get_sblock(name), inner, preserve_unit_loops=True)
    else:
        for name in moved:
            sch.reverse_compute_at(sch.get_sblock(name), inner, preserve_unit_loops=True)
    for name in ("ln_mean16", "ln_var16"):
        blk = sch.get_sblock(name)
        lane, chunk = sch.get_loops(blk)[-2:]
        sch.reorder(chunk, lane)
        sch.vectorize(lane)
        init = sch.decompose_reduction(blk, chunk)
        sch.vectorize(sch.get_loops(init)[-1])
    if total is not None:
        vectorize_inner(sch, total)
    vectorize_inner(sch, sch.get_sblock("ln_out"))
    return sch


def _is_output(sch: Schedule, name: str) -> bool:
    return any(str(getattr(param, "name", "")) == name for param in sch.mod["main"].params)


def layer_norm_primfunc(
    m: int, n: int, epsilon: float, *, beta: bool = True, skip: bool = False, bias: bool = False, want_sum: bool = False
) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(x[, skip], gamma[, beta][, bias], y[, s])`` tagged ``LAYER_NORM_FP32``."""
    x = te.placeholder((m, n), _F32, name="x")
    sk = te.placeholder((m, n), _F32, name="skip") if skip else None
    g = te.placeholder((n,), _F32, name="gamma")
    b = te.placeholder((n,), _F32, name="beta") if beta else None
    bi = te.placeholder((n,), _F32, name="bias") if bias else None
    y, s = layer_norm_compute(x, g, b, epsilon, skip=sk, bias=bi)
    args = [x] + ([sk] if sk is not None else []) + [g] + ([b] if b is not None else [])
    args += ([bi] if bi is not None else []) + [y] + ([s] if want_sum and s is not None else [])
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, LAYER_NORM_FP32)
