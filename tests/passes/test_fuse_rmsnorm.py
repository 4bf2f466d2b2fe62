"""fuse-rmsnorm: golden text, numerics, no-match, ``modified`` and near misses for every case."""

from __future__ import annotations

import pytest
from fuse_check import check_fusion, matched

#: T5's norm as the TorchScript exporter writes it: rsqrt as 1 / Sqrt, the weight multiplied last
T5_LEGACY = """graph g(%x: float32[batch,seq,4]) {
  %two: float32[] = const [2.0]
  %axes: int64[1] = const [-1]
  %eps: float32[] = const [9.999999974752427e-07]
  %one: float32[] = const [1.0]
  %w: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %sq: float32[batch,seq,4] = Pow(%x, %two) @pow
  %ms: float32[batch,seq,1] = ReduceMean(%sq, %axes) @mean
  %ve: float32[batch,seq,1] = Add(%ms, %eps) @add_eps
  %r: float32[batch,seq,1] = Sqrt(%ve) @sqrt
  %inv: float32[batch,seq,1] = Div(%one, %r) @rsqrt
  %n: float32[batch,seq,4] = Mul(%x, %inv) @mul
  %y: float32[batch,seq,4] = Mul(%w, %n) @mul_weight
  return %y
}
"""


def test_case1c_and_2_t5_golden() -> None:
    after = """graph g(%x: float32[batch,seq,4]) {
  %mul_rmsnorm_gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %y: float32[batch,seq,4] = RMSNorm{axis=-1, epsilon=9.999999974752427e-07}(%x, %mul_rmsnorm_gamma) @mul_rmsnorm
  return %y
}
"""
    res = check_fusion("fuse-rmsnorm", T5_LEGACY, after)
    assert matched(res) == {"rmsnorm-one-over": 1, "rmsnorm-scale": 1}
    assert res.near_misses == []
    node = res.graph.node("mul_rmsnorm")
    assert node.provenance.pass_name == "fuse-rmsnorm"
    assert node.provenance.origins == ("pow", "mean", "add_eps", "sqrt", "rsqrt", "mul", "mul_weight")


SQRT = "%r: float32[batch,1] = Sqrt(%ve) @sqrt\n  "
FORMS = {
    "div": ("%sq: float32[batch,6] = Mul(%x, %x) @sq", SQRT + "%n: float32[batch,6] = Div(%x, %r) @norm"),
    "reciprocal": ("%sq: float32[batch,6] = Pow(%x, %two) @sq",
                   SQRT + "%inv: float32[batch,1] = Reciprocal(%r) @inv\n  %n: float32[batch,6] = Mul(%inv, %x) @norm"),
    "rsqrt-pow": ("%sq: float32[batch,6] = Pow(%x, %two) @sq",
                  "%inv: float32[batch,1] = Pow(%ve, %mhalf) @inv\n  %n: float32[batch,6] = Mul(%x, %inv) @norm"),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_case1_forms_are_exact(form: str) -> None:
    sq, norm = FORMS[form]
    before = f"""graph g(%x: float32[batch,6]) {{
  %two: float32[] = const [2.0]
  %mhalf: float32[] = const [-0.5]
  %axes: int64[1] = const [1]
  %eps: float32[] = const [0.001]
  {sq}
  %ms: float32[batch,1] = ReduceMean(%sq, %axes) @mean
  %ve: float32[batch,1] = Add(%eps, %ms) @add_eps
  {norm}
  return %n
}}
"""
    res = check_fusion("fuse-rmsnorm", before, None, atol=2e-6)
    assert matched(res) == {f"rmsnorm-{form}": 1}
    (node,) = res.graph.nodes
    assert node.op == "RMSNorm" and node.attrs["epsilon"] == pytest.approx(0.001)


def test_layernorm_is_not_an_rmsnorm() -> None:
    """With the mean subtracted it is a LayerNorm: fuse-rmsnorm leaves it (fuse-layernorm takes it)."""
    before = """graph g(%x: float32[batch,4]) {
  %axes: int64[1] = const [-1]
  %eps: float32[] = const [0.001]
  %mean: float32[batch,1] = ReduceMean(%x, %axes) @mean
  %d: float32[batch,4] = Sub(%x, %mean) @sub
  %sq: float32[batch,4] = Mul(%d, %d) @sq
  %ms: float32[batch,1] = ReduceMean(%sq, %axes) @var
  %ve: float32[batch,1] = Add(%ms, %eps) @add_eps
  %r: float32[batch,1] = Sqrt(%ve) @sqrt
  %n: float32[batch,4] = Div(%d, %r) @div
  return %n
}
"""
    res = check_fusion("fuse-rmsnorm", before, before, expect_modified=False)
    assert res.near_misses == []  # not an RMSNorm that almost matched: a LayerNorm


def test_no_match_mean_reshaped() -> None:
    before = """graph g(%x: float32[batch,4]) {
  %axes: int64[1] = const [-1]
  %eps: float32[] = const [0.001]
  %shape: int64[2] = const [-1, 1]
  %sq: float32[batch,4] = Mul(%x, %x) @sq
  %ms0: float32[batch] = ReduceMean{keepdims=0}(%sq, %axes) @mean
  %ms: float32[batch,1] = Reshape(%ms0, %shape) @keep
  %ve: float32[batch,1] = Add(%ms, %eps) @add_eps
  %r: float32[batch,1] = Sqrt(%ve) @sqrt
  %n: float32[batch,4] = Div(%x, %r) @div
  return %n
}
"""
    res = check_fusion("fuse-rmsnorm", before, before, expect_modified=False)
    assert res.near_misses == []  # the Reshape after the mean is no part of the pattern: no candidate comes close


def test_near_miss_mean_over_leading_axis() -> None:
    before = """graph g(%x: float32[3,4]) {
  %axes: int64[1] = const [0]
  %eps: float32[] = const [0.001]
  %sq: float32[3,4] = Mul(%x, %x) @sq
  %ms: float32[1,4] = ReduceMean(%sq, %axes) @mean
  %ve: float32[1,4] = Add(%ms, %eps) @add_eps
  %r: float32[1,4] = Sqrt(%ve) @sqrt
  %n: float32[3,4] = Div(%x, %r) @div
  return %n
}
"""
    res = check_fusion("fuse-rmsnorm", before, before, expect_modified=False)
    assert len(res.near_misses) == 1
    assert "closest: node div, stopped at ReduceMean in node mean: the mean does not reduce trailing axes" in (
        res.near_misses[0]
    )


def test_weight_that_is_not_constant_stays_a_mul() -> None:
    before = T5_LEGACY.replace("graph g(%x: float32[batch,seq,4])", "graph g(%x: float32[batch,seq,4], %w: float32[4])")
    before = before.replace("  %w: float32[4] = const [1.0, 2.0, 0.5, -1.0]\n", "")
    res = check_fusion("fuse-rmsnorm", before, None)
    assert matched(res) == {"rmsnorm-one-over": 1}
    assert res.graph.op_counts() == {"RMSNorm": 1, "Mul": 1}
