"""Data layouts in VTA's DRAM and the tiling of one dense layer to the on-chip buffers.

Layouts (``BI``/``BO`` = BLOCK_IN/BLOCK_OUT, ``Kb = ceil(K/BI)``, ``Nb = ceil(N/BO)``):

- activations: ``(M, Kb)`` vectors of BI int8, row-major (``pack_inputs``), K
  zero-padded to a multiple of BI;
- weights: ``(Nb, Kb)`` tiles of BO x BI int8 stored [out][in]
  (``pack_weights``), K and N zero-padded;
- per-channel int32 constants: ``(Nb, 2)`` ACC vectors, the bias (with the
  rounding term) then the shift amounts of each block of BO channels
  (``pack_channel_constants``), so one LOAD brings both for a tile;
- per-row shift amounts: ``(M,)`` ACC vectors, every lane holding its row's
  shift (``pack_row_shifts``);
- outputs: ``(M, Nb)`` vectors of BO int8 (``unpack_outputs`` crops N).

Tiling (``plan_tiles``): the output is cut into tiles of ``m_tile`` rows x
``n_tile`` blocks, each accumulated over chunks of ``k_tile`` blocks of K.
Each chunk's inputs (``m_tile x k_tile`` vectors) and weights (``n_tile x
k_tile`` tiles) go to one half of the INP and WGT buffers, alternating, so
the next chunk loads while this one computes; each tile's accumulators go to
one half of the tile area of ACC, alternating, so a tile is stored while the
next one accumulates. After the two tile halves ACC holds the tile's
channel constants (``2 * n_tile`` vectors) and, when rows have their own
shift, the M tile's row shifts (``m_tile`` vectors). Among the tilings that
fit, ``plan_tiles`` takes the one with the smallest estimated time
(``TilePlan.estimate``: the busiest of the three modules plus the pipeline's
fill and drain); tilings within 1% of it count as equal and the one with the
fewest instructions wins (bigger tiles: a shorter stream, a faster simulation). BERT-base's
768 x 3072 weights (2.25 MiB) against a 256 KiB weight buffer are the case
this exists for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import VTAConfig

#: tilings within this share of the fastest estimate count as equal: the one with fewest instructions wins
PLAN_SLACK = 0.01
#: ALU operations per output vector: ADD bias, SHR, MIN, MAX (+ SHR by the row shift when rows have one)
BASE_ALU_OPS = 4


def blocks(n: int, block: int) -> int:
    return -(-n // block)


@dataclass(frozen=True)
class TilePlan:
    """How one ``rows x K x N`` layer is cut to VTA's buffers (see the module docstring)."""

    rows: int
    kb: int
    nb: int
    m_tile: int
    n_tile: int
    k_tile: int
    row_shift: bool

    # ------------------------------------------------------------ tiles
    @staticmethod
    def _cuts(total: int, size: int) -> list[tuple[int, int]]:
        return [(s, min(size, total - s)) for s in range(0, total, size)]

    @property
    def m_cuts(self) -> list[tuple[int, int]]:
        return self._cuts(self.rows, self.m_tile)

    @property
    def n_cuts(self) -> list[tuple[int, int]]:
        return self._cuts(self.nb, self.n_tile)

    @property
    def k_cuts(self) -> list[tuple[int, int]]:
        return self._cuts(self.kb, self.k_tile)

    @property
    def num_tiles(self) -> int:
        return len(self.m_cuts) * len(self.n_cuts)

    @property
    def num_chunks(self) -> int:
        return self.num_tiles * len(self.k_cuts)

    # ------------------------------------------------------ SRAM layout
    def inp_half(self, config: VTAConfig, half: int) -> int:
        return half * (config.inp_depth // 2)

    def wgt_half(self, config: VTAConfig, half: int) -> int:
        return half * (config.wgt_depth // 2)

    def acc_tile(self, half: int) -> int:
        return half * self.m_tile * self.n_tile

    @property
    def acc_consts(self) -> int:
        return 2 * self.m_tile * self.n_tile

    @property
    def acc_row_shifts(self) -> int:
        return self.acc_consts + 2 * self.n_tile

    @property
    def acc_used(self) -> int:
        return self.acc_row_shifts + (self.m_tile if self.row_shift else 0)

    def fits(self, config: VTAConfig) -> bool:
        return (
            self.m_tile * self.k_tile <= config.inp_depth // 2
            and self.n_tile * self.k_tile <= config.wgt_depth // 2
            and self.acc_used <= config.acc_depth
            and self.m_tile < 1 << 14
            and self.n_tile < 1 << 14
        )

    # -------------------------------------------------------- estimate
    def alu_ops(self) -> int:
        return BASE_ALU_OPS + (1 if self.row_shift else 0)

    def estimate(self, config: VTAConfig) -> float:
        """Cycles: the busiest module (compute, load, store) plus the first chunk's load and the last tile's store."""
        c = config
        lat, bus = c.dma_latency_cycles, c.bus_bytes
        n_m, n_n, n_k = len(self.m_cuts), len(self.n_cuts), len(self.k_cuts)
        tiles = n_m * n_n
        vectors = self.rows * self.nb
        compute = (
            vectors * self.kb  # GEMM
            + vectors  # reset
            + self.alu_ops() * c.alu_cycles_per_op * vectors
            + tiles * (lat + 2 * self.n_tile * c.acc_elem_bytes / bus)
            + (n_m * (lat + self.m_tile * c.acc_elem_bytes / bus) if self.row_shift else 0)
        )
        load = (
            n_n * self.rows * self.kb * c.inp_elem_bytes / bus
            + n_m * self.nb * self.kb * c.wgt_elem_bytes / bus
            + 2 * lat * tiles * n_k
        )
        store = vectors * c.out_elem_bytes / bus + lat * tiles
        fill = (
            2 * lat
            + (self.m_tile * self.k_tile * c.inp_elem_bytes + self.n_tile * self.k_tile * c.wgt_elem_bytes) / bus
        )
        drain = lat + self.m_tile * self.n_tile * c.out_elem_bytes / bus
        return max(compute, load, store) + fill + drain

    def instructions(self) -> int:
        """Instructions the program will have (for tie-breaks and reports)."""
        per_tile = 2 + self.alu_ops() + 1  # const load, reset, ALU ops, store
        return self.num_chunks * 3 + self.num_tiles * per_tile + len(self.m_cuts) * self.row_shift + 4

    def describe(self) -> str:
        return (
            f"{self.rows}x{self.kb}x{self.nb} blocks in tiles of {self.m_tile} rows x {self.n_tile} blocks, "
            f"K chunks of {self.k_tile} blocks ({self.num_tiles} tile(s), {self.num_chunks} chunk(s))"
        )


def plan_tiles(config: VTAConfig, rows: int, k: int, n: int, row_shift: bool) -> TilePlan:
    """The fastest tiling that fits (see the module docstring); ``TargetError`` if none does."""
    return _plan(config, rows, blocks(k, config.block_in), blocks(n, config.block_out), row_shift)


@lru_cache(maxsize=256)
def _plan(config: VTAConfig, rows: int, kb: int, nb: int, row_shift: bool) -> TilePlan:
    if rows < 1 or kb < 1 or nb < 1:
        raise TargetError(f"cannot tile a {rows} x {kb} x {nb}-block layer")
    m_cands = {rows}
    for j in range(1, 17):
        m_cands.add(blocks(rows, j))
    p = 1
    while p < rows:
        m_cands.add(p)
        p *= 2
    found: list[tuple[float, int, TilePlan]] = []
    inp_half, wgt_half = config.inp_depth // 2, config.wgt_depth // 2
    for m_t in sorted(m_cands):
        if m_t > inp_half:
            continue
        for n_t in range(1, nb + 1):
            k_max = min(inp_half // m_t, wgt_half // n_t, kb)
            if k_max < 1:
                break
            k_t = blocks(kb, blocks(kb, k_max))  # balanced chunks
            plan = TilePlan(rows, kb, nb, m_t, n_t, k_t, row_shift)
            if not plan.fits(config):
                continue
            found.append((plan.estimate(config), plan.instructions(), plan))
    if not found:
        raise TargetError(
            f"no tiling of a {rows}-row layer with {kb} x {nb} blocks fits the buffers of {config.design_name}"
        )
    fastest = min(f[0] for f in found)
    near = [f for f in found if f[0] <= fastest * (1 + PLAN_SLACK)]
    return min(near, key=lambda f: (f[1], f[0]))[2]


# ---------------------------------------------------------------- packing
def pack_weights(w: np.ndarray, config: VTAConfig) -> np.ndarray:
    """``w`` int8 [K, N] -> tiles (Nb, Kb, BO, BI) [out][in], zero-padded."""
    k, n = w.shape
    bi, bo = config.block_in, config.block_out
    kb, nb = blocks(k, bi), blocks(n, bo)
    padded = np.zeros((kb * bi, nb * bo), np.int8)
    padded[:k, :n] = w
    return np.ascontiguousarray(padded.reshape(kb, bi, nb, bo).transpose(2, 0, 3, 1))


def unpack_weights(tiles: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of ``pack_weights``: tiles (Nb, Kb, BO, BI) -> int8 [k, n]."""
    nb, kb, bo, bi = tiles.shape
    return np.ascontiguousarray(tiles.transpose(1, 3, 0, 2).reshape(kb * bi, nb * bo)[:k, :n])


def pack_inputs(x: np.ndarray, config: VTAConfig, rows: int | None = None) -> np.ndarray:
    """``x`` int8 [M, K] -> (rows, Kb, BI) vectors (K and rows zero-padded)."""
    m, k = x.shape
    bi = config.block_in
    kb = blocks(k, bi)
    out = np.zeros((rows or m, kb * bi), np.int8)
    out[:m, :k] = x
    return out.reshape(rows or m, kb, bi)


def pack_channel_constants(bias: np.ndarray, shift: np.ndarray, config: VTAConfig) -> np.ndarray:
    """Per-channel int32 bias and shift [N] -> (Nb, 2, BO): bias vector, then shift vector, per block."""
    bo = config.block_out
    n = bias.shape[0]
    nb = blocks(n, bo)
    out = np.zeros((nb, 2, bo), np.int32)
    flat_b = np.zeros(nb * bo, np.int32)
    flat_b[:n] = bias
    flat_s = np.zeros(nb * bo, np.int32)
    flat_s[:n] = shift
    out[:, 0] = flat_b.reshape(nb, bo)
    out[:, 1] = flat_s.reshape(nb, bo)
    return out


def pack_row_shifts(shifts: np.ndarray, config: VTAConfig, rows: int | None = None) -> np.ndarray:
    """Per-row shift amounts [M] -> (rows, BO) int32, each lane holding its row's shift."""
    m = shifts.shape[0]
    out = np.zeros((rows or m, config.block_out), np.int32)
    out[:m] = np.asarray(shifts, np.int32)[:, None]
    return out


def unpack_outputs(out: np.ndarray, n: int, m: int | None = None) -> np.ndarray:
    """(rows, Nb, BO) int8 -> [m, n]."""
    rows = out.shape[0]
    flat = out.reshape(rows, -1)
    return flat[: m if m is not None else rows, :n]


__all__ = [
    "BASE_ALU_OPS",
    "TilePlan",
    "blocks",
    "pack_channel_constants",
    "pack_inputs",
    "pack_row_shifts",
    "pack_weights",
    "plan_tiles",
    "unpack_outputs",
    "unpack_weights",
]
