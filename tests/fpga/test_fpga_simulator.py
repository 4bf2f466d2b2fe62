"""The VTA simulator, instruction kind by instruction kind, with hand-worked expectations; then its errors."""

from __future__ import annotations

import numpy as np
import pytest

from accelopt.targets.fpga.config import VTAConfig
from accelopt.targets.fpga.isa import AluInsn, AluOp, FinishInsn, Flags, GemmInsn, MemInsn, MemType, Opcode
from accelopt.targets.fpga.simulator import Simulator, SimulatorError

CFG = VTAConfig()
BASE = 0x1000


def load(mt, sram, dram, y, x, stride, pads=(0, 0, 0, 0), **flags):
    return MemInsn(Opcode.LOAD, mt, sram, dram, y, x, stride, *pads, flags=Flags(**flags))


def store(sram, dram, y, x, stride, **flags):
    return MemInsn(Opcode.STORE, MemType.OUT, sram, dram, y, x, stride, flags=Flags(**flags))


def gemm(bgn, end, it_out, it_in, dst=(0, 0), src=(0, 0), wgt=(0, 0), reset=False, **flags):
    return GemmInsn(reset, bgn, end, it_out, it_in, *dst, *src, *wgt, Flags(**flags))


def alu(op, bgn, end, it_out, it_in, dst=(0, 0), src=(0, 0), imm=None, **flags):
    return AluInsn(op, imm is not None, imm or 0, bgn, end, it_out, it_in, *dst, *src, flags=Flags(**flags))


def uops(sim: Simulator, rows):
    """Put micro-ops straight into the simulator's UOP buffer (decoded form)."""
    for k, (d, s, w) in enumerate(rows):
        sim.uop[:, k] = (d, s, w)


def finish(insns):
    return list(insns) + [FinishInsn()]


def make(dram_bytes=1 << 16):
    dram = np.zeros(dram_bytes, np.uint8)
    return Simulator(CFG, dram), dram


# -------------------------------------------------------------------- LOAD
def test_load_inp_with_stride_and_padding():
    sim, dram = make()
    vec = np.arange(6 * 16, dtype=np.int8).reshape(6, 16)  # DRAM vectors 0..5 at element BASE/16
    dram[BASE : BASE + 96] = vec.view(np.uint8).reshape(-1)
    # rows of 2 vectors, 3 vectors apart (stride 3): vectors (0,1) and (3,4); 1 pad row above, 1 pad column each side
    sim.run(finish([load(MemType.INP, 10, BASE // 16, 2, 2, 3, pads=(1, 0, 1, 1))]))
    fp = sim.inp[10 : 10 + 3 * 4]  # 3 rows x 4 columns, dense on chip
    expect = np.zeros((3, 4, 16), np.int8)
    expect[1, 1:3] = vec[[0, 1]]
    expect[2, 1:3] = vec[[3, 4]]
    np.testing.assert_array_equal(fp, expect.reshape(12, 16))
    assert sim.counters.inp_load_nbytes == 2 * 2 * 16  # padding not counted


def test_load_acc_with_padding_little_endian():
    sim, dram = make()
    vals = np.array([[1, -2] + [0] * 14, [0x01020304, -1] + [0] * 14], np.int32)
    dram[BASE : BASE + 128] = vals.astype("<i4").view(np.uint8).reshape(-1)
    sim.acc[:] = 99
    sim.run(finish([load(MemType.ACC, 4, BASE // 64, 1, 2, 2, pads=(0, 1, 0, 0))]))
    np.testing.assert_array_equal(sim.acc[4:6], vals)
    np.testing.assert_array_equal(sim.acc[6:8], 0)  # the pad row: 2 zero vectors
    assert sim.acc[3, 0] == 99 and sim.acc[8, 0] == 99
    assert sim.counters.acc_load_nbytes == 128


def test_load_wgt_tiles_2d():
    sim, dram = make()
    tiles = np.arange(4 * 256, dtype=np.int64).astype(np.int8).reshape(4, 16, 16)
    dram[BASE : BASE + 1024] = tiles.view(np.uint8).reshape(-1)
    sim.run(finish([load(MemType.WGT, 0, BASE // 256, 2, 1, 2)]))  # tiles 0 and 2
    np.testing.assert_array_equal(sim.wgt[0], tiles[0])
    np.testing.assert_array_equal(sim.wgt[1], tiles[2])


# -------------------------------------------------------------------- GEMM
def test_gemm_by_hand():
    sim, _ = make()
    sim.inp[0] = 1
    sim.inp[1] = np.arange(16)
    sim.wgt[0] = 0
    sim.wgt[0, 0, :] = 1  # output lane 0 sums the inputs
    sim.wgt[0, 1, 3] = 2  # output lane 1 = 2 * input lane 3
    uops(sim, [(0, 0, 0), (1, 1, 0)])
    sim.acc[0:2] = 5
    sim.run(finish([gemm(0, 2, 1, 1)]))
    assert sim.acc[0, 0] == 5 + 16 and sim.acc[0, 1] == 5 + 2 and sim.acc[0, 2] == 5
    assert sim.acc[1, 0] == 5 + 120 and sim.acc[1, 1] == 5 + 6
    assert sim.counters.gemm_counter == 2


def test_gemm_reset_and_both_factor_loops():
    sim, _ = make()
    rng = np.random.default_rng(1)
    sim.inp[:8] = rng.integers(-128, 128, (8, 16))
    sim.wgt[:6] = rng.integers(-128, 128, (6, 16, 16))
    sim.acc[:] = 7
    uops(sim, [(0, 0, 0), (0, 1, 1)])  # two uops accumulate into one destination
    # iter_out=3 (dst +1, wgt +2), iter_in=4 (dst +3, src +2)
    prog = [gemm(0, 1, 4, 3, dst=(3, 1), reset=True), gemm(0, 2, 3, 4, dst=(1, 3), src=(0, 2), wgt=(2, 0))]
    sim.run(finish(prog))
    expect = np.zeros((12, 16), np.int64)
    for o in range(3):
        for i in range(4):
            for d, s, w in [(0, 0, 0), (0, 1, 1)]:
                dd, ss, ww = d + o + 3 * i, s + 2 * i, w + 2 * o
                expect[dd] += sim.wgt[ww].astype(np.int64) @ sim.inp[ss].astype(np.int64)
    np.testing.assert_array_equal(sim.acc[:12], expect)
    assert (sim.acc[12:] == 7).all()
    assert sim.counters.gemm_counter == 3 * 4 * 2  # the reset GEMM is not counted


def test_gemm_general_loop_shape_and_wraparound():
    sim, _ = make()
    sim.inp[:4] = -128
    sim.wgt[:4] = -128
    uops(sim, [(0, 0, 0), (1, 1, 1)])  # distinct destinations per uop: the gather path
    sim.acc[0] = 2**31 - 1
    sim.run(finish([gemm(0, 2, 2, 1, dst=(0, 0), src=(2, 0), wgt=(0, 2))]))
    # acc[0] gets two products of 16 * 16384 = 262144 each, wrapping past int32's max
    assert sim.acc[0, 0] == np.int32(np.int64(2**31 - 1 + 2 * 262144) - 2**32)
    assert sim.acc[1, 0] == 2 * 262144


# --------------------------------------------------------------------- ALU
@pytest.mark.parametrize(
    "op,imm,a,expect",
    [
        (AluOp.MIN, 127, [300, -5, 127], [127, -5, 127]),
        (AluOp.MAX, -128, [-300, 5, -128], [-128, 5, -128]),
        (AluOp.ADD, -7, [2**31 - 1, 0, 10], [2**31 - 8, -7, 3]),
        (AluOp.SHR, 2, [13, -13, -1], [3, -4, -1]),  # arithmetic: floor
        (AluOp.SHR, -3, [1, -2, 2**30], [8, -16, 0]),  # negative: left shift, wrapping
    ],
)
def test_alu_immediates(op, imm, a, expect):
    sim, _ = make()
    sim.acc[0, :3] = a
    uops(sim, [(0, 0, 0)])
    sim.run(finish([alu(op, 0, 1, 1, 1, imm=imm)]))
    assert list(sim.acc[0, :3]) == expect
    assert sim.counters.alu_counter == 1


def test_alu_tensor_operands_with_loops():
    sim, _ = make()
    sim.acc[0:6] = np.arange(6)[:, None] * 100  # 2 rows x 3 blocks
    sim.acc[10] = [1] * 16  # per-block constants at 10, 12, 14 (src factor 2)
    sim.acc[12] = [2] * 16
    sim.acc[14] = [-3] * 16
    uops(sim, [(0, 10, 0)])
    sim.run(finish([alu(AluOp.ADD, 0, 1, 2, 3, dst=(3, 1), src=(0, 2))]))
    np.testing.assert_array_equal(sim.acc[0:6, 0], [1, 102, 197, 301, 402, 497])
    sim.acc[20] = [2, -1] + [0] * 14  # per-lane shifts: right 2, left 1
    uops(sim, [(0, 20, 0)])
    sim.run(finish([alu(AluOp.SHR, 0, 1, 1, 1)]))
    assert list(sim.acc[0, :3]) == [0, 2, 1]


@pytest.mark.parametrize("op,expect", [(AluOp.MIN, [-5, 3, 7]), (AluOp.MAX, [4, 9, 7])])
def test_alu_min_max_with_tensor_operands(op, expect):
    sim, _ = make()
    sim.acc[0, :3] = [-5, 9, 7]
    sim.acc[5, :3] = [4, 3, 7]
    uops(sim, [(0, 5, 0)])
    sim.run(finish([alu(op, 0, 1, 1, 1)]))
    assert list(sim.acc[0, :3]) == expect


def test_alu_overlapping_operands_run_in_loop_order():
    sim, _ = make()
    sim.acc[0:4, 0] = [1, 0, 0, 0]
    uops(sim, [(1, 0, 0)])
    # acc[i+1] += acc[i] in order: a running prefix, only right when done one vector at a time
    sim.run(finish([alu(AluOp.ADD, 0, 1, 1, 3, dst=(0, 1), src=(0, 1))]))
    assert list(sim.acc[0:4, 0]) == [1, 1, 1, 1]


# ------------------------------------------------------------------- STORE
def test_store_keeps_the_low_8_bits():
    sim, dram = make()
    sim.acc[0, :4] = [300, -129, 127, -1]
    sim.acc[1] = 5
    uops(sim, [(0, 0, 0)])
    prog = [alu(AluOp.ADD, 0, 1, 1, 2, dst=(0, 1), imm=0), store(0, BASE // 16, 2, 1, 3)]
    sim.run(finish(prog))
    out = dram[BASE : BASE + 64].view(np.int8)
    assert list(out[:4]) == [44, 127, 127, -1]  # 300 -> 0x2c, -129 -> 0x7f: no saturation
    assert (out[16:48] == 0).all() and (out[48:64] == 5).all()  # second row 3 vectors on
    assert sim.counters.out_store_nbytes == 32


# ------------------------------------------------------------------ tokens
def test_tokens_order_the_modules_and_the_run_completes():
    sim, dram = make()
    dram[BASE : BASE + 16] = 3
    t = np.zeros((16, 16), np.int8)
    t[np.arange(16), np.arange(16)] = 1  # identity tile
    dram[BASE + 256 : BASE + 512] = t.view(np.uint8).reshape(-1)
    uops(sim, [(0, 0, 0)])
    prog = [
        gemm(0, 1, 1, 1, reset=True),
        load(MemType.INP, 0, BASE // 16, 1, 1, 1),
        load(MemType.WGT, 0, (BASE + 256) // 256, 1, 1, 1, push_next=True),
        gemm(0, 1, 1, 1, pop_prev=True, push_next=True),  # waits for the loads
        store(0, (BASE + 1024) // 16, 1, 1, 1, pop_prev=True, push_prev=True),  # waits for the GEMM
        load(MemType.INP, 0, 0, 0, 0, 0, push_next=True),
        load(MemType.UOP, 0, 0, 0, 0, 0, pop_prev=True, pop_next=True),
        FinishInsn(),
    ]
    sim.run(prog)
    assert (dram[BASE + 1024 : BASE + 1040] == 3).all()


def test_deadlock_names_the_blocked_instructions():
    sim, _ = make()
    prog = [gemm(0, 0, 1, 1, pop_prev=True), FinishInsn()]
    with pytest.raises(SimulatorError, match=r"deadlock: .*compute: instruction 0  GEMM .* waits on l2g"):
        sim.run(prog)


def test_missing_finish():
    sim, _ = make()
    with pytest.raises(SimulatorError, match=r"ended without FINISH \(last instruction: 0  ALU"):
        sim.run([alu(AluOp.ADD, 0, 1, 1, 1, imm=1)])


def test_instructions_left_at_finish():
    sim, _ = make()
    prog = [FinishInsn(), alu(AluOp.ADD, 0, 1, 1, 1, imm=1)]
    with pytest.raises(SimulatorError, match=r"instruction 1 \(ALU  ADD .*\): runs after FINISH"):
        sim.run(prog)
    sim, _ = make()
    prog = [store(0, BASE // 16, 1, 1, 1, pop_prev=True), FinishInsn()]
    with pytest.raises(SimulatorError, match="instruction 0 .*store module never ran before FINISH"):
        sim.run(prog)


def test_queue_overflow_is_not_portable():
    sim, _ = make()
    prog = [load(MemType.INP, 0, 0, 0, 0, 0, push_next=True) for _ in range(9)] + [FinishInsn()]
    with pytest.raises(SimulatorError, match=r"instruction 8 \(LOAD .*\[push l2g\]\): queue l2g would hold 9 tokens"):
        sim.run(prog)


def test_illegal_flag():
    sim, _ = make()
    prog = [store(0, BASE // 16, 1, 1, 1, pop_next=True), FinishInsn()]
    with pytest.raises(
        SimulatorError, match=r"instruction 0 \(STORE .*pop_next \(illegal here\)\]\): pop_next is illegal"
    ):
        sim.run(prog)


# ------------------------------------------------------------ non-portable
@pytest.mark.parametrize(
    "insn,pattern",
    [
        (alu(AluOp.MUL, 0, 1, 1, 1, imm=2), "ALU MUL exists only in fsim"),
        (alu(AluOp.SHR, 0, 1, 1, 1, imm=16), "shift by 16: portable shifts are -15..15"),
        (load(MemType.WGT, 0, BASE // 256, 1, 1, 1, pads=(0, 0, 1, 0)), "padding on a WGT load"),
        (load(MemType.UOP, 0, BASE // 4, 2, 1, 1), "UOP loads ignore y_size"),
        (load(MemType.ACC_8BIT, 0, BASE // 16, 1, 1, 1), "8-bit ACC loads"),
        (MemInsn(Opcode.STORE, MemType.OUT, 0, BASE // 16, 1, 1, 1, 1, 0, 0, 0), "STORE takes no padding"),
    ],
)
def test_non_portable_instructions(insn, pattern):
    sim, _ = make()
    with pytest.raises(SimulatorError, match=r"instruction 0 \(.*\): " + pattern):
        sim.run([insn, FinishInsn()])


def test_tensor_shift_out_of_range():
    sim, _ = make()
    sim.acc[1, 5] = -20
    uops(sim, [(0, 1, 0)])
    with pytest.raises(SimulatorError, match=r"instruction 0 \(ALU  SHR tensor.*\): shift by -20 from an ACC operand"):
        sim.run(finish([alu(AluOp.SHR, 0, 1, 1, 1)]))


def test_store_after_load_or_reset_is_not_portable():
    sim, _ = make()
    prog = [load(MemType.ACC, 0, BASE // 64, 1, 1, 1, push_next=True), store(0, BASE // 16, 1, 1, 1, pop_prev=True)]
    with pytest.raises(SimulatorError, match="instruction 1 .*ACC vector 0 was last written by a LOAD or a reset GEMM"):
        sim.run(finish(prog))
    sim, _ = make()
    uops(sim, [(0, 0, 0)])
    prog = [gemm(0, 1, 1, 1, reset=True, push_next=True), store(0, BASE // 16, 1, 1, 1, pop_prev=True)]
    with pytest.raises(SimulatorError, match="not portable"):
        sim.run(finish(prog))


# ---------------------------------------------------------------- overruns
@pytest.mark.parametrize(
    "insn,pattern",
    [
        (load(MemType.INP, 2040, BASE // 16, 1, 9, 9), r"INP buffer overrun: elements \[2040, 2049\) of 2048"),
        (load(MemType.INP, 0, 0, 1, 1, 1), r"DRAM bytes \[0x0, 0x10\) are outside \[0x1000"),
        (load(MemType.WGT, 0, (1 << 16) // 256 - 1, 2, 1, 1), "DRAM bytes"),
        (store(2047, BASE // 16, 1, 2, 2), r"OUT buffer overrun"),
        (gemm(0, 1, 2, 1, dst=(2047, 0)), r"ACC index 2048 is past the buffer \(2048 elements\)"),
        (gemm(0, 9000, 1, 1), "uop_end 9000 is past the UOP buffer"),
        (alu(AluOp.ADD, 0, 1, 1, 1, src=(0, 0), dst=(0, 0)), None),
    ],
)
def test_overruns(insn, pattern):
    sim, _ = make()
    if pattern is None:  # control: the same shape in range runs
        sim.run([insn, FinishInsn()])
        return
    sim.uop[:, 0] = (1, 0, 0)
    with pytest.raises(SimulatorError, match=r"instruction 0 \(.*\): .*" + pattern):
        sim.run([insn, FinishInsn()])
