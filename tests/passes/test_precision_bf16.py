"""``bf16`` (``convert-bf16``): golden text, numerics, no-match and ``modified``, verify."""

from __future__ import annotations

import numpy as np
from quant_check import check_four_ways, inputs_for, mlp, outputs
from test_precision_fp16 import AFTER as FP16_AFTER
from test_precision_fp16 import BEFORE

import accelopt.ir as ir
from accelopt.passes.base import PassContext
from accelopt.targets.base import Capabilities

AFTER = (
    FP16_AFTER.replace("float16", "bfloat16")
    .replace("fp16", "bf16")
    .replace(
        "%out: float32[batch,2,4] = Cast{to=float32}(%out_bf16) @out_output_bf16",
        "%out: float32[batch,2,4] = Cast{to=float32}(%out_bf16) @out_output_fp32",
    )
)


def test_golden_bf16() -> None:
    res = check_four_ways("bf16", BEFORE, AFTER, cosine=0.999)
    assert res.stats["low_nodes"] == 2 and not res.stats["overflow_guard"]


def test_bf16_numerics_on_an_mlp() -> None:
    g = mlp(3)
    res = check_four_ways("bf16", g, "*", cosine=0.9995)
    feeds = inputs_for(g, seq=8)
    err = np.abs(outputs(res.graph, feeds)[0] - outputs(g, feeds)[0]).max()
    assert 1e-4 < err < 0.1  # bfloat16's 8-bit mantissa: coarser than float16
    assert all(v.dtype == ir.DType.BFLOAT16 for n in res.graph.nodes if n.op == "Linear" for v in n.outputs)


def test_bf16_has_no_overflow_guard_range_problem() -> None:
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 4)))
    big = g.add_node("Mul", [x, g.add_initializer("k", np.array(1e30, np.float32))], name="huge").output
    g.set_outputs([g.add_node("Relu", [big], name="relu").output])
    res = check_four_ways("bf16", g, "*", cosine=0.999)
    assert res.graph.node("huge").outputs[0].dtype == ir.DType.BFLOAT16


def test_no_match_and_target_capabilities() -> None:
    check_four_ways("bf16{exclude=Linear+Relu}", BEFORE, None, expect_modified=False)
    res = check_four_ways(
        "bf16",
        BEFORE,
        None,
        ctx=PassContext(target=Capabilities(name="onnx-like", dtypes=("float32", "float16"))),
        expect_modified=False,
    )
    assert "does not compute in bfloat16" in res.notes[0]
    tpu = Capabilities(name="tpu-like", dtypes=("float32", "bfloat16"))
    check_four_ways("bf16", BEFORE, AFTER, ctx=PassContext(target=tpu), cosine=0.999)
