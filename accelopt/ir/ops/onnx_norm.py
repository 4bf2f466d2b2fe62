"""Standard ONNX ``BatchNormalization`` (opset 15 semantics), channels on axis 1.

Cases handled:

1. Inference (``training_mode=0``): ``Y = (X - mean) / sqrt(var + epsilon) * scale + B``
   with the running ``input_mean``/``input_var``, broadcast over axis 1 of
   ``X[N, C, *spatial]`` (``X[N, C]`` too). Extra outputs are an error: they exist
   only in training mode.
2. Training mode (``training_mode=1``): normalized with the batch statistics
   (mean and biased variance over every axis but 1); the optional outputs
   ``running_mean = input_mean * momentum + mean * (1 - momentum)`` and
   ``running_var`` likewise with the batch variance.

``scale``/``B`` and ``input_mean``/``input_var`` may have their own float dtypes
(opset 15 T1/T2); Y has X's dtype and the running statistics the dtype of
``input_mean``. float16/bfloat16 math runs in float32.
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.ops.common import FLOAT_TYPES, Attrs, Ins, check_dtype_in
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import TensorType


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def batch_norm(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
    x, scale, bias, mean, var = ins
    eps = float(attrs.get("epsilon", 1e-5))
    work = np.float64 if x.dtype == np.float64 else np.float32
    xf = x.astype(work, copy=False)
    shape = _channel_shape(x)
    training = int(attrs.get("training_mode", 0)) == 1
    if not training and n_out > 1:
        raise ValueError("BatchNormalization has outputs 2-3 (running statistics) only in training mode")
    if training:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        batch_mean = xf.mean(axis=axes)
        batch_var = xf.var(axis=axes)
        m, v = batch_mean, batch_var
    else:
        m, v = mean.astype(work), var.astype(work)
    inv = 1.0 / np.sqrt(v + eps)
    k = scale.astype(work) * inv
    y = xf * k.reshape(shape) + (bias.astype(work) - m * k).reshape(shape)
    out = [y.astype(x.dtype, copy=False)]
    if training and n_out > 1:
        mom = float(attrs.get("momentum", 0.9))
        out.append((mean.astype(work) * mom + batch_mean * (1 - mom)).astype(mean.dtype))
        if n_out > 2:
            out.append((var.astype(work) * mom + batch_var * (1 - mom)).astype(var.dtype))
    return out


def _bn_infer(ctx: InferContext) -> list[TensorType]:
    for i in range(5):
        check_dtype_in(ctx, i, FLOAT_TYPES)
    x = ctx.type(0)
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.error(f"input {x} must be [N, C, ...]")
    channels = x.shape[1] if x.shape is not None else None
    for i, what in ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")):
        t = ctx.type(i)
        if t.shape is not None and (len(t.shape) != 1 or not _fits(t.shape[0], channels)):
            raise ctx.error(f"{what} {t} must be [C] with C = {channels}")
    if ctx.num_outputs > 1 and int(ctx.attrs["training_mode"]) != 1:
        raise ctx.error("outputs running_mean/running_var exist only with training_mode=1")
    out = [x]
    for i in (3, 4)[: ctx.num_outputs - 1]:
        out.append(TensorType(ctx.type(i).dtype, (channels,)))
    return out


def _fits(a: object, b: object) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


define_op(
    "BatchNormalization",
    inputs=5,
    outputs=(1, 3),
    attrs={
        "epsilon": AttrSpec("float", 1e-5),
        "momentum": AttrSpec("float", 0.9),
        "training_mode": AttrSpec("int", 0),
    },
    infer=_bn_infer,
    kernel=batch_norm,
    doc="Batch normalization over axis 1 with running statistics (inference) or batch statistics (training_mode=1).",
)
