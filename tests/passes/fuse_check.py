"""Shared checks for the fusion pass tests: golden text, numerics, exact ``modified``, verify()."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cleanup_check import seeded_inputs  # noqa: F401  (re-exported for the fusion tests)

from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.ir.types import TensorType
from accelopt.passes.base import PassContext, PassResult, build_pipeline


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


def run_one_op(op: str, arrays: list[np.ndarray | None], attrs: dict | None = None, n_out: int = 1) -> list[np.ndarray]:
    """Run one op on arrays (``None`` = omitted input) through a one-node graph and the interpreter."""
    g = Graph("t")
    ins = []
    feeds = {}
    for i, a in enumerate(arrays):
        if a is None:
            ins.append(None)
            continue
        v = g.add_input(f"in{i}", TensorType(DType.from_numpy(a.dtype), a.shape))
        feeds[v.name] = a
        ins.append(v)
    node = g.add_node(op, ins, attrs or {}, outputs=n_out)
    g.set_outputs(list(node.outputs))
    g.verify()
    out = run(g, feeds)
    return [out[v.name] for v in node.outputs]
