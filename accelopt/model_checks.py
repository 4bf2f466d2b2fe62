"""Checks of an imported model before it is optimized: non-finite weights and outputs, validation size.

1. ``nonfinite_weights(graph)``: float initializers holding NaN or Inf, with
   counts. ``accelopt.load`` logs a warning naming them (a lone ``-inf``
   scalar, the fill value of an attention mask, is normal and not reported).
2. ``check_finite_outputs(...)``: the original model's outputs on the
   validation inputs must be finite, or nothing can be judged against them
   (every pass would be "rolled back"); a ``FrontendError`` names each
   output, how many values are NaN / Inf, and the non-finite weights.
3. ``check_inputs_hold_values(graph, source)``: a graph input declared with
   a dimension of 0 (``[batch, 0]``) is empty: no sample inputs can be made
   and every output is empty or undefined; valid ONNX, but nothing to
   optimize: a ``FrontendError`` naming the input.
4. ``check_validation_size(graph, bindings)``: validation keeps values of the
   graph in memory for all samples it runs at once; a value that would need
   more than ``MAX_VALUE_BYTES`` (an ``Expand`` to ``[10**6, batch, seq,
   32]``, an input dim of ``10**12``) makes the model too large to validate:
   a ``ValidationError`` (a usage error) naming the node, the shape and the
   size, with what to change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from accelopt.errors import FrontendError, ValidationError
from accelopt.ir.graph import Graph, Node, Value

log = logging.getLogger(__name__)

#: the largest single value validation will materialize (per run of all samples it runs at once)
MAX_VALUE_BYTES = 2 << 30


@dataclass(frozen=True)
class NonFinite:
    """How many values of one tensor are NaN, +-Inf, out of ``size``."""

    name: str
    nan: int
    inf: int
    size: int

    def __str__(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return f"{self.name!r} ({' and '.join(parts)} of {self.size} values)"


def count_nonfinite(name: str, arr: np.ndarray) -> NonFinite | None:
    """``arr``'s non-finite values, or None when all are finite (one float64 sum first: cheap when clean)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    if np.isfinite(a.sum(dtype=np.complex128 if a.dtype.kind == "c" else np.float64)):
        return None
    nan = int(np.count_nonzero(np.isnan(a)))
    inf = int(np.count_nonzero(np.isinf(a)))
    return NonFinite(name, nan, inf, int(a.size)) if nan or inf else None


def nonfinite_weights(graph: Graph) -> list[NonFinite]:
    """Case 1: float initializers with NaN or Inf (scalar +-Inf mask fill values left out)."""
    found = []
    for name, v in graph.initializers.items():
        if v.const is None:
            continue
        nf = count_nonfinite(name, v.const)
        if nf is not None and (nf.nan or nf.size > 1):
            found.append(nf)
    return found


def warn_nonfinite_weights(graph: Graph, source: str) -> list[NonFinite]:
    """Log one warning naming the non-finite weights (case 1); returns them."""
    found = nonfinite_weights(graph)
    if found:
        shown = ", ".join(str(f) for f in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        log.warning("%s: %d weight tensor(s) hold non-finite values: %s", source, len(found), shown)
    return found


def check_finite_outputs(
    outputs: Sequence[np.ndarray], names: Sequence[str], graph: Graph, *, source: str, runtime: str
) -> None:
    """Case 2: ``FrontendError`` when the reference outputs hold NaN or Inf."""
    bad = [nf for nf in (count_nonfinite(n, o) for n, o in zip(names, outputs)) if nf is not None]
    if not bad:
        return
    weights = nonfinite_weights(graph)
    cause = (
        "; its weights hold non-finite values: " + ", ".join(str(w) for w in weights[:5])
        if weights
        else "; its weights are finite, so the model overflows on these inputs"
    )
    raise FrontendError(
        f"{source}: the original model's outputs ({runtime}) on the validation inputs are not finite: "
        + ", ".join(f"output {b}" for b in bad)
        + cause
        + "; accuracy cannot be judged against them",
        hint="fix the model's weights, or skip validation with --no-validate",
    )


def check_inputs_hold_values(graph: Graph, source: str) -> None:
    """Case 3."""
    for v in graph.inputs:
        if v.shape and 0 in v.shape:
            shown = ", ".join("?" if d is None else str(d) for d in v.shape)
            raise FrontendError(
                f"{source}: graph input {v.name!r} is declared [{shown}]: dimension {v.shape.index(0)} has size 0, "
                "so the tensor is empty and there is nothing to compute"
            )


def check_validation_size(graph: Graph, bindings: Mapping[str, int], *, samples: int, values: bool = True) -> None:
    """Case 4: ``ValidationError`` when one value would exceed ``MAX_VALUE_BYTES`` at these bindings.

    Every value when ``values`` (validation runs the graph), else only the graph inputs (the
    sample inputs are still made, for calibration).
    """
    found: list[tuple[Value, Node | None]] = [(v, None) for v in graph.inputs]
    if values:
        found += [(v, n) for n in graph.nodes for v in n.outputs]
    for v, node in found:
        shape = v.type.shape
        if shape is None:
            continue
        dims = [d if isinstance(d, int) else bindings.get(d) if isinstance(d, str) else None for d in shape]
        if any(d is None for d in dims):
            continue
        size = int(np.prod(np.array(dims, dtype=object))) * v.dtype.np.itemsize
        if size > MAX_VALUE_BYTES:
            where = f"graph input %{v.name}" if node is None else f"node {node.name} ({node.op}) output %{v.name}"
            shown = ",".join(str(d) for d in dims)
            raise ValidationError(
                f"the model is too large to {'validate' if values else 'make sample inputs for'}: {where} would hold {v.dtype}[{shown}] = "
                f"{size / 2**30:,.1f} GiB for {samples} sample(s) at once (limit {MAX_VALUE_BYTES / 2**30:g} GiB); "
                "use fewer --samples, a shorter --seq-len, or skip validation with --no-validate"
            )
