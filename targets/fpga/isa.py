"""VTA's instruction set: LOAD, STORE, GEMM, ALU and FINISH, micro-ops, their bit layouts, and a disassembler.

Everything follows ``shared/VTA-ISA.md`` (read from apache/tvm-vta's
``hw_spec.h``): a 128-bit little-endian instruction whose fields are C
bit-fields of ``uint64_t``, allocated from bit 0 upwards, a field that would
straddle bit 64 starting at bit 64. ``Layout(config)`` derives every field's
``[lo, hi)`` range from the configuration (the widths of ``uop_bgn``, the
index factors and the micro-op fields follow the buffer depths), so another
``VTAConfig`` moves the fields the way VTA's own headers do.

Instructions are small frozen dataclasses (``MemInsn``, ``GemmInsn``,
``AluInsn``, ``FinishInsn``) sharing the four dependency flags.
``encode``/``decode`` convert one instruction, ``encode_program`` /
``decode_program`` a stream (``n x 16`` bytes); ``encode_uops`` /
``decode_uops`` the 32-bit micro-ops. Which module runs an instruction, the
queues its flags name, and the disassembler are in ``modules.py``.

Encoding checks that each value fits its field (``IsaError`` names the
instruction and field); decoding rejects unknown opcodes. Whether an
instruction is *portable* (runs the same on VTA's functional simulator and
its HLS hardware) is the simulator's business, not the encoder's: tests need
to encode non-portable instructions to check that they are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import TypeVar

import numpy as np

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import INSN_BYTES, VTAConfig


class IsaError(TargetError):
    """An instruction that cannot be encoded or decoded."""


class Opcode(IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(IntEnum):
    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4
    ACC_8BIT = 5  # fsim only: never portable


class AluOp(IntEnum):
    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3
    MUL = 4  # fsim only: never portable


# ----------------------------------------------------------------- instructions
@dataclass(frozen=True, slots=True)
class Flags:
    """The dependency flags every instruction carries."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False


@dataclass(frozen=True, slots=True)
class MemInsn:
    """LOAD (``opcode=LOAD``) or STORE: a 2-D strided copy between DRAM and one on-chip buffer."""

    opcode: Opcode
    memory_type: MemType
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0
    flags: Flags = Flags()


@dataclass(frozen=True, slots=True)
class GemmInsn:
    """GEMM over micro-ops ``[uop_bgn, uop_end)`` in a two-level loop; ``reset`` zeroes the destinations."""

    reset: bool
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int
    dst_factor_in: int
    src_factor_out: int
    src_factor_in: int
    wgt_factor_out: int
    wgt_factor_in: int
    flags: Flags = Flags()

    opcode = Opcode.GEMM


@dataclass(frozen=True, slots=True)
class AluInsn:
    """ALU ``alu_op`` over ACC vectors: ``dst = op(dst, imm if use_imm else acc[src])`` per lane."""

    alu_op: AluOp
    use_imm: bool
    imm: int
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int
    dst_factor_in: int
    src_factor_out: int
    src_factor_in: int
    reset: bool = False
    flags: Flags = Flags()

    opcode = Opcode.ALU


@dataclass(frozen=True, slots=True)
class FinishInsn:
    flags: Flags = Flags()

    opcode = Opcode.FINISH


Insn = MemInsn | GemmInsn | AluInsn | FinishInsn


def with_flags(insn: Insn, **flags: bool) -> Insn:
    """``insn`` with some dependency flags set (the others kept)."""
    return dataclasses.replace(insn, flags=dataclasses.replace(insn.flags, **flags))


# --------------------------------------------------------------------- layout
Field = tuple[str, int, int]  # name, lo, hi


def _allocate(widths: Sequence[tuple[str, int]]) -> tuple[Field, ...]:
    """C bit-field allocation over uint64 words: a field that would straddle a word boundary starts the next word."""
    out: list[Field] = []
    pos = 0
    for name, w in widths:
        if pos // 64 != (pos + w - 1) // 64:
            pos = (pos // 64 + 1) * 64
        out.append((name, pos, pos + w))
        pos += w
    if pos > 128:
        raise IsaError(f"instruction fields need {pos} bits, more than 128")
    return tuple(out)


_COMMON = (("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1))


@dataclass(frozen=True)
class Layout:
    """Bit ranges of every instruction kind's fields and of the micro-op, derived from a ``VTAConfig``."""

    mem: tuple[Field, ...]
    gemm: tuple[Field, ...]
    alu: tuple[Field, ...]
    uop: tuple[Field, ...]

    @classmethod
    def of(cls, config: VTAConfig) -> Layout:
        return _layout(config)

    def field(self, kind: str, name: str) -> tuple[int, int]:
        for n, lo, hi in getattr(self, kind):
            if n == name:
                return lo, hi
        raise KeyError(f"{kind} has no field {name!r}")


@lru_cache(maxsize=16)
def _layout(c: VTAConfig) -> Layout:
    mem = _allocate(
        _COMMON
        + (
            ("memory_type", 3),
            ("sram_base", 16),
            ("dram_base", 32),
            ("y_size", 16),
            ("x_size", 16),
            ("x_stride", 16),
            ("y_pad_0", 4),
            ("y_pad_1", 4),
            ("x_pad_0", 4),
            ("x_pad_1", 4),
        )
    )
    loops = _COMMON + (
        ("reset", 1),
        ("uop_bgn", c.log_uop_depth),
        ("uop_end", c.log_uop_depth + 1),
        ("iter_out", 14),
        ("iter_in", 14),
        ("dst_factor_out", c.log_acc_depth),
        ("dst_factor_in", c.log_acc_depth),
    )
    gemm = _allocate(
        loops
        + (
            ("src_factor_out", c.log_inp_depth),
            ("src_factor_in", c.log_inp_depth),
            ("wgt_factor_out", c.log_wgt_depth),
            ("wgt_factor_in", c.log_wgt_depth),
        )
    )
    alu = _allocate(
        loops
        + (
            ("src_factor_out", c.log_acc_depth),
            ("src_factor_in", c.log_acc_depth),
            ("alu_op", 3),
            ("use_imm", 1),
            ("imm", 16),
        )
    )
    src_w = max(c.log_acc_depth, c.log_inp_depth)
    uop = (
        ("dst", 0, c.log_acc_depth),
        ("src", c.log_acc_depth, c.log_acc_depth + src_w),
        ("wgt", c.log_acc_depth + src_w, c.log_acc_depth + src_w + c.log_wgt_depth),
    )
    return Layout(mem, gemm, alu, uop)


# ------------------------------------------------------------------- encode
def _flag_values(f: Flags) -> dict[str, int]:
    return {"pop_prev": f.pop_prev, "pop_next": f.pop_next, "push_prev": f.push_prev, "push_next": f.push_next}


def _field_values(insn: Insn) -> dict[str, int]:
    """The instruction's own fields (all but the flags) as integers, by name."""
    return {f.name: int(getattr(insn, f.name)) for f in dataclasses.fields(insn) if f.name != "flags"}


def _values(insn: Insn) -> tuple[str, dict[str, int]]:
    base = {"opcode": int(insn.opcode), **_flag_values(insn.flags)}
    if isinstance(insn, MemInsn):
        return "mem", {**base, **_field_values(insn)}
    if isinstance(insn, GemmInsn):
        return "gemm", {**base, **_field_values(insn)}
    if isinstance(insn, AluInsn):
        if not -(1 << 15) <= insn.imm < (1 << 15):
            raise IsaError(f"ALU immediate {insn.imm} does not fit 16 signed bits")
        return "alu", {**base, **_field_values(insn), "imm": insn.imm & 0xFFFF}
    return "finish", base


def encode(insn: Insn, config: VTAConfig, index: int | None = None) -> bytes:
    """One instruction as 16 little-endian bytes."""
    layout = Layout.of(config)
    kind, vals = _values(insn)
    fields = layout.mem if kind == "mem" else layout.gemm if kind == "gemm" else layout.alu
    if kind == "finish":
        fields = tuple(f for f in layout.mem if f[0] in vals)
    word = 0
    for name, lo, hi in fields:
        v = vals[name]
        if v < 0 or v >= 1 << (hi - lo):
            where = f"instruction {index}" if index is not None else "instruction"
            raise IsaError(f"{where} ({insn.opcode.name}): {name}={v} does not fit its {hi - lo}-bit field")
        word |= v << lo
    return word.to_bytes(INSN_BYTES, "little")


def encode_program(insns: Iterable[Insn], config: VTAConfig) -> bytes:
    return b"".join(encode(insn, config, i) for i, insn in enumerate(insns))


def _get(word: int, field: tuple[int, int]) -> int:
    lo, hi = field
    return (word >> lo) & ((1 << (hi - lo)) - 1)


def _fields_of(word: int, fields: Sequence[Field]) -> dict[str, int]:
    return {n: _get(word, (lo, hi)) for n, lo, hi in fields}


_I = TypeVar("_I", MemInsn, GemmInsn, AluInsn)


def _build(cls: type[_I], f: dict[str, int], flags: Flags, **typed: object) -> _I:
    """A ``cls`` from decoded fields ``f``; ``typed`` gives the fields that are not plain integers."""
    kw: dict[str, object] = {x.name: f[x.name] for x in dataclasses.fields(cls) if x.name != "flags"}
    return cls(**{**kw, **typed}, flags=flags)  # type: ignore[arg-type]


def decode(data: bytes, config: VTAConfig, index: int | None = None) -> Insn:
    """One instruction from 16 bytes; unknown opcodes and memory types are ``IsaError``."""
    if len(data) != INSN_BYTES:
        raise IsaError(f"an instruction is {INSN_BYTES} bytes, got {len(data)}")
    layout = Layout.of(config)
    word = int.from_bytes(data, "little")
    op = word & 7
    flags = Flags(bool(word >> 3 & 1), bool(word >> 4 & 1), bool(word >> 5 & 1), bool(word >> 6 & 1))
    where = f"instruction {index}" if index is not None else "instruction"
    if op in (Opcode.LOAD, Opcode.STORE):
        f = _fields_of(word, layout.mem)
        mt = f["memory_type"]
        if mt > MemType.ACC_8BIT:
            raise IsaError(f"{where}: unknown memory type {mt}")
        return _build(MemInsn, f, flags, opcode=Opcode(op), memory_type=MemType(mt))
    if op == Opcode.GEMM:
        f = _fields_of(word, layout.gemm)
        return _build(GemmInsn, f, flags, reset=bool(f["reset"]))
    if op == Opcode.ALU:
        f = _fields_of(word, layout.alu)
        if f["alu_op"] > AluOp.MUL:
            raise IsaError(f"{where}: unknown ALU opcode {f['alu_op']}")
        imm = f["imm"] - (1 << 16) if f["imm"] >= 1 << 15 else f["imm"]
        return _build(
            AluInsn, f, flags, alu_op=AluOp(f["alu_op"]), use_imm=bool(f["use_imm"]), imm=imm, reset=bool(f["reset"])
        )
    if op == Opcode.FINISH:
        return FinishInsn(flags)
    raise IsaError(f"{where}: unknown opcode {op}")


def decode_program(data: bytes, config: VTAConfig) -> list[Insn]:
    if len(data) % INSN_BYTES:
        raise IsaError(f"an instruction stream is a multiple of {INSN_BYTES} bytes, got {len(data)}")
    return [decode(data[i : i + INSN_BYTES], config, i // INSN_BYTES) for i in range(0, len(data), INSN_BYTES)]


# --------------------------------------------------------------------- uops
def encode_uops(dst: np.ndarray, src: np.ndarray, wgt: np.ndarray, config: VTAConfig) -> np.ndarray:
    """Micro-ops as uint32 words from index arrays (each checked against its field width)."""
    layout = Layout.of(config)
    out = np.zeros(np.shape(dst), np.uint32)
    for (name, lo, hi), arr in zip(layout.uop, (dst, src, wgt)):
        a = np.asarray(arr, np.int64)
        if a.size and (a.min() < 0 or a.max() >= 1 << (hi - lo)):
            raise IsaError(f"micro-op {name} index {int(a.max())} does not fit its {hi - lo}-bit field")
        out |= (a.astype(np.uint32) << np.uint32(lo)).astype(np.uint32)
    return out


def decode_uops(words: np.ndarray, config: VTAConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dst, src, wgt)`` int64 index arrays of uint32 micro-op words."""
    w = np.asarray(words, np.uint32).astype(np.int64)
    return tuple((w >> lo) & ((1 << (hi - lo)) - 1) for _, lo, hi in Layout.of(config).uop)  # type: ignore[return-value]


__all__ = [
    "AluInsn",
    "AluOp",
    "FinishInsn",
    "Flags",
    "GemmInsn",
    "Insn",
    "IsaError",
    "Layout",
    "MemInsn",
    "MemType",
    "Opcode",
    "decode",
    "decode_program",
    "decode_uops",
    "encode",
    "encode_program",
    "encode_uops",
    "with_flags",
]
