"""The layer compiler (tiling, emission, requantization) against the integer reference, and the cycle model."""

from __future__ import annotations

import numpy as np
import pytest

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import PRESETS, VTAConfig
from accelopt.targets.fpga.counters import static_counters
from accelopt.targets.fpga.cycles import estimate_cycles
from accelopt.targets.fpga.emit import compile_layer
from accelopt.targets.fpga.isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    GemmInsn,
    MemInsn,
    MemType,
    Opcode,
    decode_program,
    encode_program,
)
from accelopt.targets.fpga.layout import pack_inputs, pack_row_shifts, pack_weights, unpack_outputs
from accelopt.targets.fpga.modules import tokens
from accelopt.targets.fpga.program import DramImage
from accelopt.targets.fpga.requant import DenseLayer, from_scales, reference, row_shifts, shr
from accelopt.targets.fpga.simulator import Simulator

CFG = VTAConfig()


def random_layer(rng, k, n, row_shift, shifts=(3, 12)):
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    b = rng.integers(-20000, 20000, n).astype(np.int32)
    s = rng.integers(*shifts, n).astype(np.int32)
    return DenseLayer("layer", w, b, s, row_shift)


def simulate(layer, x, e=None, config=CFG, rows=None):
    rows = rows or x.shape[0]
    prog = compile_layer(layer, rows, config, 0x1000)
    insns = decode_program(encode_program(prog.insns, config), config)  # what is saved is what runs
    image = DramImage.build([prog])
    image.write(prog.region("input"), pack_inputs(x, config, rows))
    if e is not None:
        image.write(prog.region("row_shift"), pack_row_shifts(e, config, rows))
    counters = Simulator(config, image.data).run(insns)
    return unpack_outputs(image.read(prog.region("output")), layer.n, x.shape[0]), prog, counters


@pytest.mark.parametrize(
    "m,k,n,row_shift,board",
    [
        (128, 384, 384, True, "pynq"),  # MiniLM-sized
        (37, 50, 70, False, "pynq"),  # nothing a multiple of 16
        (5, 16, 16, True, "pynq"),  # one block
        (300, 96, 48, False, "pynq"),  # several M tiles
        (64, 200, 300, True, "zcu104-1x32"),  # a 1x32x32 core
    ],
)
def test_compiled_layer_is_bit_exact(m, k, n, row_shift, board):
    rng = np.random.default_rng(m + k + n)
    cfg = PRESETS[board]
    layer = random_layer(rng, k, n, row_shift)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    e = rng.integers(-2, 5, m).astype(np.int32) if row_shift else None
    out, prog, counters = simulate(layer, x, e, cfg)
    ref = reference(layer, x, e)
    np.testing.assert_array_equal(out, ref)
    kb, nb = -(-k // cfg.block_in), -(-n // cfg.block_out)
    assert counters.gemm_counter == m * kb * nb
    assert counters.out_store_nbytes == m * nb * cfg.out_elem_bytes
    assert counters.alu_counter == m * nb * (prog.info["alu_ops_per_vector"])
    assert static_counters(prog.insns, cfg) == counters  # read off the instructions: the same numbers


def test_saturation_and_negative_shifts_are_exact():
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 64, 32, False, shifts=(-3, 2))  # small and negative shifts saturate most outputs
    x = rng.integers(-128, 128, (20, 64), dtype=np.int8)
    out, _, _ = simulate(layer, x)
    ref = reference(layer, x)
    np.testing.assert_array_equal(out, ref)
    assert (ref == 127).sum() > 50 and (ref == -128).sum() > 50


def test_uniform_shift_uses_an_immediate():
    rng = np.random.default_rng(4)
    layer = DenseLayer(
        "u", rng.integers(-127, 128, (32, 32), dtype=np.int8), np.zeros(32, np.int32), np.full(32, 7, np.int32)
    )
    x = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    out, prog, _ = simulate(layer, x)
    np.testing.assert_array_equal(out, reference(layer, x))
    shr_ops = [i for i in prog.insns if isinstance(i, AluInsn) and i.alu_op.name == "SHR"]
    assert shr_ops and all(i.use_imm and i.imm == 7 for i in shr_ops)


def test_program_structure_tokens_and_regions():
    rng = np.random.default_rng(5)
    layer = random_layer(rng, 768, 3072, True)
    prog = compile_layer(layer, 128, CFG, 0x1000)
    plan = prog.plan
    assert plan.num_tiles > 2 and len(plan.k_cuts) > 1  # BERT-base FFN1 needs tiling in every dimension
    assert plan.fits(CFG)
    ins = prog.insns
    assert isinstance(ins[0], MemInsn) and ins[0].memory_type == MemType.UOP  # all micro-ops first
    assert isinstance(ins[-1], FinishInsn)
    tail = ins[-2]
    assert isinstance(tail, MemInsn) and tail.x_size == 0 and tokens(tail)[0] == ["l2g", "s2g"]
    pushes: dict[str, int] = {}
    pops: dict[str, int] = {}
    for i in ins:
        p, q, illegal = tokens(i)
        assert not illegal
        for x in p:
            pops[x] = pops.get(x, 0) + 1
        for x in q:
            pushes[x] = pushes.get(x, 0) + 1
    assert pushes == pops  # every token pushed is popped
    gemms = [i for i in ins if isinstance(i, GemmInsn) and not i.reset]
    assert len(gemms) == plan.num_chunks
    regions = prog.regions
    assert all(r.address % 256 == 0 and r.address >= 0x1000 for r in regions.values())
    spans = sorted((r.address, r.end) for r in regions.values())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    desc = prog.describe()
    assert desc["regions"]["input"]["role"] == "input" and desc["regions"]["output"]["role"] == "output"
    assert desc["instructions"] == len(ins) and desc["tiling"]["tiles"] == plan.num_tiles


def test_weight_packing_layout():
    w = np.arange(20 * 18, dtype=np.int64).astype(np.int8).reshape(20, 18)
    t = pack_weights(w, CFG)
    assert t.shape == (2, 2, 16, 16)
    assert t[1, 0, 1, 3] == w[3, 17]  # tile [nb][kb], element [out][in]
    assert t[1, 1, 2, 3] == 0 and t[0, 1, 0, 4] == 0  # padding


def test_requantization_from_scales():
    w = np.array([[1, 2], [3, -4]], np.int8)
    ws = np.array([0.5, 0.25], np.float32)
    layer = from_scales("l", w, ws, 0.1, ws * 0.1 * np.array([8.0, 0.5]), bias=np.array([0.5, -0.2]), zero_point=2)
    assert list(layer.shift) == [3, -1]
    # bias in base units: 0.5/0.05 = 10, -0.2/0.025 = -8; minus z*colsum: 2*4, 2*(-2); rounding 2**2 for shift 3
    assert list(layer.bias) == [10 - 8 + 4, -8 + 4]
    with pytest.raises(TargetError, match="is not a power of two"):
        from_scales("l", w, ws, 0.1, ws * 0.1 * 3.0)
    with pytest.raises(TargetError, match="output shift 16 is outside the portable -15..15"):
        from_scales("l", w, ws, 0.1, ws * 0.1 * 2.0**16)
    assert list(row_shifts(np.array([0.1, 0.025, 0.2]), 0.1, "l")) == [0, 2, -1]
    with pytest.raises(TargetError, match="row scale"):
        row_shifts(np.array([0.03]), 0.1, "l")


def test_shr_semantics():
    assert list(shr(np.array([-7, 7, 1, 2**30]), np.array([1, 1, -3, -2]))) == [-4, 3, 8, 0]


# ------------------------------------------------------------- cycle model
def test_cycle_model_by_hand():
    c = CFG
    lat = c.dma_latency_cycles
    prog = [
        MemInsn(Opcode.LOAD, MemType.UOP, 0, 0x1000 // 4, 1, 8, 8),  # 32 bytes: lat + 4
        GemmInsn(False, 0, 8, 3, 10, 1, 3, 0, 8, 8, 0),  # 3 * 10 * 8 = 240
        AluInsn(AluOp.MIN, True, 127, 0, 1, 3, 10, 0, 0, 0, 0),
        FinishInsn(),
    ]
    est = estimate_cycles(prog, c, macs=3 * 10 * 8 * 256)
    assert est.cycles == (lat + 4) + 240 + 2 * 30 + 1
    assert est.gemm_cycles == 240 and est.alu_cycles == 60 and est.bus_cycles == 4
    assert est.utilization == pytest.approx(240 / est.cycles)
    assert est.bound == "compute"


def test_cycle_model_overlaps_modules_along_tokens():
    rng = np.random.default_rng(6)
    layer = random_layer(rng, 768, 768, True)
    prog = compile_layer(layer, 128, CFG, 0x1000)
    est = estimate_cycles(prog.insns, CFG, macs=prog.macs)
    serial = sum(est.busy.values())
    assert est.cycles < 0.8 * serial  # loads and stores hide behind the GEMMs
    assert est.cycles >= est.busy["compute"]
    assert 0.7 < est.utilization < 1
    assert est.gops == pytest.approx(2 * prog.macs / est.seconds / 1e9)


def test_bert_base_layers_estimate_over_70_percent():
    """Estimated GEMM-core utilization over BERT-base's four layer shapes at sequence 128 (default board)."""
    rng = np.random.default_rng(7)
    gemm = total = 0
    for k, n in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
        layer = DenseLayer(
            "l", np.zeros((k, n), np.int8), np.zeros(n, np.int32), rng.integers(4, 9, n).astype(np.int32), True
        )
        est = estimate_cycles(compile_layer(layer, 128, CFG, 0x1000).insns, CFG)
        gemm += est.gemm_cycles
        total += est.cycles
    assert gemm / total >= 0.7
