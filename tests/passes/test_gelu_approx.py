"""gelu-tanh / gelu-sigmoid: golden text, bounded numerical change, idempotence, rollback by validation."""

from __future__ import annotations

import numpy as np
import pytest
from fuse_check import run_pass
from gelu_graphs import ERF_INNER, gelu_graph

from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.passes.base import build_pipeline, get_pass_class

BEFORE = """graph g(%x: float32[batch,4]) {
  %w: float32[4,4] = const [0.5, -0.25, 1.0, 0.75, -1.0, 0.5, 0.25, -0.5, 1.5, 0.0, -0.75, 0.25, 0.0, 1.0, 0.5, -1.5]
  %h: float32[batch,4] = Linear{activation="gelu"}(%x, %w) @dense
  %g: float32[batch,4] = Gelu(%h) @gelu
  %t: float32[batch,4] = Gelu{approximate="tanh"}(%g) @already
  return %t
}
"""


@pytest.mark.parametrize(
    "spec, linear_act, gelu_line",
    [
        ("gelu-tanh", "gelu_tanh", 'Gelu{approximate="tanh"}(%h) @gelu'),
        ("gelu-sigmoid", "gelu_sigmoid", "QuickGelu{alpha=1.702}(%h) @gelu_quickgelu"),
    ],
)
def test_cases_1_2_golden_and_idempotent(spec: str, linear_act: str, gelu_line: str) -> None:
    g = parse(BEFORE)
    res = run_pass(spec, g)
    res.graph.verify()
    text = print_graph(res.graph)
    assert res.modified and text != print_graph(g)
    assert f'Linear{{activation="{linear_act}"}}(%x, %w) @dense' in text
    assert f"%g: float32[batch,4] = {gelu_line}" in text
    assert 'Gelu{approximate="tanh"}(%g) @already' in text  # already an approximation: untouched
    assert res.stats["gelu"] == {"candidates": 2, "matched": 1} and res.stats["linear"]["matched"] == 1
    again = run_pass(spec, res.graph)
    assert not again.modified and print_graph(again.graph) == text
    # an approximation: close to exact GELU, but not equal
    x = np.linspace(-4, 4, 64, dtype=np.float32).reshape(16, 4)
    ref = run(g, {"x": x})["t"]
    got = run(res.graph, {"x": x})["t"]
    err = float(np.max(np.abs(ref - got)))
    bound = 1e-2 if spec == "gelu-tanh" else 0.1
    assert 1e-6 < err < bound


def test_case3_erf_form_is_recognised_first() -> None:
    before = gelu_graph(ERF_INNER, "x-t-half")
    res = run_pass("gelu-tanh", parse(before))
    assert res.graph.op_counts() == {"Gelu": 1}
    assert res.graph.nodes[0].attr("approximate") == "tanh"


def test_no_gelu_no_change() -> None:
    g = parse("graph g(%x: float32[2]) {\n  %y: float32[2] = Relu(%x) @relu\n  return %y\n}\n")
    assert not run_pass("gelu-tanh", g).modified
    assert not run_pass("gelu-sigmoid", g).modified


def test_family_is_approximation_and_specs_build() -> None:
    assert get_pass_class("gelu-tanh").family == "approximation"
    assert get_pass_class("gelu-sigmoid").family == "approximation"
    assert [p.name for p in build_pipeline("gelu-tanh,gelu-sigmoid")] == ["gelu-tanh", "gelu-sigmoid"]
