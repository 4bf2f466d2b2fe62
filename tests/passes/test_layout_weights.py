"""layout-transpose-weights and layout-pack-weights: golden, exact numerics, sharing, target defaults, ORT."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from fuse_check import check_fusion, run_pass, seeded_inputs

from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.ops.fused import pack_weight, unpack_weight
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.targets.base import Capabilities
from accelopt.targets.onnx_writer import write_onnx

BEFORE = """graph g(%x: float32[batch,3], %y: float32[batch,3]) {
  %w: float32[3,2] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %b: float32[2] = const [0.5, -0.5]
  %h: float32[batch,2] = Linear{activation="relu"}(%x, %w, %b) @dense
  %k: float32[batch,2] = MatMul(%y, %w) @mm
  %o: float32[batch,2] = Add(%h, %k) @sum
  return %o
}
"""


def test_transpose_golden_shared_weight_converted_once() -> None:
    after = """graph g(%x: float32[batch,3], %y: float32[batch,3]) {
  %b: float32[2] = const [0.5, -0.5]
  %w_packed: float32[2,3] = const [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]
  %h: float32[batch,2] = PackedLinear{activation="relu", k=3, n=2, transposed=1}(%x, %w_packed, %b) @dense_transpose
  %k: float32[batch,2] = PackedLinear{k=3, n=2, transposed=1}(%y, %w_packed) @mm_transpose
  %o: float32[batch,2] = Add(%h, %k) @sum
  return %o
}
"""
    res = check_fusion("layout-transpose-weights", BEFORE, after, atol=0.0)
    assert res.stats["transpose"]["matched"] == 2
    # and back: KN restores Linear nodes with the original weight
    back = run_pass("layout-transpose-weights{layout=KN}", res.graph)
    assert back.graph.op_counts() == {"Linear": 2, "Add": 1}
    assert not run_pass("layout-transpose-weights{layout=KN}", back.graph).modified


@pytest.mark.parametrize("tile", [(16, 16), (1, 16), (2, 1)])
@pytest.mark.parametrize("transposed", [False, True])
def test_pack_round_trip_and_exact_outputs(tile: tuple[int, int], transposed: bool) -> None:
    w = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    p = pack_weight(w, transposed=transposed, tile=tile)
    assert np.array_equal(unpack_weight(p, k=5, n=7, transposed=transposed, tile=tile), w)
    g = parse(BEFORE)
    spec = f"layout-pack-weights{{tile_k={tile[0]},tile_n={tile[1]}}}"
    first = run_pass("layout-transpose-weights", g).graph if transposed else g
    res = run_pass(spec, first)
    res.graph.verify()
    assert res.graph.op_counts() == {"PackedLinear": 2, "Add": 1}
    node = res.graph.node("dense_transpose_pack" if transposed else "dense_pack")
    assert tuple(node.attrs["tile"]) == tile and bool(node.attr("transposed", 0)) == transposed
    feeds = seeded_inputs(g, {"batch": 4})
    want = run(g, feeds)["o"]
    np.testing.assert_allclose(run(res.graph, feeds)["o"], want, atol=1e-6, rtol=0)
    sess = ort.InferenceSession(write_onnx(res.graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, feeds)[0], want, atol=1e-5, rtol=0)


def test_target_preferences_choose_layout_and_tiles() -> None:
    g = parse(BEFORE)
    kn = Capabilities(name="kn", preferred_layouts={"matmul_weight": "KN"}, tile_sizes={"gemm": (1, 16)})
    (tw,) = build_pipeline("layout-transpose-weights")
    assert not tw.run(g.copy(), PassContext(target=kn)).modified  # already KN
    (pw,) = build_pipeline("layout-pack-weights")
    res = pw.run(g.copy(), PassContext(target=kn))
    assert {tuple(n.attrs["tile"]) for n in res.graph.nodes if n.op == "PackedLinear"} == {(1, 16)}
    res = pw.run(g.copy(), PassContext())
    assert {tuple(n.attrs["tile"]) for n in res.graph.nodes if n.op == "PackedLinear"} == {(16, 16)}


def test_no_match_non_constant_weight() -> None:
    before = """graph g(%x: float32[batch,3], %w: float32[3,2]) {
  %h: float32[batch,2] = MatMul(%x, %w) @mm
  return %h
}
"""
    check_fusion("layout-transpose-weights", before, None, expect_modified=False)
    check_fusion("layout-pack-weights", before, None, expect_modified=False)
    assert print_graph(parse(before)) == before


@pytest.mark.parametrize("spec", ["layout-transpose-weights", "layout-pack-weights"])
def test_quantized_layers_are_named_and_left_alone(spec: str) -> None:
    """After int8, QLinear keeps its int8 [K, N] weight; the float MatMul beside it is still rewritten."""
    quantized = build_pipeline("quantize-int8{ops=Linear},lower-quantized")
    g = parse(BEFORE)
    for p in quantized:
        g = p.run(g, PassContext()).graph
    assert [n.op for n in g.nodes if n.op.startswith("Q")] == ["QLinear"]
    qname = next(n.name for n in g.nodes if n.op == "QLinear")
    (p,) = build_pipeline(spec)
    before = print_graph(g)
    res = p.run(g, PassContext())
    assert res.modified  # the MatMul by the shared float weight
    assert [n.op for n in res.graph.nodes if n.op in ("QLinear", "PackedLinear")] == ["QLinear", "PackedLinear"]
    assert res.near_misses == [f"{qname}: int8 weight left as it is: the layout passes rewrite float weights only"]
    assert res.notes == ["1 quantized layer(s) not rewritten: int8 weight left as it is: the layout passes rewrite "
                         "float weights only"]
    qline = next(line for line in before.splitlines() if "QLinear" in line)
    assert qline in print_graph(res.graph)
