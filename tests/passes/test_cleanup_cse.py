"""cse: golden text, numerics, no-match/``modified``, verify (via ``check_pass``)."""

from __future__ import annotations

from cleanup_check import check_pass


def test_case1_same_op_inputs_attrs() -> None:
    before = """graph g(%x: float32[batch,4]) {
  %t1: float32[4,batch] = Transpose{perm=[1, 0]}(%x) @t1
  %t2: float32[4,batch] = Transpose{perm=[1, 0]}(%x) @t2
  %r1: float32[4,batch] = Relu(%t1) @r1
  %r2: float32[4,batch] = Relu(%t2) @r2
  %y: float32[4,batch] = Add(%r1, %r2) @add
  return %y
}
"""
    after = """graph g(%x: float32[batch,4]) {
  %t1: float32[4,batch] = Transpose{perm=[1, 0]}(%x) @t1
  %r1: float32[4,batch] = Relu(%t1) @r1
  %y: float32[4,batch] = Add(%r1, %r1) @add
  return %y
}
"""
    res = check_pass("cse", before, after)
    assert res.stats == {"nodes_merged": 2, "constants_merged": 0}


def test_case2_commutative_inputs() -> None:
    before = """graph g(%a: float32[3], %b: float32[3]) {
  %s1: float32[3] = Add(%a, %b) @s1
  %s2: float32[3] = Add(%b, %a) @s2
  %d1: float32[3] = Sub(%a, %b) @d1
  %d2: float32[3] = Sub(%b, %a) @d2
  %y: float32[3] = Mul(%s1, %s2) @mul
  %z: float32[3] = Mul(%d1, %d2) @mul2
  return %y, %z
}
"""
    after = """graph g(%a: float32[3], %b: float32[3]) {
  %s1: float32[3] = Add(%a, %b) @s1
  %d1: float32[3] = Sub(%a, %b) @d1
  %d2: float32[3] = Sub(%b, %a) @d2
  %y: float32[3] = Mul(%s1, %s1) @mul
  %z: float32[3] = Mul(%d1, %d2) @mul2
  return %y, %z
}
"""
    check_pass("cse", before, after)


def test_case3_identical_constants_then_nodes() -> None:
    before = """graph g(%x: float32[3]) {
  %c1: float32[] = const [0.5]
  %c2: float32[] = const [0.5]
  %c3: float32[] = const [0.25]
  %m1: float32[3] = Mul(%x, %c1) @m1
  %m2: float32[3] = Mul(%x, %c2) @m2
  %m3: float32[3] = Mul(%x, %c3) @m3
  %s: float32[3] = Add(%m1, %m2) @s
  %y: float32[3] = Add(%s, %m3) @y
  return %y
}
"""
    after = """graph g(%x: float32[3]) {
  %c1: float32[] = const [0.5]
  %c3: float32[] = const [0.25]
  %m1: float32[3] = Mul(%x, %c1) @m1
  %m3: float32[3] = Mul(%x, %c3) @m3
  %s: float32[3] = Add(%m1, %m1) @s
  %y: float32[3] = Add(%s, %m3) @y
  return %y
}
"""
    res = check_pass("cse", before, after)
    assert res.stats == {"nodes_merged": 1, "constants_merged": 1}


def test_duplicate_graph_output_takes_the_name() -> None:
    before = """graph g(%x: float32[3]) {
  %a: float32[3] = Relu(%x) @r1
  %b: float32[3] = Relu(%x) @r2
  %y: float32[3] = Add(%a, %a) @add
  return %y, %b
}
"""
    after = """graph g(%x: float32[3]) {
  %b: float32[3] = Relu(%x) @r1
  %y: float32[3] = Add(%b, %b) @add
  return %y, %b
}
"""
    check_pass("cse", before, after)


def test_no_match() -> None:
    # different attrs, different inputs, both duplicates are graph outputs, data-less tensors differ by digest
    before = """graph g(%x: float32[2,2]) {
  %w1: float32[4,4] = const <sha:00000000000000aa>
  %w2: float32[4,4] = const <sha:00000000000000bb>
  %t1: float32[2,2] = Transpose{perm=[1, 0]}(%x) @t1
  %t2: float32[2,2] = Transpose{perm=[0, 1]}(%x) @t2
  %r1: float32[2,2] = Relu(%t1) @r1
  %r2: float32[2,2] = Relu(%t1) @r2
  %a: float32[4,4] = Add(%w1, %w2) @add
  return %r1, %r2, %t2, %a
}
"""
    res = check_pass("cse", before, None, expect_modified=False)
    assert res.stats == {"nodes_merged": 0, "constants_merged": 0}
