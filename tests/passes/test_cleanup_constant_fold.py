"""constant-fold: golden text, numerics, no-match/``modified``, verify (via ``check_pass``)."""

from __future__ import annotations

import numpy as np
from cleanup_check import check_pass

from accelopt.ir import parse
from accelopt.ir.graph import tensor_digest
from accelopt.passes.base import PassContext, build_pipeline


def test_case1_constant_node_becomes_initializer() -> None:
    before = """graph g(%x: float32[2]) {
  %c: float32[2] = Constant{value=tensor<float32[2]>[1.0, 2.0]}() @cst
  %y: float32[2] = Add(%x, %c) @add
  return %y
}
"""
    after = """graph g(%x: float32[2]) {
  %c: float32[2] = const [1.0, 2.0]
  %y: float32[2] = Add(%x, %c) @add
  return %y
}
"""
    res = check_pass("constant-fold", before, after)
    assert res.stats["constants"] == 1


def test_case2_constant_chain_folds_and_inputs_are_dropped() -> None:
    before = """graph g(%x: float32[2,2]) {
  %a: float32[2,2] = const [1.0, 4.0, 9.0, 16.0]
  %b: float32[2] = const [0.5, 0.25]
  %s: float32[2,2] = Sqrt(%a) @sqrt
  %m: float32[2,2] = Mul(%s, %b) @mul
  %t: float32[2,2] = Transpose{perm=[1, 0]}(%m) @tr
  %y: float32[2,2] = MatMul(%x, %t) @mm
  return %y
}
"""
    after = """graph g(%x: float32[2,2]) {
  %t: float32[2,2] = const [0.5, 1.5, 0.5, 1.0]
  %y: float32[2,2] = MatMul(%x, %t) @mm
  return %y
}
"""
    res = check_pass("constant-fold", before, after)
    assert res.stats["folded"] == 3


def test_case2_folded_graph_output_keeps_its_name() -> None:
    before = """graph g(%x: float32[2]) {
  %a: float32[2] = const [1.0, 2.0]
  %two: float32[2] = Add(%a, %a) @add
  %y: float32[2] = Mul(%x, %two) @mul
  return %y, %two
}
"""
    after = """graph g(%x: float32[2]) {
  %two: float32[2] = const [2.0, 4.0]
  %y: float32[2] = Mul(%x, %two) @mul
  return %y, %two
}
"""
    check_pass("constant-fold", before, after)


def test_case3_static_parts_of_symbolic_shapes() -> None:
    before = """graph g(%x: float32[batch,seq,8]) {
  %i0: int64[] = const [0]
  %i2: int64[] = const [2]
  %ax: int64[1] = const [0]
  %m1: int64[1] = const [-1]
  %s: int64[3] = Shape(%x) @shape
  %b: int64[] = Gather(%s, %i0) @g0
  %h: int64[] = Gather(%s, %i2) @g2
  %hu: int64[1] = Unsqueeze(%h, %ax) @unsq
  %bu: int64[1] = Unsqueeze(%b, %ax) @unsq_b
  %shp: int64[3] = Concat{axis=0}(%bu, %m1, %hu) @cat
  %r: float32[batch,seq,8] = Reshape(%x, %shp) @reshape
  return %r
}
"""
    after = """graph g(%x: float32[batch,seq,8]) {
  %i0: int64[] = const [0]
  %ax: int64[1] = const [0]
  %m1: int64[1] = const [-1]
  %hu: int64[1] = const [8]
  %s: int64[3] = Shape(%x) @shape
  %b: int64[] = Gather(%s, %i0) @g0
  %bu: int64[1] = Unsqueeze(%b, %ax) @unsq_b
  %shp: int64[3] = Concat{axis=0}(%bu, %m1, %hu) @cat
  %r: float32[batch,seq,8] = Reshape(%x, %shp) @reshape
  return %r
}
"""
    res = check_pass("constant-fold", before, after)
    # Gather(Shape, 2) and its Unsqueeze fold: the first by shape value, the second as a constant node
    assert res.stats["shape_values"] == 1 and res.stats["folded"] == 1


def test_case3_fully_static_shape_folds() -> None:
    before = """graph g(%x: float32[2,3]) {
  %s: int64[2] = Shape(%x) @shape
  %n: int64[] = Size(%x) @size
  %r: float32[2,3] = Reshape(%x, %s) @reshape
  return %r, %n
}
"""
    after = """graph g(%x: float32[2,3]) {
  %s: int64[2] = const [2, 3]
  %n: int64[] = const [6]
  %r: float32[2,3] = Reshape(%x, %s) @reshape
  return %r, %n
}
"""
    res = check_pass("constant-fold", before, after)
    assert res.stats["shape_values"] == 2


def test_case4_size_cap() -> None:
    before = """graph g(%x: float32[16,16]) {
  %one: float32[] = const [1.0]
  %shape: int64[2] = const [16, 16]
  %e: float32[16,16] = Expand(%one, %shape) @expand
  %y: float32[16,16] = Add(%x, %e) @add
  return %y
}
"""
    res = check_pass("constant-fold{max_elements=100}", before, None, expect_modified=False)
    assert res.stats["too_large"] == 1
    digest = tensor_digest(np.ones((16, 16), dtype=np.float32))
    after = f"""graph g(%x: float32[16,16]) {{
  %e: float32[16,16] = const <sha:{digest}>
  %y: float32[16,16] = Add(%x, %e) @add
  return %y
}}
"""
    res = check_pass("constant-fold{max_elements=256}", before, after)
    assert res.stats["folded"] == 1 and res.stats["too_large"] == 0


def test_kernel_refusal_leaves_node() -> None:
    before = """graph g(%x: float32[2]) {
  %a: float32[2] = const [1.0, 2.0]
  %ratio: float32[] = const [0.5]
  %train: bool[] = const [true]
  %d: float32[2] = Dropout(%a, %ratio, %train) @drop
  return %d
}
"""
    graph = parse(before)
    (p,) = build_pipeline("constant-fold")
    res = p.run(graph, PassContext())
    assert not res.modified and str(res.graph) == before
    assert res.stats["kernel_failed"] == 1
    assert res.notes[0].startswith("node drop (Dropout) not folded: ValueError")


def test_no_match_and_unknown_tensor_data() -> None:
    before = """graph g(%x: float32[batch,4]) {
  %w: float32[4,4] = const <sha:0123456789abcdef>
  %t: float32[4,4] = Transpose{perm=[1, 0]}(%w) @tr
  %y: float32[batch,4] = MatMul(%x, %t) @mm
  %s: int64[2] = Shape(%y) @shape
  return %y, %s
}
"""
    # %w's data is not in the text: it must not be folded; Shape(%y) has a symbolic dim
    check_pass(
        "constant-fold",
        before,
        None,
        weights=None,
        expect_modified=False,
    )
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    graph = parse(before, {"w": w})
    (p,) = build_pipeline("constant-fold")
    res = p.run(graph, PassContext())
    assert res.modified
    np.testing.assert_array_equal(res.graph.initializers["t"].const, w.T)
