"""Detached weights: large initializers stay the graph's arrays; the model refers to them as external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import accelopt as ao
import modelzoo
from accelopt.passes.base import PassContext
from accelopt.passmanager import run_pipeline
from accelopt.targets import onnx_target
from accelopt.targets.base import get_target
from accelopt.targets.onnx_external import ALIGN
from accelopt.targets.onnx_writer import write_onnx, write_onnx_detached


@pytest.fixture(scope="module")
def fused_bert() -> tuple[ao.Model, object]:
    model = ao.load(modelzoo.export_onnx("bert", exporter="legacy", opset=17))
    graph, _ = run_pipeline(model.graph, "cleanup,fuse", PassContext())
    return model, graph


def test_detached_model_refers_to_the_graph_arrays_and_checks(fused_bert) -> None:
    _, graph = fused_bert
    proto, weights = write_onnx_detached(graph, threshold=1024)
    arrays = {id(v.const) for v in graph.initializers.values()}
    big = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert big and len(big) == len(weights.entries)
    assert all(id(a) in arrays for _, a, _ in weights.entries)  # the graph's own arrays, not copies
    assert all(a.nbytes >= 1024 for _, a, _ in weights.entries)
    assert all(off % ALIGN == 0 for _, _, off in weights.entries)
    assert proto.ByteSize() < write_onnx(graph).ByteSize() - weights.nbytes + 4096
    # the same nodes as the plain writer
    assert [n.op_type for n in proto.graph.node] == [n.op_type for n in write_onnx(graph).graph.node]


def test_detached_artifact_runs_before_and_after_saving(fused_bert, tmp_path, monkeypatch) -> None:
    model, graph = fused_bert
    monkeypatch.setattr(onnx_target, "DETACH_BYTES", 1)
    art = get_target("onnx").lower(graph, model=model)
    assert art.weights is not None
    feeds = modelzoo.family_inputs("bert", 2, 16, seed=3)
    want = model.run(feeds)
    got = art.run(feeds)  # onnxruntime reads the graph's arrays
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=0)
    files = art.save(tmp_path)
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data", "metadata.json"]
    assert (tmp_path / "model.onnx").stat().st_size < 64 << 10
    assert (tmp_path / "model.onnx.data").stat().st_size >= art.weights.nbytes
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)
    loaded = onnx_target.OnnxArtifact.load(tmp_path)
    again = loaded.run(feeds)
    for k in want:  # the saved model's session prepacks its weights (summation order may differ)
        np.testing.assert_allclose(again[k], got[k], atol=1e-5, rtol=0)


def test_detached_session_reads_the_graph_arrays_in_place(fused_bert, monkeypatch) -> None:
    """Before saving, onnxruntime uses the graph's own arrays (no copy of the weights): a weight changed in
    place changes what the session computes."""
    model, graph = fused_bert
    g = graph.copy()
    for v in g.initializers.values():  # arrays of this test's own, changed below
        v.const = v.const.copy()
    monkeypatch.setattr(onnx_target, "DETACH_BYTES", 1)
    art = get_target("onnx").lower(g, model=model)
    assert art.weights is not None and art.path is None
    feeds = modelzoo.family_inputs("bert", 2, 16, seed=3)
    before = art.run(feeds)
    _, arr, _ = max(art.weights.entries, key=lambda e: e[1].nbytes)
    assert any(arr is v.const for v in g.initializers.values())
    arr *= 2.0
    after = art.run(feeds)
    assert not np.allclose(after["last_hidden_state"], before["last_hidden_state"], atol=1e-3)
    arr /= 2.0
    np.testing.assert_array_equal(art.run(feeds)["last_hidden_state"], before["last_hidden_state"])


def test_small_graphs_keep_their_weights_inline(fused_bert, tmp_path) -> None:
    model, graph = fused_bert
    art = get_target("onnx").lower(graph, model=model)
    assert art.weights is None
    assert [f.name for f in art.save(tmp_path)] == ["model.onnx", "metadata.json"]
