"""fuse-attention into MultiHeadAttention: DeBERTa's disentangled bias, MobileBERT's bottleneck, ConvBERT's mixed
attention. Each: golden text, numerics against the unfused graph, ``modified``, and a near miss saying what stopped it.
"""

from __future__ import annotations

from attention_forms import convbert_graph, deberta_graph, mobilebert_graph, padded
from fuse_check import check_numerics, run_pass

from accelopt.ir import print_graph
from accelopt.ir.graph import Graph
from accelopt.passes.base import PassResult


def _run(g: Graph) -> PassResult:
    res = run_pass("fuse-attention", g)
    res.graph.verify()
    return res


def _feeds(g: Graph) -> dict:
    names = {i.name for i in g.inputs}
    return {k: v for k, v in padded(extra=("y",)).items() if k in names}


def _exact_and_stable(g: Graph) -> PassResult:
    """Fuse ``g``: the result computes what ``g`` does (1e-5) and a second run changes nothing."""
    res = _run(g)
    assert check_numerics(g, res.graph, _feeds(g), atol=1e-5) < 1e-5
    assert not _run(res.graph).modified
    return res


def _near_miss(g: Graph) -> str:
    res = _run(g)
    assert not res.modified and print_graph(res.graph) == print_graph(g)
    assert len(res.near_misses) == 1
    return res.near_misses[0]


# ------------------------------------------------------------------ DeBERTa-v2: disentangled bias
def test_deberta_golden_bias_input() -> None:
    g = deberta_graph()
    res = _run(g)
    assert res.modified and res.notes == ["fused: 1 MultiHeadAttention (bias)"]
    text = print_graph(res.graph)
    for line in (
        # the query-and-key mask, written into the scores, becomes an additive bias
        "%softmax_mask_bias: float32[batch,1,seq,seq] = Where(%masked, %softmax_mask_fill, %softmax_zero)",
        # the bias computed from Q and K over [B*N, S, S] is viewed per head, as the scores were
        "%softmax_bias_dims: int64[2] = Shape{start=-2}(%rel_scaled)",
        "%softmax_bias_shape: int64[4] = Concat{axis=0}(%softmax_bias_lead, %softmax_bias_dims)",
        "%softmax_bias_per_head: float32[?,2,seq,seq] = Reshape(%rel_scaled, %softmax_bias_shape)",
        "%softmax_bias_sum: float32[?,2,seq,seq] = Add(%softmax_mask_bias, %softmax_bias_per_head)",
        "%softmax_mha: float32[batch,seq,8] = MultiHeadAttention{num_heads=2, scale=0.2886751397760211}"
        "(%q_add, %k_add, %v_add, _, %softmax_bias_sum)",
    ):
        assert line in text, line
    # the projections stay (the bias reads them); scores, softmax and context are gone
    ops = res.graph.op_counts()
    assert ops["MatMul"] == 5 and "Softmax" not in ops and "Tanh" in ops


def test_deberta_is_exact_and_stable() -> None:
    _exact_and_stable(deberta_graph())


def test_deberta_near_miss_bias_before_reshape_is_smaller_than_the_scores() -> None:
    msg = _near_miss(deberta_graph(early_bias=True))
    assert "stopped at term in node add_early" in msg
    assert "the term of shape [1, 6, 6] is smaller than the scores [4, 6, 6] and added before they are reshaped" in msg


# ------------------------------------------------------------------ MobileBERT: Q and K from another input than V
def test_mobilebert_golden() -> None:
    g = mobilebert_graph()
    res = _run(g)
    text = print_graph(res.graph)
    assert (
        "  %softmax_mha: float32[batch,seq,8] = MultiHeadAttention{mask_filter_value=-10000.0, num_heads=2}"
        "(%q_add, %k_add, %v_add, %mask) @softmax_mha\n"
        "  %out_matmul: float32[batch,seq,8] = MatMul(%softmax_mha, %wo) @out_matmul\n" in text
    )
    assert res.graph.op_counts() == {"MultiHeadAttention": 1, "MatMul": 4, "Add": 3}
    assert res.stats["attention"] == {"candidates": 1, "matched": 1}


def test_mobilebert_is_exact() -> None:
    assert _exact_and_stable(mobilebert_graph()).modified


def test_mobilebert_near_miss_scaled_value() -> None:
    msg = _near_miss(mobilebert_graph(v_scale=0.5))
    assert "stopped at projections" in msg and "V is scaled by 0.5 after its projection" in msg


# ------------------------------------------------------------------ ConvBERT: the self-attention half
def test_convbert_golden_and_note() -> None:
    g = convbert_graph()
    res = _run(g)
    text = print_graph(res.graph)
    assert (
        "  %softmax_split_heads: float32[batch,seq,2,4] = Reshape(%softmax_mha, %softmax_heads_shape) "
        "@softmax_split_heads\n" in text
    )
    assert "%mixed: float32[batch,seq,4,4] = Concat{axis=2}(%softmax_split_heads, %conv_heads_0)" in text
    assert res.notes[1] == (
        "softmax: fused the self-attention half of a mixed attention; the other half joins it at Concat "
        "(node mixed) and is left as it is"
    )
    assert "Tanh" in res.graph.op_counts()  # the other half is untouched


def test_convbert_is_exact() -> None:
    _exact_and_stable(convbert_graph())


def test_convbert_near_miss_context_never_merged() -> None:
    msg = _near_miss(convbert_graph(perm=(0, 2, 3, 1)))
    assert "stopped at merge heads" in msg and "never merged back to [batch, seq, hidden]" in msg
