"""``quantize-int8``: golden text, numerics, no-match and ``modified``, verify; modes, options, SmoothQuant, fallback."""

from __future__ import annotations

import numpy as np
import pytest
from quant_check import (
    MLP_QDQ_TEXT,
    MLP_TEXT,
    attention_graph,
    calibration_for,
    check_four_ways,
    inputs_for,
    mlp,
    outputs,
    validator_for,
)

from accelopt.errors import PassError
from accelopt.ir import print_graph
from accelopt.passes.base import PassContext, build_pipeline, format_pipeline
from accelopt.passes.quant_calibration import observe
from accelopt.passes.quant_qdq import QdqPlan, Scheme, apply, select_targets, smoothing_factors
from accelopt.passmanager import PassManager
from accelopt.targets.base import Capabilities
from accelopt.validation import compare

ONNX_LIKE = Capabilities(
    name="onnx-like",
    dtypes=("float32", "int8", "uint8", "int32"),
    quantization={"weights": "per-channel-symmetric", "activations": "asymmetric"},
)

DYNAMIC_TENSOR_ASYM = """graph t(%x: float32[batch,2,4]) {
  %b: float32[3] = const [0.5, 0.0, -0.5]
  %w_int8: int8[4,3] = const [64, -127, 32, 127, 64, -64, -32, 95, 127, 16, -16, 64]
  %w_scale: float32[3] = const [0.007874015718698502, 0.007874015718698502, 0.007874015718698502]
  %x_q: uint8[batch,2,4], %x_scale: float32[], %x_zero_point: uint8[] = DynamicQuantizeLinear(%x) @x_quantize
  %x_dequantize: float32[batch,2,4] = DequantizeLinear(%x_q, %x_scale, %x_zero_point) @x_dequantize
  %w_dequantize: float32[4,3] = DequantizeLinear{axis=1}(%w_int8, %w_scale) @w_dequantize
  %fc: float32[batch,2,3] = Linear{activation="gelu"}(%x_dequantize, %w_dequantize, %b) @fc
  %out: float32[batch,2,3] = Relu(%fc) @out
  return %out
}
"""


# ------------------------------------------------------------ four ways
def test_golden_dynamic_per_row_symmetric_without_target() -> None:
    """No target: symmetric int8 activations, per row; int8 per-channel weights (64 = round(0.5 * 127))."""
    res = check_four_ways("quantize-int8", MLP_TEXT, MLP_QDQ_TEXT, cosine=0.999)
    assert res.stats["layers"] == {"quantized": 1, "float": 0, "total": 1}


def test_golden_dynamic_per_tensor_asymmetric_uses_the_standard_op() -> None:
    check_four_ways(
        "quantize-int8{activations=asymmetric,granularity=tensor}", MLP_TEXT, DYNAMIC_TENSOR_ASYM, cosine=0.995
    )


def test_target_capabilities_choose_asymmetric_uint8() -> None:
    res = check_four_ways("quantize-int8", MLP_TEXT, "*", ctx=PassContext(target=ONNX_LIKE))
    text = print_graph(res.graph)
    assert 'DynamicQuantize{granularity="row", symmetric=0, to=uint8}' in text
    assert "asymmetric uint8" in res.notes[0]


def test_no_match_leaves_the_graph_alone() -> None:
    text = """graph t(%x: float32[batch,2,4], %y: float32[batch,4,3]) {
  %mm: float32[batch,2,3] = MatMul(%x, %y) @mm
  return %mm
}
"""
    res = check_four_ways("quantize-int8", text, None, expect_modified=False, cosine=1.0)
    assert res.notes and "no quantizable layer" in res.notes[0]
    # excluded by name, by op type, or not selected by nodes=
    for spec in ("quantize-int8{exclude=fc}", "quantize-int8{exclude=Linear}", "quantize-int8{nodes=other}"):
        check_four_ways(spec, MLP_TEXT, None, expect_modified=False, cosine=1.0)


def test_target_without_int8_is_left_alone() -> None:
    res = check_four_ways(
        "quantize-int8", MLP_TEXT, None, ctx=PassContext(target=Capabilities(name="f32only")), expect_modified=False
    )
    assert "does not compute in int8" in res.notes[0]


# -------------------------------------------------------------- numerics
@pytest.mark.parametrize(
    "spec, cosine",
    [
        ("quantize-int8", 0.999),
        ("quantize-int8{activations=asymmetric}", 0.999),
        ("quantize-int8{granularity=tensor}", 0.995),
        ("quantize-int8{weights=per-tensor}", 0.995),
        ("quantize-int8{mode=static,calibration=minmax}", 0.99),
        ("quantize-int8{mode=static,calibration=percentile,percentile=99.9}", 0.98),
        ("quantize-int8{mode=static,calibration=entropy,activations=asymmetric}", 0.98),
        ("quantize-int8{smoothquant=0.5}", 0.999),
    ],
)
def test_quantized_mlp_stays_close_to_float(spec: str, cosine: float) -> None:
    """Worst output-row cosine against float on seeded inputs (calibrated on other seeded inputs)."""
    g = mlp(3)
    ctx = PassContext(calibration=calibration_for(g))
    res = check_four_ways(spec, g, "*", ctx=ctx, cosine=cosine)
    assert res.stats["layers"]["quantized"] == 3
    wb = res.stats["linear_weight_bytes"]
    assert wb["float32"] == 3 * 16 * 16 * 4 and wb["int8"] == 3 * 16 * 16
    assert wb["float32"] / wb["int8"] == 4.0


def test_static_mode_quantizes_with_calibrated_constants() -> None:
    g = mlp(2)
    cal = calibration_for(g)
    (p,) = build_pipeline("quantize-int8{mode=static,calibration=minmax,activations=asymmetric}")
    res = p.run(g.copy(), PassContext(calibration=cal))
    q = [n for n in res.graph.nodes if n.op == "QuantizeLinear"]
    assert len(q) == 2
    x = cal[0]["x"]
    scale = res.graph.const_value(q[0].inputs[1])
    zp = res.graph.const_value(q[0].inputs[2])
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert scale == np.float32((hi - lo) / 255) and zp.dtype == np.uint8
    assert int(zp) == int(np.rint(-lo / float(scale)))


def test_static_mode_defaults_to_minmax_ranges() -> None:
    """Without ``calibration=``, static ranges are the calibration data's min/max (not a clipped percentile)."""
    g = mlp(2)
    cal = calibration_for(g)
    ctx = PassContext(calibration=cal)
    (default,) = build_pipeline("quantize-int8{mode=static,activations=asymmetric}")
    (minmax,) = build_pipeline("quantize-int8{mode=static,calibration=minmax,activations=asymmetric}")
    (clipped,) = build_pipeline("quantize-int8{mode=static,calibration=percentile,activations=asymmetric}")
    got = default.run(g.copy(), ctx)
    assert "static ranges: minmax" in " ".join(got.notes)
    assert print_graph(got.graph) == print_graph(minmax.run(g.copy(), ctx).graph)
    assert print_graph(got.graph) != print_graph(clipped.run(g.copy(), ctx).graph)


def test_packed_linear_layers_stay_float_with_a_reason() -> None:
    """Layout before int8: the PackedLinear layers count as float, are named as near misses, and the rest
    (here an Attention) is still quantized; with only packed layers the graph is unchanged."""
    g = mlp(2)
    (pack,) = build_pipeline("layout-pack-weights")
    packed = pack.run(g, PassContext()).graph
    assert [n.op for n in packed.nodes] == ["PackedLinear", "PackedLinear"]
    (p,) = build_pipeline("quantize-int8")
    res = p.run(packed.copy(), PassContext())
    assert not res.modified
    assert res.stats["layers"] == {"quantized": 0, "float": 2, "total": 2}
    assert any("2 PackedLinear layer(s) left float" in n and "int8 before layout" in n for n in res.notes)
    assert sorted(m.split(" ")[0] for m in res.near_misses) == ["fc0_pack", "fc1_pack"]

    att = attention_graph()
    w = att.add_initializer("w_fc", np.eye(8, dtype=np.float32))
    out = att.add_node("Linear", [att.outputs[0], w], name="fc").output
    att.set_outputs([out])
    mixed = pack.run(att, PassContext()).graph
    res = p.run(mixed.copy(), PassContext())
    assert res.modified
    assert res.stats["layers"] == {"quantized": 1, "float": 1, "total": 2}
    assert "quantized 1 of 2 layer(s): Attention 1" in res.notes


def test_static_mode_needs_calibration_data() -> None:
    (p,) = build_pipeline("quantize-int8{mode=static}")
    with pytest.raises(PassError, match="calibration data"):
        p.run(mlp(2), PassContext())


def test_options_are_checked_and_round_trip() -> None:
    with pytest.raises(PassError, match="expected one of"):
        build_pipeline("int8{mode=fancy}")
    with pytest.raises(PassError, match="granularity=row needs mode=dynamic"):
        build_pipeline("int8{mode=static,granularity=row}")
    spec = "int8{mode=static,calibration=entropy,exclude=fc0+fc1,smoothquant=0.5}"
    assert format_pipeline(build_pipeline(spec)) == spec


# ------------------------------------------------------------ SmoothQuant
def test_smoothing_keeps_the_float_function_and_migrates_outliers() -> None:
    g = mlp(3, planted=1)
    targets, _ = select_targets(g, ("Linear",))
    cal = calibration_for(g)
    plan = QdqPlan(Scheme(), targets)
    obs = observe(g, [t.x for t in targets], cal)
    for t in targets:
        w = g.const_value(g.value(t.w))
        plan.smooth[t.x] = smoothing_factors(obs[t.x].channel_absmax, [w], 0.5)
    smoothed, _ = apply(g, plan, targets, quantize=False)
    feeds = inputs_for(g, seq=8)
    for a, b in zip(outputs(g, feeds), outputs(smoothed, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    s = plan.smooth[targets[1].x]
    assert s[3] > 10 * np.median(s)  # the outlier channel is divided down the most


def test_smoothquant_reduces_error_on_an_outlier_channel() -> None:
    g = mlp(3, planted=1)
    cal = calibration_for(g)
    feeds = inputs_for(g, seq=8)
    ref = outputs(g, feeds)[0]
    errs = {}
    for alpha in ("0", "0.5"):
        (p,) = build_pipeline(f"quantize-int8{{granularity=tensor,smoothquant={alpha}}}")
        res = p.run(g.copy(), PassContext(calibration=cal))
        errs[alpha] = compare(ref, outputs(res.graph, feeds)[0])["rel_l2"]
    assert errs["0.5"] < errs["0"] / 5, errs


# --------------------------------------------------------------- fallback
def test_fallback_keeps_the_planted_most_sensitive_layer_float() -> None:
    g = mlp(4, planted=2)
    validator = validator_for(g, cosine=0.995)
    ctx = PassContext(validator=validator, calibration=calibration_for(g))
    (p,) = build_pipeline("quantize-int8{granularity=tensor}")
    res = p.run(g.copy(), ctx)
    assert res.modified
    floats = [f["node"] for f in res.stats["float_layers"]]
    assert floats == ["fc2"], res.notes
    assert res.stats["layers"] == {"quantized": 3, "float": 1, "total": 4}
    assert any(n.startswith("kept float: fc2 (Linear 16x16") for n in res.notes)
    assert validator.check(res.graph, family="quantization", previous=g).ok
    node = res.graph.node("fc2")
    assert node.inputs[1] is not None and node.inputs[1].is_const  # float weight, no DequantizeLinear
    # without the fallback the same pass fails the tolerance
    (off,) = build_pipeline("quantize-int8{granularity=tensor,fallback=off}")
    full = off.run(g.copy(), ctx).graph
    assert not validator.check(full, family="quantization", previous=g).ok


def test_fallback_with_nothing_to_fix_and_without_a_validator() -> None:
    g = mlp(2)
    ctx = PassContext(validator=validator_for(g), calibration=calibration_for(g))
    (p,) = build_pipeline("quantize-int8")
    res = p.run(g.copy(), ctx)
    assert res.stats["float_layers"] == [] and any("meets the tolerance" in n for n in res.notes)
    (on,) = build_pipeline("quantize-int8{fallback=on}")
    res = on.run(g.copy(), PassContext())
    assert any("needs a validator" in n for n in res.notes)


def test_int8_group_in_the_pass_manager_reports_weight_bytes() -> None:
    g = mlp(3)
    ctx = PassContext(validator=validator_for(g), calibration=calibration_for(g))
    out, records = PassManager(build_pipeline("int8"), ctx).run(g)
    assert [r.name for r in records] == ["quantize-int8", "lower-quantized"]
    assert all(r.modified and not r.rolled_back for r in records)
    q = records[0]
    assert q.param_bytes_before["float32"] - q.param_bytes_after["float32"] == 3 * 16 * 16 * 4 - 3 * 16 * 4
    assert q.param_bytes_after["int8"] == 3 * 16 * 16
    assert out.op_counts()["QLinear"] == 3


def test_attention_qkv_weight_is_quantized_per_channel() -> None:
    g = attention_graph()
    res = check_four_ways("quantize-int8", g, "*", cosine=0.995)
    dq = res.graph.node("att").inputs[1].producer
    assert dq.op == "DequantizeLinear" and res.graph.const_value(dq.inputs[1]).shape == (24,)
    assert res.graph.node("att").inputs[3].name == "mask"
