"""Accuracy metrics: how far a graph's outputs are from reference outputs.

Metrics per output (rows are the vectors along the last axis; padded tokens
are left out when an attention mask is known):

``max_abs``, ``mean_abs``
    largest and mean absolute difference;
``rel_l2``
    ``||new - ref|| / ||ref||``;
``cosine_min``, ``cosine_mean``
    worst and mean cosine similarity of the rows;
``argmax_agreement``
    share of rows with the same argmax (logits-like outputs: the name holds
    ``logit``, or a rank-2 output with at most 32 classes);
``pooled_cosine_min``, ``similarity_spearman``, ``similarity_max_abs``
    for embedding outputs (token states ``[N, S, H]`` mean-pooled over the
    mask, or sentence embeddings ``[N, H]``): the worst cosine of the pooled
    embeddings, the Spearman correlation of the pairwise cosine-similarity
    matrices (upper triangle), and the largest change of a pairwise
    similarity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: metric -> True when larger is worse
WORSE_IS_LARGER: dict[str, bool] = {
    "max_abs": True,
    "mean_abs": True,
    "rel_l2": True,
    "cosine_min": False,
    "cosine_mean": False,
    "argmax_agreement": False,
    "pooled_cosine_min": False,
    "similarity_spearman": False,
    "similarity_max_abs": True,
}

#: rank-2 outputs with at most this many columns are treated as logits
MAX_LOGIT_CLASSES = 32
#: pairwise similarity metrics only for up to this many embedding rows (one per sample; a [10**4, H] output
#: that is not per sample would need a 10**8-entry similarity matrix)
MAX_SIMILARITY_ROWS = 4096


def _rows(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Vectors along the last axis; with a [N, S] mask matching the leading dims, valid tokens only."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    if mask is not None and a.ndim >= 3 and a.shape[:2] == mask.shape:
        return a[mask.astype(bool)].reshape(-1, a.shape[-1])
    return a.reshape(-1, a.shape[-1])


def row_cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair of two [N, D] arrays (two zero rows: 1; one zero row: 0)."""
    nx = np.linalg.norm(x, axis=-1)
    ny = np.linalg.norm(y, axis=-1)
    dot = np.einsum("ij,ij->i", x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (nx * ny)
    tiny = 1e-30
    both_zero = (nx <= tiny) & (ny <= tiny)
    one_zero = (nx <= tiny) ^ (ny <= tiny)
    cos = np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def is_logits(name: str, shape: tuple[int, ...]) -> bool:
    return "logit" in name.lower() or (len(shape) == 2 and 1 < shape[-1] <= MAX_LOGIT_CLASSES)


def pooled(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Sentence embeddings: mask-aware mean pooling of [N, S, H] token states, or [N, H] as is."""
    if a.ndim == 3:
        if mask is not None and mask.shape == a.shape[:2]:
            m = mask.astype(np.float64)[:, :, None]
            return (a * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return a.mean(axis=1)
    if a.ndim == 2 and a.shape[-1] > MAX_LOGIT_CLASSES:
        return a
    return None


def _similarity(e: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(e, axis=1, keepdims=True)
    u = e / np.maximum(n, 1e-30)
    return u @ u.T


def compare(ref: np.ndarray, new: np.ndarray, *, name: str = "", mask: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of ``new`` against ``ref`` (see the module docstring).

    Cases: 1. shapes differ: worst values for every metric (``max_abs=inf``,
    cosines -1); 2. NaN/inf in ``new`` where ``ref`` is finite: ``max_abs``
    becomes NaN, which fails every bound; 3. otherwise the metrics, plus the
    logits and embedding metrics where they apply.
    """
    if ref.shape != new.shape:
        return {"max_abs": math.inf, "mean_abs": math.inf, "rel_l2": math.inf, "cosine_min": -1.0, "cosine_mean": -1.0}
    r = np.asarray(ref, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    if r.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0, "cosine_min": 1.0, "cosine_mean": 1.0}
    all_finite = bool(np.isfinite(n).all())
    with np.errstate(invalid="ignore", over="ignore"):
        delta = n - r
    diff = np.abs(delta)
    if not all_finite and not np.all(np.isfinite(n) | ~np.isfinite(r)):
        max_abs = math.nan
    else:
        max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    out: dict[str, float] = {"max_abs": max_abs, "mean_abs": float(np.nanmean(diff))}
    rn = float(np.linalg.norm(r))
    dn = float(np.linalg.norm(delta if all_finite else np.nan_to_num(delta, nan=np.inf)))
    out["rel_l2"] = dn / rn if rn > 0 else (0.0 if dn == 0 else math.inf)
    rr, nr = _rows(r, mask), _rows(n, mask)
    if rr.size:
        cos = row_cosines(rr, nr if all_finite else np.nan_to_num(nr, nan=0.0, posinf=0.0, neginf=0.0))
        out["cosine_min"] = float(cos.min())
        out["cosine_mean"] = float(cos.mean())
    if is_logits(name, r.shape) and r.ndim >= 1:
        out["argmax_agreement"] = float(np.mean(np.argmax(rr, axis=-1) == np.argmax(nr, axis=-1)))
    else:
        pr, pn = pooled(r, mask), pooled(n, mask)
        if pr is not None and pn is not None and pr.shape[0] >= 2 and np.all(np.isfinite(pn)):
            out["pooled_cosine_min"] = float(row_cosines(pr, pn).min())
        if pr is not None and pn is not None and 2 <= pr.shape[0] <= MAX_SIMILARITY_ROWS and np.all(np.isfinite(pn)):
            sr, sn = _similarity(pr), _similarity(pn)
            iu = np.triu_indices(pr.shape[0], k=1)
            out["similarity_max_abs"] = float(np.abs(sr[iu] - sn[iu]).max())
            if pr.shape[0] >= 3:
                out["similarity_spearman"] = _spearman(sr[iu], sn[iu])
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # one side constant: no rank agreement (and no scipy warning)
        return 0.0
    rho = spearmanr(a, b).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def summarize(per_output: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, float], dict[str, str]]:
    """Worst value of each metric over all outputs, and which output it came from."""
    summary: dict[str, float] = {}
    where: dict[str, str] = {}
    for name, metrics in per_output.items():
        for m, v in metrics.items():
            larger_worse = WORSE_IS_LARGER.get(m, True)
            cur = summary.get(m)
            if cur is None or math.isnan(v) or (not math.isnan(cur) and (v > cur if larger_worse else v < cur)):
                summary[m] = v
                where[m] = name
    return summary, where
