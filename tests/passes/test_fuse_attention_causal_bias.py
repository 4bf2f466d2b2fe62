"""fuse-attention beyond BERT, packed forms: causal (GPT-2), position bias without scale (T5, MPNet), no mask (ViT).

Each form: golden text, numerics against the unfused graph, ``modified`` (and a second run that finds nothing),
and a near miss that says what stopped it.
"""

from __future__ import annotations

import numpy as np
import pytest
from attention_forms import F32_MIN, HIDDEN, gpt2_graph, padded, t5_graph
from attention_graphs import Builder, Weights, attention_block, bert_attention_graph
from fuse_check import check_numerics, run_pass

import accelopt.ir as ir
from accelopt.ir import print_graph
from accelopt.ir.graph import Graph, tensor_digest


def _fused(g: Graph, op: str = "Attention") -> tuple[ir.Node, Graph]:
    res = run_pass("fuse-attention", g)
    res.graph.verify()
    assert res.modified and res.near_misses == []
    (node,) = [n for n in res.graph.nodes if n.op == op]
    assert not run_pass("fuse-attention", res.graph).modified
    return node, res.graph


def _near_miss(g: Graph) -> str:
    res = run_pass("fuse-attention", g)
    assert not res.modified and print_graph(res.graph) == print_graph(g)
    assert len(res.near_misses) == 1
    return res.near_misses[0]


# ------------------------------------------------------------------ GPT-2: fused QKV split, causal mask
def test_gpt2_causal_golden() -> None:
    g, w = gpt2_graph("causal")
    res = run_pass("fuse-attention", g)
    pw, pb = w.packed
    expected = f"""graph gpt2(%x: float32[batch,seq,8]) {{
  %wo: float32[8,8] = const <sha:{tensor_digest(w.wo)}>
  %softmax_qkv_weight: float32[8,24] = const <sha:{tensor_digest(pw)}>
  %softmax_qkv_bias: float32[24] = const <sha:{tensor_digest(pb)}>
  %softmax_attention: float32[batch,seq,8] = Attention{{mask_filter_value={F32_MIN!r}, num_heads=2, scale=0.25, \
unidirectional=1}}(%x, %softmax_qkv_weight, %softmax_qkv_bias) @softmax_attention
  %out_matmul: float32[batch,seq,8] = MatMul(%softmax_attention, %wo) @out_matmul
  return %out_matmul
}}
"""
    assert print_graph(res.graph) == expected
    assert res.notes == ["fused: 1 Attention (causal)"]
    assert {"split", "c_attn", "mask_add", "nan_guard"} <= set(
        res.graph.node("softmax_attention").provenance.origins
    )


@pytest.mark.parametrize("mask", ["causal+padding", "causal", "where"])
def test_gpt2_causal_forms_are_exact(mask: str) -> None:
    g, _ = gpt2_graph(mask, fill=F32_MIN if mask == "where" else -np.inf)
    att, fused = _fused(g)
    assert att.attrs["unidirectional"] == 1 and att.attrs["scale"] == 0.25  # 0.5 * 0.5, not 1/sqrt(4)
    assert (len(att.inputs) > 3) == (mask == "causal+padding")
    feeds = {k: v for k, v in padded().items() if k in {i.name for i in g.inputs}}
    assert check_numerics(g, fused, feeds, atol=1e-5) < 1e-5


def test_gpt2_near_miss_small_fill() -> None:
    g, _ = gpt2_graph("where", fill=-1.0)
    msg = _near_miss(g)
    assert "node causal_where" in msg and "replaces masked scores with -1, expected a scalar fill <= -1e4" in msg


# ------------------------------------------------------------------ T5 / MPNet: relative bias, no scale
def test_t5_mpnet_golden_fused_node() -> None:
    g, _ = t5_graph("separate")
    att, fused = _fused(g)
    text = print_graph(fused)
    assert (
        "%softmax_attention: float32[batch,seq,8] = Attention{mask_filter_value=-3.4028234663852886e+38, "
        "num_heads=2, scale=1.0}(%x, %softmax_qkv_weight, %softmax_qkv_bias, %mask, %position_bias)" in text
    )
    assert "Softmax" not in text and "extended_mask" not in text  # the mask term became the mask input


@pytest.mark.parametrize("mask, form", [("folded", "Attention (bias)"), ("separate", "Attention (key-padding mask, bias)"),
                                        ("none", "Attention (bias)")])
def test_t5_relative_bias_is_exact(mask: str, form: str) -> None:
    g, _ = t5_graph(mask)
    res = run_pass("fuse-attention", g)
    assert res.notes == [f"fused: 1 {form}"]
    (att,) = [n for n in res.graph.nodes if n.op == "Attention"]
    assert att.attrs["scale"] == 1.0  # T5 does not scale: 1.0, not the 1/sqrt(d) default
    want = {"folded": "bias_masked", "separate": "position_bias", "none": "position_bias"}[mask]
    assert att.inputs[4].name == want
    feeds = {k: v for k, v in padded().items() if k in {i.name for i in g.inputs}}
    assert check_numerics(g, res.graph, feeds, atol=1e-5) < 1e-5
    other = {k: v for k, v in padded(2, 9, seed=1).items() if k in feeds}  # another batch and length
    assert check_numerics(g, res.graph, other, atol=1e-5) < 1e-5


def test_t5_near_miss_scores_multiplied_by_a_tensor() -> None:
    g, _ = t5_graph("none")
    gate = g.add_input("gate", ir.TensorType(ir.DType.FLOAT32, (1,)))
    sm = g.node("softmax")
    mul = g.add_node("Mul", [sm.inputs[0], gate], name="gated", before=sm)
    sm.set_input(0, mul.outputs[0])
    msg = _near_miss(g)
    assert "node gated" in msg and "Mul on the scores is not by a scalar constant" in msg


# ------------------------------------------------------------------ no mask (ViT, exports without attention_mask)
def test_no_mask_golden() -> None:
    g, (w,) = bert_attention_graph("distil", with_mask=False)
    att, fused = _fused(g)
    assert [v.name for v in att.inputs] == ["x", "l0_softmax_qkv_weight", "l0_softmax_qkv_bias"]
    assert att.attrs == {"num_heads": 2}
    x = np.random.default_rng(3).standard_normal((2, 4, HIDDEN)).astype(np.float32)
    assert check_numerics(g, fused, {"x": x}, atol=1e-5) < 1e-5


def test_all_zero_mask_from_shapes_is_dropped() -> None:
    """An encoder exported without attention_mask builds an all-ones mask from shapes: its zero term is dropped."""
    g = Graph("nomask")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", "seq", HIDDEN)))
    b = Builder(g)
    shape = b.op("Shape", [x], {"start": 0, "end": 2}, name="bs")
    ones = b.op("ConstantOfShape", [shape], {"value": np.array([1.0], np.float32)}, name="ones")
    m4 = b.op("Unsqueeze", [ones, b.c("axes12", [1, 2], np.int64)], name="ones_4d")
    term = b.op("Mul", [b.op("Sub", [b.c("one", 1.0), m4], name="inv"), b.c("neg", -10000.0)], name="zero_term")
    g.set_outputs([attention_block(b, x, None, Weights.seeded(HIDDEN), 2, mask_value=term)])
    att, fused = _fused(g)
    assert len(att.inputs) == 3 and "mask_filter_value" not in att.attrs
    xs = np.random.default_rng(4).standard_normal((2, 5, HIDDEN)).astype(np.float32)
    assert check_numerics(g, fused, {"x": xs}, atol=1e-5) < 1e-5


def test_no_mask_near_miss_probabilities_escape() -> None:
    g, _ = bert_attention_graph("distil", with_mask=False)
    g.set_outputs([g.outputs[0], g.node("l0_softmax").outputs[0]])
    msg = _near_miss(g)
    assert "stopped at escape in node l0_softmax" in msg and "graph output" in msg
