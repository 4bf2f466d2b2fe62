"""layout-cancel-transposes: every case golden + numerics + modified, and the no-match cases."""

from __future__ import annotations

from fuse_check import check_fusion, matched


def test_case1_merge_to_identity_and_composition() -> None:
    before = """graph g(%x: float32[2,3,4]) {
  %a: float32[3,4,2] = Transpose{perm=[1, 2, 0]}(%x) @t1
  %b: float32[2,3,4] = Transpose{perm=[2, 0, 1]}(%a) @t2
  %c: float32[4,3,2] = Transpose{perm=[1, 0, 2]}(%a) @t3
  %y: float32[2,3,4] = Relu(%b) @relu
  return %y, %c
}
"""
    after = """graph g(%x: float32[2,3,4]) {
  %c: float32[4,3,2] = Transpose{perm=[2, 1, 0]}(%x) @t3_merged
  %y: float32[2,3,4] = Relu(%x) @relu
  return %y, %c
}
"""
    res = check_fusion("layout-cancel-transposes", before, after, atol=0.0)
    assert matched(res) == {"merge": 2}


def test_case2_3_move_through_unary_and_binary_ops() -> None:
    before = """graph g(%x: float32[2,3,4], %z: float32[2,3,4]) {
  %c: float32[1,4,1] = const [1.0, 2.0, 3.0, 4.0]
  %a: float32[2,4,3] = Transpose{perm=[0, 2, 1]}(%x) @tx
  %b: float32[2,4,3] = Transpose{perm=[0, 2, 1]}(%z) @tz
  %r: float32[2,4,3] = Relu(%a) @relu
  %s: float32[2,4,3] = Add(%r, %b) @add
  %m: float32[2,4,3] = Mul(%c, %s) @mul
  %y: float32[2,3,4] = Transpose{perm=[0, 2, 1]}(%m) @back
  return %y
}
"""
    after = """graph g(%x: float32[2,3,4], %z: float32[2,3,4]) {
  %mul_const: float32[1,1,4] = const [1.0, 2.0, 3.0, 4.0]
  %relu_moved: float32[2,3,4] = Relu(%x) @relu_moved
  %add_moved: float32[2,3,4] = Add(%relu_moved, %z) @add_moved
  %y: float32[2,3,4] = Mul(%mul_const, %add_moved) @mul_moved
  return %y
}
"""
    res = check_fusion("layout-cancel-transposes", before, after, atol=0.0)
    assert matched(res) == {"unary": 1, "binary": 1, "binary-const": 1, "merge": 1}


def test_no_match_different_perms_and_shared_transpose() -> None:
    before = """graph g(%x: float32[2,3,3], %z: float32[2,3,3]) {
  %a: float32[3,2,3] = Transpose{perm=[1, 0, 2]}(%x) @tx
  %b: float32[3,3,2] = Transpose{perm=[1, 2, 0]}(%z) @tz
  %c: float32[3,3,2] = Transpose{perm=[2, 1, 0]}(%x) @tx2
  %s: float32[3,3,2] = Add(%b, %c) @add
  %r: float32[3,2,3] = Relu(%a) @relu
  return %s, %r, %a
}
"""
    res = check_fusion("layout-cancel-transposes", before, None, expect_modified=False)
    assert res.near_misses == []
