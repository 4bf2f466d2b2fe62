"""Per-row dynamic quantization (``DynamicQuantize{granularity=row}``) in one pass per row.

For each row of ``x [M, K]`` (float32; leading dims flattened by the caller),
one kernel computes the scale, the zero point and the integers while the row
sits in L1, rows in parallel (``schedule_quantize``):

1. the row's range over 16 lanes, then across the lanes (``q_range16``,
   ``q_range``: ``max |x|`` for symmetric, the pair ``(min x, max x)`` in one
   pass for asymmetric quantization);
2. ``scale = max(amax / 127, 2^-126)`` (symmetric; the zero point is 0 for
   int8, 128 for uint8) or ``scale = max((hi - lo) / 255, 2^-126)`` and
   ``zero_point = round(clip(qmin - lo / scale, qmin, qmax))`` with
   ``lo = min(min x, 0)``, ``hi = max(max x, 0)`` (asymmetric);
3. ``q = saturate(round_half_even(x / scale) + zero_point)``.

Every step is the interpreter's float32 arithmetic in the same order (a true
division, round-half-even), so the integers, scales and zero points are
bit-identical to ``accelopt.ir.ops.quantized.dynamic_quantize``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.target import Target

from accelopt.ir.ops.quantized import ZERO_RANGE_SCALE, qrange, symmetric_zero_point
from accelopt.targets.cpu.kernels.dense import KERNEL_ATTR, LANES, vectorize_inner

#: a TIR expression (TVM has no type stubs)
Expr = Any

QUANTIZE_ROW = "quantize_row"
_F32 = "float32"


def _f(v: float) -> tirx.PrimExpr:
    return tirx.const(v, _F32)


def _minmax() -> Expr:
    """A reducer of ``(min, max)`` pairs (one pass over the row for both)."""

    def combine(a: tuple[Expr, Expr], b: tuple[Expr, Expr]) -> tuple[Expr, Expr]:
        return tirx.min(a[0], b[0]), tirx.max(a[1], b[1])

    def identity(t0: str, t1: str) -> tuple[Expr, Expr]:
        return tirx.max_value(t0), tirx.min_value(t1)

    return te.comm_reducer(combine, identity, name="minmax")


def _row_reduce(x: te.Tensor, symmetric: bool) -> list[te.Tensor]:
    """Case 1: ``[max |x|]`` (symmetric) or ``[min x, max x]`` of each row, over 16 lanes then across them.

    A ragged tail reads 0, which changes none of them (``|x| >= 0`` and the range includes 0 anyway).
    """
    m, k = (int(d) for d in x.shape)
    rc = te.reduce_axis((0, -(-k // LANES)), name="c")

    def value(i: Expr, ln: Expr) -> Expr:
        j = rc * LANES + ln
        v = x[i, tirx.min(j, k - 1)] if k % LANES else x[i, j]
        v = tirx.abs(v) if symmetric else v
        return tirx.if_then_else(j < k, v, _f(0.0)) if k % LANES else v

    rl = te.reduce_axis((0, LANES), name="lane")
    if symmetric:
        part = te.compute((m, LANES), lambda i, ln: te.max(value(i, ln), axis=rc), name="q_range16")
        return [te.compute((m,), lambda i: te.max(part[i, rl], axis=rl), name="q_range")]
    reducer = _minmax()
    lo16, hi16 = te.compute(
        (m, LANES), lambda i, ln: reducer((value(i, ln), value(i, ln)), axis=rc), name="q_range16"
    )
    lo, hi = te.compute((m,), lambda i: reducer((lo16[i, rl], hi16[i, rl]), axis=rl), name="q_range")
    return [lo, hi]


def quantize_compute(x: te.Tensor, to: str, symmetric: bool) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """Cases 1-3: ``(q [M, K], scale [M], zero_point [M])``."""
    m, k = (int(d) for d in x.shape)
    qmin, qmax = qrange(np.dtype(to), symmetric)
    tiny = _f(float(ZERO_RANGE_SCALE))
    if symmetric:
        (amax,) = _row_reduce(x, symmetric)
        scale = te.compute((m,), lambda i: tirx.max(amax[i] / _f(127.0), tiny), name="q_scale")
        zp_value = symmetric_zero_point(np.dtype(to))
        zp = te.compute((m,), lambda i: tirx.const(zp_value, to), name="q_zero_point")
    else:
        lo_x, hi_x = _row_reduce(x, symmetric)

        def lo(i: Expr) -> Expr:
            return tirx.min(lo_x[i], _f(0.0))

        def hi(i: Expr) -> Expr:
            return tirx.max(hi_x[i], _f(0.0))

        scale = te.compute(
            (m,), lambda i: tirx.max((hi(i) - lo(i)) / _f(float(qmax - qmin)), tiny), name="q_scale"
        )

        def zero_point(i: Expr) -> Expr:
            z = _f(float(qmin)) - lo(i) / scale[i]
            return tirx.nearbyint(tirx.max(tirx.min(z, _f(float(qmax))), _f(float(qmin)))).astype(to)

        zp = te.compute((m,), zero_point, name="q_zero_point")
    info = np.iinfo(to)

    def quant(i: Expr, j: Expr) -> Expr:
        z = _f(float(symmetric_zero_point(np.dtype(to)))) if symmetric else zp[i].astype(_F32)
        q = tirx.nearbyint(x[i, j] / scale[i]) + z
        return tirx.max(tirx.min(q, _f(float(info.max))), _f(float(info.min))).astype(to)

    return te.compute((m, k), quant, name="q_out"), scale, zp


def schedule_quantize(sch: Schedule, target: Target | None = None) -> Schedule:
    """Rows in parallel; each row's range, scale, zero point and integers computed under its loop.

    The 16-lane partial reduction anchors the row loop and every later block is moved under it in
    dataflow order; a constant zero point (symmetric) is its own short vectorized loop.
    """
    part = sch.get_sblock("q_range16")
    rows = int(sch.get(sch.get_loops(part)[0]).extent)
    outer, inner = sch.split(sch.get_loops(part)[0], [min(rows, 4), None])
    sch.parallel(outer)
    constant_zp = not sch.get_producers(sch.get_sblock("q_zero_point"))
    for name in ["q_range", "q_scale"] + ([] if constant_zp else ["q_zero_point"]) + ["q_out"]:
        sch.reverse_compute_at(sch.get_sblock(name), inner, preserve_unit_loops=True)
    lane, chunk = sch.get_loops(part)[-2:]
    sch.reorder(chunk, lane)
    if constant_zp or not _ragged(sch, part):
        # TVM 0.27 miscompiles the vectorized pair reduction when a guard masks a ragged tail (measured: wrong
        # minima); that case keeps its 16 lanes scalar
        sch.vectorize(lane)
    init = sch.decompose_reduction(part, chunk)
    sch.vectorize(sch.get_loops(init)[-1])
    vectorize_inner(sch, sch.get_sblock("q_out"))
    if constant_zp:
        vectorize_inner(sch, sch.get_sblock("q_zero_point"))
    return sch


def _ragged(sch: Schedule, block: Expr) -> bool:
    """Whether the row length is not a multiple of 16 (the partial reduction reads a guarded tail)."""
    x = next(r.source for r in sch.get(block).reads if len(r.source.shape) == 2)
    return int(x.shape[1]) % LANES != 0


def quantize_primfunc(m: int, k: int, to: str = "int8", symmetric: bool = True) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(x, q, scale, zero_point)`` tagged ``QUANTIZE_ROW``."""
    x = te.placeholder((m, k), _F32, name="x")
    q, scale, zp = quantize_compute(x, to, symmetric)
    return te.create_prim_func([x, q, scale, zp]).with_attr(KERNEL_ATTR, QUANTIZE_ROW)
