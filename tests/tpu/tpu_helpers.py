"""Helpers for the TPU target tests: tiny hand-built graphs and a direct (un-exported) lowering call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from accelopt.ir import DType, Graph, TensorType, Value
from accelopt.targets.tpu.chips import get_chip
from accelopt.targets.tpu.lowering import build_function, jax_dtype, plan_weights
from accelopt.targets.tpu.policy import choose_policy
from modelzoo import one_op_graph, sample_inputs


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

    def linear(x: Value, prefix: str, k: int, n: int, name: str, **attrs: Any) -> Value:
        weight = g.add_initializer(f"{prefix}_w", w(k, n))
        bias = g.add_initializer(f"{prefix}_b", w(n))
        return g.add_node("Linear", [x, weight, bias], attrs, name=name).output

    def norm_params(i: int) -> tuple[Value, Value]:
        gamma = g.add_initializer(f"ln{i}_g", (1 + w(hidden).astype(np.float32)).astype(dtype))
        return gamma, g.add_initializer(f"ln{i}_b", w(hidden))

    ids, mask, types = (
        g.add_input(n, TensorType(DType.INT64, ("batch", "sequence")))
        for n in ("input_ids", "attention_mask", "token_type_ids")
    )
    word = g.add_initializer("word", w(vocab, hidden, scale=0.5))
    pos = g.add_initializer("pos", w(64, hidden, scale=0.5))
    tt = g.add_initializer("tt", w(2, hidden, scale=0.5))
    emb = g.add_node("EmbedLayerNorm", [ids, types, word, pos, tt, *norm_params(0)], {"epsilon": 1e-12}, name="emb").output
    qkv_w = g.add_initializer("qkv_w", w(hidden, 3 * hidden))
    qkv_b = g.add_initializer("qkv_b", w(3 * hidden))
    att = g.add_node("Attention", [emb, qkv_w, qkv_b, mask], {"num_heads": heads}, name="attn").output
    proj = linear(att, "o", hidden, hidden, "attn_out")
    h1 = g.add_node("SkipLayerNorm", [proj, emb, *norm_params(1)], {"epsilon": 1e-12}, name="skipln1").output
    ff = linear(h1, "i", hidden, inter, "ffn_in", activation="gelu")
    ff2 = linear(ff, "f", inter, hidden, "ffn_out")
    out = g.add_node("SkipLayerNorm", [ff2, h1, *norm_params(2)], {"epsilon": 1e-12}, name="skipln2").output
    g.set_outputs([out])
    g.verify()
    return g


def encoder_inputs(batch: int, seq: int, seed: int = 0, vocab: int = 100) -> dict[str, np.ndarray]:
    """Seeded inputs for ``tiny_encoder_graph`` (``modelzoo.sample_inputs``): row 0 full, later rows padded."""
    return sample_inputs(batch, seq, vocab, seed)


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
