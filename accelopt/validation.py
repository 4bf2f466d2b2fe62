"""Accuracy validation: metrics, tolerances per pass family, the ``Validator`` and localization.

The reference is the original model run by its own runtime
(``Model.reference``: onnxruntime for ONNX input, torch for torch input),
computed once on the validation inputs (see ``accelopt.samples``). After each
pass the interpreter runs the new graph on the same inputs, batched, and the
outputs are compared with the reference and with the previous graph (whose
outputs are cached from the previous check).

Metrics: ``accelopt.metrics``; tolerances and their defaults per family:
``accelopt.tolerance`` (both re-exported here).

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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.errors import AccelOptError, FrontendError, InterpreterError, ValidationError
from accelopt.interpreter import Interpreter, release_memory
from accelopt.ir.graph import Graph, Node, Value
from accelopt.metrics import MAX_LOGIT_CLASSES, WORSE_IS_LARGER, compare, is_logits, pooled, row_cosines, summarize
from accelopt.model import Model
from accelopt.model_checks import check_finite_outputs
from accelopt.records import AccuracyRecord, Localization
from accelopt.samples import SampleSet, default_samples
from accelopt.tolerance import (
    DEFAULT_TOLERANCES,
    EXACT_FAMILIES,
    TOLERANCE_KEYS,
    fmt_number,
    format_tolerance,
    loosest,
    parse_tolerance,
    tightest,
    tolerance_for,
    violations,
)

if TYPE_CHECKING:
    from accelopt.validation_local import LocalOutcome

__all__ = [
    "DEFAULT_TOLERANCES",
    "EXACT_FAMILIES",
    "MAX_LOGIT_CLASSES",
    "TOLERANCE_KEYS",
    "WORSE_IS_LARGER",
    "ValidationConfig",
    "Validator",
    "compare",
    "format_tolerance",
    "graph_fingerprint",
    "is_logits",
    "loosest",
    "parse_tolerance",
    "pooled",
    "row_cosines",
    "summarize",
    "tightest",
    "tolerance_for",
    "violations",
]

log = logging.getLogger(__name__)

#: free heap the validator leaves to the allocator after a run; beyond it, pages go back to the system
#: (a large model's run frees as much as its working set: kept, it would add to every later peak)
KEEP_FREE_HEAP = 256 << 20
#: models with this many bytes of weights or more run ``ValidationConfig.micro_batch`` samples at a time
MICRO_BATCH_BYTES = 256 << 20


# ------------------------------------------------------------------ validator
@dataclass
class ValidationConfig:
    """Options of a validation run.

    ``batch``: samples per interpreter run; ``None`` runs all samples at once
    (or in chunks of a static batch dimension), except for a model with
    ``MICRO_BATCH_BYTES`` of weights or more, which runs ``micro_batch``
    samples at a time, as do local sweeps (``check_chain``), which hold more
    values alive than a plain run. ``local``: let the pass manager check
    exact rewrites locally (``check_chain``) instead of running the whole new
    graph after each.
    ``localize_samples``: samples used to look for the first diverging node.
    """

    num_samples: int = 32
    seq_len: int = 128
    batch: int | None = None
    seed: int = 0
    tolerance: dict[str, float] | None = None
    localize_samples: int = 4
    micro_batch: int = 8
    local: bool = True


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


@dataclass
class _Cached:
    """Outputs of a graph, with what its fingerprint hashed by identity: attribute maps held,
    constants only watched (weak references), so a cached graph does not keep its weights alive."""

    outputs: list[np.ndarray]
    held: list[Any]
    watched: list[weakref.ref[Any]]

    @classmethod
    def of(cls, outputs: list[np.ndarray], keep: list[Any]) -> _Cached:
        arrays = [k for k in keep if isinstance(k, np.ndarray)]
        return cls(outputs, [k for k in keep if not isinstance(k, np.ndarray)], [weakref.ref(a) for a in arrays])

    def alive(self) -> bool:
        return all(r() is not None for r in self.watched)


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
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._last_family = "test"
        self.progress = progress
        self.reference_seconds = 0.0
        self.runs = 0
        self.output_names = list(model.output_names)
        self.original_graph = model.graph

    # ----------------------------------------------------------------- inputs
    @property
    def local(self) -> bool:
        """Whether the pass manager may check exact rewrites locally (``check_chain``)."""
        return self.config.local

    @property
    def num_samples(self) -> int:
        return self.samples.num_samples

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

    @staticmethod
    def _static_batch(graph: Graph) -> bool:
        return any(v.shape and isinstance(v.shape[0], int) for v in graph.inputs)

    def _chunk(self, graph: Graph) -> int | None:
        """Samples per run: a static batch dimension, else ``batch``, else ``micro_batch`` for a model
        with ``MICRO_BATCH_BYTES`` of weights or more (smaller working sets), else all at once."""
        static = [v.shape[0] for v in graph.inputs if v.shape and isinstance(v.shape[0], int)]
        if static:
            return int(static[0])
        if self.config.batch is not None:
            return self.config.batch
        if sum(graph.parameter_bytes().values()) >= MICRO_BATCH_BYTES:
            return self.config.micro_batch
        return None

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
                release = getattr(self.model.reference_fn, "release", None)
                if callable(release):  # the runtime's copy of the weights is not needed any more
                    release()
                    release_memory()
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
        hit = self._recall(key)
        if hit is not None:
            return hit
        self._say(f"running {graph.name} on {self.samples.num_samples} samples")
        outs = self._run_batched(_output_runner(graph), graph, self.samples)
        self.runs += 1
        self._remember(key, keep, outs)
        release_memory(KEEP_FREE_HEAP)
        return outs

    def precheck(self, graph: Graph) -> None:
        """Whether ``graph`` runs on the validation inputs, cheaply: a model run in chunks of a static
        batch or ``batch`` runs its first chunk only, as ``outputs`` would batch it, and a large model
        (micro-batches, any batch size) its first sample; the full run comes later (cached). Others run
        in full (``outputs``, cached). Then the reference outputs are computed (once). Raises
        ``InterpreterError`` when a node fails, ``FrontendError`` when the reference runtime refuses
        the model or its outputs are not finite.
        """
        chunk = self._chunk(graph)
        samples = self.samples
        if chunk is None or chunk >= samples.num_samples:
            self.outputs(graph)
        else:
            if not self._static_batch(graph) and self.config.batch is None:
                chunk = 1  # micro-batches: the batch size is free, one sample shows that every node runs
            first = "sample" if chunk == 1 else f"{chunk} samples"
            self._say(f"checking that {graph.name} runs on the first {first} of {samples.num_samples}")
            self._run_batched(_output_runner(graph), graph, samples.take(chunk), chunk)
            release_memory(KEEP_FREE_HEAP)
        self.reference_outputs()

    def _recall(self, key: str) -> list[np.ndarray] | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if not hit.alive():  # a constant it hashed by identity is gone: the key may name another graph
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return hit.outputs

    def _remember(self, key: str, keep: list[Any], outs: list[np.ndarray]) -> None:
        self._cache[key] = _Cached.of(outs, keep)
        while len(self._cache) > 3:
            self._cache.popitem(last=False)

    def check_chain(self, graphs: Sequence[Graph], families: Sequence[str]) -> list[LocalOutcome]:
        """Check each pass of ``graphs[0] -> graphs[1] -> ...`` locally (``accelopt.validation_local``):
        one run of ``graphs[0]`` plus the rewritten nodes, ``micro_batch`` samples at a time.

        Returns one ``LocalOutcome`` per pass (``families[k]`` picks the tolerance of pass
        ``k + 1``); its ``problem`` says when a pass cannot be checked locally. ``graphs[0]``'s
        outputs are cached as by ``outputs``. Raises ``InterpreterError`` when a node fails.
        """
        from accelopt.validation_local import LocalSweep

        t0 = time.perf_counter()
        sweep = LocalSweep(graphs)
        self._say(f"checking {len(graphs) - 1} pass(es) locally on {self.samples.num_samples} samples")
        chunk = self._chunk(graphs[0]) if self._static_batch(graphs[0]) else self.config.micro_batch
        outs = self._run_batched(sweep.run, graphs[0], self.samples, chunk)
        self.runs += 1
        results = [sweep.outcome(k, self.tolerance_for(f)) for k, f in enumerate(families, 1)]
        tasks = sweep.tasks
        del sweep
        release_memory(KEEP_FREE_HEAP)
        key, keep = graph_fingerprint(graphs[0])
        self._remember(key, keep, outs)
        if families:
            self._last_family = families[-1]
        log.debug("local sweep: %d passes, %d rewritten nodes run, %.2f s", len(families), tasks, time.perf_counter() - t0)
        return results

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

    def check(
        self,
        graph: Graph,
        *,
        family: str,
        previous: Graph | None = None,
        tolerance: Mapping[str, float] | None = None,
    ) -> AccuracyRecord:
        """Judge ``graph`` (the result of a pass of ``family``); see "How a pass is judged" above.

        ``tolerance`` replaces the family's (with the user's overrides) for the
        comparison with ``previous``. Raises ``InterpreterError`` when the
        graph cannot run on the inputs.
        """
        self._last_family = family
        tol = dict(tolerance) if tolerance is not None else self.tolerance_for(family)
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


def _output_runner(graph: Graph) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """A function running ``graph`` in the interpreter on one batch: its outputs in output order (one
    run per batch, whatever the number of outputs)."""
    interp = Interpreter(graph)
    names = [v.name for v in graph.outputs]

    def run(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = interp.run(batch)
        return [res[k] for k in names]

    return run


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
            f"max abs error {fmt_number(max_abs)} (relative to scale {fmt_number(scale)}: {fmt_number(max_abs / scale)} > {tol['max_abs']:g})",
        )
    if "cosine" in tol:
        rows_x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        rows_y = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
        cmin = float(row_cosines(rows_x, rows_y).min())
        if cmin < tol["cosine"]:
            return (
                "cosine_min",
                cmin,
                f"worst row cosine {fmt_number(cmin)} < {tol['cosine']:g} (max abs error {fmt_number(max_abs)})",
            )
    return None
