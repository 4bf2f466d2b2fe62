"""Accuracy-aware fallback: keep the most sensitive quantized layers in float until the tolerance holds.

1. Sensitivity (``measure_sensitivity``): each layer is quantized *alone*
   (every other layer float) and the graph is run on calibration samples;
   its sensitivity is the error that causes at the graph outputs against the
   float graph: the worst relative L2 error over the outputs (the ranking
   key), with the worst row cosine and, for embeddings, the worst pooled
   cosine alongside for the report. Padded tokens are left out when the
   samples carry an ``attention_mask``.
2. Search (``search``): layers sorted from most to least sensitive; the
   smallest ``k`` such that keeping the first ``k`` in float passes
   ``check`` (the validator, on its own samples): ``k = 0``, then 1, 2, 4,
   ... until one passes, then bisection between the last failing and the
   first passing ``k``. That assumes the error shrinks as more layers stay
   float, which the sensitivity order makes likely but does not guarantee;
   every ``k`` tried is recorded. ``k = n`` (all float) is the last resort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.ir.graph import Graph
from accelopt.passes.quant_calibration import run_values, static_batch_of
from accelopt.validation import compare, summarize

log = logging.getLogger(__name__)


@dataclass
class Sensitivity:
    """Error at the graph outputs when one layer alone is quantized."""

    node: str
    op: str
    role: str
    rel_l2: float
    cosine_min: float
    pooled_cosine_min: float | None = None

    def describe(self) -> str:
        text = f"rel_l2 {self.rel_l2:.3e}, worst row cosine {self.cosine_min:.5f}"
        if self.pooled_cosine_min is not None:
            text += f", worst pooled cosine {self.pooled_cosine_min:.5f}"
        return text


@dataclass
class SearchResult:
    """The float set chosen and every attempt made on the way."""

    k: int
    outcome: Any
    tries: list[tuple[int, bool, str]] = field(default_factory=list)


def _outputs(graph: Graph, batches: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    names = [v.name for v in graph.outputs]
    parts = list(run_values(graph, names, batches, static_batch_of(graph)))
    return [np.concatenate([p[n] for p in parts], axis=0) if parts[0][n].ndim else parts[0][n] for n in names]


def _mask(batches: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray | None:
    masks = [np.asarray(b["attention_mask"]) for b in batches if "attention_mask" in b]
    if len(masks) != len(batches) or any(m.ndim != 2 for m in masks):
        return None
    return np.concatenate(masks, axis=0)


def measure_sensitivity(
    graph: Graph,
    names: Sequence[tuple[str, str, str]],
    build: Callable[[str], Graph],
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    progress: Callable[[str], None] | None = None,
) -> list[Sensitivity]:
    """Case 1 for each ``(node, op, role)`` in ``names``; ``build(node)`` returns the graph with only it quantized."""
    ref = _outputs(graph, batches)
    out_names = [v.name for v in graph.outputs]
    mask = _mask(batches)
    result = []
    for i, (node, op, role) in enumerate(names):
        if progress is not None:
            progress(f"sensitivity {i + 1}/{len(names)}: {node}")
        outs = _outputs(build(node), batches)
        per = {
            n: compare(
                r, o, name=n, mask=mask if r.ndim >= 2 and mask is not None and r.shape[:2] == mask.shape else None
            )
            for n, r, o in zip(out_names, ref, outs)
        }
        summary, _ = summarize(per)
        result.append(
            Sensitivity(
                node,
                op,
                role,
                float(summary.get("rel_l2", 0.0)),
                float(summary.get("cosine_min", 1.0)),
                float(summary["pooled_cosine_min"]) if "pooled_cosine_min" in summary else None,
            )
        )
    return result


def search(n: int, check: Callable[[int], tuple[bool, Any, str]]) -> SearchResult:
    """Case 2: the smallest ``k`` in ``0..n`` with ``check(k)`` ok (``n`` when none is)."""
    tries: list[tuple[int, bool, str]] = []
    seen: dict[int, tuple[bool, Any]] = {}

    def attempt(k: int) -> bool:
        if k not in seen:
            ok, outcome, why = check(k)
            seen[k] = (ok, outcome)
            tries.append((k, ok, why))
            log.debug("fallback: %d layer(s) float -> %s %s", k, "ok" if ok else "fails", why)
        return seen[k][0]

    if attempt(0):
        return SearchResult(0, seen[0][1], tries)
    bad, good = 0, None
    k = 1
    while k < n:
        if attempt(k):
            good = k
            break
        bad = k
        k *= 2
    if good is None:
        if n == 0 or not attempt(n):
            return SearchResult(n, seen.get(n, (False, None))[1], tries)
        good = n
    while good - bad > 1:
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, seen[good][1], tries)


__all__ = ["SearchResult", "Sensitivity", "measure_sensitivity", "search"]
