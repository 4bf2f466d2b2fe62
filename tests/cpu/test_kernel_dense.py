"""fp32 dense kernel and the vectorizable math of its epilogue, against numpy / the op registry."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from kernel_check import build, run
from scipy.special import erf, expit
from tvm import te

from accelopt.ir.ops.fused import apply_activation
from accelopt.targets.cpu.kernels import dense as D
from accelopt.targets.cpu.kernels import fastmath

ACTIVATIONS = ("none", "gelu", "gelu_tanh", "gelu_sigmoid", "relu")


def _elementwise(fns: dict[str, Callable[[object], object]], x: np.ndarray) -> dict[str, np.ndarray]:
    n = x.shape[0]
    xt = te.placeholder((n,), "float32", name="x")
    def compute(name: str, f: Callable[[object], object]) -> te.Tensor:
        return te.compute((n,), lambda i: f(xt[i]), name=name)

    outs = [compute(name, f) for name, f in fns.items()]
    func = te.create_prim_func([xt, *outs])

    def schedule(sch: object) -> None:
        for name in fns:
            D.vectorize_inner(sch, sch.get_sblock(name))  # type: ignore[attr-defined]

    got = run(build(func, schedule), [x], [((n,), "float32")] * len(fns))
    return dict(zip(fns, got))


def test_fastmath_matches_float64_references() -> None:
    x = np.concatenate([np.linspace(-12, 12, 4001), [-3.4e38, -1e4, -87.5, 0.0, 1e-30, 88.0]]).astype(np.float32)
    fns = {"exp": fastmath.exp, "erf": fastmath.erf, "tanh": fastmath.tanh, "sigmoid": fastmath.sigmoid}
    got = _elementwise(fns, x)
    x64 = x.astype(np.float64)
    inside = x > -87  # below, exp is clamped to about 1.2e-38 (checked last)
    e = np.exp(np.minimum(x64, 88.3))[inside]
    assert np.max(np.abs(got["exp"][inside] - e) / e) < 3e-7
    assert np.max(np.abs(got["erf"] - erf(x64))) < 5e-7
    assert np.max(np.abs(got["tanh"] - np.tanh(x64))) < 3e-7
    assert np.max(np.abs(got["sigmoid"] - expit(x64))) < 3e-7
    assert got["exp"][x < -88].max() < 2e-38  # what a softmax cannot tell from 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_match_the_registry(activation: str) -> None:
    x = np.linspace(-10, 10, 2001).astype(np.float32)
    got = _elementwise({"act": lambda v: fastmath.activation(v, activation)}, x)["act"]
    want = apply_activation(x.astype(np.float64), activation)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_unknown_activation_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fastmath.activation(te.var("x", "float32"), "swish")


def test_pack_weight_layout() -> None:
    w = np.arange(5 * 50, dtype=np.float32).reshape(5, 50)
    wp = D.pack_weight(w, nr=48)
    assert wp.shape == (2, 5, 48)
    for n in (0, 47, 48, 49):
        np.testing.assert_array_equal(wp[n // 48, :, n % 48], w[:, n])
    assert not wp[1, :, 2:].any()  # zero padding past N


@pytest.mark.parametrize(("m", "expected"), [(128, 8), (1024, 8), (36, 6), (20, 4), (14, 2), (7, 1), (1, 1)])
def test_choose_rows(m: int, expected: int) -> None:
    assert D.choose_rows(m) == expected


def _dense_case(m: int, k: int, n: int, activation: str, bias: bool, tile: D.DenseTile | None = None) -> float:
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)  # BERT-scale outputs (about unit variance)
    b = rng.standard_normal(n, dtype=np.float32)
    func = D.dense_primfunc(m, k, n, bias=bias, activation=activation)
    lib = build(func, lambda sch: D.schedule_dense(sch, tile))
    (got,) = run(lib, [x, D.pack_weight(w)] + ([b] if bias else []), [((m, n), "float32")])
    want = apply_activation(x.astype(np.float64) @ w + (b if bias else 0), activation)
    return float(np.max(np.abs(got - want)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_bert_shape_with_epilogue(activation: str) -> None:
    assert _dense_case(128, 768, 96, activation, bias=True) <= 1e-4


@pytest.mark.parametrize(
    ("m", "k", "n", "bias"),
    [(127, 100, 50, True), (1, 384, 384, False), (5, 7, 3, True), (1, 1, 1, False), (8, 3072, 48, True)],
)
def test_dense_odd_shapes(m: int, k: int, n: int, bias: bool) -> None:
    assert _dense_case(m, k, n, "gelu", bias) <= 1e-4


def test_dense_explicit_tile_with_a_row_tail_and_cache_blocks() -> None:
    assert _dense_case(130, 64, 100, "relu", True, D.DenseTile(mr=8, nv=3, mc=0)) <= 1e-4
    assert _dense_case(128, 64, 96, "none", True, D.DenseTile(mr=4, nv=3, mc=32)) <= 1e-4


def test_dense_tile_must_match_the_packing() -> None:
    func = D.dense_primfunc(8, 16, 48, bias=False, activation="none")
    with pytest.raises(ValueError, match="panel width 48"):
        build(func, lambda sch: D.schedule_dense(sch, D.DenseTile(mr=8, nv=2)))


def test_dense_primfunc_is_tagged_for_the_dispatcher() -> None:
    func = D.dense_primfunc(8, 16, 48, bias=True, activation="gelu")
    assert str(func.attrs[D.KERNEL_ATTR]) == D.DENSE_FP32
