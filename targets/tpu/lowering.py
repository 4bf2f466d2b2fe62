"""Lowering: an IR graph -> a JAX function ``fn(params, *inputs) -> tuple(outputs)``.

The lowering is a table from op name to a function that emits jax.numpy / lax
code (``@lower("MatMul")``); new ops (fused, quantized) are added by
registering more entries, in ``ops_std.py`` or anywhere else. How a graph is
lowered:

1. Graph inputs become function arguments. TPUs have no fast 64-bit types, so
   int64 values are carried as int32 and float64 as float32 (``jax_dtype``);
   ``Artifact.run`` converts at the boundary.
2. Initializers are either function arguments (``weights="arguments"``, the
   default: one serialized program, weights saved beside it) or constants
   baked into the program (``weights="constants"``). Small integer tensors
   (shapes, axes, indices) always stay baked: shape arguments must be static.
3. Weights that feed a matmul's weight slot (declared by the lowering:
   ``@lower("MatMul", weights=...)``) are prepared once at lowering time:
   pre-transposed to [K, N], padded with zeros to the MXU tile and cast to the
   policy's matmul type (bf16). The lowering receives a ``PreparedWeight``.
4. Values known while tracing (constants, ``Shape`` results and what is
   computed from them) stay numpy arrays: a node whose inputs are all static
   is folded with the op's numpy reference kernel from the registry, so
   shape arithmetic never reaches the device.
5. Every matmul goes through ``LowerCtx.matmul`` / ``LowerCtx.int_matmul``
   (``scaled_int_matmul`` for the integer ops, ``conv`` for convolutions),
   which apply the policy (bf16 x bf16 -> f32, f32 at HIGHEST, int8 x int8 ->
   int32) and record FLOPs and bytes for the roofline estimate. int8 operands
   come from DequantizeLinear nodes (per-tensor, or per-row activations);
   their scales and zero points are applied to the int32 result (zero points
   through the weight's column sums, computed at lowering time), so the MXU
   multiplies raw int8.
6. After each node the result is checked against the IR: dtype coerced to the
   IR type, static dims compared (a mismatch is a lowering bug and raises
   ``TargetError`` naming the node).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op
from accelopt.targets import buckets as bk
from accelopt.targets.lowering_table import LoweringTable
from accelopt.targets.tpu.policy import Policy

log = logging.getLogger(__name__)

#: initializers with fewer elements than this stay baked constants
MIN_PARAM_NUMEL = 64

LoweringFn = Callable[["LowerCtx", Node, list[Any], dict[str, Any]], Sequence[Any]]
WeightSlotsFn = Callable[[Node, Mapping[str, Any]], Mapping[int, bool]]
UnpackFn = Callable[[Node, Mapping[str, Any], int, np.ndarray], np.ndarray]


# ------------------------------------------------------------------ dtypes
_JAX_DTYPE = {
    DType.INT64: np.dtype(np.int32),
    DType.FLOAT64: np.dtype(np.float32),
}


def jax_dtype(dt: DType) -> np.dtype:
    """The dtype a value of IR type ``dt`` has inside the lowered function (case 1)."""
    return _JAX_DTYPE.get(dt, dt.np)


def np_to_jax_dtype(dt: np.dtype) -> np.dtype:
    dt = np.dtype(dt)
    if dt == np.int64:
        return np.dtype(np.int32)
    if dt == np.uint64:
        return np.dtype(np.uint32)
    if dt == np.float64:
        return np.dtype(np.float32)
    return dt


BF16 = np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------- the table
@dataclass(frozen=True)
class Lowering:
    """One table entry: the emitting function and what the planner must know about it."""

    op: str
    fn: LoweringFn
    #: input index -> True if that input is a weight given as [N, K] (pre-transposed to [K, N])
    weights: WeightSlotsFn | None = None
    #: fold with the numpy kernel when every input is static
    fold: bool = True
    #: a weight slot's stored form -> its 2-D matrix, at plan time (e.g. PackedLinear's tiles)
    unpack: UnpackFn | None = None


_TABLE: LoweringTable[Lowering] = LoweringTable(
    "TPU", [f"accelopt.targets.tpu.{m}" for m in ("ops_conv", "ops_fused", "ops_pool", "ops_quant", "ops_std")]
)


def lower(
    *ops: str, weights: WeightSlotsFn | None = None, fold: bool = True, unpack: UnpackFn | None = None
) -> Callable[[LoweringFn], LoweringFn]:
    """Register ``fn`` as the lowering of each op in ``ops``.

    ``weights`` names the inputs that are matmul weights (see case 3);
    ``unpack`` turns a weight stored in another layout into its 2-D form
    before it is prepared.
    """
    return _TABLE.register(ops, lambda op, fn: Lowering(op, fn, weights, fold, unpack))


#: the TPU lowering of an op (None if it has none)
lowering_for = _TABLE.get
#: names of every op with a TPU lowering
lowered_ops = _TABLE.ops
#: the ops among the given ones that have no TPU lowering, sorted
unlowered_ops = _TABLE.missing


def rhs_weight(node: Node, attrs: Mapping[str, Any]) -> Mapping[int, bool]:
    """Weight slots of MatMul-like ops: input 1, given as [K, N]."""
    return {1: False}


# ----------------------------------------------------------- weight plan
@dataclass
class PreparedWeight:
    """A matmul weight prepared at lowering time (case 3): [K_pad, N_pad], cast, padded with zeros.

    ``array`` is a traced argument or a numpy constant; ``k`` and ``n`` are the
    unpadded sizes.
    """

    array: Any
    k: int
    n: int
    source: str
    #: for int8 weights (int8 policy): the dequantization scale, () or [n], float32
    scale: np.ndarray | None = None
    #: for int8 weights: column sums [N_pad] (int32), computed once at lowering time, for zero-point corrections
    colsum: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def quantized(self) -> bool:
        return self.scale is not None


@dataclass
class WeightPlan:
    """Which initializers are arguments, which are baked, and the prepared matmul forms."""

    mode: str  # "arguments" | "constants"
    #: parameter key -> array (the function's ``params`` argument in "arguments" mode)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: initializer name -> parameter key of its raw form (absent: baked static)
    raw: dict[str, str] = field(default_factory=dict)
    #: (node name, input index) -> (parameter key, k, n, int8 scale or None)
    prepared: dict[tuple[str, int], tuple[str, int, int, np.ndarray | None]] = field(default_factory=dict)
    #: values folded at plan time (dequantized constant weights), by value name
    folded: dict[str, np.ndarray] = field(default_factory=dict)
    #: nodes whose outputs were folded at plan time
    skip: set[str] = field(default_factory=set)
    #: prepared int8 weight key -> key of its column sums (int32 [N_pad])
    colsums: dict[str, str] = field(default_factory=dict)

    def add_int8_colsum(self, key: str) -> None:
        """Column sums of the prepared int8 weight ``key``: an asymmetric activation's zero-point correction."""
        if key not in self.colsums:
            self.colsums[key] = f"{key}@colsum"
            self.arrays[self.colsums[key]] = self.arrays[key].astype(np.int32).sum(axis=0, dtype=np.int32)

    @property
    def parameter_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def parameter_bytes_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.arrays.values():
            key = "bfloat16" if a.dtype == BF16 else str(a.dtype)
            out[key] = out.get(key, 0) + int(a.nbytes)
        return out

    def param_specs(self) -> dict[str, jax.ShapeDtypeStruct]:
        if self.mode != "arguments":
            return {}
        return {k: jax.ShapeDtypeStruct(a.shape, a.dtype) for k, a in self.arrays.items()}

    def function_params(self) -> dict[str, np.ndarray]:
        """What to pass as ``params`` when calling the lowered function."""
        return dict(self.arrays) if self.mode == "arguments" else {}


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m if m > 1 else x


def _param_eligible(arr: np.ndarray) -> bool:
    if arr.dtype.kind == "f" or arr.dtype == BF16:
        return arr.size >= MIN_PARAM_NUMEL
    if arr.dtype in (np.int8, np.uint8):
        return arr.size >= MIN_PARAM_NUMEL
    return False


def _raw_param(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr.astype(np_to_jax_dtype(arr.dtype), copy=False))


def prepare_matmul_weight(arr: np.ndarray, transposed: bool, policy: Policy) -> np.ndarray:
    """[K, N] (transposed from [N, K] if asked), zero-padded to the tile, cast to the matmul type."""
    w = arr.T if transposed else arr
    k, n = w.shape
    tile = policy.tile
    kp, np_ = _round_up(k, tile), _round_up(n, tile)
    if w.dtype.kind == "f" or w.dtype == BF16:
        target = np.dtype(np.float32) if policy.precision == "fp32" else BF16
        w = w.astype(target)
    if (kp, np_) != (k, n):
        w = np.pad(w, [(0, kp - k), (0, np_ - n)])
    return np.ascontiguousarray(w)


def plan_weights(graph: Graph, policy: Policy, mode: str = "arguments") -> WeightPlan:
    """Decide, for every initializer, its raw and prepared forms (cases 2 and 3)."""
    if mode not in ("arguments", "constants"):
        raise TargetError(f"weights must be 'arguments' or 'constants', got {mode!r}")
    plan = WeightPlan(mode)
    _plan_int8_weights(graph, policy, plan)
    _fold_constants(graph, plan)
    consts: dict[str, np.ndarray] = {n: v.const for n, v in graph.initializers.items()}  # type: ignore[misc]
    consts.update(plan.folded)
    by_name: dict[str, Value] = {v.name: v for v in graph.values()}
    needs_raw: set[str] = set()
    for name, arr in consts.items():
        v = by_name[name]
        for node, idx in v.uses:
            if node.name in plan.skip:
                continue
            low = lowering_for(node.op)
            attrs = get_op(node.op).full_attrs(node.attrs)
            slots = low.weights(node, attrs) if low and low.weights else {}
            preparable = arr.dtype.kind == "f" or arr.dtype in (BF16, np.dtype(np.int8))
            mat, key = arr, f"{name}@mxu"
            if idx in slots and preparable and low is not None and low.unpack is not None:
                mat, key = low.unpack(node, attrs, idx, arr), f"{name}@{node.name}@mxu"
            if idx in slots and preparable and mat.ndim == 2 and mat.size >= MIN_PARAM_NUMEL:
                transposed = bool(slots[idx])
                key += "T" if transposed else ""
                if key not in plan.arrays:
                    plan.arrays[key] = prepare_matmul_weight(mat, transposed, policy)
                k, n = (mat.shape[1], mat.shape[0]) if transposed else mat.shape
                plan.prepared[(node.name, idx)] = (key, int(k), int(n), None)
                if plan.arrays[key].dtype == np.int8:
                    plan.add_int8_colsum(key)
            else:
                needs_raw.add(name)
        if v in graph.outputs:
            needs_raw.add(name)
    for name in sorted(needs_raw):
        if _param_eligible(consts[name]):
            plan.arrays[name] = _raw_param(consts[name])
            plan.raw[name] = name
    return plan


def _plan_int8_weights(graph: Graph, policy: Policy, plan: WeightPlan) -> None:
    """int8 policy: DequantizeLinear of a constant 2-D int8 weight feeding only matmul weight slots.

    The weight is stored int8 (padded to the tile) and the DequantizeLinear
    node disappears; the matmul lowering receives a ``PreparedWeight`` with
    the scale and runs int8 x int8 -> int32 when its activation is quantized
    too (else it dequantizes the weight: weight-only int8).
    """
    if not policy.int8:
        return
    for dq in graph.nodes:
        if dq.op != "DequantizeLinear" or len(dq.outputs) != 1:
            continue
        q = dq.inputs[0]
        data = graph.const_value(q)
        if data is None or data.ndim != 2 or data.dtype != np.int8 or data.size < MIN_PARAM_NUMEL:
            continue
        scale = graph.const_value(dq.inputs[1]) if len(dq.inputs) > 1 else None
        zp = graph.const_value(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
        if len(dq.inputs) > 2 and dq.inputs[2] is not None and zp is None:
            continue
        attrs = get_op(dq.op).full_attrs(dq.attrs)
        if scale is None or (zp is not None and np.any(zp != 0)) or attrs.get("block_size", 0):
            continue
        out = dq.outputs[0]
        if out in graph.outputs or not out.uses:
            continue
        uses = _weight_slot_uses(out)
        if uses is None:
            continue
        axis = attrs.get("axis", 1) % 2
        if scale.size != 1 and any(axis != (0 if transposed else 1) for _, _, transposed in uses):
            continue  # the scale is not per output channel
        sc = np.asarray(scale, np.float32).reshape(() if scale.size == 1 else (-1,))
        for node, idx, transposed in uses:
            key = f"{q.name}@mxu8{'T' if transposed else ''}"  # type: ignore[union-attr]
            if key not in plan.arrays:
                plan.arrays[key] = prepare_matmul_weight(data, transposed, policy)
            k, n = (data.shape[1], data.shape[0]) if transposed else data.shape
            plan.prepared[(node.name, idx)] = (key, int(k), int(n), sc)
            plan.add_int8_colsum(key)
        plan.skip.add(dq.name)


def _weight_slot_uses(v: Value) -> list[tuple[Node, int, bool]] | None:
    """Every use of ``v`` as (node, input index, transposed) if all are matmul weight slots, else None."""
    uses = []
    for node, idx in v.uses:
        low = lowering_for(node.op)
        slots = low.weights(node, get_op(node.op).full_attrs(node.attrs)) if low and low.weights else {}
        if idx not in slots:
            return None
        uses.append((node, idx, bool(slots[idx])))
    return uses


#: plan-time folding never creates more elements than its inputs have plus this many
FOLD_GROWTH_ELEMENTS = 1 << 18


def _fold_constants(graph: Graph, plan: WeightPlan) -> None:
    """Fold nodes whose inputs are all constants now, so weights reach matmuls as constants.

    This is what makes weights behind ``Identity`` (shared ALBERT weights in
    legacy exports), ``Transpose`` or ``DequantizeLinear`` (outside int8 mode:
    weights load dequantized) get a prepared [K, N] form. Nodes absorbed by the
    int8 plan are left alone, and so are folds that would add more than
    ``FOLD_GROWTH_ELEMENTS`` elements (e.g. an ``Expand`` of a constant;
    dequantizing keeps the element count, so it always folds).
    """
    known: dict[int, np.ndarray] = {id(v): v.const for v in graph.initializers.values()}  # type: ignore[misc]
    for node in graph.nodes:
        if node.name in plan.skip or not node.outputs:
            continue
        low = lowering_for(node.op)
        if low is None or not low.fold:
            continue
        if any(v is not None and id(v) not in known for v in node.inputs):
            continue
        ins = [None if v is None else known[id(v)] for v in node.inputs]
        opdef = get_op(node.op)
        try:
            outs = [np.asarray(o) for o in opdef.kernel(ins, opdef.full_attrs(node.attrs), len(node.outputs))]
        except Exception as e:  # leave it to the trace, which reports it with the node's name
            log.debug("not folding %s (%s): %s", node.name, node.op, e)
            continue
        if sum(o.size for o in outs) > sum(a.size for a in ins if a is not None) + FOLD_GROWTH_ELEMENTS:
            continue
        for v, o in zip(node.outputs, outs):
            if o.dtype != v.dtype.np:
                o = o.astype(v.dtype.np)
            known[id(v)] = o
            plan.folded[v.name] = o
        plan.skip.add(node.name)


# ---------------------------------------------------------- op records
@dataclass
class OpRecord:
    """Work of one lowered op, for the roofline estimate."""

    node: str
    op: str
    kind: str  # "matmul" | "int8_matmul" | "other"
    flops: int
    bytes: int
    detail: str = ""


def _nbytes(x: Any) -> int:
    if x is None:
        return 0
    shape = getattr(x, "shape", ())
    return int(math.prod(shape)) * np.dtype(x.dtype).itemsize


# ---------------------------------------------------------------- context
class LowerCtx:
    """What a lowering function sees: the policy, static/traced helpers, and the policy matmuls."""

    def __init__(self, graph: Graph, policy: Policy) -> None:
        self.graph = graph
        self.policy = policy
        self.records: list[OpRecord] = []
        self.notes: list[str] = []
        self.matmul_count: dict[str, int] = {}
        #: value id -> lowered value (numpy if static), filled as the graph is traced
        self.env: dict[int, Any] = {}

    def value(self, v: Value | None) -> Any:
        """The lowered value of an IR value already traced (``None`` for an omitted input)."""
        return None if v is None else self.env.get(id(v))

    # -- static / traced values (case 4)
    @staticmethod
    def is_static(x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def jx(self, x: Any) -> Any:
        """A jax value for ``x``; numpy constants enter with TPU dtypes (int64 -> int32, clipped)."""
        if x is None or isinstance(x, jax.Array) or not self.is_static(x):
            if isinstance(x, PreparedWeight):
                raise TargetError(f"prepared weight {x.source} used as a plain tensor")
            return x
        arr = np.asarray(x)
        target = np_to_jax_dtype(arr.dtype)
        if target != arr.dtype:
            if arr.dtype.kind in "iu":
                info = np.iinfo(target)
                arr = np.clip(arr, info.min, info.max)
            arr = arr.astype(target)
        return jnp.asarray(arr)

    def static(self, node: Node, i: int, x: Any, what: str = "") -> np.ndarray:
        """Input ``i`` as a numpy array; raises if it is only known at run time."""
        if x is None:
            raise TargetError(f"node {node.name} ({node.op}): input {i} {what} is missing")
        if not self.is_static(x):
            raise TargetError(
                f"node {node.name} ({node.op}): input {i} {what} must be known at export time "
                "(static shapes per bucket), but it is computed from the model inputs"
            )
        return np.asarray(x)

    def out_dtype(self, node: Node, i: int = 0) -> np.dtype:
        return jax_dtype(node.outputs[i].dtype)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def record(self, node: Node, kind: str, flops: int, nbytes: int, detail: str = "") -> None:
        self.records.append(OpRecord(node.name, node.op, kind, int(flops), int(nbytes), detail))

    # -- matmuls (case 5)
    def matmul(
        self,
        node: Node,
        a: Any,
        b: Any,
        *,
        out_dtype: np.dtype | None = None,
        lhs_index: int | None = 0,
        rhs_index: int | None = 1,
    ) -> Any:
        """``a @ b`` under the policy; ``b`` may be a ``PreparedWeight`` (padded [K, N]).

        In int8 mode, ``lhs_index`` / ``rhs_index`` name the node inputs that
        carry ``a`` and ``b``: when they come from ``DequantizeLinear`` of int8
        data, the int8 data is multiplied instead (int8 x int8 -> int32) and
        the scales applied to the int32 result.
        """
        out_dtype = np.dtype(out_dtype) if out_dtype is not None else self.out_dtype(node)
        if self.policy.int8:
            y = self._int8_matmul(node, a, b, lhs_index, rhs_index)
            if y is not None:
                return y.astype(out_dtype)
        if isinstance(b, PreparedWeight) and b.quantized:
            b = self._dequantized(b)
        a = self.jx(a)
        prepared = b if isinstance(b, PreparedWeight) else None
        if prepared is not None:
            w = self.jx(prepared.array)
            if a.shape[-1] != prepared.k:
                raise TargetError(
                    f"node {node.name} ({node.op}): inner dimension {a.shape[-1]} does not match weight "
                    f"{prepared.source} [{prepared.k}, {prepared.n}]"
                )
            a = _pad_last(a, w.shape[0])
        else:
            w = self.jx(b)
        if a.dtype.kind in "iu" and w.dtype.kind in "iu":
            y = jnp.matmul(a.astype(jnp.int32), w.astype(jnp.int32), preferred_element_type=jnp.int32)
            self._record_matmul(node, a, w, y, "matmul_int32")
        elif self.policy.precision == "fp32":
            a, w = a.astype(jnp.float32), w.astype(jnp.float32)
            y = jnp.matmul(a, w, preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST)
            self._record_matmul(node, a, w, y, "matmul_f32")
        else:
            a, w = a.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
            y = jnp.matmul(a, w, preferred_element_type=jnp.float32)
            self._record_matmul(node, a, w, y, "matmul_bf16")
        if prepared is not None and y.shape[-1] != prepared.n:
            y = y[..., : prepared.n]
        return y.astype(out_dtype)

    def _dequantized(self, w: PreparedWeight) -> PreparedWeight:
        """An int8 prepared weight as a bf16 one (weight-only int8: dequantized on the fly)."""
        scale = np.asarray(w.scale, np.float32)
        if scale.ndim == 1:
            scale = np.pad(scale, (0, w.shape[1] - scale.shape[0]))
        deq = (self.jx(w.array).astype(jnp.float32) * jnp.asarray(scale)).astype(jnp.bfloat16)
        self.note("int8 weights without a quantized activation are dequantized to bf16 on the fly (weight-only int8)")
        return PreparedWeight(deq, w.k, w.n, w.source)

    def dq_source(self, node: Node, index: int | None, *, per_row: bool = True) -> tuple[Any, Any, Any] | None:
        """(int data, scale, zero point or None) if input ``index`` is a DequantizeLinear of int8/uint8 data.

        Two forms qualify: per tensor (scale and zero point of one element),
        and, when ``per_row`` (the left operand: its rows are the output's
        rows), per row: ``axis`` the last, ``block_size`` equal to K and the
        scale shaped ``[..., 1]`` -- what the int8 pass writes for dynamic
        per-row activations (``DynamicQuantize{granularity=row}``). The scale
        and zero point come back as ``()`` or ``[..., M, 1]``.
        """
        if index is None or index >= len(node.inputs) or node.inputs[index] is None:
            return None
        v = node.inputs[index]
        dq = v.producer  # type: ignore[union-attr]
        if dq is None or dq.op != "DequantizeLinear":
            return None
        q = dq.inputs[0]
        if q is None or q.dtype not in (DType.INT8, DType.UINT8):
            return None
        scale_v = dq.inputs[1] if len(dq.inputs) > 1 else None
        zp_v = dq.inputs[2] if len(dq.inputs) > 2 else None
        if scale_v is None:
            return None
        qv, sv = self.value(q), self.value(scale_v)
        zv = self.value(zp_v) if zp_v is not None else None
        if qv is None or sv is None or (zp_v is not None and zv is None):
            return None
        attrs = get_op(dq.op).full_attrs(dq.attrs)
        block = int(attrs.get("block_size", 0) or 0)
        sshape, qshape = tuple(np.shape(sv)), tuple(np.shape(qv))
        if block == 0:
            if math.prod(sshape) != 1 or (zv is not None and math.prod(np.shape(zv)) != 1):
                return None
            return qv, _scalar(sv), None if zv is None else _scalar(zv)
        rank = len(qshape)
        row_form = (
            per_row
            and rank >= 1
            and int(attrs.get("axis", 1)) % rank == rank - 1
            and block == qshape[-1]
            and sshape == qshape[:-1] + (1,)
            and (zv is None or tuple(np.shape(zv)) == sshape)
        )
        return (qv, sv, zv) if row_form else None

    def _int8_matmul(self, node: Node, a: Any, b: Any, lhs_index: int | None, rhs_index: int | None) -> Any | None:
        """int8 x int8 -> int32 when both operands are quantized (case 3 of the policy); None otherwise.

        The left operand's scale may be per tensor or per row; the right
        operand's per tensor (an activation) or per output column (a
        prepared int8 weight).
        """
        lhs = self.dq_source(node, lhs_index)
        if lhs is None:
            return None
        qa, sa, za = lhs
        if isinstance(b, PreparedWeight):
            if not b.quantized:
                return None
            acc = self.int_matmul(node, qa, b, za)
            return acc.astype(jnp.float32) * (jnp.asarray(self.jx(sa), jnp.float32) * jnp.asarray(b.scale))
        rhs = self.dq_source(node, rhs_index, per_row=False)
        if rhs is None:
            return None
        qb, sb, zb = rhs
        acc = self.int_matmul(node, qa, qb, za, zb)
        scale = jnp.asarray(self.jx(sa), jnp.float32) * jnp.asarray(self.jx(sb), jnp.float32).reshape(())
        return acc.astype(jnp.float32) * scale

    def int_matmul(self, node: Node, qa: Any, qb: Any, a_zero: Any = None, b_zero: Any = None) -> Any:
        """``sum_k (qa - a_zero)(qb - b_zero)`` in int32 through an int8 x int8 -> int32 ``dot_general``.

        ``qa`` is [..., M, K]; ``qb`` is a ``PreparedWeight`` (padded [K, N])
        or an int array [..., K, N]. uint8 operands are shifted exactly to
        int8 (q - 128, zero point - 128). ``a_zero`` is per tensor or per row
        ([..., M, 1]); ``b_zero`` per tensor, or per column ([N]) for a 2-D
        ``qb``. A zero point known to be 0 at export time (symmetric int8)
        costs nothing; others are applied to the int32 result through row and
        column sums, so the MXU still multiplies raw int8.
        """
        prepared = qb if isinstance(qb, PreparedWeight) else None
        qa = self.jx(qa)
        w = self.jx(prepared.array if prepared is not None else qb)
        k_real = qa.shape[-1]
        qa, za = _to_int8(qa, _zero_i32(a_zero))
        w, zb = _to_int8(w, _zero_i32(b_zero))
        za, zb = _drop_zero(za), _drop_zero(zb)
        if prepared is not None:
            qa = _pad_last(qa, w.shape[0])
        acc = jnp.matmul(qa, w, preferred_element_type=jnp.int32)
        self._record_matmul(node, qa, w, acc, "int8_matmul")
        n = prepared.n if prepared is not None else acc.shape[-1]
        if acc.shape[-1] != n:
            acc = acc[..., :n]
        # padded K entries are zero in both operands and add nothing to the sums below
        if za is not None:
            za = jnp.asarray(za)
            if za.size == 1:
                za = za.reshape(())
            if prepared is not None and prepared.colsum is not None:
                colsum = self.jx(prepared.colsum)[:n]  # computed at lowering time
            else:
                colsum = jnp.sum(w.astype(jnp.int32), axis=-2, keepdims=True)[..., :n]
            acc = acc - za * colsum
        if zb is not None:
            zb = jnp.asarray(zb)
            zb_b = zb.reshape(()) if zb.size == 1 else zb.reshape((1,) * (acc.ndim - 1) + (-1,))
            acc = acc - jnp.sum(qa.astype(jnp.int32), axis=-1, keepdims=True) * zb_b
            if za is not None:
                acc = acc + k_real * za * zb_b
        return acc

    def scaled_int_matmul(self, node: Node, qa: Any, sa: Any, za: Any, qb: Any, sb: Any, zb: Any = None) -> Any:
        """``((qa - za) @ (qb - zb)) * (sa * sb)`` in float32: the integer ops' matmul (QLinear, QAttention).

        ``sa`` is per tensor or per row ([..., M, 1]), ``sb`` per tensor or per
        column ([N]). Under the int8 and fp32 policies the product is an
        int8 x int8 -> int32 ``dot_general`` (exact, as the reference kernel);
        under the bf16 policy (a chip without faster int8, e.g. v4) the
        centered integers, exact in bf16 (|q - z| <= 255), go through a
        bf16 x bf16 -> f32 matmul.
        """
        sa = jnp.asarray(self.jx(sa), jnp.float32)
        sb = jnp.asarray(self.jx(sb), jnp.float32)
        sa = sa.reshape(()) if sa.size == 1 else sa
        sb = sb.reshape(()) if sb.size == 1 else sb.reshape(-1)
        mult = sa * sb
        if self.policy.precision != "bf16":
            return self.int_matmul(node, qa, qb, za, zb).astype(jnp.float32) * mult
        self.note("integer matmuls (QLinear/QAttention) run as bf16 x bf16 -> f32 on the centered integers (exact)")
        a = self.jx(qa).astype(jnp.int32)
        if za is not None:
            z = jnp.asarray(self.jx(za)).astype(jnp.int32)
            a = a - (z.reshape(()) if z.size == 1 else z)
        a = a.astype(jnp.bfloat16)
        prepared = qb if isinstance(qb, PreparedWeight) else None
        w = self.jx(prepared.array if prepared is not None else qb).astype(jnp.int32)
        if zb is not None:
            zw = jnp.asarray(self.jx(zb)).astype(jnp.int32)
            if zw.size == 1:
                zw = zw.reshape(())
            elif prepared is not None:
                zw = zw.reshape(-1)
                pad = w.shape[-1] - zw.shape[0]
                zw = jnp.pad(zw, (0, pad)) if pad else zw
            w = w - zw
        wf = w.astype(jnp.bfloat16)
        b = PreparedWeight(wf, prepared.k, prepared.n, prepared.source) if prepared is not None else wf
        y = self.matmul(node, a, b, out_dtype=np.dtype(np.float32), lhs_index=None, rhs_index=None)
        return y * mult

    def conv(
        self,
        node: Node,
        x: Any,
        w: Any,
        attrs: Mapping[str, Any],
        dims: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
        *,
        geometry: tuple[list[int], list[int], list[tuple[int, int]], list[int]] | None = None,
    ) -> Any:
        """A convolution under the policy (bf16 x bf16 -> f32, or f32 at HIGHEST), result float32.

        ``dims`` are the (lhs, rhs, out) dimension numbers as ``lax``
        takes them: (batch, feature, *spatial), (out feature, in feature,
        *spatial), (batch, feature, *spatial). Strides, dilations, pads and
        ``auto_pad`` follow ``Conv`` (``resolve_pads``) unless ``geometry``
        gives (strides, dilations, (low, high) paddings, input dilation)
        itself (``ConvTranspose`` as a convolution of the dilated input).
        """
        from accelopt.ir.ops.onnx_conv import resolve_pads

        x, w = self.jx(x), self.jx(w)
        lhs, rhs, out = dims
        spatial = [x.shape[i] for i in lhs[2:]]
        kernel = [w.shape[i] for i in rhs[2:]]
        sp = len(kernel)
        if geometry is None:
            strides, dil, pads = resolve_pads(spatial, kernel, attrs)
            padding, lhs_dil = [(pads[i], pads[i + sp]) for i in range(sp)], [1] * sp
        else:
            strides, dil, padding, lhs_dil = geometry
        if self.policy.precision == "fp32":
            x, w, prec = x.astype(jnp.float32), w.astype(jnp.float32), jax.lax.Precision.HIGHEST
            kind = "matmul_f32"
        else:
            x, w, prec = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), None
            kind = "matmul_bf16"
        y = jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=strides,
            padding=padding,
            lhs_dilation=lhs_dil,
            rhs_dilation=dil,
            dimension_numbers=jax.lax.ConvDimensionNumbers(lhs, rhs, out),
            feature_group_count=int(attrs.get("group", 1)),
            precision=prec,
            preferred_element_type=jnp.float32,
        )
        per_out = int(w.shape[rhs[1]]) * int(math.prod(kernel))
        flops = 2 * int(math.prod(y.shape)) * per_out
        self.matmul_count[kind] = self.matmul_count.get(kind, 0) + 1
        self.record(node, "matmul", flops, _nbytes(x) + _nbytes(w) + _nbytes(y), kind)
        return y

    def _record_matmul(self, node: Node, a: Any, w: Any, y: Any, kind: str) -> None:
        k = a.shape[-1]
        flops = 2 * int(math.prod(y.shape)) * int(k)
        nbytes = _nbytes(a) + _nbytes(w) + _nbytes(y)
        self.matmul_count[kind] = self.matmul_count.get(kind, 0) + 1
        self.record(node, "int8_matmul" if kind == "int8_matmul" else "matmul", flops, nbytes, kind)


def _scalar(x: Any) -> Any:
    """A one-element scale or zero point as a scalar (numpy stays numpy)."""
    return np.asarray(x).reshape(()) if isinstance(x, (np.ndarray, np.generic)) else jnp.reshape(x, ())


def _zero_i32(z: Any) -> Any:
    """A zero point as int32 (numpy stays numpy, so a known zero can be dropped); None stays None."""
    if z is None:
        return None
    if isinstance(z, (np.ndarray, np.generic)):
        return np.asarray(z).astype(np.int32)
    return jnp.asarray(z).astype(jnp.int32)


def _drop_zero(z: Any) -> Any:
    """None for a zero point known at export time to be all zeros."""
    if isinstance(z, (np.ndarray, np.generic)) and not np.any(z):
        return None
    return z


def _pad_last(x: Any, size: int) -> Any:
    """Zero-pad the last axis of ``x`` to ``size`` (the weight's padded K)."""
    if x.shape[-1] == size:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])


def _to_int8(q: Any, zero: Any) -> tuple[Any, Any]:
    """uint8 data -> int8 exactly (q - 128) with the zero point shifted alike (int32)."""
    if q.dtype == jnp.uint8:
        q = (q.astype(jnp.int32) - 128).astype(jnp.int8)
        zero = np.int32(-128) if zero is None else zero - 128
    elif q.dtype != jnp.int8:
        raise TargetError(f"int8 matmul operand has dtype {q.dtype}")
    return q, zero


# ----------------------------------------------------------- the function
@dataclass
class LoweredGraph:
    """The JAX function of a graph plus its weight plan; ``last_ctx`` holds the last trace's context (records)."""

    graph: Graph
    policy: Policy
    plan: WeightPlan
    fn: Callable[..., tuple[Any, ...]]
    last_ctx: list[LowerCtx] = field(default_factory=list)

    def input_specs(self, dims: Mapping[str, int]) -> list[jax.ShapeDtypeStruct]:
        return [jax.ShapeDtypeStruct(bind_shape(v, dims), jax_dtype(v.dtype)) for v in self.graph.inputs]


def bind_shape(v: Value, dims: Mapping[str, int]) -> tuple[int, ...]:
    """``v``'s shape with symbols replaced by ``dims`` (``None`` dims looked up as ``"?<input>:<axis>"``)."""
    return bk.bind_shape(v, dims, needs="the TPU export", scope="for this export")


def build_function(graph: Graph, policy: Policy, plan: WeightPlan) -> LoweredGraph:
    """The JAX function for ``graph``: ``fn(params, *inputs) -> tuple(outputs)`` (cases 1-6)."""
    missing = unlowered_ops(n.op for n in graph.nodes if n.name not in plan.skip)
    if missing:
        raise TargetError(f"graph {graph.name!r}: no TPU lowering for op(s): {', '.join(missing)}")
    steps = []
    for node in graph.nodes:
        if node.name in plan.skip:
            continue
        opdef = get_op(node.op)
        low = _TABLE[node.op]
        steps.append((node, low, opdef, opdef.full_attrs(node.attrs)))
    # constants known before tracing: initializers, and outputs of nodes folded by the plan
    consts: list[tuple[Value, np.ndarray]] = [(v, v.const) for v in graph.initializers.values()]  # type: ignore[misc]
    consts += [
        (o, plan.folded[o.name]) for n in graph.nodes if n.name in plan.skip for o in n.outputs if o.name in plan.folded
    ]
    holder: list[LowerCtx] = []

    def fn(params: Mapping[str, Any], *inputs: Any) -> tuple[Any, ...]:
        ctx = LowerCtx(graph, policy)
        holder[:] = [ctx]
        env: dict[int, Any] = ctx.env
        for v, x in zip(graph.inputs, inputs):
            env[id(v)] = x
        for v, arr in consts:  # case 2: a parameter argument, or baked
            key = plan.raw.get(v.name)
            env[id(v)] = arr if key is None or plan.mode == "constants" else params[key]
        for node, low, opdef, attrs in steps:
            # outputs of nodes absorbed by the weight plan are absent; their consumers get a PreparedWeight
            ins = [None if v is None else env.get(id(v)) for v in node.inputs]
            if low.fold and all(x is None or ctx.is_static(x) for x in ins):
                try:
                    outs = [np.asarray(o) for o in opdef.kernel(ins, attrs, len(node.outputs))]
                except Exception as e:
                    raise TargetError(f"node {node.name} ({node.op}): folding static inputs failed: {e}") from e
            else:
                for idx in range(len(ins)):
                    ref = plan.prepared.get((node.name, idx))
                    if ref is not None:
                        key, k, n, scale = ref
                        arr = plan.arrays[key] if plan.mode == "constants" else params[key]
                        src = key.split("@")[0]
                        ckey = plan.colsums.get(key)
                        colsum = None
                        if ckey is not None:
                            colsum = plan.arrays[ckey] if plan.mode == "constants" else params[ckey]
                        ins[idx] = PreparedWeight(arr, k, n, src, scale, colsum)
                try:
                    outs = list(low.fn(ctx, node, ins, attrs))
                except TargetError:
                    raise
                except Exception as e:
                    shapes = ", ".join(_describe(x) for x in ins)
                    raise TargetError(
                        f"node {node.name} ({node.op}): lowering failed on ({shapes}): {type(e).__name__}: {e}"
                    ) from e
            if len(outs) < len(node.outputs):
                raise TargetError(f"node {node.name} ({node.op}): lowering returned {len(outs)} outputs")
            for v, x in zip(node.outputs, outs):
                env[id(v)] = _check(node, v, x, ctx)
        return tuple(ctx.jx(env[id(v)]) for v in graph.outputs)

    return LoweredGraph(graph, policy, plan, fn, holder)


def _describe(x: Any) -> str:
    if x is None:
        return "_"
    if isinstance(x, PreparedWeight):
        return f"weight{list(x.shape)}"
    kind = "const " if isinstance(x, (np.ndarray, np.generic)) else ""
    return f"{kind}{x.dtype}{list(getattr(x, 'shape', ()))}"


def _check(node: Node, v: Value, x: Any, ctx: LowerCtx) -> Any:
    """Case 6: coerce the dtype to the IR's and compare static dims."""
    if x is None:
        return None
    if ctx.is_static(x):
        arr = np.asarray(x)
        if arr.dtype != v.dtype.np:
            arr = arr.astype(v.dtype.np)
        out = arr
    else:
        want = jax_dtype(v.dtype)
        out = x if x.dtype == want else x.astype(want)
    if v.shape is not None:
        shape = tuple(out.shape)
        ok = len(shape) == len(v.shape) and all(not isinstance(d, int) or d == s for d, s in zip(v.shape, shape))
        if not ok:
            raise TargetError(
                f"node {node.name} ({node.op}): lowered output %{v.name} has shape {list(shape)}, IR says {v.type}"
            )
    return out
