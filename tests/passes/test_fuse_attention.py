"""fuse-attention: every exporter form on built graphs (golden, numerics, modified), sharing, near misses."""

from __future__ import annotations

import numpy as np
import pytest
from attention_graphs import Builder, Weights, attention_block, bert_attention_graph, padded_inputs
from fuse_check import check_numerics, run_pass

import accelopt.ir as ir
from accelopt.ir import print_graph
from accelopt.ir.graph import Graph, tensor_digest


def _fmt(arr: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(v)) for v in arr.reshape(-1)) + "]"


def test_legacy_form_golden_and_provenance() -> None:
    g, (w,) = bert_attention_graph("legacy")
    res = run_pass("fuse-attention", g)
    res.graph.verify()
    assert res.modified
    pw, pb = w.packed
    expected = f"""graph attention_legacy(%x: float32[batch,seq,8], %mask: int64[batch,seq]) {{
  %wo: float32[8,8] = const <sha:{tensor_digest(w.wo)}>
  %bo: float32[8] = const {_fmt(w.bo)}
  %l0_softmax_qkv_weight: float32[8,24] = const <sha:{tensor_digest(pw)}>
  %l0_softmax_qkv_bias: float32[24] = const <sha:{tensor_digest(pb)}>
  %l0_softmax_attention: float32[batch,seq,8] = Attention{{mask_filter_value=-10000.0, num_heads=2}}(%x, %l0_softmax_qkv_weight, %l0_softmax_qkv_bias, %mask) @l0_softmax_attention
  %l0_out_matmul: float32[batch,seq,8] = MatMul(%l0_softmax_attention, %wo) @l0_out_matmul
  %l0_out_add: float32[batch,seq,8] = Add(%l0_out_matmul, %bo) @l0_out_add
  return %l0_out_add
}}
"""
    assert print_graph(res.graph) == expected
    att = res.graph.node("l0_softmax_attention")
    assert att.provenance.pass_name == "fuse-attention" and att.provenance.rule == "attention"
    assert {"l0_q_matmul", "l0_k_transpose", "l0_mask_add", "l0_softmax", "l0_merge_reshape"} <= set(
        att.provenance.origins
    )
    assert res.stats["attention"] == {"candidates": 1, "matched": 1}
    check_numerics(g, res.graph, padded_inputs(), atol=1e-5)


@pytest.mark.parametrize("form", ["legacy", "where", "distil", "sdpa"])
def test_every_form_fuses_with_padding_semantics(form: str) -> None:
    g, _ = bert_attention_graph(form, hidden=16, heads=4, layers=2)
    res = run_pass("fuse-attention", g)
    res.graph.verify()
    assert res.modified and res.near_misses == []
    assert res.graph.op_counts() == {"Attention": 2, "MatMul": 2, "Add": 2}
    for node in res.graph.nodes:
        if node.op == "Attention":
            assert node.attrs["num_heads"] == 4
            assert node.attr("scale", 0.0) == 0.0  # 1/sqrt(head_dim), wherever the exporter put it
    err = check_numerics(g, res.graph, padded_inputs(hidden=16, batch=3, seq=6), atol=1e-5)
    assert err < 1e-5
    again = run_pass("fuse-attention", res.graph)
    assert not again.modified


def test_explicit_scale_is_kept() -> None:
    g = Graph("scaled")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", "seq", 8)))
    mask = g.add_input("mask", ir.TensorType(ir.DType.INT64, ("batch", "seq")))
    b = Builder(g)
    g.set_outputs([attention_block(b, x, mask, Weights.seeded(8), 2, form="legacy")])
    g.node("l0_scale").set_input(1, b.c("custom_scale", 4.0))  # scores / 4 instead of / sqrt(4)
    res = run_pass("fuse-attention", g)
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert att.attrs["scale"] == pytest.approx(0.25)
    check_numerics(g, res.graph, padded_inputs(), atol=1e-5)


def test_shared_weights_are_packed_once() -> None:
    g, ws = bert_attention_graph("legacy", layers=3, shared=True)
    res = run_pass("fuse-attention", g)
    atts = [n for n in res.graph.nodes if n.op == "Attention"]
    assert len(atts) == 3
    assert len({id(n.inputs[1]) for n in atts}) == 1 and len({id(n.inputs[2]) for n in atts}) == 1
    assert sum(1 for name in res.graph.initializers if "qkv" in name) == 2
    check_numerics(g, res.graph, padded_inputs(), atol=1e-5)


def test_without_mask() -> None:
    g, _ = bert_attention_graph("distil", with_mask=False)
    res = run_pass("fuse-attention", g)
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert len(att.inputs) == 3
    check_numerics(g, res.graph, {"x": padded_inputs()["x"]}, atol=1e-5)


# ------------------------------------------------------------------ near misses
def _single(form: str, **kw: object) -> tuple[Graph, Builder, ir.Value, ir.Value]:
    g = Graph("miss")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", "seq", 8)))
    mask = g.add_input("mask", ir.TensorType(ir.DType.INT64, ("batch", "seq")))
    return g, Builder(g), x, mask


def _near_miss(g: Graph) -> str:
    res = run_pass("fuse-attention", g)
    assert not res.modified
    assert print_graph(res.graph) == print_graph(g)
    assert len(res.near_misses) == 1
    return res.near_misses[0]


def _two_input_inputs() -> dict[str, np.ndarray]:
    feeds = padded_inputs()
    other = np.ones_like(feeds["mask"])
    other[0, 4] = 0
    return {**feeds, "other": other}


def test_mask_from_two_inputs_is_kept_as_a_bias() -> None:
    """A mask computed from two inputs is no key-padding mask of one input: the term becomes attention_bias."""
    g, b, x, mask = _single("legacy")
    other = g.add_input("other", ir.TensorType(ir.DType.INT64, ("batch", "seq")))
    both = b.op("Mul", [mask, other], name="both")
    mf = b.op("Cast", [both], {"to": ir.DType.FLOAT32})
    m4 = b.op("Unsqueeze", [mf, b.c("axes", [1, 2], np.int64)])
    add = b.op("Mul", [b.op("Sub", [b.c("one", 1.0), m4]), b.c("neg", -10000.0)], name="mask_term")
    g.set_outputs([attention_block(b, x, mask, Weights.seeded(8), 2, mask_value=add)])
    res = run_pass("fuse-attention", g)
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert att.inputs[3] is None and att.inputs[4] is res.graph.value("mask_term")
    assert res.notes[0] == "fused: 1 Attention (bias)"
    check_numerics(g, res.graph, _two_input_inputs(), atol=1e-5)


def test_inverted_mask_is_kept_as_a_bias() -> None:
    g, b, x, mask = _single("legacy")
    mf = b.op("Cast", [mask], {"to": ir.DType.FLOAT32})
    m4 = b.op("Unsqueeze", [mf, b.c("axes", [1, 2], np.int64)])
    add = b.op("Mul", [m4, b.c("neg", -10000.0)], name="inverted")  # masks the kept keys
    g.set_outputs([attention_block(b, x, mask, Weights.seeded(8), 2, mask_value=add)])
    res = run_pass("fuse-attention", g)
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert len(att.inputs) == 5 and att.inputs[3] is None and att.inputs[4].name == "inverted"
    check_numerics(g, res.graph, padded_inputs(), atol=1e-5)


def test_near_miss_probabilities_used_elsewhere() -> None:
    g, _ = bert_attention_graph("legacy")
    g.set_outputs([g.outputs[0], g.node("l0_softmax").outputs[0]])
    msg = _near_miss(g)
    assert "l0_softmax" in msg and "graph output" in msg


def test_cross_attention_becomes_multi_head_attention() -> None:
    """K and V read another input than Q: no packed Attention, the projections stay and MultiHeadAttention takes
    their outputs."""
    g, b, x, mask = _single("legacy")
    y = g.add_input("y", ir.TensorType(ir.DType.FLOAT32, ("batch", "seq", 8)))
    g.set_outputs([attention_block(b, x, mask, Weights.seeded(8), 2, y=y)])
    res = run_pass("fuse-attention", g)
    (mha,) = [n for n in res.graph.nodes if n.op == "MultiHeadAttention"]
    assert [v.name for v in mha.inputs] == ["l0_q_add", "l0_k_add", "l0_v_add", "mask"]
    assert res.graph.op_counts() == {"MultiHeadAttention": 1, "MatMul": 4, "Add": 4}
    feeds = {**padded_inputs(), "y": np.random.default_rng(5).standard_normal((3, 5, 8)).astype(np.float32)}
    check_numerics(g, res.graph, feeds, atol=1e-5)


def test_causal_sdpa_is_unidirectional() -> None:
    g, _ = bert_attention_graph("sdpa")
    g.node("l0_sdpa").set_attrs({"is_causal": 1})
    res = run_pass("fuse-attention", g)
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert att.attrs["unidirectional"] == 1 and att.inputs[3].name == "mask"
    feeds = padded_inputs()
    feeds["mask"][2] = [1, 0, 1, 1, 0]  # key 0 kept: a causal row with every key masked is left undefined
    check_numerics(g, res.graph, feeds, atol=1e-5)


def test_no_softmax_no_candidate() -> None:
    g = Graph("plain")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 4)))
    g.set_outputs([g.add_node("Relu", [x]).outputs[0]])
    res = run_pass("fuse-attention", g)
    assert not res.modified and res.near_misses == [] and res.stats["attention"]["candidates"] == 0
