"""ATen converters for reductions: sum/mean/amax/amin, any/all, max/min with indices, topk, cumsum, argmax,
vector norms, variance."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import CONVERTERS, Converter, ValueTuple, converter, expr_of, target_name
from accelopt.frontends.torch_ops.elementwise import as_bool
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------- reductions
def _reduce(onnx_op: str) -> Converter:
    def conv(imp: Importer, node: Any, x: Any, dims: Any = None, keepdim: bool = False, **kw: Any) -> Value:
        rank = imp.rank(x)
        dt = imp.out_dtype()
        v = imp.tensor(x)
        if onnx_op in ("ReduceSum", "ReduceMean") and v.dtype != dt:
            v = imp.emit("Cast", [v], {"to": dt}, part="cast")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            axes = list(range(rank))
        elif isinstance(dims, int):
            axes = [dims % max(rank, 1)]
        else:
            axes = [d % max(rank, 1) for d in dims]
        if not axes:  # a 0-d tensor: nothing to reduce
            return v
        return imp.emit(onnx_op, [v, imp.ints(axes)], {"keepdims": int(bool(keepdim))})

    return conv


CONVERTERS["aten.sum.dim_IntList"] = _reduce("ReduceSum")
CONVERTERS["aten.sum.default"] = _reduce("ReduceSum")
CONVERTERS["aten.mean.dim"] = _reduce("ReduceMean")
CONVERTERS["aten.mean.default"] = _reduce("ReduceMean")
CONVERTERS["aten.amax.default"] = _reduce("ReduceMax")
CONVERTERS["aten.amin.default"] = _reduce("ReduceMin")


@converter("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def _any_all(imp: Importer, node: Any, x: Any, dims: Any = None, keepdim: bool = False) -> Value:
    """``any``/``all`` as ReduceMax/ReduceMin over the 0/1 values of the bool tensor."""
    is_any = target_name(node.target).startswith("aten.any")
    rank = imp.rank(x)
    flags = imp.emit("Cast", [as_bool(imp, x)], {"to": DType.INT64}, part="int")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        axes = list(range(rank))
    else:
        axes = [d % max(rank, 1) for d in ([dims] if isinstance(dims, int) else dims)]
    if not axes:
        return imp.emit("Cast", [flags], {"to": DType.BOOL})
    red = imp.emit(
        "ReduceMax" if is_any else "ReduceMin", [flags, imp.ints(axes)], {"keepdims": int(bool(keepdim))}, part="reduce"
    )
    return imp.emit("Cast", [red], {"to": DType.BOOL})


@converter("aten.max.dim", "aten.min.dim")
def _max_dim(imp: Importer, node: Any, x: Any, dim: int, keepdim: bool = False) -> Any:
    """``(values, indices)`` as ReduceMax/ReduceMin plus ArgMax/ArgMin (first occurrence, like torch)."""
    is_max = target_name(node.target) == "aten.max.dim"
    axis = dim % max(imp.rank(x), 1)
    v = imp.tensor(x)
    kd = int(bool(keepdim))
    vals = imp.emit("ReduceMax" if is_max else "ReduceMin", [v, imp.ints([axis])], {"keepdims": kd}, part="values")
    idx = imp.emit("ArgMax" if is_max else "ArgMin", [v], {"axis": axis, "keepdims": kd}, part="indices")
    metas = imp.fx.meta["val"]
    return ValueTuple((imp.finish(vals, metas[0]), imp.finish(idx, metas[1])))


@converter("aten.topk.default")
def _topk(imp: Importer, node: Any, x: Any, k: Any, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
    kk = imp.sym(k)
    kv = imp.ints([kk]) if isinstance(kk, int) else imp.sym_vec(kk)
    attrs = {"axis": dim % max(imp.rank(x), 1), "largest": int(largest), "sorted": int(sorted)}
    outs = imp.emit("TopK", [imp.tensor(x), kv], attrs, n_out=2)
    return ValueTuple(imp.finish(o, m) for o, m in zip(outs, imp.fx.meta["val"]))


@converter("aten.cumsum.default")
def _cumsum(imp: Importer, node: Any, x: Any, dim: int, **kw: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("CumSum", [imp.operand(x, dt), imp.scalar(dim % max(imp.rank(x), 1), DType.INT64)])


@converter("aten.argmax.default", "aten.argmin.default")
def _argmax(imp: Importer, node: Any, x: Any, dim: Any = None, keepdim: bool = False) -> Value:
    op = "ArgMax" if "argmax" in target_name(node.target) else "ArgMin"
    v = imp.tensor(x)
    if dim is None:
        v = imp.emit("Reshape", [v, imp.ints([-1])], part="flat")
        return imp.emit(op, [v], {"axis": 0, "keepdims": 0})
    return imp.emit(op, [v], {"axis": dim % imp.rank(x), "keepdims": int(bool(keepdim))})


def _reduced_axes(imp: Importer, x: Any, dims: Any) -> list[int]:
    rank = imp.rank(x)
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        return list(range(rank))
    return [d % max(rank, 1) for d in ([dims] if isinstance(dims, int) else dims)]


@converter("aten.linalg_vector_norm.default")
def _vector_norm(
    imp: Importer, node: Any, x: Any, ord: Any = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Value:
    """``linalg.vector_norm``: ReduceL2 / ReduceL1 / max or min of ``|x|`` / ``sum(|x|^p)^(1/p)``."""
    dt = imp.out_dtype()
    v = imp.operand(x, dt)
    axes, kd = imp.ints(_reduced_axes(imp, x, dim)), {"keepdims": int(bool(keepdim))}
    p = float(ord)
    if p == 2:
        return imp.emit("ReduceL2", [v, axes], kd)
    if p == 1:
        return imp.emit("ReduceL1", [v, axes], kd)
    a = imp.emit("Abs", [v], part="abs")
    if math.isinf(p):
        return imp.emit("ReduceMax" if p > 0 else "ReduceMin", [a, axes], kd)
    if p == 0:
        raise FrontendError(f"{imp.source}: node {node.name}: vector_norm with ord=0 is not supported")
    s = imp.emit("ReduceSum", [imp.emit("Pow", [a, imp.scalar(p, dt)], part="pow"), axes], kd, part="sum")
    return imp.emit("Pow", [s, imp.scalar(1.0 / p, dt)])


@converter("aten.var.correction", "aten.var_mean.correction")
def _var(imp: Importer, node: Any, x: Any, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> Any:
    """Variance ``sum((x - mean)^2) / (N - correction)`` (correction 1 unless given); ``var_mean`` adds the mean."""
    dt = imp.out_dtype() if target_name(node.target) == "aten.var.correction" else imp.tensor(x).dtype
    v = imp.operand(x, dt)
    axes_list = _reduced_axes(imp, x, dim)
    axes = imp.ints(axes_list)
    mean = imp.emit("ReduceMean", [v, axes], {"keepdims": 1}, part="mean")
    d = imp.emit("Sub", [v, mean], part="centered")
    ss = imp.emit("ReduceSum", [imp.emit("Mul", [d, d], part="square"), axes], {"keepdims": int(bool(keepdim))},
                  part="sum_sq")  # fmt: skip
    shape = imp.meta(x).shape
    n = math.prod([expr_of(shape[a]) for a in axes_list], start=expr_of(1))
    c = 1 if correction is None else imp.sym(correction)
    denom = n - c
    dv = imp.scalar(float(denom), dt) if denom.is_number else imp.emit("Cast", [imp.sym_scalar(denom)], {"to": dt},
                                                                       part="count")  # fmt: skip
    var = imp.emit("Div", [ss, dv], part=None if target_name(node.target) == "aten.var.correction" else "var")
    if target_name(node.target) == "aten.var.correction":
        return var
    m = mean if keepdim else imp.emit("Squeeze", [mean, axes], part="mean_out")
    metas = imp.fx.meta["val"]
    return ValueTuple((imp.finish(var, metas[0]), imp.finish(m, metas[1])))
