"""``quantize-int8{scales=power2}`` (and ``lower-quantized`` on its output): golden text, numerics, no-match,
``modified``, verify; the power-of-two relations VTA needs; the Attention split is exact; auto from the target."""

from __future__ import annotations

import numpy as np
import pytest
from quant_check import MLP_TEXT, attention_graph, calibration_for, check_four_ways, inputs_for, mlp, outputs

from accelopt.errors import PassError
from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passes.quant_power2 import output_shifts, split_for_power2
from accelopt.passmanager import PassManager
from accelopt.targets.base import Capabilities

SPEC = "quantize-int8{scales=power2,smoothquant=0}"

#: the MLP with power-of-two scales: the GELU split off the Linear, each row's scale 2^-e times the calibrated
#: base (S = 2.4415 / 127), the bias on the grid of S * w_scale, the output requantized per channel
POWER2_TEXT = """graph t(%x: float32[batch,2,4]) {
  %b: float32[3] = const [0.5, 0.0, -0.5]
  %x_zero: float32[] = const [0.0]
  %x_last_axis: int64[1] = const [-1]
  %x_tiny: float32[] = const [1.1754943508222875e-38]
  %x_range: float32[] = const [2.44146728515625]
  %x_inv_ln2: float32[] = const [1.4426950216293335]
  %x_exp_max: float32[] = const [15.0]
  %x_half: float32[] = const [0.5]
  %x_base_scale: float32[] = const [0.019224151968955994]
  %w_int8: int8[4,3] = const [64, -127, 32, 127, 64, -64, -32, 95, 127, 16, -16, 64]
  %w_scale: float32[3] = const [0.007874015718698502, 0.007874015718698502, 0.007874015718698502]
  %b_fc_grid: float32[3] = const [0.49997931718826294, 0.0, -0.49997931718826294]
  %fc_out_scale: float32[3] = const [0.03875104710459709, 0.03875104710459709, 0.03875104710459709]
  %fc_out_zero_point: int8[3] = const [0, 0, 0]
  %x_abs: float32[batch,2,4] = Abs(%x) @x_abs
  %x_absmax: float32[batch,2,1] = ReduceMax{keepdims=1}(%x_abs, %x_last_axis) @x_absmax
  %x_span_floor: float32[batch,2,1] = Max(%x_absmax, %x_tiny) @x_span_floor
  %x_headroom: float32[batch,2,1] = Div(%x_range, %x_span_floor) @x_headroom
  %x_log: float32[batch,2,1] = Log(%x_headroom) @x_log
  %x_log2: float32[batch,2,1] = Mul(%x_log, %x_inv_ln2) @x_log2
  %x_exponent_floor: float32[batch,2,1] = Floor(%x_log2) @x_exponent_floor
  %x_exponent: float32[batch,2,1] = Clip(%x_exponent_floor, %x_zero, %x_exp_max) @x_exponent
  %x_step: float32[batch,2,1] = Pow(%x_half, %x_exponent) @x_step
  %x_scale: float32[batch,2,1] = Mul(%x_base_scale, %x_step) @x_scale
  %x_quantize: int8[batch,2,4] = QuantizeLinear{axis=2, block_size=4, output_dtype=3}(%x, %x_scale) @x_quantize
  %x_dequantize: float32[batch,2,4] = DequantizeLinear{axis=2, block_size=4}(%x_quantize, %x_scale) @x_dequantize
  %w_dequantize: float32[4,3] = DequantizeLinear{axis=1}(%w_int8, %w_scale) @w_dequantize
  %fc_0: float32[batch,2,3] = Linear{activation="none"}(%x_dequantize, %w_dequantize, %b_fc_grid) @fc
  %fc_requantize: int8[batch,2,3] = QuantizeLinear{axis=2}(%fc_0, %fc_out_scale, %fc_out_zero_point) @fc_requantize
  %fc_out_dequantize: float32[batch,2,3] = DequantizeLinear{axis=2}(%fc_requantize, %fc_out_scale, %fc_out_zero_point) @fc_out_dequantize
  %fc: float32[batch,2,3] = Gelu{approximate="none"}(%fc_out_dequantize) @fc_gelu
  %out: float32[batch,2,3] = Relu(%fc) @out
  return %out
}
"""


def ctx_for(graph, **kw) -> PassContext:
    return PassContext(calibration=calibration_for(graph), **kw)


def test_golden_power2() -> None:
    g = parse(MLP_TEXT)
    res = check_four_ways(SPEC, g, POWER2_TEXT, ctx=ctx_for(g), cosine=0.99)
    assert any("output shifts 0..8" in n for n in res.notes)


def test_power2_relations_hold() -> None:
    """Row scales are 2^-e of the base, output scales 2^s times base x weight scale, the bias on that grid."""
    g = parse(POWER2_TEXT)
    feeds = inputs_for(g, n=4)
    env = run(g, feeds, keep_intermediates=True)
    base = float(g.const_value(g.value("x_base_scale")))
    e = np.log2(base / env["x_scale"].astype(np.float64))
    np.testing.assert_array_equal(e, np.rint(e))
    assert e.min() >= 0 and e.max() <= 15
    unit = np.float32(base) * g.const_value(g.value("w_scale"))
    shift = np.log2(g.const_value(g.value("fc_out_scale")) / unit)
    np.testing.assert_array_equal(shift, np.rint(shift))
    grid = g.const_value(g.value("b_fc_grid")) / unit
    np.testing.assert_allclose(grid, np.rint(grid), atol=1e-3)


def test_asymmetric_power2_gives_lopsided_inputs_a_zero_point_per_row() -> None:
    """fc1 reads GELU outputs (about -0.17 .. 2): int8 rows with a zero point each; fc0's normal input stays
    symmetric (no zero point: VTA needs no zero-point columns for it)."""
    g = mlp(layers=2)
    res = check_four_ways(
        "quantize-int8{scales=power2,smoothquant=0,activations=asymmetric}", g, "*", ctx=ctx_for(g), cosine=0.99
    )
    q0, q1 = res.graph.node("x_quantize"), res.graph.node("fc0_quantize")  # fc1 reads fc0's GELU output
    assert len(q1.inputs) == 3 and q1.inputs[2].dtype.name.lower() == "int8"
    assert q1.inputs[2].shape == ("batch", 8, 1)  # one zero point per row, int8 (not uint8)
    assert len(q0.inputs) == 2  # symmetric: no zero point


def test_no_match_and_options() -> None:
    relu_only = parse("graph t(%x: float32[2,4]) {\n  %y: float32[2,4] = Relu(%x) @r\n  return %y\n}\n")
    check_four_ways(SPEC, relu_only, None, ctx=ctx_for(relu_only), expect_modified=False)
    g = parse(MLP_TEXT)
    with pytest.raises(PassError, match="scales=power2 needs calibration data"):
        build_pipeline(SPEC)[0].run(g, PassContext())
    with pytest.raises(PassError, match="option scales='pow2'"):
        build_pipeline("quantize-int8{scales=pow2}")
    # float scales stay the default: the plain pass is unchanged by the option's existence
    (p,) = build_pipeline("quantize-int8")
    assert "power2" not in print_graph(p.run(g.copy(), ctx_for(g)).graph)


def test_auto_follows_the_target() -> None:
    g = mlp(layers=2)
    caps = Capabilities(name="acc", dtypes=("float32", "int8"), quantization={"scales": "power2", "smoothquant": "0.5"})
    (p,) = build_pipeline("quantize-int8")
    res = p.run(g.copy(), ctx_for(g, target=caps))
    assert any("power-of-two scales" in n for n in res.notes)
    assert any("SmoothQuant alpha=0.5" in n and "target's recommendation" in n for n in res.notes)
    assert sum(n.op == "QuantizeLinear" and n.name.endswith("_requantize") for n in res.graph.nodes) == 2


def test_lower_quantized_folds_per_channel_requantization() -> None:
    g = mlp(layers=2)
    cal = calibration_for(g)
    qdq, _ = PassManager(build_pipeline(SPEC), PassContext(calibration=cal)).run(g)
    low, recs = PassManager(build_pipeline("lower-quantized"), PassContext()).run(qdq)
    assert recs[0].modified and recs[0].stats["requantize"]["matched"] == 2
    ql = [n for n in low.nodes if n.op == "QLinear"]
    assert len(ql) == 2 and all(len(n.inputs) == 9 and n.inputs[7].shape == (16,) for n in ql)
    feeds = inputs_for(g, n=4, seq=8)
    for a, b in zip(outputs(qdq, feeds), outputs(low, feeds)):
        # integer GEMM vs dequantized float GEMM: the int8 outputs may differ by one step at rounding ties
        assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()


def test_split_attention_is_exact_and_keeps_names() -> None:
    g = attention_graph()
    split, notes = split_for_power2(g)
    split.verify()
    assert [n.op for n in split.nodes].count("ScaledDotProductAttention") == 1
    assert split.node("att_qkv").op == "Linear" and [v.name for v in split.outputs] == ["att"]
    assert any("Attention node(s) split" in n for n in notes)
    feeds = inputs_for(g, n=3, seq=3)
    feeds["mask"][1, 2] = 0  # a padded key
    a, b = outputs(g, feeds)[0], outputs(split, feeds)[0]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_power2_on_attention_quantizes_its_projection() -> None:
    g = attention_graph()
    res = check_four_ways(SPEC, g, "*", ctx=ctx_for(g), cosine=0.99)
    assert res.stats["layers"]["quantized"] == 1 and res.graph.node("att_qkv").op == "Linear"


def test_output_shifts() -> None:
    # 127 * unit * 2^s must hold max |y|: 100 fits s=0, 200 needs 1, 1e9 is capped at 15, 0 gives 0
    assert list(output_shifts(np.array([100.0, 200.0, 1e9, 0.0]), np.ones(4))) == [0, 1, 15, 0]
