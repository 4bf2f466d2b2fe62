"""Tolerances: the keys a tolerance bounds, the defaults per pass family, parsing and combining them.

Tolerances (``DEFAULT_TOLERANCES``; user overrides replace keys in every
family, e.g. ``cosine=0.995,max_abs=1e-3``). Keys and the metric each bounds:

=================  ======================  =====
key                metric                  bound
=================  ======================  =====
``max_abs``        ``max_abs``             upper
``mean_abs``       ``mean_abs``            upper
``rel_l2``         ``rel_l2``              upper
``cosine``         ``cosine_min``          lower
``cosine_mean``    ``cosine_mean``         lower
``argmax``         ``argmax_agreement``    lower
``pooled_cosine``  ``pooled_cosine_min``   lower
``spearman``       ``similarity_spearman`` lower
``similarity``     ``similarity_max_abs``  upper
=================  ======================  =====

Defaults: cleanup, fusion, layout (exact rewrites) and test passes:
``max_abs=1e-4, cosine=0.99999``; approximation: ``cosine=0.9999``;
quantization: ``cosine=0.99``; precision (fp16/bf16): ``cosine=0.999``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from accelopt.errors import ValidationError
from accelopt.suggest import did_you_mean

#: tolerance key -> (metric, "max" for an upper bound / "min" for a lower bound)
TOLERANCE_KEYS: dict[str, tuple[str, str]] = {
    "max_abs": ("max_abs", "max"),
    "mean_abs": ("mean_abs", "max"),
    "rel_l2": ("rel_l2", "max"),
    "cosine": ("cosine_min", "min"),
    "cosine_mean": ("cosine_mean", "min"),
    "argmax": ("argmax_agreement", "min"),
    "pooled_cosine": ("pooled_cosine_min", "min"),
    "spearman": ("similarity_spearman", "min"),
    "similarity": ("similarity_max_abs", "max"),
}

_TIGHT = {"max_abs": 1e-4, "cosine": 0.99999}

#: documented default tolerances per pass family
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "cleanup": dict(_TIGHT),
    "fusion": dict(_TIGHT),
    "layout": dict(_TIGHT),
    "test": dict(_TIGHT),
    "approximation": {"cosine": 0.9999},
    "quantization": {"cosine": 0.99},
    "precision": {"cosine": 0.999},
}

#: families whose passes rewrite exactly (tight default tolerance): the pass manager checks them locally
EXACT_FAMILIES = frozenset({"cleanup", "fusion", "layout", "test"})


def parse_tolerance(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"cosine=0.995,max_abs=1e-3"`` (or a dict) -> ``{"cosine": 0.995, "max_abs": 0.001}``.

    Raises ``ValidationError``: 1. an unknown key (naming the known keys and the
    closest one); 2. a key given twice; 3. a value that is not a finite number;
    4. a value out of range (error bounds >= 0, cosine/correlation bounds in
    [-1, 1], argmax agreement in [0, 1]).
    """
    if spec is None:
        return {}
    items: Iterable[tuple[str, Any]]
    if isinstance(spec, str):
        pairs = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise ValidationError(f"bad tolerance {part!r} in {spec!r}: expected key=value (e.g. cosine=0.995)")
            key, value = (s.strip() for s in part.split("=", 1))
            pairs.append((key, value))
        items = pairs
    else:
        items = spec.items()
    out: dict[str, float] = {}
    for k, v in items:
        if k not in TOLERANCE_KEYS:
            guess = did_you_mean(str(k), TOLERANCE_KEYS)
            raise ValidationError(f"unknown tolerance {k!r}{guess}; known: {', '.join(TOLERANCE_KEYS)}")
        if k in out:
            raise ValidationError(f"tolerance {k!r} is given twice")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValidationError(f"tolerance {k}={v!r} is not a number") from None
        if not math.isfinite(f):
            raise ValidationError(f"tolerance {k}={v!r} is not finite")
        lo, hi = _TOLERANCE_RANGE.get(k, (-1.0, 1.0) if TOLERANCE_KEYS[k][1] == "min" else (0.0, math.inf))
        if not lo <= f <= hi:
            what = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f"at least {lo:g}"
            raise ValidationError(f"tolerance {k}={v!r} is out of range: it must be {what}")
        out[k] = f
    return out


#: allowed values of bounds that are not an error size (>= 0) or a correlation in [-1, 1]
_TOLERANCE_RANGE: dict[str, tuple[float, float]] = {"argmax": (0.0, 1.0)}


def format_tolerance(tol: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in tol.items())


def tolerance_for(family: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The family's default tolerance with ``overrides`` replacing keys."""
    base = dict(DEFAULT_TOLERANCES.get(family, _TIGHT))
    base.update(overrides or {})
    return base


def loosest(tolerances: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise loosest of several tolerances; a key missing from any of them is unconstrained."""
    if not tolerances:
        return {}
    keys = set(tolerances[0])
    for t in tolerances[1:]:
        keys &= set(t)
    out = {}
    for k in keys:
        vals = [t[k] for t in tolerances]
        out[k] = max(vals) if TOLERANCE_KEYS[k][1] == "max" else min(vals)
    return {k: out[k] for k in TOLERANCE_KEYS if k in out}


def tightest(tolerances: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise tightest of several tolerances (every key any of them bounds)."""
    out: dict[str, float] = {}
    for t in tolerances:
        for k, v in t.items():
            if k not in out:
                out[k] = v
            else:
                out[k] = min(out[k], v) if TOLERANCE_KEYS[k][1] == "max" else max(out[k], v)
    return {k: out[k] for k in TOLERANCE_KEYS if k in out}


def violations(
    summary: Mapping[str, float], tol: Mapping[str, float], *, against: str, where: Mapping[str, str] | None = None
) -> list[str]:
    """Messages for every tolerance ``summary`` breaks ("max_abs 0.53 > 0.0001 vs previous on logits")."""
    out = []
    for key, bound in tol.items():
        metric, kind = TOLERANCE_KEYS[key]
        if metric not in summary:
            continue
        val = summary[metric]
        bad = math.isnan(val) or (val > bound if kind == "max" else val < bound)
        if bad:
            on = f" on {where[metric]}" if where and metric in where else ""
            op = ">" if kind == "max" else "<"
            out.append(f"{metric} {fmt_number(val)} {op} {bound:g} vs {against}{on}")
    return out


def fmt_number(x: float) -> str:
    """A metric value for messages: 6 significant digits, or scientific notation when tiny or huge."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.3e}"
    return f"{x:.6g}"
