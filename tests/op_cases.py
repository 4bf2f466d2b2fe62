"""Seeded one-op cases covering every registry op: (id, op, inputs, attrs, n_outputs).

Each input is ("in", array) -> a graph input, ("const", array) -> an initializer, or ("none", None) -> omitted
(``modelzoo.one_op_graph``). The TPU and Relax lowering tests run every case against the op's numpy kernel.
"""

from __future__ import annotations

import numpy as np

from accelopt.ir import DType
from accelopt.ir.ops.fused import pack_weight
from accelopt.ir.ops.quantized import dynamic_quantize

R = np.random.default_rng(1234)


def f32(*shape: int, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return R.uniform(lo, hi, size=shape).astype(np.float32)


def i64(*vals: int) -> np.ndarray:
    return np.array(vals, dtype=np.int64)


X = f32(2, 3, 4)
POS = f32(2, 3, 4, lo=0.1, hi=3.0)
UNIT = f32(2, 3, 4, lo=-0.9, hi=0.9)
GT1 = f32(2, 3, 4, lo=1.1, hi=3.0)
B1 = R.random((2, 3, 4)) > 0.5
B2 = R.random((2, 3, 4)) > 0.5
INT = R.integers(-20, 20, size=(2, 3, 4)).astype(np.int32)
INT_NZ = np.where(INT == 0, 3, INT).astype(np.int32)


def _rowq(x: np.ndarray, to: DType, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return dynamic_quantize(x, to, symmetric, "row")


def _wq(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    w = f32(k, n)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


QX = f32(2, 3, 6)
QX_ROW = _rowq(f32(2, 3, 7), DType.INT8, True)
QW16 = _wq(7, 16)
QW4 = _wq(7, 4)
QU8 = (R.integers(0, 255, (2, 3, 7)).astype(np.uint8), np.array(0.03, np.float32), np.array(121, np.uint8))
QU8_ROW = _rowq(f32(2, 3, 7), DType.UINT8, False)
QATT = (*_rowq(f32(2, 5, 8), DType.INT8, True)[:2], *_wq(8, 24))
QATT_U8 = (R.integers(0, 255, (1, 4, 8)).astype(np.uint8), np.array(0.01, np.float32), np.array(130, np.uint8))
PW = f32(20, 12)

UNARY_FLOAT = {
    "Abs": X, "Neg": X, "Exp": X, "Log": POS, "Sqrt": POS, "Reciprocal": POS, "Floor": X * 3, "Ceil": X * 3,
    "Round": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.4, 2.6], np.float32), "Sign": X, "Sin": X, "Cos": X,
    "Tan": UNIT, "Asin": UNIT, "Acos": UNIT, "Atan": X, "Sinh": X, "Cosh": X, "Asinh": X, "Acosh": GT1,
    "Atanh": UNIT, "Tanh": X, "Sigmoid": X, "Erf": X, "Relu": X, "Softplus": X, "Softsign": X, "Identity": X,
    "Mish": X, "HardSwish": X * 3, "Elu": X, "Celu": X, "Selu": X, "LeakyRelu": X, "HardSigmoid": X * 3,
    "ThresholdedRelu": X, "QuickGelu": X, "Shrink": X,
}  # fmt: skip

# (id, op, inputs, attrs, n_outputs)
CASES: list[tuple[str, str, list, dict, int]] = [
    (name, name, [("in", arr)], {}, 1) for name, arr in UNARY_FLOAT.items()
] + [
    ("Gelu-none", "Gelu", [("in", X)], {}, 1),
    ("Gelu-tanh", "Gelu", [("in", X)], {"approximate": "tanh"}, 1),
    ("Not", "Not", [("in", B1)], {}, 1),
    ("IsNaN", "IsNaN", [("in", np.array([1.0, np.nan, np.inf], np.float32))], {}, 1),
    ("IsInf", "IsInf", [("in", np.array([1.0, np.nan, np.inf, -np.inf], np.float32))], {"detect_negative": 0}, 1),
    ("BitwiseNot", "BitwiseNot", [("in", INT)], {}, 1),
    ("Clip", "Clip", [("in", X), ("const", np.array(-0.5, np.float32)), ("const", np.array(0.7, np.float32))], {}, 1),
    ("Clip-max-only", "Clip", [("in", X), ("none", None), ("const", np.array(0.3, np.float32))], {}, 1),
    # binary, broadcasting
    ("Add", "Add", [("in", X), ("in", f32(4))], {}, 1),
    ("Sub-const", "Sub", [("const", f32(3, 1)), ("in", X)], {}, 1),
    ("Mul", "Mul", [("in", X), ("in", f32(2, 1, 4))], {}, 1),
    ("Div", "Div", [("in", X), ("in", POS)], {}, 1),
    ("Div-int", "Div", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("Pow", "Pow", [("in", POS), ("const", np.array(2.0, np.float32))], {}, 1),
    ("Pow-frac", "Pow", [("in", POS), ("in", f32(4, lo=-1, hi=1))], {}, 1),
    ("Max", "Max", [("in", X), ("in", f32(4)), ("in", f32(3, 1))], {}, 1),
    ("Min", "Min", [("in", X), ("in", f32(4))], {}, 1),
    ("Sum", "Sum", [("in", X), ("in", X), ("in", f32(4))], {}, 1),
    ("Mean", "Mean", [("in", X), ("in", POS)], {}, 1),
    ("Mod", "Mod", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("Mod-fmod", "Mod", [("in", X), ("in", POS)], {"fmod": 1}, 1),
    ("And", "And", [("in", B1), ("in", B2)], {}, 1),
    ("Or", "Or", [("in", B1), ("in", B2)], {}, 1),
    ("Xor", "Xor", [("in", B1), ("in", B2)], {}, 1),
    ("Equal", "Equal", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("Greater", "Greater", [("in", X), ("in", f32(4))], {}, 1),
    ("GreaterOrEqual", "GreaterOrEqual", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("Less", "Less", [("in", X), ("in", f32(4))], {}, 1),
    ("LessOrEqual", "LessOrEqual", [("in", X), ("in", X)], {}, 1),
    ("BitwiseAnd", "BitwiseAnd", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("BitwiseOr", "BitwiseOr", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("BitwiseXor", "BitwiseXor", [("in", INT), ("in", INT_NZ)], {}, 1),
    ("BitShift", "BitShift", [("in", np.array([1, 2, 64], np.uint8)), ("in", np.array([1, 2, 1], np.uint8))],
     {"direction": "RIGHT"}, 1),
    ("PRelu", "PRelu", [("in", X), ("const", f32(4))], {}, 1),
    ("Where", "Where", [("in", B1), ("in", X), ("const", np.array(-1e4, np.float32))], {}, 1),
    # types
    ("Cast-int32", "Cast", [("in", X * 10)], {"to": DType.INT32}, 1),
    ("Cast-bool", "Cast", [("in", X.round())], {"to": DType.BOOL}, 1),
    ("Cast-f16", "Cast", [("in", X)], {"to": DType.FLOAT16}, 1),
    ("CastLike", "CastLike", [("in", INT), ("const", np.zeros(1, np.float32))], {}, 1),
    # shapes
    ("Reshape", "Reshape", [("in", X), ("const", i64(0, -1))], {}, 1),
    ("Flatten", "Flatten", [("in", X)], {"axis": 2}, 1),
    ("Squeeze", "Squeeze", [("in", f32(2, 1, 3, 1)), ("const", i64(-1))], {}, 1),
    ("Squeeze-all", "Squeeze", [("in", f32(2, 1, 3, 1))], {}, 1),
    ("Unsqueeze", "Unsqueeze", [("in", X), ("const", i64(0, -1))], {}, 1),
    ("Transpose", "Transpose", [("in", X)], {"perm": [2, 0, 1]}, 1),
    ("Transpose-default", "Transpose", [("in", X)], {}, 1),
    ("Concat", "Concat", [("in", X), ("const", f32(2, 1, 4)), ("in", f32(2, 2, 4))], {"axis": -2}, 1),
    ("Split-sizes", "Split", [("in", f32(2, 7)), ("const", i64(2, 5))], {"axis": 1}, 2),
    ("Split-even", "Split", [("in", f32(6, 2))], {"axis": 0, "num_outputs": 3}, 3),
    ("Split-uneven", "Split", [("in", f32(7, 2))], {"axis": 0, "num_outputs": 3}, 3),
    ("Slice", "Slice", [("in", f32(5, 6)), ("const", i64(1, -1)), ("const", i64(100, 0)), ("const", i64(0, 1)),
                        ("const", i64(2, -2))], {}, 1),
    ("Slice-neg-to-start", "Slice", [("in", f32(6)), ("const", i64(-1)), ("const", i64(-100)), ("const", i64(0)),
                                     ("const", i64(-1))], {}, 1),
    ("Gather", "Gather", [("in", f32(5, 3)), ("in", np.array([[0, -1], [2, 4]], np.int64))], {}, 1),
    ("Gather-axis1", "Gather", [("in", X), ("const", i64(2, -3))], {"axis": 1}, 1),
    ("GatherElements", "GatherElements", [("in", f32(3, 4)), ("in", np.array([[0, 3], [1, -1], [2, 2]], np.int64))],
     {"axis": 1}, 1),
    ("GatherND", "GatherND", [("in", f32(2, 3, 4)), ("in", np.array([[1, 2], [0, -1]], np.int64))], {}, 1),
    ("GatherND-batch", "GatherND", [("in", f32(2, 3, 4)), ("in", np.array([[1], [2]], np.int64))],
     {"batch_dims": 1}, 1),
    ("ScatterND", "ScatterND", [("in", f32(4, 3)), ("const", np.array([[1], [3]], np.int64)), ("in", f32(2, 3))], {}, 1),
    ("ScatterND-add", "ScatterND", [("in", f32(4, 3)), ("const", np.array([[1], [1]], np.int64)), ("in", f32(2, 3))],
     {"reduction": "add"}, 1),
    ("ScatterElements", "ScatterElements", [("in", f32(3, 3)), ("const", np.array([[1, 0, 2]], np.int64)),
                                            ("in", f32(1, 3))], {"axis": 0}, 1),
    ("Expand", "Expand", [("in", f32(3, 1)), ("const", i64(2, 1, 4))], {}, 1),
    ("Tile", "Tile", [("in", f32(2, 3)), ("const", i64(2, 1))], {}, 1),
    ("Pad-constant", "Pad", [("in", f32(2, 3)), ("const", i64(1, 0, 2, 1)), ("const", np.array(0.5, np.float32))],
     {}, 1),
    ("Pad-reflect", "Pad", [("in", f32(3, 4)), ("const", i64(0, 2, 0, 1))], {"mode": "reflect"}, 1),
    ("Pad-edge-neg", "Pad", [("in", f32(3, 4)), ("const", i64(1, -1, 0, 2))], {"mode": "edge"}, 1),
    ("Pad-axes", "Pad", [("in", f32(3, 4)), ("const", i64(1, 2)), ("none", None), ("const", i64(-1))], {}, 1),
    ("CumSum", "CumSum", [("in", X), ("const", np.array(1, np.int64))], {}, 1),
    ("CumSum-excl-rev", "CumSum", [("in", X), ("const", np.array(-1, np.int32))], {"exclusive": 1, "reverse": 1}, 1),
    ("Trilu", "Trilu", [("in", f32(2, 4, 4)), ("const", np.array(1, np.int64))], {}, 1),
    ("Trilu-lower", "Trilu", [("in", f32(4, 5))], {"upper": 0}, 1),
    ("OneHot", "OneHot", [("in", np.array([0, 2, -1], np.int64)), ("const", np.array(4, np.int64)),
                          ("const", np.array([0.0, 3.0], np.float32))], {"axis": 0}, 1),
    ("TopK", "TopK", [("in", f32(3, 6)), ("const", i64(2))], {}, 2),
    ("TopK-smallest", "TopK", [("in", f32(5, 3)), ("const", i64(2))], {"axis": 0, "largest": 0}, 2),
    ("ArgMax", "ArgMax", [("in", np.array([[1, 3, 3], [2, 0, 2]], np.float32))], {"axis": 1}, 1),
    ("ArgMax-last", "ArgMax", [("in", np.array([[1, 3, 3], [2, 0, 2]], np.float32))],
     {"axis": 1, "keepdims": 0, "select_last_index": 1}, 1),
    ("ArgMin", "ArgMin", [("in", X)], {"axis": -1}, 1),
    ("Dropout", "Dropout", [("in", X)], {}, 1),
    ("Hardmax", "Hardmax", [("in", X)], {}, 1),
    ("Softmax", "Softmax", [("in", X)], {"axis": 1}, 1),
    ("LogSoftmax", "LogSoftmax", [("in", X)], {}, 1),
    ("LayerNormalization", "LayerNormalization", [("in", X), ("const", f32(4)), ("const", f32(4))], {}, 3),
    ("LayerNormalization-axis", "LayerNormalization", [("in", X), ("const", f32(3, 4))], {"axis": 1}, 1),
    ("EyeLike", "EyeLike", [("in", f32(3, 4))], {"k": 1}, 1),
    # shape values computed at trace time
    ("Shape", "Shape", [("in", X)], {"start": 1}, 1),
    ("Size", "Size", [("in", X)], {}, 1),
    ("ConstantOfShape", "ConstantOfShape", [("const", i64(2, 3))], {"value": np.array([7], np.int32)}, 1),
    ("Range", "Range", [("const", np.array(1, np.int64)), ("const", np.array(9, np.int64)),
                        ("const", np.array(3, np.int64))], {}, 1),
    ("NonZero-const", "NonZero", [("const", np.array([[0, 1], [2, 0]], np.float32))], {}, 1),
    # matmuls
    ("MatMul", "MatMul", [("in", f32(2, 3, 5)), ("const", f32(5, 6))], {}, 1),
    ("MatMul-batched", "MatMul", [("in", f32(2, 1, 3, 5)), ("in", f32(4, 5, 2))], {}, 1),
    ("MatMul-1d", "MatMul", [("in", f32(5)), ("in", f32(5, 3))], {}, 1),
    ("MatMul-int", "MatMul", [("in", INT[0]), ("in", INT[1].T.copy())], {}, 1),
    ("Gemm", "Gemm", [("in", f32(3, 5)), ("const", f32(6, 5)), ("const", f32(6))],
     {"transB": 1, "alpha": 0.5, "beta": 2.0}, 1),
    ("Gemm-transA", "Gemm", [("in", f32(5, 3)), ("in", f32(5, 4))], {"transA": 1}, 1),
    ("Einsum", "Einsum", [("in", f32(2, 3, 4)), ("in", f32(2, 4, 5))], {"equation": "bij,bjk->bik"}, 1),
    # reductions
    *[
        (f"{op}-{tag}", op, inputs, attrs, 1)
        for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
        for tag, inputs, attrs in (
            ("axes", [("in", POS), ("const", i64(1, -1))], {}),
            ("all-nokeep", [("in", POS)], {"keepdims": 0}),
        )
    ],
    ("ReduceSum-noop", "ReduceSum", [("in", X), ("const", np.zeros(0, np.int64))], {"noop_with_empty_axes": 1}, 1),
    # quantization
    ("QuantizeLinear-u8", "QuantizeLinear", [("in", X), ("const", np.array(0.02, np.float32)),
                                             ("const", np.array(128, np.uint8))], {}, 1),
    ("QuantizeLinear-axis", "QuantizeLinear", [("in", X), ("const", np.array([0.01, 0.02, 0.03], np.float32)),
                                               ("const", np.zeros(3, np.int8))], {"axis": 1}, 1),
    ("DequantizeLinear", "DequantizeLinear", [("in", INT.astype(np.int8)), ("const", np.array(0.1, np.float32)),
                                              ("const", np.array(-3, np.int8))], {}, 1),
    ("DequantizeLinear-axis", "DequantizeLinear", [("in", INT.astype(np.int8)),
                                                   ("const", np.array([0.1, 0.2, 0.3, 0.4], np.float32))],
     {"axis": -1}, 1),
    ("DynamicQuantizeLinear", "DynamicQuantizeLinear", [("in", X)], {}, 3),
    ("MatMulInteger", "MatMulInteger", [("in", R.integers(0, 255, (3, 5)).astype(np.uint8)),
                                        ("const", R.integers(-100, 100, (5, 4)).astype(np.int8)),
                                        ("const", np.array(130, np.uint8)), ("const", np.array(3, np.int8))], {}, 1),
    ("QLinearMatMul", "QLinearMatMul", [("in", R.integers(0, 255, (3, 5)).astype(np.uint8)),
                                        ("const", np.array(0.05, np.float32)), ("const", np.array(120, np.uint8)),
                                        ("const", R.integers(-100, 100, (5, 4)).astype(np.int8)),
                                        ("const", np.array(0.01, np.float32)), ("const", np.array(0, np.int8)),
                                        ("const", np.array(0.5, np.float32)), ("const", np.array(10, np.uint8))],
     {}, 1),
    # accelopt quantized ops
    *[
        (f"DynamicQuantize-{to}-{'sym' if sym else 'asym'}-{gran}", "DynamicQuantize", [("in", QX)],
         {"to": DType.INT8 if to == "i8" else DType.UINT8, "symmetric": sym, "granularity": gran}, 3)
        for to in ("i8", "u8") for sym in (1, 0) for gran in ("row", "tensor")
    ],
    ("DynamicQuantize-zero-row", "DynamicQuantize", [("in", np.concatenate([np.zeros((1, 6), np.float32),
                                                                             f32(2, 6)]))], {}, 3),
    ("DequantizeLinear-per-row", "DequantizeLinear", [("in", QX_ROW[0]), ("in", QX_ROW[1]), ("in", QX_ROW[2])],
     {"axis": -1, "block_size": 7}, 1),
    ("QuantizeLinear-blocked", "QuantizeLinear", [("in", f32(4, 6)), ("const", f32(4, 2, lo=0.01, hi=0.03)),
                                                  ("const", np.zeros((4, 2), np.int8))], {"axis": 1, "block_size": 3}, 1),
    ("QLinear-row-sym-gelu", "QLinear", [("in", QX_ROW[0]), ("in", QX_ROW[1]), ("in", QX_ROW[2]), ("const", QW16[0]),
                                         ("const", QW16[1]), ("none", None), ("const", f32(16))],
     {"activation": "gelu"}, 1),
    ("QLinear-small-weight", "QLinear", [("in", QX_ROW[0]), ("in", QX_ROW[1]), ("none", None), ("const", QW4[0]),
                                         ("const", QW4[1])], {}, 1),
    ("QLinear-u8-zero-points", "QLinear", [("in", QU8[0]), ("const", QU8[1]), ("const", QU8[2]), ("const", QW16[0]),
                                           ("const", QW16[1]), ("const", np.arange(-8, 8, dtype=np.int8)),
                                           ("const", f32(16))], {"activation": "relu"}, 1),
    ("QLinear-u8-row-zero-points", "QLinear", [("in", QU8_ROW[0]), ("in", QU8_ROW[1]), ("in", QU8_ROW[2]),
                                               ("const", QW16[0]), ("const", np.array(0.02, np.float32))], {}, 1),
    ("QLinear-requantize", "QLinear", [("in", QX_ROW[0]), ("in", QX_ROW[1]), ("none", None), ("const", QW16[0]),
                                       ("const", QW16[1]), ("none", None), ("const", f32(16)),
                                       ("const", np.array(0.05, np.float32)), ("const", np.array(3, np.uint8))], {}, 1),
    ("QAttention", "QAttention", [("in", QATT[0]), ("in", QATT[1]), ("none", None), ("const", QATT[2]),
                                  ("const", QATT[3]), ("none", None), ("const", f32(24)),
                                  ("in", np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64))], {"num_heads": 2}, 1),
    ("QAttention-u8-nomask", "QAttention", [("in", QATT_U8[0]), ("const", QATT_U8[1]), ("const", QATT_U8[2]),
                                            ("const", QATT[2]), ("const", QATT[3])], {"num_heads": 4, "scale": 0.3}, 1),
    ("QAttention-causal-bias", "QAttention", [("in", QATT[0]), ("in", QATT[1]), ("none", None), ("const", QATT[2]),
                                              ("const", QATT[3]), ("none", None), ("const", f32(24)), ("none", None),
                                              ("in", f32(2, 2, 5, 5))], {"num_heads": 2, "unidirectional": 1}, 1),
    # convolutions
    ("Conv-2d", "Conv", [("in", f32(2, 4, 7, 6)), ("const", f32(6, 2, 3, 2)), ("const", f32(6))],
     {"strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2], "group": 2}, 1),
    ("Conv-1d-same", "Conv", [("in", f32(1, 3, 9)), ("const", f32(4, 3, 4))], {"auto_pad": "SAME_UPPER",
                                                                              "strides": [2]}, 1),
    ("Conv-3d-depthwise", "Conv", [("in", f32(1, 3, 4, 5, 4)), ("const", f32(3, 1, 2, 3, 2))],
     {"group": 3, "auto_pad": "SAME_LOWER"}, 1),
    ("ConvNHWC-2d", "ConvNHWC", [("in", f32(2, 7, 6, 4)), ("const", f32(3, 2, 2, 6)), ("const", f32(6))],
     {"strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2], "group": 2}, 1),
    ("ConvNHWC-1d-valid", "ConvNHWC", [("in", f32(2, 8, 3)), ("const", f32(3, 3, 5))], {"auto_pad": "VALID"}, 1),
    ("ConvTranspose-2d", "ConvTranspose", [("in", f32(2, 4, 3, 4)), ("const", f32(4, 3, 3, 2)), ("const", f32(6))],
     {"strides": [2, 1], "pads": [1, 0, 0, 1], "output_padding": [1, 0], "dilations": [1, 2], "group": 2}, 1),
    ("ConvTranspose-1d-output-shape", "ConvTranspose", [("in", f32(1, 3, 5)), ("const", f32(3, 2, 3))],
     {"strides": [3], "output_shape": [14]}, 1),
    ("ConvTranspose-3d-same", "ConvTranspose", [("in", f32(1, 2, 2, 3, 2)), ("const", f32(2, 2, 2, 2, 2))],
     {"strides": [2, 1, 2], "auto_pad": "SAME_UPPER"}, 1),
    # pooling, batch norm, resize
    ("MaxPool-2d-ceil", "MaxPool", [("in", f32(2, 3, 7, 6))],
     {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}, 1),
    ("MaxPool-1d-indices", "MaxPool", [("in", f32(2, 3, 9))], {"kernel_shape": [3], "strides": [2],
                                                              "dilations": [2], "pads": [1, 1]}, 2),
    ("MaxPool-2d-indices-colmajor", "MaxPool", [("in", f32(1, 2, 5, 4))],
     {"kernel_shape": [2, 2], "strides": [1, 2], "storage_order": 1}, 2),
    ("AveragePool-2d-pad", "AveragePool", [("in", f32(2, 3, 7, 6))],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 1),
    ("AveragePool-2d-include-pad", "AveragePool", [("in", f32(2, 3, 7, 6))],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 1),
    ("AveragePool-1d-same", "AveragePool", [("in", f32(1, 4, 9))], {"kernel_shape": [4], "strides": [2],
                                                                   "auto_pad": "SAME_UPPER"}, 1),
    ("GlobalAveragePool", "GlobalAveragePool", [("in", f32(2, 3, 5, 4))], {}, 1),
    ("GlobalMaxPool", "GlobalMaxPool", [("in", f32(2, 3, 5, 4))], {}, 1),
    ("BatchNormalization", "BatchNormalization", [("in", f32(2, 3, 5, 4)), ("const", f32(3)), ("const", f32(3)),
                                                  ("const", f32(3)), ("const", f32(3, lo=0.5, hi=2.0))],
     {"epsilon": 1e-3}, 1),
    ("Resize-nearest-asymmetric-floor", "Resize", [("in", f32(1, 2, 3, 4)), ("none", None),
                                                   ("const", np.array([1, 1, 2, 1.5], np.float32))],
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 1),
    ("Resize-linear-align-corners", "Resize", [("in", f32(1, 2, 3, 4)), ("none", None), ("none", None),
                                               ("const", i64(1, 2, 5, 7))],
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 1),
    ("Resize-cubic-antialias-down", "Resize", [("in", f32(1, 1, 8, 8)), ("none", None),
                                               ("const", np.array([0.6, 0.5], np.float32))],
     {"mode": "cubic", "antialias": 1, "axes": [2, 3]}, 1),
    ("Resize-crop-extrapolate", "Resize", [("in", f32(1, 1, 4, 4)), ("const", np.array([0.2, -0.3, 1.1, 0.8],
                                                                                      np.float32)),
                                           ("none", None), ("const", i64(3, 3))],
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "axes": [2, 3],
      "extrapolation_value": 7.0}, 1),
    # packed weights (layout passes)
    ("PackedLinear-tiled", "PackedLinear", [("in", f32(2, 3, 20)), ("const", pack_weight(PW, tile=(8, 16))),
                                            ("const", f32(12))],
     {"activation": "gelu_tanh", "tile": [8, 16], "k": 20, "n": 12}, 1),
    ("PackedLinear-transposed-tiled", "PackedLinear", [("in", f32(3, 20)),
                                                       ("const", pack_weight(PW, transposed=True, tile=(8, 16)))],
     {"transposed": 1, "tile": [8, 16], "k": 20, "n": 12}, 1),
    ("PackedLinear-transposed", "PackedLinear", [("in", f32(2, 20)), ("const", pack_weight(PW, transposed=True))],
     {"transposed": 1, "k": 20, "n": 12}, 1),
    ("PackedLinear-runtime-weight", "PackedLinear", [("in", f32(2, 20)), ("in", pack_weight(PW, tile=(8, 16)))],
     {"tile": [8, 16], "k": 20, "n": 12}, 1),
    # fused (accelopt domain)
    ("LayerNorm", "LayerNorm", [("in", X), ("const", f32(4)), ("const", f32(4))], {"epsilon": 1e-6}, 1),
    ("SkipLayerNorm", "SkipLayerNorm", [("in", X), ("in", f32(2, 3, 4)), ("const", f32(4)), ("const", f32(4)),
                                        ("const", f32(4))], {}, 2),
    *[
        (f"Linear-{act}", "Linear", [("in", f32(2, 3, 5)), ("const", f32(5, 6)), ("const", f32(6))],
         {"activation": act}, 1)
        for act in ("none", "gelu", "gelu_tanh", "gelu_sigmoid", "relu")
    ],
    ("Attention", "Attention", [("in", f32(2, 5, 8)), ("const", f32(8, 24)), ("const", f32(24)),
                                ("in", np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int64))], {"num_heads": 2}, 1),
    ("Attention-nomask", "Attention", [("in", f32(1, 4, 8)), ("const", f32(8, 24))], {"num_heads": 4, "scale": 0.3}, 1),
    ("Attention-causal-bias", "Attention", [("in", f32(2, 5, 8)), ("const", f32(8, 24)), ("const", f32(24)),
                                            ("in", np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)),
                                            ("in", f32(1, 2, 5, 5))],
     {"num_heads": 2, "unidirectional": 1, "scale": 1.0, "mask_filter_value": float(np.finfo(np.float32).min)}, 1),
    ("MultiHeadAttention", "MultiHeadAttention", [("in", f32(2, 5, 8)), ("in", f32(2, 5, 8)), ("in", f32(2, 5, 12)),
                                                  ("in", np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int64)),
                                                  ("in", f32(2, 1, 5, 5))], {"num_heads": 4}, 1),
    ("MultiHeadAttention-causal", "MultiHeadAttention", [("in", f32(1, 4, 8)), ("in", f32(1, 4, 8)),
                                                         ("in", f32(1, 4, 8))], {"num_heads": 2, "unidirectional": 1}, 1),
    ("RMSNorm", "RMSNorm", [("in", X), ("const", f32(4))], {"epsilon": 1e-6}, 1),
    ("EmbedLayerNorm", "EmbedLayerNorm", [("in", np.array([[1, 5, 2], [0, 3, 3]], np.int64)),
                                          ("in", np.array([[0, 0, 1], [1, 1, 0]], np.int64)), ("const", f32(6, 4)),
                                          ("const", f32(5, 4)), ("const", f32(2, 4)), ("const", f32(4)),
                                          ("const", f32(4))], {}, 2),
    ("SDPA-bool-causal", "ScaledDotProductAttention",
     [("in", f32(2, 2, 4, 3)), ("in", f32(2, 2, 4, 3)), ("in", f32(2, 2, 4, 5)),
      ("in", np.array([[True, True, False, True]] * 4))], {"is_causal": 1}, 1),
    ("SDPA-float", "ScaledDotProductAttention",
     [("in", f32(2, 3, 4)), ("in", f32(2, 5, 4)), ("in", f32(2, 5, 2)), ("in", f32(3, 5))], {"scale": 0.7}, 1),
    ("SDPA-all-masked-row", "ScaledDotProductAttention",
     [("in", f32(1, 2, 3)), ("in", f32(1, 2, 3)), ("in", f32(1, 2, 3)), ("in", np.array([[True, False], [False, False]]))],
     {}, 1),
]  # fmt: skip
