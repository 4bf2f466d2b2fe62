"""Which VTA module runs an instruction, the queues its dependency flags name, and the disassembler.

- ``module_of``: load (LOAD of INP/WGT), store (STORE), compute (everything
  else: GEMM, ALU, FINISH, LOAD of UOP/ACC), as VTA's fetch stage routes them.
- ``QUEUE_OF_FLAG`` / ``tokens``: the flag-to-queue table of
  ``shared/VTA-ISA.md`` (load pops g2l and pushes l2g; compute pops l2g and
  s2g, pushes g2l and g2s; store pops g2s and pushes s2g; the other flags are
  illegal on that module).
- ``disassemble``: one line per instruction with its tokens named by queue
  (``pop l2g``, ``push g2s``), the form used in reports and in every
  simulator error.
"""

from __future__ import annotations

from collections.abc import Sequence

from accelopt.targets.fpga.isa import AluInsn, GemmInsn, Insn, MemInsn, MemType, Opcode

LOAD_MODULE, COMPUTE_MODULE, STORE_MODULE = "load", "compute", "store"
MODULES = (LOAD_MODULE, COMPUTE_MODULE, STORE_MODULE)


def module_of(insn: Insn) -> str:
    """Which module runs ``insn``: load (LOAD INP/WGT), store (STORE), compute (everything else)."""
    if isinstance(insn, MemInsn):
        if insn.opcode == Opcode.STORE:
            return STORE_MODULE
        if insn.memory_type in (MemType.INP, MemType.WGT):
            return LOAD_MODULE
    return COMPUTE_MODULE


#: (module, flag) -> the queue it pops or pushes; None: the flag is illegal in that module
QUEUE_OF_FLAG: dict[tuple[str, str], str | None] = {
    (LOAD_MODULE, "pop_prev"): None,
    (LOAD_MODULE, "pop_next"): "g2l",
    (LOAD_MODULE, "push_prev"): None,
    (LOAD_MODULE, "push_next"): "l2g",
    (COMPUTE_MODULE, "pop_prev"): "l2g",
    (COMPUTE_MODULE, "pop_next"): "s2g",
    (COMPUTE_MODULE, "push_prev"): "g2l",
    (COMPUTE_MODULE, "push_next"): "g2s",
    (STORE_MODULE, "pop_prev"): "g2s",
    (STORE_MODULE, "pop_next"): None,
    (STORE_MODULE, "push_prev"): "s2g",
    (STORE_MODULE, "push_next"): None,
}
QUEUES = ("l2g", "g2l", "g2s", "s2g")


def tokens(insn: Insn) -> tuple[list[str], list[str], list[str]]:
    """``(pops, pushes, illegal)``: the queues ``insn`` pops and pushes, and its flags that are illegal there."""
    module = module_of(insn)
    pops, pushes, illegal = [], [], []
    for flag in ("pop_prev", "pop_next", "push_prev", "push_next"):
        if getattr(insn.flags, flag):
            q = QUEUE_OF_FLAG[(module, flag)]
            if q is None:
                illegal.append(flag)
            elif flag.startswith("pop"):
                pops.append(q)
            else:
                pushes.append(q)
    return pops, pushes, illegal


# ------------------------------------------------------------ disassembly
def disassemble_one(insn: Insn, index: int | None = None) -> str:
    """One line: index, mnemonic, fields, then the tokens (``[pop l2g, push g2s]``)."""
    head = f"{index:5d}  " if index is not None else ""
    if isinstance(insn, MemInsn):
        name = "LOAD " if insn.opcode == Opcode.LOAD else "STORE"
        mt = insn.memory_type.name if insn.memory_type in MemType.__members__.values() else str(insn.memory_type)
        body = (
            f"{name} {mt:<4} sram=0x{insn.sram_base:04x} dram=0x{insn.dram_base:08x} "
            f"y={insn.y_size} x={insn.x_size} stride={insn.x_stride}"
        )
        if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            body += f" pad=y({insn.y_pad_0},{insn.y_pad_1}) x({insn.x_pad_0},{insn.x_pad_1})"
        if insn.x_size == 0:
            body += " (no-op)"
    elif isinstance(insn, GemmInsn):
        body = (
            f"GEMM{'.reset' if insn.reset else ''} uop[{insn.uop_bgn}:{insn.uop_end}) "
            f"iter={insn.iter_out}x{insn.iter_in} dst=({insn.dst_factor_out},{insn.dst_factor_in}) "
            f"src=({insn.src_factor_out},{insn.src_factor_in}) wgt=({insn.wgt_factor_out},{insn.wgt_factor_in})"
        )
    elif isinstance(insn, AluInsn):
        op = insn.alu_op.name
        operand = f"imm={insn.imm}" if insn.use_imm else "tensor"
        body = (
            f"ALU  {op:<3} {operand} uop[{insn.uop_bgn}:{insn.uop_end}) iter={insn.iter_out}x{insn.iter_in} "
            f"dst=({insn.dst_factor_out},{insn.dst_factor_in}) src=({insn.src_factor_out},{insn.src_factor_in})"
        )
    else:
        body = "FINISH"
    pops, pushes, illegal = tokens(insn)
    tok = [f"pop {q}" for q in pops] + [f"push {q}" for q in pushes] + [f"{f} (illegal here)" for f in illegal]
    return head + body + (f"  [{', '.join(tok)}]" if tok else "")


def disassemble(insns: Sequence[Insn], start: int = 0, count: int | None = None) -> list[str]:
    """Lines for ``insns[start:start+count]`` (all by default), each with its index."""
    end = len(insns) if count is None else min(len(insns), start + count)
    return [disassemble_one(insns[i], i) for i in range(start, end)]


__all__ = [
    "COMPUTE_MODULE",
    "LOAD_MODULE",
    "MODULES",
    "QUEUES",
    "QUEUE_OF_FLAG",
    "STORE_MODULE",
    "disassemble",
    "disassemble_one",
    "module_of",
    "tokens",
]
