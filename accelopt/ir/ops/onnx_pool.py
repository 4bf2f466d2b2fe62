"""Standard ONNX pooling ops, channels first: ``x[N, C, *spatial]``.

Cases handled:

1. ``MaxPool`` and ``AveragePool`` over any number of spatial dims, with
   ``kernel_shape``, ``strides``, ``dilations`` (default 1) and explicit
   ``pads`` ``[x1_begin, ..., x1_end, ...]`` or ``auto_pad`` (``VALID``,
   ``SAME_UPPER``, ``SAME_LOWER``: output ``ceil(in / stride)``).
2. ``ceil_mode``: the output length is ``ceil((in + pads - window) / stride) + 1``
   less a last window that would start in the end padding; the part of a window
   past the end padding is never counted.
3. ``AveragePool``'s ``count_include_pad``: 0 divides by the number of input
   elements in the window, 1 also counts explicit padding (not the ceil-mode
   overhang).
4. ``MaxPool``'s optional ``Indices`` output: int64 positions of the first
   maximum in each window, flattened over the whole input ``[N, C, *spatial]``,
   row-major (``storage_order=0``) or with the spatial dims column-major
   (``storage_order=1``). Padding never wins.
5. ``GlobalAveragePool`` / ``GlobalMaxPool``: over all spatial dims, kept as 1.

float16/bfloat16 averages accumulate in float32; maxima stay in the input dtype
(int8/uint8 allowed for MaxPool).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import FLOAT_TYPES, Attrs, Ins, check_dtype_in
from accelopt.ir.ops.onnx_conv import resolve_pads
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

_HALF = (np.dtype(np.float16), DType.BFLOAT16.np)
MAXPOOL_TYPES = FLOAT_TYPES | {DType.INT8, DType.UINT8}

POOL_ATTRS = {
    "auto_pad": AttrSpec("str", "NOTSET"),
    "ceil_mode": AttrSpec("int", 0),
    "dilations": AttrSpec("ints", None),
    "kernel_shape": AttrSpec("ints"),
    "pads": AttrSpec("ints", None),
    "strides": AttrSpec("ints", None),
}


# ------------------------------------------------------------------ geometry
class PoolGeometry:
    """Per spatial axis: kernel, stride, dilation, begin/end pads and output length (cases 1-2)."""

    def __init__(self, spatial: Sequence[int], attrs: Attrs) -> None:
        kernel = [int(k) for k in attrs["kernel_shape"]]
        if len(kernel) != len(spatial):
            raise ValueError(f"kernel_shape {kernel} does not match {len(spatial)} spatial dims")
        if min(kernel, default=1) < 1:
            raise ValueError(f"kernel_shape {kernel} must be positive")
        self.kernel = kernel
        self.strides, self.dilations, pads = resolve_pads(spatial, kernel, attrs)
        sp = len(kernel)
        self.begin, self.end = pads[:sp], pads[sp:]
        self.spatial = [int(s) for s in spatial]
        self.window = [(k - 1) * d + 1 for k, d in zip(kernel, self.dilations)]
        ceil = bool(attrs.get("ceil_mode", 0))
        self.out = [
            out_length(self.spatial[i], self.window[i], self.strides[i], self.begin[i], self.end[i], ceil)
            for i in range(sp)
        ]

    def windows(self, x: np.ndarray, fill: Any) -> np.ndarray:
        """``[N, C, *out, *kernel]`` view of ``x`` padded with ``fill`` (taps beyond the pads too)."""
        sp = len(self.kernel)
        widths = [(0, 0), (0, 0)]
        for i in range(sp):
            need = (self.out[i] - 1) * self.strides[i] + self.window[i] - self.spatial[i] - self.begin[i]
            widths.append((self.begin[i], max(need, 0)))
        xp = np.pad(x, widths, constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(xp, self.window, axis=tuple(range(2, 2 + sp)))
        index: tuple[slice, ...] = (slice(None), slice(None))
        index += tuple(slice(0, (n - 1) * s + 1, s) for n, s in zip(self.out, self.strides))
        index += tuple(slice(None, None, d) for d in self.dilations)
        return win[index]

    def window_table(self, column_major: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For lowerings that gather windows (case 4): ``[prod(out), prod(kernel)]`` tables of each tap's
        row-major position in the ``[*spatial]`` plane (clipped into it), whether the tap is inside the
        input, and its position in storage order."""
        sp = len(self.kernel)
        grid = np.meshgrid(*[np.arange(n) for n in self.out], *[np.arange(k) for k in self.kernel], indexing="ij")
        coords = [grid[i] * self.strides[i] - self.begin[i] + grid[sp + i] * self.dilations[i] for i in range(sp)]
        inside = np.ones(coords[0].shape, dtype=bool)
        for pos, size in zip(coords, self.spatial):
            inside &= (pos >= 0) & (pos < size)
        clipped = [np.clip(pos, 0, size - 1) for pos, size in zip(coords, self.spatial)]
        shape = (math.prod(self.out), math.prod(self.kernel))
        row = np.ravel_multi_index(clipped, self.spatial).reshape(shape).astype(np.int64)
        stored = np.ravel_multi_index(clipped, self.spatial, order="F" if column_major else "C")
        return row, inside.reshape(shape), stored.reshape(shape).astype(np.int64)

    def counts(self, include_pad: bool) -> np.ndarray:
        """Elements counted per output position (``[*out]``): input only, or with explicit pads (case 3)."""
        total = np.ones((), dtype=np.float64)
        for i in range(len(self.kernel)):
            starts = np.arange(self.out[i]) * self.strides[i] - self.begin[i]
            taps = starts[:, None] + np.arange(self.kernel[i])[None, :] * self.dilations[i]
            lo, hi = (-self.begin[i], self.spatial[i] + self.end[i]) if include_pad else (0, self.spatial[i])
            n = ((taps >= lo) & (taps < hi)).sum(axis=1).astype(np.float64)
            total = np.multiply.outer(total, n)
        return total


def out_length(n: int, window: int, stride: int, begin: int, end: int, ceil: bool) -> int:
    """Pooled length of one spatial axis (cases 1-2)."""
    span = n + begin + end - window
    if span < 0:
        raise ValueError(f"window {window} is larger than the padded input {n}")
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= n + begin:
        out -= 1  # the last window would start in the end padding
    return out


def _pool_out_dims(ctx: InferContext, spatial: Sequence[Dim]) -> list[Dim]:
    kernel = ctx.attrs["kernel_shape"]
    sp = len(spatial)
    if len(kernel) != sp:
        raise ctx.error(f"kernel_shape {list(kernel)} does not match {sp} spatial dims")
    try:
        if all(isinstance(d, int) for d in spatial):
            return list(PoolGeometry([int(d) for d in spatial], ctx.attrs).out)  # type: ignore[arg-type]
        auto = ctx.attrs.get("auto_pad", "NOTSET")
        strides = list(ctx.attrs.get("strides") or (1,) * sp)
        dil = list(ctx.attrs.get("dilations") or (1,) * sp)
        pads = list(ctx.attrs.get("pads") or (0,) * (2 * sp)) if auto == "NOTSET" else [0] * (2 * sp)
        out: list[Dim] = []
        for i, d in enumerate(spatial):
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                out.append(-(-d // strides[i]) if isinstance(d, int) else (d if strides[i] == 1 else None))
            elif isinstance(d, int):
                window = (kernel[i] - 1) * dil[i] + 1
                out.append(out_length(d, window, strides[i], pads[i], pads[i + sp], bool(ctx.attrs["ceil_mode"])))
            else:
                out.append(None)
        return out
    except ValueError as e:
        raise ctx.error(str(e)) from None


def _pool_infer(allowed: frozenset[DType], with_indices: bool) -> Any:
    def infer(ctx: InferContext) -> list[TensorType]:
        check_dtype_in(ctx, 0, allowed)
        x = ctx.type(0)
        if x.shape is None:
            shape = None
        else:
            if len(x.shape) < 3:
                raise ctx.error(f"input {x} must be [N, C, *spatial]")
            shape = (x.shape[0], x.shape[1], *_pool_out_dims(ctx, x.shape[2:]))
        out = [TensorType(x.dtype, shape)]
        if with_indices and ctx.num_outputs > 1:
            out.append(TensorType(DType.INT64, shape))
        return out

    return infer


# ------------------------------------------------------------------ kernels
def max_pool(x: np.ndarray, attrs: Attrs, with_indices: bool = False) -> list[np.ndarray]:
    """MaxPool (cases 1, 2, 4)."""
    geo = PoolGeometry(x.shape[2:], attrs)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = geo.windows(x, np.asarray(fill).astype(x.dtype))
    sp = len(geo.kernel)
    kaxes = tuple(range(2 + sp, 2 + 2 * sp))
    if not with_indices:
        return [np.ascontiguousarray(win.max(axis=kaxes))]
    flat = win.reshape(*win.shape[: 2 + sp], -1)
    arg = flat.argmax(axis=-1)  # first maximum in row-major window order
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    taps = np.unravel_index(arg, geo.kernel)
    n, c = x.shape[:2]
    channel = (np.arange(n)[:, None] * c + np.arange(c)[None, :]).reshape((n, c) + (1,) * sp)
    offset: Any = 0
    column_major = int(attrs.get("storage_order", 0)) == 1
    for i in reversed(range(sp)) if column_major else range(sp):  # Horner over the dims in storage order
        shape = [1] * sp
        shape[i] = geo.out[i]
        start = (np.arange(geo.out[i]) * geo.strides[i] - geo.begin[i]).reshape(shape)
        offset = offset * geo.spatial[i] + start + taps[i] * geo.dilations[i]
    index = channel * math.prod(geo.spatial) + offset
    return [y, index.astype(np.int64)]


def avg_pool(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """AveragePool (cases 1-3)."""
    geo = PoolGeometry(x.shape[2:], attrs)
    work = x.astype(np.float32) if x.dtype in _HALF else x
    win = geo.windows(work, np.asarray(0).astype(work.dtype))
    sp = len(geo.kernel)
    total = win.sum(axis=tuple(range(2 + sp, 2 + 2 * sp)))
    counts = geo.counts(bool(attrs.get("count_include_pad", 0)))
    return (total / counts.astype(total.dtype)).astype(x.dtype, copy=False)


def _global(reduce: str) -> Any:
    def kernel(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
        x = ins[0]
        axes = tuple(range(2, x.ndim))
        if reduce == "max":
            return [x.max(axis=axes, keepdims=True)]
        work = x.astype(np.float32) if x.dtype in _HALF else x
        return [work.mean(axis=axes, keepdims=True).astype(x.dtype, copy=False)]

    return kernel


def _global_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, FLOAT_TYPES)
    x = ctx.type(0)
    if x.shape is None:
        return [x]
    if len(x.shape) < 3:
        raise ctx.error(f"input {x} must be [N, C, *spatial]")
    return [TensorType(x.dtype, (x.shape[0], x.shape[1]) + (1,) * (len(x.shape) - 2))]


define_op(
    "MaxPool",
    inputs=1,
    outputs=(1, 2),
    attrs={**POOL_ATTRS, "storage_order": AttrSpec("int", 0)},
    infer=_pool_infer(MAXPOOL_TYPES, with_indices=True),
    kernel=lambda ins, attrs, n: max_pool(ins[0], attrs, with_indices=n > 1),
    doc="Max pooling, channels first; optional int64 Indices output.",
)
define_op(
    "AveragePool",
    inputs=1,
    attrs={**POOL_ATTRS, "count_include_pad": AttrSpec("int", 0)},
    infer=_pool_infer(FLOAT_TYPES, with_indices=False),
    kernel=lambda ins, attrs, n: [avg_pool(ins[0], attrs)],
    doc="Average pooling, channels first; count_include_pad, ceil_mode.",
)
define_op(
    "GlobalAveragePool",
    infer=_global_infer,
    kernel=_global("mean"),
    doc="Mean over all spatial dims, kept as size 1.",
)
define_op(
    "GlobalMaxPool",
    infer=_global_infer,
    kernel=_global("max"),
    doc="Max over all spatial dims, kept as size 1.",
)
