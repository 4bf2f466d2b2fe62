"""The generic integer path is exact: int32 accumulations of u8 x s8 and s8 x s8 at BERT-sized K with extreme
values and zero points (per tensor, per row, per column) equal the interpreter's bit for bit; a dynamically
quantized QLinear with requantization gives the same integers."""

from __future__ import annotations

import numpy as np
import pytest
from relax_helpers import Compiled, assert_matches

from accelopt.interpreter import run
from accelopt.ir import DType, Graph, TensorType

R = np.random.default_rng(77)
K = 3072


def _extreme(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    a = R.integers(info.min, info.max + 1, size=shape).astype(dtype)
    a.reshape(-1)[: a.size // 3] = info.max if dtype == np.uint8 else info.min  # a third at the extreme
    return a


def _mmi_graph(name: str, a_dtype: type, a_zp: np.ndarray, b_zp: np.ndarray) -> tuple[Graph, dict]:
    g = Graph(name)
    a = _extreme((4, K), a_dtype)
    b = _extreme((K, 48), np.int8)
    x = g.add_input("a", TensorType(DType.from_numpy(a_dtype), (4, K)))
    n = g.add_node(
        "MatMulInteger",
        [x, g.add_initializer("b", b), g.add_initializer("a_zp", a_zp), g.add_initializer("b_zp", b_zp)],
    )
    g.set_outputs([n.output])
    return g, {"a": a}


def _qlinear_graph() -> tuple[Graph, dict]:
    g = Graph("dq_qlinear")
    k, n = 768, 64
    x = g.add_input("x", TensorType(DType.FLOAT32, (2, 5, k)))
    w = R.standard_normal((k, n)).astype(np.float32)
    ws = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    wq = np.clip(np.rint(w / ws), -127, 127).astype(np.int8)
    q = g.add_node("DynamicQuantize", [x], {"to": DType.UINT8, "symmetric": 0, "granularity": "row"}, outputs=3)
    qv, sv, zv = q.outputs
    lin = g.add_node(
        "QLinear",
        [qv, sv, zv, g.add_initializer("w_q", wq), g.add_initializer("w_s", ws), None,
         g.add_initializer("bias", R.standard_normal(n).astype(np.float32)),
         g.add_initializer("y_s", np.array(0.05, np.float32)), g.add_initializer("y_z", np.array(7, np.int8))],
        {"activation": "gelu"},
    )
    plain = g.add_node("QLinear", [qv, sv, zv, g.value("w_q"), g.value("w_s")])
    g.set_outputs([lin.output, plain.output, qv])
    x_val = R.standard_normal((2, 5, k)).astype(np.float32) * 3
    x_val[0, 0] = 0.0  # an all-zero row: the smallest scale
    return g, {"x": x_val}


CASES = {
    "u8xs8_row_col": _mmi_graph("u8s8", np.uint8, R.integers(0, 256, 4).astype(np.uint8), R.integers(-128, 128, 48).astype(np.int8)),
    "s8xs8_scalar": _mmi_graph("s8s8", np.int8, np.array(-128, np.int8), np.array(127, np.int8)),
    "dq_qlinear": _qlinear_graph(),
}


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    return Compiled({k: g for k, (g, _) in CASES.items()})


@pytest.mark.parametrize("case", sorted(CASES))
def test_integer_results_are_bit_exact(compiled: Compiled, case: str):
    g, feed = CASES[case]
    want = run(g, feed)
    got = compiled.run(case, feed)
    for v in g.outputs:
        if v.dtype.is_int:  # int32 accumulations, quantized activations, requantized outputs: exact
            np.testing.assert_array_equal(got[v.name], want[v.name], err_msg=f"{case}: {v.name}")
    assert_matches(got, want, [v.name for v in g.outputs if not v.dtype.is_int], case, rtol=1e-6, atol=1e-5)


def test_extreme_sums_reach_beyond_float32_exactness():
    """The case really tests int32: its sums exceed 2**24, where a float32 accumulator would round."""
    g, feed = CASES["u8xs8_row_col"]
    assert np.abs(run(g, feed)[g.outputs[0].name]).max() > 2**24
