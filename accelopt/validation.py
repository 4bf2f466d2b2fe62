"""Accuracy validation: metrics, tolerances per pass family, the ``Validator`` and localization.

The reference is the original model run by its own runtime
(``Model.reference``: onnxruntime for ONNX input, torch for torch input),
computed once on the validation inputs (see ``accelopt.samples``). After each
pass the interpreter runs the new graph on the same inputs, batched, and the
outputs are compared with the reference and with the previous graph (whose
outputs are cached from the previous check).

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

How a pass is judged (``Validator.check``):

1. its own damage: the metrics of the new graph against the previous graph
   must meet its family's tolerance (with the user's overrides);
2. the run's budget: when the user gave a tolerance, the new graph against the
   reference must meet the user's keys too.

The final graph is judged against the reference (``Validator.evaluate``) with
the user's tolerance, or else the loosest tolerance of the families whose
passes were kept (``final_tolerance``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.errors import AccelOptError, FrontendError, InterpreterError, ValidationError
from accelopt.interpreter import Interpreter
from accelopt.ir.graph import Graph, Node, Value
from accelopt.model import Model
from accelopt.model_checks import check_finite_outputs
from accelopt.records import AccuracyRecord, Localization
from accelopt.samples import SampleSet, default_samples
from accelopt.suggest import did_you_mean

log = logging.getLogger(__name__)

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

#: rank-2 outputs with at most this many columns are treated as logits
MAX_LOGIT_CLASSES = 32
#: pairwise similarity metrics only for up to this many embedding rows (one per sample; a [10**4, H] output
#: that is not per sample would need a 10**8-entry similarity matrix)
MAX_SIMILARITY_ROWS = 4096


# ---------------------------------------------------------------- tolerances
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
            out.append(f"{metric} {_fmt(val)} {op} {bound:g} vs {against}{on}")
    return out


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.3e}"
    return f"{x:.6g}"


# ------------------------------------------------------------------- metrics
def _rows(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Vectors along the last axis; with a [N, S] mask matching the leading dims, valid tokens only."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    if mask is not None and a.ndim >= 3 and a.shape[:2] == mask.shape:
        return a[mask.astype(bool)].reshape(-1, a.shape[-1])
    return a.reshape(-1, a.shape[-1])


def _cosines(x: np.ndarray, y: np.ndarray) -> np.ndarray:
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
        cos = _cosines(rr, nr if all_finite else np.nan_to_num(nr, nan=0.0, posinf=0.0, neginf=0.0))
        out["cosine_min"] = float(cos.min())
        out["cosine_mean"] = float(cos.mean())
    if is_logits(name, r.shape) and r.ndim >= 1:
        out["argmax_agreement"] = float(np.mean(np.argmax(rr, axis=-1) == np.argmax(nr, axis=-1)))
    else:
        pr, pn = pooled(r, mask), pooled(n, mask)
        if pr is not None and pn is not None and pr.shape[0] >= 2 and np.all(np.isfinite(pn)):
            out["pooled_cosine_min"] = float(_cosines(pr, pn).min())
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


# ------------------------------------------------------------------ validator
@dataclass
class ValidationConfig:
    """Options of a validation run.

    ``batch``: samples per interpreter run; ``None`` runs all samples at once
    (or in chunks of a static batch dimension). ``localize_samples``: samples
    used to look for the first diverging node.
    """

    num_samples: int = 32
    seq_len: int = 128
    batch: int | None = None
    seed: int = 0
    tolerance: dict[str, float] | None = None
    localize_samples: int = 4


def graph_fingerprint(graph: Graph) -> tuple[str, list[Any]]:
    """A structural hash of ``graph`` and the objects it hashed by identity (keep them alive with the hash).

    Constants and attribute maps are immutable, so their identity stands for
    their content; names, ops, types and wiring are hashed as text.
    """
    h = hashlib.sha1()
    keep: list[Any] = []
    for v in graph.inputs:
        h.update(f"i {v.name} {v.type}\n".encode())
    for name, v in graph.initializers.items():
        h.update(f"c {name} {v.type} {id(v.const)}\n".encode())
        keep.append(v.const)
    for n in graph.nodes:
        ins = ",".join("" if x is None else x.name for x in n.inputs)
        outs = ",".join(f"{o.name}:{o.type}" for o in n.outputs)
        h.update(f"n {n.op} {ins} {outs} {id(n.attrs)}\n".encode())
        keep.append(n.attrs)
    h.update(("o " + ",".join(v.name for v in graph.outputs)).encode())
    return h.hexdigest(), keep


class Validator:
    """Checks graphs against the original model on fixed inputs (see the module docstring).

    ``model`` supplies the reference runtime and the tokenizer; ``samples``
    (a ``SampleSet``) overrides the built-in inputs. ``progress`` (optional)
    is called with a short description while long runs happen.
    """

    def __init__(
        self,
        model: Model,
        config: ValidationConfig | None = None,
        samples: SampleSet | None = None,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config or ValidationConfig()
        self.overrides = dict(self.config.tolerance or {})
        self._samples = samples
        self._reference: list[np.ndarray] | None = None
        self._cache: OrderedDict[str, tuple[list[np.ndarray], list[Any]]] = OrderedDict()
        self._last_family = "test"
        self.progress = progress
        self.reference_seconds = 0.0
        self.runs = 0
        self.output_names = list(model.output_names)
        self.original_graph = model.graph

    # ----------------------------------------------------------------- inputs
    @property
    def samples(self) -> SampleSet:
        if self._samples is None:
            c = self.config
            self._samples = default_samples(
                self.original_graph, self.model.tokenizer, n=c.num_samples, seq_len=c.seq_len, seed=c.seed
            )
        return self._samples

    @property
    def reference_runtime(self) -> str:
        if self.model.reference_fn is None:
            return "accelopt interpreter (no original runtime)"
        return {"onnx": "onnxruntime", "torch": "torch", "huggingface": "torch"}.get(self.model.kind, self.model.kind)

    def _chunk(self, graph: Graph) -> int | None:
        static = [v.shape[0] for v in graph.inputs if v.shape and isinstance(v.shape[0], int)]
        if static:
            return int(static[0])
        return self.config.batch

    def _run_batched(
        self,
        fn: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        graph: Graph,
        samples: SampleSet,
        chunk: int | None = None,
    ) -> list[np.ndarray]:
        chunk = chunk or self._chunk(graph)
        n = samples.num_samples
        parts: list[list[np.ndarray]] = []
        for batch in samples.batches(chunk):
            rows = next(iter(batch.values())).shape[0] if batch else 0
            pad = (chunk - rows) if chunk and rows < chunk else 0
            if pad:
                batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
            outs = fn(batch)
            if pad:
                outs = [o[:rows] if o.ndim and o.shape[0] == rows + pad else o for o in outs]
            parts.append(outs)
        if len(parts) == 1:
            return parts[0]
        merged = []
        for i in range(len(parts[0])):
            pieces = [p[i] for p in parts]
            if all(p.ndim >= 1 for p in pieces) and sum(p.shape[0] for p in pieces) == n:
                merged.append(np.concatenate(pieces, axis=0))
            else:
                merged.append(np.stack(pieces))
        return merged

    # ---------------------------------------------------------------- outputs
    def reference_outputs(self) -> list[np.ndarray]:
        """The original model's outputs on the validation inputs (computed once)."""
        if self._reference is None:
            t0 = time.perf_counter()
            self._say("computing the reference outputs")
            samples = self.samples
            if self.model.reference_fn is not None:
                names = self.output_names

                def ref(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
                    try:
                        res = self.model.reference(batch)
                    except AccelOptError:
                        raise
                    except Exception as e:  # the runtime refused the model or these inputs: the model's problem
                        raise FrontendError(
                            f"{self.model.source}: the original model does not run in {self.reference_runtime} "
                            f"on the validation inputs: {type(e).__name__}: {' '.join(str(e).split())}",
                            hint="check --seq-len and --batch against what the model takes",
                        ) from e
                    try:
                        return [np.asarray(res[k]) for k in names]
                    except KeyError as e:
                        raise ValidationError(
                            f"the reference runtime of {self.model.source!r} returned {sorted(res)}, expected {names}"
                        ) from e

                self._reference = self._run_batched(ref, self.original_graph, samples)
            else:
                self._reference = self.outputs(self.original_graph)
            check_finite_outputs(
                self._reference,
                self.output_names,
                self.original_graph,
                source=self.model.source,
                runtime=self.reference_runtime,
            )
            self.reference_seconds = time.perf_counter() - t0
        return self._reference

    def outputs(self, graph: Graph) -> list[np.ndarray]:
        """``graph``'s outputs on the validation inputs, in output order (cached by graph fingerprint)."""
        key, keep = graph_fingerprint(graph)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        self._say(f"running {graph.name} on {self.samples.num_samples} samples")
        interp = Interpreter(graph)
        names = [v.name for v in graph.outputs]

        def run(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
            res = interp.run(batch)
            return [res[k] for k in names]

        outs = self._run_batched(run, graph, self.samples)
        self.runs += 1
        self._cache[key] = (outs, keep)
        while len(self._cache) > 3:
            self._cache.popitem(last=False)
        return outs

    def _say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)
        log.debug(msg)

    # ----------------------------------------------------------------- metrics
    def _per_output(self, ref: Sequence[np.ndarray], new: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
        if len(ref) != len(new):
            raise ValidationError(f"the graph has {len(new)} outputs, the reference {len(ref)}")
        mask = self.samples.mask
        return {name: compare(r, n, name=name, mask=mask) for name, r, n in zip(self.output_names, ref, new)}

    def _measure(
        self, ref: Sequence[np.ndarray], outputs: Sequence[np.ndarray], tol: dict[str, float]
    ) -> tuple[AccuracyRecord, dict[str, str]]:
        """``outputs`` against the reference outputs ``ref``: a record with ``vs_reference`` and
        ``per_output`` filled but not judged yet, and which output each metric is worst on; when
        the output counts differ, a failed record and no metrics."""
        if len(outputs) != len(ref):
            msg = f"the graph has {len(outputs)} outputs, the reference {len(ref)}"
            return AccuracyRecord(tolerance=tol, ok=False, failures=[msg]), {}
        per_ref = self._per_output(ref, outputs)
        vs_ref, where = summarize(per_ref)
        return AccuracyRecord(vs_reference=vs_ref, per_output=per_ref, tolerance=tol), where

    def tolerance_for(self, family: str) -> dict[str, float]:
        return tolerance_for(family, self.overrides)

    def final_tolerance(self, families: Iterable[str]) -> dict[str, float]:
        """The tolerance the final graph must meet: the user's, else the loosest of the kept families'."""
        if self.overrides:
            return dict(self.overrides)
        fams = sorted(set(families)) or ["cleanup"]
        return loosest([tolerance_for(f) for f in fams])

    def check(self, graph: Graph, *, family: str, previous: Graph | None = None) -> AccuracyRecord:
        """Judge ``graph`` (the result of a pass of ``family``); see "How a pass is judged" above.

        Raises ``InterpreterError`` when the graph cannot run on the inputs.
        """
        self._last_family = family
        tol = self.tolerance_for(family)
        ref = self.reference_outputs()
        new = self.outputs(graph)
        rec, where_ref = self._measure(ref, new, tol)
        if not rec.ok:
            return rec
        vs_ref = rec.vs_reference
        if previous is not None:
            prev = self.outputs(previous)
            vs_prev, where_prev = summarize(self._per_output(prev, new))
            rec.vs_previous = vs_prev
            rec.failures = violations(vs_prev, tol, against="previous", where=where_prev)
        else:
            rec.failures = violations(vs_ref, tol, against="reference", where=where_ref)
        if self.overrides and previous is not None:
            rec.failures += violations(vs_ref, self.overrides, against="reference", where=where_ref)
        rec.ok = not rec.failures
        return rec

    def evaluate(self, graph: Graph, tolerance: Mapping[str, float] | None = None) -> AccuracyRecord:
        """``graph`` against the reference only, judged by ``tolerance`` (none: always ok)."""
        return self.evaluate_outputs(self.outputs(graph), tolerance)

    def evaluate_outputs(
        self,
        outputs: Sequence[np.ndarray],
        tolerance: Mapping[str, float] | None = None,
        *,
        previous: Graph | None = None,
    ) -> AccuracyRecord:
        """Outputs computed elsewhere (e.g. by a target's artifact, see ``run_inputs``) against the reference.

        Judged against the reference with ``tolerance``; ``previous`` adds the
        metrics against that graph's outputs (not judged).
        """
        tol = dict(tolerance or {})
        rec, where = self._measure(self.reference_outputs(), outputs, tol)
        if not rec.ok:
            return rec
        if previous is not None:
            rec.vs_previous, _ = summarize(self._per_output(self.outputs(previous), outputs))
        rec.failures = violations(rec.vs_reference, tol, against="reference", where=where)
        rec.ok = not rec.failures
        return rec

    def run_inputs(
        self, fn: Callable[[dict[str, np.ndarray]], list[np.ndarray]], graph: Graph, *, batch: int | None = None
    ) -> list[np.ndarray]:
        """Call ``fn`` on the validation inputs in chunks of ``batch`` samples (default: as for ``graph``;
        a short last chunk is padded by repeating its last sample); outputs concatenated along axis 0."""
        return self._run_batched(fn, graph, self.samples, batch)

    # ------------------------------------------------------------ localization
    def localize(self, old: Graph, new: Graph, *, family: str | None = None) -> Localization | None:
        """The first node of ``new`` (in topological order) whose output diverges from ``old`` beyond tolerance.

        Both graphs run on the first ``localize_samples`` samples keeping every
        intermediate value. A value of ``new`` is matched to one of ``old``:
        1. by name; 2. else through provenance: the output at the same index
        of the origin node that comes last in ``old``; values with no match, or
        whose shapes differ, are skipped. A value diverges when its largest
        difference relative to ``max(1, max|old|)`` exceeds ``max_abs``, when
        its worst row cosine is below ``cosine``, or, for integers, when any
        element differs. If no matched intermediate diverges, the first graph
        output that does is named. ``None`` when nothing diverges.
        """
        tol = tolerance_for(family or self._last_family, self.overrides)
        samples = self.samples.take(max(1, self.config.localize_samples))
        try:
            old_vals = self._run_all(old, samples)
            new_vals = self._run_all(new, samples)
        except InterpreterError as e:
            log.info("localization skipped: %s", e)
            return None
        old_nodes = {n.name: (i, n) for i, n in enumerate(old.nodes)}
        old_names = {v.name for v in old.values()}
        for node in new.nodes:
            for i, out in enumerate(node.outputs):
                match, how = self._match(out, node, i, old_names, old_nodes)
                if match is None or match not in old_vals or out.name not in new_vals:
                    continue
                a, b = old_vals[match], new_vals[out.name]
                if a.shape != b.shape:
                    continue
                hit = _diverges(a, b, tol)
                if hit is not None:
                    metric, err, detail = hit
                    return Localization(
                        node=node.name,
                        op=node.op,
                        value=out.name,
                        metric=metric,
                        error=err,
                        detail=f"{detail}; compared with %{match} of the previous graph (matched by {how})",
                    )
        for i, v in enumerate(new.outputs):
            if i >= len(old.outputs) or v.name not in new_vals or old.outputs[i].name not in old_vals:
                continue
            a, b = old_vals[old.outputs[i].name], new_vals[v.name]
            hit = (
                _diverges(a, b, tol)
                if a.shape == b.shape
                else ("shape", math.inf, f"shape {list(b.shape)} != {list(a.shape)}")
            )
            if hit is not None:
                prod = v.producer
                metric, err, detail = hit
                return Localization(
                    node=prod.name if prod else v.name,
                    op=prod.op if prod else "input",
                    value=v.name,
                    metric=metric,
                    error=err,
                    detail=f"{detail}; graph output {i} (no matched intermediate value diverged first)",
                )
        return None

    def _run_all(self, graph: Graph, samples: SampleSet) -> dict[str, np.ndarray]:
        interp = Interpreter(graph)
        chunk = self._chunk(graph)
        batch = next(samples.batches(chunk))
        rows = next(iter(batch.values())).shape[0]
        if chunk and rows < chunk:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], chunk - rows, axis=0)]) for k, v in batch.items()}
        return interp.run(batch, keep_intermediates=True)

    @staticmethod
    def _match(
        out: Value, node: Node, index: int, old_names: set[str], old_nodes: Mapping[str, tuple[int, Node]]
    ) -> tuple[str | None, str]:
        if out.name in old_names:
            return out.name, "name"
        origins = [old_nodes[o] for o in node.provenance.origins if o in old_nodes]
        if origins:
            _, last = max(origins, key=lambda t: t[0])
            if index < len(last.outputs):
                return last.outputs[index].name, f"provenance (origin {last.name})"
        return None, ""


def _diverges(a: np.ndarray, b: np.ndarray, tol: Mapping[str, float]) -> tuple[str, float, str] | None:
    """(metric, error, detail) when ``b`` diverges from ``a`` beyond ``tol``; see ``Validator.localize``."""
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        bad = int(np.count_nonzero(a != b))
        if bad:
            err = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
            return "max_abs", err, f"{bad} of {a.size} integer elements differ"
        return None
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0:
        return None
    finite = np.isfinite(x)
    if not np.all(np.isfinite(y) | ~finite):
        return "max_abs", math.nan, "non-finite values where the previous graph had finite ones"
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.where(finite, y - x, 0.0))
    max_abs = float(d.max())
    scale = max(1.0, float(np.abs(np.where(finite, x, 0.0)).max()))
    if "max_abs" in tol and max_abs / scale > tol["max_abs"]:
        return (
            "max_abs",
            max_abs,
            f"max abs error {_fmt(max_abs)} (relative to scale {_fmt(scale)}: {_fmt(max_abs / scale)} > {tol['max_abs']:g})",
        )
    if "cosine" in tol:
        rows_x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        rows_y = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
        cmin = float(_cosines(rows_x, rows_y).min())
        if cmin < tol["cosine"]:
            return (
                "cosine_min",
                cmin,
                f"worst row cosine {_fmt(cmin)} < {tol['cosine']:g} (max abs error {_fmt(max_abs)})",
            )
    return None
