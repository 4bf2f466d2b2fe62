"""accelopt's generic CPU schedules (the dispatcher in ``schedule_rules.py`` tries them in order).

Vector widths come from the target (LLVM's vector width for the mcpu: 512
bits with AVX-512, so 16 float32 lanes). Rules:

1. ``matmul``: a function whose one reduction block is a GEMM (loops
   ``S...S R``, two operands or more; batched or not). Injective producers (transposes,
   slices, zero-point subtractions) are inlined into its reads; the output
   is tiled ``mr x (nr x lanes)`` with the accumulators in registers
   (``cache_write`` to local), ``k`` innermost above the tile, the
   write-back vectorized with the epilogue (bias, activation, residual)
   inlined into it; batch and tile rows/columns run in parallel.
2. ``reduction``: softmax / LayerNorm-like functions (row reductions with
   injective blocks sharing the leading spatial axes): TVM's dlight CPU
   ``Reduction`` rule (rows in parallel, injective stages vectorized,
   reductions split to the vector width and unrolled).
3. ``injective``: every block spatial (elementwise, broadcasts, transposes,
   gathers, casts): producers inlined, the innermost axis vectorized when
   the vector divides it, the outer loops fused and run in parallel.
4. ``fallback``: anything else in block form: producers inlined where
   possible, each remaining block's leading spatial loops fused and run in
   parallel, injective blocks vectorized. Functions TVM wrote without
   blocks (sorts, scans: opaque) are returned as they are and recorded as
   ``fallback``.

Small functions stay on one thread (``PARALLEL_MIN_ELEMENTS`` output elements
of a GEMM, ``PARALLEL_MIN_COPY`` elements of work elsewhere): waking the
thread pool costs more than they do.
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base.common_schedules import try_inline
from tvm.s_tir.dlight.cpu import Reduction
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

log = logging.getLogger(__name__)

#: GEMMs with fewer output elements than this run on one thread
PARALLEL_MIN_ELEMENTS = 4096
#: elementwise / copy functions with fewer output elements than this run on one thread: a 256 KiB copy takes
#: tens of microseconds, and waking the other workers (or waiting for one the OS has descheduled) costs as much
PARALLEL_MIN_COPY = 1 << 16
#: zmm registers a GEMM tile may keep as accumulators
ACCUMULATORS = 24


def vector_lanes(target: Target, bits: int) -> int:
    """Lanes of one vector register for ``bits``-wide elements (at least 4)."""
    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // max(bits, 8), 4)


def _extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _divisor(n: int | None, candidates: tuple[int, ...]) -> int:
    """The first candidate that divides ``n`` (1 when none does)."""
    if n is None:
        return 1
    return next((c for c in candidates if c <= n and n % c == 0), 1)


def _out_bits(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    writes = sch.get(block).writes
    return int(writes[0].source.dtype.bits) if writes else 32


def _vector_candidates(lanes: int) -> tuple[int, ...]:
    return tuple(v for v in (lanes, lanes // 2, lanes // 4) if v >= 2)


def parallel_vectorize(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, target: Target, n_spatial: int) -> None:
    """Vectorize the innermost loop (injective blocks) and run the leading ``n_spatial`` loops in parallel
    when the block has ``PARALLEL_MIN_COPY`` elements of work (its whole loop nest, reductions included)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    extents = [_extent(sch, lp) for lp in loops]
    total = math.prod(e or 1 for e in extents[:n_spatial])
    work = math.prod(e or 1 for e in extents)
    outer = list(loops[:n_spatial])
    if n_spatial == len(loops):  # injective: vectorize the innermost axis
        v = _divisor(extents[-1], _vector_candidates(vector_lanes(target, _out_bits(sch, block))))
        if v > 1:
            io, vi = sch.split(loops[-1], factors=[None, v])
            sch.vectorize(vi)
            outer = outer[:-1] + [io]
    enough = total >= PARALLEL_MIN_COPY if n_spatial == len(loops) else work >= PARALLEL_MIN_COPY
    if outer and enough and total > 1:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)


# ---------------------------------------------------------------- rule 1
def _gemm_block(sch: s_tir.Schedule) -> tuple[s_tir.schedule.SBlockRV, list[s_tir.schedule.SBlockRV]] | None:
    """The GEMM block and the blocks after it, once producers are inlined; None when this is no GEMM."""
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    reductions = [b for b in infos if not b.is_injective()]
    if len(reductions) != 1:
        return None
    infos = try_inline(sch, [b for b in infos if b.is_injective() or b is reductions[0]])
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    idx = [i for i, b in enumerate(infos) if not b.is_injective()]
    if len(idx) != 1 or idx[0] != 0:
        return None
    gemm = infos[0]
    kind = gemm.dom_kind()
    if not (kind.endswith("SR") and kind.count("R") == 1 and set(kind[:-1]) == {"S"}):
        return None
    stmt = sch.get(gemm.block_rv)
    inputs = {r.source for r in stmt.reads} - {w.source for w in stmt.writes}
    if len(inputs) < 2:  # two operands (zero points or scales may add more)
        return None
    return gemm.block_rv, [b.block_rv for b in infos[1:]]


def matmul(sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
    """Rule 1."""
    found = _gemm_block(sch)
    if found is None:
        return None
    blk, epilogues = found
    *spatial, k = sch.get_loops(blk)
    # one spatial loop left: a single output row (unit loops are normalized away), e.g. the pooler at batch 1
    batch, i, j = (spatial[:-2], spatial[-2], spatial[-1]) if len(spatial) >= 2 else ([], None, spatial[0])
    ei = _extent(sch, i) if i is not None else 1
    ej = _extent(sch, j)
    if ei is None or ej is None:
        return None
    lanes = vector_lanes(target, _out_bits(sch, blk))
    nv = _divisor(ej, _vector_candidates(lanes))
    nr = _divisor(ej // nv, (4, 2))
    mr = _divisor(ei, tuple(m for m in (6, 4, 3, 2) if m * nr <= ACCUMULATORS))
    jo, jm, jv = sch.split(j, factors=[None, nr, nv])
    if i is not None:
        io, ii = sch.split(i, factors=[None, mr])
        sch.reorder(*batch, io, jo, k, ii, jm, jv)
        rows = [io]
    else:
        sch.reorder(*batch, jo, k, jm, jv)
        rows, ii = [], None
    local = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(local, jo, preserve_unit_loops=True)
    for epi in epilogues:
        try:
            sch.reverse_compute_inline(epi)
        except Exception:  # an epilogue that does not map onto the tile (a reduction over it...): after it
            sch.reverse_compute_at(epi, jo, preserve_unit_loops=True)
            _vectorize_tail(sch, epi, nv)
    _vectorize_tail(sch, local, nv)
    if nv > 1:
        sch.vectorize(jv)
    if mr > 1 and ii is not None:
        sch.unroll(ii)
    if nr > 1:
        sch.unroll(jm)
    work = math.prod(_extent(sch, lp) or 1 for lp in batch) * ei * ej
    if work >= PARALLEL_MIN_ELEMENTS:
        outer = [*batch, *rows, jo]
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    init = sch.decompose_reduction(blk, k)
    _vectorize_tail(sch, init, nv)
    return sch


def _vectorize_tail(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, nv: int) -> None:
    """Vectorize a block's innermost loop by ``nv`` when it divides it."""
    loops = sch.get_loops(block)
    if nv <= 1 or not loops:
        return
    ext = _extent(sch, loops[-1])
    if ext is None or ext % nv:
        return
    if ext == nv:
        sch.vectorize(loops[-1])
    else:
        _, v = sch.split(loops[-1], factors=[None, nv])
        sch.vectorize(v)


# ---------------------------------------------------------------- rule 2
_DLIGHT_REDUCTION = Reduction()


def reduction(sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
    """Rule 2 (dlight's CPU Reduction; it takes the function, not the schedule)."""
    result = _DLIGHT_REDUCTION.apply(sch.mod["main"], target, False)
    if result is None:
        return None
    return result if isinstance(result, s_tir.Schedule) else result[0]


# ---------------------------------------------------------------- rule 3
def injective(sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
    """Rule 3."""
    infos = normalize_prim_func(sch)
    if infos is None or not infos or not all(b.is_injective() for b in infos):
        return None
    for info in try_inline(sch, infos):
        parallel_vectorize(sch, info.block_rv, target, len(sch.get_loops(info.block_rv)))
    return sch


# ---------------------------------------------------------------- rule 4
def fallback(sch: s_tir.Schedule, target: Target) -> s_tir.Schedule:
    """Rule 4: never declines."""
    infos = normalize_prim_func(sch)
    if infos is None:
        return sch  # opaque (sort, scan...): as TVM wrote it
    try_inline(sch, [b for b in infos if b.is_injective()])
    for info in normalize_prim_func(sch) or []:
        kind = info.dom_kind()
        lead = len(kind) - len(kind.lstrip("S"))
        if lead:
            parallel_vectorize(sch, info.block_rv, target, lead)
    return sch


GENERIC_RULES = [("matmul", matmul), ("reduction", reduction), ("injective", injective), ("fallback", fallback)]
