"""Calibration for the quantization passes: observing activations and choosing their ranges.

``observe(graph, values, samples)`` runs ``graph`` on calibration samples
(batches of input dicts, ``PassContext.calibration``) and collects, for each
named value, an ``Observation``: global min and max, per-channel maxima of
``|x|`` over the last axis (SmoothQuant needs them) and, when asked, a
histogram of ``|x|`` with ``bins`` equal bins over ``[0, max|x|]`` (a second
pass over the samples, once the maxima are known).

``choose_range(obs, method)`` turns an observation into the range
``[lo, hi]`` that quantization maps onto the integer grid:

1. ``minmax``: the observed ``[min, max]``.
2. ``percentile`` (``percentile=99.99`` by default): ``T`` = that percentile
   of ``|x|`` (read off the histogram's cumulative counts, interpolated within
   a bin); the range is ``[max(min, -T), min(max, T)]``.
3. ``entropy``: ``T`` minimizing the KL divergence between the histogram of
   ``|x|`` and its 128-level quantization clipped at ``T`` (TensorRT's
   method: the clipped tail is folded into the last kept bin; empty bins stay
   empty after expansion); the range is clipped at ``T`` as in 2.

Ranges always include 0 (zero must be exactly representable), so
``qparams(lo, hi, dtype, symmetric)`` gives a scale and zero point with
``dequantize(quantize(0)) == 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import PassError, PassOptionError
from accelopt.interpreter import Interpreter
from accelopt.ir.graph import Graph, Value
from accelopt.ir.ops.quantized import qrange, symmetric_zero_point

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_BINS = 2048
#: quantized levels of |x| on one side of zero (int8)
ENTROPY_LEVELS = 128


@dataclass
class Observation:
    """What calibration saw of one value."""

    name: str
    min: float = np.inf
    max: float = -np.inf
    #: max |x| per channel of the last axis
    channel_absmax: np.ndarray | None = None
    #: counts of |x| in ``len(hist)`` equal bins over [0, absmax]
    hist: np.ndarray | None = None
    count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def absmax(self) -> float:
        if self.count == 0:
            return 0.0
        return float(max(abs(self.min), abs(self.max)))

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        self.min = float(min(self.min, float(x.min())))
        self.max = float(max(self.max, float(x.max())))
        if x.ndim >= 1:
            cam = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            self.channel_absmax = cam if self.channel_absmax is None else np.maximum(self.channel_absmax, cam)
        self.count += int(x.size)

    def add_to_histogram(self, x: np.ndarray, bins: int) -> None:
        top = self.absmax
        counts, _ = np.histogram(np.abs(np.asarray(x, np.float32)), bins=bins, range=(0.0, top if top > 0 else 1.0))
        self.hist = counts.astype(np.int64) if self.hist is None else self.hist + counts


def sample_batches(calibration: Sequence[Mapping[str, np.ndarray]] | None, limit: int) -> list[dict[str, np.ndarray]]:
    """At most ``limit`` samples (0: all) from ``PassContext.calibration``, in batches of at most 8.

    ``run_values`` pads a short batch back up to a graph's static batch size.
    """
    if not calibration:
        return []
    out: list[dict[str, np.ndarray]] = []
    taken = 0
    for batch in calibration:
        rows = _rows(batch)
        if limit and taken >= limit:
            break
        keep = rows if not limit else min(rows, limit - taken)
        for start in range(0, keep, 8):
            stop = min(keep, start + 8)
            out.append({k: np.asarray(v)[start:stop] for k, v in batch.items()})
        taken += keep
    return out


def _rows(batch: Mapping[str, np.ndarray]) -> int:
    for v in batch.values():
        a = np.asarray(v)
        return int(a.shape[0]) if a.ndim else 1
    return 0


def _probe(graph: Graph, names: Iterable[str]) -> tuple[Graph, list[str]]:
    """A copy of ``graph`` whose outputs are the values ``names`` (so the interpreter frees the rest)."""
    probe = graph.copy()
    vals: list[Value] = []
    by_name = {v.name: v for v in probe.values()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise PassError(f"calibration: values {', '.join(missing)} are not in graph {graph.name!r}")
    for n in names:
        vals.append(by_name[n])
    probe.set_outputs(vals)
    return probe, [v.name for v in vals]


def run_values(
    graph: Graph, names: Sequence[str], batches: Sequence[Mapping[str, np.ndarray]], static_batch: int | None = None
) -> Iterable[dict[str, np.ndarray]]:
    """Yield ``{name: array}`` of the values ``names`` for each batch (padded to a static batch size)."""
    probe, order = _probe(graph, names)
    interp = Interpreter(probe)
    for batch in batches:
        rows = _rows(batch)
        feed = dict(batch)
        if static_batch and rows < static_batch:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], static_batch - rows, axis=0)]) for k, v in feed.items()}
        out = interp.run(feed)
        res = {}
        for n in order:
            a = out[n]
            res[n] = a[:rows] if static_batch and a.ndim and a.shape[0] == static_batch else a
        yield res


def static_batch_of(graph: Graph) -> int | None:
    for v in graph.inputs:
        if v.shape and isinstance(v.shape[0], int):
            return int(v.shape[0])
    return None


def observe(
    graph: Graph,
    names: Sequence[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    histogram: bool = False,
    bins: int = DEFAULT_BINS,
) -> dict[str, Observation]:
    """Observations of the values ``names`` over ``batches`` (see the module docstring)."""
    names = list(dict.fromkeys(names))
    obs = {n: Observation(n) for n in names}
    if not names or not batches:
        return obs
    sb = static_batch_of(graph)
    for res in run_values(graph, names, batches, sb):
        for n, a in res.items():
            obs[n].update(a)
    if histogram:
        for res in run_values(graph, names, batches, sb):
            for n, a in res.items():
                obs[n].add_to_histogram(a, bins)
    return obs


# --------------------------------------------------------------- ranges
def percentile_threshold(hist: np.ndarray, top: float, percentile: float) -> float:
    """The ``percentile`` of |x| from a histogram over [0, top], interpolated within the bin."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    total = float(hist.sum())
    if total == 0 or top <= 0:
        return 0.0
    cdf = np.cumsum(hist, dtype=np.float64)
    target = total * percentile / 100.0
    i = int(np.searchsorted(cdf, target, side="left"))
    i = min(i, len(hist) - 1)
    width = top / len(hist)
    before = cdf[i - 1] if i > 0 else 0.0
    inside = hist[i]
    frac = 1.0 if inside == 0 else (target - before) / inside
    return float(min(top, (i + min(max(frac, 0.0), 1.0)) * width))


def entropy_threshold(hist: np.ndarray, top: float, levels: int = ENTROPY_LEVELS) -> float:
    """The clipping threshold of |x| minimizing KL(P || Q) (TensorRT's entropy calibration)."""
    n = len(hist)
    if top <= 0 or hist.sum() == 0:
        return 0.0
    if n <= levels:
        return top
    h = hist.astype(np.float64)
    width = top / n
    best_i, best_kl = n, np.inf
    suffix = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # suffix[i] = sum(h[i:])
    for i in range(levels, n + 1):
        p = h[:i].copy()
        p[i - 1] += suffix[i]
        # quantize the first i bins of the original histogram into `levels` groups
        idx = np.minimum((np.arange(i) * levels) // i, levels - 1)
        src = h[:i]
        nonzero = src > 0
        sums = np.bincount(idx, weights=src, minlength=levels)
        counts = np.bincount(idx, weights=nonzero.astype(np.float64), minlength=levels)
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        q = np.where(nonzero, per[idx], 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p / ps, q / qs
        mask = pn > 0
        if np.any(qn[mask] == 0):
            kl = np.inf
        else:
            kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(best_i * width)


def choose_range(obs: Observation, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """``[lo, hi]`` for ``obs`` by ``method`` (cases 1-3 of the module docstring); always contains 0."""
    if method not in METHODS:
        raise PassOptionError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    if obs.count == 0:
        return 0.0, 0.0
    lo, hi = min(obs.min, 0.0), max(obs.max, 0.0)
    if method == "minmax":
        return lo, hi
    if obs.hist is None:
        raise PassError(f"calibration of %{obs.name}: method {method!r} needs a histogram")
    top = obs.absmax
    t = percentile_threshold(obs.hist, top, percentile) if method == "percentile" else entropy_threshold(obs.hist, top)
    return max(lo, -t), min(hi, t)


def qparams(lo: float, hi: float, dtype: np.dtype, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32 scalar) and zero point (``dtype`` scalar) mapping ``[lo, hi]`` onto the integer range."""
    qmin, qmax = qrange(dtype, symmetric)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        amax = max(abs(lo), abs(hi))
        scale = np.float32(amax / 127.0) if amax > 0 else np.float32(1.0)
        return np.array(scale, np.float32), np.array(symmetric_zero_point(dtype), dtype)
    span = hi - lo
    scale = np.float32(span / (qmax - qmin)) if span > 0 else np.float32(1.0)
    zp = np.rint(np.clip(qmin - lo / float(scale), qmin, qmax))
    return np.array(scale, np.float32), np.array(zp, dtype)


__all__ = [
    "METHODS",
    "Observation",
    "choose_range",
    "entropy_threshold",
    "observe",
    "percentile_threshold",
    "qparams",
    "run_values",
    "sample_batches",
]
