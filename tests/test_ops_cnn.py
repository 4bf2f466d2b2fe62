"""Pooling, BatchNormalization and Resize: the reference kernels against onnxruntime, and their type inference.

The ONNX node suite (tests/test_onnx_conformance.py) checks these ops on ONNX's own cases; here each
kernel also meets an independent implementation (onnxruntime, through the onnx writer) on seeded
inputs and attribute mixes the node suite lacks (dilated ceil-mode pools, column-major indices,
int8 max pooling, antialiased cubic downsampling, cropping with extrapolation...), and inference is
checked on symbolic shapes and bad attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from accelopt.errors import VerifyError
from accelopt.interpreter import run
from accelopt.ir import DType, Graph, TensorType
from accelopt.ir.ops.onnx_pool import avg_pool, max_pool
from accelopt.targets.onnx_writer import write_onnx
from modelzoo import one_op_graph

R = np.random.default_rng(7)


def f32(*shape: int, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return R.uniform(lo, hi, size=shape).astype(np.float32)


def i64(*vals: int) -> np.ndarray:
    return np.array(vals, dtype=np.int64)


IMG = f32(2, 3, 9, 8)
# (id, op, arrays (None = omitted), constant input indices, attrs, n_out)
CASES: list[tuple[str, str, list[Any], set[int], dict[str, Any], int]] = [
    ("maxpool-2d", "MaxPool", [IMG], set(), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 1),
    ("maxpool-2d-ceil-dilated", "MaxPool", [IMG], set(),
     {"kernel_shape": [2, 3], "strides": [2, 2], "dilations": [2, 1], "ceil_mode": 1, "pads": [0, 1, 1, 0]}, 2),
    ("maxpool-1d-indices", "MaxPool", [f32(2, 4, 11)], set(), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, 2),
    ("maxpool-2d-colmajor", "MaxPool", [IMG], set(), {"kernel_shape": [2, 2], "storage_order": 1}, 2),
    ("maxpool-3d-same", "MaxPool", [f32(1, 2, 5, 6, 4)], set(), {"kernel_shape": [2, 3, 2], "auto_pad": "SAME_UPPER",
                                                             "strides": [2, 2, 1]}, 1),
    ("maxpool-int8", "MaxPool", [R.integers(-128, 127, (1, 2, 6, 6)).astype(np.int8)], set(),
     {"kernel_shape": [2, 2], "strides": [2, 2]}, 1),
    ("avgpool-2d-exclude-pad", "AveragePool", [IMG], set(),
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 1),
    ("avgpool-2d-include-pad-ceil", "AveragePool", [IMG], set(),
     {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 1, 1], "ceil_mode": 1, "count_include_pad": 1}, 1),
    ("avgpool-1d-same-lower", "AveragePool", [f32(2, 3, 10)], set(), {"kernel_shape": [4], "strides": [3],
                                                                    "auto_pad": "SAME_LOWER"}, 1),
    ("avgpool-2d-f16", "AveragePool", [IMG.astype(np.float16)], set(), {"kernel_shape": [2, 2], "strides": [2, 2]}, 1),
    ("convtranspose-2d-groups", "ConvTranspose", [IMG[:, :2], f32(2, 3, 3, 2), f32(6)], {1, 2},
     {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2], "dilations": [1, 2], "group": 2}, 1),
    ("convtranspose-1d-output-shape", "ConvTranspose", [f32(2, 3, 5), f32(3, 4, 3)], {1},
     {"strides": [3], "output_shape": [14]}, 1),
    ("global-avg", "GlobalAveragePool", [IMG], set(), {}, 1),
    ("global-max-3d", "GlobalMaxPool", [f32(2, 3, 4, 3, 2)], set(), {}, 1),
    ("batchnorm-4d", "BatchNormalization", [IMG, f32(3), f32(3), f32(3), f32(3, lo=0.2, hi=2.0)], {1, 2, 3, 4},
     {"epsilon": 1e-3}, 1),
    ("batchnorm-2d", "BatchNormalization", [f32(5, 4), f32(4), f32(4), f32(4), f32(4, lo=0.2, hi=2.0)], {1, 2, 3, 4},
     {}, 1),
    ("resize-nearest-up-floor", "Resize", [f32(1, 2, 3, 4), None, np.array([1, 1, 2.0, 1.5], np.float32)], {2},
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 1),
    ("resize-nearest-sizes-ceil", "Resize", [f32(1, 2, 5, 4), None, None, i64(1, 2, 3, 7)], {3},
     {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, 1),
    ("resize-linear-half-pixel", "Resize", [f32(2, 3, 4, 5), None, np.array([1, 1, 1.7, 0.6], np.float32)], {2},
     {"mode": "linear"}, 1),
    ("resize-linear-pytorch", "Resize", [f32(1, 3, 4, 5), None, None, i64(1, 3, 9, 2)], {3},
     {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 1),
    ("resize-linear-align-corners", "Resize", [f32(1, 1, 4, 4), None, None, i64(7, 3)], {3},
     {"mode": "linear", "coordinate_transformation_mode": "align_corners", "axes": [2, 3]}, 1),
    ("resize-cubic-up", "Resize", [f32(1, 2, 4, 4), None, np.array([1, 1, 2, 2], np.float32)], {2},
     {"mode": "cubic"}, 1),
    ("resize-cubic-exclude-outside", "Resize", [f32(1, 1, 5, 5), None, np.array([1, 1, 1.5, 0.8], np.float32)], {2},
     {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, 1),
    ("resize-linear-antialias", "Resize", [f32(1, 2, 9, 10), None, np.array([1, 1, 0.45, 0.6], np.float32)], {2},
     {"mode": "linear", "antialias": 1}, 1),
    ("resize-cubic-antialias", "Resize", [f32(1, 1, 12, 8), None, None, i64(5, 3)], {3},
     {"mode": "cubic", "antialias": 1, "axes": [2, 3]}, 1),
    ("resize-not-larger", "Resize", [f32(1, 1, 4, 6), None, None, i64(6, 6)], {3},
     {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, 1),
    ("resize-crop-extrapolate", "Resize", [f32(1, 1, 5, 5), np.array([0.1, -0.2, 1.2, 0.9], np.float32), None,
                                           i64(4, 3)], {1, 3},
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "axes": [2, 3],
      "extrapolation_value": 9.0}, 1),
    ("resize-uint8", "Resize", [R.integers(0, 255, (1, 1, 4, 4)).astype(np.uint8), None,
                                np.array([1, 1, 1.5, 1.5], np.float32)], {2}, {"mode": "linear"}, 1),
]  # fmt: skip


@pytest.mark.parametrize("case_id,op,arrays,consts,attrs,n_out", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_onnxruntime(
    case_id: str, op: str, arrays: list[Any], consts: set[int], attrs: dict[str, Any], n_out: int
) -> None:
    g, feed = one_op_graph(op, arrays, attrs, n_out, consts=consts, name=case_id.replace("-", "_"))
    want = run(g, feed)
    session = ort.InferenceSession(write_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for v in g.outputs:
        w, o = want[v.name], got[v.name]
        assert w.dtype == o.dtype and w.shape == o.shape, (v.name, w.dtype, w.shape, o.dtype, o.shape)
        assert v.type.shape == w.shape, (v.type, w.shape)  # inference agrees with the kernel
        if op == "Resize" and w.dtype.kind == "u":  # onnxruntime truncates, the ONNX reference rounds
            assert np.abs(w.astype(np.int64) - o).max() <= 1, case_id
        elif w.dtype.kind in "iub":
            assert np.array_equal(w, o), case_id
        else:
            tol = 2e-3 if w.dtype == np.float16 else 2e-5
            np.testing.assert_allclose(w.astype(np.float64), o.astype(np.float64), rtol=tol, atol=tol, err_msg=case_id)


def test_max_pool_indices_point_at_the_maxima() -> None:
    x = f32(2, 3, 7, 6)
    y, idx = max_pool(x, {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}, True)
    np.testing.assert_array_equal(x.reshape(-1)[idx], y)
    assert idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < x.size


def test_avg_pool_counts_by_hand() -> None:
    """A 1-d ceil-mode pool: the overhang past the end pad is never counted, explicit pads only when asked."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)  # 1 2 3 4 5
    attrs = {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1}
    # windows over [pad 1 2 3 4 5 pad]: [p,1,2] [2,3,4] [4,5,p]; the ceil window [p+overhang] would start in the pad
    np.testing.assert_allclose(avg_pool(x, attrs)[0, 0], [1.5, 3.0, 4.5])
    np.testing.assert_allclose(avg_pool(x, {**attrs, "count_include_pad": 1})[0, 0], [1.0, 3.0, 3.0])


def _infer(op: str, shape: tuple[Any, ...], attrs: dict[str, Any], extra: list[Any] | None = None) -> list[Any]:
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.FLOAT32, shape))
    ins = [x] + [None if a is None else g.add_initializer(f"c{i}", a) for i, a in enumerate(extra or [])]
    node = g.add_node(op, ins, attrs)
    return [o.type.shape for o in node.outputs]


def test_inference_on_symbolic_shapes() -> None:
    assert _infer("MaxPool", ("batch", 3, 32, 32), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}) == [
        ("batch", 3, 16, 16)
    ]
    assert _infer("AveragePool", (1, 3, "h", 8), {"kernel_shape": [1, 2], "auto_pad": "SAME_UPPER"}) == [
        (1, 3, "h", 8)
    ]
    assert _infer("GlobalAveragePool", ("batch", 8, "h", "w"), {}) == [("batch", 8, 1, 1)]
    scales = np.array([1, 1, 2, 2], np.float32)
    assert _infer("Resize", ("batch", 3, "h", 10), {}, [None, scales]) == [("batch", 3, None, 20)]
    assert _infer("Resize", ("batch", 3, "h", 10), {"axes": [3]}, [None, None, np.array([4], np.int64)]) == [
        ("batch", 3, "h", 4)
    ]


@pytest.mark.parametrize(
    "op,attrs,extra,match",
    [
        ("MaxPool", {"kernel_shape": [3]}, None, r"kernel_shape \[3\] does not match 2 spatial dims"),
        ("MaxPool", {"kernel_shape": [9, 9]}, None, r"window 9 is larger than the padded input 8"),
        ("AveragePool", {"kernel_shape": [2, 2], "auto_pad": "SAME"}, None, r"unknown auto_pad 'SAME'"),
        ("Resize", {"mode": "area"}, [None, np.ones(4, np.float32)], r"mode 'area' is not one of"),
        ("Resize", {"mode": "nearest", "antialias": 1}, [None, np.ones(4, np.float32)], r"antialias"),
        ("Resize", {}, [None, np.ones(3, np.float32)], r"scales .* do not match the 4 resized axes"),
        ("BatchNormalization", {}, [np.ones(4, np.float32)] * 4, r"scale .* must be \[C\] with C = 3"),
    ],
)
def test_bad_attributes_are_named(op: str, attrs: dict[str, Any], extra: list[Any] | None, match: str) -> None:
    with pytest.raises(VerifyError, match=match):
        _infer(op, (2, 3, 8, 8), attrs, extra)


@pytest.mark.parametrize("spatial", [1, 0])
def test_opset8_batchnorm_spatial_attribute(spatial: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from accelopt.errors import FrontendError
    from accelopt.frontends.onnx import import_onnx_model

    stats = [numpy_helper.from_array(f32(3, lo=0.5, hi=1.5), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", spatial=spatial)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])], initializer=stats,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=4)
    onnx.checker.check_model(model)
    if spatial == 0:
        with pytest.raises(FrontendError, match=r"node bn \(BatchNormalization\): spatial=0"):
            import_onnx_model(model)
        return
    g = import_onnx_model(model)
    assert "spatial" not in g.nodes[0].attrs
    x = f32(2, 3, 4)
    s, b, m, v = (numpy_helper.to_array(t) for t in stats)
    want = (x - m[:, None]) / np.sqrt(v[:, None] + 1e-5) * s[:, None] + b[:, None]
    np.testing.assert_allclose(run(g, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_training_mode_batchnorm_is_refused_by_the_lowerings() -> None:
    """Batch statistics in training mode: the reference computes them; the targets lower inference graphs only."""
    from accelopt.errors import TargetError
    from accelopt.targets.tpu import TpuTarget

    x, stats = f32(2, 3, 4), [f32(3), f32(3), f32(3), f32(3, lo=0.5, hi=1.5)]
    g, feed = one_op_graph("BatchNormalization", [x, *stats], {"training_mode": 1}, 1, consts={1, 2, 3, 4})
    y = run(g, feed)[g.outputs[0].name]
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * stats[0][:, None] + stats[1][:, None]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(TargetError, match=r"training_mode=1 has no TPU lowering"):
        TpuTarget(precision="fp32").lower(g)
