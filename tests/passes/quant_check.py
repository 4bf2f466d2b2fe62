"""Shared pieces of the quantization and precision pass tests: small graphs, seeded inputs, a four-way check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import accelopt.ir as ir
from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.graph import Graph
from accelopt.model import Model
from accelopt.passes.base import PassContext, PassResult, build_pipeline
from accelopt.samples import SampleSet
from accelopt.validation import ValidationConfig, Validator, compare

MLP_TEXT = """graph t(%x: float32[batch,2,4]) {
  %w: float32[4,3] = const [0.5, -1.0, 0.25, 1.0, 0.5, -0.5, -0.25, 0.75, 1.0, 0.125, -0.125, 0.5]
  %b: float32[3] = const [0.5, 0.0, -0.5]
  %fc: float32[batch,2,3] = Linear{activation="gelu"}(%x, %w, %b) @fc
  %out: float32[batch,2,3] = Relu(%fc) @out
  return %out
}
"""

#: what ``quantize-int8`` (no target) makes of ``MLP_TEXT``: symmetric int8 activations quantized per row
#: at run time, per-channel int8 weights (64 = round(0.5 * 127)); the QDQ input of the lower-quantized tests
MLP_QDQ_TEXT = """graph t(%x: float32[batch,2,4]) {
  %b: float32[3] = const [0.5, 0.0, -0.5]
  %w_int8: int8[4,3] = const [64, -127, 32, 127, 64, -64, -32, 95, 127, 16, -16, 64]
  %w_scale: float32[3] = const [0.007874015718698502, 0.007874015718698502, 0.007874015718698502]
  %x_q: int8[batch,2,4], %x_scale: float32[batch,2,1], %x_zero_point: int8[batch,2,1] = DynamicQuantize{granularity="row", symmetric=1, to=int8}(%x) @x_quantize
  %x_dequantize: float32[batch,2,4] = DequantizeLinear{axis=2, block_size=4}(%x_q, %x_scale, %x_zero_point) @x_dequantize
  %w_dequantize: float32[4,3] = DequantizeLinear{axis=1}(%w_int8, %w_scale) @w_dequantize
  %fc: float32[batch,2,3] = Linear{activation="gelu"}(%x_dequantize, %w_dequantize, %b) @fc
  %out: float32[batch,2,3] = Relu(%fc) @out
  return %out
}
"""


def inputs_for(graph: Graph, n: int = 3, seed: int = 0, seq: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else (n if i == 0 else seq) for i, d in enumerate(v.shape or ()))
        if v.dtype.is_float:
            feeds[v.name] = rng.standard_normal(shape).astype(v.dtype.np)
        elif "mask" in v.name:
            feeds[v.name] = np.ones(shape, v.dtype.np)
        else:
            feeds[v.name] = rng.integers(0, 10, size=shape).astype(v.dtype.np)
    return feeds


def outputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    res = run(graph, feeds)
    return [res[v.name] for v in graph.outputs]


def check_four_ways(
    spec: str,
    before: Graph | str,
    after: str | None,
    *,
    ctx: PassContext | None = None,
    expect_modified: bool = True,
    cosine: float = 0.999,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> PassResult:
    """Run the single pass ``spec`` and check it four ways.

    1. golden: the result prints as ``after`` (``None``: unchanged; ``"*"``: not compared);
    2. numerics: outputs keep names, dtypes and shapes, and every output row has cosine >= ``cosine``
       against the input graph's (seeded inputs); an unmodified graph gives identical outputs;
    3. ``modified`` is exact (text changed iff True) and equals ``expect_modified``;
    4. ``verify()`` passes.
    """
    graph = parse(before) if isinstance(before, str) else before
    graph.verify()
    text_before = print_graph(graph)
    (p,) = build_pipeline(spec)
    feeds = dict(feeds) if feeds is not None else inputs_for(graph)
    ref = outputs(graph, feeds)
    result = p.run(graph.copy(), ctx or PassContext())
    new = result.graph
    new.verify()
    text = print_graph(new)
    assert result.modified == (text != text_before), "modified is not exact"
    assert result.modified == expect_modified
    if after != "*":
        assert text == (text_before if after is None else after), text
    got = outputs(new, feeds)
    assert [v.name for v in new.outputs] == [v.name for v in graph.outputs]
    for v, r, o in zip(new.outputs, ref, got):
        assert o.dtype == r.dtype and o.shape == r.shape, v.name
        if not result.modified:
            np.testing.assert_array_equal(o, r)
            continue
        metrics = compare(r.astype(np.float64), o.astype(np.float64), name=v.name)
        assert metrics["cosine_min"] >= cosine, (v.name, metrics)
    return result


def mlp(layers: int = 3, hidden: int = 16, *, planted: int | None = None, seed: int = 0) -> Graph:
    """``layers`` Linear layers (the first GELU, then none); ``planted``: that layer's input gets an outlier
    channel (x1000 from the previous weight, /1000 in its own), which wrecks its activation quantization."""
    rng = np.random.default_rng(seed)
    g = ir.Graph("mlp")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 8, hidden)))
    ws = [(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32) for _ in range(layers)]
    if planted is not None:
        ws[planted - 1][:, 3] *= 1000.0
        ws[planted][3, :] /= 1000.0
    cur = x
    for i, w in enumerate(ws):
        wv = g.add_initializer(f"w{i}", w)
        bv = g.add_initializer(f"b{i}", rng.standard_normal(hidden).astype(np.float32) * 0.1)
        act = "gelu" if i == 0 else "none"
        cur = g.add_node("Linear", [cur, wv, bv], {"activation": act}, name=f"fc{i}").output
    g.set_outputs([cur])
    return g


def attention_graph(seed: int = 3) -> Graph:
    """One fused Attention (2 heads, hidden 8) with seeded QKV weight and bias, and the mask as a graph input."""
    text = """graph t(%x: float32[batch,3,8], %mask: int64[batch,3]) {
  %w: float32[8,24] = const <sha:0>
  %b: float32[24] = const <sha:1>
  %att: float32[batch,3,8] = Attention{num_heads=2}(%x, %w, %b, %mask) @att
  return %att
}
"""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 24)).astype(np.float32)
    return parse(text, {"w": w, "b": rng.standard_normal(24).astype(np.float32)})


def validator_for(graph: Graph, n: int = 8, seed: int = 1, **tolerance: Any) -> Validator:
    """A validator whose reference is ``graph`` itself, on seeded samples."""
    model = Model(graph=graph.copy(), source="test", kind="test")
    samples = SampleSet(inputs_for(graph, n=n, seed=seed, seq=8), "seeded test samples")
    return Validator(model, ValidationConfig(tolerance=dict(tolerance) or None), samples)


def calibration_for(graph: Graph, n: int = 8, seed: int = 2) -> list[dict[str, np.ndarray]]:
    return [inputs_for(graph, n=n, seed=seed, seq=8)]
