"""fuse-layernorm: golden text, numerics, no-match and ``modified`` for every case."""

from __future__ import annotations

import pytest
from fuse_check import check_fusion, matched

DECOMPOSED = """graph g(%x: float32[batch,seq,4]) {
  %axes: int64[1] = const [-1]
  %two: float32[] = const [2.0]
  %eps: float32[] = const [9.999999747378752e-06]
  %gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %beta: float32[4] = const [0.0, 0.10000000149011612, 0.20000000298023224, 0.30000001192092896]
  %mean: float32[batch,seq,1] = ReduceMean(%x, %axes) @mean
  %d: float32[batch,seq,4] = Sub(%x, %mean) @sub
  %sq: float32[batch,seq,4] = Pow(%d, %two) @pow
  %var: float32[batch,seq,1] = ReduceMean(%sq, %axes) @var
  %ve: float32[batch,seq,1] = Add(%var, %eps) @add_eps
  %std: float32[batch,seq,1] = Sqrt(%ve) @sqrt
  %n: float32[batch,seq,4] = Div(%d, %std) @div
  %g: float32[batch,seq,4] = Mul(%n, %gamma) @mul_gamma
  %y: float32[batch,seq,4] = Add(%g, %beta) @add_beta
  return %y
}
"""


def test_case2a_3_4_decomposed_with_affine_golden() -> None:
    after = """graph g(%x: float32[batch,seq,4]) {
  %div_layernorm_gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %div_layernorm_beta: float32[4] = const [0.0, 0.10000000149011612, 0.20000000298023224, 0.30000001192092896]
  %y: float32[batch,seq,4] = LayerNorm{axis=-1, epsilon=9.999999747378752e-06}(%x, %div_layernorm_gamma, %div_layernorm_beta) @div_layernorm
  return %y
}
"""
    res = check_fusion("fuse-layernorm", DECOMPOSED, after)
    assert matched(res) == {"layernorm-div": 1, "layernorm-scale": 1, "layernorm-shift": 1}
    assert res.near_misses == []
    node = res.graph.node("div_layernorm")
    # provenance names the pass, the last rule and every original node
    assert node.provenance.pass_name == "fuse-layernorm"
    assert node.provenance.origins == ("mean", "sub", "pow", "var", "add_eps", "sqrt", "div", "mul_gamma", "add_beta")


def test_case2d_rsqrt_pow_mul_variance_scale_only_golden() -> None:
    before = """graph g(%x: float32[batch,4]) {
  %axes: int64[1] = const [1]
  %eps: float32[] = const [0.5]
  %half: float32[] = const [-0.5]
  %gamma: float32[1,4] = const [1.0, 2.0, 3.0, 4.0]
  %mean: float32[batch,1] = ReduceMean(%x, %axes) @mean
  %d: float32[batch,4] = Sub(%x, %mean) @sub
  %sq: float32[batch,4] = Mul(%d, %d) @sq
  %var: float32[batch,1] = ReduceMean(%sq, %axes) @var
  %ve: float32[batch,1] = Add(%eps, %var) @add_eps
  %r: float32[batch,1] = Pow(%ve, %half) @rsqrt
  %n: float32[batch,4] = Mul(%r, %d) @mul
  %y: float32[batch,4] = Mul(%gamma, %n) @mul_gamma
  return %y
}
"""
    after = """graph g(%x: float32[batch,4]) {
  %mul_layernorm_gamma: float32[4] = const [1.0, 2.0, 3.0, 4.0]
  %mul_layernorm_beta: float32[4] = const [0.0, 0.0, 0.0, 0.0]
  %y: float32[batch,4] = LayerNorm{axis=-1, epsilon=0.5}(%x, %mul_layernorm_gamma, %mul_layernorm_beta) @mul_layernorm
  return %y
}
"""
    res = check_fusion("fuse-layernorm", before, after)
    assert matched(res) == {"layernorm-rsqrt-pow": 1, "layernorm-scale": 1}


@pytest.mark.parametrize(
    "norm, rule",
    [
        ("  %r: float32[batch,seq,1] = Reciprocal(%std) @recip\n  %n: float32[batch,seq,4] = Mul(%d, %r) @div\n",
         "layernorm-reciprocal"),
        ("  %r: float32[batch,seq,1] = Div(%one, %std) @recip\n  %n: float32[batch,seq,4] = Mul(%r, %d) @div\n",
         "layernorm-one-over"),
    ],
)
def test_case2b_2c_reciprocal_variants(norm: str, rule: str) -> None:
    before = DECOMPOSED.replace("  %n: float32[batch,seq,4] = Div(%d, %std) @div\n", norm).replace(
        "  %gamma:", "  %one: float32[] = const [1.0]\n  %gamma:"
    )
    res = check_fusion("fuse-layernorm", before, None)
    assert matched(res) == {rule: 1, "layernorm-scale": 1, "layernorm-shift": 1}
    assert res.graph.op_counts() == {"LayerNorm": 1}


def test_case1_layernormalization_golden() -> None:
    before = """graph g(%x: float32[batch,seq,4], %s: float32[4], %b: float32[4]) {
  %y: float32[batch,seq,4] = LayerNormalization{epsilon=9.999999960041972e-13}(%x, %s, %b) @ln
  return %y
}
"""
    after = """graph g(%x: float32[batch,seq,4], %s: float32[4], %b: float32[4]) {
  %y: float32[batch,seq,4] = LayerNorm{axis=-1, epsilon=9.999999960041972e-13}(%x, %s, %b) @ln_layernorm
  return %y
}
"""
    check_fusion("fuse-layernorm", before, after)


def test_case1_used_statistics_are_a_near_miss() -> None:
    before = """graph g(%x: float32[batch,seq,4], %s: float32[4]) {
  %y: float32[batch,seq,4], %m: float32[batch,seq,1] = LayerNormalization(%x, %s) @ln
  return %y, %m
}
"""
    res = check_fusion("fuse-layernorm", before, None, expect_modified=False)
    assert len(res.near_misses) == 1
    assert "layernormalization" in res.near_misses[0] and "mean or inv std dev" in res.near_misses[0]


def test_no_match_means_over_different_axes() -> None:
    before = DECOMPOSED.replace("ReduceMean(%x, %axes) @mean", "ReduceMean(%x, %axes1) @mean").replace(
        "%mean: float32[batch,seq,1]", "%mean: float32[batch,1,4]"
    ).replace("  %two:", "  %axes1: int64[1] = const [1]\n  %two:")
    res = check_fusion("fuse-layernorm", before, None, expect_modified=False)
    assert matched(res) == {}


def test_no_match_keepdims_0() -> None:
    before = """graph g(%x: float32[4,4]) {
  %axes: int64[1] = const [1]
  %eps: float32[] = const [0.5]
  %mean: float32[4] = ReduceMean{keepdims=0}(%x, %axes) @mean
  %d: float32[4,4] = Sub(%x, %mean) @sub
  %sq: float32[4,4] = Mul(%d, %d) @sq
  %var: float32[4] = ReduceMean{keepdims=0}(%sq, %axes) @var
  %ve: float32[4] = Add(%var, %eps) @add_eps
  %std: float32[4] = Sqrt(%ve) @sqrt
  %y: float32[4,4] = Div(%d, %std) @div
  return %y
}
"""
    res = check_fusion("fuse-layernorm", before, None, expect_modified=False)
    assert matched(res) == {}
    assert any("keepdims=0" in m for m in res.near_misses)


def test_no_match_epsilon_outside_sqrt() -> None:
    before = DECOMPOSED.replace(
        "  %ve: float32[batch,seq,1] = Add(%var, %eps) @add_eps\n  %std: float32[batch,seq,1] = Sqrt(%ve) @sqrt\n",
        "  %sd: float32[batch,seq,1] = Sqrt(%var) @sqrt\n  %std: float32[batch,seq,1] = Add(%sd, %eps) @add_eps\n",
    )
    res = check_fusion("fuse-layernorm", before, None, expect_modified=False)
    assert matched(res) == {}


def test_non_constant_gamma_stays_a_mul() -> None:
    before = DECOMPOSED.replace("graph g(%x: float32[batch,seq,4])", "graph g(%x: float32[batch,seq,4], %gv: float32[4])")
    before = before.replace("Mul(%n, %gamma)", "Mul(%n, %gv)").replace(
        "  %gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]\n", ""
    )
    res = check_fusion("fuse-layernorm", before, None)
    assert res.graph.op_counts() == {"LayerNorm": 1, "Mul": 1, "Add": 1}
    assert matched(res) == {"layernorm-div": 1}
