"""The op registry: the single source of op semantics.

Each op declares its attributes (with defaults), how many inputs and outputs it
takes, its type/shape inference, and a numpy reference kernel. The interpreter,
the printer/parser, the verifier, the frontends and the targets all read it.

Standard ops follow the semantics of the *latest* ONNX opset (e.g. ``axes`` of
Squeeze/Unsqueeze/ReduceMean are inputs); frontends upgrade older forms.
Fused and quantized ops live in the ``accelopt`` domain.

Defining an op::

    define_op(
        "Relu",
        infer=same_as_input(0),
        kernel=lambda ins, attrs, n_out: [np.maximum(ins[0], 0)],
        inplace=lambda ins, attrs, n_out, i: [np.maximum(ins[i], 0, out=ins[i])],
    )

``inplace`` is optional: the interpreter calls it (with the kernel's arguments and an
input index ``i``) instead of ``kernel`` when input ``i`` dies at this node and nothing else holds its buffer, so the op may write its
result into that array. It returns the outputs, or None when it cannot reuse the
buffer (other shape or dtype), and the interpreter then calls ``kernel``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import VerifyError
from accelopt.ir.graph import constant_of
from accelopt.ir.types import TensorType

REQUIRED = object()

#: attribute kinds, checked by the verifier and used by the parser/ONNX writer
ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs", "tensor", "dtype")


@dataclass(frozen=True)
class AttrSpec:
    kind: str
    default: Any = REQUIRED

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class InferContext:
    """What a type-inference function sees: input types, constants, attributes."""

    op: str
    node_name: str
    input_types: list[TensorType | None]
    input_consts: list[np.ndarray | None]
    attrs: Mapping[str, Any]
    num_outputs: int
    #: the input Values themselves (None for omitted inputs), for symbolic shape propagation
    values: Sequence[Any] = ()

    def type(self, i: int) -> TensorType:
        if i >= len(self.input_types) or self.input_types[i] is None:
            raise VerifyError(f"node {self.node_name} ({self.op}): input {i} is missing")
        return self.input_types[i]  # type: ignore[return-value]

    def has(self, i: int) -> bool:
        return i < len(self.input_types) and self.input_types[i] is not None

    def const(self, i: int) -> np.ndarray | None:
        return self.input_consts[i] if i < len(self.input_consts) else None

    def value(self, i: int) -> Any:
        """The input Value ``i`` (or None when omitted or unknown)."""
        return self.values[i] if i < len(self.values) else None

    def error(self, msg: str) -> VerifyError:
        return VerifyError(f"node {self.node_name} ({self.op}): {msg}")


InferFn = Callable[[InferContext], list[TensorType]]
KernelFn = Callable[[list[Any], Mapping[str, Any], int], Sequence[np.ndarray]]
#: (inputs, attrs, n_out, index of the input whose buffer may be overwritten) -> outputs or None
InplaceFn = Callable[[list[Any], Mapping[str, Any], int, int], Sequence[np.ndarray] | None]


@dataclass
class OpDef:
    name: str
    infer: InferFn
    kernel: KernelFn
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)  # min, max (max -1 = variadic)
    outputs: tuple[int, int] = (1, 1)
    domain: str = ""  # "" = ONNX standard, "accelopt" = ours
    doc: str = ""
    inplace: InplaceFn | None = None

    def attr_value(self, attrs: Mapping[str, Any], name: str) -> Any:
        """The attribute's value or its declared default."""
        if name in attrs:
            return attrs[name]
        spec = self.attrs[name]
        if spec.required:
            raise KeyError(name)
        return spec.default

    def full_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in (the form kernels receive)."""
        out = {k: s.default for k, s in self.attrs.items() if not s.required}
        out.update(attrs)
        return out

    def infer_types(
        self,
        inputs: Sequence[Any],
        attrs: Mapping[str, Any],
        num_outputs: int,
        *,
        node_name: str = "?",
    ) -> list[TensorType]:
        """Infer output types for ``inputs`` (Values or None)."""
        ctx = InferContext(
            op=self.name,
            node_name=node_name,
            input_types=[None if v is None else v.type for v in inputs],
            input_consts=[constant_of(v) for v in inputs],
            attrs=self.full_attrs(attrs),
            num_outputs=num_outputs,
            values=list(inputs),
        )
        return self.infer(ctx)


_REGISTRY: dict[str, OpDef] = {}


def define_op(
    name: str,
    *,
    infer: InferFn,
    kernel: KernelFn,
    attrs: Mapping[str, AttrSpec] | None = None,
    inputs: tuple[int, int] | int = 1,
    outputs: tuple[int, int] | int = 1,
    domain: str = "",
    doc: str = "",
    inplace: InplaceFn | None = None,
) -> OpDef:
    """Register an op. Re-defining a name is an error."""
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is already defined")
    if isinstance(inputs, int):
        inputs = (inputs, inputs)
    if isinstance(outputs, int):
        outputs = (outputs, outputs)
    opdef = OpDef(name, infer, kernel, dict(attrs or {}), inputs, outputs, domain, doc, inplace)
    _REGISTRY[name] = opdef
    return opdef


def _ensure_loaded() -> None:
    # Importing the op libraries registers them; done lazily to avoid cycles.
    import accelopt.ir.ops  # noqa: F401


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VerifyError(f"unknown op {name!r}") from None


def has_op(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)
