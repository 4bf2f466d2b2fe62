"""fuse-linear: bias into MatMul, Gemm -> Linear, activation epilogues; no-match cases."""

from __future__ import annotations

import pytest
from fuse_check import check_fusion, matched

BEFORE = """graph g(%x: float32[batch,seq,3], %a: float32[batch,2]) {
  %w: float32[3,4] = const [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, 1.2]
  %b: float32[4] = const [0.5, -0.5, 0.25, 0.0]
  %gw: float32[4,2] = const [1.0, 2.0, 3.0, 4.0, -1.0, -2.0, 0.5, 0.25]
  %gc: float32[1,4] = const [0.1, 0.2, 0.3, 0.4]
  %mm: float32[batch,seq,4] = MatMul(%x, %w) @mm
  %h: float32[batch,seq,4] = Add(%b, %mm) @add
  %y: float32[batch,seq,4] = Gelu(%h) @gelu
  %z: float32[batch,4] = Gemm{alpha=2.0, beta=0.5, transB=1}(%a, %gw, %gc) @gemm
  return %y, %z
}
"""


def test_cases_1_2_3_golden() -> None:
    after = """graph g(%x: float32[batch,seq,3], %a: float32[batch,2]) {
  %w: float32[3,4] = const [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, 1.2]
  %b: float32[4] = const [0.5, -0.5, 0.25, 0.0]
  %gemm_weight: float32[2,4] = const [2.0, 6.0, -2.0, 1.0, 4.0, 8.0, -4.0, 0.5]
  %gemm_bias: float32[4] = const [0.05000000074505806, 0.10000000149011612, 0.15000000596046448, 0.20000000298023224]
  %y: float32[batch,seq,4] = Linear{activation="gelu"}(%x, %w, %b) @mm_linear
  %z: float32[batch,4] = Linear(%a, %gemm_weight, %gemm_bias) @gemm_linear
  return %y, %z
}
"""
    res = check_fusion("fuse-linear", BEFORE, after)
    assert matched(res) == {"linear-bias": 1, "gemm": 1, "linear-activation": 1}
    assert res.graph.node("mm_linear").provenance.origins == ("mm", "add", "gelu")


@pytest.mark.parametrize(
    "act, attrs, expect",
    [
        ("Gelu", '{approximate="tanh"}', "gelu_tanh"),
        ("QuickGelu", "", "gelu_sigmoid"),
        ("Relu", "", "relu"),
    ],
)
def test_case3_epilogues(act: str, attrs: str, expect: str) -> None:
    before = BEFORE.replace("= Gelu(%h) @gelu", f"= {act}{attrs}(%h) @gelu")
    res = check_fusion("fuse-linear", before, None)
    (lin,) = [n for n in res.graph.nodes if n.name == "mm_linear"]
    assert lin.attr("activation") == expect


def test_case3_matmul_without_bias_takes_the_activation() -> None:
    before = """graph g(%x: float32[batch,3]) {
  %w: float32[3,2] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %m: float32[batch,2] = MatMul(%x, %w) @mm
  %y: float32[batch,2] = Relu(%m) @relu
  return %y
}
"""
    after = """graph g(%x: float32[batch,3]) {
  %w: float32[3,2] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %y: float32[batch,2] = Linear{activation="relu"}(%x, %w) @mm_linear
  return %y
}
"""
    check_fusion("fuse-linear", before, after)


def test_no_match_activation_matmul_full_bias_and_shared_matmul() -> None:
    before = """graph g(%x: float32[batch,3], %k: float32[3,4], %m: float32[batch,4]) {
  %w: float32[3,4] = const [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, 1.2]
  %full: float32[2,4] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
  %s: float32[batch,4] = MatMul(%x, %k) @scores
  %t: float32[batch,4] = Add(%s, %m) @mask
  %u: float32[batch,4] = MatMul(%x, %w) @mm
  %v: float32[batch,4] = Add(%u, %full) @full_bias
  %o: float32[batch,4] = MatMul(%x, %w) @mm2
  %p: float32[batch,4] = Add(%o, %o) @twice
  return %t, %v, %p
}
"""
    res = check_fusion("fuse-linear", before, None, expect_modified=False, bindings={"batch": 2})
    assert matched(res) == {}
    # the full-matrix bias is the closest candidate and says why it failed
    assert len(res.near_misses) == 1 and "does not broadcast over the last axis" in res.near_misses[0]


def test_gemm_trans_a_is_a_near_miss() -> None:
    before = """graph g(%a: float32[2,3]) {
  %w: float32[2,4] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
  %z: float32[3,4] = Gemm{transA=1}(%a, %w) @gemm
  return %z
}
"""
    res = check_fusion("fuse-linear", before, None, expect_modified=False)
    assert res.near_misses and "transA=1" in res.near_misses[0]


def test_case4_activation_through_a_reshape() -> None:
    before = """graph g(%x: float32[6,3]) {
  %w: float32[3,2] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %b: float32[2] = const [0.5, -0.5]
  %shape: int64[3] = const [2, 3, 2]
  %h: float32[6,2] = Linear(%x, %w, %b) @dense
  %r: float32[2,3,2] = Reshape(%h, %shape) @view
  %y: float32[2,3,2] = Gelu(%r) @gelu
  return %y
}
"""
    after = """graph g(%x: float32[6,3]) {
  %w: float32[3,2] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %b: float32[2] = const [0.5, -0.5]
  %shape: int64[3] = const [2, 3, 2]
  %h: float32[6,2] = Linear{activation="gelu"}(%x, %w, %b) @dense
  %y: float32[2,3,2] = Reshape(%h, %shape) @view_moved
  return %y
}
"""
    res = check_fusion("fuse-linear", before, after)
    assert matched(res) == {"linear-activation-reshaped": 1}
