"""fp32 dense ``y = act(x @ W + b)`` for AVX-512, fast without tuning.

The weight is known at compile time and packed into column panels
``Wp[N/NR, K, NR]`` (``pack_weight``; the last panel zero-padded), so the
micro-kernel reads it with unit stride. The compute (``dense_compute``) is two
blocks: ``dense`` accumulates ``x @ Wp`` over the padded width, and
``dense_epilogue`` adds the bias, applies the activation (``fastmath``) and
writes ``y``. The schedule (``schedule_dense``):

1. splits rows into register tiles of ``MR`` rows and the padded columns into
   panels of ``NR = 16 * NV`` (``NV`` zmm vectors), ordered
   ``row tile, panel, k, MR, NV, 16``: ``MR x NV`` accumulators (24 by default,
   of the 32 zmm registers) stay in registers for the whole ``k`` loop while
   each ``k`` step loads ``NV`` weight vectors and broadcasts ``MR`` inputs;
2. keeps the accumulator tile ``local`` (registers) and computes the epilogue on
   it right after its ``k`` loop (``reverse_compute_at``), so ``y`` is written
   once, with no second pass over it;
3. runs the fused (row tile, panel) loop in parallel over the cores;
4. vectorizes the 16 lanes, unrolls the tile, and decomposes the reduction so
   the zero-initialisation is its own vectorized loop.

``MR`` is the largest of 8, 6, 4, 2, 1 that divides ``M`` (``choose_rows``), so
BERT's ``M = batch * seq`` gets full 8-row tiles with no tail; a ``tile`` given
explicitly may leave a tail, which TIR guards (correct, slower). ``NR`` is a
property of the packed weight (48 by default: the 8 x 3 tile measured fastest
on Zen 4, 2 cores, BERT's shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV

from accelopt.targets.cpu.kernels import fastmath

#: a TIR expression (TVM has no type stubs)
Expr = Any

#: PrimFunc attribute naming the kernel, read by the schedule-rule dispatcher
KERNEL_ATTR = "accelopt.kernel"
DENSE_FP32 = "dense_fp32"
LANES = 16  # float32 lanes of a zmm register
DEFAULT_NV = 3
#: register-tile rows, best first
ROW_TILES = (8, 6, 4, 2, 1)
#: accumulators the register tile may use (32 zmm registers, minus weights and a broadcast)
MAX_ACCUMULATORS = 24


@dataclass(frozen=True)
class DenseTile:
    """A register tile: ``mr`` rows by ``nv`` zmm vectors of 16 float32 columns."""

    mr: int
    nv: int = DEFAULT_NV
    #: rows per cache block (a multiple of ``mr``; 0: all rows): each weight panel is read once per block
    mc: int = 0

    @property
    def nr(self) -> int:
        return self.nv * LANES


def choose_rows(m: int, nv: int = DEFAULT_NV) -> int:
    """The tallest row tile in ``ROW_TILES`` that divides ``m`` and fits the registers."""
    for mr in ROW_TILES:
        if m % mr == 0 and mr * nv <= MAX_ACCUMULATORS:
            return mr
    return 1


def pack_weight(w: np.ndarray, nr: int = DEFAULT_NV * LANES) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[ceil(N/nr), K, nr]`` (float32, zero-padded columns)."""
    if w.ndim != 2:
        raise ValueError(f"dense weight must be 2-D [K, N], got shape {w.shape}")
    k, n = w.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def dense_compute(
    x: te.Tensor,
    wp: te.Tensor,
    n: int,
    bias: te.Tensor | None = None,
    activation: str = "none",
) -> te.Tensor:
    """``act(x[M, K] @ W + bias[N])`` with ``W`` packed as ``wp`` (``pack_weight``)."""
    m, k = (int(d) for d in x.shape)
    panels, kw, nr = (int(d) for d in wp.shape)
    if kw != k or panels * nr < n:
        raise ValueError(f"packed weight {tuple(wp.shape)} does not fit x {tuple(x.shape)} and N={n}")
    rk = te.reduce_axis((0, k), name="k")
    acc = te.compute(
        (m, panels * nr),
        lambda i, j: te.sum(x[i, rk] * wp[j // nr, rk, j % nr], axis=rk),
        name="dense",
    )

    def epilogue(i: tirx.Var, j: tirx.Var) -> tirx.PrimExpr:
        y = acc[i, j]
        if bias is not None:
            y = y + bias[j]
        return fastmath.activation(y, activation)

    return te.compute((m, n), epilogue, name="dense_epilogue")


def dense_primfunc(
    m: int, k: int, n: int, *, bias: bool, activation: str, nr: int = DEFAULT_NV * LANES
) -> tirx.PrimFunc:
    """The unscheduled PrimFunc ``(x, wp[, bias], y)``, tagged ``KERNEL_ATTR = DENSE_FP32``."""
    x = te.placeholder((m, k), "float32", name="x")
    wp = te.placeholder((-(-n // nr), k, nr), "float32", name="wp")
    b = te.placeholder((n,), "float32", name="bias") if bias else None
    y = dense_compute(x, wp, n, b, activation)
    args = [x, wp] + ([b] if b is not None else []) + [y]
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, DENSE_FP32)


def schedule_dense(sch: Schedule, tile: DenseTile | None = None, *, sample: bool = False) -> None:
    """Schedule the ``dense`` / ``dense_epilogue`` blocks of the function ``sch`` works on (cases 1-4).

    ``sample``: the row blocking (block, tiles per block, tile rows) is a sampled decision
    (``sample_perfect_tile``), the design space MetaSchedule tunes (``accelopt.targets.cpu.tuning``).
    """
    block = sch.get_sblock("dense")
    i, j, k = sch.get_loops(block)
    nr = _packed_width(sch, block)
    tile = fit_tile(sch, i, j, nr, tile)
    rows = sample_rows(sch, i, tile) if sample else None
    _, jv, jl = tile_gemm(sch, block, sch.get_sblock("dense_epilogue"), tile, [k], rows)
    sch.vectorize(jl)  # case 4
    finish_accumulators(sch, block, [*jv, jl], k)


def sample_rows(sch: Schedule, i: LoopRV, tile: DenseTile) -> list[Any]:
    """The row split ``(blocks, tiles per block, tile rows)`` as sampled decisions (at most 24 accumulators)."""
    return list(sch.sample_perfect_tile(i, n=3, max_innermost_factor=max(1, MAX_ACCUMULATORS // tile.nv)))


def tile_gemm(
    sch: Schedule,
    block: SBlockRV,
    epilogue: SBlockRV,
    tile: DenseTile,
    k_loops: list[LoopRV],
    rows: list[Any] | None = None,
) -> tuple[LoopRV, list[LoopRV], LoopRV]:
    """Cases 1-3 for a GEMM block with loops ``(i, j, *k_loops)``: returns the tile's loops ``(ii, [ii, jv], jl)``.

    ``k_loops[0]`` runs outside the register tile, the others (a tensor intrinsic's k) inside it; ``rows``
    overrides the tile's row split with sampled factors.
    """
    i, j = sch.get_loops(block)[:2]
    m = _extent(sch, i)
    mc = tile.mc if tile.mc and m % tile.mc == 0 else m
    ib, io, ii = sch.split(i, rows if rows is not None else [None, mc // tile.mr, tile.mr])
    jo, jv, jl = sch.split(j, [None, tile.nv, LANES])
    sch.reorder(ib, jo, io, k_loops[0], ii, jv, jl, *k_loops[1:])  # case 1
    sch.reverse_compute_at(epilogue, io, preserve_unit_loops=True)  # case 2
    sch.set_scope(block, 0, "local")
    sch.parallel(sch.fuse(ib, jo))  # case 3
    vectorize_inner(sch, epilogue)
    return ii, [ii, jv], jl


def finish_accumulators(sch: Schedule, block: SBlockRV, unrolled: list[LoopRV], k: LoopRV) -> SBlockRV:
    """A register tile's last steps: unroll its rows/vectors, give the zero-init its own vectorized loop."""
    for loop in unrolled:
        sch.unroll(loop)
    init = sch.decompose_reduction(block, k)
    vectorize_inner(sch, init)
    return init


def fit_tile(sch: Schedule, i: LoopRV, j: LoopRV, nr: int, tile: DenseTile | None) -> DenseTile:
    """``tile``, or the default for this GEMM's rows; checked against the packed width ``nr``."""
    if tile is None:
        tile = DenseTile(choose_rows(_extent(sch, i), nr // LANES), nr // LANES)
    if tile.nr != nr or _extent(sch, j) % nr:
        raise ValueError(f"tile {tile} does not match the packed weight's panel width {nr}")
    return tile


def vectorize_inner(sch: Schedule, block: SBlockRV) -> None:
    """Split the innermost loop of ``block`` by 16 lanes and vectorize it (a shorter loop as a whole)."""
    inner = sch.get_loops(block)[-1]
    if _extent(sch, inner) == 1:
        return
    if _extent(sch, inner) > LANES:
        inner = sch.split(inner, [None, LANES])[1]
    sch.vectorize(inner)


def _extent(sch: Schedule, loop: LoopRV) -> int:
    return int(sch.get(loop).extent)


def _packed_width(sch: Schedule, block: SBlockRV) -> int:
    """``NR``: the last dim of the packed weight, the block's read with three indices."""
    for region in sch.get(block).reads:
        shape = region.source.shape
        if len(shape) == 3:
            return int(shape[2])
    raise ValueError("dense block reads no packed weight [N/NR, K, NR]")
