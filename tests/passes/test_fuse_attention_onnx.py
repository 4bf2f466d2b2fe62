"""The new attention forms and RMSNorm written with --target onnx run in onnxruntime with the interpreter's numbers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest
from attention_forms import convbert_graph, deberta_graph, gpt2_graph, mobilebert_graph, padded, t5_graph
from fuse_check import run_pass

from accelopt.interpreter import run
from accelopt.ir import parse
from accelopt.ir.graph import Graph
from accelopt.targets.onnx_writer import write_onnx


def _ort(graph: Graph, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Counter[str], int]:
    proto = write_onnx(graph)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return dict(zip([o.name for o in sess.get_outputs()], outs)), Counter(n.op_type for n in proto.graph.node), opset


FORMS = {
    "gpt2": (lambda: gpt2_graph()[0], "Attention"),
    "gpt2-causal-only": (lambda: gpt2_graph("causal")[0], "Attention"),
    "t5": (lambda: t5_graph("folded")[0], "Attention"),
    "mpnet": (lambda: t5_graph("separate")[0], "Attention"),
    "deberta": (deberta_graph, "MultiHeadAttention"),
    "mobilebert": (mobilebert_graph, "MultiHeadAttention"),
    "convbert": (convbert_graph, "MultiHeadAttention"),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_fused_form_runs_as_contrib_op(form: str) -> None:
    build, op = FORMS[form]
    g = build()
    fused = run_pass("fuse-attention", g).graph
    names = {i.name for i in g.inputs}
    feeds = {k: v for k, v in padded(extra=("y",)).items() if k in names}
    want = run(fused, feeds)
    got, ops, _ = _ort(fused, feeds)
    assert ops[op] == 1 and "Softmax" not in ops
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=2e-5, rtol=0)
    ref = run(g, feeds)  # and the unfused graph agrees
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, atol=2e-5, rtol=0)


def test_attention_bias_is_broadcast_for_onnxruntime() -> None:
    """onnxruntime takes attention_bias only as [B|1, N|1, S, T]: a [B, 1, 1, T] or 2-D bias is expanded."""
    text = """graph g(%q: float32[batch,seq,8], %k: float32[batch,seq,8], %v: float32[batch,seq,8], \
%b4: float32[batch,1,1,seq], %b2: float32[seq,seq]) {
  %y: float32[batch,seq,8] = MultiHeadAttention{num_heads=2}(%q, %k, %v, _, %b4) @mha_keys
  %z: float32[batch,seq,8] = MultiHeadAttention{num_heads=2, unidirectional=1}(%q, %k, %v, _, %b2) @mha_square
  return %y, %z
}
"""
    g = parse(text)
    rng = np.random.default_rng(3)
    feeds = {n: rng.standard_normal((2, 5, 8)).astype(np.float32) for n in "qkv"}
    feeds["b4"] = rng.standard_normal((2, 1, 1, 5)).astype(np.float32)
    feeds["b2"] = rng.standard_normal((5, 5)).astype(np.float32)
    got, ops, _ = _ort(g, feeds)
    assert ops["Expand"] == 1 and ops["Unsqueeze"] == 1 and ops["MultiHeadAttention"] == 2
    for k, v in run(g, feeds).items():
        np.testing.assert_allclose(got[k], v, atol=2e-5, rtol=0)


def test_rmsnorm_writes_opset_23() -> None:
    g = parse("""graph g(%x: float32[batch,6]) {
  %w: float32[6] = const [1.0, 2.0, 0.5, -1.0, 0.25, 3.0]
  %y: float32[batch,6] = RMSNorm{epsilon=1e-06}(%x, %w) @rms
  return %y
}
""")
    x = (np.random.default_rng(4).standard_normal((3, 6)) * 5).astype(np.float32)
    got, ops, opset = _ort(g, {"x": x})
    assert ops == Counter({"RMSNormalization": 1}) and opset == 23
    np.testing.assert_allclose(got["y"], run(g, {"x": x})["y"], atol=2e-6, rtol=0)
