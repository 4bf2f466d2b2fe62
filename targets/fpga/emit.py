"""Program emission: one ``DenseLayer`` at a fixed row count -> a VTA ``Program``.

The stream, in the order VTA's runtime would issue it (``TilePlan`` gives
the tiles, each of K chunks; ``c`` counts chunks and ``t`` tiles over the
whole program; buffer halves alternate with their parity)::

    compute  LOAD UOP      every micro-op, once
    per tile t (M tiles outer, N tiles inner):
      compute  LOAD ACC    the M tile's row shifts (when rows have their own scale and the M tile changes)
      compute  LOAD ACC    the N tile's bias and shift vectors
      compute  GEMM reset  the tile's accumulators          pops s2g when t >= 2 (store of t-2 done)
      per chunk c of the tile:
        load     LOAD INP  into INP half c%2                 pops g2l when c >= 2 (GEMM of c-2 done)
        load     LOAD WGT  into WGT half c%2                 pushes l2g
        compute  GEMM      acc += inp . wgt                  pops l2g; pushes g2l when chunk c+2 exists
      compute  ALU         [SHR by row shift], ADD bias, SHR shift, MIN 127, MAX -128; the last pushes g2s
      store    STORE       the tile's int8 vectors           pops g2s; pushes s2g when tile t+2 exists or t is last
    load     LOAD INP x_size 0    pushes l2g (nothing left to load)
    compute  LOAD UOP x_size 0    pops l2g and s2g (everything loaded and stored)
    compute  FINISH

so loads run up to two chunks ahead of the GEMMs, a tile is stored while the
next two accumulate, no queue ever holds more than three tokens (the
hardware holds 8), and every pushed token is popped. A GEMM runs ``iter_out
= n`` blocks x ``iter_in = m`` rows over ``k`` micro-ops ``(dst=tile,
src=inp+k, wgt=wgt+k)`` with factors ``dst (1, n)``, ``src (0, k)``,
``wgt (k, 0)``: ``m * n * k`` products for ``k`` micro-ops. ALU ops run
``iter_out = m`` rows x ``iter_in = n`` blocks over one micro-op. Micro-ops
are shared between instructions that use the same buffer halves.
"""

from __future__ import annotations

import numpy as np

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import UOP_BYTES, VTAConfig
from accelopt.targets.fpga.isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    Flags,
    GemmInsn,
    Insn,
    MemInsn,
    MemType,
    Opcode,
    encode_uops,
)
from accelopt.targets.fpga.layout import (
    pack_channel_constants,
    pack_weights,
    plan_tiles,
)
from accelopt.targets.fpga.program import Program, RegionAllocator, check_addresses
from accelopt.targets.fpga.requant import DenseLayer


class _Uops:
    """Micro-op table: ranges keyed by what they encode, so equal ranges are shared."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int]] = []
        self.ranges: dict[tuple, tuple[int, int]] = {}

    def get(self, key: tuple, uops: list[tuple[int, int, int]]) -> tuple[int, int]:
        hit = self.ranges.get(key)
        if hit is None:
            hit = (len(self.rows), len(self.rows) + len(uops))
            self.rows.extend(uops)
            self.ranges[key] = hit
        return hit


def _mem(op: Opcode, mt: MemType, sram: int, dram: int, y: int, x: int, stride: int, **flags: bool) -> MemInsn:
    return MemInsn(op, mt, sram, dram, y, x, stride, flags=Flags(**flags))


def compile_layer(layer: DenseLayer, rows: int, config: VTAConfig, base: int, name: str | None = None) -> Program:
    """Compile ``layer`` for ``rows`` rows into a program whose regions start at byte ``base``."""
    c = config
    plan = plan_tiles(c, rows, layer.k, layer.n, layer.row_shift)
    kb, nb = plan.kb, plan.nb
    bi, bo = c.block_in, c.block_out
    alloc = RegionAllocator(base)
    uops = _Uops()
    insns: list[Insn] = []

    # regions (the uop region's size is known only after emission: it goes last among the constants)
    wgt_r = alloc.add("weight", "constant", "WGT", c.wgt_elem_bytes, (nb, kb, bo, bi), "int8", "weight tiles [out][in]")
    cst_r = alloc.add(
        "constants", "constant", "ACC", c.acc_elem_bytes, (nb, 2, bo), "int32", "per block: bias + rounding, shift"
    )
    inp_r = alloc.add("input", "input", "INP", c.inp_elem_bytes, (rows, kb, bi), "int8", "activations (M, Kb) vectors")
    rs_r = (
        alloc.add("row_shift", "input", "ACC", c.acc_elem_bytes, (rows, bo), "int32", "per-row shift, every lane")
        if layer.row_shift
        else None
    )
    out_r = alloc.add("output", "output", "OUT", c.out_elem_bytes, (rows, nb, bo), "int8", "results (M, Nb) vectors")

    body: list[Insn] = []
    m_cuts, n_cuts, k_cuts = plan.m_cuts, plan.n_cuts, plan.k_cuts
    n_tiles, n_chunks = plan.num_tiles, plan.num_chunks
    uniform = bool((layer.shift == layer.shift[0]).all()) if layer.n else True
    t = chunk = 0
    for m0, msz in m_cuts:
        if rs_r is not None:
            body.append(_mem(Opcode.LOAD, MemType.ACC, plan.acc_row_shifts, rs_r.elem_address + m0, 1, msz, msz))
        for n0, nsz in n_cuts:
            ht = t % 2
            tile = plan.acc_tile(ht)
            body.append(
                _mem(Opcode.LOAD, MemType.ACC, plan.acc_consts, cst_r.elem_address + 2 * n0, 1, 2 * nsz, 2 * nsz)
            )
            rb, re = uops.get(("dst", tile), [(tile, 0, 0)])
            body.append(GemmInsn(True, rb, re, msz, nsz, nsz, 1, 0, 0, 0, 0, Flags(pop_next=t >= 2)))
            for k0, ksz in k_cuts:
                hc = chunk % 2
                inp_b, wgt_b = plan.inp_half(c, hc), plan.wgt_half(c, hc)
                body.append(
                    _mem(
                        Opcode.LOAD,
                        MemType.INP,
                        inp_b,
                        inp_r.elem_address + m0 * kb + k0,
                        msz,
                        ksz,
                        kb,
                        pop_next=chunk >= 2,
                    )
                )
                body.append(
                    _mem(
                        Opcode.LOAD, MemType.WGT, wgt_b, wgt_r.elem_address + n0 * kb + k0, nsz, ksz, kb, push_next=True
                    )
                )
                gb, ge = uops.get(("gemm", tile, inp_b, wgt_b, ksz), [(tile, inp_b + k, wgt_b + k) for k in range(ksz)])
                body.append(
                    GemmInsn(
                        False,
                        gb,
                        ge,
                        nsz,
                        msz,
                        1,
                        nsz,
                        0,
                        ksz,
                        ksz,
                        0,
                        Flags(pop_prev=True, push_prev=chunk + 2 < n_chunks),
                    )
                )
                chunk += 1
            alu: list[AluInsn] = []
            if rs_r is not None:
                sb, se = uops.get(("alu", tile, plan.acc_row_shifts), [(tile, plan.acc_row_shifts, 0)])
                alu.append(AluInsn(AluOp.SHR, False, 0, sb, se, msz, nsz, nsz, 1, 1, 0))
            bb, be = uops.get(("alu", tile, plan.acc_consts), [(tile, plan.acc_consts, 0)])
            alu.append(AluInsn(AluOp.ADD, False, 0, bb, be, msz, nsz, nsz, 1, 0, 2))
            if not uniform:
                hb, he = uops.get(("alu", tile, plan.acc_consts + 1), [(tile, plan.acc_consts + 1, 0)])
                alu.append(AluInsn(AluOp.SHR, False, 0, hb, he, msz, nsz, nsz, 1, 0, 2))
            elif layer.n and int(layer.shift[0]) != 0:
                alu.append(AluInsn(AluOp.SHR, True, int(layer.shift[0]), rb, re, msz, nsz, nsz, 1, 0, 0))
            alu.append(AluInsn(AluOp.MIN, True, 127, rb, re, msz, nsz, nsz, 1, 0, 0))
            last = AluInsn(AluOp.MAX, True, -128, rb, re, msz, nsz, nsz, 1, 0, 0, flags=Flags(push_next=True))
            body.extend(alu + [last])
            body.append(
                _mem(
                    Opcode.STORE,
                    MemType.OUT,
                    tile,
                    out_r.elem_address + m0 * nb + n0,
                    msz,
                    nsz,
                    nb,
                    pop_prev=True,
                    push_prev=t + 2 < n_tiles or t == n_tiles - 1,
                )
            )
            t += 1

    table = np.array(uops.rows, np.int64).reshape(-1, 3)
    uop_words = encode_uops(table[:, 0], table[:, 1], table[:, 2], c)
    if len(uop_words) > c.uop_depth:
        raise TargetError(f"layer {layer.name}: {len(uop_words)} micro-ops do not fit the UOP buffer ({c.uop_depth})")
    uop_r = alloc.add("uop", "constant", "UOP", UOP_BYTES, (len(uop_words),), "uint32", "micro-ops")
    insns.append(_mem(Opcode.LOAD, MemType.UOP, 0, uop_r.elem_address, 1, len(uop_words), len(uop_words)))
    insns.extend(body)
    insns.append(_mem(Opcode.LOAD, MemType.INP, 0, 0, 0, 0, 0, push_next=True))
    insns.append(_mem(Opcode.LOAD, MemType.UOP, 0, 0, 0, 0, 0, pop_prev=True, pop_next=True))
    insns.append(FinishInsn())

    consts = pack_channel_constants(layer.bias, layer.shift, c)
    program = Program(
        name or layer.name,
        c,
        insns,
        alloc.regions,
        {"weight": pack_weights(layer.weight, c), "constants": consts, "uop": uop_words},
        rows,
        layer.k,
        layer.n,
        plan,
        len(uop_words),
        {"alu_ops_per_vector": len(alu) + 1, "blocks": {"k": kb, "n": nb}},
    )
    check_addresses(program)
    return program


__all__ = ["compile_layer"]
