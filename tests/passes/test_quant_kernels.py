"""Quantized op kernels: exact integer matmul, run-time quantization, QLinear, QAttention, weight scales."""

from __future__ import annotations

import numpy as np
import pytest

import accelopt.ir as ir
from accelopt.errors import VerifyError
from accelopt.ir.ops.attention import attention
from accelopt.ir.ops.onnx_quant import dynamic_quantize as onnx_dynamic_quantize
from accelopt.ir.ops.quantized import dequantized_matmul, dynamic_quantize, int_matmul
from accelopt.passes.quant_qdq import quantize_weight
from modelzoo import run_one_op as _one

rng = np.random.default_rng(0)


# ----------------------------------------------------------- integer matmul
@pytest.mark.parametrize("k", [7, 384, 3072])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_int_matmul_is_exact(k: int, dtype: type) -> None:
    """Against an int64 reference, with zero points per row and per column, on both the float32 and float64 paths."""
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, size=(2, 5, k)).astype(dtype)
    b = rng.integers(-128, 128, size=(k, 6)).astype(np.int8)
    azp = rng.integers(info.min, info.max + 1, size=(2, 5, 1)).astype(dtype)
    bzp = rng.integers(-128, 128, size=6).astype(np.int8)
    ref = (a.astype(np.int64) - azp) @ (b.astype(np.int64) - bzp)
    got = int_matmul(a, b, azp, bzp)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(int_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_int_matmul_worst_case_sums_stay_exact() -> None:
    """Every product at its extreme: the sums exceed 2**24, so only the float64 path is exact."""
    k = 4096
    a = np.full((3, k), 255, np.uint8)
    b = np.full((k, 2), -128, np.int8)
    got = int_matmul(a, b, np.zeros((), np.uint8), np.array([127, -128], np.int8))
    ref = (255 * (np.array([-128 - 127, 0], np.int64))) * k
    np.testing.assert_array_equal(got, np.broadcast_to(ref, (3, 2)))
    assert abs(int(got[0, 0])) > 2**24


# ------------------------------------------------------- DynamicQuantize
def test_dynamic_quantize_matches_onnx_dynamic_quantize_linear() -> None:
    """uint8, asymmetric, per tensor is ONNX DynamicQuantizeLinear bit for bit."""
    x = rng.standard_normal((4, 9, 16)).astype(np.float32) * 3
    y, s, z = _one("DynamicQuantize", [x], {"to": ir.DType.UINT8, "symmetric": 0, "granularity": "tensor"}, 3)
    ry, rs, rz = onnx_dynamic_quantize(x)
    np.testing.assert_array_equal(y, ry)
    assert s == rs and z == rz and s.shape == () and z.dtype == np.uint8


@pytest.mark.parametrize("to", [ir.DType.INT8, ir.DType.UINT8])
@pytest.mark.parametrize("symmetric", [0, 1])
def test_dynamic_quantize_per_row(to: ir.DType, symmetric: int) -> None:
    x = rng.standard_normal((2, 5, 32)).astype(np.float32) * rng.uniform(0.1, 10, size=(2, 5, 1)).astype(np.float32)
    x[0, 1] = 0.0  # an all-zero row: the tiny scale, dequantizes to zeros
    x[1, 2] = np.abs(x[1, 2])  # a row without negatives
    y, s, z = _one("DynamicQuantize", [x], {"to": to, "symmetric": symmetric, "granularity": "row"}, 3)
    assert y.dtype == to.np and s.shape == (2, 5, 1) and z.shape == (2, 5, 1)
    deq = (y.astype(np.float32) - z) * s
    assert s[0, 1, 0] == np.finfo(np.float32).tiny and np.all(deq[0, 1] == 0) and np.all(y[0, 1] == z[0, 1])
    if symmetric:
        np.testing.assert_array_equal(z, 128 if to == ir.DType.UINT8 else 0)
        want = np.maximum(np.abs(x).max(-1) / 127, np.finfo(np.float32).tiny)
        np.testing.assert_allclose(s[..., 0], want, rtol=1e-6)
        lo = -127 if to == ir.DType.INT8 else 1
        assert (y.astype(np.int32) - (128 if to == ir.DType.UINT8 else 0)).min() >= lo - (
            128 if to == ir.DType.UINT8 else 0
        )
    # every element within half a step of its row's scale
    assert np.all(np.abs(deq - x) <= s / 2 + 1e-6 * np.abs(x))
    # the zero point dequantizes to exactly 0
    np.testing.assert_array_equal((z.astype(np.float32) - z) * s, 0)


def test_dynamic_quantize_rejects_bad_attributes() -> None:
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(VerifyError, match="granularity"):
        _one("DynamicQuantize", [x], {"granularity": "channel"})
    with pytest.raises(VerifyError, match="int8 or uint8"):
        _one("DynamicQuantize", [x], {"to": ir.DType.INT16})


# ---------------------------------------------------------------- QLinear
def _qlinear_inputs(per_row: bool, asym: bool) -> tuple[np.ndarray, ...]:
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    w = rng.standard_normal((16, 5)).astype(np.float32) * 0.2
    xq, xs, xz = dynamic_quantize(x, np.uint8 if asym else np.int8, not asym, "row" if per_row else "tensor")
    wq, ws = quantize_weight(w, per_channel=True)
    return x, w, xq, xs, xz, wq, ws


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
def test_qlinear_equals_dequantized_linear(per_row: bool, asym: bool, activation: str) -> None:
    """QLinear = Linear on the dequantized operands (float rounding apart): the integer path loses nothing more."""
    x, w, xq, xs, xz, wq, ws = _qlinear_inputs(per_row, asym)
    b = rng.standard_normal(5).astype(np.float32)
    (y,) = _one("QLinear", [xq, xs, xz, wq, ws, None, b], {"activation": activation})
    xd = (xq.astype(np.float64) - xz) * xs
    wd = wq.astype(np.float64) * ws
    (ref,) = _one("Linear", [xd.astype(np.float32), wd.astype(np.float32), b], {"activation": activation})
    assert y.dtype == np.float32 and y.shape == (2, 3, 5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # and close to the float layer: per-row int8 error is small
    (flt,) = _one("Linear", [x, w, b], {"activation": activation})
    assert np.abs(y - flt).max() < 0.05


def test_qlinear_requantizes_with_output_scale() -> None:
    _, _, xq, xs, xz, wq, ws = _qlinear_inputs(False, True)
    ys, yz = np.array(0.02, np.float32), np.array(10, np.uint8)
    (yq,) = _one("QLinear", [xq, xs, xz, wq, ws, None, None, ys, yz])
    (yf,) = _one("QLinear", [xq, xs, xz, wq, ws])
    assert yq.dtype == np.uint8
    np.testing.assert_array_equal(yq, np.clip(np.rint(yf / ys) + 10, 0, 255).astype(np.uint8))


def test_qlinear_checks_its_operands() -> None:
    _, _, xq, xs, xz, wq, ws = _qlinear_inputs(False, True)
    with pytest.raises(VerifyError, match="zero point"):
        _one("QLinear", [xq, xs, xz.astype(np.int8), wq, ws])
    with pytest.raises(VerifyError, match=r"scalar or \[N"):
        _one("QLinear", [xq, xs, xz, wq, np.ones(7, np.float32)])
    with pytest.raises(VerifyError, match="inner dimensions"):
        _one("QLinear", [xq, xs, xz, wq[:8], ws])


# -------------------------------------------------------------- QAttention
def test_qattention_equals_attention_on_dequantized_operands() -> None:
    bsz, seq, hidden, heads = 2, 6, 16, 4
    x = rng.standard_normal((bsz, seq, hidden)).astype(np.float32)
    w = rng.standard_normal((hidden, 3 * hidden)).astype(np.float32) / 4
    b = rng.standard_normal(3 * hidden).astype(np.float32)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]], np.int64)
    xq, xs, xz = dynamic_quantize(x, np.uint8, False, "row")
    wq, ws = quantize_weight(w, per_channel=True)
    (y,) = _one("QAttention", [xq, xs, xz, wq, ws, None, b, mask], {"num_heads": heads})
    xd = ((xq.astype(np.float32) - xz) * xs).astype(np.float32)
    wd = (wq.astype(np.float32) * ws).astype(np.float32)
    ref = attention(xd, wd, b, mask, heads, 0.0, -10000.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=2e-5)
    assert np.abs(y - attention(x, w, b, mask, heads, 0.0, -10000.0)).max() < 0.05


# ---------------------------------------------------------- weight scales
def test_per_channel_weight_scales() -> None:
    """One scale per output column = its max |w| / 127; the column's largest weight maps to +-127 exactly."""
    w = rng.standard_normal((32, 6)).astype(np.float32) * np.array([0.01, 0.1, 1, 10, 100, 0], np.float32)
    q, s = quantize_weight(w, per_channel=True)
    assert q.dtype == np.int8 and s.shape == (6,)
    np.testing.assert_allclose(s[:5], np.abs(w[:, :5]).max(axis=0) / 127, rtol=1e-7)
    assert s[5] == 1.0 and np.all(q[:, 5] == 0)  # an all-zero column
    for j in range(5):
        assert np.abs(q[:, j]).max() == 127
    assert np.all(np.abs(q.astype(np.float32) * s - w) <= s / 2 * (1 + 1e-6))
    qt, st = quantize_weight(w, per_channel=False)
    assert st.shape == () and st == np.float32(np.abs(w).max() / 127)
    # per tensor, the small columns lose almost everything: per channel keeps them
    err_pc = np.abs(q[:, 0] * s[0] - w[:, 0]).max()
    err_pt = np.abs(qt[:, 0] * st - w[:, 0]).max()
    assert err_pc <= s[0] / 2 * (1 + 1e-6) and err_pt > 50 * err_pc


def test_dequantized_matmul_per_row_scales_broadcast() -> None:
    x = rng.integers(0, 256, size=(3, 4, 8)).astype(np.uint8)
    w = rng.integers(-127, 128, size=(8, 2)).astype(np.int8)
    xs = rng.uniform(0.01, 1, size=(3, 4, 1)).astype(np.float32)
    xz = rng.integers(0, 256, size=(3, 4, 1)).astype(np.uint8)
    ws = np.array([0.5, 0.25], np.float32)
    y = dequantized_matmul(x, xs, xz, w, ws, None, None)
    ref = ((x.astype(np.float64) - xz) @ w.astype(np.float64)) * xs * ws
    np.testing.assert_allclose(y, ref, rtol=1e-6)
