"""ATen converters for convolutional layers: convolution, pooling, batch norm, padding, upsampling.

Cases:

1. ``convolution`` (what ``conv1d``/``conv2d``/``conv3d`` and their transposed
   forms decompose to) becomes ``Conv`` / ``ConvTranspose`` (with
   ``output_padding``) with torch's symmetric ``padding`` written as ONNX
   begin/end pads; ``padding="same"`` arrives already resolved.
2. ``max_pool{1,2,3}d_with_indices`` become ``MaxPool`` (``ceil_mode`` and
   dilation kept: torch and ONNX drop the same last window). torch's indices
   count within one ``[*spatial]`` plane, ONNX's over the whole input: when the
   indices are used they are taken modulo the plane size.
3. ``avg_pool{1,2,3}d`` become ``AveragePool`` (``count_include_pad`` and
   ``ceil_mode`` as torch means them); ``divisor_override`` is a
   ``FrontendError``. ``_adaptive_avg_pool{1,2,3}d`` / ``adaptive_max_pool*``
   to size 1 become ``GlobalAveragePool`` / ``GlobalMaxPool``; to a size that
   divides the input evenly, a pool with kernel = stride = in / out; other
   sizes are a ``FrontendError``.
4. ``_native_batch_norm_legit_no_training`` (eval-mode ``batch_norm``) becomes
   ``BatchNormalization``; its saved-statistics outputs are empty in eval mode
   and are never used. ``batch_norm`` with batch statistics (``training=True``:
   what ``InstanceNorm`` decomposes to) and ``native_group_norm`` are computed
   from their definitions (biased statistics per channel / per group, then the
   per-channel scale and bias); a training-mode batch norm that updates running
   statistics is refused earlier, as a buffer mutation.
5. ``constant_pad_nd`` becomes ``Pad`` (torch lists pads from the last dim
   backwards; negative pads crop, as in ONNX).
6. ``upsample_*`` (``F.interpolate``: nearest, nearest-exact, (bi/tri)linear,
   bicubic, with or without ``align_corners``) becomes ``Resize`` over the
   spatial axes; the antialiased forms are not mapped. ``copy`` (an in-place
   assignment made functional) is ``src`` broadcast to the destination.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import ValueTuple, converter, target_name
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


def _fail(imp: Importer, node: Any, msg: str) -> FrontendError:
    return FrontendError(f"{imp.source}: node {node.name} ({target_name(node.target)}): {msg}")


def _spatial_list(values: Any, sp: int, default: int | None = None) -> list[int]:
    """A torch int-or-list spatial argument (``stride=2``, ``[2, 2]``, ``[]``) as ``sp`` ints."""
    if values is None or (isinstance(values, (list, tuple)) and len(values) == 0):
        if default is None:
            raise ValueError("a required spatial argument is missing")
        return [default] * sp
    vals = [int(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return vals * sp if len(vals) == 1 else vals


def _static_spatial(imp: Importer, node: Any, x: Any) -> list[int]:
    dims = [imp.sym(d) for d in imp.meta(x).shape[2:]]
    if not all(isinstance(d, int) for d in dims):
        raise _fail(imp, node, f"needs static spatial dims, got {dims}")
    return dims


# ------------------------------------------------------------------ 1. conv
@converter("aten.convolution.default")
def _convolution(
    imp: Importer,
    node: Any,
    x: Any,
    w: Any,
    b: Any,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
) -> Value:
    sp = imp.rank(x) - 2
    pads = _spatial_list(padding, sp, 0)
    attrs: dict[str, Any] = {
        "strides": _spatial_list(stride, sp, 1),
        "dilations": _spatial_list(dilation, sp, 1),
        "pads": pads + pads,
        "group": int(groups),
        "kernel_shape": [int(k) for k in imp.meta(w).shape[2:]],
    }
    inputs = [imp.tensor(x), imp.tensor(w)] + ([imp.tensor(b)] if b is not None else [])
    if transposed:  # torch's weight is [C_in, C_out / groups, *kernel], as ONNX's
        attrs["output_padding"] = _spatial_list(output_padding, sp, 0)
        return imp.emit("ConvTranspose", inputs, attrs)
    return imp.emit("Conv", inputs, attrs)


def _pool_attrs(imp: Importer, x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool) -> dict[str, Any]:
    """ONNX pool attributes from torch's (an empty ``stride`` means the kernel size; pads are symmetric)."""
    sp = imp.rank(x) - 2
    kernel = _spatial_list(kernel_size, sp)
    pads = _spatial_list(padding, sp, 0)
    return {
        "kernel_shape": kernel,
        "strides": _spatial_list(stride, sp) if stride not in (None, [], ()) else kernel,
        "pads": pads + pads,
        "ceil_mode": int(bool(ceil_mode)),
    }


# --------------------------------------------------------------- 2. max pool
@converter(
    "aten.max_pool1d_with_indices.default",
    "aten.max_pool2d_with_indices.default",
    "aten.max_pool3d_with_indices.default",
    "aten.max_pool1d.default",
    "aten.max_pool2d.default",
    "aten.max_pool3d.default",
)
def _max_pool(
    imp: Importer,
    node: Any,
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Any:
    attrs = _pool_attrs(imp, x, kernel_size, stride, padding, ceil_mode)
    attrs["dilations"] = _spatial_list(dilation, imp.rank(x) - 2, 1)
    if not target_name(node.target).endswith("_with_indices.default"):
        return imp.emit("MaxPool", [imp.tensor(x)], attrs)
    used = {u.args[1] for u in node.users if len(u.args) > 1 and isinstance(u.args[1], int)}
    if 1 not in used:
        return ValueTuple((imp.emit("MaxPool", [imp.tensor(x)], attrs), None))
    y, idx = imp.emit("MaxPool", [imp.tensor(x)], attrs, n_out=2)
    plane = math.prod(_static_spatial(imp, node, x))
    local = imp.emit("Mod", [idx, imp.scalar(plane, DType.INT64)], part="plane_index")
    metas = imp.fx.meta["val"]
    return ValueTuple((imp.finish(y, metas[0]), imp.finish(local, metas[1])))


# --------------------------------------------------------------- 3. avg pool
@converter("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _avg_pool(
    imp: Importer,
    node: Any,
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Any = None,
) -> Value:
    if divisor_override is not None:
        raise _fail(imp, node, f"divisor_override={divisor_override} has no ONNX AveragePool equivalent")
    attrs = _pool_attrs(imp, x, kernel_size, stride, padding, ceil_mode)
    attrs["count_include_pad"] = int(bool(count_include_pad))
    return imp.emit("AveragePool", [imp.tensor(x)], attrs)


@converter(
    "aten._adaptive_avg_pool1d.default",
    "aten._adaptive_avg_pool2d.default",
    "aten._adaptive_avg_pool3d.default",
    "aten.adaptive_avg_pool1d.default",
    "aten.adaptive_max_pool1d.default",
    "aten.adaptive_max_pool2d.default",
    "aten.adaptive_max_pool3d.default",
)
def _adaptive_pool(imp: Importer, node: Any, x: Any, output_size: Any) -> Any:
    is_max = "max" in target_name(node.target)
    sp = imp.rank(x) - 2
    out = _spatial_list(output_size, sp)
    v = imp.tensor(x)
    if all(o == 1 for o in out):
        y = imp.emit("GlobalMaxPool" if is_max else "GlobalAveragePool", [v])
    else:
        spatial = _static_spatial(imp, node, x)
        if any(o <= 0 or s % o for s, o in zip(spatial, out)):
            raise _fail(imp, node, f"adaptive pooling of {spatial} to {out} (not an even division) is not supported")
        kernel = [s // o for s, o in zip(spatial, out)]
        attrs = {"kernel_shape": kernel, "strides": kernel}
        y = imp.emit("MaxPool" if is_max else "AveragePool", [v], attrs)
    if not is_max:
        return y
    if any(len(u.args) > 1 and u.args[1] == 1 for u in node.users):
        raise _fail(imp, node, "the indices of adaptive max pooling are not supported")
    return ValueTuple((imp.finish(y, imp.fx.meta["val"][0]), None))


# ------------------------------------------------------------- 4. batch norm
@converter("aten._native_batch_norm_legit_no_training.default")
def _batch_norm(
    imp: Importer, node: Any, x: Any, w: Any, b: Any, mean: Any, var: Any, momentum: float, eps: float
) -> Any:
    v = imp.tensor(x)
    dt = v.dtype
    channels = imp.meta(x).shape[1]
    c = imp.sym(channels)
    if not isinstance(c, int):
        raise _fail(imp, node, "needs a static channel dim")
    scale = imp.tensor(w) if w is not None else imp.const(np.ones(c, dtype=dt.np), "bn_scale")
    bias = imp.tensor(b) if b is not None else imp.const(np.zeros(c, dtype=dt.np), "bn_bias")
    y = imp.emit("BatchNormalization", [v, scale, bias, imp.tensor(mean), imp.tensor(var)], {"epsilon": float(eps)})
    _statistics_unused(imp, node, "batch norm")
    return ValueTuple((imp.finish(y, imp.fx.meta["val"][0]), None, None))


def _normalized(imp: Importer, v: Value, axes: list[int], eps: float) -> Value:
    """``(v - mean) / sqrt(var + eps)`` with biased statistics over ``axes`` (kept)."""
    ax = imp.ints(axes)
    mean = imp.emit("ReduceMean", [v, ax], {"keepdims": 1}, part="mean")
    d = imp.emit("Sub", [v, mean], part="centered")
    var = imp.emit("ReduceMean", [imp.emit("Mul", [d, d], part="square"), ax], {"keepdims": 1}, part="var")
    std = imp.emit("Sqrt", [imp.emit("Add", [var, imp.scalar(eps, v.dtype)], part="var_eps")], part="std")
    return imp.emit("Div", [d, std], part="normed")


def _channel_affine(imp: Importer, y: Value, w: Any, b: Any, rank: int) -> Value:
    """``y * w + b`` with ``w``, ``b`` of shape ``[C]`` on axis 1 (either may be None)."""
    where = imp.ints([-1] + [1] * (rank - 2))
    if w is not None:
        y = imp.emit("Mul", [y, imp.emit("Reshape", [imp.tensor(w), where], part="scale")], part="scaled")
    if b is not None:
        y = imp.emit("Add", [y, imp.emit("Reshape", [imp.tensor(b), where], part="bias")])
    return y


def _statistics_unused(imp: Importer, node: Any, what: str) -> None:
    if any(len(u.args) > 1 and u.args[1] != 0 for u in node.users):
        raise _fail(imp, node, f"the saved statistics of {what} are used; only the normalized output is supported")


@converter(
    "aten._native_batch_norm_legit.default",
    "aten._native_batch_norm_legit_functional.default",
    "aten.native_batch_norm.default",
    "aten._native_batch_norm_legit.no_stats",
)
def _batch_norm_batch_stats(imp: Importer, node: Any, *args: Any, **kwargs: Any) -> Any:
    """``batch_norm`` with ``training=True`` normalizes with the batch's own statistics (what
    ``InstanceNorm`` becomes); updating running statistics would be a buffer mutation, refused before."""
    no_stats = target_name(node.target).endswith(".no_stats")
    training = True if no_stats else (args[5] if len(args) > 5 else kwargs.get("training", True))
    eps = args[5] if no_stats else args[7]
    if not training:
        return _batch_norm(imp, node, *args[:5], args[6], eps)
    _statistics_unused(imp, node, "batch norm")
    rank = imp.rank(args[0])
    y = _normalized(imp, imp.tensor(args[0]), [0, *range(2, rank)], float(eps))
    y = _channel_affine(imp, y, args[1], args[2], rank)
    return ValueTuple((imp.finish(y, imp.fx.meta["val"][0]), None, None))


@converter("aten.native_group_norm.default")
def _group_norm(
    imp: Importer, node: Any, x: Any, w: Any, b: Any, n: Any, c: Any, hw: Any, group: int, eps: float
) -> Any:
    """``GroupNorm``: statistics over ``[C / group, *spatial]`` of ``x`` viewed as ``[N, group, -1]``, then the
    per-channel affine; the mean/rstd outputs are not supported."""
    _statistics_unused(imp, node, "group norm")
    v = imp.tensor(x)
    grouped = imp.emit("Reshape", [v, imp.ints([0, int(group), -1])], part="grouped")
    y = imp.emit("Reshape", [_normalized(imp, grouped, [2], float(eps)), imp.emit("Shape", [v], part="shape")],
                 part="ungrouped")  # fmt: skip
    y = _channel_affine(imp, y, w, b, imp.rank(x))
    return ValueTuple((imp.finish(y, imp.fx.meta["val"][0]), None, None))


# ------------------------------------------------------------------- 5. pad
@converter("aten.constant_pad_nd.default")
def _constant_pad(imp: Importer, node: Any, x: Any, pad: Sequence[Any], value: Any = 0) -> Value:
    rank = imp.rank(x)
    pairs = [imp.sym(p) for p in pad]
    if not all(isinstance(p, int) for p in pairs) or len(pairs) % 2:
        raise _fail(imp, node, f"pads must be static pairs, got {pairs}")
    begin, end = [0] * rank, [0] * rank
    for k in range(len(pairs) // 2):
        axis = rank - 1 - k
        begin[axis], end[axis] = pairs[2 * k], pairs[2 * k + 1]
    v = imp.tensor(x)
    if not any(begin) and not any(end):
        return v
    return imp.emit("Pad", [v, imp.ints(begin + end), imp.scalar(imp.sym(value), v.dtype)])


# -------------------------------------------------------------- 6. upsample
#: target base name -> (Resize mode, coordinate mode when align_corners is False, nearest_mode)
_UPSAMPLE = {
    "upsample_nearest": ("nearest", "asymmetric", "floor"),
    "_upsample_nearest_exact": ("nearest", "half_pixel", "round_prefer_ceil"),
    "upsample_linear": ("linear", "half_pixel", None),
    "upsample_bilinear": ("linear", "half_pixel", None),
    "upsample_trilinear": ("linear", "half_pixel", None),
    "upsample_bicubic": ("cubic", "half_pixel", None),
}


@converter(
    *(f"aten.upsample_nearest{d}d.vec" for d in (1, 2, 3)),
    *(f"aten._upsample_nearest_exact{d}d.vec" for d in (1, 2, 3)),
    "aten.upsample_linear1d.vec",
    "aten.upsample_bilinear2d.vec",
    "aten.upsample_trilinear3d.vec",
    "aten.upsample_bicubic2d.vec",
)
def _upsample(imp: Importer, node: Any, x: Any, output_size: Any, *rest: Any) -> Value:
    """Case 6: ``F.interpolate`` as ``Resize`` over the spatial axes.

    torch's source index is ``dst * scale`` (nearest: floored; nearest-exact:
    ``floor((dst + 0.5) * scale)``) or ``(dst + 0.5) * scale - 0.5`` (linear and
    cubic; ``align_corners`` maps the corners), with ``scale = 1 / scale_factor``
    when a factor is given, else ``in / out``: ONNX ``asymmetric`` /
    ``half_pixel`` / ``align_corners`` with ``scales`` or ``sizes`` to match.
    Linear and cubic taps past an edge repeat the edge element, as torch clamps.
    """
    base = target_name(node.target).removeprefix("aten.").split(".")[0][:-2]
    mode, ctm, nearest = _UPSAMPLE[base]
    align = bool(rest[0]) if mode != "nearest" and rest else False
    factors = rest[-1] if rest else None
    sp = imp.rank(x) - 2
    attrs: dict[str, Any] = {"mode": mode, "axes": list(range(2, 2 + sp))}
    attrs["coordinate_transformation_mode"] = "align_corners" if align else ctm
    if nearest is not None:
        attrs["nearest_mode"] = nearest
    if mode == "cubic":
        attrs["cubic_coeff_a"] = -0.75
    v = imp.tensor(x)
    if factors is not None and not align:
        scales = imp.const(np.asarray([float(f) for f in factors], dtype=np.float32), "scales")
        return imp.emit("Resize", [v, None, scales], attrs)
    sizes = output_size if output_size is not None else list(imp.fx.meta["val"].shape[2:])
    return imp.emit("Resize", [v, None, None, imp.shape_vec(list(sizes), allow_infer=False)], attrs)


@converter("aten.copy.default")
def _copy(imp: Importer, node: Any, x: Any, src: Any, non_blocking: bool = False) -> Value:
    """``x.copy_(src)`` out of place: ``src`` in ``x``'s dtype, broadcast to ``x``'s shape."""
    v = imp.operand(src, imp.out_dtype())
    if v.shape is not None and v.shape == imp.tensor(x).shape and None not in v.shape:
        return v
    return imp.emit("Expand", [v, imp.emit("Shape", [imp.tensor(x)], part="shape")])
