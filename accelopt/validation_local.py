"""Local validation: check only what a pass rewrote, on real inputs, instead of rerunning the whole model.

A pass that rewrites a subgraph exactly (cleanup, fusion, layout) changes a few
regions of the graph and leaves every other node alone.
``accelopt.ir.diff.diff_graphs(old, new)`` finds them: the *region* (new
nodes without a counterpart) and the *pairs* (values of the two graphs that
must agree, where the region meets the unchanged nodes). If every pair agrees,
the new graph computes what the old one did: each unchanged node sees the same
inputs as before (by induction in topological order), so everything downstream
agrees too. The check compares the pairs.

Several passes in a row are checked in one sweep (``LocalSweep``): graphs
``G0 -> G1 -> ... -> GK``. Values are resolved backwards through the chain: a
value of ``Gk`` that computes the same as one of ``Gk-1`` is that value, down
to ``G0``, whose values come from one interpreter run of ``G0``; a value made by
a region node of pass ``k`` is computed by running that node on its (resolved)
inputs. So the sweep runs ``G0`` once plus each pass's rewritten nodes, never a
whole new graph, and compares each pair on the same inputs. The nodes of all
passes are scheduled into ``G0``'s run right after their inputs exist, so an
intermediate value lives only until its last reader: memory stays that of one
run of ``G0``. The samples go through in micro-batches; the comparison
statistics accumulate across them.

Work is shared: a rewritten node that computes what an already scheduled step
computes (the same op and attributes, defaults filled in, on the same slots;
commutative inputs in either order) reuses that step. Some fused ops run as the
ops that define them, each part shared the same way (``_definition``): a float
``Linear`` is ``act(Add(MatMul(x, W), b))`` and a float32 ``LayerNorm`` is ONNX
``LayerNormalization``. Rewriting an exported ``LayerNormalization`` then leaves
the values downstream the old graph's, so the FFN ``Linear`` that reads them is
the old graph's MatMul, Add and (already rewritten) Gelu, and a bias moved out
of a ``Linear`` (``SkipLayerNorm``) costs no second product (BERT-large, dynamo
export: of the 121 rewritten ``Linear`` nodes per micro-batch, 72 share the old
graph's products and 49 run). Such a pass is then checked on what it wired together, not
on how its kernel rounds: the fused kernels themselves run in the whole-model
checks around the sweep.

Per pair (``new`` against ``old``, elementwise): the largest error
``|new - old| / max(1, |old|)`` (absolute for values within [-1, 1], relative
beyond: a rewrite's rounding scales with the magnitude of what it computes, and
masks of -1e4 or -3.4e38 must not hide or fake errors), the absolute error, the
worst cosine of rows along the last axis, and for integer and boolean values
exact equality. Elements where ``old`` is not finite are skipped; a non-finite
``new`` where ``old`` is finite is an error (NaN). A pass passes when every
pair's error is within its family's ``max_abs`` and every row cosine at least
its ``cosine``; model-level metrics (argmax agreement, pooled embeddings...)
are checked by the whole-model runs the pass manager makes around local sweeps.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.interpreter import StepSpec, check_input, compile_plan, execute
from accelopt.ir.diff import Rewrite, diff_graphs
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value, attr_key
from accelopt.ir.registry import get_op
from accelopt.metrics import row_cosines
from accelopt.records import AccuracyRecord, Localization
from accelopt.tolerance import fmt_number

log = logging.getLogger(__name__)

#: float dtypes compared in their own precision (others are compared as float32)
_FAST = frozenset({np.dtype(np.float32), np.dtype(np.float64)})

#: elements per block of rows in a comparison (``PairStats._fast``)
_BLOCK_ELEMENTS = 1 << 18

#: the tolerance keys a local check can judge (the others bound model-level metrics)
LOCAL_KEYS = ("max_abs", "cosine")


class NotLocal(Exception):
    """A value of a rewritten graph that the sweep cannot produce (e.g. a graph input with no counterpart)."""


# --------------------------------------------------------------- statistics
@dataclass
class PairStats:
    """Agreement of one pair, accumulated over micro-batches (see the module docstring)."""

    new: str
    old: str
    node: str
    op: str
    max_err: float = 0.0
    max_abs: float = 0.0
    cosine_min: float = 1.0
    int_mismatches: int = 0
    elements: int = 0
    shape: str = ""  # set when the shapes differ

    def update(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        if a is None or b is None:
            self.shape = "missing value"
            return
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            self.shape = f"shape {list(a.shape)} != {list(b.shape)}"
            return
        self.elements += a.size
        if a.size == 0:
            return
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":
            bad = int(np.count_nonzero(a != b))
            if bad:
                self.int_mismatches += bad
                diff = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
                self.max_err = max(self.max_err, diff)
                self.max_abs = max(self.max_abs, diff)
            return
        if a.dtype not in _FAST or b.dtype != a.dtype:
            a, b = a.astype(np.float32), b.astype(np.float32)
        if a.ndim == 0:  # a scalar: no rows to compare by cosine
            a, b = a.reshape(1), b.reshape(1)
            rows = False
        else:
            rows = True
        if not self._fast(a, b, rows):
            self._careful(a, b, rows)

    def _fast(self, a: np.ndarray, b: np.ndarray, rows: bool) -> bool:
        """Both all finite (else False, nothing recorded): errors in the arrays' own precision, a block
        of rows at a time (``_BLOCK_ELEMENTS``: the temporaries stay in cache). Row cosines without
        cancellation, from sums of non-negative terms and one dot: with ``d = a - b``,
        ``|a| - |b| = sum(d * (a + b)) / (|a| + |b|)`` and
        ``1 - cos = (|d|^2 - (|a| - |b|)^2) / (2 |a| |b|)``."""
        n = a.shape[-1] if rows else a.size
        new, old = a.reshape(-1, n), b.reshape(-1, n)
        step = max(1, _BLOCK_ELEMENTS // max(n, 1))
        err = dmax = 0.0
        cos = 1.0
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for i in range(0, new.shape[0], step):
                x, y = new[i : i + step], old[i : i + step]
                d = np.subtract(x, y)
                ad = np.abs(d)
                m = float(ad.max())
                if not math.isfinite(m):  # an inf or NaN on either side (or an overflowing difference)
                    return False
                scaled = np.abs(y)
                np.maximum(scaled, 1.0, out=scaled)
                np.divide(ad, scaled, out=scaled)
                err, dmax = max(err, float(scaled.max())), max(dmax, m)
                if rows:
                    d2 = np.einsum("ij,ij->i", d, d).astype(np.float64)
                    nx = np.sqrt(np.einsum("ij,ij->i", x, x).astype(np.float64))
                    ny = np.sqrt(np.einsum("ij,ij->i", y, y).astype(np.float64))
                    np.add(x, y, out=ad)
                    gap = np.einsum("ij,ij->i", d, ad).astype(np.float64) / (nx + ny)
                    one_minus = (d2 - gap * gap) / (2.0 * nx * ny)
                    one_minus = np.where((nx == 0) & (ny == 0), 0.0, np.where((nx == 0) | (ny == 0), 1.0, one_minus))
                    cos = min(cos, float(np.clip(1.0 - one_minus, -1.0, 1.0).min()))
        self.max_err = max(self.max_err, err)
        self.max_abs = max(self.max_abs, dmax)
        self.cosine_min = min(self.cosine_min, cos)
        return True

    def _careful(self, a: np.ndarray, b: np.ndarray, rows: bool) -> None:
        """Non-finite values: elements where ``b`` is not finite are skipped; ``a`` not finite where
        ``b`` is makes the error NaN."""
        x = b.astype(np.float64)
        y = a.astype(np.float64)
        finite = np.isfinite(x)
        if not np.all(np.isfinite(y) | ~finite):
            self.max_err = self.max_abs = math.nan
            return
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(np.where(finite, y - x, 0.0))
            scaled = d / np.maximum(1.0, np.abs(np.where(finite, x, 0.0)))
        if not math.isnan(self.max_err):
            self.max_err = max(self.max_err, float(scaled.max()))
            self.max_abs = max(self.max_abs, float(d.max()))
        if rows and finite.all():
            n = x.shape[-1]
            cos = row_cosines(x.reshape(-1, n), y.reshape(-1, n))
            self.cosine_min = min(self.cosine_min, float(cos.min()))

    def metrics(self) -> dict[str, float]:
        if self.shape:
            return {"max_abs": math.inf, "max_abs_unscaled": math.inf, "cosine_min": -1.0}
        return {"max_abs": self.max_err, "max_abs_unscaled": self.max_abs, "cosine_min": self.cosine_min}

    def failure(self, tol: Mapping[str, float]) -> tuple[str, float, str] | None:
        """(metric, value, message) when this pair breaks ``tol``."""
        where = f"%{self.new} ({self.node}: {self.op}) vs %{self.old} of the previous graph"
        if self.shape:
            return "max_abs", math.inf, f"{self.shape} on {where}"
        if self.int_mismatches:
            return "max_abs", self.max_err, f"{self.int_mismatches} integer elements differ on {where}"
        bound = tol.get("max_abs")
        if bound is not None and (math.isnan(self.max_err) or self.max_err > bound):
            return (
                "max_abs",
                self.max_err,
                f"max_abs {fmt_number(self.max_err)} > {bound:g} (error scaled by max(1, |value|); "
                f"absolute {fmt_number(self.max_abs)}) on {where}",
            )
        bound = tol.get("cosine")
        if bound is not None and self.cosine_min < bound:
            return "cosine_min", self.cosine_min, f"cosine_min {fmt_number(self.cosine_min)} < {bound:g} on {where}"
        return None


@dataclass
class LocalOutcome:
    """A local check of one pass: its record (``scope="local"``) and, when it failed, where;
    or, when the pass cannot be checked locally, no record and the ``problem``."""

    record: AccuracyRecord | None
    localization: Localization | None = None
    compared: int = 0  # pairs compared
    problem: str = ""


def judge(stats: Sequence[PairStats], tol: Mapping[str, float]) -> LocalOutcome:
    """Summarize the pairs of one pass and judge them by the local keys of ``tol``."""
    local_tol = {k: v for k, v in tol.items() if k in LOCAL_KEYS}
    per_output = {s.new: s.metrics() for s in stats}
    summary = {"max_abs": 0.0, "max_abs_unscaled": 0.0, "cosine_min": 1.0}
    for m in per_output.values():
        for k, v in m.items():
            cur = summary[k]
            worse = v < cur if k == "cosine_min" else v > cur
            if math.isnan(v) or (not math.isnan(cur) and worse):
                summary[k] = v
    failures: list[str] = []
    loc = None
    for s in stats:
        hit = s.failure(local_tol)
        if hit is not None:
            metric, value, msg = hit
            failures.append(msg + " [local]")
            if loc is None:
                loc = Localization(
                    node=s.node,
                    op=s.op,
                    value=s.new,
                    metric=metric,
                    error=value,
                    detail=f"{msg}; found by the local check of the rewritten region",
                )
    rec = AccuracyRecord(
        vs_previous=summary,
        per_output=per_output,
        tolerance=dict(tol),
        ok=not failures,
        failures=failures,
        scope="local",
    )
    return LocalOutcome(rec, loc, len(stats))


# -------------------------------------------------------------------- sweep
_Src = tuple  # ("const", array) | ("input", name) | ("g0", Value) | ("task", step, Node, index)


class LocalSweep:
    """Checks passes ``graphs[0] -> graphs[1] -> ...`` in one run of ``graphs[0]`` (module docstring).

    ``run(batch)`` runs one micro-batch and returns ``graphs[0]``'s outputs;
    ``outcome(k, tol)`` judges pass ``k`` (1-based) afterwards.
    """

    def __init__(self, graphs: Sequence[Graph], rewrites: Sequence[Rewrite] | None = None) -> None:
        if len(graphs) < 2:
            raise ValueError("a sweep needs at least two graphs")
        self.graphs = list(graphs)
        self.rewrites: list[Rewrite | None] = [None, *(rewrites or [diff_graphs(a, b) for a, b in zip(graphs, graphs[1:])])]
        self.problems: dict[int, str] = {}
        self.stats: dict[int, list[PairStats]] = {}
        self._region_ids: list[set[int]] = [set(), *(rw.region_ids for rw in self.rewrites[1:] if rw is not None)]
        self._build()

    # ------------------------------------------------------------- resolution
    def _source(self, k: int, v: Value) -> _Src:
        """Where value ``v`` of ``graphs[k]`` comes from (module docstring), walking back through the chain."""
        while True:
            if v.const is not None:
                return ("const", v.const)
            if k == 0:
                return ("input", v.name) if v.producer is None else ("g0", v)
            rw = self.rewrites[k]
            assert rw is not None
            m = rw.value_map.get(id(v))
            if m is not None:
                v, k = m, k - 1
                continue
            node = v.producer
            if node is None or id(node) not in self._region_ids[k]:
                raise NotLocal(f"%{v.name} of the graph after pass {k} has no counterpart and no producer to run")
            return ("task", k, node, v.index)

    def _needed(self, k: int, values: Iterable[tuple[int, Value]], done: set[tuple[int, int]]) -> list[tuple[int, Node]]:
        """The region nodes (by pass) that must run to produce ``values``; raises ``NotLocal``."""
        out: list[tuple[int, Node]] = []
        seen = set(done)
        work = list(values)
        while work:
            j, v = work.pop()
            src = self._source(j, v)
            if src[0] != "task":
                continue
            key = (src[1], id(src[2]))
            if key in seen:
                continue
            seen.add(key)
            out.append((src[1], src[2]))
            work.extend((src[1], x) for x in src[2].inputs if x is not None)
        return out

    def _build(self) -> None:
        g0 = self.graphs[0]
        slots: dict[Any, int] = {}

        def slot(key: Any) -> int:
            return slots.setdefault(key, len(slots))

        self._inputs = [(v.name, v.type, slot(("v", id(v)))) for v in g0.inputs]
        input_slots = {name: s for name, _, s in self._inputs}
        self._consts: dict[Any, tuple[int, np.ndarray]] = {}
        ready: dict[int, float] = {s: -1.0 for s in input_slots.values()}
        order: list[tuple[tuple[float, int, int], StepSpec]] = []
        computed: dict[tuple[Any, ...], tuple[int, ...]] = {}  # signature -> output slots (shared work)
        for i, n in enumerate(g0.nodes):
            ins = tuple(None if x is None else self._g0_slot(x, slot, ready) for x in n.inputs)
            outs = tuple(slot(("v", id(o))) for o in n.outputs)
            for o in outs:
                ready[o] = float(i)
            order.append(((float(i), 0, 0), StepSpec(n.name, n.op, n.attrs, ins, outs)))
            sig = _signature(n.op, n.attrs, ins)
            if sig is not None:
                computed.setdefault(sig, outs)
        self._outputs = [slot(("v", id(v))) if v.const is None else self._g0_slot(v, slot, ready) for v in g0.outputs]

        needed: set[tuple[int, int]] = set()
        tasks: dict[tuple[int, int], Node] = {}
        plans: dict[int, list[tuple[Value, Value]]] = {}
        for k in range(1, len(self.graphs)):
            rw = self.rewrites[k]
            assert rw is not None
            if rw.problem:
                self.problems[k] = rw.problem
                continue
            try:
                want = [(k, a) for a, _ in rw.pairs] + [(k - 1, b) for _, b in rw.pairs]
                new = self._needed(k, want, needed)
            except NotLocal as e:
                self.problems[k] = str(e)
                continue
            for j, node in new:
                needed.add((j, id(node)))
                tasks[(j, id(node))] = node
            plans[k] = rw.pairs

        position = {k: {id(n): i for i, n in enumerate(g.nodes)} for k, g in enumerate(self.graphs)}
        seq = 0
        task_slots: dict[tuple[int, int], tuple[int, ...]] = {}

        def src_slot(src: _Src) -> int:
            kind = src[0]
            if kind == "const":
                return self._const_slot(src[1], slot, ready)
            if kind == "input":
                if src[1] not in input_slots:
                    raise NotLocal(f"graph input {src[1]!r} is not an input of the first graph")
                return input_slots[src[1]]
            if kind == "g0":
                return slots[("v", id(src[1]))]
            return task_slots[(src[1], id(src[2]))][src[3]]

        self.shared = 0
        for j, nid in sorted(tasks, key=lambda t: (t[0], position[t[0]][t[1]])):
            node = tasks[(j, nid)]
            ins = tuple(None if x is None else src_slot(self._source(j, x)) for x in node.inputs)
            parts = _definition(node, ins) or [(node.op, node.attrs, ins)]
            made = False
            for i, (op, attrs, pins) in enumerate(parts):
                last = i == len(parts) - 1
                if i:
                    pins = (outs[0], *pins[1:])  # the previous part's result
                sig = _signature(op, attrs, pins)
                same = computed.get(sig) if sig is not None else None
                if same is not None and (not last or len(same) == len(node.outputs)):  # already computed
                    outs = same
                    continue
                if last:
                    outs = tuple(slot(("t", j, id(o))) for o in node.outputs)
                else:
                    outs = (slot(("t", j, id(node), i)),)
                if sig is not None:
                    computed[sig] = outs
                pos = max((ready[s] for s in pins if s is not None), default=-1.0)
                for o in outs:
                    ready[o] = pos
                seq += 1
                name = f"{node.name} [pass {j}]" if len(parts) == 1 else f"{node.name} [pass {j}, {op}]"
                order.append(((pos, 1, seq), StepSpec(name, op, attrs, pins, outs)))
                made = True
            task_slots[(j, nid)] = outs
            self.shared += not made

        for k, pairs in plans.items():
            stats = []
            for a, b in pairs:
                sa, sb = src_slot(self._source(k, a)), src_slot(self._source(k - 1, b))
                prod = a.producer
                st = PairStats(a.name, b.name, prod.name if prod else a.name, prod.op if prod else "constant")
                stats.append(st)
                if sa == sb:
                    continue  # the same computation on both sides
                seq += 1
                order.append(((max(ready[sa], ready[sb]), 2, seq), StepSpec(f"compare %{a.name}", inputs=(sa, sb), probe=_probe(st))))
            self.stats[k] = stats
        order.sort(key=lambda t: t[0])
        keep = set(self._outputs) | set(input_slots.values()) | {s for s, _ in self._consts.values()}
        self._steps = compile_plan([spec for _, spec in order], keep)
        self._n_slots = len(slots)
        self.tasks = len(tasks) - self.shared

    def _g0_slot(self, v: Value, slot: Callable[[Any], int], ready: dict[int, float]) -> int:
        if v.const is not None:
            return self._const_slot(v.const, slot, ready)
        return slot(("v", id(v)))

    def _const_slot(self, arr: np.ndarray, slot: Callable[[Any], int], ready: dict[int, float]) -> int:
        """One slot per constant: a small one (``_CONTENT_KEY_BYTES``) by its contents, so that equal
        constants a pass merged (``cse``) or re-created still make equal signatures; a large one by
        identity (passes keep weight arrays)."""
        key: Any = id(arr)
        if arr.nbytes <= _CONTENT_KEY_BYTES:
            key = (arr.dtype.str, arr.shape, hashlib.blake2b(np.ascontiguousarray(arr).tobytes()).digest())
        got = self._consts.get(key)
        if got is None:
            got = (slot(("c", key)), arr)
            self._consts[key] = got
            ready[got[0]] = -1.0
        return got[0]

    # -------------------------------------------------------------------- run
    def run(self, batch: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One micro-batch: ``graphs[0]``'s outputs; every pair's statistics are updated."""
        env: list[np.ndarray | None] = [None] * self._n_slots
        for name, t, s in self._inputs:
            env[s] = check_input(name, t, batch[name])
        for s, arr in self._consts.values():
            env[s] = arr
        execute(self._steps, env)
        return [env[s] for s in self._outputs]  # type: ignore[misc]

    def outcome(self, k: int, tol: Mapping[str, float]) -> LocalOutcome:
        if k in self.problems or k not in self.stats:
            return LocalOutcome(None, problem=self.problems.get(k, "not part of this sweep"))
        return judge(self.stats[k], tol)


#: constants up to this size get their sweep slot by contents (``LocalSweep._const_slot``)
_CONTENT_KEY_BYTES = 64 << 10

#: ops whose two inputs commute (``a op b`` is ``b op a``, bit for bit): their signature sorts the slots
_COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min"})

#: ``Linear``'s activation as the op that computes it (``_definition``)
_ACTIVATION_OPS: dict[str, tuple[str, dict[str, Any]]] = {
    "gelu": ("Gelu", {"approximate": "none"}),
    "gelu_tanh": ("Gelu", {"approximate": "tanh"}),
    "gelu_sigmoid": ("QuickGelu", {"alpha": 1.702}),
    "relu": ("Relu", {}),
}


def _signature(op: str, attrs: Mapping[str, Any], ins: tuple[int | None, ...]) -> tuple[Any, ...] | None:
    """What a node computes, for sharing work between the graphs of a sweep: op, attributes (defaults
    filled in) and input slots (sorted for a commutative op; ``None`` for nodes with tensor attributes)."""
    full = get_op(op).full_attrs(attrs)
    if any(isinstance(v, np.ndarray) for v in full.values()):
        return None
    if op in _COMMUTATIVE and len(ins) == 2 and None not in ins:
        ins = tuple(sorted(ins))  # type: ignore[type-var]
    return (op, tuple(sorted((k, attr_key(v)) for k, v in full.items())), ins)


Part = tuple[str, Mapping[str, Any], tuple[int | None, ...]]


def _definition(node: Node, ins: tuple[int | None, ...]) -> list[Part] | None:
    """A rewritten node the sweep runs as the ops that define it, each shared when the same op already
    runs on the same slots (``_signature``), or ``None`` to run the node itself; a part's first input
    ``None`` is the previous part's result. On float32 (and float64 for ``Linear``):

    - ``Linear(x, W, b?){activation}`` is ``act(Add(MatMul(x, W), b))``: a fused FFN whose input is the
      old graph's value costs nothing, and a later pass that moves the bias out (``SkipLayerNorm``)
      leaves a bias-free ``Linear`` whose product was already computed;
    - ``LayerNorm(x, gamma, beta?){axis, epsilon}`` is ONNX ``LayerNormalization`` (statistics in
      float32), so rewriting an exported ``LayerNormalization`` changes nothing downstream.

    (The whole-model checks around a sweep run the fused kernels themselves.)"""
    x = node.inputs[0] if node.inputs else None
    if x is None:
        return None
    dtype = x.type.dtype
    if node.op == "Linear" and dtype in (DType.FLOAT32, DType.FLOAT64) and len(ins) in (2, 3):
        act = _ACTIVATION_OPS.get(str(node.attrs.get("activation", "none")))
        if act is None and node.attrs.get("activation", "none") != "none":
            return None
        parts: list[Part] = [("MatMul", {}, ins[:2])]
        if len(ins) == 3 and ins[2] is not None:
            parts.append(("Add", {}, (None, ins[2])))
        if act is not None:
            parts.append((act[0], act[1], (None,)))
        return parts
    if node.op == "LayerNorm" and dtype == DType.FLOAT32 and len(node.outputs) == 1:
        attrs = get_op("LayerNorm").full_attrs(node.attrs)
        ln = {"axis": int(attrs["axis"]), "epsilon": float(attrs["epsilon"]), "stash_type": 1}
        return [("LayerNormalization", ln, ins)]
    return None


def _probe(stats: PairStats) -> Callable[[list[np.ndarray | None]], None]:
    def probe(args: list[np.ndarray | None]) -> None:
        stats.update(args[0], args[1])

    return probe

