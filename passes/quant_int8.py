"""``quantize-int8``: int8 quantization in QDQ form, dynamic or static, with accuracy-aware fallback.

The ``int8`` group is this pass followed by ``lower-quantized`` (integer
ops for targets that run them). Options (``int8{mode=static,calibration=entropy}``):

- ``mode``: ``dynamic`` (default; activation scales computed at run time) or
  ``static`` (activation ranges calibrated on ``ctx.calibration``).
- ``granularity``: activation scales per ``row`` (per token; dynamic only) or
  per ``tensor``; ``auto`` (default): row when dynamic, tensor when static.
- ``activations``: ``symmetric`` or ``asymmetric`` (uint8); ``auto``
  (default) follows the target's capability descriptor
  (``quantization["activations"]``), symmetric int8 without a target.
  Symmetric activations are int8 (zero point 0), or uint8 with zero point 128
  when the target computes in uint8 (the same integers shifted by 128).
- ``weights``: ``per-channel`` (default; one scale per output column) or
  ``per-tensor``; always symmetric int8.
- ``calibration`` (static): ``minmax`` (default), ``percentile`` (with
  ``percentile=99.99`` unless given) or ``entropy`` (KL); ``samples``: how
  many calibration samples to use (default 16, 0 = all). minmax is the
  default because BERT-family activations have a few outlier channels that
  clipping destroys: on all-MiniLM-L6-v2, static asymmetric per-tensor gives
  worst pooled cosine 0.9907 with minmax, 0.9498 with percentile 99.99 and
  0.9437 with entropy (``python -m benchmarks.run quantization``).
- ``ops``: op types quantized (default ``Linear+Attention+MatMul``: linear
  layers, the packed QKV projection of ``Attention``, and MatMuls by a
  constant weight); ``exclude``: op types or node names left float;
  ``nodes``: if given, only these nodes.
- ``scales``: ``float`` (any float scales, the default without a target),
  ``power2`` (scales an integer accelerator applies with shifts: per-row
  activation scales that are power-of-two fractions of a calibrated base,
  outputs requantized to int8 per channel with power-of-two multiples of the
  accumulator's unit, the bias on the accumulator's grid; asymmetric rows
  keep an int8 zero point each; needs calibration data; see ``quant_power2``) or ``auto``
  (default: the target's ``quantization["scales"]``, float without one).
- ``smoothquant``: SmoothQuant's alpha (0 = off, typical 0.5): activation
  outliers migrate into the weights before quantizing (needs calibration data).
  Unset (default): the target's ``quantization["smoothquant"]`` (the fpga
  target asks for 0.5), else 0.
- ``fallback``: ``auto`` (default: when the run has a validator), ``on`` or
  ``off``. Each layer's sensitivity is measured (it alone quantized, error at
  the outputs on ``fallback_samples`` calibration samples) and the most
  sensitive layers stay float until ``ctx.validator`` accepts the graph with
  the quantization family's tolerance (and the user's) with headroom:
  ``fallback_margin`` (default 0.25) moves every bound that share of the way
  to perfect (cosine 0.995 -> 0.99625), because dynamic quantization turns
  any other runtime's float noise into a fresh draw of the rounding error;
  see ``quant_fallback``. The notes list the layers kept float and what each
  cost.

What the pass does (cases):

1. No quantizable layer, or a target whose capabilities lack int8: the graph
   is returned unchanged (``modified=False``) with the reason in the notes.
2. Otherwise every target gets the QDQ form of ``quant_qdq`` (SmoothQuant
   first when asked, static ranges from calibration when static).
3. With fallback active, the graph is checked; when it fails, the most
   sensitive layers are left float (``quant_fallback.search``); if even all
   float fails, the input graph is returned unchanged.
5. ``scales=power2``: before anything else, the quantizable layers' fused
   activations and Attention nodes are split (``quant_power2.split_for_power2``)
   so each layer's output can be requantized; calibration then sets the base
   scales and output shifts; a graph left all float is the input graph.
4. ``PackedLinear`` layers (weights already packed by a layout pass) stay
   float; a note, a warning and a near miss per layer say to run int8 before
   layout, and they count as float layers in the stats.

Stats: ``layers`` (quantized / float / total), ``linear_weight_bytes`` (the
quantized layers' weights: float32 before, int8 + scales after, and the
ratio), ``scheme``; ``float_layers`` lists the layers kept float with their
sensitivity.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from accelopt.errors import PassOptionError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, register_pass
from accelopt.passes.quant_calibration import METHODS, choose_range, observe, qparams, sample_batches
from accelopt.passes.quant_fallback import Sensitivity, measure_sensitivity, search
from accelopt.passes.quant_lowprec import target_lacks_dtype
from accelopt.passes.quant_power2_plan import calibrate_power2, split_targets
from accelopt.passes.quant_qdq import PASS_NAME, QdqPlan, Scheme, Target, apply, select_targets, smoothing_factors
from accelopt.validation import TOLERANCE_KEYS, violations

log = logging.getLogger(__name__)

MODES = ("dynamic", "static")
FALLBACK = ("auto", "on", "off")
SCALES = ("auto", "float", "power2")


@dataclass(frozen=True)
class Int8Options:
    mode: str = "dynamic"
    granularity: str = "auto"
    activations: str = "auto"
    weights: str = "per-channel"
    calibration: str = "minmax"
    percentile: float = 99.99
    samples: int = 16
    ops: tuple[str, ...] = ("Linear", "Attention", "MatMul")
    exclude: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    smoothquant: float | None = None
    scales: str = "auto"
    fallback: str = "auto"
    fallback_samples: int = 4
    fallback_margin: float = 0.25

    def __post_init__(self) -> None:
        checks = {
            "mode": (self.mode, MODES),
            "granularity": (self.granularity, ("auto", "row", "tensor")),
            "activations": (self.activations, ("auto", "symmetric", "asymmetric")),
            "weights": (self.weights, ("per-channel", "per-tensor")),
            "calibration": (self.calibration, METHODS),
            "fallback": (self.fallback, FALLBACK),
            "scales": (self.scales, SCALES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"option {name}={value!r}: expected one of {', '.join(allowed)}")
        if self.mode == "static" and self.granularity == "row":
            raise ValueError("granularity=row needs mode=dynamic (a static scale cannot follow each token)")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.smoothquant is not None and not 0 <= self.smoothquant <= 1:
            raise ValueError(f"smoothquant (alpha) must be in [0, 1], got {self.smoothquant}")
        if self.samples < 0 or self.fallback_samples < 1:
            raise ValueError("samples must be >= 0 and fallback_samples >= 1")
        if not 0 <= self.fallback_margin < 1:
            raise ValueError(f"fallback_margin must be in [0, 1), got {self.fallback_margin}")


def scheme_for(options: Int8Options, target: Any) -> Scheme:
    """The quantization scheme from the options and the target's capability descriptor (None: no target)."""
    act = options.activations
    if act == "auto":
        caps = getattr(target, "quantization", None) or {}
        act = "asymmetric" if str(caps.get("activations", "symmetric")).startswith("asym") else "symmetric"
    symmetric = act == "symmetric"
    # onnxruntime-style GEMMs want uint8 activations; symmetric uint8 has zero point 128 (the same integers + 128)
    dtypes = getattr(target, "dtypes", None) or ()
    dtype = "uint8" if not symmetric or "uint8" in dtypes else "int8"
    gran = options.granularity
    if gran == "auto":
        gran = "row" if options.mode == "dynamic" else "tensor"
    return Scheme(
        mode=options.mode,
        granularity=gran,
        dtype=dtype,
        symmetric=symmetric,
        per_channel=options.weights == "per-channel",
    )


def smoothquant_alpha(options: Int8Options, target: Any) -> float:
    """SmoothQuant's alpha: the option, else the target's ``quantization["smoothquant"]``, else 0 (off)."""
    if options.smoothquant is not None:
        return float(options.smoothquant)
    caps = getattr(target, "quantization", None) or {}
    return float(caps.get("smoothquant", 0.0))


def power2_scales(options: Int8Options, target: Any) -> bool:
    """True when the layers get power-of-two scales (``scales=power2``, or ``auto`` on a target asking for them)."""
    if options.scales != "auto":
        return options.scales == "power2"
    caps = getattr(target, "quantization", None) or {}
    return str(caps.get("scales", "float")) == "power2"


_PACKED_REASON = "weight already in a target layout (a layout pass ran before int8); put int8 before layout"


def _packed_layers(graph: Graph) -> list[str]:
    """Linear layers a layout pass has packed: int8 does not quantize them (case 4)."""
    return [n.name for n in graph.nodes if n.op == "PackedLinear"]


def _packed_notes(packed: list[str]) -> list[str]:
    if not packed:
        return []
    log.warning("quantize-int8: %d PackedLinear layer(s) left float: %s", len(packed), _PACKED_REASON)
    return [f"{len(packed)} PackedLinear layer(s) left float: {_PACKED_REASON}"]


@register_pass
class QuantizeInt8(Pass):
    """int8 quantization (QDQ form): dynamic or static, per-channel weights, SmoothQuant, accuracy-aware fallback."""

    name: ClassVar[str] = PASS_NAME
    family: ClassVar[str] = "quantization"
    Options: ClassVar[type] = Int8Options

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        o: Int8Options = self.options
        target = ctx.target
        lacks = target_lacks_dtype(target, DType.INT8)
        if lacks and target_lacks_dtype(target, DType.UINT8):
            return PassResult(graph, False, notes=[f"{lacks}; nothing quantized"])
        scheme = scheme_for(o, target)
        targets, skipped = select_targets(graph, o.ops, o.exclude, o.nodes)
        packed = _packed_layers(graph)
        skipped += [f"{name} (PackedLinear): {_PACKED_REASON}" for name in packed]
        if not targets:
            return PassResult(
                graph,
                False,
                stats={"layers": {"quantized": 0, "float": len(packed), "total": len(packed)}},
                near_misses=skipped,
                notes=[f"no quantizable layer (ops {'+'.join(o.ops)})"] + _packed_notes(packed),
            )
        power2 = power2_scales(o, target)
        if power2 and scheme.mode == "dynamic":  # the power-of-two quantizer writes int8 (zero points per row)
            scheme = dataclasses.replace(scheme, dtype="int8")
        notes = [scheme.describe() + ("; power-of-two scales (scales=power2)" if power2 else "")]
        notes += _packed_notes(packed)
        batches = sample_batches(ctx.calibration, o.samples)
        graph_in = graph
        if power2:
            if not batches:
                raise PassOptionError(
                    "scales=power2 needs calibration data (PassContext.calibration) for its base scales and output "
                    "shifts: pass --calibration, or use scales=float"
                )
            graph, targets = split_targets(graph, targets, o.ops, o.exclude, o.nodes, notes)  # case 5
        plan = QdqPlan(scheme, targets)
        alpha = smoothquant_alpha(o, target)
        if alpha > 0:
            if not batches:
                notes.append("smoothquant needs calibration data (ctx.calibration is empty): skipped")
            else:
                self._smooth(graph, plan, batches, alpha)
                notes.append(
                    f"SmoothQuant alpha={alpha:g} on {len(plan.smooth)} activation(s)"
                    + (" (the target's recommendation)" if o.smoothquant is None else "")
                )
        if scheme.mode == "static" and not power2:
            if not batches:
                raise PassOptionError(
                    "static int8 needs calibration data (PassContext.calibration): pass --calibration, or use mode=dynamic"
                )
            self._calibrate(graph, plan, batches, o)
            notes.append(f"static ranges: {o.calibration} on {sum(_rows(b) for b in batches)} calibration sample(s)")
        if power2:
            notes.append(calibrate_power2(graph, plan, batches, o.calibration, o.percentile))

        chosen, float_sens, extra = self._with_fallback(graph, plan, targets, ctx, batches)
        notes += extra
        float_set = {s.node for s in float_sens}
        quantized = [t for t in targets if t.node not in float_set]
        if not quantized:
            notes.append("every layer stayed float: the graph is unchanged")
            stats = _stats(graph, graph, targets, set(), scheme, float_sens, len(packed))
            return PassResult(graph_in, False, stats=stats, notes=notes)
        kinds = Counter(t.op for t in quantized)
        notes.insert(
            1,
            f"quantized {len(quantized)} of {len(targets) + len(packed)} layer(s): "
            + ", ".join(f"{op} {n}" for op, n in sorted(kinds.items())),
        )
        stats = _stats(graph, chosen, targets, {t.node for t in quantized}, scheme, float_sens, len(packed))
        wb = stats["linear_weight_bytes"]
        notes.append(
            f"weights of the quantized layers: float32 {wb['float32']:,} B -> int8 {wb['int8']:,} B + scales "
            f"{wb['scales']:,} B ({wb['ratio']:.2f}x smaller; int8 data alone {wb['float32'] / max(wb['int8'], 1):.2f}x)"
        )
        return PassResult(chosen, True, stats=stats, near_misses=skipped, notes=notes)

    # ------------------------------------------------------------ steps
    @staticmethod
    def _smooth(graph: Graph, plan: QdqPlan, batches: list, alpha: float) -> None:
        groups = plan.groups(plan.targets)
        obs = observe(graph, list(groups), batches)
        for xname, group in groups.items():
            cam = obs[xname].channel_absmax
            if cam is None:
                continue
            weights = [np.asarray(graph.const_value(graph.value(t.w)), np.float32) for t in group]
            plan.smooth[xname] = smoothing_factors(cam, weights, alpha)

    @staticmethod
    def _calibrate(graph: Graph, plan: QdqPlan, batches: list, o: Int8Options) -> None:
        smoothed, qin = apply(graph, plan, plan.targets, quantize=False)
        obs = observe(smoothed, list(qin.values()), batches, histogram=o.calibration != "minmax")
        for xname, vname in qin.items():
            lo, hi = choose_range(obs[vname], o.calibration, o.percentile)
            plan.static[xname] = qparams(lo, hi, plan.scheme.np_dtype, plan.scheme.symmetric)

    def _with_fallback(
        self, graph: Graph, plan: QdqPlan, targets: list[Target], ctx: PassContext, batches: list
    ) -> tuple[Graph, list[Sensitivity], list[str]]:
        o: Int8Options = self.options
        full, _ = apply(graph, plan, targets)
        active = o.fallback == "on" or (o.fallback == "auto" and ctx.validator is not None)
        if not active:
            return full, [], []
        if ctx.validator is None:
            return full, [], ["fallback=on needs a validator (validation is off): every layer stays quantized"]
        validator = ctx.validator
        order: list[Sensitivity] = []
        sens_batches = _take_rows(batches, o.fallback_samples)
        graphs: dict[int, Graph] = {0: full}

        def ranked() -> list[Sensitivity]:
            if not order:
                if not sens_batches:
                    raise PassOptionError("accuracy-aware fallback needs calibration samples to rank the layers")
                by_name = {t.node: t for t in targets}
                order.extend(
                    sorted(
                        measure_sensitivity(
                            graph,
                            [(t.node, t.op, t.role) for t in targets],
                            lambda n: apply(graph, plan, [by_name[n]])[0],
                            sens_batches,
                        ),
                        key=lambda s: -s.rel_l2,
                    )
                )
            return order

        def check(k: int) -> tuple[bool, Any, str]:
            if k not in graphs:
                keep_float = {s.node for s in ranked()[:k]}
                graphs[k] = apply(graph, plan, [t for t in targets if t.node not in keep_float])[0]
            rec = validator.check(graphs[k], family=self.family, previous=graph)
            failures = list(getattr(rec, "failures", []) or [])
            if rec.ok and o.fallback_margin:
                failures = _margin_failures(rec, validator, self.family, o.fallback_margin)
            return not failures, rec, "; ".join(failures)

        result = search(len(targets), check)
        notes = []
        tries = ", ".join(f"{k} float: {'ok' if ok else 'fails'}" for k, ok, _ in result.tries)
        if result.k == 0:
            notes.append(f"fallback: the fully quantized graph meets the tolerance ({tries})")
            return full, [], notes
        float_sens = ranked()[: result.k]
        first_fail = next((why for k, ok, why in result.tries if k == 0 and not ok), "")
        notes.append(f"fallback: the fully quantized graph fails ({first_fail}); tried {tries}")
        ok = result.tries and any(k == result.k and good for k, good, _ in result.tries)
        status = "meets the tolerance" if ok else "still fails; all layers float"
        notes.append(f"fallback: {result.k} layer(s) kept float, the graph {status}")
        by_name = {t.node: t for t in targets}
        for s in float_sens:
            kept = 4 * by_name[s.node].k * by_name[s.node].n
            notes.append(
                f"kept float: {s.node} ({s.role}, {kept:,} B of float32 weights): quantized alone it costs {s.describe()}"
            )
        if result.k >= len(targets) and not ok:
            return graph, float_sens, notes
        return graphs[result.k], float_sens, notes


def _tighten(tol: dict[str, float], margin: float) -> dict[str, float]:
    """Bounds moved ``margin`` of the way to perfect: lower bounds (cosines, in [0, 1]) toward 1, upper toward 0."""
    out = {}
    for key, bound in tol.items():
        kind = TOLERANCE_KEYS[key][1]
        out[key] = bound + margin * (1.0 - bound) if kind == "min" and bound < 1 else bound * (1.0 - margin)
    return out


def _margin_failures(rec: Any, validator: Any, family: str, margin: float) -> list[str]:
    """The validator's own judgement repeated with its bounds tightened by ``margin`` (case 3's headroom).

    Dynamic quantization rounds differently under any other float noise (another runtime's kernels), so the
    written model is a fresh draw of the same error: the fallback keeps room for it.
    """
    tol_for = getattr(validator, "tolerance_for", None)
    if not callable(tol_for):
        return []
    out = violations(rec.vs_previous, _tighten(tol_for(family), margin), against="previous (with margin)")
    overrides = getattr(validator, "overrides", None) or {}
    if overrides:
        out += violations(rec.vs_reference, _tighten(dict(overrides), margin), against="reference (with margin)")
    return out


def _rows(batch: dict) -> int:
    for v in batch.values():
        return int(np.asarray(v).shape[0]) if np.asarray(v).ndim else 1
    return 0


def _take_rows(batches: list, n: int) -> list:
    out, taken = [], 0
    for b in batches:
        if taken >= n:
            break
        r = _rows(b)
        keep = min(r, n - taken)
        out.append({k: np.asarray(v)[:keep] for k, v in b.items()})
        taken += keep
    return out


def _stats(
    before: Graph,
    after: Graph,
    targets: list[Target],
    quantized: set[str],
    scheme: Scheme,
    float_sens: list[Sensitivity],
    packed: int = 0,
) -> dict[str, Any]:
    """Pass stats; ``packed`` PackedLinear layers count as float layers (case 4)."""
    f32 = i8 = sc = 0
    for t in targets:
        if t.node not in quantized:
            continue
        w = before.const_value(before.value(t.w))
        f32 += int(np.asarray(w).nbytes)
        node = after.node(t.node)
        dq = node.inputs[1].producer if node.inputs[1] is not None else None
        if dq is not None and dq.op == "DequantizeLinear":
            i8 += int(np.asarray(after.const_value(dq.inputs[0])).nbytes)
            sc += int(np.asarray(after.const_value(dq.inputs[1])).nbytes)
    return {
        "scheme": scheme.describe(),
        "layers": {
            "quantized": len(quantized),
            "float": len(targets) + packed - len(quantized),
            "total": len(targets) + packed,
        },
        "linear_weight_bytes": {
            "float32": f32,
            "int8": i8,
            "scales": sc,
            "ratio": round(f32 / (i8 + sc), 3) if i8 + sc else 0.0,
        },
        "float_layers": [
            {"node": s.node, "role": s.role, "rel_l2": s.rel_l2, "cosine_min": s.cosine_min} for s in float_sens
        ],
    }


__all__ = ["Int8Options", "QuantizeInt8", "power2_scales", "scheme_for"]
