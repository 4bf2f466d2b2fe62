"""Fused attention kernel against the interpreter's Attention and ScaledDotProductAttention references."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_check import build, run

from accelopt.ir.ops.attention import attention_from_qkv
from accelopt.ir.ops.sdpa import sdpa_reference
from accelopt.targets.cpu.kernels import attention as A


def _attention(b: int, s: int, heads: int, d: int, mask: np.ndarray | None, mfv: float = -10000.0) -> float:
    rng = np.random.default_rng(b * 100 + s)
    qkv = rng.standard_normal((b, s, 3 * heads * d), dtype=np.float32)
    scale = 1.0 / np.sqrt(d)
    func = A.attention_primfunc(A.AttentionShape(b, heads, s, s, d, d), scale, None if mask is None else mfv)
    inputs = [qkv.reshape(b, s, 3, heads, d)] + ([mask] if mask is not None else [])
    (got,) = run(build(func, A.schedule_attention), inputs, [((b, s, heads, d), "float32")])
    want = attention_from_qkv(qkv, mask, heads, scale, mfv)
    return float(np.max(np.abs(got.reshape(b, s, heads * d) - want)))


@pytest.mark.parametrize(("b", "s", "heads", "d"), [(1, 128, 12, 64), (2, 128, 12, 32), (8, 16, 2, 64)])
def test_attention_bert_shapes_with_padding(b: int, s: int, heads: int, d: int) -> None:
    mask = np.ones((b, s), np.int64)
    mask[0, s // 2 :] = 0
    assert _attention(b, s, heads, d, mask) <= 1e-5


@pytest.mark.parametrize(("b", "s", "heads", "d"), [(2, 7, 3, 5), (1, 1, 1, 1), (3, 33, 2, 17)])
def test_attention_odd_shapes(b: int, s: int, heads: int, d: int) -> None:
    mask = np.ones((b, s), np.int64)
    mask[-1, -1] = 0
    assert _attention(b, s, heads, d, mask) <= 1e-5
    assert _attention(b, s, heads, d, None) <= 1e-5


def test_attention_fully_padded_row_follows_onnxruntime() -> None:
    """Every key padded: the -FLT_MAX filter value is added to every score, so the softmax is uniform."""
    mask = np.ones((2, 16), np.int64)
    mask[1] = 0
    assert _attention(2, 16, 2, 8, mask, mfv=-3.4028234663852886e38) <= 1e-5


def _sdpa(shape: A.AttentionShape, mask: np.ndarray | None, causal: bool) -> np.ndarray:
    rng = np.random.default_rng(shape.queries * 10 + shape.keys)
    b, h, lq, sk, e, ev = shape.batch, shape.heads, shape.queries, shape.keys, shape.head_dim, shape.value_dim
    q = rng.standard_normal((b, h, lq, e), dtype=np.float32)
    k = rng.standard_normal((b, h, sk, e), dtype=np.float32)
    v = rng.standard_normal((b, h, sk, ev), dtype=np.float32)
    spec = None if mask is None else (str(mask.dtype), tuple(mask.shape))
    func = A.sdpa_primfunc(shape, 1.0 / np.sqrt(e), mask=spec, causal=causal)
    inputs = [q, k, v] + ([mask] if mask is not None else [])
    (got,) = run(build(func, A.schedule_attention), inputs, [((b, h, lq, ev), "float32")])
    want = sdpa_reference(q, k, v, mask, is_causal=causal)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    return got


def test_sdpa_bool_mask_broadcast_and_fully_masked_row_gives_zeros() -> None:
    shape = A.AttentionShape(2, 3, 7, 9, 5, 6)
    mask = np.random.default_rng(1).random((2, 1, 7, 9)) > 0.3
    mask[0, 0, 0] = False
    got = _sdpa(shape, mask, causal=False)
    assert not got[0, :, 0].any()


def test_sdpa_float_mask_and_causal() -> None:
    mask = np.random.default_rng(2).standard_normal((8, 8)).astype(np.float32)
    _sdpa(A.AttentionShape(1, 2, 8, 8, 16, 16), mask, causal=True)
    _sdpa(A.AttentionShape(2, 2, 5, 5, 4, 4), None, causal=True)
    _sdpa(A.AttentionShape(1, 12, 128, 128, 64, 64), None, causal=False)


def test_broadcast_reader_refuses_a_higher_rank() -> None:
    from tvm import te

    with pytest.raises(ValueError, match="more than 4 dims"):
        A.broadcast_reader(te.placeholder((1, 1, 1, 1, 2), "float32"), 4)


def test_attention_layout_is_checked() -> None:
    with pytest.raises(ValueError, match="bshd or bhsd"):
        A.attention_compute(
            A.AttentionShape(1, 1, 1, 1, 1, 1), lambda *i: 0.0, lambda *i: 0.0, lambda *i: 0.0, 1.0, layout="sbhd"
        )
