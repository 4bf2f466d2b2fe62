"""Every TPU lowering against the op's numpy reference kernel (fp32 policy, seeded inputs, tight tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, X, i64
from tpu_helpers import call_lowered, single_op_graph

from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir.registry import _REGISTRY, AttrSpec, all_ops, define_op, has_op
from accelopt.targets.tpu import TpuTarget, lowered_ops, unlowered_ops


@pytest.mark.parametrize("case_id,op,inputs,attrs,n_out", CASES, ids=[c[0] for c in CASES])
def test_lowering_matches_reference_kernel(case_id, op, inputs, attrs, n_out):
    if not has_op(op):
        pytest.skip(f"{op} is not in the op registry (its lowering is ready for it)")
    g, feed = single_op_graph(op, inputs, attrs, n_out)
    want = run(g, feed)
    got = call_lowered(g, feed)
    for v in g.outputs:
        w, o = np.asarray(want[v.name]), got[v.name]
        assert o.shape == w.shape, (v.name, o.shape, w.shape)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(o.astype(w.dtype), w, err_msg=case_id)
        else:
            np.testing.assert_allclose(
                o.astype(np.float64), w.astype(np.float64), rtol=2e-5, atol=2e-6, err_msg=case_id
            )


def test_every_registry_op_has_a_lowering():
    missing = unlowered_ops(all_ops())
    assert missing == [], (
        f"ops without a TPU lowering: {missing}; register one with @lower(...) (targets/tpu/ops_*.py) "
        "and add a parity case to CASES in tests/op_cases.py"
    )
    assert {"MatMul", "Attention", "DequantizeLinear", "Linear"} <= lowered_ops()


def test_every_registry_op_is_exercised_here():
    """The parity table above covers every op in the registry (Constant folds in every graph)."""
    covered = {c[1] for c in CASES} | {"Constant"}
    untested = sorted(set(all_ops()) - covered)
    assert untested == [], f"add parity cases for {untested} to CASES in tests/op_cases.py"


def test_lower_lists_every_unlowered_op_at_once(monkeypatch):
    for name in ("TpuTestOpA", "TpuTestOpB"):
        monkeypatch.delitem(_REGISTRY, name, raising=False)
        define_op(
            name,
            infer=lambda ctx: [ctx.type(0)],
            kernel=lambda ins, attrs, n: [ins[0]],
            attrs={"k": AttrSpec("int", 0)},
        )
    try:
        g, _ = single_op_graph("TpuTestOpA", [("in", X)])
        b = g.add_node("TpuTestOpB", [g.outputs[0]])
        g.set_outputs([b.output])
        with pytest.raises(TargetError) as e:
            TpuTarget(platforms=("cpu",)).lower(g)
        assert "TpuTestOpA" in str(e.value) and "TpuTestOpB" in str(e.value)
        assert "2 op(s)" in str(e.value)
    finally:
        for name in ("TpuTestOpA", "TpuTestOpB"):
            _REGISTRY.pop(name, None)


def test_data_dependent_shape_is_a_clear_error():
    g, feed = single_op_graph("Reshape", [("in", X), ("in", i64(6, 4))])
    with pytest.raises(TargetError, match="must be known at export time"):
        call_lowered(g, feed)
