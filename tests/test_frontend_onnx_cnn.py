"""ONNX frontend on exports beyond BERT: a ResNet-style CNN and Funnel-Transformer through both torch
exporters, against onnxruntime on the same file, at two batch sizes; then the tpu target's lowering
of the CNN against the interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cnn_models import export_onnx, family_inputs, family_model, images, tiny_resnet

from accelopt.frontends.onnx import load_onnx
from modelzoo import max_abs_errors

TOL = 1e-5


def _matches_onnxruntime(path: Path, feeds: list[dict[str, np.ndarray]]) -> set[str]:
    model = load_onnx(path)
    for feed in feeds:
        errs = max_abs_errors(model.run(feed), model.reference(feed))
        assert max(errs.values()) <= TOL, errs
    return set(model.graph.op_counts())


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_tiny_resnet_export(exporter: str, tmp_path: Path) -> None:
    path = export_onnx(tiny_resnet(), {"x": images(2, 32, 0)}, tmp_path / "model.onnx", exporter=exporter)
    ops = _matches_onnxruntime(path, [{"x": images(2, 32, 1)}, {"x": images(5, 32, 2)}])
    # the BatchNorm after the residual addition cannot be folded into a convolution
    assert {"Conv", "MaxPool", "AveragePool", "BatchNormalization", "Resize"} <= ops, ops


@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_funnel_export(exporter: str, tmp_path: Path) -> None:
    example = family_inputs("funnel", 2, 8, seed=0)
    path = export_onnx(family_model("funnel"), example, tmp_path / "model.onnx", exporter=exporter)
    ops = _matches_onnxruntime(path, [family_inputs("funnel", 2, 8, seed=1), family_inputs("funnel", 4, 8, seed=2)])
    assert "AveragePool" in ops  # Funnel pools its query sequence between blocks


def test_tiny_resnet_lowers_to_tpu(tmp_path: Path) -> None:
    from accelopt.interpreter import run
    from accelopt.targets.tpu import TpuTarget

    path = export_onnx(tiny_resnet(), {"x": images(2, 32, 0)}, tmp_path / "model.onnx", exporter="legacy")
    graph = load_onnx(path).graph
    x = images(2, 32, 3)
    artifact = TpuTarget(precision="fp32", batch=2, batch_multiple=1).lower(graph)
    got, want = artifact.run({"x": x}), run(graph, {"x": x})
    errs = max_abs_errors(got, want)
    assert max(errs.values()) <= 1e-4, errs
