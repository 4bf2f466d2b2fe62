"""Shared checks for pass tests: golden text, numerical equality, exact ``modified``, verify()."""

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


def check_pass(
    spec: str,
    before: str,
    after: str | None,
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    bindings: Mapping[str, int] | None = None,
    expect_modified: bool = True,
) -> PassResult:
    """Run the single pass ``spec`` on ``before`` and check it four ways.

    1. golden: the result prints as ``after`` (``None`` means unchanged);
    2. numerics: the interpreter gives the same outputs (by position) on seeded inputs;
    3. ``modified`` is exact (text changed iff True) and equals ``expect_modified``;
    4. ``verify()`` passes.
    """
    graph = parse(before, weights)
    graph.verify()
    assert print_graph(graph) == before, "test input is not in canonical text form"
    (p,) = build_pipeline(spec)
    inputs = seeded_inputs(graph, bindings)
    ref = run(graph, inputs)
    ref_list = [ref[v.name] for v in graph.outputs]
    result = p.run(graph.copy(), PassContext())
    new = result.graph
    new.verify()
    text = print_graph(new)
    assert result.modified == (text != before), "modified is not exact"
    assert result.modified == expect_modified
    assert text == (before if after is None else after)
    got = run(new, inputs)
    assert [v.name for v in new.outputs] == [v.name for v in graph.outputs]
    for v, want in zip(new.outputs, ref_list):
        assert got[v.name].dtype == want.dtype and got[v.name].shape == want.shape
        np.testing.assert_allclose(got[v.name], want, rtol=RTOL, atol=ATOL)
    return result
