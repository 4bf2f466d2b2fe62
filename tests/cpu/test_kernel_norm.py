"""LayerNorm / SkipLayerNorm kernel against the registry's reference."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_check import build, run

from accelopt.ir.ops.fused import layer_norm
from accelopt.targets.cpu.kernels import norm as L


@pytest.mark.parametrize(
    ("m", "n", "skip", "bias", "beta", "want_sum"),
    [
        (128, 768, False, False, True, False),
        (128, 768, True, True, True, True),
        (128, 384, True, False, True, False),
        (7, 33, True, True, False, False),
        (1, 5, True, False, True, True),
        (1, 1, False, False, False, False),
    ],
)
def test_layer_norm(m: int, n: int, skip: bool, bias: bool, beta: bool, want_sum: bool) -> None:
    rng = np.random.default_rng(m + n)
    x = (rng.standard_normal((m, n)) * 3 + 1).astype(np.float32)
    sk = rng.standard_normal((m, n), dtype=np.float32)
    g, b, bi = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    func = L.layer_norm_primfunc(m, n, 1e-12, beta=beta, skip=skip, bias=bias, want_sum=want_sum)
    inputs = [x] + ([sk] if skip else []) + [g] + ([b] if beta else []) + ([bi] if bias else [])
    outs = [((m, n), "float32")] * (2 if want_sum else 1)
    got = run(build(func, L.schedule_norm), inputs, outs)
    s = (x + (sk if skip else 0) + (bi if bias else 0)).astype(np.float32)
    np.testing.assert_allclose(got[0], layer_norm(s, g, b if beta else None, 1e-12), rtol=0, atol=1e-5)
    if want_sum:
        np.testing.assert_array_equal(got[1], s)


def test_layer_norm_constant_row_is_beta() -> None:
    x = np.full((2, 16), 3.0, np.float32)
    g, b = np.ones(16, np.float32), np.arange(16, dtype=np.float32)
    (got,) = run(build(L.layer_norm_primfunc(2, 16, 1e-5), L.schedule_norm), [x, g, b], [((2, 16), "float32")])
    np.testing.assert_array_equal(got, np.broadcast_to(b, (2, 16)))
