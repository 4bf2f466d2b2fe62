"""Fused ops written with --target onnx run in onnxruntime with the interpreter's numbers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from attention_graphs import bert_attention_graph, padded_inputs

import accelopt.ir as ir
from accelopt.interpreter import run
from accelopt.ir import parse
from accelopt.ir.graph import Graph
from accelopt.targets.onnx_writer import write_onnx


def _ort(graph: Graph, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    proto = write_onnx(graph)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    return dict(zip([o.name for o in sess.get_outputs()], outs)), [n.op_type for n in proto.graph.node]


def _compare(graph: Graph, feeds: dict[str, np.ndarray], atol: float = 2e-5) -> list[str]:
    want = run(graph, feeds)
    got, ops = _ort(graph, feeds)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=atol, rtol=0)
    return ops


@pytest.mark.parametrize("form", ["legacy", "where"])
def test_attention_as_contrib_op(form: str) -> None:
    from fuse_check import run_pass

    g, _ = bert_attention_graph(form, hidden=16, heads=4, layers=2)
    fused = run_pass("fuse-attention", g).graph
    ops = _compare(fused, padded_inputs(hidden=16, batch=3, seq=6))
    assert ops.count("Attention") == 2
    assert ops.count("Cast") == 1  # the int64 mask is cast to int32 once for both layers


LINEAR = """graph g(%x: float32[batch,seq,4]) {{
  %w: float32[4,3] = const [0.5, -0.25, 1.0, 0.75, -1.0, 0.5, 0.25, -0.5, 1.5, 0.0, -0.75, 0.25]
  %b: float32[3] = const [0.1, -0.2, 0.3]
  %y: float32[batch,seq,3] = Linear{{activation="{act}"}}(%x, %w{bias}) @dense
  return %y
}}
"""


@pytest.mark.parametrize("act, op", [("none", "Add"), ("gelu", "BiasGelu"), ("gelu_tanh", "FastGelu"),
                                     ("gelu_sigmoid", "QuickGelu"), ("relu", "Relu")])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_activations(act: str, op: str, bias: bool) -> None:
    g = parse(LINEAR.format(act=act, bias=", %b" if bias else ""))
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32) * 2
    ops = _compare(g, {"x": x})
    assert ops[0] == "MatMul"
    if bias or act not in ("none", "gelu"):
        expected = {"gelu": "BiasGelu" if bias else "Gelu"}.get(act, op)
        if act in ("none",) and not bias:
            expected = "MatMul"
        assert expected in ops


def test_skiplayernorm_layernorm_quickgelu_and_fallback() -> None:
    text = """graph g(%a: float32[batch,seq,4], %r: float32[batch,seq,4], %f: float32[batch,4], %s: float32[batch,4]) {
  %gamma: float32[4] = const [1.0, 2.0, 0.5, -1.0]
  %beta: float32[4] = const [0.0, 0.1, 0.2, 0.3]
  %bias: float32[4] = const [0.5, -0.5, 0.25, 0.0]
  %y: float32[batch,seq,4], %sum: float32[batch,seq,4] = SkipLayerNorm{epsilon=1e-12}(%a, %r, %gamma, %beta, %bias) @sln
  %q: float32[batch,seq,4] = QuickGelu(%sum) @quick
  %z: float32[batch,4] = SkipLayerNorm(%f, %s, %gamma) @sln2d
  %l: float32[batch,4] = LayerNorm{epsilon=1e-05}(%z, %gamma, %beta) @ln
  return %y, %q, %l
}
"""
    g = parse(text)
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((2, 3, 4)), "r": rng.standard_normal((2, 3, 4)),
             "f": rng.standard_normal((2, 4)), "s": rng.standard_normal((2, 4))}
    ops = _compare(g, {k: v.astype(np.float32) for k, v in feeds.items()})
    assert ops.count("SkipLayerNormalization") == 1  # the 2-D one falls back to Add + LayerNormalization
    assert ops.count("LayerNormalization") == 2 and "QuickGelu" in ops


@pytest.mark.parametrize("explicit_positions", [False, True])
def test_embedlayernorm(explicit_positions: bool) -> None:
    rng = np.random.default_rng(2)
    g = Graph("embed")
    ids = g.add_input("input_ids", ir.TensorType(ir.DType.INT64, ("batch", "seq")))
    tt = g.add_input("token_type_ids", ir.TensorType(ir.DType.INT64, ("batch", "seq")))
    consts = [g.add_initializer(n, a) for n, a in (
        ("word", rng.standard_normal((20, 8)).astype(np.float32)),
        ("pos", rng.standard_normal((16, 8)).astype(np.float32)),
        ("type", rng.standard_normal((2, 8)).astype(np.float32)),
        ("gamma", rng.standard_normal(8).astype(np.float32)),
        ("beta", rng.standard_normal(8).astype(np.float32)),
    )]
    word, pos, typ, gamma, beta = consts
    ins = [ids, tt, word, pos, typ, gamma, beta]
    if explicit_positions:
        two = g.add_initializer("two", np.array(2, np.int64))
        ins.append(g.add_node("Add", [g.add_node("Mul", [ids, g.add_initializer("zero", np.array(0, np.int64))]).output, two]).output)
    y = g.add_node("EmbedLayerNorm", ins, {"epsilon": 1e-12}, outputs=2)
    g.set_outputs(list(y.outputs))
    feeds = {"input_ids": rng.integers(0, 20, (2, 5)), "token_type_ids": rng.integers(0, 2, (2, 5))}
    ops = _compare(g, feeds)
    assert "EmbedLayerNormalization" in ops
