"""fuse-skiplayernorm: residual Add + LayerNorm, bias absorption, shared sums; no-match cases."""

from __future__ import annotations

from fuse_check import check_fusion, matched

BEFORE = """graph g(%x: float32[batch,seq,3], %r: float32[batch,seq,4]) {
  %w: float32[3,4] = const [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, 1.2]
  %b: float32[4] = const [0.5, -0.5, 0.25, 0.0]
  %gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %beta: float32[4] = const [0.0, 0.1, 0.2, 0.3]
  %h: float32[batch,seq,4] = Linear(%x, %w, %b) @dense
  %s: float32[batch,seq,4] = Add(%h, %r) @residual
  %y: float32[batch,seq,4] = LayerNorm{epsilon=1e-12}(%s, %gamma, %beta) @ln
  return %y
}
"""


def test_case1_2_bias_moves_into_skiplayernorm_golden() -> None:
    after = """graph g(%x: float32[batch,seq,3], %r: float32[batch,seq,4]) {
  %w: float32[3,4] = const [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1.0, 1.1, 1.2]
  %b: float32[4] = const [0.5, -0.5, 0.25, 0.0]
  %gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %beta: float32[4] = const [0.0, 0.1, 0.2, 0.3]
  %dense_nobias: float32[batch,seq,4] = Linear(%x, %w) @dense_nobias
  %y: float32[batch,seq,4] = SkipLayerNorm{epsilon=1e-12}(%dense_nobias, %r, %gamma, %beta, %b) @ln_skip
  return %y
}
"""
    res = check_fusion("fuse-skiplayernorm", BEFORE, after)
    assert matched(res) == {"skiplayernorm": 1}
    assert res.graph.node("dense_nobias").provenance.origins == ("dense", "residual", "ln")


def test_case1_plain_residual_and_case3_shared_sum() -> None:
    before = """graph g(%a: float32[batch,seq,4], %r: float32[batch,seq,4], %gamma: float32[4]) {
  %s: float32[batch,seq,4] = Add(%a, %r) @residual
  %y: float32[batch,seq,4] = LayerNorm(%s, %gamma) @ln
  %z: float32[batch,seq,4] = Relu(%s) @relu
  return %y, %z, %s
}
"""
    after = """graph g(%a: float32[batch,seq,4], %r: float32[batch,seq,4], %gamma: float32[4]) {
  %y: float32[batch,seq,4], %s: float32[batch,seq,4] = SkipLayerNorm{epsilon=1e-05}(%a, %r, %gamma) @ln_skip
  %z: float32[batch,seq,4] = Relu(%s) @relu
  return %y, %z, %s
}
"""
    check_fusion("fuse-skiplayernorm", before, after)


def test_no_match_embedding_sum_broadcast_and_other_axis() -> None:
    before = """graph g(%ids: int64[batch,3], %a: float32[batch,3,4], %p: float32[1,3,4], %c: float32[batch,3,4], %gamma: float32[4]) {
  %table: float32[5,4] = const [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]
  %gw: float32[batch,3,4] = Gather(%table, %ids) @word
  %e: float32[batch,3,4] = Add(%gw, %c) @embed_sum
  %y1: float32[batch,3,4] = LayerNorm(%e, %gamma) @ln_embed
  %s: float32[batch,3,4] = Add(%a, %p) @broadcast
  %y2: float32[batch,3,4] = LayerNorm(%s, %gamma) @ln_broadcast
  %t: float32[batch,3,4] = Add(%a, %c) @residual
  %g2: float32[3,4] = const [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  %y3: float32[batch,3,4] = LayerNorm{axis=1}(%t, %g2) @ln_axis1
  return %y1, %y2, %y3
}
"""
    res = check_fusion("fuse-skiplayernorm", before, None, expect_modified=False)
    assert matched(res) == {}
    # the closest candidates are reported with their failed checks; the embedding sum is not a candidate
    assert len(res.near_misses) == 1
    assert "broadcast" in res.near_misses[0] or "last axis" in res.near_misses[0]
    assert "ln_embed" not in res.near_misses[0]
