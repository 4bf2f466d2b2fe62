"""``lower-quantized``: golden text, numerics (QDQ vs integer ops), no-match and ``modified``, verify; requantize."""

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
)

from accelopt.ir import parse, print_graph
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.targets.base import Capabilities

LOWERED = """graph t(%x: float32[batch,2,4]) {
  %b: float32[3] = const [0.5, 0.0, -0.5]
  %w_int8: int8[4,3] = const [64, -127, 32, 127, 64, -64, -32, 95, 127, 16, -16, 64]
  %w_scale: float32[3] = const [0.007874015718698502, 0.007874015718698502, 0.007874015718698502]
  %x_q: int8[batch,2,4], %x_scale: float32[batch,2,1], %x_zero_point: int8[batch,2,1] = DynamicQuantize{granularity="row", symmetric=1, to=int8}(%x) @x_quantize
  %fc: float32[batch,2,3] = QLinear{activation="gelu"}(%x_q, %x_scale, %x_zero_point, %w_int8, %w_scale, _, %b) @fc
  %out: float32[batch,2,3] = Relu(%fc) @out
  return %out
}
"""


def test_golden_linear_to_qlinear() -> None:
    """The integer form computes the same function as the QDQ form (float rounding apart)."""
    res = check_four_ways("lower-quantized", MLP_QDQ_TEXT, LOWERED, cosine=0.999999)
    assert res.stats["lower-linear"]["matched"] == 1


def test_qdq_and_integer_forms_agree_numerically() -> None:
    for spec in ("quantize-int8", "quantize-int8{activations=asymmetric}", "quantize-int8{granularity=tensor}"):
        (q,) = build_pipeline(spec)
        g = mlp(3)
        qdq = q.run(g.copy(), PassContext()).graph
        res = check_four_ways("lower-quantized", qdq, "*", cosine=0.999999)
        assert res.graph.op_counts()["QLinear"] == 3 and "DequantizeLinear" not in res.graph.op_counts()
        feeds = inputs_for(g, seq=8)
        np.testing.assert_allclose(outputs(res.graph, feeds)[0], outputs(qdq, feeds)[0], rtol=1e-5, atol=1e-5)


def test_no_match_and_when_options() -> None:
    check_four_ways("lower-quantized", MLP_TEXT, None, expect_modified=False, cosine=1.0)
    res = check_four_ways("lower-quantized{when=never}", MLP_QDQ_TEXT, None, expect_modified=False, cosine=1.0)
    assert "when=never" in res.notes[0]
    tpu_like = PassContext(target=Capabilities(name="qdq-reader", native_ops=frozenset({"DequantizeLinear", "Linear"})))
    res = check_four_ways("lower-quantized", MLP_QDQ_TEXT, None, ctx=tpu_like, expect_modified=False)
    assert "runs the QDQ form" in res.notes[0]
    check_four_ways("lower-quantized{when=always}", MLP_QDQ_TEXT, LOWERED, ctx=tpu_like, cosine=0.999999)


def test_near_miss_explains_a_dequantized_weight_it_cannot_lower() -> None:
    g = parse(MLP_QDQ_TEXT.replace("DequantizeLinear{axis=2, block_size=4}", "DequantizeLinear{axis=1, block_size=1}"))
    (p,) = build_pipeline("lower-quantized")
    res = p.run(g.copy(), PassContext())
    assert not res.modified and "neither per tensor nor per row" in res.near_misses[0]


def test_static_chains_requantize_inside_qlinear() -> None:
    """FFN1 -> Q -> DQ -> FFN2 (static): the first QLinear produces the second's integers itself."""
    g = mlp(2)
    cal = calibration_for(g)
    (q,) = build_pipeline("quantize-int8{mode=static,calibration=minmax,activations=asymmetric}")
    qdq = q.run(g.copy(), PassContext(calibration=cal)).graph
    res = check_four_ways("lower-quantized", qdq, "*", cosine=0.99999)
    assert res.stats["requantize"]["matched"] == 1
    first = res.graph.node("fc0")
    assert first.op == "QLinear" and len(first.inputs) == 9 and first.outputs[0].dtype.name == "UINT8"
    second = res.graph.node("fc1")
    assert second.inputs[0] is first.outputs[0]
    assert "QuantizeLinear" in res.graph.op_counts()  # the graph input is still quantized by a node


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_attention_lowers_to_qattention(granularity: str) -> None:
    g = attention_graph()
    (q,) = build_pipeline(f"quantize-int8{{granularity={granularity}}}")
    qdq = q.run(g, PassContext()).graph
    res = check_four_ways("lower-quantized", qdq, "*", cosine=0.999999)
    node = res.graph.node("att")
    assert node.op == "QAttention" and node.inputs[7].name == "mask"
    assert print_graph(res.graph).count("DequantizeLinear") == 0
