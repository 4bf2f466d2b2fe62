"""Reference kernels of the fused ops against torch's implementations (seeded, tight tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import accelopt.ir as ir
from accelopt.errors import VerifyError
from modelzoo import run_one_op as _one

F32 = ir.DType.FLOAT32
rng = np.random.default_rng(0)


def test_layernorm_matches_torch() -> None:
    x = rng.standard_normal((2, 5, 16)).astype(np.float32) * 3 + 1
    gamma = rng.standard_normal(16).astype(np.float32)
    beta = rng.standard_normal(16).astype(np.float32)
    (y,) = _one("LayerNorm", [x, gamma, beta], {"epsilon": 1e-12})
    ref = F.layer_norm(torch.from_numpy(x), (16,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-12).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)


def test_skiplayernorm_is_layernorm_of_sum_and_returns_sum() -> None:
    x, skip = (rng.standard_normal((2, 3, 8)).astype(np.float32) for _ in range(2))
    gamma, beta, bias = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    y, s = _one("SkipLayerNorm", [x, skip, gamma, beta, bias], {"epsilon": 1e-5}, n_out=2)
    ref_s = x + skip + bias
    np.testing.assert_array_equal(s, ref_s)
    ref = F.layer_norm(torch.from_numpy(ref_s), (8,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-5).numpy()
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    "activation, fn",
    [
        ("none", lambda t: t),
        ("gelu", lambda t: F.gelu(t)),
        ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh")),
        ("gelu_sigmoid", lambda t: t * torch.sigmoid(1.702 * t)),
        ("relu", F.relu),
    ],
)
def test_linear_activations_match_torch(activation: str, fn) -> None:
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    (y,) = _one("Linear", [x, w, b], {"activation": activation})
    ref = fn(torch.from_numpy(x) @ torch.from_numpy(w) + torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(y, ref, atol=3e-6, rtol=0)


def test_linear_rejects_unknown_activation() -> None:
    with pytest.raises(VerifyError, match="unknown activation 'swish'"):
        _one("Linear", [np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)], {"activation": "swish"})


def test_quickgelu() -> None:
    x = rng.standard_normal((3, 7)).astype(np.float32) * 4
    (y,) = _one("QuickGelu", [x])
    np.testing.assert_allclose(y, x / (1 + np.exp(-1.702 * x)), atol=2e-6, rtol=0)


@pytest.mark.parametrize("scale", [0.0, 0.3])
def test_attention_matches_torch_sdpa(scale: float) -> None:
    bsz, seq, hidden, heads = 2, 5, 16, 4
    x = rng.standard_normal((bsz, seq, hidden)).astype(np.float32)
    w = rng.standard_normal((hidden, 3 * hidden)).astype(np.float32) / 4
    b = rng.standard_normal(3 * hidden).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)
    (y,) = _one("Attention", [x, w, b, mask], {"num_heads": heads, "scale": scale})
    qkv = torch.from_numpy(x) @ torch.from_numpy(w) + torch.from_numpy(b)
    q, k, v = (t.reshape(bsz, seq, heads, hidden // heads).transpose(1, 2) for t in qkv.split(hidden, -1))
    keep = torch.from_numpy(mask).bool()[:, None, None, :]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale or None)
    ref = ref.transpose(1, 2).reshape(bsz, seq, hidden).numpy()
    assert y.shape == (bsz, seq, hidden)
    np.testing.assert_allclose(y, ref, atol=3e-6, rtol=0)


def test_attention_rejects_bad_heads() -> None:
    x = np.zeros((1, 2, 6), np.float32)
    with pytest.raises(VerifyError, match="divisible"):
        _one("Attention", [x, np.zeros((6, 18), np.float32), np.zeros(18, np.float32)], {"num_heads": 4})


@pytest.mark.parametrize("with_types", [True, False])
def test_embed_layernorm(with_types: bool) -> None:
    vocab, maxpos, hidden = 20, 10, 8
    ids = rng.integers(0, vocab, (2, 6)).astype(np.int64)
    types = rng.integers(0, 2, (2, 6)).astype(np.int64) if with_types else None
    word = rng.standard_normal((vocab, hidden)).astype(np.float32)
    pos = rng.standard_normal((maxpos, hidden)).astype(np.float32)
    temb = rng.standard_normal((2, hidden)).astype(np.float32) if with_types else None
    gamma, beta = (rng.standard_normal(hidden).astype(np.float32) for _ in range(2))
    y, s = _one("EmbedLayerNorm", [ids, types, word, pos, temb, gamma, beta], {"epsilon": 1e-12}, n_out=2)
    ref_s = word[ids] + pos[np.arange(6)]
    if with_types:
        ref_s = ref_s + temb[types]
    np.testing.assert_allclose(s, ref_s, atol=1e-6, rtol=0)
    ref = F.layer_norm(torch.from_numpy(ref_s), (hidden,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-12)
    np.testing.assert_allclose(y, ref.numpy(), atol=2e-6, rtol=0)
    # explicit position ids (RoBERTa's offset scheme)
    pids = np.broadcast_to(np.arange(2, 8), (2, 6)).astype(np.int64)
    (y2,) = _one("EmbedLayerNorm", [ids, types, word, pos, temb, gamma, beta, pids], {"epsilon": 1e-12})
    s2 = word[ids] + pos[pids] + (temb[types] if with_types else 0)
    ref2 = F.layer_norm(torch.from_numpy(s2.astype(np.float32)), (hidden,), torch.from_numpy(gamma), torch.from_numpy(beta), 1e-12)
    np.testing.assert_allclose(y2, ref2.numpy(), atol=2e-6, rtol=0)
