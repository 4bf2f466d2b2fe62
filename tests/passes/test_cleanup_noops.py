"""remove-noops: every case golden + numerics + exact ``modified`` + verify, and the no-match cases."""

from __future__ import annotations

from cleanup_check import check_pass

from accelopt.ir import parse, print_graph
from accelopt.passes.base import PassContext, build_pipeline


def _stats_matched(res) -> dict[str, int]:
    return {k: v["matched"] for k, v in res.stats.items() if v["matched"]}


def test_case1_identity_and_case2_same_type_casts() -> None:
    before = """graph g(%x: float32[batch,4], %i: int64[batch]) {
  %a: float32[batch,4] = Identity(%x) @id
  %b: float32[batch,4] = Cast{to=float32}(%a) @cast
  %c: float32[batch,4] = CastLike(%b, %x) @castlike
  %d: float32[batch,4] = Relu(%c) @relu
  %j: int64[batch] = Cast{to=int64}(%i) @cast_i
  %k: float32[batch] = Cast{to=float32}(%j) @cast_f
  return %d, %k
}
"""
    after = """graph g(%x: float32[batch,4], %i: int64[batch]) {
  %d: float32[batch,4] = Relu(%x) @relu
  %k: float32[batch] = Cast{to=float32}(%i) @cast_f
  return %d, %k
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"identity": 1, "cast-same-type": 2, "castlike-same-type": 1}
    assert res.near_misses == []


def test_case3_same_shape_reshape_expand_flatten() -> None:
    before = """graph g(%x: float32[batch,seq,8], %f: float32[6,1]) {
  %s: int64[3] = Shape(%x) @shape
  %r: float32[batch,seq,8] = Reshape(%x, %s) @reshape
  %e: float32[batch,seq,8] = Expand(%r, %s) @expand
  %y: float32[batch,seq,8] = Relu(%e) @relu
  %fl: float32[6,1] = Flatten{axis=1}(%f) @flatten
  %z: float32[6,1] = Relu(%fl) @relu2
  return %y, %z
}
"""
    after = """graph g(%x: float32[batch,seq,8], %f: float32[6,1]) {
  %s: int64[3] = Shape(%x) @shape
  %y: float32[batch,seq,8] = Relu(%x) @relu
  %z: float32[6,1] = Relu(%f) @relu2
  return %y, %z
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"reshape-same-shape": 1, "expand-same-shape": 1, "flatten-same-shape": 1}


def test_case3_tile_and_squeeze_with_constant_args() -> None:
    before = """graph g(%x: float32[2,3], %y: float32[2,3]) {
  %reps: int64[2] = const [1, 1]
  %noax: int64[0] = const []
  %t: float32[2,3] = Tile(%x, %reps) @tile
  %s: float32[2,3] = Squeeze(%t, %noax) @squeeze
  %o: float32[2,3] = Add(%s, %y) @add
  return %o
}
"""
    # the constants only the removed nodes used go with them
    after = """graph g(%x: float32[2,3], %y: float32[2,3]) {
  %o: float32[2,3] = Add(%x, %y) @add
  return %o
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"tile-same-shape": 1, "squeeze-same-shape": 1}


def test_case4_identity_transpose_and_case5_pairs() -> None:
    before = """graph g(%x: float32[2,3,4]) {
  %t0: float32[2,3,4] = Transpose{perm=[0, 1, 2]}(%x) @t0
  %t1: float32[4,2,3] = Transpose{perm=[2, 0, 1]}(%t0) @t1
  %t2: float32[2,3,4] = Transpose{perm=[1, 2, 0]}(%t1) @t2
  %u1: float32[3,2,4] = Transpose{perm=[1, 0, 2]}(%t2) @u1
  %u2: float32[4,2,3] = Transpose{perm=[2, 1, 0]}(%u1) @u2
  return %u2
}
"""
    # t0 goes (identity); t1,t2 cancel; u1,u2 merge into one Transpose with perm u1[u2] = [2, 0, 1]
    after = """graph g(%x: float32[2,3,4]) {
  %u2: float32[4,2,3] = Transpose{perm=[2, 0, 1]}(%x) @transpose
  return %u2
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"transpose-identity": 1, "transpose-pair": 2}
    node = res.graph.nodes[0]
    assert node.provenance.pass_name == "remove-noops" and node.provenance.rule == "transpose-pair"
    assert node.provenance.origins == ("u1", "u2")


def test_case5_inner_transpose_with_other_users_stays() -> None:
    before = """graph g(%x: float32[2,3]) {
  %t1: float32[3,2] = Transpose{perm=[1, 0]}(%x) @t1
  %t2: float32[2,3] = Transpose{perm=[1, 0]}(%t1) @t2
  %r: float32[3,2] = Relu(%t1) @relu
  %y: float32[2,3] = Add(%t2, %x) @add
  return %y, %r
}
"""
    after = """graph g(%x: float32[2,3]) {
  %t1: float32[3,2] = Transpose{perm=[1, 0]}(%x) @t1
  %r: float32[3,2] = Relu(%t1) @relu
  %y: float32[2,3] = Add(%x, %x) @add
  return %y, %r
}
"""
    check_pass("remove-noops", before, after)


def test_case6_dropout() -> None:
    before = """graph g(%x: float32[batch,4]) {
  %ratio: float32[] = const [0.5]
  %off: bool[] = const [false]
  %d1: float32[batch,4] = Dropout(%x) @drop1
  %d2: float32[batch,4] = Dropout(%d1, %ratio, %off) @drop2
  %d3: float32[batch,4], %mask: bool[batch,4] = Dropout(%d2, %ratio) @drop3
  %y: float32[batch,4] = Relu(%d3) @relu
  return %y
}
"""
    after = """graph g(%x: float32[batch,4]) {
  %y: float32[batch,4] = Relu(%x) @relu
  return %y
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"dropout": 3}


def test_case7_unsqueeze_squeeze_and_reshape_pairs() -> None:
    before = """graph g(%x: float32[batch,4], %z: float32[batch,1,4]) {
  %ax: int64[1] = const [1]
  %shape: int64[2] = const [-1, 4]
  %u: float32[batch,1,4] = Unsqueeze(%x, %ax) @unsq
  %s: float32[batch,4] = Squeeze(%u, %ax) @sq
  %q: float32[batch,4] = Squeeze(%z, %ax) @sq2
  %v: float32[batch,1,4] = Unsqueeze(%q, %ax) @unsq2
  %w: float32[batch,1,4] = Add(%v, %z) @add
  %y: float32[batch,4] = Mul(%s, %x) @mul
  return %y, %w
}
"""
    after = """graph g(%x: float32[batch,4], %z: float32[batch,1,4]) {
  %shape: int64[2] = const [-1, 4]
  %w: float32[batch,1,4] = Add(%z, %z) @add
  %y: float32[batch,4] = Mul(%x, %x) @mul
  return %y, %w
}
"""
    res = check_pass("remove-noops", before, after)
    assert _stats_matched(res) == {"reshape-pair": 2}


def test_case8_single_input_concat() -> None:
    before = """graph g(%x: float32[2,3]) {
  %c: float32[2,3] = Concat{axis=0}(%x) @cat
  %y: float32[2,3] = Relu(%c) @relu
  return %y
}
"""
    after = """graph g(%x: float32[2,3]) {
  %y: float32[2,3] = Relu(%x) @relu
  return %y
}
"""
    check_pass("remove-noops", before, after)


def test_output_name_kept_and_input_not_renamed() -> None:
    before = """graph g(%x: float32[3]) {
  %r: float32[3] = Relu(%x) @relu
  %y: float32[3] = Identity(%r) @id
  %z: float32[3] = Identity(%x) @id2
  return %y, %z
}
"""
    after = """graph g(%x: float32[3]) {
  %y: float32[3] = Relu(%x) @relu
  %z: float32[3] = Identity(%x) @id2
  return %y, %z
}
"""
    check_pass("remove-noops", before, after)


def test_no_match() -> None:
    before = """graph g(%x: float32[batch,4], %i: int64[batch], %x1: float32[batch,1]) {
  %ax: int64[1] = const [1]
  %shape: int64[2] = const [4, -1]
  %c: float32[batch] = Cast{to=float32}(%i) @cast
  %r: float32[4,batch] = Reshape(%x, %shape) @reshape
  %t: float32[batch,4] = Transpose{perm=[1, 0]}(%r) @tr
  %s: int64[2] = Shape(%x) @shape
  %e: float32[batch,4] = Expand(%x1, %s) @expand
  %u: float32[batch,1,4] = Unsqueeze(%t, %ax) @unsq
  %dm: float32[batch,4], %mask: bool[batch,4] = Dropout(%x) @drop_mask
  return %c, %u, %e, %dm, %mask
}
"""
    res = check_pass("remove-noops", before, None, expect_modified=False)
    assert res.near_misses == []
    # a peephole's misses are the normal case: not candidates, so no near misses (driver contract, case 4)
    assert res.stats["dropout"] == {"candidates": 0, "matched": 0}


def test_training_dropout_stays() -> None:
    # training mode with a nonzero ratio is random: not a no-op (the interpreter refuses to run it)
    text = """graph g(%x: float32[4], %train: bool[]) {
  %half: float32[] = const [0.5]
  %on: bool[] = const [true]
  %d: float32[4] = Dropout(%x, %half, %on) @drop
  %e: float32[4] = Dropout(%d, %half, %train) @drop2
  return %e
}
"""
    graph = parse(text)
    (p,) = build_pipeline("remove-noops")
    res = p.run(graph, PassContext())
    res.graph.verify()
    assert not res.modified and print_graph(res.graph) == text


def test_zero_ratio_training_dropout_is_removed() -> None:
    before = """graph g(%x: float32[4]) {
  %zero: float32[] = const [0.0]
  %on: bool[] = const [true]
  %d: float32[4] = Dropout(%x, %zero, %on) @drop
  %y: float32[4] = Relu(%d) @relu
  return %y
}
"""
    after = """graph g(%x: float32[4]) {
  %y: float32[4] = Relu(%x) @relu
  return %y
}
"""
    check_pass("remove-noops", before, after)
