"""Shared building blocks for op definitions: shape inference helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.registry import InferContext, InferFn
from accelopt.ir.types import Dim, TensorType


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    if a == 1:
        return b
    if b == 1:
        return a
    if a is None:
        return b if isinstance(b, int) and b != 1 else None
    if b is None:
        return a if isinstance(a, int) and a != 1 else None
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"dimensions {a} and {b} do not broadcast")
    # a symbol against a different symbol or int: the int wins if not 1
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(shapes: Sequence[tuple[Dim, ...] | None]) -> tuple[Dim, ...] | None:
    """Numpy-style multidirectional broadcasting over symbolic shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)  # type: ignore[arg-type]
        out = [broadcast_dims(x, y) for x, y in zip(out, padded)]
    return tuple(out)


def same_as_input(i: int = 0) -> InferFn:
    def infer(ctx: InferContext) -> list[TensorType]:
        return [ctx.type(i)] * ctx.num_outputs

    return infer


def broadcast_infer(out_dtype: DType | None = None, inputs: int | None = None) -> InferFn:
    """Output shape is the broadcast of the inputs; dtype is input 0's unless given."""

    def infer(ctx: InferContext) -> list[TensorType]:
        n = len(ctx.input_types) if inputs is None else inputs
        types = [ctx.type(i) for i in range(n) if ctx.has(i)]
        try:
            shape = broadcast_shapes([t.shape for t in types])
        except ValueError as e:
            raise ctx.error(f"{e}: shapes {', '.join(str(t) for t in types)}") from None
        return [TensorType(out_dtype or types[0].dtype, shape)]

    return infer


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def static_ints(arr: np.ndarray | None) -> list[int] | None:
    if arr is None:
        return None
    return [int(x) for x in np.asarray(arr).reshape(-1)]


def unary_kernel(fn: Callable[[np.ndarray], np.ndarray]):
    def kernel(ins, attrs, n_out):
        x = ins[0]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]

    return kernel


def binary_kernel(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], out_dtype: np.dtype | None = None):
    def kernel(ins, attrs, n_out):
        r = np.asarray(fn(ins[0], ins[1]))
        return [r.astype(out_dtype if out_dtype is not None else ins[0].dtype, copy=False)]

    return kernel


def dims_compatible_k(a: Dim, b: Dim) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)
