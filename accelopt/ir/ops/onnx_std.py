"""Standard ONNX ops (latest-opset semantics) with numpy reference kernels."""

from __future__ import annotations

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import (
    binary_kernel,
    broadcast_infer,
    same_as_input,
    unary_kernel,
)
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import TensorType

# --------------------------------------------------------------- elementwise
for _name, _fn in {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
}.items():
    define_op(_name, inputs=2, infer=broadcast_infer(), kernel=binary_kernel(_fn))

define_op("Relu", infer=same_as_input(0), kernel=unary_kernel(lambda x: np.maximum(x, 0)))
define_op("Identity", infer=same_as_input(0), kernel=lambda ins, attrs, n: [ins[0]])


# ---------------------------------------------------------------- constants
def _constant_infer(ctx: InferContext) -> list[TensorType]:
    v = ctx.attrs["value"]
    return [TensorType(DType.from_numpy(v.dtype), v.shape)]


define_op(
    "Constant",
    inputs=0,
    attrs={"value": AttrSpec("tensor")},
    infer=_constant_infer,
    kernel=lambda ins, attrs, n: [attrs["value"]],
)


# --------------------------------------------------------------------- MatMul
def _matmul_infer(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.type(0), ctx.type(1)
    if a.shape is None or b.shape is None:
        return [TensorType(a.dtype, None)]
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    from accelopt.ir.ops.common import broadcast_shapes, dims_compatible_k

    if not dims_compatible_k(sa[-1], sb[-2]):
        raise ctx.error(f"inner dimensions differ: {a} @ {b}")
    batch = broadcast_shapes([tuple(sa[:-2]), tuple(sb[:-2])]) or ()
    out = list(batch) + [sa[-2], sb[-1]]
    if len(a.shape) == 1:
        out.pop(-2)
    if len(b.shape) == 1:
        out.pop(-1)
    return [TensorType(a.dtype, tuple(out))]


define_op("MatMul", inputs=2, infer=_matmul_infer, kernel=lambda ins, attrs, n: [np.matmul(ins[0], ins[1])])
