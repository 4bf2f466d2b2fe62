"""Standard ONNX ``ConvTranspose`` (channels first): ``ConvTranspose(x[N, C, *in], w[C, M/group, *kernel], b[M]?)``.

Cases:

1. Each input element scatters ``x[n, c, i] * w[c, m, t]`` to output position
   ``i * stride + t * dilation - pad_begin``; ``group`` splits the channels.
2. Output length ``stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1
   - pad_begin - pad_end`` with explicit ``pads`` (default 0, ``VALID`` too).
3. ``output_shape`` (spatial dims, or the full shape) fixes the length; the total
   padding it implies is split with the odd unit at the end for ``SAME_UPPER``,
   at the beginning otherwise. ``SAME_UPPER`` / ``SAME_LOWER`` without it give
   ``in * stride``.

Computed in float32 (float64 stays), one ``tensordot`` per kernel tap.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from accelopt.ir.ops.common import FLOAT_TYPES, Attrs, Ins, check_dtype_in, check_same_dtype
from accelopt.ir.ops.onnx_conv import AUTO_PADS, CONV_ATTRS
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType


def transpose_geometry(
    spatial: Sequence[int], kernel: Sequence[int], attrs: Attrs
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(strides, dilations, output_padding, pads [begins + ends], output spatial shape), cases 2-3."""
    sp = len(kernel)
    strides = list(attrs.get("strides") or (1,) * sp)
    dil = list(attrs.get("dilations") or (1,) * sp)
    extra = list(attrs.get("output_padding") or (0,) * sp)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in AUTO_PADS:
        raise ValueError(f"unknown auto_pad {auto!r}")
    if len(strides) != sp or len(dil) != sp or len(extra) != sp:
        raise ValueError(f"strides/dilations/output_padding do not match {sp} spatial dims")
    full = [strides[i] * (spatial[i] - 1) + extra[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(sp)]
    wanted = attrs.get("output_shape")
    if wanted is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [int(d) for d in wanted][-sp:] if wanted is not None else [s * n for s, n in zip(strides, spatial)]
        if len(out) != sp:
            raise ValueError(f"output_shape {list(wanted or ())} does not give {sp} spatial dims")
        total = [f - o for f, o in zip(full, out)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        pads = small + big if auto == "SAME_UPPER" else big + small
        return strides, dil, extra, pads, out
    pads = [0] * (2 * sp) if auto == "VALID" else list(attrs.get("pads") or (0,) * (2 * sp))
    if len(pads) != 2 * sp:
        raise ValueError(f"pads {pads} do not match {sp} spatial dims")
    out = [full[i] - pads[i] - pads[i + sp] for i in range(sp)]
    if min(out, default=1) < 1:
        raise ValueError(f"pads {pads} leave an empty output {out}")
    return strides, dil, extra, pads, out


def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: Attrs) -> np.ndarray:
    """Cases 1-3."""
    ct = np.float64 if x.dtype == np.float64 else np.float32
    sp = x.ndim - 2
    spatial, kernel = list(x.shape[2:]), list(w.shape[2:])
    strides, dil, _, pads, out = transpose_geometry(spatial, kernel, attrs)
    group = int(attrs.get("group", 1))
    n, c = x.shape[:2]
    if c % group or w.shape[0] != c:
        raise ValueError(f"input channels {c}, weight {list(w.shape)} and group {group} do not fit")
    cg, mg = c // group, w.shape[1]
    reach = [(spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 for i in range(sp)]
    acc = np.zeros((n, mg * group, *reach), dtype=ct)
    xc: np.ndarray = x.astype(ct, copy=False)
    wc: np.ndarray = w.astype(ct, copy=False)
    for g in range(group):
        xg, wg = xc[:, g * cg : (g + 1) * cg], wc[g * cg : (g + 1) * cg]
        for tap in itertools.product(*(range(k) for k in kernel)):
            tap_index: tuple[Any, ...] = (slice(None), slice(None), *tap)
            part: np.ndarray = np.tensordot(xg, wg[tap_index], axes=([1], [0]))  # [N, *in, Mg]
            where = tuple(
                slice(t * d, t * d + (s_in - 1) * s + 1, s) for t, d, s_in, s in zip(tap, dil, spatial, strides)
            )
            acc[(slice(None), slice(g * mg, (g + 1) * mg), *where)] += np.moveaxis(part, -1, 1)
    # output position j is accumulator position j + pad_begin; outside the accumulator is zero
    widths = [(0, 0), (0, 0)] + [(max(-pads[i], 0), max(pads[i] + out[i] - reach[i], 0)) for i in range(sp)]
    acc = np.pad(acc, widths)
    crop = tuple(slice(max(pads[i], 0), max(pads[i], 0) + out[i]) for i in range(sp))
    y = acc[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape((1, -1) + (1,) * sp)
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


def _infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, FLOAT_TYPES)
    check_same_dtype(ctx, [i for i in range(3) if ctx.has(i)])
    x, w = ctx.type(0), ctx.type(1)
    group = int(ctx.attrs["group"])
    if x.shape is None or w.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.error(f"input {x} and weight {w} must be [N, C, *spatial] and [C, M/group, *kernel]")
    m: Dim = w.shape[1] * group if isinstance(w.shape[1], int) else None
    kernel, spatial = w.shape[2:], x.shape[2:]
    if not all(isinstance(d, int) for d in (*kernel, *spatial)):
        return [TensorType(x.dtype, (x.shape[0], m, *([None] * len(spatial))))]
    try:
        out = transpose_geometry([int(d) for d in spatial], [int(k) for k in kernel], ctx.attrs)[4]  # type: ignore[arg-type]
    except ValueError as e:
        raise ctx.error(str(e)) from None
    return [TensorType(x.dtype, (x.shape[0], m, *out))]


def _kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    b: Any = ins[2] if len(ins) > 2 else None
    return [conv_transpose(ins[0], ins[1], b, attrs)]


define_op(
    "ConvTranspose",
    inputs=(2, 3),
    attrs={**CONV_ATTRS, "output_padding": AttrSpec("ints", None), "output_shape": AttrSpec("ints", None)},
    infer=_infer,
    kernel=_kernel,
    doc="N-d transposed convolution, channels first; strides, pads, dilations, group, output_padding/output_shape.",
)
