"""ATen converters: identity-like ops, dtype casts, arithmetic, unary math, comparisons, logic, ``where``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import CONVERTERS, Converter, ValueTuple, converter, target_name
from accelopt.frontends.torch_ops.creation import full_like
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------ identity-like (case 8)
@converter(
    "aten.clone.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.detach_.default",
    "aten.lift_fresh_copy.default",
    "aten.contiguous.default",
)
def _identity(imp: Importer, node: Any, x: Any, *args: Any, **kwargs: Any) -> Value:
    return imp.tensor(x)


@converter("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def _dropout(imp: Importer, node: Any, x: Any, p: float = 0.5, train: bool | None = False, **kw: Any) -> Any:
    if train and p > 0:
        raise FrontendError(
            f"{imp.source}: node {node.name} ({target_name(node.target)}) applies dropout p={p} in training mode; "
            "export the model in eval mode"
        )
    v = imp.tensor(x)
    if target_name(node.target) == "aten.native_dropout.default":
        mask = full_like(imp, v, True, DType.BOOL)
        return ValueTuple((v, mask))
    return v


@converter("operator.getitem")
def _getitem(imp: Importer, node: Any, seq: Any, index: int) -> Any:
    vals = imp.env.get(seq)
    if isinstance(vals, tuple):
        return vals[index]
    raise FrontendError(f"{imp.source}: node {node.name}: getitem on {seq!r} which is not a tuple of tensors")


@converter("aten._to_copy.default", "aten.to.dtype", "aten.type_as.default", "aten._to_dim_order_copy.default")
def _to_copy(imp: Importer, node: Any, x: Any, *args: Any, **kwargs: Any) -> Value:
    v = imp.tensor(x)
    want = imp.out_dtype()
    return v if v.dtype == want else imp.emit("Cast", [v], {"to": want})


# --------------------------------------------------------------- elementwise
def _arith(onnx_op: str) -> Converter:
    def conv(imp: Importer, node: Any, a: Any, b: Any, *, alpha: Any = 1, **kw: Any) -> Value:
        dt = imp.out_dtype()
        va = imp.operand(a, dt)
        neutral = {"Add": 0, "Sub": 0, "Mul": 1}.get(onnx_op)
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b * alpha == neutral:
            if tuple(imp.dim_of(d) for d in imp.fx.meta["val"].shape) == va.shape:
                return va  # x + 0, x - 0, x * 1
        if alpha != 1:
            vb = imp.emit("Mul", [imp.operand(b, dt), imp.scalar(alpha, dt)], part="alpha")
        else:
            vb = imp.operand(b, dt)
        return imp.emit(onnx_op, [va, vb])

    return conv


for _n, _o in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul")):
    CONVERTERS[f"aten.{_n}.Tensor"] = _arith(_o)
    CONVERTERS[f"aten.{_n}.Scalar"] = _arith(_o)
CONVERTERS["aten.maximum.default"] = _arith("Max")
CONVERTERS["aten.minimum.default"] = _arith("Min")


@converter("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(imp: Importer, node: Any, a: Any, b: Any, alpha: Any = 1) -> Value:
    dt = imp.out_dtype()
    va = imp.operand(a, dt)
    if alpha != 1:
        va = imp.emit("Mul", [va, imp.scalar(alpha, dt)], part="alpha")
    return imp.emit("Sub", [imp.operand(b, dt), va])


@converter("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div(imp: Importer, node: Any, a: Any, b: Any, *, rounding_mode: str | None = None) -> Value:
    dt = imp.out_dtype()
    if rounding_mode is None:
        return imp.emit("Div", [imp.operand(a, dt), imp.operand(b, dt)])
    # floor / trunc division: computed in float64 (exact for |x| < 2**53), then back to dt
    q = imp.emit("Div", [imp.operand(a, DType.FLOAT64), imp.operand(b, DType.FLOAT64)], part="div")
    if rounding_mode == "floor":
        q = imp.emit("Floor", [q], part="floor")
    elif rounding_mode == "trunc":
        q = imp.emit(
            "Mul",
            [imp.emit("Sign", [q], part="sign"), imp.emit("Floor", [imp.emit("Abs", [q], part="abs")], part="floor")],
            part="trunc",
        )
    else:
        raise FrontendError(f"{imp.source}: node {node.name}: unknown rounding_mode {rounding_mode!r}")
    return imp.emit("Cast", [q], {"to": dt}) if dt != DType.FLOAT64 else q


@converter("aten.remainder.Scalar", "aten.remainder.Tensor", "aten.fmod.Scalar", "aten.fmod.Tensor")
def _remainder(imp: Importer, node: Any, a: Any, b: Any) -> Value:
    """``remainder`` takes the divisor's sign (Python ``%``), ``fmod`` the dividend's (C ``fmod``)."""
    dt = imp.out_dtype()
    va, vb = imp.operand(a, dt), imp.operand(b, dt)
    if target_name(node.target).startswith("aten.fmod"):
        return imp.emit("Mod", [va, vb], {"fmod": 1})
    if not dt.is_float:
        return imp.emit("Mod", [va, vb], {"fmod": 0})
    q = imp.emit("Floor", [imp.emit("Div", [va, vb], part="div")], part="floor")
    return imp.emit("Sub", [va, imp.emit("Mul", [q, vb], part="mul")])


@converter("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(imp: Importer, node: Any, a: Any, b: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Pow", [imp.operand(a, dt), imp.operand(b, dt)])


def _unary(onnx_op: str) -> Converter:
    def conv(imp: Importer, node: Any, x: Any, *args: Any, **kw: Any) -> Value:
        dt = imp.out_dtype()
        return imp.emit(onnx_op, [imp.operand(x, dt)])

    return conv


for _n, _o in {
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "erf": "Erf",
    "exp": "Exp",
    "log": "Log",
    "neg": "Neg",
    "sigmoid": "Sigmoid",
    "relu": "Relu",
    "abs": "Abs",
    "reciprocal": "Reciprocal",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "sin": "Sin",
    "cos": "Cos",
    "round": "Round",
}.items():
    CONVERTERS[f"aten.{_n}.default"] = _unary(_o)


@converter("aten.leaky_relu.default")
def _leaky_relu(imp: Importer, node: Any, x: Any, negative_slope: float = 0.01) -> Value:
    return imp.emit("LeakyRelu", [imp.operand(x, imp.out_dtype())], {"alpha": float(negative_slope)})


@converter("aten.elu.default")
def _elu(imp: Importer, node: Any, x: Any, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0) -> Value:
    """``scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1))``: Elu, Selu, or the formula itself."""
    v = imp.operand(x, imp.out_dtype())
    if input_scale == 1 and scale == 1:
        return imp.emit("Elu", [v], {"alpha": float(alpha)})
    if input_scale == 1:
        return imp.emit("Selu", [v], {"alpha": float(alpha), "gamma": float(scale)})
    dt = v.dtype
    neg = imp.emit("Exp", [imp.emit("Mul", [v, imp.scalar(input_scale, dt)], part="in_scale")], part="exp")
    neg = imp.emit("Mul", [imp.emit("Sub", [neg, imp.scalar(1, dt)], part="expm1"), imp.scalar(alpha * scale, dt)],
                   part="negative")  # fmt: skip
    pos = imp.emit("Mul", [v, imp.scalar(scale, dt)], part="positive")
    return imp.emit("Where", [imp.emit("Greater", [v, imp.scalar(0, dt)], part="is_pos"), pos, neg])


@converter("aten.log1p.default")
def _log1p(imp: Importer, node: Any, x: Any) -> Value:
    v = imp.operand(x, imp.out_dtype())
    return imp.emit("Log", [imp.emit("Add", [v, imp.scalar(1, v.dtype)], part="plus_one")])


@converter("aten.expm1.default")
def _expm1(imp: Importer, node: Any, x: Any) -> Value:
    v = imp.operand(x, imp.out_dtype())
    return imp.emit("Sub", [imp.emit("Exp", [v], part="exp"), imp.scalar(1, v.dtype)])


@converter("aten.isnan.default", "aten.isinf.default")
def _isnan(imp: Importer, node: Any, x: Any) -> Value:
    return imp.emit("IsNaN" if "isnan" in target_name(node.target) else "IsInf", [imp.tensor(x)])


@converter("aten.rsqrt.default")
def _rsqrt(imp: Importer, node: Any, x: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Div", [imp.scalar(1, dt), imp.emit("Sqrt", [imp.operand(x, dt)], part="sqrt")])


@converter("aten.silu.default")
def _silu(imp: Importer, node: Any, x: Any) -> Value:
    v = imp.operand(x, imp.out_dtype())
    return imp.emit("Mul", [v, imp.emit("Sigmoid", [v], part="sigmoid")])


@converter("aten.gelu.default")
def _gelu(imp: Importer, node: Any, x: Any, *, approximate: str = "none") -> Value:
    if approximate not in ("none", "tanh"):
        raise FrontendError(f"{imp.source}: node {node.name}: gelu approximate={approximate!r} is not supported")
    return imp.emit("Gelu", [imp.tensor(x)], {"approximate": approximate})


@converter("aten.clamp.default", "aten.clamp.Tensor", "aten.hardtanh.default")
def _clamp(imp: Importer, node: Any, x: Any, lo: Any = None, hi: Any = None) -> Value:
    dt = imp.out_dtype()
    if target_name(node.target) == "aten.hardtanh.default":
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    v = imp.operand(x, dt)
    if lo is not None:
        v = imp.emit("Max", [v, imp.operand(lo, dt)], part="min" if hi is not None else None)
    if hi is not None:
        v = imp.emit("Min", [v, imp.operand(hi, dt)])
    return v


def _compare(onnx_op: str, negate: bool = False) -> Converter:
    def conv(imp: Importer, node: Any, a: Any, b: Any) -> Value:
        dt = imp.promoted(a, b)
        out = imp.emit(onnx_op, [imp.operand(a, dt), imp.operand(b, dt)], part="eq" if negate else None)
        return imp.emit("Not", [out]) if negate else out

    return conv


for _n, (_o, _neg) in {
    "eq": ("Equal", False),
    "ne": ("Equal", True),
    "lt": ("Less", False),
    "gt": ("Greater", False),
    "le": ("LessOrEqual", False),
    "ge": ("GreaterOrEqual", False),
}.items():
    CONVERTERS[f"aten.{_n}.Tensor"] = _compare(_o, _neg)
    CONVERTERS[f"aten.{_n}.Scalar"] = _compare(_o, _neg)


def as_bool(imp: Importer, arg: Any) -> Value:
    v = imp.tensor(arg)
    if v.dtype == DType.BOOL:
        return v
    return imp.emit(
        "Not", [imp.emit("Equal", [v, imp.scalar(0, v.dtype)], name=f"{v.name}_is_zero")], name=f"{v.name}_bool"
    )


@converter("aten.logical_not.default", "aten.bitwise_not.default")
def _not(imp: Importer, node: Any, x: Any) -> Value:
    v = imp.tensor(x)
    if target_name(node.target) == "aten.bitwise_not.default" and v.dtype != DType.BOOL:
        raise FrontendError(f"{imp.source}: node {node.name}: bitwise_not is supported on bool tensors only")
    return imp.emit("Not", [as_bool(imp, x)])


def _logical(onnx_op: str, bitwise: bool) -> Converter:
    def conv(imp: Importer, node: Any, a: Any, b: Any) -> Value:
        if bitwise and imp.out_dtype() != DType.BOOL:
            raise FrontendError(f"{imp.source}: node {node.name}: bitwise ops are supported on bool tensors only")
        vb = as_bool(imp, b) if isinstance(b, imp.torch.fx.Node) else imp.scalar(bool(b), DType.BOOL)
        return imp.emit(onnx_op, [as_bool(imp, a), vb])

    return conv


for _n, _o in (("and", "And"), ("or", "Or"), ("xor", "Xor")):
    CONVERTERS[f"aten.logical_{_n}.default"] = _logical(_o, False)
    CONVERTERS[f"aten.bitwise_{_n}.Tensor"] = _logical(_o, True)
    CONVERTERS[f"aten.bitwise_{_n}.Scalar"] = _logical(_o, True)


@converter("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(imp: Importer, node: Any, cond: Any, a: Any, b: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Where", [as_bool(imp, cond), imp.operand(a, dt), imp.operand(b, dt)])


@converter("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(imp: Importer, node: Any, x: Any, mask: Any, value: Any) -> Value:
    dt = imp.out_dtype()
    return imp.emit("Where", [as_bool(imp, mask), imp.operand(value, dt), imp.operand(x, dt)])


@converter("aten.scalar_tensor.default")
def _scalar_tensor(imp: Importer, node: Any, value: Any, **kw: Any) -> Value:
    return imp.operand(value, imp.out_dtype())
