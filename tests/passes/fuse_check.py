"""Shared checks for the fusion pass tests: golden text, numerics, exact ``modified``, verify()."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.graph import Graph
from accelopt.passes.base import PassContext, PassResult, build_pipeline


def seeded_inputs(graph: Graph, bindings: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Normal floats, small non-negative ints, random bools; symbols bound from ``bindings``."""
    rng = np.random.default_rng(seed)
    b = {"batch": 2, "seq": 3, **(bindings or {})}
    feeds: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else b[d] for d in v.type.shape or ())
        dt = v.type.dtype
        if dt.is_float:
            feeds[v.name] = rng.standard_normal(shape).astype(dt.np)
        elif dt.is_int:
            feeds[v.name] = rng.integers(0, 3, size=shape).astype(dt.np)
        else:
            feeds[v.name] = rng.random(shape) > 0.5
    return feeds


def run_pass(spec: str, graph: Graph) -> PassResult:
    (p,) = build_pipeline(spec)
    return p.run(graph.copy(), PassContext())


def check_numerics(
    before: Graph,
    after: Graph,
    inputs: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float = 0.0,
) -> float:
    """Outputs of ``after`` equal those of ``before`` (by position); returns the max abs difference."""
    ref = run(before, inputs)
    got = run(after, inputs)
    assert [v.name for v in after.outputs] == [v.name for v in before.outputs]
    worst = 0.0
    for va, vb in zip(before.outputs, after.outputs):
        want, have = ref[va.name], got[vb.name]
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_allclose(have, want, atol=atol, rtol=rtol)
        if want.size:
            worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want))))
    return worst


def check_fusion(
    spec: str,
    before: str,
    after: str | None,
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    bindings: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    expect_modified: bool = True,
    atol: float = 2e-6,
) -> PassResult:
    """Run the pass ``spec`` on ``before`` and check it four ways.

    1. golden: the result prints as ``after`` (``None``: unchanged); both texts are compared
       in canonical form, so constants may be written with float32 rounding left out;
    2. numerics: same outputs on seeded inputs within ``atol`` (fusions reassociate float math);
    3. ``modified`` is exact (text changed iff True) and equals ``expect_modified``;
    4. ``verify()`` passes.
    """
    graph = parse(before, weights)
    graph.verify()
    before = print_graph(graph)  # canonical form (float32 constants print with all their digits)
    result = run_pass(spec, graph)
    new = result.graph
    new.verify()
    text = print_graph(new)
    assert result.modified == (text != before), "modified is not exact"
    assert result.modified == expect_modified
    if after is not None or not expect_modified:
        expected = before if after is None else print_graph(parse(after, weights))
        assert text == expected, text
    feeds = dict(inputs) if inputs is not None else seeded_inputs(graph, bindings)
    check_numerics(graph, new, feeds, atol=atol)
    return result


def matched(result: PassResult) -> dict[str, int]:
    return {k: v["matched"] for k, v in result.stats.items() if isinstance(v, dict) and v.get("matched")}
