"""Issue 4's "done when" for fusion on real exports: every family x exporter, accuracy, onnxruntime, approximations.

Tiny configs (2 layers) run by default; MiniLM (real weights, 6 layers) and BERT-base are ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

import modelzoo
from accelopt.frontends.onnx import load_onnx
from accelopt.interpreter import run
from accelopt.model import Model
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager

EXPORTS = [("dynamo", 17), ("dynamo", 18), ("legacy", 14), ("legacy", 17)]
LAYERS = {"bert": 2, "distilbert": 2, "roberta": 2, "albert": 2, "minilm": 6}


def _model(family: str, exporter: str, opset: int) -> Model:
    if family == "minilm":
        return load_onnx(modelzoo.minilm_onnx(exporter=exporter, opset=opset))
    return load_onnx(modelzoo.export_onnx(family, exporter=exporter, opset=opset))


def _optimize(model: Model, pipeline: str, ctx: PassContext | None = None):
    return PassManager(build_pipeline(pipeline), ctx or PassContext()).run(model.graph)


def _check_counts(family: str, exporter: str, opset: int, pipeline: str) -> None:
    model = _model(family, exporter, opset)
    graph, records = _optimize(model, pipeline)
    layers = LAYERS[family]
    ops = graph.op_counts()
    gelu = [n for n in graph.nodes if n.op == "Linear" and n.attr("activation", "none") == "gelu"]
    misses = [m for r in records for m in r.near_misses]
    assert ops["Attention"] == layers, ops
    assert ops["SkipLayerNorm"] == 2 * layers, ops
    assert len(gelu) == layers, ops
    assert misses == []
    # the embeddings' LayerNorm became EmbedLayerNorm; nothing else is left unfused
    assert ops["EmbedLayerNorm"] == 1 and ops["LayerNorm"] == 0 and ops["Softmax"] == 0, ops
    inputs = modelzoo.family_inputs(family, 3, 9, seed=2)  # rows 1 and 2 are padded
    ref = model.reference(inputs)
    got = run(graph, inputs)
    for name, want in ref.items():
        assert float(np.max(np.abs(got[name] - want))) <= 1e-4, name


@pytest.mark.parametrize("exporter, opset", EXPORTS)
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "albert"])
def test_cleanup_fuse_counts_and_accuracy(family: str, exporter: str, opset: int) -> None:
    _check_counts(family, exporter, opset, "cleanup,fuse")


@pytest.mark.parametrize("exporter, opset", [("dynamo", 18), ("legacy", 14)])
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fuse_without_cleanup(family: str, exporter: str, opset: int) -> None:
    _check_counts(family, exporter, opset, "fuse")


@pytest.mark.parametrize("family, exporter, opset", [("bert", "dynamo", 18), ("roberta", "legacy", 14),
                                                     ("albert", "legacy", 17), ("distilbert", "dynamo", 17)])
def test_fused_model_runs_in_onnxruntime(family: str, exporter: str, opset: int) -> None:
    import onnxruntime as ort

    from accelopt.targets.onnx_writer import write_onnx

    model = _model(family, exporter, opset)
    graph, _ = _optimize(model, "cleanup,fuse")
    proto = write_onnx(graph)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"} <= ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = modelzoo.family_inputs(family, 3, 9, seed=3)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    for name, want in model.reference(inputs).items():
        assert float(np.max(np.abs(got[name] - want))) <= 1e-4, name


@pytest.mark.slow
@pytest.mark.parametrize("exporter, opset", EXPORTS)
def test_minilm_counts_and_accuracy(exporter: str, opset: int) -> None:
    _check_counts("minilm", exporter, opset, "cleanup,fuse")


def _minilm_cosines(pipeline: str, ctx: PassContext | None = None) -> tuple[float, list]:
    from accelopt.samples import SENTENCES, bundled_tokenizer, tokenize
    from accelopt.validation import pooled

    model = _model("minilm", "dynamo", 18)
    toks = tokenize(bundled_tokenizer(), SENTENCES, 64)
    feeds = {v.name: toks[v.name] for v in model.graph.inputs}
    ref = pooled(model.reference(feeds)["last_hidden_state"], toks["attention_mask"])
    graph, records = _optimize(model, pipeline, ctx)
    got = pooled(run(graph, feeds)["last_hidden_state"], toks["attention_mask"])
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(np.min(cos)), records


@pytest.mark.slow
def test_minilm_gelu_tanh_keeps_mean_pooled_embeddings() -> None:
    worst, _ = _minilm_cosines("cleanup,fuse,gelu-tanh")
    assert worst >= 0.9999


@pytest.mark.slow
def test_minilm_gelu_sigmoid_is_rolled_back_by_validation() -> None:
    from accelopt.validation import ValidationConfig, Validator

    model = _model("minilm", "dynamo", 18)
    validator = Validator(model, ValidationConfig(num_samples=8, seq_len=32))
    _, records = _minilm_cosines("cleanup,fuse,gelu-sigmoid,gelu-tanh", PassContext(validator=validator))
    by_name = {r.name: r for r in records}
    assert not by_name["gelu-tanh"].rolled_back
    assert by_name["gelu-sigmoid"].rolled_back and "cosine" in by_name["gelu-sigmoid"].rollback_reason


@pytest.mark.slow
@pytest.mark.parametrize("exporter, opset", [("dynamo", 18), ("legacy", 14)])
def test_bert_base_node_count_drops_70_percent(exporter: str, opset: int) -> None:
    model = load_onnx(modelzoo.export_onnx("bert", exporter=exporter, opset=opset, size="full"))
    graph, records = _optimize(model, "cleanup,fuse")
    assert len(graph.nodes) <= 0.3 * len(model.graph.nodes)
    ops = graph.op_counts()
    assert ops["Attention"] == 12 and ops["SkipLayerNorm"] == 24
    assert [m for r in records for m in r.near_misses] == []
    inputs = modelzoo.family_inputs("bert", 2, 32, seed=1)
    ref = model.reference(inputs)
    got = run(graph, inputs)
    assert max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref) <= 1e-4


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_torch_export_frontend_sdpa_fuses(family: str) -> None:
    """torch.export keeps SDPA as one op and computes linear layers on 2-D views; both fuse."""
    import torch

    from accelopt.frontends.torch_export import load_torch

    names = modelzoo.input_names(family)
    inputs = modelzoo.family_inputs(family, 2, 8, seed=1)
    model = load_torch(modelzoo.build_model(family), tuple(torch.from_numpy(inputs[n]) for n in names))
    assert model.graph.op_counts()["ScaledDotProductAttention"] == 2
    graph, records = _optimize(model, "cleanup,fuse")
    ops = graph.op_counts()
    gelu = [n for n in graph.nodes if n.op == "Linear" and n.attr("activation", "none") == "gelu"]
    assert ops["Attention"] == 2 and ops["SkipLayerNorm"] == 4 and len(gelu) == 2
    assert [m for r in records for m in r.near_misses] == []
    padded = modelzoo.family_inputs(family, 3, 8, seed=5)
    feeds = {v.name: padded[n] for v, n in zip(model.graph.inputs, names)}
    ref = model.reference(feeds)
    got = run(graph, feeds)
    for name, want in ref.items():
        assert float(np.max(np.abs(got[name] - want))) <= 1e-4, name
