"""The ``cleanup`` group on real BERT-family exports: exact outputs, a fixed point, fewer nodes."""

from __future__ import annotations

import numpy as np
import pytest

import modelzoo
from accelopt.frontends.onnx import load_onnx
from accelopt.interpreter import run
from accelopt.ir import print_graph
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager

CASES = [
    pytest.param("bert", "legacy", 14, id="bert-legacy14"),
    pytest.param("bert", "dynamo", 17, id="bert-dynamo17", marks=pytest.mark.slow),
    pytest.param("roberta", "legacy", 14, id="roberta-legacy14", marks=pytest.mark.slow),
    pytest.param("distilbert", "legacy", 17, id="distilbert-legacy17", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("family", "exporter", "opset"), CASES)
def test_cleanup_on_exports(family: str, exporter: str, opset: int) -> None:
    graph = load_onnx(modelzoo.export_onnx(family, exporter=exporter, opset=opset)).graph
    inputs = modelzoo.family_inputs(family, 2, 16)
    ref = run(graph, inputs)
    ctx = PassContext(options={"check_modified": True, "shape_bindings": {"batch": 2, "sequence": 16}})
    out, records = PassManager(build_pipeline("cleanup"), ctx).run(graph)
    out.verify()
    # the last round changed nothing: a fixed point
    assert len(records) % 4 == 0 and not any(r.modified for r in records[-4:])
    assert all(r.near_misses == [] for r in records)
    assert len(out.nodes) <= len(graph.nodes)
    if exporter == "legacy":  # the TorchScript exporter leaves a lot of constant shape arithmetic
        assert len(out.nodes) < 0.6 * len(graph.nodes)
    got = run(out, inputs)
    for name, want in ref.items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-6)
    # running cleanup again is a no-op
    again, rec2 = PassManager(build_pipeline("cleanup"), ctx).run(out)
    assert print_graph(again) == print_graph(out) and not any(r.modified for r in rec2)
