"""Calibration methods on known distributions, quantization parameters, and observation through the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

import accelopt.ir as ir
from accelopt.errors import PassError
from accelopt.passes.quant_calibration import (
    Observation,
    choose_range,
    entropy_threshold,
    observe,
    percentile_threshold,
    qparams,
    sample_batches,
)

rng = np.random.default_rng(0)


def _obs(x: np.ndarray, *, hist: bool = True) -> Observation:
    o = Observation("x")
    half = x.size // 2
    o.update(x[:half])  # two batches, as the calibration loop sees them
    o.update(x[half:])
    if hist:
        o.add_to_histogram(x[:half], 2048)
        o.add_to_histogram(x[half:], 2048)
    return o


def test_minmax_is_the_observed_range_including_zero() -> None:
    x = rng.uniform(0.5, 3.0, 10_000).astype(np.float32)
    lo, hi = choose_range(_obs(x, hist=False), "minmax")
    assert lo == 0.0 and hi == pytest.approx(float(x.max()))
    y = rng.uniform(-2.0, 1.0, 10_000).astype(np.float32)
    assert choose_range(_obs(y, hist=False), "minmax") == (float(y.min()), float(y.max()))


def test_percentile_on_a_gaussian_matches_its_quantile() -> None:
    x = rng.standard_normal(2_000_000).astype(np.float32)
    t = percentile_threshold(_obs(x).hist, float(np.abs(x).max()), 99.99)  # type: ignore[arg-type]
    want = norm.ppf(1 - 0.0001 / 2)  # |x| quantile of a standard normal: 3.8906
    assert t == pytest.approx(want, abs=0.02)
    assert t == pytest.approx(float(np.percentile(np.abs(x), 99.99)), abs=0.01)


def test_percentile_on_a_uniform_distribution() -> None:
    x = rng.uniform(-1, 1, 1_000_000).astype(np.float32)
    assert choose_range(_obs(x), "percentile", 90.0) == pytest.approx((-0.9, 0.9), abs=2e-3)


def test_outliers_set_minmax_but_not_percentile_or_entropy() -> None:
    x = rng.standard_normal(500_000).astype(np.float32)
    x[:3] = [60.0, -45.0, 52.0]
    o = _obs(x)
    assert choose_range(o, "minmax") == (-45.0, 60.0)
    lo, hi = choose_range(o, "percentile")
    assert -4.3 < lo < -3.5 and 3.5 < hi < 4.3
    elo, ehi = choose_range(o, "entropy")
    assert -8.0 < elo < -2.5 and 2.5 < ehi < 8.0  # the outliers are clipped


def test_entropy_keeps_a_uniform_range_and_clips_a_long_tail() -> None:
    """Uniform mass has no tail to trade: KL keeps (almost) all of it; a Laplace tail gets clipped."""
    u = np.abs(rng.uniform(-1, 1, 1_000_000)).astype(np.float32)
    hist, _ = np.histogram(u, bins=2048, range=(0, float(u.max())))
    assert entropy_threshold(hist, float(u.max())) > 0.9
    lap = np.abs(rng.laplace(0, 1, 1_000_000)).astype(np.float32)
    top = float(lap.max())
    hist, _ = np.histogram(lap, bins=2048, range=(0, top))
    t = entropy_threshold(hist, top)
    assert 3.0 < t < 0.8 * top


def test_entropy_of_an_empty_histogram_and_unknown_methods() -> None:
    assert entropy_threshold(np.zeros(2048, np.int64), 1.0) == 0.0
    with pytest.raises(PassError, match="unknown calibration method"):
        choose_range(_obs(np.ones(10, np.float32)), "mse")
    with pytest.raises(PassError, match="needs a histogram"):
        choose_range(_obs(np.ones(10, np.float32), hist=False), "entropy")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qparams_asymmetric_represent_zero_and_the_ends(dtype: type) -> None:
    scale, zp = qparams(-1.0, 3.0, np.dtype(dtype), symmetric=False)
    assert scale == np.float32(4.0 / 255) and zp.dtype == dtype
    qmin = 0 if dtype == np.uint8 else -128
    assert int(zp) == qmin + round(1.0 / float(scale))
    for v in (-1.0, 0.0, 3.0):
        q = np.clip(np.rint(v / scale) + zp, qmin, qmin + 255)
        assert abs((q - zp) * scale - v) <= scale / 2 + 1e-7
    assert (np.rint(0.0 / scale) + zp - zp) * scale == 0.0


def test_qparams_symmetric_and_degenerate() -> None:
    s, z = qparams(-2.0, 1.0, np.dtype(np.int8), symmetric=True)
    assert s == np.float32(2.0 / 127) and z == 0
    s, z = qparams(-2.0, 1.0, np.dtype(np.uint8), symmetric=True)
    assert z == 128
    s, z = qparams(0.0, 0.0, np.dtype(np.uint8), symmetric=False)
    assert s == 1.0 and z == 0


def test_observe_runs_the_graph_on_batches() -> None:
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 4)))
    two = g.add_initializer("two", np.array([1, 2, 3, -4], np.float32))
    y = g.add_node("Mul", [x, two], name="mul").output
    g.set_outputs([g.add_node("Relu", [y], name="relu").output])
    data = rng.standard_normal((10, 4)).astype(np.float32)
    batches = sample_batches([{"x": data[:6]}, {"x": data[6:]}], 0)
    assert [b["x"].shape[0] for b in batches] == [6, 4]
    obs = observe(g, ["mul"], batches, histogram=True)["mul"]
    ref = data * np.array([1, 2, 3, -4], np.float32)
    assert obs.min == pytest.approx(float(ref.min())) and obs.max == pytest.approx(float(ref.max()))
    np.testing.assert_allclose(obs.channel_absmax, np.abs(ref).max(axis=0), rtol=1e-6)
    assert obs.hist is not None and obs.hist.sum() == ref.size
    assert [b["x"].shape[0] for b in sample_batches([{"x": data}], 3)] == [3]
