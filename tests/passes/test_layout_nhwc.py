"""layout-nhwc (+ layout-cancel-transposes): channels-last convolutions with the same outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from fuse_check import check_numerics, run_pass
from layout_graphs import conv_model

from accelopt.interpreter import run
from accelopt.ir import print_graph
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.targets.base import Capabilities
from accelopt.targets.onnx_writer import write_onnx

X = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}


def test_case1_nhwc_then_cancel_leaves_two_transposes() -> None:
    g = conv_model()
    res = run_pass("layout-nhwc", g)
    res.graph.verify()
    assert res.graph.op_counts() == {"Transpose": 6, "ConvNHWC": 3, "Relu": 2, "Add": 2}
    assert res.graph.node("conv1_nhwc").inputs[1].shape == (3, 3, 3, 8)  # HWIO
    cancelled = run_pass("layout-cancel-transposes", res.graph)
    cancelled.graph.verify()
    assert cancelled.graph.op_counts() == {"Transpose": 2, "ConvNHWC": 3, "Relu": 2, "Add": 2}
    assert [n.op for n in cancelled.graph.nodes][0] == "Transpose" and cancelled.graph.nodes[-1].op == "Transpose"
    assert check_numerics(g, cancelled.graph, X, atol=1e-5) <= 1e-5
    # onnxruntime runs the channels-last graph (ConvNHWC written as Transpose/Conv/Transpose)
    sess = ort.InferenceSession(write_onnx(cancelled.graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, X)[0], run(g, X)["conv3"], atol=1e-5, rtol=0)


def test_case2_back_to_nchw_restores_the_model() -> None:
    g = conv_model()
    nhwc = run_pass("layout-cancel-transposes", run_pass("layout-nhwc", g).graph).graph
    back = run_pass("layout-cancel-transposes", run_pass("layout-nhwc{to=NCHW}", nhwc).graph)
    assert back.graph.op_counts() == {"Conv": 3, "Relu": 2, "Add": 2}
    assert check_numerics(g, back.graph, X, atol=1e-5) <= 1e-5


@pytest.mark.parametrize("layout, expect_modified", [("NHWC", True), ("NCHW", False)])
def test_case3_auto_follows_the_target(layout: str, expect_modified: bool) -> None:
    (p,) = build_pipeline("layout-nhwc")
    caps = Capabilities(name="t", preferred_layouts={"conv": layout})
    res = p.run(conv_model(), PassContext(target=caps))
    assert res.modified == expect_modified


def test_no_conv_no_change() -> None:
    g = conv_model()  # channels first already: nothing to convert back
    res = run_pass("layout-nhwc{to=NCHW}", g)
    assert not res.modified and print_graph(res.graph) == print_graph(g)
