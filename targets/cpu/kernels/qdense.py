"""int8 dense (``QLinear``) through AVX-512 VNNI: exact int32 accumulation, fused dequantize epilogue.

``acc = (x_q - x_zp) @ (w_q - w_zp)`` for ``x_q`` uint8 or int8 ``[M, K]`` and a
symmetric int8 weight (``w_zp`` 0 or absent) known at compile time:

1. The weight is packed for ``vpdpbusd`` (``pack_weight``):
   ``Wp[N/NR, K/4, NR, 4]``, so the 16 columns x 4 rows one instruction
   reads are 64 contiguous bytes; its column sums ``colsum[n] = sum_k w[k, n]``
   are computed at compile time.
2. ``vpdpbusd`` multiplies unsigned by signed bytes, so int8 activations are
   read as ``x + 128`` (``vnni.VNNI_S8S8`` flips their sign bits) and
   ``acc = dot(x + shift, w) - (shift + x_zp) * colsum`` with ``shift`` 128 for
   int8, 0 for uint8: exact in int32 (|acc| < 2^31 for K up to 65,000).
3. The accumulator tile (``MR x NV`` zmm registers, as in ``dense``) is
   tensorized with the VNNI intrinsic over (16 columns, 4 k).
4. The epilogue runs on the tile before the store: the correction of 2,
   ``y = acc * (x_scale * w_scale) + bias`` in float32 (the interpreter's
   order of operations), the activation, and, with ``y_scale``, the
   requantization ``saturate(round_half_even(y / y_scale) + y_zp)``.

``x_scale``/``x_zp`` are per row ``[M]`` or per tensor; ``w_scale`` per column
``[N]`` or per tensor. ``K`` must be a multiple of 4 (``supported`` says when
the kernel applies; the caller falls back to the generic lowering otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule

from accelopt.targets.cpu.kernels import fastmath, vnni
from accelopt.targets.cpu.kernels.dense import (
    DEFAULT_NV,
    KERNEL_ATTR,
    LANES,
    DenseTile,
    finish_accumulators,
    fit_tile,
    sample_rows,
    tile_gemm,
)

#: a TIR expression (TVM has no type stubs)
Expr = Any

DENSE_INT8 = "dense_int8"
_F32 = "float32"
_I32 = "int32"
#: bytes of k one VNNI instruction consumes per lane
KGROUP = 4


def supported(x_dtype: str, k: int, w_q: np.ndarray, w_zp: np.ndarray | None) -> str | None:
    """None when the VNNI kernel computes this QLinear, else why not."""
    if x_dtype not in ("int8", "uint8"):
        return f"activations are {x_dtype}, not int8/uint8"
    if w_q.dtype != np.int8:
        return f"weights are {w_q.dtype}, not int8"
    if w_zp is not None and np.any(np.asarray(w_zp) != 0):
        return "weights have a nonzero zero point"
    if k % KGROUP:
        return f"K={k} is not a multiple of {KGROUP}"
    return None


def pack_weight(w: np.ndarray, nr: int = DEFAULT_NV * LANES) -> tuple[np.ndarray, np.ndarray]:
    """Case 1: ``W[K, N]`` int8 -> ``(Wp[ceil(N/nr), K/4, nr, 4], colsum[ceil(N/nr) * nr] int32)``."""
    k, n = w.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.int8)
    padded[:, :n] = w
    packed = padded.reshape(k // KGROUP, KGROUP, panels, nr).transpose(2, 0, 3, 1)
    colsum = padded.astype(np.int64).sum(axis=0).astype(np.int32)
    return np.ascontiguousarray(packed), colsum


@dataclass(frozen=True)
class Requant:
    """Requantization of the output: ``saturate(round(y / scale) + zero_point)`` to ``dtype``."""

    scale: float
    zero_point: int
    dtype: str


@dataclass(frozen=True)
class QDenseOperands:
    """The run-time and compile-time tensors of one int8 dense (te placeholders or tensors)."""

    x: te.Tensor  # [M, K] int8/uint8
    wp: te.Tensor  # packed weight
    colsum: te.Tensor  # [Npad] int32
    x_scale: te.Tensor  # [M] or [] float32
    w_scale: te.Tensor  # [N] or [] float32
    x_zp: te.Tensor | None = None  # like x_scale, x's dtype
    bias: te.Tensor | None = None  # [N] float32


def _at(t: te.Tensor, i: Expr) -> Expr:
    return t[i] if len(t.shape) else t()


def qdense_compute(ops: QDenseOperands, n: int, activation: str = "none", requant: Requant | None = None) -> te.Tensor:
    """Cases 2 and 4: the accumulation block ``qdense`` and the epilogue ``qdense_epilogue``."""
    x, wp = ops.x, ops.wp
    m, k = (int(d) for d in x.shape)
    panels, kg, nr, _ = (int(d) for d in wp.shape)
    if kg * KGROUP != k or panels * nr < n:
        raise ValueError(f"packed weight {tuple(wp.shape)} does not fit x {tuple(x.shape)} and N={n}")
    signed = x.dtype == "int8"
    rk = te.reduce_axis((0, k), name="k")

    def a(i: Expr) -> Expr:
        v = x[i, rk].astype(_I32)
        return v + tirx.const(128, _I32) if signed else v

    acc = te.compute(
        (m, panels * nr),
        lambda i, j: te.sum(a(i) * wp[j // nr, rk // KGROUP, j % nr, rk % KGROUP].astype(_I32), axis=rk),
        name="qdense",
    )
    shift = 128 if signed else 0

    def epilogue(i: Expr, j: Expr) -> Expr:
        offset = tirx.const(shift, _I32)
        if ops.x_zp is not None:
            offset = offset + _at(ops.x_zp, i).astype(_I32)
        exact = acc[i, j] - offset * ops.colsum[j] if (shift or ops.x_zp is not None) else acc[i, j]
        y = exact.astype(_F32) * (_at(ops.x_scale, i) * _at(ops.w_scale, j))
        if ops.bias is not None:
            y = y + ops.bias[j]
        y = fastmath.activation(y, activation)
        if requant is None:
            return y
        info = np.iinfo(requant.dtype)
        q = tirx.nearbyint(y / tirx.const(requant.scale, _F32)) + tirx.const(float(requant.zero_point), _F32)
        q = tirx.max(tirx.min(q, tirx.const(float(info.max), _F32)), tirx.const(float(info.min), _F32))
        return q.astype(requant.dtype)

    return te.compute((m, n), epilogue, name="qdense_epilogue")


def schedule_qdense(sch: Schedule, tile: DenseTile | None = None, *, sample: bool = False) -> Schedule:
    """Cases 3-4 on the function ``sch`` works on: ``dense``'s register tile, tensorized over (16 columns, 4 k).

    ``sample``: the row blocking is a sampled decision, as in ``dense.schedule_dense``.
    """
    block = sch.get_sblock("qdense")
    i, j, k = sch.get_loops(block)
    reads = sch.get(block).reads
    signed = any(str(r.source.dtype) == "int8" and len(r.source.shape) == 2 for r in reads)
    nr = next(int(r.source.shape[2]) for r in reads if len(r.source.shape) == 4)
    tile = fit_tile(sch, i, j, nr, tile)
    rows = sample_rows(sch, i, tile) if sample else None
    ko, ki = sch.split(k, [None, KGROUP])
    _, unrolled, jl = tile_gemm(sch, block, sch.get_sblock("qdense_epilogue"), tile, [ko, ki], rows)
    finish_accumulators(sch, block, unrolled, ko)
    sch.tensorize(jl, vnni.VNNI_S8S8 if signed else vnni.VNNI_U8S8)
    return sch


def qdense_primfunc(
    m: int,
    k: int,
    n: int,
    *,
    x_dtype: str = "int8",
    per_row: bool = True,
    x_zp: bool = False,
    per_channel: bool = True,
    bias: bool = True,
    activation: str = "none",
    requant: Requant | None = None,
    nr: int = DEFAULT_NV * LANES,
) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(x, x_scale[, x_zp], wp, colsum, w_scale[, bias], y)`` tagged ``DENSE_INT8``."""
    panels = -(-n // nr)
    qshape = (m,) if per_row else ()
    ops = QDenseOperands(
        x=te.placeholder((m, k), x_dtype, name="x"),
        wp=te.placeholder((panels, k // KGROUP, nr, KGROUP), "int8", name="wp"),
        colsum=te.placeholder((panels * nr,), _I32, name="colsum"),
        x_scale=te.placeholder(qshape, _F32, name="x_scale"),
        w_scale=te.placeholder((n,) if per_channel else (), _F32, name="w_scale"),
        x_zp=te.placeholder(qshape, x_dtype, name="x_zp") if x_zp else None,
        bias=te.placeholder((n,), _F32, name="bias") if bias else None,
    )
    y = qdense_compute(ops, n, activation, requant)
    args = [ops.x, ops.x_scale] + ([ops.x_zp] if ops.x_zp is not None else []) + [ops.wp, ops.colsum, ops.w_scale]
    args += ([ops.bias] if ops.bias is not None else []) + [y]
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, DENSE_INT8)
