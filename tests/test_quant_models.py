"""int8 / fp16 / bf16 on real exports: a tiny BERT end to end (onnx target, onnxruntime), MiniLM targets (slow).

The MiniLM tests check the issue's targets on all-MiniLM-L6-v2 with its real weights, judged on the built-in
held-out sentences (the passes calibrate on the other, disjoint set): worst mean-pooled embedding cosine and
largest pairwise-similarity change of ``last_hidden_state`` against the original model in onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accelopt as ao
import modelzoo as mz
from accelopt.frontends.onnx import load_onnx
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.samples import default_samples
from accelopt.targets.onnx_target import OnnxArtifact
from accelopt.validation import ValidationConfig, Validator

FAST = {"seq_len": 16, "num_samples": 8}


@pytest.fixture(scope="module")
def tiny_bert() -> Path:
    return mz.export_onnx("bert", exporter="dynamo", opset=17)


def test_tiny_bert_int8_for_onnxruntime(tiny_bert: Path, tmp_path: Path) -> None:
    res = ao.optimize(str(tiny_bert), target="onnx", passes="cleanup,fuse,int8", **FAST)
    assert res.report.status == "ok", res.report.notes
    ops = res.graph.op_counts()
    assert ops["QAttention"] == 2 and ops["QLinear"] >= 6 and "Attention" not in ops
    quant = next(r for r in res.records if r.name == "quantize-int8")
    assert quant.modified and not quant.rolled_back
    wb = quant.stats["linear_weight_bytes"]
    assert wb["float32"] == 4 * wb["int8"]
    assert res.report.artifact_check is not None and res.report.artifact_check.ok
    res.artifact.save(tmp_path)
    again = OnnxArtifact.load(tmp_path)
    feeds = mz.family_inputs("bert", 2, 16, seed=3)
    a, b = res.artifact.run(feeds), again.run(feeds)
    np.testing.assert_array_equal(a["last_hidden_state"], b["last_hidden_state"])


@pytest.mark.parametrize("spec", ["int8{mode=static,calibration=percentile}", "int8{smoothquant=0.5}"])
def test_tiny_bert_int8_options_pass_validation(tiny_bert: Path, spec: str) -> None:
    res = ao.optimize(str(tiny_bert), target="onnx", passes=f"cleanup,fuse,{spec}", **FAST)
    assert res.report.status == "ok"
    assert all(not r.rolled_back for r in res.records)
    assert res.report.pipeline.endswith(spec)


@pytest.mark.parametrize("spec, cosine", [("fp16", 0.9999), ("bf16", 0.999)])
def test_tiny_bert_low_precision(tiny_bert: Path, spec: str, cosine: float) -> None:
    model = load_onnx(tiny_bert)
    validator = Validator(model, ValidationConfig(num_samples=8, seq_len=16))
    cal = default_samples(model.graph, None, n=8, seq_len=16, purpose="calibration").as_list()
    ctx = PassContext(validator=validator, calibration=cal)
    graph, records = PassManager(build_pipeline(f"cleanup,fuse,{spec}"), ctx).run(model.graph)
    rec = records[-1]
    assert rec.modified and not rec.rolled_back
    assert rec.accuracy is not None and rec.accuracy.vs_reference["cosine_min"] >= cosine
    low = "float16" if spec == "fp16" else "bfloat16"
    assert rec.param_bytes_after[low] > rec.param_bytes_after["float32"] / 4


# ------------------------------------------------------------------ MiniLM
def _pooled(res: ao.api.Result) -> dict[str, float]:
    assert res.report.final is not None
    return res.report.final.per_output["last_hidden_state"]


@pytest.mark.slow
def test_minilm_int8_defaults_keep_the_embeddings() -> None:
    """fuse,int8 with default settings for onnxruntime: pooled cosine >= 0.99, similarities move <= 0.02."""
    res = ao.optimize(str(mz.minilm_onnx()), target="onnx", passes="fuse,int8")
    assert res.report.status == "ok"
    m = _pooled(res)
    assert m["pooled_cosine_min"] >= 0.99 and m["similarity_max_abs"] <= 0.02, m
    assert "held-out" in res.report.validation["inputs"]
    q = next(r for r in res.records if r.name == "quantize-int8")
    assert q.stats["linear_weight_bytes"]["float32"] == 4 * q.stats["linear_weight_bytes"]["int8"]
    assert res.report.artifact_check is not None
    a = res.report.artifact_check.per_output["last_hidden_state"]
    assert a["pooled_cosine_min"] >= 0.99 and a["similarity_max_abs"] <= 0.02, a


@pytest.mark.slow
def test_minilm_int8_fallback_meets_a_tighter_tolerance() -> None:
    """Symmetric activations miss cosine 0.995 when every layer is int8: the fallback keeps the worst float."""
    res = ao.optimize(
        str(mz.minilm_onnx()), target="onnx", passes="fuse,int8{activations=symmetric}", tolerance="cosine=0.995"
    )
    q = next(r for r in res.records if r.name == "quantize-int8")
    assert q.modified and not q.rolled_back
    floats = q.stats["float_layers"]
    assert floats and all(f["node"] in {n.name for n in res.graph.nodes} for f in floats)
    assert any(n.startswith("kept float: ") for n in q.notes)
    assert res.report.status == "ok"
    assert res.report.final is not None and res.report.final.vs_reference["cosine_min"] >= 0.995


@pytest.mark.slow
@pytest.mark.parametrize("spec, cosine", [("bf16", 0.999), ("fp16", 0.9995)])
def test_minilm_low_precision_targets(spec: str, cosine: float) -> None:
    model = load_onnx(mz.minilm_onnx())
    validator = Validator(model, ValidationConfig())
    cal = default_samples(model.graph, None, n=16, seq_len=128, purpose="calibration").as_list()
    graph, records = PassManager(build_pipeline(f"fuse,{spec}"), PassContext(validator=validator, calibration=cal)).run(
        model.graph
    )
    rec = records[-1]
    assert rec.modified and not rec.rolled_back
    m = rec.accuracy.per_output["last_hidden_state"]  # type: ignore[union-attr]
    assert m["pooled_cosine_min"] >= cosine and m["cosine_min"] >= cosine, m
