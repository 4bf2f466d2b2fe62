"""Builders of the attention forms beyond BERT's (for the fuse-attention tests): each one block, hidden 8, 2 heads.

- ``gpt2_graph``: one fused QKV projection split in three, 0.5-scaled Q and K (sqrt of 1/sqrt(4)), a causal
  mask built from shapes combined with the padding mask (``Where(keep, 0, -inf)`` added, NaN guard), or only
  the causal mask, or the causal mask written into the scores (``Where(causal, scores, fill)``).
- ``t5_graph``: Q/K/V without bias, no scale, a relative position bias gathered from a table by the
  clipped key-minus-query distance (computed from shapes), plus the padding mask either folded into the bias
  (T5) or added on its own (MPNet).
- ``deberta_graph``: scores over ``[B*N, S, S]`` with a bias computed from Q and K (``Tanh`` of their product)
  added, then viewed as ``[B, N, S, S]`` with a shape read from the scores, and a query-and-key padding mask
  written with ``Where(not keep, min, scores)``.
- ``mobilebert_graph``: Q and K projected from one input, V from another.
- ``convbert_graph``: Q also used by another branch; the context, kept per head ``[B, S, N, D]``, is
  concatenated with that branch's ``[B, S, N, D]`` and reshaped to ``[B, S, 2*N*D]``.
"""

from __future__ import annotations

import numpy as np
from attention_graphs import BOOL, F32, I64, Builder, Weights, _proj, _split

import accelopt.ir as ir
from accelopt.ir.graph import Graph, Value

HIDDEN, HEADS, D = 8, 2, 4
F32_MIN = float(np.finfo(np.float32).min)


def _graph(name: str, mask: bool = True, extra: tuple[str, ...] = ()) -> tuple[Graph, Builder, Value, Value | None]:
    g = Graph(name)
    x = g.add_input("x", ir.TensorType(F32, ("batch", "seq", HIDDEN)))
    for e in extra:
        g.add_input(e, ir.TensorType(F32, ("batch", "seq", HIDDEN)))
    m = g.add_input("mask", ir.TensorType(I64, ("batch", "seq"))) if mask else None
    return g, Builder(g), x, m


def _positions(b: Builder, x: Value) -> tuple[Value, Value]:
    """Query positions [S, 1] and key positions [1, S] from x's shape."""
    seq = b.op("Shape", [x], {"start": 1, "end": 2}, name="seq_len")
    rng = b.op("Range", [b.c("r0", 0, np.int64), b.op("Squeeze", [seq], name="seq_scalar"), b.c("r1", 1, np.int64)],
               name="positions")
    q = b.op("Unsqueeze", [rng, b.c("ax1", [1], np.int64)], name="q_pos")
    k = b.op("Unsqueeze", [rng, b.c("ax0", [0], np.int64)], name="k_pos")
    return q, k


def _merge(b: Builder, ctx: Value, w: Weights) -> Value:
    t = b.op("Transpose", [ctx], {"perm": [0, 2, 1, 3]}, name="merge_transpose")
    merged = b.op("Reshape", [t, b.c("shape_merge", [0, 0, HIDDEN], np.int64)], name="merge_reshape")
    return b.op("MatMul", [merged, b.c("wo", w.wo)], name="out_matmul")


def gpt2_graph(mask: str = "causal+padding", *, fill: float = -np.inf, seed: int = 0) -> tuple[Graph, Weights]:
    """``mask``: ``causal+padding`` (additive), ``causal`` (additive, no mask input), ``where`` (the causal mask
    written into the scores with ``fill``, no mask input)."""
    g, b, x, m = _graph("gpt2", mask=mask == "causal+padding")
    w = Weights.seeded(HIDDEN, seed)
    wqkv, bqkv = w.packed
    qkv = b.op("Add", [b.op("MatMul", [x, b.c("c_attn_w", wqkv)], name="c_attn_mm"), b.c("c_attn_b", bqkv)],
               name="c_attn")
    split = g.add_node("Split", [qkv, b.c("split", [HIDDEN] * 3, np.int64)], {"axis": 2}, outputs=3, name="split")
    q, k, v = (_split(b, o, HEADS, D, [0, 2, 1, 3], t) for o, t in zip(split.outputs, "qkv"))
    half = b.c("half", 0.5)
    kt = b.op("Transpose", [k], {"perm": [0, 1, 3, 2]}, name="kt")
    scores = b.op("MatMul", [b.op("Mul", [q, half], name="q_scale"), b.op("Mul", [kt, half], name="k_scale")],
                  name="qk")
    qpos, kpos = _positions(b, x)
    causal = b.op("LessOrEqual", [kpos, qpos], name="causal")  # [S, S]: key j <= query i
    if mask == "where":
        scores = b.op("Where", [causal, scores, b.c("fill", fill)], name="causal_where")
    else:
        keep = causal
        if m is not None:
            mb = b.op("Cast", [m], {"to": BOOL}, name="mask_bool")
            m4 = b.op("Unsqueeze", [mb, b.c("axes12", [1, 2], np.int64)], name="mask_4d")
            keep = b.op("And", [causal, m4], name="keep")
        add = b.op("Where", [keep, b.c("zero", [0.0]), b.c("ninf", [fill])], name="mask_where")
        scores = b.op("Add", [scores, add], name="mask_add")
    probs = b.op("Softmax", [scores], {"axis": -1}, name="softmax")
    nan = b.op("IsNaN", [probs], name="isnan")
    probs = b.op("Where", [nan, b.c("zero_p", [0.0]), probs], name="nan_guard")
    g.set_outputs([_merge(b, b.op("MatMul", [probs, v], name="context"), w)])
    return g, w


def t5_graph(mask: str = "folded", *, buckets: int = 3, seed: int = 0) -> tuple[Graph, np.ndarray]:
    """``mask``: ``folded`` (T5: (1 - m) * min added to the position bias), ``separate`` (MPNet: the bias and the
    mask added one after the other), ``none``. Returns the graph and the bias table ``[2*buckets+1, HEADS]``."""
    g, b, x, m = _graph("t5", mask=mask != "none")
    w = Weights.seeded(HIDDEN, seed)
    q, k, v = (_split(b, b.op("MatMul", [x, b.c(f"w{t}", wt)], name=f"{t}_proj"), HEADS, D, [0, 2, 1, 3], t)
               for t, wt in (("q", w.wq), ("k", w.wk), ("v", w.wv)))
    kt = b.op("Transpose", [k], {"perm": [0, 1, 3, 2]}, name="kt")
    scores = b.op("MatMul", [q, kt], name="qk")
    qpos, kpos = _positions(b, x)
    rel = b.op("Sub", [kpos, qpos], name="rel")
    idx = b.op("Add", [b.op("Clip", [rel, b.c("lo", -buckets, np.int64), b.c("hi", buckets, np.int64)], name="clip"),
                       b.c("offset", buckets, np.int64)], name="bucket")
    table = np.random.default_rng(seed + 7).standard_normal((2 * buckets + 1, HEADS)).astype(np.float32)
    vals = b.op("Gather", [b.c("rel_bias", table), idx], {"axis": 0}, name="bias_gather")  # [S, S, N]
    bias = b.op("Unsqueeze", [b.op("Transpose", [vals], {"perm": [2, 0, 1]}, name="bias_heads"),
                              b.c("ax0b", [0], np.int64)], name="position_bias")  # [1, N, S, S]
    ext = None
    if m is not None:
        mf = b.op("Cast", [m], {"to": F32}, name="mask_f")
        m4 = b.op("Unsqueeze", [mf, b.c("axes12", [1, 2], np.int64)], name="mask_4d")
        ext = b.op("Mul", [b.op("Sub", [b.c("one", 1.0), m4], name="mask_inv"), b.c("fmin", F32_MIN)],
                   name="extended_mask")
    if mask == "folded":
        assert ext is not None
        scores = b.op("Add", [scores, b.op("Add", [bias, ext], name="bias_masked")], name="add_bias")
    else:
        scores = b.op("Add", [scores, bias], name="add_bias")
        if ext is not None:
            scores = b.op("Add", [scores, ext], name="add_mask")
    probs = b.op("Softmax", [scores], {"axis": -1}, name="softmax")
    g.set_outputs([_merge(b, b.op("MatMul", [probs, v], name="context"), w)])
    return g, table


def deberta_graph(*, early_bias: bool = False, seed: int = 0) -> Graph:
    """``early_bias`` adds a second, smaller bias ``[1, S, S]`` before the scores are reshaped (a near miss)."""
    g, b, x, m = _graph("deberta")
    assert m is not None
    w = Weights.seeded(HIDDEN, seed)

    def flat(v: Value, tag: str) -> Value:
        """``[B, N, *rest]`` -> ``[B*N, *rest]``, the target shape read from ``v`` as DeBERTa's view does."""
        dims = b.op("Shape", [v], {"start": 2}, name=f"{tag}_dims")
        shape = b.op("Concat", [b.c("minus1", [-1], np.int64), dims], {"axis": 0}, name=f"{tag}_shape")
        return b.op("Reshape", [v, shape], name=f"{tag}_flat")

    def heads(t: str, wt: np.ndarray, bt: np.ndarray) -> Value:
        return flat(_split(b, _proj(b, x, wt, bt, t), HEADS, D, [0, 2, 1, 3], t), t)  # [B*N, S, D]

    q, k, v = heads("q", w.wq, w.bq), heads("k", w.wk, w.bk), heads("v", w.wv, w.bv)
    kt = b.op("Transpose", [k], {"perm": [0, 2, 1]}, name="kt")
    scale = b.c("scale3", np.sqrt(D * 3.0))
    scores = b.op("MatMul", [q, b.op("Div", [kt, scale], name="k_scale")], name="qk")
    rel = b.op("Tanh", [b.op("MatMul", [q, kt], name="rel_qk")], name="rel_tanh")
    rel = b.op("Div", [rel, scale], name="rel_scaled")
    scores = b.op("Add", [scores, rel], name="add_rel")
    if early_bias:
        scores = b.op("Add", [scores, b.op("Slice", [rel, b.c("s0", [0], np.int64), b.c("s1", [1], np.int64),
                                                           b.c("sax", [0], np.int64)], name="rel_first")],
                      name="add_early")
    shape = b.op("Concat", [b.c("lead", [-1, HEADS], np.int64),
                            b.op("Shape", [scores], {"start": 1}, name="scores_dims")], {"axis": 0}, name="view_shape")
    scores = b.op("Reshape", [scores, shape], name="scores_view")  # [B, N, S, S]
    m_a = b.op("Unsqueeze", [m, b.c("ax12", [1, 2], np.int64)], name="mask_keys")
    m_b = b.op("Unsqueeze", [m, b.c("ax13", [1, 3], np.int64)], name="mask_queries")
    keep = b.op("Cast", [b.op("Mul", [m_a, m_b], name="mask_2d")], {"to": BOOL}, name="keep")
    scores = b.op("Where", [b.op("Not", [keep], name="masked"), b.c("fmin", F32_MIN), scores], name="masked_fill")
    probs = b.op("Softmax", [scores], {"axis": -1}, name="softmax")
    ctx = b.op("MatMul", [flat(probs, "probs"), v], name="context")  # [B*N, S, D]
    dims = b.op("Shape", [ctx], {"start": 1}, name="context_dims")
    heads_shape = b.op("Concat", [b.c("lead_ctx", [-1, HEADS], np.int64), dims], {"axis": 0}, name="context_shape")
    ctx = b.op("Reshape", [ctx, heads_shape], name="context_heads")
    g.set_outputs([_merge(b, ctx, w)])
    return g


def _bert_probs(b: Builder, q: Value, kt: Value, m: Value) -> Value:
    """BERT's scores: ``QK^T / sqrt(d)`` plus ``(1 - m) * -10000``, then the softmax."""
    scores = b.op("Div", [b.op("MatMul", [q, kt], name="qk"), b.c("sqrt_d", np.sqrt(D))], name="scale")
    mf = b.op("Cast", [m], {"to": F32}, name="mask_f")
    m4 = b.op("Unsqueeze", [mf, b.c("axes12", [1, 2], np.int64)], name="mask_4d")
    ext = b.op("Mul", [b.op("Sub", [b.c("one", 1.0), m4], name="mask_inv"), b.c("neg", -10000.0)], name="ext")
    return b.op("Softmax", [b.op("Add", [scores, ext], name="mask_add")], {"axis": -1}, name="softmax")


def mobilebert_graph(*, v_scale: float | None = None, seed: int = 0) -> Graph:
    """Q and K from ``x``, V from ``y``; ``v_scale`` multiplies V after its projection (a near miss)."""
    g, b, x, m = _graph("mobilebert", extra=("y",))
    y = g.value("y")
    w = Weights.seeded(HIDDEN, seed)
    q = _split(b, _proj(b, x, w.wq, w.bq, "q"), HEADS, D, [0, 2, 1, 3], "q")
    kt = _split(b, _proj(b, x, w.wk, w.bk, "k"), HEADS, D, [0, 2, 3, 1], "k")
    v = _split(b, _proj(b, y, w.wv, w.bv, "v"), HEADS, D, [0, 2, 1, 3], "v")
    if v_scale is not None:
        v = b.op("Mul", [v, b.c("v_scale", v_scale)], name="v_scaled")
    assert m is not None
    probs = _bert_probs(b, q, kt, m)
    g.set_outputs([_merge(b, b.op("MatMul", [probs, v], name="context"), w)])
    return g


def convbert_graph(*, perm: tuple[int, ...] = (0, 2, 1, 3), seed: int = 0) -> Graph:
    """The context ``[B, N, S, D]`` transposed with ``perm`` and concatenated with a second branch made from Q
    (``[B, S, N, D]``) along the heads; ``perm=(0, 2, 3, 1)`` keeps it in no merged layout (a near miss)."""
    g, b, x, m = _graph("convbert")
    w = Weights.seeded(HIDDEN, seed)
    qp = _proj(b, x, w.wq, w.bq, "q")
    q = _split(b, qp, HEADS, D, [0, 2, 1, 3], "q")
    kt = _split(b, _proj(b, x, w.wk, w.bk, "k"), HEADS, D, [0, 2, 3, 1], "k")
    v = _split(b, _proj(b, x, w.wv, w.bv, "v"), HEADS, D, [0, 2, 1, 3], "v")
    assert m is not None
    probs = _bert_probs(b, q, kt, m)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v], name="context")], {"perm": list(perm)}, name="context_t")
    conv = b.op("Mul", [b.op("Tanh", [qp], name="conv_branch"), x], name="conv_mix")  # stands for the conv half
    last = [HEADS, D] if perm[2:] == (1, 3) else [D, HEADS]
    conv = b.op("Reshape", [conv, b.c("conv_heads", [0, 0, *last], np.int64)], name="conv_heads")
    cat = b.op("Concat", [ctx, conv], {"axis": 2}, name="mixed")
    out = b.op("Reshape", [cat, b.c("mixed_shape", [0, 0, 2 * HIDDEN], np.int64)], name="mixed_reshape")
    g.set_outputs([out])
    return g


def padded(batch: int = 3, seq: int = 5, seed: int = 0, *, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Seeded ``x`` (and ``extra`` float inputs) with a right-padded mask: key 0 is kept in every row."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[1, 3:] = 0
    if batch > 2:
        mask[2, [2, seq - 1]] = 0
    feeds = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32), "mask": mask}
    for e in extra:
        feeds[e] = rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)
    return feeds
