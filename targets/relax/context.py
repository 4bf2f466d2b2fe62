"""What a lowering function sees: ``LowerCtx`` (the builder, operands as constants or parameters, static
shapes), the module's shared ``ParamStore``, ``Unlowerable``, and the IR <-> Relax dtype names.

Split from ``lowering.py`` (which re-exports these names), where the op table and the module builder live.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
from tvm import relax

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value

if TYPE_CHECKING:
    from accelopt.targets.relax.kernels import Kernels

#: static arrays with fewer elements than this enter a function as constants; others as parameters
MIN_PARAM_NUMEL = 64

BF16 = np.dtype(ml_dtypes.bfloat16)


class Unlowerable(Exception):
    """Raised by a lowering function: this node cannot be lowered (the reason is the message).

    ``build_module`` collects these and reports every such node at once (case 6).
    """


# ------------------------------------------------------------------ dtypes
def relax_dtype(dt: DType | np.dtype | str) -> str:
    """The Relax dtype string of an IR or numpy dtype."""
    if isinstance(dt, DType):
        return dt.value
    d = np.dtype(dt)
    return "bfloat16" if d == BF16 else str(d)


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of a Relax dtype string (bfloat16 through ml_dtypes)."""
    return BF16 if name == "bfloat16" else np.dtype(name)


# -------------------------------------------------------------- parameters
@dataclass
class ParamStore:
    """Parameters shared by every function of one module: name -> array, in order of first use (case 4)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, array: np.ndarray, taken: Iterable[str] = ()) -> str:
        """Store ``array`` under ``name``; returns the name used.

        The same array under the same name is stored once (the buckets'
        functions share it). A name already holding a different array (a
        folded value that depends on the bucket's sequence length), or one in
        ``taken``, gets a suffix: ``name#2``, ``name#3``...
        """
        candidate, i = name, 1
        while True:
            have = self.arrays.get(candidate)
            if have is None and candidate not in taken:
                self.arrays[candidate] = array
                return candidate
            if have is not None and candidate not in taken and _same(have, array):
                return candidate
            i += 1
            candidate = f"{name}#{i}"

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b)))


_NAME_RE = re.compile(r"[^A-Za-z0-9_]")


def var_name(name: str) -> str:
    """A Relax-friendly name hint for an IR name."""
    s = _NAME_RE.sub("_", name).strip("_") or "v"
    return s if not s[0].isdigit() else f"v{s}"


# ---------------------------------------------------------------- context
class LowerCtx:
    """What a lowering function (and a ``Kernels`` method) sees while one Relax function is built.

    - ``bb``: the ``relax.BlockBuilder`` (inside a dataflow block); ``emit`` /
      ``emit_te`` add bindings;
    - ``param(name, array)``: a function parameter holding ``array`` (saved
      outside the library); ``expr(x)``: any operand as a Relax expression;
    - ``static(node, i, x)``: an input that must be known at lowering time;
    - ``shape(x)`` / ``dtype(x)``: static shape and dtype of an operand;
    - ``node``: the node being lowered (for names in errors), ``graph``,
      ``dims`` (the bucket's symbol sizes), ``kernels``, ``notes``.
    """

    def __init__(
        self,
        bb: relax.BlockBuilder,
        graph: Graph,
        store: ParamStore,
        kernels: Kernels,
        dims: Mapping[str, int],
    ) -> None:
        self.bb = bb
        self.graph = graph
        self.store = store
        self.kernels = kernels
        self.dims = dict(dims)
        self.node: Node | None = None
        self.notes: list[str] = []
        #: value id -> lowered value (numpy when static)
        self.env: dict[int, Any] = {}
        #: parameter name -> its Var in this function, in order of first use
        self.param_vars: dict[str, relax.Var] = {}

    # -- values
    @staticmethod
    def is_static(x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def value(self, v: Value | None) -> Any:
        """The lowered value of an IR value already lowered (``None`` for an omitted input)."""
        return None if v is None else self.env.get(id(v))

    def key(self, node: Node, index: int) -> str:
        """A stable parameter name for input ``index`` of ``node``: the IR value's name."""
        v = node.inputs[index]
        return v.name if v is not None else f"{node.name}:{index}"

    def param(self, name: str, array: np.ndarray) -> relax.Var:
        """A function parameter holding ``array`` (shared by name across the module's functions)."""
        arr = np.ascontiguousarray(array)
        var = self.param_vars.get(name)
        if var is not None and _same(self.store.arrays[name], arr):
            return var
        name = self.store.add(name, arr, taken=self.param_vars)
        var = self.param_vars.get(name)
        if var is None:
            ty = relax.TensorType(list(arr.shape), relax_dtype(arr.dtype))
            var = relax.Var(f"p_{var_name(name)}", ty)
            self.param_vars[name] = var
        return var

    def const(self, array: Any, dtype: str | None = None) -> relax.Expr:
        """A constant baked into the function (small arrays: shapes, scalars, masks)."""
        arr = np.asarray(array)
        want = dtype or relax_dtype(arr.dtype)
        if arr.dtype == BF16 or want == "bfloat16":
            return self.emit(relax.op.astype(relax.const(arr.astype(np.float32), "float32"), want))
        if arr.dtype == np.bool_ or want == "bool":
            return relax.const(arr.astype(np.bool_), "bool")
        return relax.const(arr.astype(np_dtype(want), copy=False), want)

    def expr(self, x: Any, dtype: str | None = None, *, name: str = "") -> relax.Expr:
        """``x`` as a Relax expression: a static array becomes a constant or a parameter (case 4)."""
        if x is None:
            raise TargetError(f"{self._where()}: an omitted input is used")
        if not self.is_static(x):
            if dtype is not None and self.dtype(x) != dtype:
                return self.emit(relax.op.astype(x, dtype))
            return x
        arr = np.asarray(x)
        name = name or self._input_name(x)
        if dtype is not None and relax_dtype(arr.dtype) != dtype:
            arr = arr.astype(np_dtype(dtype))
            name = f"{name}@{dtype}" if name else ""
        if arr.size >= MIN_PARAM_NUMEL:
            return self.param(name or self._fresh_param_name(arr), arr)
        return self.const(arr)

    def _input_name(self, x: Any) -> str:
        """The IR value name of ``x`` when it is one of the current node's static inputs."""
        if self.node is None:
            return ""
        for v in self.node.inputs:
            if v is not None and self.env.get(id(v)) is x:
                return v.name
        return ""

    def _fresh_param_name(self, arr: np.ndarray) -> str:
        return f"{self.node.name if self.node is not None else 'const'}.const"

    def operand(self, node: Node, i: int, x: Any, dtype: str | None = None) -> relax.Expr:
        """Input ``i`` of ``node`` as a Relax expression; a large static one is a parameter named after its value."""
        return self.expr(x, dtype, name=self.key(node, i) if self.is_static(x) else "")

    def static(self, node: Node, i: int, x: Any, what: str = "") -> np.ndarray:
        """Input ``i`` as a numpy array; ``Unlowerable`` if it is only known at run time."""
        if x is None:
            raise TargetError(f"node {node.name} ({node.op}): input {i} {what} is missing")
        if not self.is_static(x):
            raise Unlowerable(
                f"input {i} {what} must be known at compile time (static shapes per bucket), "
                "but it is computed from the model inputs"
            )
        return np.asarray(x)

    @staticmethod
    def shape(x: Any) -> tuple[int, ...]:
        """The static shape of an operand."""
        if isinstance(x, (np.ndarray, np.generic)):
            return tuple(int(d) for d in np.shape(x))
        ty = x.ty if hasattr(x, "ty") else x.struct_info
        shape = ty.shape
        if shape is None:
            raise TargetError(f"Relax value {x} has no static shape")
        return tuple(int(d) for d in shape.values)

    @staticmethod
    def dtype(x: Any) -> str:
        """The dtype of an operand as a Relax dtype string."""
        if isinstance(x, (np.ndarray, np.generic)):
            return relax_dtype(np.asarray(x).dtype)
        ty = x.ty if hasattr(x, "ty") else x.struct_info
        return str(ty.dtype)

    def ndim(self, x: Any) -> int:
        return len(self.shape(x))

    # -- emitting
    def emit(self, expr: relax.Expr, name: str = "") -> relax.Var:
        return self.bb.emit(expr, name_hint=var_name(name) if name else "")

    def emit_te(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> relax.Var:
        """``bb.emit_te``: a TE compute (topi or hand-written) as one PrimFunc called from Relax."""
        return self.bb.emit_te(fn, *args, **kwargs)

    def astype(self, x: Any, dtype: str) -> Any:
        """``x`` in ``dtype`` (numpy stays numpy)."""
        if self.is_static(x):
            return np.asarray(x).astype(np_dtype(dtype))
        return x if self.dtype(x) == dtype else self.emit(relax.op.astype(x, dtype))

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def _where(self) -> str:
        return f"node {self.node.name} ({self.node.op})" if self.node is not None else "lowering"
