"""int8 kernels: per-row DynamicQuantize (bit-exact) and the VNNI dense (exact int32 accumulation)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_check import build, needs_vnni, run

from accelopt.ir.ops.quantized import dynamic_quantize, int_matmul
from accelopt.ir.registry import get_op
from accelopt.targets.cpu.kernels import qdense as Q
from accelopt.targets.cpu.kernels import quantize as DQ


@pytest.mark.parametrize(
    ("m", "k", "to", "symmetric"),
    [
        (128, 768, "int8", True),
        (128, 768, "uint8", True),
        (128, 768, "uint8", False),
        (64, 3072, "int8", False),
        (7, 33, "int8", False),
        (9, 47, "uint8", True),
        (1, 1, "uint8", False),
    ],
)
def test_dynamic_quantize_is_bit_exact(m: int, k: int, to: str, symmetric: bool) -> None:
    rng = np.random.default_rng(m + k)
    x = (rng.standard_normal((m, k)) * 3 + 0.5).astype(np.float32)
    x[0] = 0.0  # the zero-range scale
    if m > 2:
        x[1] = np.abs(x[1])  # an all-positive row: the range still includes 0
        x[2, : min(k, 4)] = [2.5, -2.5, 0.5, 1.5][: min(k, 4)]  # ties of round-half-even
    func = DQ.quantize_primfunc(m, k, to, symmetric)
    q, scale, zp = run(build(func, DQ.schedule_quantize), [x], [((m, k), to), ((m,), "float32"), ((m,), to)])
    want_q, want_s, want_z = dynamic_quantize(x, np.dtype(to), symmetric, "row")
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_s.reshape(m))
    np.testing.assert_array_equal(zp, want_z.reshape(m))


def test_pack_weight_for_vnni() -> None:
    w = np.arange(8 * 50, dtype=np.int64).reshape(8, 50).astype(np.int8)
    wp, colsum = Q.pack_weight(w, nr=48)
    assert wp.shape == (2, 2, 48, 4) and colsum.shape == (96,)
    for k, n in ((0, 0), (5, 47), (7, 49)):
        assert wp[n // 48, k // 4, n % 48, k % 4] == w[k, n]
    np.testing.assert_array_equal(colsum[:50], w.astype(np.int64).sum(0))
    assert not colsum[50:].any()


def test_supported_names_the_reason() -> None:
    w = np.zeros((8, 4), np.int8)
    assert Q.supported("int8", 8, w, None) is None
    assert Q.supported("uint8", 8, w, np.zeros(4, np.int8)) is None
    assert "float32" in (Q.supported("float32", 8, w, None) or "")
    assert "uint8" in (Q.supported("int8", 8, w.astype(np.uint8), None) or "")
    assert "zero point" in (Q.supported("int8", 8, w, np.ones(4, np.int8)) or "")
    assert "multiple of 4" in (Q.supported("int8", 6, w[:6], None) or "")


def _qlinear_inputs(m: int, k: int, n: int, x_dtype: str, symmetric: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(m * 3 + k + n)
    x = rng.standard_normal((m, k), dtype=np.float32)
    xq, xs, xz = dynamic_quantize(x, np.dtype(x_dtype), symmetric, "row")
    return {
        "xq": xq,
        "xs": xs,
        "xz": xz,
        "w": rng.integers(-127, 128, (k, n)).astype(np.int8),
        "ws": (rng.random(n) * 0.01).astype(np.float32),
        "b": rng.standard_normal(n, dtype=np.float32),
    }


def _run_qdense(a: dict[str, np.ndarray], *, with_zp: bool, ones: bool = False, **kw: object) -> np.ndarray:
    m, k = a["xq"].shape
    n = a["w"].shape[1]
    wp, colsum = Q.pack_weight(a["w"])
    xs = np.ones(m, np.float32) if ones else a["xs"].reshape(m)
    ws = np.ones(n, np.float32) if ones else a["ws"]
    func = Q.qdense_primfunc(m, k, n, x_dtype=str(a["xq"].dtype), x_zp=with_zp, bias=not ones, **kw)  # type: ignore[arg-type]
    requant = kw.get("requant")
    out_dtype = requant.dtype if isinstance(requant, Q.Requant) else "float32"
    inputs = [a["xq"], xs] + ([a["xz"].reshape(m)] if with_zp else []) + [wp, colsum, ws] + ([] if ones else [a["b"]])
    (got,) = run(build(func, Q.schedule_qdense), inputs, [((m, n), out_dtype)])
    return got


@needs_vnni
@pytest.mark.parametrize(
    ("m", "k", "n", "x_dtype", "symmetric"),
    [(128, 768, 96, "int8", True), (128, 768, 96, "uint8", False), (7, 12, 50, "int8", False), (1, 4, 1, "uint8", True)],
)
def test_qdense_int32_accumulation_is_exact(m: int, k: int, n: int, x_dtype: str, symmetric: bool) -> None:
    """Unit scales, no bias: the output is the int32 accumulator itself (|acc| < 2**24, so exact in float32)."""
    a = _qlinear_inputs(m, k, n, x_dtype, symmetric)
    with_zp = not (symmetric and x_dtype == "int8")
    got = _run_qdense(a, with_zp=with_zp, ones=True)
    want = int_matmul(a["xq"], a["w"], a["xz"] if with_zp else None, None)
    assert np.abs(want).max() < 2**24
    np.testing.assert_array_equal(got, want.astype(np.float32))


@needs_vnni
@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
@pytest.mark.parametrize(("x_dtype", "symmetric"), [("int8", True), ("uint8", True), ("uint8", False)])
def test_qdense_matches_qlinear(activation: str, x_dtype: str, symmetric: bool) -> None:
    a = _qlinear_inputs(64, 256, 80, x_dtype, symmetric)
    with_zp = not (symmetric and x_dtype == "int8")
    got = _run_qdense(a, with_zp=with_zp, activation=activation)
    ins = [a["xq"], a["xs"], a["xz"] if with_zp else None, a["w"], a["ws"], None, a["b"]]
    (want,) = get_op("QLinear").kernel(ins, {"activation": activation}, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@needs_vnni
@pytest.mark.parametrize("out_dtype", ["int8", "uint8"])
def test_qdense_requantizes_like_qlinear(out_dtype: str) -> None:
    a = _qlinear_inputs(32, 128, 48, "int8", True)
    requant = Q.Requant(scale=0.05, zero_point=3, dtype=out_dtype)
    got = _run_qdense(a, with_zp=False, activation="gelu_tanh", requant=requant)
    ins = [a["xq"], a["xs"], None, a["w"], a["ws"], None, a["b"], np.float32(0.05), np.asarray(3, out_dtype)]
    (want,) = get_op("QLinear").kernel(ins, {"activation": "gelu_tanh"}, 1)
    assert got.dtype == want.dtype
    # the float epilogue may differ by an ulp from numpy's; a value on a rounding boundary then moves by one step
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (got != want).mean() < 0.001
