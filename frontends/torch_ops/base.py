"""What the torch.export importer and its ATen converters share.

* the converter table: ``CONVERTERS`` maps ATen target names
  (``aten.add.Tensor``) to functions ``fn(importer, fx_node, *args, **kwargs)``
  that emit IR nodes and return a ``Value`` (or a ``ValueTuple`` for ops with
  several outputs); ``@converter(name, ...)`` registers one. ``IGNORED`` lists
  targets that produce nothing the graph needs (metadata assertions).
* naming and typing helpers: ``target_name`` (an OpOverload as
  ``aten.op.overload``), ``torch_dtype``, ``to_numpy``, ``expr_of`` (the sympy
  expression behind a SymInt), ``unsupported_ops`` (what the table lacks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.ir.dtypes import DType

INT64_MAX = 2**63 - 1
SMALL_CONST = 64  # constants up to this many elements are shared by content

# ================================================================= converter table
Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}

#: targets that produce nothing the graph needs (metadata checks)
IGNORED = {
    "aten._assert_tensor_metadata.default",
    "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default",
    "aten.sym_constrain_range.default",
    "aten._assert_async.msg",
    "aten._assert_async.default",
    "aten.sym_constrain_range_for_size",
}


def converter(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            CONVERTERS[n] = fn
        return fn

    return deco


# ================================================================= helpers
def torch_module() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        raise FrontendError("the torch frontend needs torch installed") from e
    return torch


def first_line(e: BaseException | None) -> str:
    text = str(e).strip() if e is not None else ""
    return text.splitlines()[0] if text else type(e).__name__


def target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, "_name", None)  # OpOverload: "aten::add.Tensor"
    overload = getattr(target, "_overloadname", None)
    if isinstance(name, str) and "::" in name:
        ns, op = name.split("::", 1)
        base = f"{ns}.{op}"
        if overload is not None and not base.endswith("." + overload):
            base += "." + (overload or "default")
        return base
    module = getattr(target, "__module__", "") or ""
    qual = getattr(target, "__name__", repr(target))
    if module in ("_operator", "operator"):
        return f"operator.{qual}"
    if module.startswith("torch"):
        return f"{module}.{qual}"
    return f"{module}.{qual}" if module else qual


def is_constant_input(spec: Any) -> bool:
    """A user input that torch specialized on: a python constant (``use_cache=False``), not a tensor."""
    return type(spec.arg).__name__ == "ConstantArgument"


def is_symbolic_scalar(node: Any) -> bool:
    """A call producing a SymInt/int/float/bool (shape arithmetic), not a tensor."""
    torch = torch_module()
    val = node.meta.get("val")
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool))


def unsupported_ops(ep: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = target_name(node.target)
        if name in CONVERTERS or name in IGNORED:
            continue
        if is_symbolic_scalar(node):
            continue
        out.setdefault(name, []).append(node.name)
    return out


def to_numpy(t: Any) -> np.ndarray:
    torch = torch_module()
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(DType.BFLOAT16.np)
    return t.numpy()


TORCH_DTYPES: dict[str, DType] = {
    "torch.float64": DType.FLOAT64,
    "torch.float32": DType.FLOAT32,
    "torch.float16": DType.FLOAT16,
    "torch.bfloat16": DType.BFLOAT16,
    "torch.int64": DType.INT64,
    "torch.int32": DType.INT32,
    "torch.int16": DType.INT16,
    "torch.int8": DType.INT8,
    "torch.uint8": DType.UINT8,
    "torch.bool": DType.BOOL,
}


def torch_dtype(tdtype: Any, where: str) -> DType:
    try:
        return TORCH_DTYPES[str(tdtype)]
    except KeyError:
        raise FrontendError(f"{where}: torch dtype {tdtype} has no accelopt equivalent") from None


class ValueTuple(tuple):
    """Several values produced by one ATen node (accessed through getitem)."""


@dataclass(frozen=True)
class SymArg:
    expr: Any


def expr_of(size: Any) -> Any:
    """The sympy expression behind a SymInt (sympy Integer for ints)."""
    import sympy

    if isinstance(size, int):
        return sympy.Integer(size)
    node = getattr(size, "node", None)
    expr = getattr(node, "expr", None)
    if expr is None:
        return None
    return expr
