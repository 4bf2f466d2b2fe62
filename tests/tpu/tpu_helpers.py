"""Helpers for the TPU target tests: tiny hand-built graphs and a direct (un-exported) lowering call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from accelopt.ir import DType, Graph, TensorType
from accelopt.targets.tpu.chips import get_chip
from accelopt.targets.tpu.lowering import build_function, jax_dtype, plan_weights
from accelopt.targets.tpu.policy import choose_policy
from modelzoo import one_op_graph


def single_op_graph(
    op: str,
    inputs: Sequence[tuple[str, np.ndarray | None]],
    attrs: Mapping[str, Any] | None = None,
    n_out: int = 1,
) -> tuple[Graph, dict[str, np.ndarray]]:
    """A graph with one ``op`` node (``modelzoo.one_op_graph``); each input is ("in", array) -> graph input
    ``in{i}``, ("const", array) -> initializer ``c{i}``, ("none", None) -> omitted. Returns the graph and the feed
    for its inputs."""
    arrays = [None if kind == "none" else arr for kind, arr in inputs]
    consts = {i for i, (kind, _) in enumerate(inputs) if kind == "const"}
    return one_op_graph(op, arrays, attrs, n_out, consts=consts, name=f"one_{op}")


def call_lowered(
    graph: Graph,
    feed: Mapping[str, np.ndarray],
    *,
    precision: str = "fp32",
    chip: str = "v5e",
    weights: str = "arguments",
) -> dict[str, np.ndarray]:
    """Lower ``graph`` and call the JAX function under ``jax.jit`` (no export), outputs by name."""
    policy = choose_policy(graph, get_chip(chip), precision=precision)
    plan = plan_weights(graph, policy, weights)
    lowered = build_function(graph, policy, plan)
    args = [np.asarray(feed[v.name]).astype(jax_dtype(v.dtype)) for v in graph.inputs]
    outs = jax.jit(lowered.fn)(plan.function_params(), *args)
    return {v.name: np.asarray(o) for v, o in zip(graph.outputs, outs)}


def qdq_matmul_graph(
    seed: int = 0, k: int = 96, n: int = 80, *, act_zero_point: int = 128, signed: bool = False
) -> Graph:
    """x[batch, seq, k] -> QuantizeLinear(uint8, or int8 if ``signed``) -> DequantizeLinear -> MatMul(DQ(int8 W,
    per-channel)) + b."""
    rng = np.random.default_rng(seed)
    g = Graph("qdq")
    x = g.add_input("x", TensorType(DType.FLOAT32, ("batch", "seq", k)))
    w = rng.standard_normal((k, n)).astype(np.float32)
    sw = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    qw = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
    wq = g.add_initializer("w_q", qw)
    ws = g.add_initializer("w_scale", sw)
    sa = g.add_initializer("x_scale", np.array(0.02, np.float32))
    za = g.add_initializer("x_zp", np.array(act_zero_point, np.int8 if signed else np.uint8))
    q = g.add_node("QuantizeLinear", [x, sa, za], name="q_x").output
    dq = g.add_node("DequantizeLinear", [q, sa, za], name="dq_x").output
    dw = g.add_node("DequantizeLinear", [wq, ws], {"axis": 1}, name="dq_w").output
    y = g.add_node("MatMul", [dq, dw], name="matmul").output
    b = g.add_initializer("b", rng.standard_normal(n).astype(np.float32))
    z = g.add_node("Add", [y, b], name="bias").output
    g.set_outputs([z])
    g.verify()
    return g


def tiny_encoder_graph(
    seed: int = 0, hidden: int = 64, heads: int = 4, inter: int = 128, vocab: int = 100, dtype: Any = np.float32
) -> Graph:
    """A one-layer fused BERT encoder: EmbedLayerNorm, Attention, Linear, SkipLayerNorm, Linear{gelu}.

    ``dtype`` is the type of every float weight (bfloat16 gives what a bf16 pass would: a bf16 graph).
    """
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32).astype(dtype)

    g = Graph("tiny_encoder")
    ids = g.add_input("input_ids", TensorType(DType.INT64, ("batch", "sequence")))
    mask = g.add_input("attention_mask", TensorType(DType.INT64, ("batch", "sequence")))
    types = g.add_input("token_type_ids", TensorType(DType.INT64, ("batch", "sequence")))
    word = g.add_initializer("word", w(vocab, hidden, scale=0.5))
    pos = g.add_initializer("pos", w(64, hidden, scale=0.5))
    tt = g.add_initializer("tt", w(2, hidden, scale=0.5))
    g0 = g.add_initializer("ln0_g", (1 + w(hidden).astype(np.float32)).astype(dtype))
    b0 = g.add_initializer("ln0_b", w(hidden))
    emb = g.add_node("EmbedLayerNorm", [ids, types, word, pos, tt, g0, b0], {"epsilon": 1e-12}, name="emb").output
    qkv_w = g.add_initializer("qkv_w", w(hidden, 3 * hidden))
    qkv_b = g.add_initializer("qkv_b", w(3 * hidden))
    att = g.add_node("Attention", [emb, qkv_w, qkv_b, mask], {"num_heads": heads}, name="attn").output
    o_w = g.add_initializer("o_w", w(hidden, hidden))
    o_b = g.add_initializer("o_b", w(hidden))
    proj = g.add_node("Linear", [att, o_w, o_b], name="attn_out").output
    g1 = g.add_initializer("ln1_g", (1 + w(hidden).astype(np.float32)).astype(dtype))
    b1 = g.add_initializer("ln1_b", w(hidden))
    h1 = g.add_node("SkipLayerNorm", [proj, emb, g1, b1], {"epsilon": 1e-12}, name="skipln1").output
    i_w = g.add_initializer("i_w", w(hidden, inter))
    i_b = g.add_initializer("i_b", w(inter))
    ff = g.add_node("Linear", [h1, i_w, i_b], {"activation": "gelu"}, name="ffn_in").output
    f_w = g.add_initializer("f_w", w(inter, hidden))
    f_b = g.add_initializer("f_b", w(hidden))
    ff2 = g.add_node("Linear", [ff, f_w, f_b], name="ffn_out").output
    g2 = g.add_initializer("ln2_g", (1 + w(hidden).astype(np.float32)).astype(dtype))
    b2 = g.add_initializer("ln2_b", w(hidden))
    out = g.add_node("SkipLayerNorm", [ff2, h1, g2, b2], {"epsilon": 1e-12}, name="skipln2").output
    g.set_outputs([out])
    g.verify()
    return g


def encoder_inputs(batch: int, seq: int, seed: int = 0, vocab: int = 100) -> dict[str, np.ndarray]:
    """Seeded ids with a padded mask: row 0 full, later rows shorter."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):
        n = int(rng.integers(1, seq))
        mask[b, n:] = 0
        ids[b, n:] = 0
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask}


__all__ = ["call_lowered", "encoder_inputs", "qdq_matmul_graph", "single_op_graph", "tiny_encoder_graph"]


def qdq_quantize(
    graph: Graph, calibration: Mapping[str, np.ndarray], *, ops: Sequence[str] = ("Linear", "Attention")
) -> Graph:
    """A QDQ int8 copy of ``graph`` (what an int8 pass makes): for each node in ``ops``, its activation goes
    through QuantizeLinear/DequantizeLinear (uint8, asymmetric, per tensor, range from ``calibration``) and its
    [K, N] weight becomes per-channel symmetric int8 behind a DequantizeLinear."""
    from accelopt.interpreter import run

    g = graph.copy()
    values = run(g, calibration, keep_intermediates=True)
    for node in [n for n in g.nodes if n.op in ops]:
        x, w = node.inputs[0], node.inputs[1]
        act = values[x.name].astype(np.float64)
        lo, hi = min(float(act.min()), 0.0), max(float(act.max()), 0.0)
        scale = np.array((hi - lo) / 255.0, np.float32)
        zero = np.array(np.clip(round(-lo / float(scale)), 0, 255), np.uint8)
        s_v = g.add_initializer(f"{node.name}_x_scale", scale)
        z_v = g.add_initializer(f"{node.name}_x_zero", zero)
        q = g.add_node("QuantizeLinear", [x, s_v, z_v], name=f"{node.name}_q", before=node).output
        dq = g.add_node("DequantizeLinear", [q, s_v, z_v], name=f"{node.name}_dq", before=node).output
        node.set_input(0, dq)
        wf = np.asarray(w.const, np.float32)
        ws = (np.abs(wf).max(axis=0) / 127.0).astype(np.float32)
        wq = np.clip(np.round(wf / ws), -127, 127).astype(np.int8)
        wq_v = g.add_initializer(f"{w.name}_q", wq)
        ws_v = g.add_initializer(f"{w.name}_scale", ws)
        dw = g.add_node("DequantizeLinear", [wq_v, ws_v], {"axis": 1}, name=f"{node.name}_dqw", before=node).output
        node.set_input(1, dw)
    g.remove_unused()
    g.verify()
    return g
