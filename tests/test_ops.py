"""Unit tests of the standard ONNX op library: symbolic inference and kernels.

1. Symbolic shape inference: broadcasting, Reshape with 0/-1, shape
   computations from ``Shape`` (the dynamic-axes patterns exporters emit),
   Slice/Gather/Concat/Range/Expand on symbolic values, reductions, Split,
   Einsum, LayerNormalization statistics, dtype rules and errors.
2. Kernels against onnxruntime on seeded inputs (one-node ONNX models), with
   the BERT ops first.
3. ``fast_erf`` accuracy, dtype preservation, and integer semantics
   (C-style Div, Mod with ``fmod``, BitShift edge cases).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.special
from onnx import helper

from accelopt.errors import VerifyError
from accelopt.interpreter import Interpreter
from accelopt.ir import DType, Graph, TensorType, get_op
from accelopt.ir.ops.common import fast_erf, sym_value
from modelzoo import run_one_op as run_node

F32 = DType.FLOAT32
I64 = DType.INT64
ORT_OPSET = 21


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def run_ort(
    op: str, inputs: list[np.ndarray | None], attrs: dict | None = None, n_out: int = 1, opset: int = ORT_OPSET
) -> list[np.ndarray]:
    names = ["" if a is None else f"in{i}" for i, a in enumerate(inputs)]
    while names and names[-1] == "":  # onnxruntime 1.32 crashes on LayerNormalization(x, scale, "")
        names.pop()
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.asarray(a).shape)
        for n, a in zip(names, inputs)
        if a is not None
    ]
    g_out = [onnx.ValueInfoProto(name=o) for o in outs]
    model = helper.make_model(
        helper.make_graph([node], "t", g_in, g_out), opset_imports=[helper.make_opsetid("", opset)]
    )
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: np.asarray(a) for n, a in zip(names, inputs) if a is not None})


def check_vs_ort(
    op: str,
    inputs: list[np.ndarray | None],
    attrs: dict | None = None,
    *,
    ir_attrs: dict | None = None,
    n_out: int = 1,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    opset: int = ORT_OPSET,
) -> list[np.ndarray]:
    ours = run_node(op, inputs, ir_attrs if ir_attrs is not None else attrs, n_out)
    ref = run_ort(op, inputs, attrs, n_out, opset)
    for k, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == b.dtype, f"{op} output {k}: dtype {a.dtype} vs onnxruntime {b.dtype}"
        assert a.shape == b.shape, f"{op} output {k}: shape {a.shape} vs onnxruntime {b.shape}"
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{op} output {k}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{op} output {k}")
    return ours


def infer(op: str, types: list[TensorType | None], attrs: dict | None = None, n_out: int = 1, consts=None):
    """Output types of ``op`` for input types (``consts[i]`` makes input i an initializer)."""
    g = Graph("t")
    vals = []
    for i, t in enumerate(types):
        if consts and i in consts:
            vals.append(g.add_initializer(f"c{i}", np.asarray(consts[i])))
        elif t is None:
            vals.append(None)
        else:
            vals.append(g.add_input(f"in{i}", t))
    node = g.add_node(op, vals, attrs or {}, outputs=n_out)
    return [v.type for v in node.outputs]


# ================================================================ 1. inference
def test_broadcast_keeps_symbols_and_checks_dtypes() -> None:
    a = TensorType(F32, ("batch", "seq", 768))
    b = TensorType(F32, (768,))
    assert infer("Add", [a, b])[0] == TensorType(F32, ("batch", "seq", 768))
    m = TensorType(F32, ("batch", 1, 1, "seq"))
    s = TensorType(F32, ("batch", 12, "seq", "seq"))
    assert infer("Add", [s, m])[0].shape == ("batch", 12, "seq", "seq")
    assert infer("Equal", [a, b])[0].dtype == DType.BOOL
    assert infer("Where", [TensorType(DType.BOOL, (1, "seq")), a, TensorType(F32, ())])[0].shape == (
        "batch",
        "seq",
        768,
    )
    with pytest.raises(VerifyError, match="share one dtype"):
        infer("Add", [a, TensorType(DType.FLOAT64, (768,))])
    with pytest.raises(VerifyError, match="do not broadcast"):
        infer("Mul", [TensorType(F32, (3, 4)), TensorType(F32, (5,))])
    with pytest.raises(VerifyError, match="expected one of"):
        infer("Sqrt", [TensorType(I64, (3,))])


def test_shape_and_size_types() -> None:
    x = TensorType(F32, ("batch", "seq", 384))
    assert infer("Shape", [x])[0] == TensorType(I64, (3,))
    assert infer("Shape", [x], {"start": 1})[0] == TensorType(I64, (2,))
    assert infer("Shape", [x], {"start": -1, "end": 10})[0] == TensorType(I64, (1,))
    assert infer("Size", [x])[0] == TensorType(I64, ())
    assert run_node("Shape", [np.zeros((2, 3, 4), np.float32)], {"start": 1, "end": -1})[0].tolist() == [3]


def test_reshape_with_constant_shape() -> None:
    x = TensorType(F32, ("batch", "seq", 768))
    shape = np.array([0, 0, 12, 64], np.int64)
    assert infer("Reshape", [x, None], consts={1: shape})[0].shape == ("batch", "seq", 12, 64)
    back = TensorType(F32, ("batch", "seq", 12, 64))
    assert infer("Reshape", [back, None], consts={1: np.array([0, 0, -1])})[0].shape == ("batch", "seq", 768)
    assert infer("Reshape", [x, None], consts={1: np.array([-1, 768])})[0].shape == (None, 768)
    assert infer("Reshape", [TensorType(F32, (4, 6)), None], consts={1: np.array([3, -1])})[0].shape == (3, 8)
    with pytest.raises(VerifyError, match="cannot reshape"):
        infer("Reshape", [TensorType(F32, (4, 6)), None], consts={1: np.array([5, -1])})
    with pytest.raises(VerifyError, match="more than one -1"):
        infer("Reshape", [x, None], consts={1: np.array([-1, -1])})


def _dynamic_reshape_graph() -> tuple[Graph, object]:
    """x[batch, seq, 384] -> Reshape(x, Concat(Shape(x)[0:1], Shape(x)[1:2], [12], [32]))."""
    g = Graph("dyn")
    x = g.add_input("x", TensorType(F32, ("batch", "seq", 384)))
    shape = g.add_node("Shape", [x]).output
    i0 = g.add_initializer("i0", np.array(0, np.int64))
    i1 = g.add_initializer("i1", np.array(1, np.int64))
    ax = g.add_initializer("ax", np.array([0], np.int64))
    b = g.add_node("Gather", [shape, i0], {"axis": 0}).output
    s = g.add_node("Gather", [shape, i1], {"axis": 0}).output
    bu = g.add_node("Unsqueeze", [b, ax]).output
    su = g.add_node("Unsqueeze", [s, ax]).output
    heads = g.add_initializer("heads", np.array([12, 32], np.int64))
    target = g.add_node("Concat", [bu, su, heads], {"axis": 0}).output
    y = g.add_node("Reshape", [x, target]).output
    g.set_outputs([y])
    return g, y


def test_reshape_target_computed_from_shape_stays_symbolic() -> None:
    g, y = _dynamic_reshape_graph()
    assert y.type == TensorType(F32, ("batch", "seq", 12, 32))
    assert sym_value(y.producer.inputs[1]) == ((4,), ("batch", "seq", 12, 32))
    g.verify()
    x = rng().standard_normal((2, 5, 384)).astype(np.float32)
    out = Interpreter(g).run({"x": x})[y.name]
    np.testing.assert_array_equal(out, x.reshape(2, 5, 12, 32))


def test_symbolic_values_through_slice_range_expand_constantofshape() -> None:
    g = Graph("sym")
    ids = g.add_input("ids", TensorType(I64, ("batch", "seq")))
    shape = g.add_node("Shape", [ids]).output
    one = g.add_initializer("one", np.array([1], np.int64))
    two = g.add_initializer("two", np.array([2], np.int64))
    zero = g.add_initializer("zero", np.array([0], np.int64))
    seq_1d = g.add_node("Slice", [shape, one, two, zero]).output
    assert sym_value(seq_1d) == ((1,), ("seq",))
    # position_ids[:, :seq] on a static [1, 512] buffer
    pos = g.add_initializer("pos", np.arange(512, dtype=np.int64).reshape(1, 512))
    sliced = g.add_node("Slice", [pos, zero, seq_1d, one]).output
    assert sliced.type.shape == (1, "seq")
    # Range(0, seq, 1)
    sq = g.add_node("Squeeze", [seq_1d, zero]).output
    r = g.add_node(
        "Range", [g.add_initializer("s0", np.array(0, np.int64)), sq, g.add_initializer("d1", np.array(1, np.int64))]
    ).output
    assert r.type == TensorType(I64, ("seq",))
    # Expand and ConstantOfShape to Shape(ids)
    e = g.add_node("Expand", [g.add_initializer("c", np.zeros((1, 1), np.float32)), shape]).output
    assert e.type.shape == ("batch", "seq")
    c = g.add_node("ConstantOfShape", [shape], {"value": np.array([1], np.int64)}).output
    assert c.type == TensorType(I64, ("batch", "seq"))
    m = g.add_node("Mul", [seq_1d, one]).output
    assert sym_value(m) == ((1,), ("seq",))
    g.set_outputs([sliced, r, e, c])
    g.verify()
    out = Interpreter(g).run({"ids": np.ones((2, 7), np.int64)})
    assert out[sliced.name].tolist() == [list(range(7))]
    assert out[r.name].tolist() == list(range(7))
    assert out[e.name].shape == (2, 7)
    assert out[c.name].dtype == np.int64 and out[c.name].shape == (2, 7)


def test_gather_slice_concat_split_shapes() -> None:
    x = TensorType(F32, ("batch", "seq", 64))
    assert infer("Gather", [x, None], {"axis": 1}, consts={1: np.array(0, np.int64)})[0].shape == ("batch", 64)
    assert infer("Gather", [TensorType(F32, (1000, 64)), TensorType(I64, ("batch", "seq"))])[0].shape == (
        "batch",
        "seq",
        64,
    )
    s = infer("Slice", [x, None, None, None, None], consts={1: [-1], 2: [-(2**63)], 3: [2], 4: [-1]})[0]
    assert s.shape == ("batch", "seq", 64)
    s2 = infer("Slice", [TensorType(F32, (10, 20)), None, None, None, None], consts={1: [8], 2: [1], 3: [1], 4: [-3]})
    assert s2[0].shape == (10, 3)
    s3 = infer("Slice", [x, None, None, None], consts={1: [0], 2: [2**63 - 1], 3: [1]})[0]
    assert s3.shape == ("batch", "seq", 64)
    cat = infer("Concat", [TensorType(F32, ("batch", 3)), TensorType(F32, ("batch", 5))], {"axis": -1})[0]
    assert cat.shape == ("batch", 8)
    with pytest.raises(VerifyError, match="differs"):
        infer("Concat", [TensorType(F32, (2, 3)), TensorType(F32, (4, 5))], {"axis": 1})
    parts = infer("Split", [TensorType(F32, (7, "seq"))], {"axis": 0, "num_outputs": 3}, n_out=3)
    assert [p.shape for p in parts] == [(3, "seq"), (3, "seq"), (1, "seq")]
    parts = infer("Split", [TensorType(F32, ("b", 192)), None], {"axis": -1}, n_out=3, consts={1: [64, 64, 64]})
    assert [p.shape for p in parts] == [("b", 64)] * 3


def test_squeeze_unsqueeze_transpose_flatten_matmul() -> None:
    x = TensorType(F32, ("batch", 1, "seq"))
    assert infer("Squeeze", [x, None], consts={1: [1]})[0].shape == ("batch", "seq")
    with pytest.raises(VerifyError, match="cannot squeeze"):
        infer("Squeeze", [TensorType(F32, (2, 3)), None], consts={1: [0]})
    assert infer("Unsqueeze", [TensorType(I64, ("batch", "seq")), None], consts={1: [1, 2]})[0].shape == (
        "batch",
        1,
        1,
        "seq",
    )
    assert infer("Unsqueeze", [TensorType(F32, (3,)), None], consts={1: [-1, 0]})[0].shape == (1, 3, 1)
    t = TensorType(F32, ("batch", "seq", 12, 64))
    assert infer("Transpose", [t], {"perm": [0, 2, 3, 1]})[0].shape == ("batch", 12, 64, "seq")
    assert infer("Transpose", [TensorType(F32, (2, 3))])[0].shape == (3, 2)
    assert infer("Flatten", [TensorType(F32, ("batch", 3, 4))], {"axis": 1})[0].shape == ("batch", 12)
    q = TensorType(F32, ("batch", 12, "seq", 64))
    k = TensorType(F32, ("batch", 12, 64, "seq"))
    assert infer("MatMul", [q, k])[0].shape == ("batch", 12, "seq", "seq")
    assert infer("MatMul", [TensorType(F32, ("b", "s", 768)), TensorType(F32, (768, 3072))])[0].shape == (
        "b",
        "s",
        3072,
    )
    assert infer("MatMul", [TensorType(F32, (5,)), TensorType(F32, (5, 2))])[0].shape == (2,)
    with pytest.raises(VerifyError, match="inner dimensions"):
        infer("MatMul", [TensorType(F32, (2, 3)), TensorType(F32, (4, 5))])
    assert infer("Gemm", [TensorType(F32, (1, 64)), TensorType(F32, (10, 64)), TensorType(F32, (10,))], {"transB": 1})[
        0
    ].shape == (1, 10)


def test_reductions_layernorm_einsum_infer() -> None:
    x = TensorType(F32, ("batch", "seq", 768))
    assert infer("ReduceMean", [x, None], consts={1: [-1]})[0].shape == ("batch", "seq", 1)
    assert infer("ReduceSum", [x, None], {"keepdims": 0}, consts={1: [1]})[0].shape == ("batch", 768)
    assert infer("ReduceMax", [x])[0].shape == (1, 1, 1)
    assert infer("ReduceMin", [x], {"noop_with_empty_axes": 1})[0].shape == x.shape
    assert infer("ArgMax", [x], {"axis": -1, "keepdims": 0})[0] == TensorType(I64, ("batch", "seq"))
    y, mean, inv = infer(
        "LayerNormalization", [x, TensorType(F32, (768,)), TensorType(F32, (768,))], {"axis": -1}, n_out=3
    )
    assert y == x and mean == TensorType(F32, ("batch", "seq", 1)) and inv == mean
    e = infer(
        "Einsum",
        [TensorType(F32, ("b", 12, "s", 64)), TensorType(F32, ("b", 12, "t", 64))],
        {"equation": "bhid,bhjd->bhij"},
    )
    assert e[0].shape == ("b", 12, "s", "t")
    e2 = infer("Einsum", [TensorType(F32, (2, 3, 4, 5))], {"equation": "...ij->...ji"})
    assert e2[0].shape == (2, 3, 5, 4)
    e3 = infer("Einsum", [TensorType(F32, (3, 4)), TensorType(F32, (4, 5))], {"equation": "ij,jk"})
    assert e3[0].shape == (3, 5)
    assert infer("Cast", [x], {"to": DType.FLOAT16})[0] == TensorType(DType.FLOAT16, x.shape)
    assert infer("Dropout", [x], n_out=2)[1] == TensorType(DType.BOOL, x.shape)


# ======================================================= 2. kernels vs onnxruntime
def test_bert_elementwise_ops_match_onnxruntime() -> None:
    r = rng(1)
    x = r.standard_normal((2, 8, 16)).astype(np.float32)
    b = r.standard_normal(16).astype(np.float32)
    for op in ("Add", "Sub", "Mul", "Div"):
        check_vs_ort(op, [x, b])
    check_vs_ort("Pow", [x, np.array(2.0, np.float32)])
    check_vs_ort("Pow", [np.abs(x), np.array(0.5, np.float32)])
    check_vs_ort("Sqrt", [np.abs(x)])
    check_vs_ort("Tanh", [x])
    check_vs_ort("Erf", [x * 2], rtol=1e-6, atol=3e-7)
    check_vs_ort("Gelu", [x * 3], {"approximate": "none"}, rtol=1e-5, atol=1e-6)
    check_vs_ort("Gelu", [x * 3], {"approximate": "tanh"}, rtol=1e-5, atol=1e-6)
    check_vs_ort("Sigmoid", [x * 10])
    check_vs_ort("Where", [x > 0, x, np.array(-1e4, np.float32)])
    check_vs_ort("Equal", [np.array([1, 2, 3], np.int64), np.array([1, 0, 3], np.int64)])
    check_vs_ort("IsNaN", [np.array([1.0, np.nan, np.inf], np.float32)])
    check_vs_ort("Not", [x > 0])
    check_vs_ort("And", [x > 0, b > 0])
    check_vs_ort("GreaterOrEqual", [x, b])
    for to in (onnx.TensorProto.INT64, onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL, onnx.TensorProto.DOUBLE):
        check_vs_ort("Cast", [x * 5], {"to": to}, ir_attrs={"to": DType.from_onnx(to)})
    check_vs_ort("Cast", [np.array([0, 3, -2], np.int64)], {"to": 1}, ir_attrs={"to": F32})
    check_vs_ort("Clip", [x, np.array(-0.5, np.float32), np.array(0.5, np.float32)])
    check_vs_ort("Clip", [x, None, np.array(0.5, np.float32)])
    for op, extra in (
        ("LeakyRelu", {"alpha": 0.1}),
        ("Elu", {}),
        ("HardSigmoid", {}),
        ("Softplus", {}),
        ("Softsign", {}),
        ("Mish", {}),
        ("Relu", {}),
        ("Neg", {}),
        ("Abs", {}),
        ("Sign", {}),
        ("Floor", {}),
        ("Ceil", {}),
        ("Exp", {}),
        ("Reciprocal", {}),
        ("Sin", {}),
        ("Cos", {}),
    ):
        check_vs_ort(op, [x], extra, rtol=2e-6, atol=1e-6)
    check_vs_ort("Log", [np.abs(x) + 0.1])
    check_vs_ort("Max", [x, b, np.float32(0.1) * x])
    check_vs_ort("Min", [x, b])
    check_vs_ort("Sum", [x, b, x])


def test_integer_semantics_match_onnxruntime() -> None:
    a = np.array([7, -7, 7, -7, 0, 9], np.int64)
    d = np.array([2, 2, -2, -2, 3, 4], np.int64)
    (q,) = check_vs_ort("Div", [a, d])
    assert q.tolist() == [3, -3, -3, 3, 0, 2]  # truncation toward zero
    check_vs_ort("Div", [a.astype(np.int32), d.astype(np.int32)])
    (m0,) = check_vs_ort("Mod", [a, d])
    assert m0.tolist() == [1, 1, -1, -1, 0, 1]  # sign of the divisor
    (m1,) = check_vs_ort("Mod", [a, d], {"fmod": 1})
    assert m1.tolist() == [1, -1, 1, -1, 0, 1]  # sign of the dividend
    check_vs_ort("Mod", [np.array([5.5, -5.5], np.float32), np.array([2.0, 2.0], np.float32)], {"fmod": 1})
    check_vs_ort("Pow", [np.array([2, 3, -2], np.int64), np.array([3, 2, 3], np.int64)])
    check_vs_ort("Pow", [np.array([2.0, 4.0], np.float32), np.array([2, 3], np.int64)])
    x = np.array([1, 2, 128, 255], np.uint8)
    check_vs_ort("BitShift", [x, np.array([1, 2, 1, 7], np.uint8)], {"direction": "LEFT"})
    check_vs_ort("BitShift", [x, np.array([1, 2, 8, 7], np.uint8)], {"direction": "RIGHT"})


def test_bitshift_out_of_range_and_signed() -> None:
    x = np.array([-8, 8, -1], np.int8)
    out = run_node("BitShift", [x, np.array([1, 9, 100], np.int8)], {"direction": "RIGHT"})[0]
    assert out.tolist() == [-4, 0, -1]  # arithmetic shift; >= width: sign fill
    out = run_node("BitShift", [x, np.array([1, -1, 8], np.int8)], {"direction": "LEFT"})[0]
    assert out.tolist() == [-16, 0, 0]


def test_shape_ops_match_onnxruntime() -> None:
    r = rng(2)
    x = r.standard_normal((2, 6, 8)).astype(np.float32)
    check_vs_ort("Reshape", [x, np.array([0, -1, 4], np.int64)])
    check_vs_ort("Reshape", [np.zeros((0, 3), np.float32), np.array([0, 3], np.int64)], {"allowzero": 1})
    check_vs_ort("Transpose", [x], {"perm": [2, 0, 1]})
    check_vs_ort("Unsqueeze", [x, np.array([0, -1], np.int64)])
    check_vs_ort("Squeeze", [x[:, :1], np.array([1], np.int64)])
    check_vs_ort("Squeeze", [x[:1, :1]])
    check_vs_ort("Flatten", [x], {"axis": 2})
    check_vs_ort("Concat", [x, x[:, :2]], {"axis": 1})
    for starts, ends, axes, steps in (
        ([1], [5], [1], [2]),
        ([-1], [-(2**63)], [1], [-1]),
        ([0, 7], [2**63 - 1, 1], [0, 2], [1, -3]),
        ([10], [20], [2], [1]),
    ):
        check_vs_ort("Slice", [x, *(np.array(v, np.int64) for v in (starts, ends, axes, steps))])
    emb = r.standard_normal((50, 8)).astype(np.float32)
    ids = r.integers(-50, 50, size=(2, 5)).astype(np.int64)
    check_vs_ort("Gather", [emb, ids])
    check_vs_ort("Gather", [x, np.array(-1, np.int64)], {"axis": 1})
    check_vs_ort("GatherElements", [x, r.integers(0, 6, size=(2, 3, 8)).astype(np.int64)], {"axis": 1})
    check_vs_ort("GatherND", [x, np.array([[0, 5], [1, -1]], np.int64)])
    check_vs_ort("GatherND", [x, np.array([[1], [0]], np.int64)], {"batch_dims": 1})
    check_vs_ort("Expand", [np.ones((1, 1, 8), np.float32), np.array([2, 6, 1], np.int64)])
    check_vs_ort("Tile", [x, np.array([1, 2, 3], np.int64)])
    check_vs_ort("Split", [x], {"axis": 1, "num_outputs": 4}, n_out=4)
    check_vs_ort("Split", [x, np.array([1, 5], np.int64)], {"axis": 1}, n_out=2)
    check_vs_ort("Range", [np.array(1, np.int64), np.array(10, np.int64), np.array(3, np.int64)])
    check_vs_ort("Range", [np.array(10.0, np.float32), np.array(4.0, np.float32), np.array(-1.5, np.float32)])
    check_vs_ort(
        "ConstantOfShape",
        [np.array([2, 3], np.int64)],
        {"value": helper.make_tensor("v", onnx.TensorProto.INT64, [1], [7])},
        ir_attrs={"value": np.array([7], np.int64)},
    )
    check_vs_ort("Trilu", [x, np.array(-1, np.int64)], {"upper": 0})
    check_vs_ort("Trilu", [x], {"upper": 1})
    check_vs_ort("EyeLike", [np.zeros((3, 4), np.float32)], {"k": 1})
    check_vs_ort("CumSum", [x, np.array(1, np.int64)])
    check_vs_ort("CumSum", [ids, np.array(-1, np.int32)], {"exclusive": 1, "reverse": 1})
    check_vs_ort("Size", [x])
    check_vs_ort("Shape", [x], {"start": -2})
    check_vs_ort("NonZero", [x > 0.5])
    check_vs_ort("OneHot", [np.array([0, 3, -1], np.int64), np.array(4, np.int64), np.array([0.0, 1.0], np.float32)])


def test_math_ops_match_onnxruntime() -> None:
    r = rng(3)
    h = r.standard_normal((2, 5, 32)).astype(np.float32)
    w = r.standard_normal((32, 48)).astype(np.float32)
    check_vs_ort("MatMul", [h, w], rtol=1e-5, atol=1e-5)
    q = r.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k = r.standard_normal((2, 4, 8, 5)).astype(np.float32)
    check_vs_ort("MatMul", [q, k], rtol=1e-5, atol=1e-5)
    check_vs_ort("MatMul", [r.standard_normal(8).astype(np.float32), k], rtol=1e-5, atol=1e-5)
    a = r.standard_normal((4, 6)).astype(np.float32)
    bt = r.standard_normal((3, 6)).astype(np.float32)
    c = r.standard_normal(3).astype(np.float32)
    check_vs_ort("Gemm", [a, bt, c], {"transB": 1, "alpha": 0.5, "beta": 2.0}, rtol=1e-5, atol=1e-5)
    check_vs_ort("Gemm", [a.T.copy(), bt.T.copy()], {"transA": 1}, rtol=1e-5, atol=1e-5)
    scores = r.standard_normal((2, 4, 5, 5)).astype(np.float32) * 20
    for axis in (-1, 1):
        check_vs_ort("Softmax", [scores], {"axis": axis}, rtol=1e-5, atol=1e-7)
        check_vs_ort("LogSoftmax", [scores], {"axis": axis}, rtol=1e-5, atol=1e-5)
    check_vs_ort("Hardmax", [scores], {"axis": 2})
    gamma = r.standard_normal(32).astype(np.float32)
    beta = r.standard_normal(32).astype(np.float32)
    check_vs_ort("LayerNormalization", [h * 3 + 1, gamma, beta], {"epsilon": 1e-12}, n_out=3, rtol=1e-5, atol=1e-5)
    check_vs_ort(
        "LayerNormalization", [h, gamma[:1].repeat(5 * 32).reshape(5, 32), None], {"axis": 1}, rtol=1e-5, atol=1e-5
    )
    axes = np.array([-1], np.int64)
    for op in (
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSumExp",
    ):
        check_vs_ort(op, [h, axes], rtol=1e-5, atol=1e-5)
        check_vs_ort(op, [h], {"keepdims": 0}, rtol=1e-4, atol=1e-4)
    check_vs_ort("ReduceLogSum", [np.abs(h) + 0.1, np.array([0, 2], np.int64)], rtol=1e-5, atol=1e-5)
    check_vs_ort("ReduceSum", [h, np.zeros(0, np.int64)], {"noop_with_empty_axes": 1})
    check_vs_ort("ReduceSum", [np.array([[1, 2], [3, 4]], np.int64), np.array([1], np.int64)])
    ties = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 1.0, 2.0]], np.float32)
    check_vs_ort("ArgMax", [ties], {"axis": 1})
    check_vs_ort("ArgMax", [ties], {"axis": 1, "select_last_index": 1, "keepdims": 0})
    check_vs_ort("ArgMin", [ties], {"axis": 0})
    check_vs_ort("TopK", [ties, np.array([2], np.int64)], n_out=2)
    check_vs_ort("TopK", [ties, np.array([3], np.int64)], {"largest": 0}, n_out=2)
    check_vs_ort("Einsum", [q, k], {"equation": "bhid,bhdj->bhij"}, rtol=1e-5, atol=1e-5)
    check_vs_ort("Einsum", [a], {"equation": "ij->j"}, rtol=1e-5, atol=1e-6)


def test_quantization_ops_match_onnxruntime() -> None:
    r = rng(4)
    x = (r.standard_normal((3, 4)) * 3).astype(np.float32)
    scale = np.array(0.05, np.float32)
    check_vs_ort("QuantizeLinear", [x, scale, np.array(10, np.uint8)])
    check_vs_ort("QuantizeLinear", [x, scale, np.array(-3, np.int8)])
    per_axis = np.array([0.02, 0.05, 0.1, 0.2], np.float32)
    zp = np.array([0, 1, -1, 5], np.int8)
    (qx,) = check_vs_ort("QuantizeLinear", [x, per_axis, zp], {"axis": 1})
    check_vs_ort("DequantizeLinear", [qx, per_axis, zp], {"axis": 1})
    check_vs_ort("DequantizeLinear", [np.array([0, 128, 255], np.uint8), scale, np.array(128, np.uint8)])
    check_vs_ort("DequantizeLinear", [np.array([-5, 1000], np.int32), scale])
    check_vs_ort("DynamicQuantizeLinear", [x], n_out=3)
    a = r.integers(0, 256, size=(2, 5, 16)).astype(np.uint8)
    b = r.integers(-128, 128, size=(16, 8)).astype(np.int8)
    check_vs_ort("MatMulInteger", [a, b, np.array(128, np.uint8), np.array(3, np.int8)])
    # per-row A zero points (onnxruntime only takes scalar ones): exact int64 reference
    azp = np.arange(5).astype(np.uint8)
    (y,) = run_node("MatMulInteger", [a[0], b, azp])
    ref = (a[0].astype(np.int64) - azp.astype(np.int64)[:, None]) @ b.astype(np.int64)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, ref)
    check_vs_ort("MatMulInteger", [a, b, None, np.arange(8).astype(np.int8)])


def test_dropout_inference_and_training_refusal() -> None:
    x = rng(5).standard_normal((3, 4)).astype(np.float32)
    y, mask = run_node("Dropout", [x, np.array(0.3, np.float32)], n_out=2)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()
    y, _ = run_node("Dropout", [x, np.array(0.0, np.float32), np.array(True)], n_out=2)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(Exception, match="training-mode Dropout"):
        run_node("Dropout", [x, np.array(0.3, np.float32), np.array(True)])


# ========================================================= 3. precision, dtypes
def test_fast_erf_accuracy() -> None:
    x = np.concatenate(
        [np.linspace(-6, 6, 400_001), np.geomspace(1e-30, 6, 20_000), -np.geomspace(1e-30, 6, 20_000)]
    ).astype(np.float32)
    ref = scipy.special.erf(x.astype(np.float64))
    got = fast_erf(x)
    assert got.dtype == np.float32
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) <= 1.0
    inplace = x.copy()
    assert fast_erf(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, got)
    special = fast_erf(np.array([np.inf, -np.inf, np.nan, 0.0], np.float32))
    assert special[0] == 1 and special[1] == -1 and np.isnan(special[2]) and special[3] == 0
    np.testing.assert_array_equal(fast_erf(x[:100].astype(np.float64)), scipy.special.erf(x[:100].astype(np.float64)))
    assert fast_erf(np.array([0.5], np.float16)).dtype == np.float16


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("Erf", {}),
        ("Gelu", {}),
        ("Gelu", {"approximate": "tanh"}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("Softplus", {}),
        ("LeakyRelu", {"alpha": 0.2}),
        ("Elu", {}),
        ("Selu", {}),
        ("Celu", {}),
        ("HardSigmoid", {}),
        ("HardSwish", {}),
        ("Mish", {}),
        ("Softsign", {}),
        ("Softmax", {}),
        ("LogSoftmax", {}),
        ("Sqrt", {}),
        ("Exp", {}),
        ("Reciprocal", {}),
        ("Relu", {}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, DType.BFLOAT16.np, np.float64])
def test_float_ops_keep_their_dtype(op: str, attrs: dict, dtype) -> None:
    x = (np.abs(rng(6).standard_normal((3, 5))) + 0.1).astype(dtype)
    (y,) = run_node(op, [x], attrs)
    assert y.dtype == np.dtype(dtype)
    ref = run_node(op, [x.astype(np.float64)], attrs)[0]
    tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 2e-3, np.dtype(np.float64): 1e-12}.get(
        np.dtype(dtype), 1.6e-2
    )
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol, atol=tol)


def test_layernorm_half_precision_uses_float32_statistics() -> None:
    x = (rng(7).standard_normal((4, 64)) * 50 + 300).astype(np.float16)
    g = np.ones(64, np.float16)
    y, mean, inv = run_node("LayerNormalization", [x, g, None], {"epsilon": 1e-5}, n_out=3)
    assert y.dtype == np.float16 and mean.dtype == np.float32 and inv.dtype == np.float32
    xf = x.astype(np.float64)
    ref = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.astype(np.float64), ref, atol=4e-3, rtol=2e-3)


def test_registry_lists_required_ops() -> None:
    required = (
        "Add And Cast Concat Constant ConstantOfShape CumSum Div Equal Erf Expand Flatten Gather GatherND Gelu Gemm "
        "GreaterOrEqual Identity IsNaN LayerNormalization MatMul Mul Not Pow Range ReduceMean Reshape Shape Slice "
        "Softmax Sqrt Sub Tanh Transpose Unsqueeze Where Squeeze Neg Abs Exp Log Reciprocal Sigmoid Relu Max Min Sum "
        "Less LessOrEqual Greater Or Xor Sign Floor Ceil Clip ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 "
        "ReduceSumSquare ArgMax Split Tile Dropout Trilu Mod Softplus HardSigmoid LeakyRelu Elu Einsum Size EyeLike "
        "Mish Sin Cos Softsign MatMulInteger QuantizeLinear DequantizeLinear DynamicQuantizeLinear BitShift"
    ).split()
    for name in required:
        assert get_op(name).domain == "", name


def test_pad_modes_match_onnxruntime() -> None:
    x = rng(8).standard_normal((3, 4)).astype(np.float32)
    pads = np.array([1, 2, 0, 1], np.int64)
    for mode in ("constant", "reflect", "edge", "wrap"):
        check_vs_ort("Pad", [x, pads], {"mode": mode})
    check_vs_ort("Pad", [x, np.array([-1, 1, 0, -2], np.int64), np.array(5.0, np.float32)])
    check_vs_ort("Pad", [x, np.array([2, 3], np.int64), None, np.array([-1], np.int64)])
    assert infer("Pad", [TensorType(F32, ("batch", 4)), None], consts={1: [0, 1, 0, 1]})[0].shape == ("batch", 6)


@pytest.mark.parametrize(
    "op,inputs,attrs",
    [
        ("Not", [np.array(True)], {}),
        ("IsNaN", [np.array(1.0, np.float32)], {}),
        ("Neg", [np.array(1.0, np.float32)], {}),
        ("Exp", [np.array(1.0, np.float32)], {}),
        ("Add", [np.array(1, np.int64), np.array(2, np.int64)], {}),
        ("Equal", [np.array(1, np.int64), np.array(2, np.int64)], {}),
        ("Gather", [np.array([4, 5, 6], np.int64), np.array(1, np.int64)], {}),
        ("MatMul", [np.ones(3, np.float32), np.ones(3, np.float32)], {}),
        ("ReduceSum", [np.ones((2, 3), np.float32)], {"keepdims": 0}),
        ("ArgMax", [np.array([1.0, 3.0, 2.0], np.float32)], {"keepdims": 0}),
        ("Cast", [np.array(2.5, np.float32)], {"to": DType.INT64}),
        ("Clip", [np.array(2.5, np.float32), np.array(0.0, np.float32), np.array(1.0, np.float32)], {}),
        ("Sum", [np.array(2.5, np.float32)], {}),
    ],
)
def test_scalar_results_are_ndarrays(op: str, inputs: list, attrs: dict) -> None:
    (y,) = run_node(op, inputs, attrs)
    assert isinstance(y, np.ndarray) and y.ndim == 0


def test_range_length_from_static_shape_values() -> None:
    g = Graph("r")
    x = g.add_input("x", TensorType(F32, (2, 9)))
    shape = g.add_node("Shape", [x]).output
    n = g.add_node("Gather", [shape, g.add_initializer("i", np.array(1, np.int64))]).output
    r = g.add_node(
        "Range", [g.add_initializer("a", np.array(1, np.int64)), n, g.add_initializer("d", np.array(3, np.int64))]
    )
    assert r.output.type == TensorType(I64, (3,))  # 1, 4, 7
    with pytest.raises(VerifyError, match="approximate"):
        g.add_node("Gelu", [x], {"approximate": "erf"})
