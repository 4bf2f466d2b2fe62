"""VTA's profiler counters, as its functional simulator names them, and how to read them off a program.

``inp/wgt/acc/uop_load_nbytes`` = ``x_size * y_size * element bytes`` of
each LOAD (padding not counted); ``out_store_nbytes`` likewise for STORE;
``gemm_counter`` += ``iter_out * iter_in * (uop_end - uop_bgn)`` for
non-reset GEMMs; ``alu_counter`` likewise for ALU ops. They do not depend
on the data, so ``static_counters`` reads them off the instructions; the
simulator counts them as it runs (tests check that both agree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from accelopt.targets.fpga.config import UOP_BYTES, VTAConfig
from accelopt.targets.fpga.isa import AluInsn, GemmInsn, Insn, MemInsn, MemType, Opcode


@dataclass
class Counters:
    """VTA's profiler counters (``sim_driver.cc``'s names)."""

    inp_load_nbytes: int = 0
    wgt_load_nbytes: int = 0
    acc_load_nbytes: int = 0
    uop_load_nbytes: int = 0
    out_store_nbytes: int = 0
    gemm_counter: int = 0
    alu_counter: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __iadd__(self, other: Counters) -> Counters:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def static_counters(insns: Sequence[Insn], config: VTAConfig) -> Counters:
    """The counters a run of ``insns`` reports, read off the instructions (they do not depend on the data)."""
    c = config
    out = Counters()
    for insn in insns:
        if isinstance(insn, MemInsn):
            n = insn.x_size * insn.y_size
            if insn.opcode == Opcode.STORE:
                out.out_store_nbytes += n * c.out_elem_bytes
            elif insn.memory_type == MemType.INP:
                out.inp_load_nbytes += n * c.inp_elem_bytes
            elif insn.memory_type == MemType.WGT:
                out.wgt_load_nbytes += n * c.wgt_elem_bytes
            elif insn.memory_type == MemType.ACC:
                out.acc_load_nbytes += n * c.acc_elem_bytes
            elif insn.memory_type == MemType.UOP and n:
                out.uop_load_nbytes += insn.x_size * UOP_BYTES
        elif isinstance(insn, (GemmInsn, AluInsn)):
            loops = insn.iter_out * insn.iter_in * max(0, insn.uop_end - insn.uop_bgn)
            if isinstance(insn, AluInsn):
                out.alu_counter += loops
            elif not insn.reset:
                out.gemm_counter += loops
    return out


__all__ = ["Counters", "static_counters"]
