"""Chip descriptors and the bf16 / fp32 / int8 policy choice."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from tpu_helpers import call_lowered, qdq_matmul_graph, single_op_graph

from accelopt.errors import TargetError
from accelopt.targets.tpu import CHIPS, choose_policy, get_chip
from accelopt.targets.tpu.lowering import plan_weights, prepare_matmul_weight


def test_chip_figures_are_the_published_ones():
    assert (CHIPS["v4"].peak_bf16_tflops, CHIPS["v4"].peak_int8_tops, CHIPS["v4"].hbm_gbps) == (275, 275, 1200)
    assert (CHIPS["v5e"].peak_bf16_tflops, CHIPS["v5e"].peak_int8_tops, CHIPS["v5e"].hbm_gbps) == (197, 394, 819)
    assert (CHIPS["v5p"].peak_bf16_tflops, CHIPS["v5p"].peak_int8_tops, CHIPS["v5p"].hbm_gbps) == (459, 918, 2765)
    assert (CHIPS["v6e"].peak_bf16_tflops, CHIPS["v6e"].peak_int8_tops, CHIPS["v6e"].hbm_gbps) == (918, 1836, 1640)
    assert [c.mxu_tile for c in CHIPS.values()] == [128, 128, 128, 256]
    assert [c.int8_speedup for c in CHIPS.values()] == [False, True, True, True]


def test_get_chip_accepts_prefixes_and_rejects_unknown():
    assert get_chip("tpu-v5e") is CHIPS["v5e"]
    assert get_chip("V6E") is CHIPS["v6e"]
    with pytest.raises(TargetError, match="known chips: v4, v5e, v5p, v6e"):
        get_chip("v3")


def test_auto_precision_follows_the_graph():
    g, _ = single_op_graph("MatMul", [("in", np.ones((2, 4), np.float32)), ("const", np.ones((4, 4), np.float32))])
    p = choose_policy(g, get_chip("v5e"))
    assert (p.precision, p.requested, p.tile, p.batch_multiple) == ("fp32", "auto", 128, 8)
    assert choose_policy(g, get_chip("v5e"), precision="bf16").precision == "bf16"
    bf16 = np.ones((2, 4), ml_dtypes.bfloat16)
    gb, _ = single_op_graph("MatMul", [("in", bf16), ("const", np.ones((4, 4), ml_dtypes.bfloat16))])
    assert choose_policy(gb, get_chip("v5e")).precision == "bf16"
    gh, _ = single_op_graph("MatMul", [("in", np.ones((2, 4), np.float16)), ("const", np.ones((4, 4), np.float16))])
    ph = choose_policy(gh, get_chip("v5e"))
    assert ph.precision == "bf16" and any("no fast fp16" in n for n in ph.notes)
    # the layout passes' and convolution ops count as matmul work too
    gp, _ = single_op_graph(
        "PackedLinear",
        [("in", bf16), ("const", np.ones((4, 4), ml_dtypes.bfloat16))],
        {"k": 4, "n": 4, "transposed": 1},
    )
    assert choose_policy(gp, get_chip("v5e")).precision == "bf16"
    x = np.ones((1, 2, 5, 5), ml_dtypes.bfloat16)
    gc, _ = single_op_graph("Conv", [("in", x), ("const", np.ones((3, 2, 3, 3), ml_dtypes.bfloat16))])
    assert choose_policy(gc, get_chip("v5e")).precision == "bf16"


def test_int8_graph_on_int8_chips_and_fallback_on_v4():
    g = qdq_matmul_graph()
    assert choose_policy(g, get_chip("v5e")).precision == "int8"
    assert choose_policy(g, get_chip("v6e"), precision="int8").precision == "int8"
    v4 = choose_policy(g, get_chip("v4"))
    assert v4.precision == "bf16"
    assert any("v4 runs int8 at the bf16 rate" in n for n in v4.notes)


def test_int8_requested_without_int8_ops_notes_it():
    g, _ = single_op_graph("Relu", [("in", np.ones(3, np.float32))])
    p = choose_policy(g, get_chip("v5e"), precision="int8")
    assert p.precision == "bf16" and any("no int8 matmuls" in n for n in p.notes)


def test_bad_policy_options():
    g, _ = single_op_graph("Relu", [("in", np.ones(3, np.float32))])
    with pytest.raises(TargetError, match="unknown TPU precision"):
        choose_policy(g, get_chip("v5e"), precision="fp8")
    with pytest.raises(TargetError, match="batch_multiple"):
        choose_policy(g, get_chip("v5e"), batch_multiple=0)


def test_prepared_weight_is_transposed_padded_and_cast():
    w = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)  # [N, K] as Gemm transB gives it
    g, _ = single_op_graph("Relu", [("in", np.ones(3, np.float32))])
    bf16 = choose_policy(g, get_chip("v6e"), precision="bf16")
    out = prepare_matmul_weight(w, True, bf16)
    assert out.shape == (256, 256) and out.dtype.name == "bfloat16"
    np.testing.assert_array_equal(out[:5, :6].astype(np.float32), w.T)
    assert not out[5:].astype(np.float32).any() and not out[:, 6:].astype(np.float32).any()
    fp32 = choose_policy(g, get_chip("v5e"), precision="fp32", pad_to_tile=False)
    assert prepare_matmul_weight(w, False, fp32).shape == (6, 5)


def test_weight_plan_shares_prepared_forms_and_counts_bytes():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    g, _ = single_op_graph("MatMul", [("in", np.ones((2, 64), np.float32)), ("const", w)])
    second = g.add_node("MatMul", [g.inputs[0], g.initializers["c1"]])
    g.set_outputs([g.outputs[0], second.output])
    plan = plan_weights(g, choose_policy(g, get_chip("v5e"), precision="bf16"))
    assert list(plan.arrays) == ["c1@mxu"]  # one prepared copy, no raw copy
    assert plan.parameter_bytes == 128 * 128 * 2
    assert plan.parameter_bytes_by_dtype() == {"bfloat16": 128 * 128 * 2}


def test_int8_plan_stores_int8_weights_and_drops_the_dequantize():
    g = qdq_matmul_graph()
    plan = plan_weights(g, choose_policy(g, get_chip("v5e")))
    assert plan.arrays["w_q@mxu8"].dtype == np.int8 and plan.arrays["w_q@mxu8"].shape == (128, 128)
    assert "dq_w" in plan.skip
    v4 = plan_weights(g, choose_policy(g, get_chip("v4")))  # fallback: dequantized at load, bf16
    assert v4.arrays["dq_w@mxu"].dtype.name == "bfloat16"
    assert not any(a.dtype == np.int8 for a in v4.arrays.values())


def test_int8_lowering_is_exact_against_the_qdq_reference():
    from accelopt.interpreter import run

    g = qdq_matmul_graph(seed=3)
    x = np.random.default_rng(3).standard_normal((2, 5, 96)).astype(np.float32)
    want = run(g, {"x": x})[g.outputs[0].name]
    got = call_lowered(g, {"x": x}, precision="auto", chip="v5e")[g.outputs[0].name]
    # int32 accumulation is exact; only the final f32 scaling rounds
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    signed = qdq_matmul_graph(seed=4, act_zero_point=-5, signed=True)
    want = run(signed, {"x": x})[signed.outputs[0].name]
    got = call_lowered(signed, {"x": x}, precision="auto", chip="v6e")[signed.outputs[0].name]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
