"""ATen converters that create tensors: ``full``/``zeros``/``ones`` (and their ``_like``/``new_`` forms), ``arange``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import SMALL_CONST, converter, target_name
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------ creation ops
def full_like(imp: Importer, like: Value, value: Any, dtype: DType) -> Value:
    if like.type.is_static and (like.type.numel or 0) <= SMALL_CONST:
        return imp.const(np.full(like.shape, value, dtype=dtype.np), "full")
    return imp.emit(
        "ConstantOfShape", [imp.emit("Shape", [like], part="shape")], {"value": np.full((1,), value, dtype=dtype.np)}
    )


def _full_of_shape(imp: Importer, sizes: Sequence[Any], value: Any, dtype: DType) -> Value:
    exprs = [imp.sym(s) for s in sizes]
    if all(isinstance(e, int) for e in exprs) and math.prod(exprs) <= SMALL_CONST:
        return imp.const(np.full(exprs, value, dtype=dtype.np), "full")
    shape = imp.shape_vec(sizes, allow_infer=False)
    return imp.emit("ConstantOfShape", [shape], {"value": np.full((1,), value, dtype=dtype.np)})


def _fill_value(imp: Importer, value: Any) -> Any:
    s = imp.sym(value)
    if not isinstance(s, (bool, int, float)):
        raise FrontendError(f"{imp.source}: node {imp.fx.name}: a symbolic fill value is not supported")
    return s


@converter("aten.full.default", "aten.new_full.default")
def _full(imp: Importer, node: Any, *args: Any, **kw: Any) -> Value:
    if target_name(node.target) == "aten.new_full.default":
        args = args[1:]
    sizes, value = args[0], args[1]
    return _full_of_shape(imp, sizes, _fill_value(imp, value), imp.out_dtype())


@converter(
    "aten.zeros.default",
    "aten.ones.default",
    "aten.empty.memory_format",
    "aten.new_zeros.default",
    "aten.new_ones.default",
    "aten.new_empty.default",
)
def _zeros_ones(imp: Importer, node: Any, *args: Any, **kw: Any) -> Value:
    name = target_name(node.target)
    if name.startswith("aten.new_"):
        args = args[1:]
    value = 1 if "ones" in name else 0
    return _full_of_shape(imp, args[0], value, imp.out_dtype())


@converter(
    "aten.full_like.default",
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.empty_like.default",
    "aten.fill.Scalar",
)
def _full_like_conv(imp: Importer, node: Any, x: Any, value: Any = None, **kw: Any) -> Value:
    name = target_name(node.target)
    if name in ("aten.full_like.default", "aten.fill.Scalar"):
        fill = _fill_value(imp, value)
    else:
        fill = 1 if "ones" in name else 0
    return full_like(imp, imp.tensor(x), fill, imp.out_dtype())


@converter("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def _arange(imp: Importer, node: Any, *args: Any, **kw: Any) -> Value:
    name = target_name(node.target)
    if name == "aten.arange.default":
        start, end, step = 0, args[0], 1
    elif name == "aten.arange.start":
        start, end, step = args[0], args[1], 1
    else:
        start, end = args[0], args[1]
        step = args[2] if len(args) > 2 else 1
    dt = imp.out_dtype()
    parts = [imp.sym(a) for a in (start, end, step)]
    if all(isinstance(p, (int, float)) for p in parts):
        return imp.const(np.arange(parts[0], parts[1], parts[2]).astype(dt.np), "arange")
    return imp.emit("Range", [imp.operand(a, dt) for a in (start, end, step)])
