"""Builders of BERT self-attention blocks in the forms different exporters write (for fuse-attention tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import accelopt.ir as ir
from accelopt.ir.graph import Graph, Value

F32 = ir.DType.FLOAT32
I64 = ir.DType.INT64
BOOL = ir.DType.BOOL


@dataclass
class Weights:
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray

    @staticmethod
    def seeded(hidden: int, seed: int = 0) -> Weights:
        rng = np.random.default_rng(seed)

        def w() -> np.ndarray:
            return (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)

        def b() -> np.ndarray:
            return (rng.standard_normal(hidden) * 0.1).astype(np.float32)

        return Weights(w(), b(), w(), b(), w(), b(), w(), b())

    @property
    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([self.wq, self.wk, self.wv], 1), np.concatenate([self.bq, self.bk, self.bv])


class Builder:
    """Adds nodes to one graph with short calls."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.n = 0

    def c(self, name: str, arr: object, dtype: object = np.float32) -> Value:
        return self.g.add_initializer(name, np.asarray(arr, dtype=dtype), unique=True)

    def op(self, op: str, ins: list[Value | None], attrs: dict | None = None, name: str | None = None) -> Value:
        self.n += 1
        return self.g.add_node(op, ins, attrs or {}, name=name or f"{op.lower()}_{self.n}").outputs[0]


def _proj(b: Builder, x: Value, w: np.ndarray, bias: np.ndarray, tag: str, bias_first: bool = True) -> Value:
    mm = b.op("MatMul", [x, b.c(f"w{tag}", w)], name=f"{tag}_matmul")
    bv = b.c(f"b{tag}", bias)
    return b.op("Add", [bv, mm] if bias_first else [mm, bv], name=f"{tag}_add")


def _split(b: Builder, v: Value, heads: int, d: int, perm: list[int], tag: str) -> Value:
    r = b.op("Reshape", [v, b.c(f"shape_{tag}", [0, 0, heads, d], np.int64)], name=f"{tag}_reshape")
    return b.op("Transpose", [r], {"perm": perm}, name=f"{tag}_transpose")


def attention_block(
    b: Builder,
    x: Value,
    mask: Value | None,
    w: Weights,
    heads: int,
    *,
    form: str = "legacy",
    layer: str = "l0",
    y: Value | None = None,
    mask_value: Value | None = None,
) -> Value:
    """One self-attention block plus its output projection; returns the projection's output.

    Forms: ``legacy`` (Div scale, additive (1-m)*-10000 mask), ``where`` (sqrt-scale on Q and K,
    Where(cond, 0, -inf) additive mask, NaN guard), ``distil`` (Q scaled before the matmul,
    Where(mask == 0, min, scores)), ``sdpa`` (ScaledDotProductAttention with a bool mask).
    ``y`` makes K and V read another input (cross-attention); ``mask_value`` replaces the mask term.
    """
    hidden = w.wq.shape[0]
    d = hidden // heads
    kv = y if y is not None else x
    q = _split(b, _proj(b, x, w.wq, w.bq, f"{layer}_q"), heads, d, [0, 2, 1, 3], f"{layer}_q")
    v = _split(b, _proj(b, kv, w.wv, w.bv, f"{layer}_v", bias_first=False), heads, d, [0, 2, 1, 3], f"{layer}_v")
    kp = _proj(b, kv, w.wk, w.bk, f"{layer}_k")
    if form == "sdpa":
        k = _split(b, kp, heads, d, [0, 2, 1, 3], f"{layer}_k")
        ins = [q, k, v]
        if mask is not None:
            mb = b.op("Cast", [mask], {"to": BOOL}, name=f"{layer}_mask_bool")
            ins.append(b.op("Unsqueeze", [mb, b.c("axes12", [1, 2], np.int64)], name=f"{layer}_mask_4d"))
        ctx = b.op("ScaledDotProductAttention", ins, name=f"{layer}_sdpa")
    else:
        if form == "legacy":
            kt = _split(b, kp, heads, d, [0, 2, 3, 1], f"{layer}_k")
            scores = b.op("MatMul", [q, kt], name=f"{layer}_qk")
            scores = b.op("Div", [scores, b.c("sqrt_d", np.sqrt(d))], name=f"{layer}_scale")
        elif form == "where":
            k = _split(b, kp, heads, d, [0, 2, 1, 3], f"{layer}_k")
            kt = b.op("Transpose", [k], {"perm": [0, 1, 3, 2]}, name=f"{layer}_kt")
            s4 = b.c("quarter_scale", d**-0.25)
            scores = b.op("MatMul", [b.op("Mul", [q, s4], name=f"{layer}_qs"), b.op("Mul", [kt, s4], name=f"{layer}_ks")],
                          name=f"{layer}_qk")
        elif form == "distil":
            qs = b.op("Div", [q, b.c("sqrt_d", np.sqrt(d))], name=f"{layer}_qscale")
            kt = _split(b, kp, heads, d, [0, 2, 3, 1], f"{layer}_k")
            scores = b.op("MatMul", [qs, kt], name=f"{layer}_qk")
        else:
            raise ValueError(form)
        if mask_value is not None:
            scores = b.op("Add", [scores, mask_value], name=f"{layer}_mask_add")
        elif mask is not None:
            if form == "legacy":
                mf = b.op("Cast", [mask], {"to": F32}, name=f"{layer}_mask_f")
                m4 = b.op("Unsqueeze", [mf, b.c("axes12", [1, 2], np.int64)], name=f"{layer}_mask_4d")
                inv = b.op("Sub", [b.c("one", 1.0), m4], name=f"{layer}_mask_inv")
                add = b.op("Mul", [inv, b.c("neg", -10000.0)], name=f"{layer}_mask_mul")
                scores = b.op("Add", [scores, add], name=f"{layer}_mask_add")
            elif form == "where":
                mb = b.op("Cast", [mask], {"to": BOOL}, name=f"{layer}_mask_bool")
                m4 = b.op("Unsqueeze", [mb, b.c("axes12", [1, 2], np.int64)], name=f"{layer}_mask_4d")
                add = b.op("Where", [m4, b.c("zero", [0.0]), b.c("ninf", [-np.inf])], name=f"{layer}_mask_where")
                scores = b.op("Add", [scores, add], name=f"{layer}_mask_add")
            else:
                pad = b.op("Equal", [mask, b.c("zero_i", 0, np.int64)], name=f"{layer}_mask_eq")
                p4 = b.op("Unsqueeze", [pad, b.c("axes12", [1, 2], np.int64)], name=f"{layer}_mask_4d")
                fill = b.c("fmin", np.finfo(np.float32).min)
                scores = b.op("Where", [p4, fill, scores], name=f"{layer}_mask_where")
        probs = b.op("Softmax", [scores], {"axis": -1}, name=f"{layer}_softmax")
        if form == "where":
            nan = b.op("IsNaN", [probs], name=f"{layer}_isnan")
            probs = b.op("Where", [nan, b.c("zero", [0.0]), probs], name=f"{layer}_nan_guard")
        ctx = b.op("MatMul", [probs, v], name=f"{layer}_context")
    t = b.op("Transpose", [ctx], {"perm": [0, 2, 1, 3]}, name=f"{layer}_merge_transpose")
    merged = b.op("Reshape", [t, b.c("shape_merge", [0, 0, hidden], np.int64)], name=f"{layer}_merge_reshape")
    out = b.op("MatMul", [merged, b.c("wo", w.wo)], name=f"{layer}_out_matmul")
    return b.op("Add", [out, b.c("bo", w.bo)], name=f"{layer}_out_add")


def bert_attention_graph(form: str = "legacy", *, hidden: int = 8, heads: int = 2, layers: int = 1,
                         shared: bool = False, with_mask: bool = True, seed: int = 0) -> tuple[Graph, list[Weights]]:
    g = Graph(f"attention_{form}")
    x = g.add_input("x", ir.TensorType(F32, ("batch", "seq", hidden)))
    mask = g.add_input("mask", ir.TensorType(I64, ("batch", "seq"))) if with_mask else None
    b = Builder(g)
    ws: list[Weights] = []
    h = x
    for i in range(layers):
        w = ws[0] if shared and ws else Weights.seeded(hidden, seed + i)
        ws.append(w)
        h = attention_block(b, h, mask, w, heads, form=form, layer=f"l{i}")
    g.set_outputs([h])
    return g, ws


def padded_inputs(hidden: int = 8, batch: int = 3, seq: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[1, 3:] = 0
    mask[2, [0, 2]] = 0
    return {"x": rng.standard_normal((batch, seq, hidden)).astype(np.float32), "mask": mask}
