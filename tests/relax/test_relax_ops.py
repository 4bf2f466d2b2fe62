"""Every Relax lowering against the op's numpy reference kernel (``tests/op_cases.py``), compiled for this CPU.

All cases are lowered into ONE module and compiled once (one function per case), so the whole table costs
one build.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, X, f32, i64
from relax_helpers import Compiled, assert_matches

from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir.registry import _REGISTRY, AttrSpec, all_ops, define_op, has_op
from accelopt.targets.relax import build_module, lowered_ops, unlowered_ops
from accelopt.targets.relax.lowering import Bucket
from modelzoo import one_op_graph

RUNNABLE = [c for c in CASES if has_op(c[1])]


def _graph(case_id: str, op: str, inputs: list, attrs: dict, n_out: int):
    arrays = [None if kind == "none" else arr for kind, arr in inputs]
    consts = {i for i, (kind, _) in enumerate(inputs) if kind == "const"}
    return one_op_graph(op, arrays, attrs, n_out, consts=consts, name=f"case_{op}")


@pytest.fixture(scope="module")
def compiled() -> tuple[Compiled, dict]:
    graphs, feeds = {}, {}
    for i, (case_id, op, inputs, attrs, n_out) in enumerate(RUNNABLE):
        g, feed = _graph(case_id, op, inputs, attrs, n_out)
        graphs[f"f{i}"] = g
        feeds[case_id] = (f"f{i}", feed)
    return Compiled(graphs), feeds


@pytest.mark.parametrize("case_id,op,inputs,attrs,n_out", RUNNABLE, ids=[c[0] for c in RUNNABLE])
def test_lowering_matches_reference_kernel(compiled, case_id, op, inputs, attrs, n_out):
    comp, feeds = compiled
    name, feed = feeds[case_id]
    g = comp.graphs[name]
    want = run(g, feed)
    got = comp.run(name, feed)
    assert_matches(got, want, [v.name for v in g.outputs], case_id)


def test_every_function_of_the_op_table_got_a_schedule_rule(compiled):
    comp, _ = compiled
    rules = comp.build.schedule.rules
    assert rules and "unscheduled" not in rules.values(), comp.build.schedule.failures[:5]
    assert {"injective", "reduction", "matmul"} <= set(rules.values())


def test_every_registry_op_has_a_lowering():
    missing = unlowered_ops(all_ops())
    assert missing == [], (
        f"ops without a Relax lowering: {missing}; register one with @lower(...) (targets/relax/ops_*.py) "
        "and add a parity case to CASES in tests/op_cases.py"
    )
    assert {"MatMul", "Attention", "QLinear", "Linear", "DynamicQuantize"} <= lowered_ops()


def test_every_registry_op_is_exercised_here():
    covered = {c[1] for c in RUNNABLE} | {"Constant"}
    assert sorted(set(all_ops()) - covered) == []


def test_unlowerable_ops_are_listed_all_at_once(monkeypatch):
    for name in ("RelaxTestOpA", "RelaxTestOpB"):
        monkeypatch.delitem(_REGISTRY, name, raising=False)
        define_op(name, infer=lambda ctx: [ctx.type(0)], kernel=lambda ins, attrs, n: [ins[0]],
                  attrs={"k": AttrSpec("int", 0)})
    try:
        g, _ = one_op_graph("RelaxTestOpA", [X])
        b = g.add_node("RelaxTestOpB", [g.outputs[0]])
        g.set_outputs([b.output])
        with pytest.raises(TargetError) as e:
            build_module(g, [Bucket("main", {})])
        msg = str(e.value)
        assert "RelaxTestOpA" in msg and "RelaxTestOpB" in msg and "2 op(s)" in msg
    finally:
        for name in ("RelaxTestOpA", "RelaxTestOpB"):
            _REGISTRY.pop(name, None)


def test_data_dependent_nodes_are_named_all_at_once():
    """NonZero of run-time data and a Reshape to a run-time shape: both nodes in one TargetError."""
    g, _ = one_op_graph("NonZero", [f32(2, 3)])
    r = g.add_node("Reshape", [g.inputs[0], g.add_input("shape", g.inputs[0].type.with_shape((2,)).with_dtype(
        g.value(g.nodes[0].outputs[0].name).dtype))])
    g.set_outputs([g.nodes[0].outputs[0], r.output])
    with pytest.raises(TargetError) as e:
        build_module(g, [Bucket("main", {})])
    msg = str(e.value)
    assert "2 node(s)" in msg and "NonZero" in msg and "Reshape" in msg and "run-time data" in msg


def test_static_nonzero_and_large_constants():
    """A NonZero of a constant folds; a large folded constant becomes a parameter, not a baked constant."""
    g, feed = one_op_graph("Add", [f32(64, 64), f32(64, 64)], consts={1})
    lowered = build_module(g, [Bucket("main", {})])
    assert lowered.signatures["main"] == ["c1"]
    assert lowered.params["c1"].shape == (64, 64)
    np.testing.assert_array_equal(i64(1), np.array([1]))
