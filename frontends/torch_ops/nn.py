"""ATen converters for layers: matmul/linear, layer norm, (log)softmax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.frontends.torch_ops.base import Converter, ValueTuple, converter, target_name
from accelopt.frontends.torch_ops.shape import transpose
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------- linear algebra
@converter("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(imp: Importer, node: Any, a: Any, b: Any) -> Value:
    return imp.emit("MatMul", [imp.tensor(a), imp.tensor(b)])


@converter("aten.addmm.default", "aten.baddbmm.default")
def _addmm(imp: Importer, node: Any, bias: Any, a: Any, b: Any, *, beta: Any = 1, alpha: Any = 1) -> Value:
    dt = imp.out_dtype()
    prod = imp.emit("MatMul", [imp.tensor(a), imp.tensor(b)], part="matmul")
    if alpha != 1:
        prod = imp.emit("Mul", [prod, imp.scalar(alpha, dt)], part="alpha")
    if beta == 0:
        return prod
    bv = imp.operand(bias, dt)
    if beta != 1:
        bv = imp.emit("Mul", [bv, imp.scalar(beta, dt)], part="beta")
    return imp.emit("Add", [prod, bv])


@converter("aten.linear.default")
def _linear(imp: Importer, node: Any, x: Any, w: Any, b: Any = None) -> Value:
    wt = transpose(imp, imp.tensor(w), [1, 0])
    out = imp.emit("MatMul", [imp.tensor(x), wt], part="matmul" if b is not None else None)
    return out if b is None else imp.emit("Add", [out, imp.tensor(b)])


# ------------------------------------------------------------- normalization
@converter("aten.native_layer_norm.default", "aten.layer_norm.default")
def _layer_norm(
    imp: Importer,
    node: Any,
    x: Any,
    normalized_shape: Sequence[int],
    w: Any = None,
    b: Any = None,
    eps: float = 1e-5,
    *rest: Any,
) -> Any:
    v = imp.tensor(x)
    dt = v.dtype
    ns = [int(s) for s in normalized_shape]
    scale = imp.tensor(w) if w is not None else imp.const(np.ones(ns, dtype=dt.np), "ln_scale")
    bias = imp.tensor(b) if b is not None else None
    attrs = {"axis": -len(ns), "epsilon": float(eps)}
    native = target_name(node.target) == "aten.native_layer_norm.default"
    if not native:
        return imp.emit("LayerNormalization", [v, scale, bias], attrs)
    needed = 1 + max((u.args[1] for u in node.users if u.args and isinstance(u.args[1], int)), default=0)
    if needed == 1:
        return ValueTuple((imp.emit("LayerNormalization", [v, scale, bias], attrs), None, None))
    outs = imp.emit("LayerNormalization", [v, scale, bias], attrs, n_out=3)
    return ValueTuple(imp.finish(o, m) for o, m in zip(outs, imp.fx.meta["val"]))


def _softmax_like(onnx_op: str) -> Converter:
    """(Log)softmax over ``dim``, in the output dtype (a ``dtype=`` argument casts the input first)."""

    def conv(imp: Importer, node: Any, x: Any, dim: int, *rest: Any, **kw: Any) -> Value:
        v = imp.tensor(x)
        dt = imp.out_dtype()
        if v.dtype != dt:
            v = imp.emit("Cast", [v], {"to": dt}, part="cast")
        return imp.emit(onnx_op, [v], {"axis": dim % imp.rank(x)})

    return conv


converter("aten._softmax.default", "aten.softmax.int", "aten._safe_softmax.default")(_softmax_like("Softmax"))
converter("aten._log_softmax.default", "aten.log_softmax.int")(_softmax_like("LogSoftmax"))
