"""Half-precision lowering: float16 and bfloat16 graphs of the common transformer ops against the interpreter
(which computes half types through float32 and rounds back), at half-precision tolerances."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from op_cases import CASES
from relax_helpers import Compiled, assert_matches

from accelopt.interpreter import run
from modelzoo import one_op_graph

#: ops a float16 / bfloat16 transformer graph is made of
HALF_OPS = {
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Exp", "Tanh", "Sigmoid", "Erf", "Relu", "Sqrt", "Pow", "Where",
    "Gelu", "QuickGelu", "Softmax", "LogSoftmax", "LayerNormalization", "LayerNorm", "SkipLayerNorm", "MatMul",
    "Gemm", "Linear", "Attention", "ReduceMean", "ReduceSum", "ReduceMax", "Transpose", "Reshape", "Concat",
    "Slice", "Gather", "Cast", "Max", "Min", "Clip", "Expand", "Einsum", "ScaledDotProductAttention",
}  # fmt: skip
DTYPES = {"float16": (np.float16, 2e-3, 2e-3), "bfloat16": (ml_dtypes.bfloat16, 2e-2, 2e-2)}


def _half_cases() -> list[tuple[str, str, list, dict, int, str]]:
    out = []
    for case_id, op, inputs, attrs, n_out in CASES:
        if op not in HALF_OPS:
            continue
        if not any(a is not None and np.asarray(a).dtype == np.float32 for _, a in inputs):
            continue
        if op == "Cast" and "to" in attrs:
            continue
        for dt in DTYPES:
            out.append((f"{case_id}-{dt}", op, inputs, attrs, n_out, dt))
    return out


HALF = _half_cases()


def _graph(op: str, inputs: list, attrs: dict, n_out: int, dt: str):
    cast = DTYPES[dt][0]
    arrays = [None if kind == "none" else (a.astype(cast) if a.dtype == np.float32 else a) for kind, a in inputs]
    consts = {i for i, (kind, _) in enumerate(inputs) if kind == "const"}
    return one_op_graph(op, arrays, attrs, n_out, consts=consts, name=f"half_{op}")


@pytest.fixture(scope="module")
def compiled():
    graphs, feeds = {}, {}
    for i, (cid, op, inputs, attrs, n_out, dt) in enumerate(HALF):
        g, feed = _graph(op, inputs, attrs, n_out, dt)
        graphs[f"h{i}"] = g
        feeds[cid] = (f"h{i}", feed)
    return Compiled(graphs), feeds


@pytest.mark.parametrize("case_id,op,inputs,attrs,n_out,dt", HALF, ids=[c[0] for c in HALF])
def test_half_lowering_matches_the_interpreter(compiled, case_id, op, inputs, attrs, n_out, dt):
    comp, feeds = compiled
    name, feed = feeds[case_id]
    g = comp.graphs[name]
    want = {k: np.asarray(v).astype(np.float32) if np.asarray(v).dtype.kind in "fV" else v for k, v in run(g, feed).items()}
    got = comp.run(name, feed)
    for v in g.outputs:
        assert got[v.name].dtype == np.asarray(run(g, feed)[v.name]).dtype, (case_id, v.name)
    got = {k: v.astype(np.float32) if v.dtype.kind in "fV" else v for k, v in got.items()}
    _, rtol, atol = DTYPES[dt]
    scale = max(1.0, max(float(np.abs(w).max()) for w in want.values() if np.asarray(w).dtype.kind == "f"))
    assert_matches(got, want, [v.name for v in g.outputs], case_id, rtol=rtol, atol=atol * scale)


def test_both_half_types_cover_the_transformer_ops():
    ops = {c[1] for c in HALF}
    assert {"MatMul", "Linear", "Attention", "Softmax", "LayerNorm", "Gelu", "ScaledDotProductAttention"} <= ops
