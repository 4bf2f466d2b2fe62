"""Full-size checks of the TPU target (slow): BERT-base through the CLI (int8, bf16), export time and CPU latency;
all-MiniLM-L6-v2 (real weights) through the written artifact: bf16 and int8 accuracy on held-out sentences."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import modelzoo
from accelopt.cli.main import main
from accelopt.frontends.onnx import load_onnx
from accelopt.targets.tpu import TpuArtifact, TpuTarget
from accelopt.targets.tpu.export import inspect_stablehlo
from accelopt.validation import compare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bert_base():
    path = modelzoo.export_onnx("bert", exporter="dynamo", opset=17, size="full")
    return path, load_onnx(path)


def test_bert_base_bf16_export_passes_the_stablehlo_checks(bert_base):
    """Lowering + export time is measured in benchmarks/bench_tpu.py (goal <= 60 s), not asserted here."""
    _, model = bert_base
    art = TpuTarget(seq_lens=(128,), precision="bf16").lower(model.graph)
    assert art.buckets[0]["stablehlo_check"] == []
    dots = inspect_stablehlo(art.stablehlo()).dots
    assert len(dots) == 2 * (12 * 8 + 1)  # Q, K, V, scores, context, out, FFN in/out per layer + pooler; tpu and cpu


def test_bert_base_fp32_export_on_cpu_matches_onnxruntime(bert_base):
    """Its latency against onnxruntime (goal <= 1.5x) is measured in benchmarks/bench_tpu.py."""
    path, model = bert_base
    feed = modelzoo.family_inputs("bert", 1, 128, seed=0)
    art = TpuTarget(seq_lens=(128,), batch_multiple=1).lower(model.graph)
    assert art.metadata["policy"]["precision"] == "fp32"
    sess = modelzoo.ort_session(path)
    ref = sess.run(None, feed)
    got = art.run(feed)
    for o, want in zip(sess.get_outputs(), ref):
        np.testing.assert_allclose(got[o.name], want, rtol=1e-4, atol=1e-4)


def test_minilm_bf16_embeddings_keep_cosine_0_999():
    from accelopt.samples import SENTENCES, bundled_tokenizer, tokenize

    path = modelzoo.minilm_onnx()
    model = load_onnx(path)
    feed = tokenize(bundled_tokenizer(), list(SENTENCES[:32]), 128)
    ref = model.reference(feed)["last_hidden_state"]
    m = feed["attention_mask"].astype(np.float64)[:, :, None]

    def pooled(a):
        return (a.astype(np.float64) * m).sum(1) / m.sum(1)

    def worst_cosine(a, b):
        return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())

    bf16 = TpuTarget(seq_lens=(128,), precision="bf16").lower(model.graph).run(feed)["last_hidden_state"]
    cos = worst_cosine(pooled(bf16), pooled(ref))
    print(f"MiniLM bf16 export, 32 sentences: worst pooled cosine {cos:.6f}")
    assert cos >= 0.999
    fp32 = TpuTarget(seq_lens=(128,), platforms=("cpu",)).lower(model.graph).run(feed)["last_hidden_state"]
    np.testing.assert_allclose(fp32, ref, rtol=1e-4, atol=1e-4)


def _dot_types(text: str, weights_only: bool = False) -> list[tuple[str, str, str]]:
    return [
        (d.lhs.dtype, d.rhs.dtype, d.out.dtype)
        for d in inspect_stablehlo(text).dots
        if d.is_weight_matmul or not weights_only
    ]


def _optimize(model: Path, out: Path, passes: str, *extra: str) -> tuple[dict, dict, str]:
    t0 = time.perf_counter()
    rc = main([str(model), "--target", "tpu", "--passes", passes, "-o", str(out), "-q", *extra])
    print(f"optimize {model.parent.name} --passes {passes}: exit {rc}, {time.perf_counter() - t0:.1f} s")
    assert rc == 0
    meta = json.loads((out / "metadata.json").read_text())
    report = json.loads((out / "report.json").read_text())
    for f in ("params.bin", meta["buckets"][0]["file"], meta["buckets"][0]["stablehlo_file"], "report.md"):
        assert (out / f).is_file(), f
    return meta, report, (out / meta["buckets"][0]["stablehlo_file"]).read_text()


def test_bert_base_cli_int8_and_bf16(bert_base, tmp_path):
    path, _ = bert_base
    meta, report, text = _optimize(path, tmp_path / "int8", "fuse,int8", "--samples", "4")
    assert report["status"] == "ok" and meta["policy"]["precision"] == "int8"
    assert meta["total_seconds"] <= 60  # lowering + export
    weight = _dot_types(text, weights_only=True)
    assert len(weight) == 2 * (12 * 4 + 1) and set(weight) == {("i8", "i8", "i32")}  # tpu and cpu
    assert meta["buckets"][0]["stablehlo_check"] == []
    meta, report, text = _optimize(path, tmp_path / "bf16", "fuse,bf16", "--samples", "4")
    assert report["status"] == "ok" and meta["policy"]["precision"] == "bf16"
    assert set(_dot_types(text)) == {("bf16", "bf16", "f32")}


@pytest.fixture(scope="module")
def minilm_heldout():
    """all-MiniLM-L6-v2, 32 held-out sentences at sequence 128 and onnxruntime's fp32 output on the original file."""
    path, feed, ref = modelzoo.minilm_heldout()
    return path, feed, ref["last_hidden_state"]


@pytest.mark.parametrize("passes", ["fuse,bf16", "fuse,int8"])
def test_minilm_through_the_written_artifact(minilm_heldout, tmp_path, passes):
    """Default settings (calibration: the built-in calibration sentences); measured on the held-out ones."""
    path, feed, ref = minilm_heldout
    meta, report, text = _optimize(path, tmp_path / "out", passes)
    art = TpuArtifact.load(tmp_path / "out")
    got = art.run(feed)["last_hidden_state"]
    m = compare(ref, got, name="last_hidden_state", mask=feed["attention_mask"])
    print(
        f"MiniLM {passes} artifact on CPU XLA, 32 held-out sentences: worst pooled cosine "
        f"{m['pooled_cosine_min']:.5f}, similarity max change {m['similarity_max_abs']:.4f}, "
        f"worst token cosine {m['cosine_min']:.5f}"
    )
    assert meta["buckets"][0]["stablehlo_check"] == []
    if passes == "fuse,bf16":
        assert meta["policy"]["precision"] == "bf16"
        assert set(_dot_types(text)) == {("bf16", "bf16", "f32")}
        assert m["pooled_cosine_min"] >= 0.999
    else:
        assert meta["policy"]["precision"] == "int8"
        weight = _dot_types(text, weights_only=True)
        assert len(weight) == 2 * 25 and set(weight) == {("i8", "i8", "i32")}  # 6 x (QKV, out, FFN x2) + pooler
        assert m["pooled_cosine_min"] >= 0.99
        assert m["similarity_max_abs"] <= 0.02
