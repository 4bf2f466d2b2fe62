"""Reference kernels of Attention's new inputs (bias, causal), MultiHeadAttention and RMSNorm against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelopt.errors import VerifyError
from modelzoo import run_one_op as _one

rng = np.random.default_rng(7)
BSZ, SEQ, HID, HEADS = 2, 5, 16, 4
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)


def _heads(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)


def _sdpa(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, bias: np.ndarray | None,
          causal: bool, scale: float | None) -> np.ndarray:
    """torch's SDPA with the padding mask, the bias and the causal mask as one additive float mask."""
    add = torch.zeros((q.shape[0], 1, q.shape[1], k.shape[1]))
    if bias is not None:
        add = add + torch.from_numpy(bias)
    if mask is not None:
        add = add.masked_fill(~torch.from_numpy(mask).bool()[:, None, None, :], -1e9)
    if causal:
        add = add.masked_fill(torch.ones(q.shape[1], k.shape[1]).triu(1).bool(), -1e9)
    ref = F.scaled_dot_product_attention(_heads(torch.from_numpy(q)), _heads(torch.from_numpy(k)),
                                         _heads(torch.from_numpy(v)), attn_mask=add, scale=scale)
    return ref.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1).numpy()


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("bias_shape", [None, (1, HEADS, SEQ, SEQ), (BSZ, 1, SEQ, SEQ), (SEQ, SEQ)])
def test_attention_bias_and_causal_match_torch(causal: int, bias_shape: tuple[int, ...] | None) -> None:
    x = rng.standard_normal((BSZ, SEQ, HID)).astype(np.float32)
    w = (rng.standard_normal((HID, 3 * HID)) / 4).astype(np.float32)
    b = rng.standard_normal(3 * HID).astype(np.float32)
    bias = None if bias_shape is None else rng.standard_normal(bias_shape).astype(np.float32)
    attrs = {"num_heads": HEADS, "unidirectional": causal, "scale": 1.0}
    (y,) = _one("Attention", [x, w, b, MASK, bias], attrs)
    qkv = x @ w + b
    ref = _sdpa(qkv[..., :HID], qkv[..., HID : 2 * HID], qkv[..., 2 * HID :], MASK, bias, bool(causal), 1.0)
    np.testing.assert_allclose(y, ref, atol=3e-6, rtol=0)


@pytest.mark.parametrize("causal", [0, 1])
def test_multi_head_attention_matches_torch(causal: int) -> None:
    q, k = (rng.standard_normal((BSZ, SEQ, HID)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((BSZ, SEQ, 2 * HID)).astype(np.float32)  # the value may be wider
    bias = rng.standard_normal((BSZ, HEADS, SEQ, SEQ)).astype(np.float32)
    (y,) = _one("MultiHeadAttention", [q, k, v, MASK, bias], {"num_heads": HEADS, "unidirectional": causal})
    assert y.shape == (BSZ, SEQ, 2 * HID)
    np.testing.assert_allclose(y, _sdpa(q, k, v, MASK, bias, bool(causal), None), atol=3e-6, rtol=0)


def test_multi_head_attention_cross_lengths_without_mask() -> None:
    q = rng.standard_normal((BSZ, 3, HID)).astype(np.float32)
    k, v = (rng.standard_normal((BSZ, 7, HID)).astype(np.float32) for _ in range(2))
    (y,) = _one("MultiHeadAttention", [q, k, v], {"num_heads": HEADS, "scale": 0.5})
    np.testing.assert_allclose(y, _sdpa(q, k, v, None, None, False, 0.5), atol=3e-6, rtol=0)


@pytest.mark.parametrize(
    "op, inputs, attrs, match",
    [
        ("MultiHeadAttention", [(2, 5, 16), (2, 5, 12), (2, 5, 16)], {"num_heads": 4}, "differ in hidden size"),
        ("MultiHeadAttention", [(2, 5, 16), (2, 5, 16), (2, 5, 18)], {"num_heads": 4}, "not divisible by num_heads"),
        ("MultiHeadAttention", [(2, 5, 16), (2, 7, 16), (2, 7, 16)], {"num_heads": 4, "unidirectional": 1},
         "as many queries as keys"),
        ("Attention", [(2, 5, 16), (16, 48), (48,), None, (2, 1, 2, 5, 5)], {"num_heads": 4},
         "must broadcast to \\[batch, heads, queries, keys\\]"),
        ("Attention", [(2, 5, 16), (16, 48), (48,), None, (2, 4, 3, 5)], {"num_heads": 4},
         "does not broadcast to"),
        ("Attention", [(2, 5, 16), (16, 48)], {"num_heads": 4, "unidirectional": 2}, "must be 0 or 1"),
    ],
)
def test_attention_ops_reject_bad_inputs(op: str, inputs: list, attrs: dict, match: str) -> None:
    arrays = [None if s is None else np.zeros(s, np.float32) for s in inputs]
    with pytest.raises(VerifyError, match=match):
        _one(op, arrays, attrs)


@pytest.mark.parametrize("axis", [-1, -2])
def test_rmsnorm_matches_torch(axis: int) -> None:
    x = (rng.standard_normal((2, 3, 8)) * 3).astype(np.float32)
    shape = tuple(x.shape[axis:])
    w = rng.standard_normal(shape).astype(np.float32)
    (y,) = _one("RMSNorm", [x, w], {"axis": axis, "epsilon": 1e-6})
    ref = F.rms_norm(torch.from_numpy(x), shape, torch.from_numpy(w), eps=1e-6).numpy()
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)


def test_rmsnorm_half_input_computes_in_float32() -> None:
    x = (rng.standard_normal((4, 8)) * 100).astype(np.float16)
    (y,) = _one("RMSNorm", [x, np.ones(8, np.float16)], {"epsilon": 1e-5})
    assert y.dtype == np.float16
    xf = x.astype(np.float32)
    np.testing.assert_allclose(y.astype(np.float32), xf / np.sqrt((xf * xf).mean(-1, keepdims=True) + 1e-5),
                               atol=2e-3, rtol=0)
