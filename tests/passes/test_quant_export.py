"""ONNX exporters of the quantized ops: onnxruntime runs what the interpreter computes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest
from quant_check import calibration_for, inputs_for, mlp, outputs

import accelopt.ir as ir
from accelopt.ir import parse
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.targets.onnx_writer import write_onnx


def _ort(graph: ir.Graph, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], Counter[str]]:
    proto = write_onnx(graph)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    return res, Counter(n.op_type for n in proto.graph.node)


def _int8(graph: ir.Graph, spec: str) -> ir.Graph:
    ctx = PassContext(calibration=calibration_for(graph))
    out, _ = PassManager(build_pipeline(spec), ctx).run(graph)
    return out


@pytest.mark.parametrize(
    "spec, expect",
    [
        ("int8{activations=asymmetric}", "MatMulIntegerToFloat"),  # per row, zero points per row (2d)
        ("int8", "MatMulInteger"),  # per row, symmetric int8 (2f)
        ("int8{activations=asymmetric,granularity=tensor}", "MatMulIntegerToFloat"),  # DynamicQuantizeLinear
        ("int8{granularity=tensor}", "MatMulInteger"),
        ("int8{mode=static,calibration=minmax,activations=asymmetric}", "MatMulIntegerToFloat"),
        ("int8{mode=static,calibration=minmax}", "MatMulIntegerToFloat"),  # int8 data quantized again as uint8
        ("int8{weights=per-tensor,activations=asymmetric}", "MatMulIntegerToFloat"),
    ],
)
def test_qlinear_runs_in_onnxruntime_as_in_the_interpreter(spec: str, expect: str) -> None:
    g = _int8(mlp(1), spec)
    feeds = inputs_for(g, n=3, seq=8)
    got, ops = _ort(g, feeds)
    assert ops[expect] >= 1, ops
    np.testing.assert_allclose(got[0], outputs(g, feeds)[0], rtol=1e-5, atol=2e-5)


def test_symmetric_uint8_per_row_uses_the_row_scale_inside_the_gemm() -> None:
    """Symmetric uint8 (zero point 128, the onnx target's choice for symmetric): one MatMulIntegerToFloat per layer."""
    from accelopt.targets.base import Capabilities

    caps = Capabilities(name="u8", dtypes=("float32", "uint8", "int8"), quantization={"activations": "symmetric"})
    g = mlp(2)
    out, _ = PassManager(build_pipeline("int8"), PassContext(target=caps)).run(g)
    assert "to=uint8" in str(out) and "symmetric=1" in str(out)
    feeds = inputs_for(g, n=3, seq=8)
    got, ops = _ort(out, feeds)
    assert ops["MatMulIntegerToFloat"] == 2 and ops["Sub"] == 0
    np.testing.assert_allclose(got[0], outputs(out, feeds)[0], rtol=1e-4, atol=1e-4)


def test_requantized_static_chain_runs_in_onnxruntime() -> None:
    g = _int8(mlp(2), "int8{mode=static,calibration=minmax,activations=asymmetric}")
    assert g.node("fc0").outputs[0].dtype == ir.DType.UINT8
    feeds = inputs_for(g, n=3, seq=8)
    got, _ = _ort(g, feeds)
    np.testing.assert_allclose(got[0], outputs(g, feeds)[0], rtol=1e-4, atol=1e-4)


ATTENTION = """graph t(%x: float32[batch,5,16], %mask: int64[batch,5]) {
  %w: float32[16,48] = const <sha:0>
  %b: float32[48] = const <sha:1>
  %att: float32[batch,5,16] = Attention{num_heads=4}(%x, %w, %b, %mask) @att
  return %att
}
"""


@pytest.mark.parametrize(
    "spec, expect",
    [
        ("int8{activations=asymmetric,granularity=tensor}", "QAttention"),
        ("int8{activations=asymmetric}", "MultiHeadAttention"),
        ("int8{mode=static,calibration=minmax,activations=asymmetric}", "QAttention"),
    ],
)
def test_qattention_runs_in_onnxruntime(spec: str, expect: str) -> None:
    rng = np.random.default_rng(5)
    g = parse(
        ATTENTION,
        {"w": (rng.standard_normal((16, 48)) / 4).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32)},
    )
    q = _int8(g, spec)
    assert q.node("att").op == "QAttention"
    feeds = inputs_for(q, n=2, seq=5)
    feeds["mask"] = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)
    got, ops = _ort(q, feeds)
    assert ops[expect] == 1, ops
    np.testing.assert_allclose(got[0], outputs(q, feeds)[0], rtol=1e-4, atol=1e-4)


CAUSAL_BIAS = """graph t(%x: float32[batch,5,16], %mask: int64[batch,5], %bias: float32[1,4,5,5]) {
  %w: float32[16,48] = const <sha:0>
  %b: float32[48] = const <sha:1>
  %att: float32[batch,5,16] = Attention{num_heads=4, unidirectional=1}(%x, %w, %b, %mask, %bias) @att
  return %att
}
"""


@pytest.mark.parametrize("spec", ["int8{activations=asymmetric,granularity=tensor}", "int8{activations=asymmetric}"])
def test_qattention_with_bias_and_causal_runs_in_onnxruntime(spec: str) -> None:
    """com.microsoft.QAttention has no attention_bias: the bias goes through MultiHeadAttention either way."""
    rng = np.random.default_rng(6)
    g = parse(
        CAUSAL_BIAS,
        {"w": (rng.standard_normal((16, 48)) / 4).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32)},
    )
    q = _int8(g, spec)
    att = q.node("att")
    assert att.op == "QAttention" and att.attrs["unidirectional"] == 1 and att.inputs[8].name == "bias"
    feeds = inputs_for(q, n=2, seq=5)
    feeds["mask"] = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)
    got, ops = _ort(q, feeds)
    assert ops["MultiHeadAttention"] == 1 and ops["QAttention"] == 0, ops
    np.testing.assert_allclose(got[0], outputs(q, feeds)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("to", [ir.DType.INT8, ir.DType.UINT8])
@pytest.mark.parametrize("symmetric", [0, 1])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_dynamic_quantize_exports_exactly(to: ir.DType, symmetric: int, granularity: str) -> None:
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType(ir.DType.FLOAT32, ("batch", 6, 32)))
    node = g.add_node("DynamicQuantize", [x], {"to": to, "symmetric": symmetric, "granularity": granularity}, outputs=3)
    g.set_outputs(list(node.outputs))
    feeds = {"x": (np.random.default_rng(1).standard_normal((3, 6, 32)) * 4).astype(np.float32)}
    feeds["x"][1, 2] = 0.0
    got, _ = _ort(g, feeds)
    want = outputs(g, feeds)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
