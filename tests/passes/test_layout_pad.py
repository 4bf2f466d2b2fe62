"""layout-pad: hidden padding (golden, kept-padded chains), sequence padding on fused BERT-family models."""

from __future__ import annotations

import numpy as np
import pytest
from fuse_check import check_fusion, check_numerics, run_pass

import modelzoo
from accelopt.frontends.onnx import load_onnx
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.targets.base import Capabilities

FFN = """graph g(%x: float32[batch,3]) {
  %w1: float32[3,5] = const [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
  %b1: float32[5] = const [0.1, 0.2, 0.3, 0.4, 0.5]
  %w2: float32[5,2] = const [1.0, -1.0, 0.5, -0.5, 0.25, -0.25, 2.0, -2.0, 1.5, -1.5]
  %h: float32[batch,5] = Linear{activation="gelu"}(%x, %w1, %b1) @ffn1
  %y: float32[batch,2] = Linear(%h, %w2) @ffn2
  return %y
}
"""


def test_cases_1_2_hidden_padding_golden() -> None:
    w1 = np.zeros((4, 8), np.float32)
    w1[:3, :5] = np.arange(1, 16, dtype=np.float32).reshape(3, 5)
    w2 = np.zeros((8, 4), np.float32)
    w2[:5, :2] = np.array([[1, -1], [0.5, -0.5], [0.25, -0.25], [2, -2], [1.5, -1.5]], np.float32)
    after = """graph g(%x: float32[batch,3]) {
  %w1_padded: float32[4,8] = const <sha:W1>
  %b1_padded: float32[8] = const [0.1, 0.2, 0.3, 0.4, 0.5, 0.0, 0.0, 0.0]
  %ffn1_pads: int64[2] = const [0, 1]
  %ffn1_pad_value: float32[] = const [0.0]
  %layout_pad_last_axis: int64[1] = const [-1]
  %layout_pad_zero: int64[1] = const [0]
  %w2_padded: float32[8,4] = const <sha:W2>
  %ffn2_n: int64[1] = const [2]
  %ffn1_pad: float32[batch,4] = Pad(%x, %ffn1_pads, %ffn1_pad_value, %layout_pad_last_axis) @ffn1_pad
  %ffn1_padded: float32[batch,8] = Linear{activation="gelu"}(%ffn1_pad, %w1_padded, %b1_padded) @ffn1_padded
  %ffn2_padded: float32[batch,4] = Linear(%ffn1_padded, %w2_padded) @ffn2_padded
  %y: float32[batch,2] = Slice(%ffn2_padded, %layout_pad_zero, %ffn2_n, %layout_pad_last_axis) @ffn2_slice
  return %y
}
"""
    from accelopt.ir.graph import tensor_digest

    after = after.replace("W1", tensor_digest(w1)).replace("W2", tensor_digest(w2))
    res = check_fusion("layout-pad{multiple=4}", FFN, after, weights={"w1_padded": w1, "w2_padded": w2}, atol=1e-5)
    assert res.stats["hidden"] == {"candidates": 2, "matched": 2, "kept_padded": 1}
    assert res.notes == []  # no attention: no sequence to pad


def test_already_aligned_is_unchanged_and_target_multiple() -> None:
    check_fusion("layout-pad{multiple=1}", FFN, None, expect_modified=False)
    (p,) = build_pipeline("layout-pad")
    from accelopt.ir import parse

    res = p.run(parse(FFN), PassContext(target=Capabilities(name="t", pad_multiple=8)))
    assert {n.outputs[0].shape[-1] for n in res.graph.nodes if n.op == "Linear"} == {8}


def _fused(family: str, exporter: str, opset: int):
    model = load_onnx(modelzoo.export_onnx(family, exporter=exporter, opset=opset))
    graph, _ = PassManager(build_pipeline("cleanup,fuse"), PassContext()).run(model.graph)
    return graph


@pytest.mark.parametrize("family, exporter, opset, multiple", [
    ("bert", "dynamo", 18, 128), ("roberta", "legacy", 14, 16), ("albert", "legacy", 17, 48),
    ("distilbert", "dynamo", 17, 16),
])
def test_case3_sequence_and_hidden_padding_on_fused_models(family: str, exporter: str, opset: int, multiple: int) -> None:
    graph = _fused(family, exporter, opset)
    res = run_pass(f"layout-pad{{multiple={multiple}}}", graph)
    res.graph.verify()
    assert res.modified and res.notes == []
    assert res.stats["sequence"]["matched"] == len(graph.inputs)
    assert [str(v.type) for v in res.graph.outputs] == [str(v.type) for v in graph.outputs]
    for n in res.graph.nodes:
        if n.op == "Linear":
            assert n.inputs[1].shape[0] % multiple == 0 and n.inputs[1].shape[1] % multiple == 0
    inputs = modelzoo.family_inputs(family, 3, 9, seed=4)
    assert check_numerics(graph, res.graph, inputs, atol=1e-5) <= 1e-5


def test_case3_no_sequence_padding_with_unfused_attention() -> None:
    model = load_onnx(modelzoo.export_onnx("bert", exporter="dynamo", opset=18))
    res = run_pass("layout-pad{multiple=16,dims=sequence}", model.graph)
    assert not res.modified
    assert res.notes == ["sequence not padded: the graph has unfused attention (run fuse first); "
                         "padded keys might be attended to"]


@pytest.mark.parametrize("family, padded", [("mobilebert", True), ("gpt2", True), ("t5", False)])
def test_case3_sequence_padding_with_the_new_attention_forms(family: str, padded: bool) -> None:
    """MultiHeadAttention (MobileBERT) and causal Attention (GPT-2) with mask inputs pad; T5, whose mask is
    folded into its position bias, has no key-padding mask input and is left alone with a note."""
    import families

    graph, _ = PassManager(build_pipeline("cleanup,fuse"), PassContext()).run(families.load(family, "legacy").graph)
    res = run_pass("layout-pad{multiple=16,dims=sequence}", graph)
    res.graph.verify()
    assert res.modified == padded
    if not padded:
        assert res.notes == ["sequence not padded: not every attention has a key-padding mask input that masks "
                             "padded positions"]
        return
    assert [str(v.type) for v in res.graph.outputs] == [str(v.type) for v in graph.outputs]
    assert check_numerics(graph, res.graph, families.inputs(family, 3, 9, seed=4), atol=1e-5) <= 1e-5
