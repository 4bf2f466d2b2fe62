"""Tiny BERT-family ONNX exports through the frontend and the TPU target, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import modelzoo
from accelopt.frontends.onnx import load_onnx
from accelopt.targets.tpu import TpuTarget
from accelopt.targets.tpu.export import inspect_stablehlo


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "albert"])
@pytest.mark.parametrize("exporter,opset", [("dynamo", 17), ("legacy", 14)])
def test_tiny_exports_match_onnxruntime(family, exporter, opset):
    model = load_onnx(modelzoo.export_onnx(family, exporter=exporter, opset=opset))
    feed = modelzoo.family_inputs(family, 3, 16, seed=2)
    ref = model.reference(feed)
    fp32 = TpuTarget(seq_lens=(16,), platforms=("cpu",)).lower(model.graph).run(feed)  # auto: fp32 graph
    bf16_art = TpuTarget(seq_lens=(16,), precision="bf16").lower(model.graph)
    bf16 = bf16_art.run(feed)
    for name, want in ref.items():
        np.testing.assert_allclose(fp32[name], want, rtol=1e-4, atol=1e-4, err_msg=name)
        assert _cos_rows(bf16[name], want).min() >= 0.999, name
    assert bf16_art.buckets[0]["stablehlo_check"] == []
    dots = inspect_stablehlo(bf16_art.stablehlo()).dots
    assert dots and all((d.lhs.dtype, d.rhs.dtype, d.out.dtype) == ("bf16", "bf16", "f32") for d in dots)
