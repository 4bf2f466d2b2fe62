"""``jax.export`` of a lowered graph, its serialized bytes, its StableHLO text, and checks on that text.

Cases:

1. ``export_bucket``: one export per static shape binding (a sequence bucket),
   for ``platforms`` (default ("tpu", "cpu"): the same program runs on a TPU
   VM and on this machine's CPU XLA).
2. ``serialize`` / ``deserialize``: the portable bytes of ``Exported``
   (needs the ``flatbuffers`` package); a corrupt file raises ``TargetError``.
3. ``stablehlo_text``: the module as text, without debug locations and with
   constants over 16 elements elided (baked weights would otherwise make the
   text as large as the model).
4. ``inspect_stablehlo`` / ``check_stablehlo``: every ``dot_general`` (operand
   and result types, contracting and batching dims) and every
   ``custom_call`` target, checked against the policy: bf16 x bf16 -> f32 (or
   i8 x i8 -> i32), no f32 matmul under bf16, weight-matmul K/N multiples of
   the MXU tile, M multiples of the batch multiple, and no custom_call
   outside JAX's list of targets guaranteed stable for export.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
from jax import export as jax_export

from accelopt.errors import TargetError
from accelopt.targets.tpu.lowering import LowerCtx, LoweredGraph
from accelopt.targets.tpu.policy import Policy

log = logging.getLogger(__name__)

DEFAULT_PLATFORMS = ("tpu", "cpu")


@dataclass
class BucketExport:
    """One export: the shape binding it was made for, the ``Exported``, and what its trace recorded."""

    name: str  # e.g. "b8_s128"
    dims: dict[str, int]
    exported: Any  # jax.export.Exported
    ctx: LowerCtx | None
    seconds: float


def export_bucket(lowered: LoweredGraph, dims: Mapping[str, int], name: str, platforms: Sequence[str]) -> BucketExport:
    """Case 1: trace ``lowered.fn`` with the inputs bound to ``dims`` and export it."""
    param_specs = lowered.plan.param_specs()
    input_specs = lowered.input_specs(dims)
    t0 = time.perf_counter()
    try:
        exported = jax_export.export(jax.jit(lowered.fn), platforms=tuple(platforms))(param_specs, *input_specs)
    except TargetError:
        raise
    except Exception as e:
        raise TargetError(f"graph {lowered.graph.name!r}: jax.export failed for bucket {name}: {e}") from e
    seconds = time.perf_counter() - t0
    ctx = lowered.last_ctx[0] if lowered.last_ctx else None
    log.debug("exported %s for %s in %.2fs", name, platforms, seconds)
    return BucketExport(name, dict(dims), exported, ctx, seconds)


def serialize(exported: Any) -> bytes:
    """Case 2: the portable serialized form."""
    try:
        return bytes(exported.serialize())
    except Exception as e:  # e.g. flatbuffers missing
        raise TargetError(f"could not serialize the export: {e}") from e


def deserialize(data: bytes, *, source: str = "<bytes>") -> Any:
    """Case 2: an ``Exported`` from bytes; ``TargetError`` naming ``source`` if they are not one."""
    try:
        return jax_export.deserialize(bytearray(data))
    except Exception as e:
        raise TargetError(f"{source}: not a serialized jax.export artifact ({type(e).__name__}: {e})") from e


def stablehlo_text(exported: Any, *, elide_over: int = 16) -> str:
    """Case 3: the StableHLO module as text without locations, large constants elided."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.lib import _jax

        with mlir.make_ir_context():
            module = _jax.mlir.deserialize_portable_artifact(exported.mlir_module_serialized)
            out = io.StringIO()
            module.operation.print(file=out, enable_debug_info=False, large_elements_limit=elide_over)
            return out.getvalue()
    except (ImportError, AttributeError, TypeError) as e:  # private API moved: fall back to the public one
        log.debug("falling back to Exported.mlir_module(): %s", e)
        return str(exported.mlir_module())


# ------------------------------------------------------------------ case 4
@dataclass(frozen=True)
class TensorTy:
    shape: tuple[int, ...]
    dtype: str  # "bf16", "f32", "i8", "i32", ...

    @staticmethod
    def parse(text: str) -> TensorTy:
        inner = text.strip()
        if inner.startswith("tensor<"):
            inner = inner[len("tensor<") : -1]
        parts = inner.split("x")
        dims = tuple(int(p) for p in parts[:-1]) if len(parts) > 1 else ()
        return TensorTy(dims, parts[-1])


@dataclass(frozen=True)
class DotGeneral:
    lhs: TensorTy
    rhs: TensorTy
    out: TensorTy
    lhs_batch: tuple[int, ...]
    rhs_batch: tuple[int, ...]
    lhs_contract: tuple[int, ...]
    rhs_contract: tuple[int, ...]
    line: str

    @property
    def is_weight_matmul(self) -> bool:
        """No batching dims and a 2-D right operand: activations times a weight matrix."""
        return not self.lhs_batch and len(self.rhs.shape) == 2

    @property
    def m(self) -> int:
        free = [d for i, d in enumerate(self.lhs.shape) if i not in self.lhs_batch and i not in self.lhs_contract]
        out = 1
        for d in free:
            out *= d
        return out

    @property
    def k(self) -> int:
        out = 1
        for i in self.rhs_contract:
            out *= self.rhs.shape[i]
        return out

    @property
    def n(self) -> int:
        out = 1
        for i, d in enumerate(self.rhs.shape):
            if i not in self.rhs_batch and i not in self.rhs_contract:
                out *= d
        return out


@dataclass
class StableHLOSummary:
    dots: list[DotGeneral] = field(default_factory=list)
    custom_calls: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)


_DOT = re.compile(
    r"stablehlo\.dot_general\s+%[\w#.]+,\s*%[\w#.]+,\s*(?:batching_dims\s*=\s*\[([\d,\s]*)\]\s*x\s*\[([\d,\s]*)\],\s*)?"
    r"contracting_dims\s*=\s*\[([\d,\s]*)\]\s*x\s*\[([\d,\s]*)\].*?:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)\s*->\s*(tensor<[^>]*>)"
)
_CUSTOM = re.compile(r"stablehlo\.custom_call\s+@([\w.$-]+)|call_target_name\s*=\s*\"([^\"]+)\"")
_OP = re.compile(r"=\s*\"?(stablehlo\.[a-z_]+|chlo\.[a-z_]+)")


def _dims(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    return tuple(int(x) for x in text.replace(" ", "").split(",") if x)


def inspect_stablehlo(text: str) -> StableHLOSummary:
    """Every dot_general, custom_call target and op count in a StableHLO module's text."""
    summary = StableHLOSummary()
    for line in text.splitlines():
        m = _OP.search(line)
        if m:
            summary.ops[m.group(1)] = summary.ops.get(m.group(1), 0) + 1
        if "stablehlo.dot_general" in line:
            d = _DOT.search(line)
            if d is None:
                raise TargetError(f"could not parse dot_general: {line.strip()[:200]}")
            summary.dots.append(
                DotGeneral(
                    TensorTy.parse(d.group(5)),
                    TensorTy.parse(d.group(6)),
                    TensorTy.parse(d.group(7)),
                    _dims(d.group(1)),
                    _dims(d.group(2)),
                    _dims(d.group(3)),
                    _dims(d.group(4)),
                    line.strip(),
                )
            )
        if "custom_call" in line:
            for c in _CUSTOM.finditer(line):
                summary.custom_calls.append(c.group(1) or c.group(2))
    return summary


def stable_custom_call_targets() -> frozenset[str]:
    """JAX's custom_call targets guaranteed stable across versions (jax.export's own allow-list)."""
    from jax._src.export import _export

    return frozenset(_export._CUSTOM_CALL_TARGETS_GUARANTEED_STABLE)


def check_stablehlo(summary: StableHLOSummary, policy: Policy, *, m_multiple: int | None = None) -> list[str]:
    """Case 4: violations of the policy in an exported module (empty when it complies).

    ``m_multiple`` is what weight-matmul rows must be a multiple of (the
    policy's batch multiple unless the export's batch could not be padded).
    """
    problems: list[str] = []
    tile = policy.tile
    m_multiple = policy.batch_multiple if m_multiple is None else m_multiple
    for d in summary.dots:
        types = (d.lhs.dtype, d.rhs.dtype, d.out.dtype)
        if policy.precision == "bf16" and types != ("bf16", "bf16", "f32"):
            problems.append(f"dot_general {types[0]} x {types[1]} -> {types[2]} under the bf16 policy: {d.line[:160]}")
        elif policy.precision == "int8" and types not in (("bf16", "bf16", "f32"), ("i8", "i8", "i32")):
            problems.append(f"dot_general {types[0]} x {types[1]} -> {types[2]} under the int8 policy: {d.line[:160]}")
        elif policy.precision == "fp32" and types != ("f32", "f32", "f32") and types[0] != "i8":
            problems.append(f"dot_general {types[0]} x {types[1]} -> {types[2]} under the fp32 policy: {d.line[:160]}")
        if d.is_weight_matmul and policy.pad_to_tile:
            if d.k % tile or d.n % tile:
                problems.append(f"weight matmul K={d.k} N={d.n} not multiples of the {tile} tile: {d.line[:160]}")
            if d.m % m_multiple:
                problems.append(f"weight matmul M={d.m} not a multiple of {m_multiple}: {d.line[:160]}")
    allowed = stable_custom_call_targets()
    for target in summary.custom_calls:
        if target not in allowed:
            problems.append(f"custom_call @{target} is not among JAX's stable custom_call targets")
    return problems
