"""fuse-gelu: every placement of the half, erf and tanh inner forms, QuickGelu; no-match cases."""

from __future__ import annotations

import pytest
from fuse_check import check_fusion, matched
from gelu_graphs import CONSTS, ERF_INNER, PLACEMENTS, TANH_CONSTS, TANH_DISTRIBUTED, TANH_INNER, gelu_graph


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_erf_forms_become_exact_gelu(placement: str) -> None:
    before = gelu_graph(ERF_INNER, placement)
    res = check_fusion("fuse-gelu", before, None, atol=2e-6)
    assert res.graph.op_counts() == {"Gelu": 1}
    (node,) = res.graph.nodes
    assert node.attr("approximate", "none") == "none"
    assert matched(res) == {f"gelu-erf-{placement}": 1}


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_tanh_forms_become_tanh_gelu(placement: str) -> None:
    before = gelu_graph(TANH_INNER, placement, CONSTS + TANH_CONSTS)
    res = check_fusion("fuse-gelu", before, None, atol=2e-6)
    assert res.graph.op_counts() == {"Gelu": 1}
    assert res.graph.nodes[0].attr("approximate") == "tanh"


def test_tanh_distributed_form_golden() -> None:
    consts = """  %one: float32[] = const [1.0]
  %half: float32[] = const [0.5]
  %k: float32[] = const [0.7978845834732056]
  %kc: float32[] = const [0.035677410662174225]
"""
    before = gelu_graph(TANH_DISTRIBUTED, "x-t-half", consts)
    after = """graph g(%x: float32[batch,8]) {
  %y: float32[batch,8] = Gelu{approximate="tanh"}(%x) @mul_half_gelu
  return %y
}
"""
    res = check_fusion("fuse-gelu", before, after, atol=2e-6)
    assert res.graph.nodes[0].provenance.origins == (
        "sq", "cube", "mul_k", "mul_kc", "add", "tanh", "plus1", "mul_x", "mul_half"
    )


def test_case6_sigmoid_form_golden_and_silu_untouched() -> None:
    before = """graph g(%x: float32[batch,8]) {
  %a: float32[] = const [1.7020000219345093]
  %one: float32[] = const [1.0]
  %ax: float32[batch,8] = Mul(%x, %a) @mul_a
  %s: float32[batch,8] = Sigmoid(%ax) @sigmoid
  %y: float32[batch,8] = Mul(%s, %x) @mul_x
  %s1: float32[batch,8] = Mul(%x, %one) @mul_one
  %s2: float32[batch,8] = Sigmoid(%s1) @sigmoid_1
  %z: float32[batch,8] = Mul(%x, %s2) @silu
  return %y, %z
}
"""
    after = """graph g(%x: float32[batch,8]) {
  %one: float32[] = const [1.0]
  %y: float32[batch,8] = QuickGelu{alpha=1.7020000219345093}(%x) @mul_x_quickgelu
  %s1: float32[batch,8] = Mul(%x, %one) @mul_one
  %s2: float32[batch,8] = Sigmoid(%s1) @sigmoid_1
  %z: float32[batch,8] = Mul(%x, %s2) @silu
  return %y, %z
}
"""
    res = check_fusion("fuse-gelu", before, after)
    assert matched(res) == {"gelu-sigmoid": 1}
    assert res.near_misses == []


def test_no_match_wrong_constants_and_other_inputs() -> None:
    # 0.6 instead of 0.5, and Erf of another tensor than x
    before = """graph g(%x: float32[batch,8], %w: float32[batch,8]) {
  %sqrt2: float32[] = const [1.4142135381698608]
  %one: float32[] = const [1.0]
  %half: float32[] = const [0.6000000238418579]
  %s: float32[batch,8] = Div(%x, %sqrt2) @scale
  %e: float32[batch,8] = Erf(%s) @erf
  %t: float32[batch,8] = Add(%e, %one) @plus1
  %xt: float32[batch,8] = Mul(%x, %t) @mul_x
  %y: float32[batch,8] = Mul(%xt, %half) @mul_half
  %s2: float32[batch,8] = Div(%w, %sqrt2) @scale2
  %e2: float32[batch,8] = Erf(%s2) @erf2
  %t2: float32[batch,8] = Add(%e2, %one) @plus2
  %xt2: float32[batch,8] = Mul(%x, %t2) @mul_x2
  %z: float32[batch,8] = Mul(%xt2, %half) @mul_half2
  return %y, %z
}
"""
    res = check_fusion("fuse-gelu", before, None, expect_modified=False)
    assert matched(res) == {}
    assert any("0.5" in m for m in res.near_misses)


def test_existing_gelu_op_is_left_alone() -> None:
    before = """graph g(%x: float32[batch,8]) {
  %y: float32[batch,8] = Gelu(%x) @gelu
  return %y
}
"""
    check_fusion("fuse-gelu", before, None, expect_modified=False)
