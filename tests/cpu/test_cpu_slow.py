"""Full-size checks of the cpu target (slow): all-MiniLM-L6-v2 (real weights) through the CLI, fp32 and int8 on
held-out sentences, then ``optimize bench``; BERT-base fp32 against onnxruntime with its compile time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from cli_check import run

import accelopt as ao
import modelzoo
from accelopt.frontends.onnx import load_onnx
from accelopt.targets.cpu import CpuTarget
from accelopt.validation import compare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_heldout():
    """all-MiniLM-L6-v2, 32 held-out sentences at sequence 128, and onnxruntime's fp32 outputs on the original file."""
    return modelzoo.minilm_heldout()


@pytest.mark.parametrize("passes", ["cleanup,fuse", "fuse,int8"])
def test_minilm_cli_artifact_and_bench(minilm_heldout, tmp_path: Path, capsys, passes: str):
    path, feed, ref = minilm_heldout
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc, _, stderr = run([path, "--target", "cpu", "--passes", passes, "-o", out, "-q"], capsys)
    assert rc == 0, stderr
    meta = json.loads((out / "metadata.json").read_text())
    print(f"optimize MiniLM --target cpu --passes {passes}: {time.perf_counter() - t0:.1f} s, "
          f"compile {meta['seconds']}")
    assert meta["seconds"]["total"] <= 120
    assert "unscheduled" not in meta["schedule"]["functions"].values()
    got = ao.Artifact.load(out).run(feed)
    m = compare(ref["last_hidden_state"], got["last_hidden_state"], name="last_hidden_state",
                mask=feed["attention_mask"])
    print(f"MiniLM {passes} cpu artifact, 32 held-out sentences: worst pooled cosine {m['pooled_cosine_min']:.5f}, "
          f"max abs {m['max_abs']:.2e}")
    if passes == "cleanup,fuse":
        for k in ref:
            assert float(np.abs(got[k] - ref[k]).max()) <= 1e-4, k
    else:
        assert m["pooled_cosine_min"] >= 0.99
    rc, stdout, stderr = run(["bench", out, "--repeat", "5"], capsys)
    assert rc == 0 and "median" in stdout, stderr


def test_bert_base_fp32_matches_onnxruntime_and_compiles_in_time():
    path = modelzoo.export_onnx("bert", exporter="dynamo", opset=17, size="full")
    model = load_onnx(path)
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager

    graph, _ = PassManager(build_pipeline("cleanup,fuse"), PassContext()).run(model.graph)
    t0 = time.perf_counter()
    art = CpuTarget(seq_lens=(128,), batch=1).lower(graph)
    seconds = time.perf_counter() - t0
    print(f"BERT-base fp32 cpu compile: {seconds:.1f} s ({art.metadata['seconds']})")
    assert seconds <= 120
    feed = modelzoo.family_inputs("bert", 2, 128, seed=3, config=modelzoo.config_for("bert", "full"))
    sess = modelzoo.ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    ref = sess.run(None, {k: feed[k] for k in names})
    got = art.run(feed)
    for o, want in zip(sess.get_outputs(), ref):
        assert float(np.abs(got[o.name] - want).max()) <= 1e-4, o.name
