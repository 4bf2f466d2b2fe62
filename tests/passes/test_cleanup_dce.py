"""dce: golden text, numerics, no-match/``modified``, verify (via ``check_pass``)."""

from __future__ import annotations

from cleanup_check import check_pass


def test_dead_nodes_and_initializers_removed_inputs_kept() -> None:
    before = """graph g(%x: float32[3], %unused: float32[3]) {
  %c: float32[3] = const [1.0, 2.0, 3.0]
  %d: float32[3] = const [4.0, 5.0, 6.0]
  %a: float32[3] = Add(%x, %c) @live
  %b: float32[3] = Mul(%x, %d) @dead1
  %e: float32[3] = Relu(%b) @dead2
  %p0: float32[1], %p1: float32[1], %p2: float32[1] = Split{axis=0, num_outputs=3}(%x) @split
  %q: float32[1] = Relu(%p0) @dead3
  return %a
}
"""
    after = """graph g(%x: float32[3], %unused: float32[3]) {
  %c: float32[3] = const [1.0, 2.0, 3.0]
  %a: float32[3] = Add(%x, %c) @live
  return %a
}
"""
    res = check_pass("dce", before, after)
    assert res.stats == {"nodes_removed": 4, "initializers_removed": 1}


def test_no_match() -> None:
    before = """graph g(%x: float32[3]) {
  %c: float32[3] = const [1.0, 2.0, 3.0]
  %a: float32[3] = Add(%x, %c) @add
  %b: float32[3] = Relu(%a) @relu
  return %b, %a
}
"""
    res = check_pass("dce", before, None, expect_modified=False)
    assert res.stats == {"nodes_removed": 0, "initializers_removed": 0}
