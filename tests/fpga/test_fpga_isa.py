"""VTA configuration and ISA: field layouts, encode/decode, micro-ops, routing, disassembly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import PRESETS, VTAConfig, get_config, load_config
from accelopt.targets.fpga.isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    Flags,
    GemmInsn,
    IsaError,
    Layout,
    MemInsn,
    MemType,
    Opcode,
    decode,
    decode_program,
    decode_uops,
    encode,
    encode_program,
    encode_uops,
)
from accelopt.targets.fpga.modules import QUEUE_OF_FLAG, disassemble_one, module_of, tokens

CFG = VTAConfig()


# ------------------------------------------------------------------ config
def test_default_config_is_vta_pynq():
    c = CFG
    assert c.design_name == "1x16_i8w8a32_15_15_18_17"
    assert (c.inp_depth, c.wgt_depth, c.acc_depth, c.uop_depth) == (2048, 1024, 2048, 8192)
    assert (c.inp_elem_bytes, c.wgt_elem_bytes, c.acc_elem_bytes, c.out_elem_bytes) == (16, 256, 64, 16)
    assert c.bus_bytes == 8 and c.clock_mhz == 100
    assert c.macs_per_cycle == 256 and c.peak_gops == pytest.approx(51.2)


def test_presets_and_config_file(tmp_path):
    assert PRESETS["zcu104"].clock_mhz == 333 and PRESETS["zcu104"].bus_bytes == 16
    big = PRESETS["zcu104-1x32"]
    assert big.macs_per_cycle == 1024 and (big.inp_depth, big.wgt_depth, big.acc_depth) == (1024, 256, 1024)
    f = tmp_path / "vta.json"
    f.write_text(json.dumps({"TARGET": "myboard", "LOG_BLOCK": 5, "clock_mhz": 200, "HW_VER": "0.0.2"}))
    c = load_config(f)
    assert (c.name, c.block_in, c.block_out, c.clock_mhz) == ("myboard", 32, 32, 200)
    with pytest.raises(TargetError, match="unknown VTA board 'nope'"):
        get_config("nope")
    f.write_text(json.dumps({"LOG_ACC_WIDTH": 4}))
    with pytest.raises(TargetError, match="int8 x int8 -> int32"):
        load_config(f)
    f.write_text(json.dumps({"LOG_BLOKC": 4}))
    with pytest.raises(TargetError, match="unknown VTA config key 'LOG_BLOKC'"):
        load_config(f)
    with pytest.raises(TargetError, match="does not exist"):
        load_config(tmp_path / "missing.json")


# ------------------------------------------------------------------ layout
def test_layout_matches_vta_isa_document():
    lay = Layout.of(CFG)
    mem = {n: (lo, hi) for n, lo, hi in lay.mem}
    assert mem["memory_type"] == (7, 10) and mem["sram_base"] == (10, 26) and mem["dram_base"] == (26, 58)
    assert mem["y_size"] == (64, 80) and mem["x_size"] == (80, 96) and mem["x_stride"] == (96, 112)
    assert [mem[k] for k in ("y_pad_0", "y_pad_1", "x_pad_0", "x_pad_1")] == [
        (112, 116),
        (116, 120),
        (120, 124),
        (124, 128),
    ]
    gemm = {n: (lo, hi) for n, lo, hi in lay.gemm}
    assert gemm["reset"] == (7, 8) and gemm["uop_bgn"] == (8, 21) and gemm["uop_end"] == (21, 35)
    assert gemm["iter_out"] == (35, 49) and gemm["iter_in"] == (49, 63)
    assert gemm["dst_factor_out"] == (64, 75) and gemm["dst_factor_in"] == (75, 86)
    assert gemm["src_factor_out"] == (86, 97) and gemm["src_factor_in"] == (97, 108)
    assert gemm["wgt_factor_out"] == (108, 118) and gemm["wgt_factor_in"] == (118, 128)
    alu = {n: (lo, hi) for n, lo, hi in lay.alu}
    assert alu["alu_op"] == (108, 111) and alu["use_imm"] == (111, 112) and alu["imm"] == (112, 128)
    assert [(lo, hi) for _, lo, hi in lay.uop] == [(0, 11), (11, 22), (22, 32)]


def test_layout_follows_the_configuration():
    lay = Layout.of(PRESETS["zcu104-1x32"])  # depths 1024/256/1024: 10/8/10-bit indices
    gemm = {n: (lo, hi) for n, lo, hi in lay.gemm}
    assert gemm["dst_factor_out"] == (64, 74) and gemm["wgt_factor_in"] == (112, 120)
    assert [(lo, hi) for _, lo, hi in lay.uop] == [(0, 10), (10, 20), (20, 28)]


# ------------------------------------------------------------- encode/decode
def test_load_encoding_by_hand():
    insn = MemInsn(Opcode.LOAD, MemType.INP, 5, 0x100, 3, 4, 7, 1, 2, 3, 4, Flags(pop_next=True, push_next=True))
    word = (
        0
        | (1 << 4)
        | (1 << 6)
        | (2 << 7)
        | (5 << 10)
        | (0x100 << 26)
        | (3 << 64)
        | (4 << 80)
        | (7 << 96)
        | (1 << 112)
        | (2 << 116)
        | (3 << 120)
        | (4 << 124)
    )
    assert encode(insn, CFG) == word.to_bytes(16, "little")
    assert decode(word.to_bytes(16, "little"), CFG) == insn


def test_alu_encoding_by_hand_with_negative_immediate():
    insn = AluInsn(AluOp.SHR, True, -3, 2, 3, 5, 6, 7, 1, 0, 2, flags=Flags(push_next=True))
    word = (
        4
        | (1 << 6)
        | (2 << 8)
        | (3 << 21)
        | (5 << 35)
        | (6 << 49)
        | (7 << 64)
        | (1 << 75)
        | (0 << 86)
        | (2 << 97)
        | (3 << 108)
        | (1 << 111)
        | ((-3 & 0xFFFF) << 112)
    )
    assert encode(insn, CFG) == word.to_bytes(16, "little")
    assert decode(word.to_bytes(16, "little"), CFG) == insn


def test_roundtrip_of_every_kind():
    rng = np.random.default_rng(0)
    insns = [
        MemInsn(Opcode.STORE, MemType.OUT, 17, 0x1234, 9, 3, 12, flags=Flags(pop_prev=True, push_prev=True)),
        GemmInsn(False, 0, 8, 7, 128, 1, 7, 0, 8, 8, 0, Flags(pop_prev=True, push_prev=True)),
        GemmInsn(True, 3, 4, 16, 5, 5, 1, 0, 0, 0, 0),
        AluInsn(AluOp.MAX, True, -128, 1, 2, 4, 4, 4, 1, 0, 0),
        AluInsn(AluOp.ADD, False, 0, 1, 2, 4, 4, 4, 1, 0, 2),
        FinishInsn(),
    ]
    for _ in range(20):
        insns.append(
            GemmInsn(
                bool(rng.integers(2)),
                *(int(rng.integers(0, 1 << 10)) for _ in range(4)),
                *(int(rng.integers(0, 1 << 10)) for _ in range(6)),
            )
        )
    data = encode_program(insns, CFG)
    assert len(data) == 16 * len(insns)
    assert decode_program(data, CFG) == insns


def test_encode_checks_field_widths_and_decode_rejects_unknown_opcodes():
    with pytest.raises(IsaError, match=r"instruction 2 \(GEMM\): iter_out=16384 does not fit its 14-bit field"):
        encode(GemmInsn(False, 0, 1, 1 << 14, 1, 0, 0, 0, 0, 0, 0), CFG, 2)
    with pytest.raises(IsaError, match="immediate 40000"):
        encode(AluInsn(AluOp.ADD, True, 40000, 0, 1, 1, 1, 0, 0, 0, 0), CFG)
    with pytest.raises(IsaError, match="unknown opcode 7"):
        decode((7).to_bytes(16, "little"), CFG, 3)
    with pytest.raises(IsaError, match="multiple of 16"):
        decode_program(b"\0" * 20, CFG)


def test_uops_roundtrip_and_overflow():
    dst, src, wgt = np.array([0, 2047, 5]), np.array([2047, 0, 7]), np.array([1023, 3, 0])
    words = encode_uops(dst, src, wgt, CFG)
    assert words.dtype == np.uint32 and int(words[0]) == 0 | (2047 << 11) | (1023 << 22)
    for a, b in zip(decode_uops(words, CFG), (dst, src, wgt)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IsaError, match="wgt index 1024"):
        encode_uops(np.array([0]), np.array([0]), np.array([1024]), CFG)


# --------------------------------------------------------- routing, tokens
def test_module_routing():
    assert module_of(MemInsn(Opcode.LOAD, MemType.INP, 0, 0, 1, 1, 1)) == "load"
    assert module_of(MemInsn(Opcode.LOAD, MemType.WGT, 0, 0, 1, 1, 1)) == "load"
    assert module_of(MemInsn(Opcode.LOAD, MemType.UOP, 0, 0, 1, 1, 1)) == "compute"
    assert module_of(MemInsn(Opcode.LOAD, MemType.ACC, 0, 0, 1, 1, 1)) == "compute"
    assert module_of(MemInsn(Opcode.STORE, MemType.OUT, 0, 0, 1, 1, 1)) == "store"
    assert module_of(GemmInsn(False, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0)) == "compute"
    assert module_of(AluInsn(AluOp.MIN, True, 0, 0, 1, 1, 1, 0, 0, 0, 0)) == "compute"
    assert module_of(FinishInsn()) == "compute"


def test_flag_to_queue_table():
    assert QUEUE_OF_FLAG[("load", "pop_next")] == "g2l" and QUEUE_OF_FLAG[("load", "push_next")] == "l2g"
    assert QUEUE_OF_FLAG[("load", "pop_prev")] is None and QUEUE_OF_FLAG[("load", "push_prev")] is None
    assert [QUEUE_OF_FLAG[("compute", f)] for f in ("pop_prev", "pop_next", "push_prev", "push_next")] == [
        "l2g",
        "s2g",
        "g2l",
        "g2s",
    ]
    assert QUEUE_OF_FLAG[("store", "pop_prev")] == "g2s" and QUEUE_OF_FLAG[("store", "push_prev")] == "s2g"
    assert QUEUE_OF_FLAG[("store", "pop_next")] is None and QUEUE_OF_FLAG[("store", "push_next")] is None
    store = MemInsn(Opcode.STORE, MemType.OUT, 0, 0, 1, 1, 1, flags=Flags(pop_prev=True, push_next=True))
    assert tokens(store) == (["g2s"], [], ["push_next"])


def test_disassembly_names_tokens():
    g = GemmInsn(False, 0, 8, 7, 128, 1, 7, 0, 8, 8, 0, Flags(pop_prev=True, push_prev=True))
    line = disassemble_one(g, 12)
    assert line.startswith("   12  GEMM uop[0:8) iter=7x128")
    assert line.endswith("[pop l2g, push g2l]")
    ld = MemInsn(Opcode.LOAD, MemType.INP, 0, 0x40, 0, 0, 0, flags=Flags(push_prev=True))
    assert "(no-op)" in disassemble_one(ld) and "push_prev (illegal here)" in disassemble_one(ld)
    assert "ALU  SHR imm=-3" in disassemble_one(AluInsn(AluOp.SHR, True, -3, 0, 1, 1, 1, 0, 0, 0, 0))
