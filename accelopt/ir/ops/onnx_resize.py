"""Standard ONNX ``Resize`` (opset 11-19 semantics): ``Resize(X, roi?, scales?, sizes?)``.

Resizing is separable: each resized axis is a matrix ``W[out, in]`` of
interpolation weights applied along that axis (in float64, then rounded back).
Cases handled:

1. Output size: ``sizes`` (with ``keep_aspect_ratio_policy`` ``stretch``,
   ``not_larger`` or ``not_smaller``: one scale for all ``axes``, sizes rounded
   half up), or ``scales`` (``floor(in * scale)``); ``axes`` limits both to
   some axes (the others keep their size).
2. ``coordinate_transformation_mode``: ``half_pixel`` (default),
   ``half_pixel_symmetric``, ``pytorch_half_pixel``, ``align_corners``,
   ``asymmetric``, ``tf_half_pixel_for_nn`` (opset 11) and
   ``tf_crop_and_resize`` (``roi`` gives the crop per axis; outputs whose source
   falls outside the input take ``extrapolation_value``).
3. ``mode``: ``nearest`` (``nearest_mode`` ``round_prefer_floor`` (default),
   ``round_prefer_ceil``, ``floor``, ``ceil``), ``linear`` (2 taps) and ``cubic``
   (4 taps, ``cubic_coeff_a``, default -0.75). A source coordinate that is an
   integer takes that input element exactly.
4. ``antialias=1`` (linear, cubic) widens the filter by ``1/scale`` when
   downsampling and normalizes its weights; ``exclude_outside=1`` drops taps
   outside the input and renormalizes. Otherwise taps past an edge repeat the
   edge element.
5. Integer inputs are rounded half to even and clamped to their range; float
   results are clamped to the dtype's finite range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import FLOAT_TYPES, NUMERIC_TYPES, Attrs, Ins, check_dtype_in, normalize_axes
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

MODES = ("nearest", "linear", "cubic")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


# ----------------------------------------------------------------- sizes (case 1)
def _given(arr: np.ndarray | None) -> bool:
    return arr is not None and arr.size > 0


def _axes(attrs: Attrs, rank: int) -> list[int]:
    axes = attrs.get("axes")
    return list(range(rank)) if axes is None else normalize_axes(axes, rank)


def output_plan(
    shape: Sequence[int], attrs: Attrs, scales: np.ndarray | None, sizes: np.ndarray | None
) -> tuple[list[int], list[float]]:
    """(output shape, scale per axis) from ``sizes`` or ``scales`` (case 1)."""
    rank = len(shape)
    axes = _axes(attrs, rank)
    out = [int(d) for d in shape]
    scale = [1.0] * rank
    if _given(sizes) == _given(scales):
        raise ValueError("exactly one of 'scales' and 'sizes' must be given")
    if _given(sizes):
        assert sizes is not None
        want = [int(s) for s in sizes.reshape(-1)]
        if len(want) != len(axes):
            raise ValueError(f"sizes {want} do not match the {len(axes)} resized axes")
        for a, s in zip(axes, want):
            out[a] = s
            scale[a] = s / shape[a] if shape[a] else 1.0
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy not in ASPECT_POLICIES:
            raise ValueError(f"unknown keep_aspect_ratio_policy {policy!r}")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scale[a] for a in axes)
            for a in axes:
                scale[a] = common
                out[a] = int(common * shape[a] + 0.5)
    else:
        assert scales is not None
        given = [float(s) for s in scales.reshape(-1)]
        if len(given) != len(axes):
            raise ValueError(f"scales {given} do not match the {len(axes)} resized axes")
        for a, factor in zip(axes, given):
            if factor <= 0:
                raise ValueError(f"scales must be positive, got {given}")
            scale[a] = factor
            out[a] = int(math.floor(factor * shape[a]))
    return out, scale


# ------------------------------------------------------------- weights (cases 2-4)
def source_coords(
    mode: str, n_out: int, n_in: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinate of every output position, and the extrapolated ones (case 2)."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in  # the unrounded output length, as the ONNX reference uses it
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        return offset + (y + 0.5) / scale - 0.5, None
    if mode == "pytorch_half_pixel":
        return (np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "align_corners":
        return (np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale, None
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if width == 1:
            x = np.full(n_out, (hi - lo) * (n_in - 1) / 2)
        else:
            x = y * (hi - lo) * (n_in - 1) / (width - 1)
        x = x + lo * (n_in - 1)
        return x, (x < 0) | (x > n_in - 1)
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def axis_weights(x: np.ndarray, n_in: int, scale: float, attrs: Attrs) -> np.ndarray:
    """``W[out, in]`` for source coordinates ``x`` (cases 3-4)."""
    mode = attrs.get("mode", "nearest")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    antialias = int(attrs.get("antialias", 0)) == 1 and mode != "nearest"
    s = min(scale, 1.0) if antialias else 1.0
    start = 0 if mode == "nearest" else math.floor((-1.0 if mode == "linear" else -2.0) / s) + 1
    taps = 2 - 2 * start
    fl = np.floor(x)
    whole = x == fl  # an integer coordinate takes that element (the ratio-1 convention)
    base = np.where(whole, x - 1, fl).astype(np.int64) + start
    idx = base[:, None] + np.arange(taps)[None, :]
    if mode == "nearest":
        frac = x - fl
        rule = attrs.get("nearest_mode", "round_prefer_floor")
        if rule not in NEAREST_MODES:
            raise ValueError(f"unknown nearest_mode {rule!r}")
        up = {
            "round_prefer_floor": frac > 0.5,
            "round_prefer_ceil": frac >= 0.5,
            "floor": np.zeros_like(whole),
            "ceil": np.ones_like(whole),
        }[rule] | whole
        w = np.stack([~up, up], axis=1).astype(np.float64)
    elif mode == "linear":
        w = np.clip(1 - np.abs((idx - x[:, None]) * s), 0, 1)
    else:
        w = _cubic((idx - x[:, None]) * s, float(attrs.get("cubic_coeff_a", -0.75)))
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if int(attrs.get("exclude_outside", 0)) == 1:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    out = np.zeros((len(x), n_in), dtype=np.float64)
    rows = np.broadcast_to(np.arange(len(x))[:, None], idx.shape)
    np.add.at(out, (rows, np.clip(idx, 0, n_in - 1)), w)
    return out


# ------------------------------------------------------------------ kernel
def resize(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
    x = ins[0]
    roi, scales, sizes = (list(ins[1:]) + [None, None, None])[:3]
    rank = x.ndim
    out_shape, scale = output_plan(x.shape, attrs, scales, sizes)
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    axes = _axes(attrs, rank)
    box = [(0.0, 1.0)] * rank
    if ctm == "tf_crop_and_resize":
        if not _given(roi):
            raise ValueError("coordinate_transformation_mode tf_crop_and_resize needs the roi input")
        r = [float(v) for v in np.asarray(roi).reshape(-1)]
        k = len(r) // 2
        if k not in (len(axes), rank):
            raise ValueError(f"roi {r} does not match {len(axes)} resized axes")
        owners = axes if k == len(axes) else list(range(rank))
        for i, a in enumerate(owners):
            box[a] = (r[i], r[k + i])
    fill = float(attrs.get("extrapolation_value", 0.0))
    y = x.astype(np.float64)
    for a in axes:
        if out_shape[a] == x.shape[a] and scale[a] == 1.0 and box[a] == (0.0, 1.0):
            continue
        coords, outside = source_coords(ctm, out_shape[a], x.shape[a], scale[a], box[a])
        w = axis_weights(coords, x.shape[a], scale[a], attrs) if x.shape[a] else np.zeros((out_shape[a], 0))
        y = np.moveaxis(np.tensordot(w, y, axes=([1], [a])), 0, a)
        if outside is not None and outside.any():
            shape = [1] * rank
            shape[a] = out_shape[a]
            y = np.where(outside.reshape(shape), fill, y)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        return [np.clip(np.round(y), info.min, info.max).astype(x.dtype)]
    finfo = np.finfo(x.dtype) if x.dtype != DType.BFLOAT16.np else None
    if finfo is not None:
        y = np.clip(y, float(finfo.min), float(finfo.max))
    return [y.astype(x.dtype)]


# --------------------------------------------------------------- inference
def _resize_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    x = ctx.type(0)
    for key, allowed in (
        ("mode", MODES),
        ("nearest_mode", NEAREST_MODES),
        ("coordinate_transformation_mode", COORDINATE_MODES),
        ("keep_aspect_ratio_policy", ASPECT_POLICIES),
    ):
        if ctx.attrs[key] not in allowed:
            raise ctx.error(f"{key} {ctx.attrs[key]!r} is not one of {', '.join(allowed)}")
    if ctx.attrs["antialias"] and ctx.attrs["mode"] == "nearest":
        raise ctx.error("antialias is not defined for mode nearest")
    if ctx.has(2):
        check_dtype_in(ctx, 2, FLOAT_TYPES)
    if x.shape is None:
        return [x]
    rank = len(x.shape)
    scales = ctx.const(2) if ctx.has(2) else None
    sizes = ctx.const(3) if ctx.has(3) else None
    if not (ctx.has(2) and ctx.type(2).numel != 0) and not ctx.has(3):
        raise ctx.error("needs 'scales' or 'sizes'")
    try:
        axes = _axes(ctx.attrs, rank)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    dims: list[Dim] = list(x.shape)
    if _given(sizes) and ctx.attrs["keep_aspect_ratio_policy"] == "stretch":
        assert sizes is not None
        want = [int(s) for s in sizes.reshape(-1)]
        if len(want) != len(axes):
            raise ctx.error(f"sizes {want} do not match the {len(axes)} resized axes")
        for a, s in zip(axes, want):
            dims[a] = s
    elif _given(scales) and not _given(sizes):
        assert scales is not None
        given = [float(s) for s in scales.reshape(-1)]
        if len(given) != len(axes):
            raise ctx.error(f"scales {given} do not match the {len(axes)} resized axes")
        for a, factor in zip(axes, given):
            d = x.shape[a]
            dims[a] = int(math.floor(factor * d)) if isinstance(d, int) else (d if factor == 1.0 else None)
    elif all(isinstance(d, int) for d in x.shape) and (_given(sizes) or _given(scales)):
        out, _ = output_plan([int(d) for d in x.shape], ctx.attrs, scales, sizes)  # type: ignore[arg-type]
        dims = list(out)
    else:
        for a in axes:
            dims[a] = None
    return [TensorType(x.dtype, tuple(dims))]


define_op(
    "Resize",
    inputs=(1, 4),
    attrs={
        "antialias": AttrSpec("int", 0),
        "axes": AttrSpec("ints", None),
        "coordinate_transformation_mode": AttrSpec("str", "half_pixel"),
        "cubic_coeff_a": AttrSpec("float", -0.75),
        "exclude_outside": AttrSpec("int", 0),
        "extrapolation_value": AttrSpec("float", 0.0),
        "keep_aspect_ratio_policy": AttrSpec("str", "stretch"),
        "mode": AttrSpec("str", "nearest"),
        "nearest_mode": AttrSpec("str", "round_prefer_floor"),
    },
    infer=_resize_infer,
    kernel=resize,
    doc="Resize by scales or sizes: nearest/linear/cubic, every coordinate transformation mode, antialias.",
)
