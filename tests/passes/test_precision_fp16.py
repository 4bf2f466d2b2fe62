"""``fp16`` (``convert-fp16``): golden text, numerics, no-match and ``modified``, verify; the overflow guard."""

from __future__ import annotations

import numpy as np
from quant_check import check_four_ways, inputs_for, mlp, outputs

import accelopt.ir as ir
from accelopt.ir import print_graph
from accelopt.passes.base import PassContext, build_pipeline, format_pipeline
from accelopt.targets.base import Capabilities

BEFORE = """graph t(%x: float32[batch,2,4]) {
  %w: float32[4,4] = const [0.5, -1.0, 0.25, 1.0, 0.5, -0.5, -0.25, 0.75, 1.0, 0.125, -0.125, 0.5, 0.0, 0.25, 0.5, -1.0]
  %g: float32[4] = const [1.0, 1.0, 1.0, 1.0]
  %fc: float32[batch,2,4] = Linear{activation="gelu"}(%x, %w) @fc
  %ln: float32[batch,2,4] = LayerNorm{epsilon=1e-05}(%fc, %g) @ln
  %out: float32[batch,2,4] = Relu(%ln) @out
  return %out
}
"""

AFTER = """graph t(%x: float32[batch,2,4]) {
  %g: float32[4] = const [1.0, 1.0, 1.0, 1.0]
  %w_fp16: float16[4,4] = const [0.5, -1.0, 0.25, 1.0, 0.5, -0.5, -0.25, 0.75, 1.0, 0.125, -0.125, 0.5, 0.0, 0.25, 0.5, -1.0]
  %x_fp16: float16[batch,2,4] = Cast{to=float16}(%x) @x_to_fp16
  %fc: float16[batch,2,4] = Linear{activation="gelu"}(%x_fp16, %w_fp16) @fc
  %fc_fp32: float32[batch,2,4] = Cast{to=float32}(%fc) @fc_to_fp32
  %ln: float32[batch,2,4] = LayerNorm{epsilon=1e-05}(%fc_fp32, %g) @ln
  %ln_fp16: float16[batch,2,4] = Cast{to=float16}(%ln) @ln_to_fp16
  %out_fp16: float16[batch,2,4] = Relu(%ln_fp16) @out
  %out: float32[batch,2,4] = Cast{to=float32}(%out_fp16) @out_output_fp32
  return %out
}
"""


def test_golden_fp16_keeps_layernorm_float32_and_the_interface() -> None:
    res = check_four_ways("fp16", BEFORE, AFTER, cosine=0.9999)
    assert res.stats["low_nodes"] == 2 and res.stats["float32_nodes"] == 1
    assert "kept float32 by op type" in res.notes[1]


def test_fp16_numerics_on_an_mlp() -> None:
    g = mlp(3)
    res = check_four_ways("fp16", g, "*", cosine=0.99999)
    feeds = inputs_for(g, seq=8)
    err = np.abs(outputs(res.graph, feeds)[0] - outputs(g, feeds)[0]).max()
    assert 1e-5 < err < 1e-2  # it did compute in float16, and float16 is close
    assert all(v.dtype == ir.DType.FLOAT16 for n in res.graph.nodes if n.op == "Linear" for v in n.outputs)


def test_no_match_and_target_without_float16() -> None:
    only_ln = """graph t(%x: float32[batch,4]) {
  %g: float32[4] = const [1.0, 1.0, 1.0, 1.0]
  %ln: float32[batch,4] = LayerNorm(%x, %g) @ln
  return %ln
}
"""
    res = check_four_ways("fp16", only_ln, None, expect_modified=False)
    assert "no node to compute" in res.notes[0]
    check_four_ways("fp16{exclude=fc+out}", BEFORE, None, expect_modified=False)
    res = check_four_ways("fp16", BEFORE, None, ctx=PassContext(target=Capabilities(name="f32")), expect_modified=False)
    assert "does not compute in float16" in res.notes[0]


def test_keep_option_round_trips() -> None:
    spec = "fp16{keep=LayerNorm+Softmax,samples=2}"
    assert format_pipeline(build_pipeline(spec)) == spec
    res = check_four_ways("fp16{keep=Relu}", BEFORE, "*", cosine=0.9999)
    text = print_graph(res.graph)
    assert "%ln: float16" in text and "%out: float32[batch,2,4] = Relu" in text


def test_overflow_guard_keeps_large_values_float32_and_says_where() -> None:
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 8, 16)))
    big = g.add_node("Mul", [x, g.add_initializer("k", np.array(1e4, np.float32))], name="scale_up").output
    sq = g.add_node("Mul", [big, big], name="square").output  # ~1e8: beyond float16
    small = g.add_node("Mul", [sq, g.add_initializer("k2", np.array(1e-9, np.float32))], name="scale_down").output
    g.set_outputs([g.add_node("Relu", [small], name="relu").output])
    cal = [inputs_for(g, n=4, seed=3, seq=8)]
    res = check_four_ways("fp16", g, "*", ctx=PassContext(calibration=cal), cosine=0.9999)
    guarded = res.stats["overflow_guard"]
    assert set(guarded) == {"square", "scale_down"}, guarded  # square overflows; scale_down reads it
    assert guarded["square"]["value"] == "square" and guarded["square"]["max_abs"] > 65504
    assert any(n.startswith("fp16 overflow guard: square stays float32") and n.endswith("> 65504)") for n in res.notes)
    (tight,) = build_pipeline("fp16{limit=1000}")  # the note names the limit the pass was given
    tight_notes = tight.run(g.copy(), PassContext(calibration=cal)).notes
    assert any(n.startswith("fp16 overflow guard: scale_up stays float32") and n.endswith("> 1000)") for n in tight_notes)
    types = {n.name: n.outputs[0].dtype for n in res.graph.nodes}
    assert types["scale_up"] == ir.DType.FLOAT16 and types["square"] == ir.DType.FLOAT32
    # without calibration data the guard only sees constants, and the float16 square overflows to inf
    (p,) = build_pipeline("fp16")
    blind = p.run(g.copy(), PassContext())
    assert any("no calibration samples" in n for n in blind.notes)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.all(np.isfinite(outputs(blind.graph, cal[0])[0]))


def test_overflow_guard_sees_constants() -> None:
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 4)))
    masked = g.add_node("Add", [x, g.add_initializer("neg", np.full(4, -1e9, np.float32))], name="mask_add").output
    g.set_outputs([g.add_node("Relu", [masked], name="relu").output])
    res = check_four_ways("fp16{samples=0}", g, "*", cosine=0.9999)
    assert "mask_add" in res.stats["overflow_guard"]
