"""ONNX writer: IR -> ONNX that passes the checker and runs in onnxruntime with the interpreter's numbers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import accelopt.ir as ir
from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir import registry
from accelopt.ir.ops.common import same_as_input
from accelopt.targets import onnx_writer as ow
from accelopt.targets.onnx_writer import EXPORTERS, ExportContext, register_exporter, save_onnx, write_onnx

F32 = ir.DType.FLOAT32
ATOL = 1e-6


# -------------------------------------------------------------------- helpers
def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def _ort_run(model: onnx.ModelProto | str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    s = _session(model)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, dict(feeds))))


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype, (a.dtype, a.shape, b.dtype, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _dims(vi: onnx.ValueInfoProto) -> list[Any] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[Any] = []
    for d in tt.shape.dim:
        kind = d.WhichOneof("value")
        out.append(d.dim_value if kind == "dim_value" else d.dim_param if kind == "dim_param" else None)
    return out


def _tiny(w_scale: float = 1.0) -> ir.Graph:
    g = ir.Graph("tiny")
    x = g.add_input("x", ir.TensorType(F32, ("batch", 4)))
    rng = np.random.default_rng(0)
    w = g.add_initializer("w", rng.standard_normal((4, 4)).astype(np.float32) * np.float32(w_scale))
    b = g.add_initializer("b", rng.standard_normal(4).astype(np.float32))
    y = g.add_node("MatMul", [x, w], name="mm").output
    z = g.add_node("Add", [y, b], name="add").output
    r = g.add_node("Relu", [z], name="relu").output
    g.set_outputs([r])
    return g


@pytest.fixture
def temp_op() -> Iterator[Callable[..., None]]:
    """Define ops for one test (skipping names the registry already has) and remove them after."""
    added: list[str] = []

    def define(name: str, **kw: Any) -> None:
        if registry.has_op(name):
            return
        kw.setdefault("infer", same_as_input(0))
        kw.setdefault("kernel", lambda ins, attrs, n: [ins[0]])
        registry.define_op(name, **kw)
        added.append(name)

    yield define
    for name in added:
        registry._REGISTRY.pop(name, None)


@pytest.fixture
def temp_exporters() -> Iterator[None]:
    """Restore the exporter table after a test that registers exporters."""
    saved = dict(EXPORTERS)
    yield
    EXPORTERS.clear()
    EXPORTERS.update(saved)


# ------------------------------------------------------------ basic writing
def test_tiny_graph_checks_runs_and_matches_interpreter() -> None:
    g = _tiny()
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert [o.version for o in m.opset_import if o.domain == ""] == [18]
    assert m.ir_version == 8  # the lowest IR version for opset 18
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Add", "Relu"]
    assert [n.name for n in m.graph.node] == ["mm", "add", "relu"]
    assert {t.name for t in m.graph.initializer} == {"w", "b"}
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    got = _ort_run(m, {"x": x})
    want = run(g, {"x": x})
    assert list(got) == ["relu"]
    assert _max_diff(got["relu"], want["relu"]) <= ATOL


def test_symbolic_and_unknown_dims_are_written() -> None:
    g = ir.Graph("dims")
    x = g.add_input("x", ir.TensorType(F32, ("batch", None, 4)))
    y = g.add_node("Relu", [x], name="r").output
    z = g.add_node("Identity", [y], name="i", types=[ir.TensorType(F32, ("batch", None, None))]).output
    g.set_outputs([z])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert _dims(m.graph.input[0]) == ["batch", None, 4]
    assert _dims(m.graph.output[0]) == ["batch", None, None]
    assert _dims(m.graph.value_info[0]) == ["batch", None, 4]
    xv = np.random.default_rng(2).standard_normal((2, 5, 4)).astype(np.float32)
    assert _max_diff(_ort_run(m, {"x": xv})[z.name], np.maximum(xv, 0)) == 0.0


def test_unknown_rank_output_gets_inferred_shape_and_input_is_refused() -> None:
    g = ir.Graph("rank")
    x = g.add_input("x", ir.TensorType(F32, ("batch", 4)))
    y = g.add_node("Relu", [x], name="r", types=[ir.TensorType(F32, None)]).output
    g.set_outputs([y])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert _dims(m.graph.output[0]) == ["batch", 4]
    g2 = ir.Graph("rank_in")
    u = g2.add_input("u", ir.TensorType(F32, None))
    v = g2.add_input("v", ir.TensorType(F32, None))
    g2.set_outputs([g2.add_node("Add", [u, v], name="a").output])
    with pytest.raises(TargetError, match="needs a rank for every graph input; unknown for u, v"):
        write_onnx(g2)


def test_scalar_type_keeps_rank_zero() -> None:
    g = ir.Graph("scalar")
    s = g.add_input("s", ir.TensorType(F32, ()))
    g.set_outputs([g.add_node("Relu", [s]).output])
    m = write_onnx(g)
    assert _dims(m.graph.input[0]) == []
    assert m.graph.input[0].type.tensor_type.HasField("shape")
    got = _ort_run(m, {"s": np.array(-2.0, np.float32)})
    assert got[g.outputs[0].name].shape == ()


def test_intermediate_value_info() -> None:
    g = _tiny()
    m = write_onnx(g)
    infos = {vi.name: _dims(vi) for vi in m.graph.value_info}
    assert infos == {"mm": ["batch", 4], "add": ["batch", 4]}
    assert not write_onnx(g, value_infos=False).graph.value_info


def test_outputs_that_are_initializers_inputs_or_repeated() -> None:
    g = _tiny()
    r = g.outputs[0]
    b = g.initializers["b"]
    g.set_outputs([r, r, b, g.inputs[0]])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    names = [o.name for o in m.graph.output]
    assert names[0] == "relu" and names[2] == "b" and names[3] == "x"
    assert names[1] not in ("relu", "b", "x")
    # the initializer was renamed; the Add still reads it
    assert "b" not in {t.name for t in m.graph.initializer}
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    got = _ort_run(m, {"x": x})
    want = run(g, {"x": x})
    assert _max_diff(got["relu"], want["relu"]) <= ATOL
    assert _max_diff(got[names[1]], want["relu"]) <= ATOL
    assert _max_diff(got["b"], b.const) == 0.0
    assert _max_diff(got["x"], x) == 0.0


def test_provenance_goes_to_doc_string() -> None:
    g = _tiny()
    g.node("add").provenance = ir.Provenance("fuse", "bias", ("a", "b"))
    m = write_onnx(g)
    docs = {n.name: n.doc_string for n in m.graph.node}
    assert docs["add"] == "fuse/bias from a,b"
    assert docs["mm"] == ""


def test_producer_and_explicit_ir_version() -> None:
    m = write_onnx(_tiny(), ir_version=10)
    assert m.ir_version == 10
    assert m.producer_name == "accelopt"
    onnx.checker.check_model(m, full_check=True)


@pytest.mark.parametrize("opset", [12, ow.MAX_OPSET + 1])
def test_opset_out_of_range(opset: int) -> None:
    with pytest.raises(TargetError, match=f"opset {opset} is out of range"):
        write_onnx(_tiny(), opset=opset)


def test_requested_higher_opset_is_kept() -> None:
    m = write_onnx(_tiny(), opset=21)
    assert [o.version for o in m.opset_import if o.domain == ""] == [21]
    onnx.checker.check_model(m, full_check=True)
    x = np.ones((1, 4), np.float32)
    assert _max_diff(_ort_run(m, {"x": x})["relu"], run(_tiny(), {"x": x})["relu"]) <= ATOL


# ----------------------------------------------------------------- tensors
@pytest.mark.parametrize(
    "dtype", [np.float32, np.float16, np.float64, ml_dtypes.bfloat16, np.int64, np.int32, np.int8, np.uint8, np.bool_]
)
def test_tensor_proto_round_trips_every_dtype(dtype: Any) -> None:
    full = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    for arr in (full, full.T, full[1, 2]):  # contiguous, transposed view, 0-d
        t = ow.tensor_proto(arr, "t")
        assert t.data_type == ir.DType.from_numpy(arr.dtype).onnx
        assert list(t.dims) == list(arr.shape)
        back = numpy_helper.to_array(t)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert back.tobytes() == np.ascontiguousarray(arr).tobytes()


def test_bfloat16_initializer_and_cast_dtype_attribute(temp_op: Callable[..., None]) -> None:
    temp_op(
        "Cast",
        attrs={
            "to": registry.AttrSpec("dtype"),
            "saturate": registry.AttrSpec("int", 1),
            "round_mode": registry.AttrSpec("str", "up"),
        },
        infer=lambda ctx: [ctx.type(0).with_dtype(ctx.attrs["to"])],
        kernel=lambda ins, attrs, n: [ins[0].astype(attrs["to"].np)],
    )
    g = ir.Graph("bf16")
    w = g.add_initializer("w", np.array([1.5, -2.25, 3.0e3, 1e-3], dtype=ml_dtypes.bfloat16))
    g.set_outputs([g.add_node("Cast", [w], {"to": F32}, name="c").output])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.initializer[0].data_type == onnx.TensorProto.BFLOAT16
    # saturate/round_mode hold the newest defaults: dropped, so opset 18 still fits
    assert m.opset_import[0].version == 18
    (cast,) = m.graph.node
    assert [(a.name, a.i) for a in cast.attribute] == [("to", onnx.TensorProto.FLOAT)]
    got = _ort_run(m, {})["c"]
    assert got.dtype == np.float32 and got.tolist() == w.const.astype(np.float32).tolist()
    # a non-default saturate needs the opset that introduced it
    g19 = ir.Graph("sat")
    w = g19.add_initializer("w", np.ones(2, ml_dtypes.bfloat16))
    g19.set_outputs([g19.add_node("Cast", [w], {"to": F32, "saturate": 0}, name="c").output])
    assert write_onnx(g19).opset_import[0].version == 19


# -------------------------------------------------------------- attributes
@pytest.mark.parametrize(
    ("value", "kind", "expect_type", "expect"),
    [
        (3, "int", onnx.AttributeProto.INT, 3),
        (True, "int", onnx.AttributeProto.INT, 1),
        (0.5, "float", onnx.AttributeProto.FLOAT, 0.5),
        ("tanh", "str", onnx.AttributeProto.STRING, b"tanh"),
        ((1, -1), "ints", onnx.AttributeProto.INTS, [1, -1]),
        ((), "ints", onnx.AttributeProto.INTS, []),
        ((0.25, 2.0), "floats", onnx.AttributeProto.FLOATS, [0.25, 2.0]),
        (("a", "b"), "strs", onnx.AttributeProto.STRINGS, [b"a", b"b"]),
        (ir.DType.FLOAT16, "dtype", onnx.AttributeProto.INT, onnx.TensorProto.FLOAT16),
        (ir.DType.INT64, None, onnx.AttributeProto.INT, onnx.TensorProto.INT64),
    ],
)
def test_make_attribute_kinds(value: Any, kind: str | None, expect_type: int, expect: Any) -> None:
    a = ow.make_attribute("k", value, kind)
    assert a.name == "k" and a.type == expect_type
    assert onnx.helper.get_attribute_value(a) == expect


def test_make_attribute_tensor_bfloat16() -> None:
    arr = np.array([[1.0, -0.5]], dtype=ml_dtypes.bfloat16)
    a = ow.make_attribute("value", arr, "tensor")
    assert a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.BFLOAT16
    assert numpy_helper.to_array(a.t).tobytes() == arr.tobytes()


def test_make_attribute_rejects_unknown_values() -> None:
    with pytest.raises(TypeError, match="cannot write attribute"):
        ow.make_attribute("k", object())


def test_constant_node_tensor_attribute() -> None:
    g = ir.Graph("const")
    c = g.add_node("Constant", [], {"value": np.array([[1, 2], [3, 4]], np.int64)}, name="c").output
    g.set_outputs([g.add_node("Add", [c, c], name="a").output])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    (const,) = [n for n in m.graph.node if n.op_type == "Constant"]
    assert [a.name for a in const.attribute] == ["value"]
    got = _ort_run(m, {})
    assert got["a"].tolist() == [[2, 4], [6, 8]]


# --------------------------------------------------------- opset selection
def _one_node_graph(
    op: str, attrs: Mapping[str, Any], inputs: list[tuple[str, ir.TensorType]], out: ir.TensorType | None = None
) -> ir.Graph:
    g = ir.Graph(op.lower())
    vals = [g.add_input(n, t) for n, t in inputs]
    node = g.add_node(op, vals, attrs, types=[out or vals[0].type], name="n")
    g.set_outputs([node.output])
    return g


def test_opset_raised_to_where_the_op_exists(temp_op: Callable[..., None]) -> None:
    temp_op("Gelu", attrs={"approximate": registry.AttrSpec("str", "none")})
    g = _one_node_graph("Gelu", {}, [("x", ir.TensorType(F32, ("n", 3)))])
    m = write_onnx(g)
    assert [o.version for o in m.opset_import if o.domain == ""] == [20]
    assert not m.graph.node[0].attribute  # approximate="none" is ONNX's default
    onnx.checker.check_model(m, full_check=True)
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    from scipy.special import erf

    want = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    assert _max_diff(_ort_run(m, {"x": x})["n"], want.astype(np.float32)) <= 1e-6


def test_opset_raised_for_axes_input_and_new_attributes(temp_op: Callable[..., None]) -> None:
    temp_op(
        "ReduceMean",
        inputs=(1, 2),
        attrs={"keepdims": registry.AttrSpec("int", 1), "noop_with_empty_axes": registry.AttrSpec("int", 0)},
    )
    temp_op("Shape", attrs={"start": registry.AttrSpec("int", 0), "end": registry.AttrSpec("int", None)})
    i64 = ir.TensorType(ir.DType.INT64, (1,))
    g = _one_node_graph(
        "ReduceMean", {}, [("x", ir.TensorType(F32, (2, 3))), ("axes", i64)], ir.TensorType(F32, (None, None))
    )
    # ReduceMean takes axes as an input from opset 18 only
    assert [o.version for o in write_onnx(g, opset=13).opset_import] == [18]
    # Shape start/end exist from opset 15; default values are dropped and need nothing
    shape_t = ir.TensorType(ir.DType.INT64, (None,))
    g2 = _one_node_graph("Shape", {"start": 0}, [("x", ir.TensorType(F32, (2, 3)))], shape_t)
    m2 = write_onnx(g2, opset=13)
    assert m2.opset_import[0].version == 13 and not m2.graph.node[0].attribute
    g3 = _one_node_graph("Shape", {"start": -1}, [("x", ir.TensorType(F32, (2, 3)))], shape_t)
    m3 = write_onnx(g3, opset=13)
    assert m3.opset_import[0].version == 15
    assert [(a.name, a.i) for a in m3.graph.node[0].attribute] == [("start", -1)]


def test_opset_raised_for_element_types(temp_op: Callable[..., None]) -> None:
    # Where accepts bfloat16 from opset 16
    temp_op("Where", inputs=3, infer=same_as_input(1))
    bf = ir.TensorType(ir.DType.BFLOAT16, (2,))
    g = ir.Graph("where")
    c = g.add_input("c", ir.TensorType(ir.DType.BOOL, (2,)))
    a, b = g.add_input("a", bf), g.add_input("b", bf)
    g.set_outputs([g.add_node("Where", [c, a, b], name="w").output])
    assert write_onnx(g, opset=13).opset_import[0].version == 16
    g32 = ir.Graph("where32")
    c = g32.add_input("c", ir.TensorType(ir.DType.BOOL, (2,)))
    a, b = g32.add_input("a", ir.TensorType(F32, (2,))), g32.add_input("b", ir.TensorType(F32, (2,)))
    g32.set_outputs([g32.add_node("Where", [c, a, b], name="w").output])
    assert write_onnx(g32, opset=13).opset_import[0].version == 13


def test_semantic_rule_pad_wrap(temp_op: Callable[..., None]) -> None:
    temp_op("Pad", inputs=(2, 4), attrs={"mode": registry.AttrSpec("str", "constant")})
    i64 = ir.TensorType(ir.DType.INT64, (2,))
    g = _one_node_graph("Pad", {"mode": "wrap"}, [("x", ir.TensorType(F32, (3,))), ("pads", i64)])
    assert write_onnx(g, check=False).opset_import[0].version == 19
    g2 = _one_node_graph("Pad", {"mode": "reflect"}, [("x", ir.TensorType(F32, (3,))), ("pads", i64)])
    assert write_onnx(g2, check=False).opset_import[0].version == 18


def test_attribute_unknown_to_every_opset_is_an_error(temp_op: Callable[..., None]) -> None:
    temp_op("Softmax", attrs={"axis": registry.AttrSpec("int", -1), "temperature": registry.AttrSpec("float", 1.0)})
    g = _one_node_graph("Softmax", {"temperature": 2.0}, [("x", ir.TensorType(F32, (2, 3)))])
    with pytest.raises(TargetError, match=r"node n \(Softmax\).*attribute 'temperature' is unknown"):
        write_onnx(g)


# ---------------------------------------------------------- unsupported ops
def test_unsupported_ops_are_all_listed(temp_op: Callable[..., None]) -> None:
    temp_op("_WriterTestFusedA", domain="accelopt")
    temp_op("_WriterTestFusedB", domain="accelopt")
    temp_op("NotAnOnnxOp")
    g = ir.Graph("bad")
    x = g.add_input("x", ir.TensorType(F32, (2,)))
    a = g.add_node("_WriterTestFusedA", [x], name="first").output
    b = g.add_node("Relu", [a], name="fine").output
    c = g.add_node("_WriterTestFusedB", [b], name="second").output
    d = g.add_node("NotAnOnnxOp", [c], name="third").output
    e = g.add_node("_WriterTestFusedA", [d], name="fourth").output
    g.set_outputs([e])
    with pytest.raises(TargetError) as info:
        write_onnx(g)
    msg = str(info.value)
    assert "4 node(s) are not supported" in msg
    for where in ("first (_WriterTestFusedA)", "second (_WriterTestFusedB)", "third (NotAnOnnxOp)", "fourth"):
        assert where in msg
    assert "fine" not in msg


# --------------------------------------------------------------- exporters
def test_registered_exporter_expands_and_contrib_domain(temp_op: Callable[..., None], temp_exporters: None) -> None:
    temp_op("_WriterTestScaleGelu", domain="accelopt", attrs={"alpha": registry.AttrSpec("float", 2.0)})

    @register_exporter("_WriterTestScaleGelu")
    def _export(ctx: ExportContext, node: ir.Node) -> list[onnx.NodeProto]:
        alpha = ctx.add_initializer(np.array(node.attrs.get("alpha", 2.0), np.float32), f"{node.name}_alpha")
        scaled = ctx.fresh(f"{node.name}_scaled")
        ctx.set_type(scaled, node.output.type)
        return [
            ctx.make_node("Mul", [ctx.name(node.inputs[0]), alpha], [scaled], name=f"{node.name}_mul"),
            ctx.make_node("FastGelu", [scaled], [ctx.name(node.output)], domain="com.microsoft", name=node.name),
        ]

    with pytest.raises(ValueError, match="already registered"):
        register_exporter("_WriterTestScaleGelu")(lambda ctx, node: [])

    g = ir.Graph("contrib")
    x = g.add_input("x", ir.TensorType(F32, ("n", 3)))
    y = g.add_node("_WriterTestScaleGelu", [x], {"alpha": 0.5}, name="sg").output
    g.set_outputs([g.add_node("Relu", [y], name="r").output])
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 18), ("com.microsoft", 1)}
    assert [(n.domain, n.op_type) for n in m.graph.node] == [("", "Mul"), ("com.microsoft", "FastGelu"), ("", "Relu")]
    assert "sg_scaled" in {vi.name for vi in m.graph.value_info}
    x_in = np.array([[-2.0, 0.5, 3.0]], np.float32)
    h = 0.5 * x_in
    want = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))
    assert _max_diff(_ort_run(m, {"x": x_in})["r"], np.maximum(want, 0).astype(np.float32)) <= 1e-5


def test_exporter_requiring_a_newer_opset_restarts(temp_op: Callable[..., None], temp_exporters: None) -> None:
    temp_op("_WriterTestNeeds20", domain="accelopt")

    @register_exporter("_WriterTestNeeds20")
    def _export(ctx: ExportContext, node: ir.Node) -> list[onnx.NodeProto]:
        ctx.require_opset(20, "Gelu")
        return [ctx.make_node("Gelu", [ctx.name(node.inputs[0])], [ctx.name(node.output)], approximate="tanh")]

    g = ir.Graph("needs20")
    x = g.add_input("x", ir.TensorType(F32, (3,)))
    g.set_outputs([g.add_node("_WriterTestNeeds20", [x], name="n").output])
    m = write_onnx(g)
    assert m.opset_import[0].version == 20
    x_in = np.array([-1.0, 0.0, 2.0], np.float32)
    want = 0.5 * x_in * (1 + np.tanh(0.7978845608 * (x_in + 0.044715 * x_in**3)))
    assert _max_diff(_ort_run(m, {"x": x_in})["n"], want.astype(np.float32)) <= 1e-6


def test_exporter_must_produce_the_node_outputs(temp_op: Callable[..., None], temp_exporters: None) -> None:
    temp_op("_WriterTestForgetful", domain="accelopt")
    register_exporter("_WriterTestForgetful")(lambda ctx, node: [])
    g = ir.Graph("forgetful")
    x = g.add_input("x", ir.TensorType(F32, (3,)))
    g.set_outputs([g.add_node("_WriterTestForgetful", [x], name="n").output])
    with pytest.raises(TargetError, match=r"exporter of node n \(_WriterTestForgetful\) did not produce output"):
        write_onnx(g)


def test_fresh_names_never_clash_with_graph_names(temp_op: Callable[..., None], temp_exporters: None) -> None:
    temp_op("_WriterTestTwoStep", domain="accelopt")

    @register_exporter("_WriterTestTwoStep")
    def _export(ctx: ExportContext, node: ir.Node) -> list[onnx.NodeProto]:
        mid = ctx.fresh("x")  # "x" is the graph input: must be renamed
        return [
            ctx.make_node("Neg", [ctx.name(node.inputs[0])], [mid]),
            ctx.make_node("Neg", [mid], [ctx.name(node.output)]),
        ]

    g = ir.Graph("names")
    x = g.add_input("x", ir.TensorType(F32, (3,)))
    g.set_outputs([g.add_node("_WriterTestTwoStep", [x], name="n").output])
    m = write_onnx(g)
    assert m.graph.node[0].output[0] not in ("x", "n")
    x_in = np.array([1.0, -2.0, 3.0], np.float32)
    assert _max_diff(_ort_run(m, {"x": x_in})["n"], x_in) == 0.0


# ------------------------------------------------- ScaledDotProductAttention
def _sdpa_graph(
    dtype: ir.DType, mask: str | None, causal: int, scale: float, symbolic: bool
) -> tuple[ir.Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    g = ir.Graph("sdpa")
    B, H, L, S, E = 2, 2, 5, 6, 8
    if symbolic:
        qs, ks = ("b", H, "L", "e"), ("b", H, "S", "e")
    else:
        qs, ks = (B, H, L, E), (B, H, S, E)
    ins = [g.add_input("q", ir.TensorType(dtype, qs)), g.add_input("k", ir.TensorType(dtype, ks))]
    ins.append(g.add_input("v", ir.TensorType(dtype, ks)))
    feeds = {
        "q": rng.standard_normal((B, H, L, E)).astype(dtype.np),
        "k": rng.standard_normal((B, H, S, E)).astype(dtype.np),
        "v": rng.standard_normal((B, H, S, E)).astype(dtype.np),
    }
    if mask == "bool":
        ins.append(g.add_input("m", ir.TensorType(ir.DType.BOOL, (B, 1, 1, S))))
        keep = rng.random((B, 1, 1, S)) > 0.3
        keep[1] = False  # batch 1: every key masked -> zeros, not NaN
        feeds["m"] = keep
    elif mask == "float":
        ins.append(g.add_input("m", ir.TensorType(dtype, (B, 1, 1, S))))
        feeds["m"] = np.where(rng.random((B, 1, 1, S)) > 0.3, 0.0, -1e4).astype(dtype.np)
    out = g.add_node("ScaledDotProductAttention", ins, {"scale": scale, "is_causal": causal}, name="attn").output
    g.set_outputs([out])
    return g, feeds


@pytest.mark.parametrize("symbolic", [False, True])
@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_sdpa_expansion_matches_reference(mask: str | None, causal: int, symbolic: bool) -> None:
    g, feeds = _sdpa_graph(F32, mask, causal, 0.0 if symbolic else 0.3, symbolic)
    m = write_onnx(g)
    onnx.checker.check_model(m, full_check=True)
    assert {n.op_type for n in m.graph.node} <= {
        "Transpose", "MatMul", "Mul", "Where", "Add", "Softmax", "IsNaN", "Shape", "Cast", "Sqrt",
        "Reciprocal", "ConstantOfShape", "Trilu",
    }  # fmt: skip
    got = _ort_run(m, feeds)["attn"]
    want = run(g, feeds)["attn"]
    assert not np.isnan(got).any()
    assert _max_diff(got, want) <= 1e-6
    if mask == "bool":
        assert np.all(got[1] == 0.0)


@pytest.mark.parametrize("dtype", [ir.DType.FLOAT16, ir.DType.FLOAT64])
def test_sdpa_expansion_other_float_types(dtype: ir.DType) -> None:
    g, feeds = _sdpa_graph(dtype, "bool", 1, 0.0, False)
    m = write_onnx(g)
    got = _ort_run(m, feeds)["attn"]
    want = run(g, feeds)["attn"]
    assert got.dtype == dtype.np
    assert _max_diff(got, want) <= (1e-3 if dtype == ir.DType.FLOAT16 else 1e-12)


# ------------------------------------------------------------------ saving
def test_save_onnx_atomic_replace(tmp_path: Any) -> None:
    path = tmp_path / "sub" / "model.onnx"
    g = _tiny()
    save_onnx(g, path)
    first = path.read_bytes()
    onnx.checker.check_model(str(path), full_check=True)
    g2 = _tiny(w_scale=2.0)
    save_onnx(g2, path)
    assert path.read_bytes() != first
    assert sorted(os.listdir(path.parent)) == ["model.onnx"]  # no temporary files left
    x = np.ones((2, 4), np.float32)
    assert _max_diff(_ort_run(str(path), {"x": x})["relu"], run(g2, {"x": x})["relu"]) <= ATOL


def test_save_onnx_failure_leaves_existing_file(tmp_path: Any, temp_op: Callable[..., None]) -> None:
    temp_op("_WriterTestNoExport", domain="accelopt")
    path = tmp_path / "model.onnx"
    save_onnx(_tiny(), path)
    before = path.read_bytes()
    g = ir.Graph("bad")
    x = g.add_input("x", ir.TensorType(F32, (2,)))
    g.set_outputs([g.add_node("_WriterTestNoExport", [x], name="n").output])
    with pytest.raises(TargetError, match="_WriterTestNoExport"):
        save_onnx(g, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_save_onnx_external_data(tmp_path: Any) -> None:
    g = ir.Graph("ext")
    x = g.add_input("x", ir.TensorType(F32, ("batch", 64)))
    rng = np.random.default_rng(5)
    w1 = g.add_initializer("w1", rng.standard_normal((64, 64)).astype(np.float32))  # 16 KiB
    w2 = g.add_initializer("w2", rng.standard_normal((64, 64)).astype(np.float32))
    b = g.add_initializer("b", rng.standard_normal(64).astype(np.float32))  # 256 B stays inline
    h = g.add_node("MatMul", [x, w1], name="mm1").output
    h = g.add_node("Add", [h, b], name="add").output
    g.set_outputs([g.add_node("MatMul", [h, w2], name="mm2").output])
    path = tmp_path / "m.onnx"
    model = save_onnx(g, path, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    locs = {t.name: t.data_location for t in model.graph.initializer}
    assert locs == {"w1": onnx.TensorProto.EXTERNAL, "w2": onnx.TensorProto.EXTERNAL, "b": onnx.TensorProto.DEFAULT}
    offsets = sorted(int(e.value) for t in model.graph.initializer for e in t.external_data if e.key == "offset")
    assert offsets == [0, 16384] and all(o % 4096 == 0 for o in offsets)
    assert os.path.getsize(path) < 4096
    onnx.checker.check_model(str(path), full_check=True)
    loaded = onnx.load(str(path))
    assert numpy_helper.to_array(loaded.graph.initializer[1]).tobytes() == w2.const.tobytes()
    xv = rng.standard_normal((3, 64)).astype(np.float32)
    got = _ort_run(str(path), {"x": xv})["mm2"]
    assert _max_diff(got, run(g, {"x": xv})["mm2"]) <= 1e-5
    # saving again in place replaces the data file instead of appending to it
    save_onnx(g, path, external_data=True)
    assert os.path.getsize(tmp_path / "m.onnx.data") == 16384 * 2
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]


def test_write_onnx_marks_external_data_for_save_model(tmp_path: Any) -> None:
    g = _tiny()  # w: 64 bytes, b: 16 bytes
    m = write_onnx(g, external_data_threshold=64)
    ext = {t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert ext == {"w"}
    path = tmp_path / "tiny.onnx"
    onnx.save_model(m, str(path))
    assert (tmp_path / "tiny.onnx.data").stat().st_size == 64
    onnx.checker.check_model(str(path), full_check=True)
    x = np.ones((1, 4), np.float32)
    assert _max_diff(_ort_run(str(path), {"x": x})["relu"], run(g, {"x": x})["relu"]) <= ATOL


# ------------------------------------------------ round trips of real exports
ROUND_TRIP_TOL = 1e-5


def _missing_ops(path: os.PathLike[str] | str) -> list[str]:
    """Default-domain ops of an ONNX file that the registry does not define yet."""
    model = onnx.load(str(path), load_external_data=False)
    return sorted(
        {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and not registry.has_op(n.op_type)}
    )


def _unoptimized(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _round_trip(path: os.PathLike[str] | str, inputs: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, float]:
    """Import ``path``, write it back, check it, and compare onnxruntime on both files; returns the worst error.

    With onnxruntime's graph optimizations on (the default), its fusions may
    differ between the two files (they are keyed to op versions), so outputs
    may differ by rounding: at most ``ROUND_TRIP_TOL``. With optimizations off
    both files run the same kernels on the same data: outputs are identical.
    """
    from accelopt.frontends.onnx import import_onnx_model, load_onnx

    missing = _missing_ops(path)
    if missing:
        pytest.skip(f"the op registry does not define {', '.join(missing)} yet")
    model = load_onnx(path)
    written = write_onnx(model.graph)
    onnx.checker.check_model(written, full_check=True)
    session = _session(written)
    out_names = [o.name for o in session.get_outputs()]
    assert out_names == model.output_names
    plain_written, plain_original = _unoptimized(written), _unoptimized(str(path))
    worst = 0.0
    for feeds in inputs:
        ref = model.reference(feeds)
        got = dict(zip(out_names, session.run(None, feeds)))
        for k in out_names:
            err = _max_diff(got[k], ref[k])
            assert err <= ROUND_TRIP_TOL, (k, err)
            worst = max(worst, err)
        for a, b in zip(plain_written.run(None, feeds), plain_original.run(None, feeds)):
            assert _max_diff(a, b) == 0.0
    # the written file imports back to the same ops
    again = import_onnx_model(written)
    assert again.op_counts() == model.graph.op_counts()
    return written, worst


def _modelzoo() -> Any:
    return pytest.importorskip("modelzoo")


def _zoo_params() -> list[Any]:
    try:
        import modelzoo as mz
    except ImportError:
        return []
    return [pytest.param(f, e, o, id=f"{f}-{e}{o}") for f in mz.FAMILIES for e, o in mz.EXPORTERS]


@pytest.mark.parametrize(("family", "exporter", "opset"), _zoo_params())
def test_round_trip_tiny_exports_match_original(family: str, exporter: str, opset: int) -> None:
    mz = _modelzoo()
    path = mz.export_onnx(family, exporter=exporter, opset=opset)
    inputs = [mz.family_inputs(family, b, s, seed) for b, s, seed in ((3, 11, 1), (1, 5, 2))]
    written, worst = _round_trip(path, inputs)
    # symbolic dims survive: inputs [batch, sequence], outputs start with batch
    for vi in written.graph.input:
        assert _dims(vi) == ["batch", "sequence"], vi.name
    for vi in written.graph.output:
        assert _dims(vi)[0] == "batch", vi.name
    assert worst <= ROUND_TRIP_TOL


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("family", ["minilm", "bert-base"])
def test_round_trip_full_size_models(family: str, exporter: str) -> None:
    mz = _modelzoo()
    opset = 17
    if family == "minilm":
        path = mz.minilm_onnx(exporter=exporter, opset=opset)
        inputs = [mz.family_inputs("minilm", 2, 128, 3)]
    else:
        path = mz.export_onnx("bert", exporter=exporter, opset=opset, size="full")
        cfg = mz.config_for("bert", "full")
        inputs = [mz.family_inputs("bert", 1, 128, 3, config=cfg)]
    _, worst = _round_trip(path, inputs)
    print(f"{family} {exporter}{opset}: max abs error of the written model vs the original {worst:.3g}")
    assert worst <= ROUND_TRIP_TOL
