"""``Conv`` (standard ONNX, channels first) and the shared N-d convolution kernel.

Cases of ``Conv(x[N, C, *spatial], w[O, C/group, *kernel], b[O]?)``:

1. ``strides``, ``dilations`` (default 1) and explicit ``pads``
   ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` (default 0);
2. ``auto_pad``: ``NOTSET`` (use ``pads``), ``VALID`` (no padding),
   ``SAME_UPPER`` / ``SAME_LOWER`` (output ``ceil(in / stride)``, the odd pad
   at the end / the beginning);
3. ``group``: channels split into groups (depthwise when group == C);
4. any number of spatial dims (1-d, 2-d, 3-d...).

Computed in float32 (float64 stays float64) with im2col windows and tensordot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")

CONV_ATTRS = {
    "auto_pad": AttrSpec("str", "NOTSET"),
    "dilations": AttrSpec("ints", None),
    "group": AttrSpec("int", 1),
    "kernel_shape": AttrSpec("ints", None),
    "pads": AttrSpec("ints", None),
    "strides": AttrSpec("ints", None),
}


def resolve_pads(
    spatial: Sequence[int], kernel: Sequence[int], attrs: Mapping[str, Any]
) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads) with defaults filled and auto_pad applied (case 2)."""
    sp = len(kernel)
    strides = list(attrs.get("strides") or (1,) * sp)
    dil = list(attrs.get("dilations") or (1,) * sp)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in AUTO_PADS:
        raise ValueError(f"unknown auto_pad {auto!r}")
    if auto == "NOTSET":
        pads = list(attrs.get("pads") or (0,) * (2 * sp))
    elif auto == "VALID":
        pads = [0] * (2 * sp)
    else:
        begin, end = [], []
        for i in range(sp):
            eff = (kernel[i] - 1) * dil[i] + 1
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + eff - spatial[i])
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        pads = begin + end
    if len(strides) != sp or len(dil) != sp or len(pads) != 2 * sp:
        raise ValueError(f"strides/dilations/pads do not match {sp} spatial dims")
    return strides, dil, pads


def conv_nchw(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: Mapping[str, Any]
) -> np.ndarray:
    """Channels-first convolution (cases 1-4)."""
    ct = np.float64 if x.dtype == np.float64 else np.float32
    sp = x.ndim - 2
    kernel = list(w.shape[2:])
    strides, dil, pads = resolve_pads(x.shape[2:], kernel, attrs)
    group = int(attrs.get("group", 1))
    n, c = x.shape[:2]
    o = w.shape[0]
    if c % group or o % group or w.shape[1] != c // group:
        raise ValueError(f"input channels {c}, weight {list(w.shape)} and group {group} do not fit")
    xp = np.pad(x.astype(ct, copy=False), [(0, 0), (0, 0)] + [(pads[i], pads[i + sp]) for i in range(sp)])
    eff = [(kernel[i] - 1) * dil[i] + 1 for i in range(sp)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + sp)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dil
    )
    win = win[index]  # [N, C, *out, *kernel]
    cg, og = c // group, o // group
    wc = w.astype(ct, copy=False)
    outs = []
    for g in range(group):
        xg = win[:, g * cg : (g + 1) * cg]
        wg = wc[g * og : (g + 1) * og]
        y = np.tensordot(xg, wg, axes=([1, *range(2 + sp, 2 + 2 * sp)], [1, *range(2, 2 + sp)]))
        outs.append(np.moveaxis(y, -1, 1))  # [N, og, *out]
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape((1, o) + (1,) * sp)
    return y.astype(x.dtype, copy=False)


def conv_out_dims(
    spatial: Sequence[Dim], kernel: Sequence[int], attrs: Mapping[str, Any]
) -> list[Dim]:
    """Output spatial dims (unknown where the input dim is not static)."""
    if not all(isinstance(d, int) for d in spatial):
        if attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
            strides = list(attrs.get("strides") or (1,) * len(kernel))
            return [d if isinstance(d, str) and s == 1 else None for d, s in zip(spatial, strides)]
        return [None] * len(kernel)
    strides, dil, pads = resolve_pads([int(d) for d in spatial], kernel, attrs)  # type: ignore[arg-type]
    sp = len(kernel)
    out: list[Dim] = []
    for i in range(sp):
        eff = (kernel[i] - 1) * dil[i] + 1
        out.append((int(spatial[i]) + pads[i] + pads[i + sp] - eff) // strides[i] + 1)  # type: ignore[arg-type]
    return out


def infer_conv_dims(ctx: InferContext, spatial: Sequence[Dim], kernel: Sequence[Dim]) -> list[Dim]:
    """``conv_out_dims`` during type inference (Conv and ConvNHWC): all unknown when the kernel is not
    static; a configuration that gives no output is the node's error."""
    static_kernel = [k for k in kernel if isinstance(k, int)]
    if len(static_kernel) != len(kernel):
        return [None] * len(kernel)
    try:
        return conv_out_dims(spatial, static_kernel, ctx.attrs)
    except ValueError as e:
        raise ctx.error(str(e)) from None


def _conv_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    if x.shape is None or w.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.error(f"input {x} and weight {w} must be [N, C, *spatial] and [O, C/group, *kernel]")
    out = infer_conv_dims(ctx, x.shape[2:], w.shape[2:])
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *out))]


define_op(
    "Conv",
    inputs=(2, 3),
    attrs=CONV_ATTRS,
    infer=_conv_infer,
    kernel=lambda ins, attrs, n: [conv_nchw(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs)],
    doc="N-d convolution, channels first; strides, pads, dilations, group, auto_pad.",
)
