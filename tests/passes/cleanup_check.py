"""Shared checks for pass tests: golden text, numerical equality, exact ``modified``, verify().

``check_pass`` is the four-way check every cleanup, fusion and layout test uses (the fusion tests
through ``fuse_check.check_fusion``); ``check_numerics`` is its numerical half on two given graphs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.graph import Graph
from accelopt.passes.base import PassContext, PassResult, build_pipeline

RTOL = 1e-7
ATOL = 1e-7


def seeded_inputs(graph: Graph, bindings: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``graph``: normal floats, small non-negative ints, random bools."""
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
    """The single pass ``spec`` run on a copy of ``graph``."""
    (p,) = build_pipeline(spec)
    return p.run(graph.copy(), PassContext())


def _compare_outputs(
    before: Graph, after: Graph, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], *, atol: float, rtol: float
) -> float:
    """``after``'s outputs ``got`` equal ``before``'s outputs ``ref`` by position: names, dtypes, shapes and values
    within ``atol``/``rtol``. Returns the max abs difference."""
    assert [v.name for v in after.outputs] == [v.name for v in before.outputs]
    worst = 0.0
    for va, vb in zip(before.outputs, after.outputs):
        want, have = ref[va.name], got[vb.name]
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_allclose(have, want, atol=atol, rtol=rtol)
        if want.size:
            worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want))))
    return worst


def check_numerics(
    before: Graph,
    after: Graph,
    inputs: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float = 0.0,
) -> float:
    """Outputs of ``after`` equal those of ``before`` (by position); returns the max abs difference."""
    return _compare_outputs(before, after, run(before, inputs), run(after, inputs), atol=atol, rtol=rtol)


def check_pass(
    spec: str,
    before: str,
    after: str | None,
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    bindings: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    expect_modified: bool = True,
    atol: float = ATOL,
    rtol: float = RTOL,
    canonical: bool = True,
) -> PassResult:
    """Run the single pass ``spec`` on ``before`` and check it four ways.

    1. golden: the result prints as ``after`` (``None``: unchanged; with ``expect_modified``: not compared).
       ``canonical``: ``before`` and ``after`` must be written in canonical text form; otherwise both are
       put in canonical form first, so constants may be written with float32 rounding left out;
    2. numerics: the interpreter gives the same outputs (by position; names, dtypes, shapes, values within
       ``atol``/``rtol``) on ``inputs`` or seeded inputs (``bindings`` for the symbolic dims);
    3. ``modified`` is exact (text changed iff True) and equals ``expect_modified``;
    4. ``verify()`` passes.
    """
    graph = parse(before, weights)
    graph.verify()
    text_before = print_graph(graph)
    if canonical:
        assert text_before == before, "test input is not in canonical text form"
    feeds = dict(inputs) if inputs is not None else seeded_inputs(graph, bindings)
    ref = run(graph, feeds)
    result = run_pass(spec, graph)
    new = result.graph
    new.verify()
    text = print_graph(new)
    assert result.modified == (text != text_before), "modified is not exact"
    assert result.modified == expect_modified
    if after is not None or not expect_modified:
        if after is None:
            expected = text_before
        else:
            expected = after if canonical else print_graph(parse(after, weights))
        assert text == expected, text
    _compare_outputs(graph, new, ref, run(new, feeds), atol=atol, rtol=rtol)
    return result
