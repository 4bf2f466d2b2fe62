"""QDQ construction for the int8 pass: which layers, their weights, SmoothQuant, and the inserted nodes.

A ``QdqPlan`` is computed once from the float graph (targets, quantized
weights, smoothing factors, static activation parameters) and applied to any
subset of its targets (``apply``), which is what the accuracy-aware fallback
needs: the same plan with the most sensitive layers left out.

Targets (``select_targets``), cases:

1. ``Linear(x, W[K,N], b?)`` with a constant float32 2-D ``W``;
2. ``Attention(x, W[H,3H], b, mask?)``: the packed QKV projection (the score
   and context matmuls stay float: they multiply two activations);
3. ``MatMul(x, W[K,N])`` with a constant float32 2-D ``W`` (a linear layer
   not fused yet); a MatMul of two activations is never a target.

``x`` must be float32 with a known last dimension K. The op types come from
``ops`` (default ``Linear+Attention+MatMul``); ``exclude`` removes op types
or node names; ``nodes`` (when not empty) keeps only the named nodes.

What ``apply`` inserts for each group of targets sharing an input ``x``:

1. SmoothQuant (``alpha > 0``): ``Mul(x, 1/s)`` with
   ``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)`` over the group's weights
   (calibration maxima; ``s`` clipped to [1e-5, 1e5]; channels never seen
   nonzero keep ``s = 1``), and every weight's rows scaled by ``s``: the
   float product is unchanged, activation outliers move into the weights.
2. Activation quantizer: dynamic: ``DynamicQuantizeLinear`` (uint8,
   asymmetric, per tensor: the standard op) or ``DynamicQuantize{to,
   symmetric, granularity}``; static: ``QuantizeLinear(x, scale, zp)`` with
   calibrated constants. Then ``DequantizeLinear`` (per row:
   ``axis=-1, block_size=K``).
3. Weights: int8 symmetric, per output channel (``DequantizeLinear{axis=1}``
   with a ``[N]`` scale) or per tensor; zero columns get scale 1.
4. ``scales=power2`` (``quant_power2``): the dynamic quantizer scales each row
   by a power of two of a calibrated base (``QdqPlan.pow2_base``), the bias
   is rounded onto the accumulator's grid and the output is requantized per
   channel (``QdqPlan.out_scales``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.passes.quant_power2 import output_qdq, round_bias, row_pow2_quantizer

log = logging.getLogger(__name__)

PASS_NAME = "quantize-int8"
#: ops a target can be, and which input holds the activation and the weight
TARGET_OPS = {"Linear": (0, 1), "Attention": (0, 1), "MatMul": (0, 1)}
SMOOTH_CLIP = (1e-5, 1e5)


@dataclass(frozen=True)
class Scheme:
    """How activations and weights are quantized."""

    mode: str = "dynamic"  # dynamic | static
    granularity: str = "row"  # row | tensor (activations)
    dtype: str = "int8"  # int8 | uint8 (activations)
    symmetric: bool = True  # activations
    per_channel: bool = True  # weights

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.dtype == "uint8" else np.dtype(np.int8)

    def describe(self) -> str:
        act = f"{self.mode} {'per-row' if self.granularity == 'row' else 'per-tensor'} "
        act += f"{'symmetric' if self.symmetric else 'asymmetric'} {self.dtype}"
        return f"activations {act}; weights {'per-channel' if self.per_channel else 'per-tensor'} symmetric int8"


@dataclass
class Target:
    """One quantizable layer."""

    node: str
    op: str
    x: str
    w: str
    k: int
    n: int

    @property
    def role(self) -> str:
        if self.op == "Attention":
            return f"Attention QKV {self.k}x{self.n}"
        return f"{self.op} {self.k}x{self.n}"


@dataclass
class QdqPlan:
    """Everything ``apply`` needs, computed once from the float graph."""

    scheme: Scheme
    targets: list[Target]
    #: x value name -> smoothing factors s [K] (SmoothQuant), shared by the group
    smooth: dict[str, np.ndarray] = field(default_factory=dict)
    #: x value name -> (scale, zero point) of the static quantizer
    static: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: ``scales=power2`` (``quant_power2``): x value name -> base scale S of its dynamic power-of-two quantizer
    pow2_base: dict[str, np.float32] = field(default_factory=dict)
    #: ``scales=power2``: x value name -> whether its rows stay symmetric (no zero point)
    pow2_sym: dict[str, bool] = field(default_factory=dict)
    #: ``scales=power2``: node -> (per-channel output scale, the base scale S of its input)
    out_scales: dict[str, tuple[np.ndarray, np.float32]] = field(default_factory=dict)
    _weights: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def groups(self, subset: Iterable[Target]) -> dict[str, list[Target]]:
        out: dict[str, list[Target]] = {}
        for t in subset:
            out.setdefault(t.x, []).append(t)
        return out

    def quantized_weight(self, graph: Graph, t: Target) -> tuple[np.ndarray, np.ndarray]:
        """``(W_q int8 [K,N], scale)`` of ``t``'s (smoothed) weight, cached."""
        smoothed = t.x in self.smooth
        key = (t.w + "@" + t.node if smoothed else t.w, smoothed)
        hit = self._weights.get(key)
        if hit is None:
            w = np.asarray(graph.const_value(graph.value(t.w)), dtype=np.float32)
            if smoothed:
                w = w * self.smooth[t.x][:, None]
            hit = quantize_weight(w, self.scheme.per_channel)
            self._weights[key] = hit
        return hit


def quantize_weight(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 ``(W_q, scale)``: per output channel (scale [N]) or per tensor (scalar)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=0) if per_channel else np.array(np.abs(w).max() if w.size else 0.0)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


# ------------------------------------------------------------------ targets
def select_targets(
    graph: Graph,
    ops: Sequence[str],
    exclude: Sequence[str] = (),
    nodes: Sequence[str] = (),
) -> tuple[list[Target], list[str]]:
    """Targets (cases 1-3 of the module docstring) and reasons for the candidates skipped."""
    targets: list[Target] = []
    skipped: list[str] = []
    wanted_ops = set(ops)
    excluded = set(exclude)
    only = set(nodes)
    for node in graph.nodes:
        if node.op not in TARGET_OPS or node.op not in wanted_ops:
            continue
        if node.name in excluded or node.op in excluded or (only and node.name not in only):
            continue
        xi, wi = TARGET_OPS[node.op]
        x = node.inputs[xi] if len(node.inputs) > xi else None
        w = node.inputs[wi] if len(node.inputs) > wi else None
        if x is None or w is None:
            continue
        wdata = graph.const_value(w)
        if wdata is None or wdata.ndim != 2:
            if node.op != "MatMul":
                skipped.append(f"{node.name} ({node.op}): weight is not a constant 2-D tensor")
            continue
        if graph.const_value(x) is not None:
            continue
        if x.dtype != DType.FLOAT32 or wdata.dtype != np.float32:
            skipped.append(f"{node.name} ({node.op}): not float32 ({x.dtype} x {wdata.dtype})")
            continue
        k = x.shape[-1] if x.shape else None
        if not isinstance(k, int) or k != wdata.shape[0]:
            skipped.append(f"{node.name} ({node.op}): the input's last dimension is unknown or does not match")
            continue
        if w.producer is not None:
            skipped.append(f"{node.name} ({node.op}): weight is computed by a node (a Constant?), not an initializer")
            continue
        targets.append(Target(node.name, node.op, x.name, w.name, int(wdata.shape[0]), int(wdata.shape[1])))
    if only:
        missing = only - {t.node for t in targets}
        skipped.extend(f"{n}: named in nodes= but not a quantizable layer" for n in sorted(missing))
    return targets, skipped


# --------------------------------------------------------------- smoothing
def smoothing_factors(act_absmax: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel ``s`` (case 1 of the module docstring)."""
    wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0).astype(np.float64)
    a = np.asarray(act_absmax, dtype=np.float64)
    seen = (a > 0) & (wmax > 0)
    s = np.ones_like(a)
    s[seen] = a[seen] ** alpha / wmax[seen] ** (1.0 - alpha)
    return np.clip(s, *SMOOTH_CLIP).astype(np.float32)


# ------------------------------------------------------------------- apply
def apply(
    graph: Graph,
    plan: QdqPlan,
    subset: Iterable[Target],
    *,
    quantize: bool = True,
    rule: str = "",
) -> tuple[Graph, dict[str, str]]:
    """A copy of ``graph`` with ``subset`` smoothed and (``quantize``) put in QDQ form.

    Returns the new graph and, per group, the name of the value the quantizer
    reads (``x`` or its smoothed version): static calibration observes those.
    """
    g = graph.copy()
    scheme = plan.scheme
    subset_list = list(subset)
    q_inputs: dict[str, str] = {}
    wcache: dict[str, Value] = {}
    for xname, group in plan.groups(subset_list).items():
        x = g.value(xname)
        first = min((g.node(t.node) for t in group), key=g.nodes.index)
        prov = Provenance(PASS_NAME, rule or scheme.mode, tuple(t.node for t in group))
        src = x
        s = plan.smooth.get(xname)
        if s is not None:
            inv = g.add_initializer(f"{xname}_smooth_inv", (np.float32(1) / s).astype(np.float32), unique=True)
            src = g.add_node("Mul", [x, inv], name=f"{xname}_smooth", before=first, provenance=prov).output
        q_inputs[xname] = src.name
        if not quantize:
            if s is not None:
                for t in group:
                    node = g.node(t.node)
                    node.set_input(TARGET_OPS[t.op][0], src)
                    w = np.asarray(g.const_value(g.value(t.w)), np.float32) * s[:, None]
                    node.set_input(TARGET_OPS[t.op][1], g.add_initializer(f"{t.w}_smoothed", w, unique=True))
            continue
        deq = _activation_qdq(g, src, group[0].k, plan, xname, first, prov)
        for t in group:
            node = g.node(t.node)
            xi, wi = TARGET_OPS[t.op]
            node.set_input(xi, deq)
            node.set_input(wi, _weight_dq(g, plan, graph, t, node, wcache, prov))
            if t.node in plan.out_scales:
                _requantize_output(g, plan, graph, t, node, prov)
    for t in subset_list:
        w = g.initializers.get(t.w)
        if w is not None and not w.uses and w not in g.outputs:
            g.remove_initializer(t.w)
    g.toposort()
    return g, q_inputs


def _requantize_output(g: Graph, plan: QdqPlan, original: Graph, t: Target, node: Node, prov: Provenance) -> None:
    """``scales=power2``: the bias onto the accumulator's grid, the output requantized per channel."""
    y_scale, base = plan.out_scales[t.node]
    _, w_scale = plan.quantized_weight(original, t)
    if t.op == "Linear" and len(node.inputs) > 2 and node.inputs[2] is not None:
        b = g.const_value(node.inputs[2])
        if b is not None:
            rounded = round_bias(b, base, w_scale)
            node.set_input(2, g.add_initializer(f"{node.inputs[2].name}_{t.node}_grid", rounded, unique=True))
    output_qdq(g, node, y_scale, prov)


def _activation_qdq(g: Graph, src: Value, k: int, plan: QdqPlan, key: str, anchor: Node, prov: Provenance) -> Value:
    scheme = plan.scheme
    base = src.name
    if key in plan.pow2_base and scheme.mode == "dynamic":
        per_row = scheme.granularity == "row"
        sym = plan.pow2_sym.get(key, scheme.symmetric)
        qv, sv, zv = row_pow2_quantizer(g, src, plan.pow2_base[key], k, per_row, sym, anchor, prov)
        pattrs: dict[str, Any] = {}
        if per_row:
            rank = len(src.shape) if src.shape is not None else 0
            pattrs = {"axis": rank - 1 if rank else -1, "block_size": int(k)}
        ins = [qv, sv] + ([zv] if zv is not None else [])
        dq = g.add_node("DequantizeLinear", ins, pattrs, name=f"{base}_dequantize", before=anchor, provenance=prov)
        return dq.output
    if scheme.mode == "static":
        scale, zp = plan.static[key]
        sv = g.add_initializer(f"{base}_scale", scale, unique=True)
        zv = g.add_initializer(f"{base}_zero_point", zp, unique=True)
        q = g.add_node("QuantizeLinear", [src, sv, zv], name=f"{base}_quantize", before=anchor, provenance=prov)
        qv = q.output
        attrs: dict[str, Any] = {}
    else:
        standard = scheme.dtype == "uint8" and not scheme.symmetric and scheme.granularity == "tensor"
        if standard:
            q = g.add_node(
                "DynamicQuantizeLinear",
                [src],
                outputs=_qnames(g, base),
                name=f"{base}_quantize",
                before=anchor,
                provenance=prov,
            )
        else:
            q = g.add_node(
                "DynamicQuantize",
                [src],
                {
                    "to": DType.UINT8 if scheme.dtype == "uint8" else DType.INT8,
                    "symmetric": int(scheme.symmetric),
                    "granularity": scheme.granularity,
                },
                outputs=_qnames(g, base),
                name=f"{base}_quantize",
                before=anchor,
                provenance=prov,
            )
        qv, sv, zv = q.outputs
        attrs = {}
        if scheme.granularity == "row":
            rank = len(src.shape) if src.shape is not None else 0
            attrs = {"axis": rank - 1 if rank else -1, "block_size": int(k)}
    dq = g.add_node("DequantizeLinear", [qv, sv, zv], attrs, name=f"{base}_dequantize", before=anchor, provenance=prov)
    return dq.output


def _qnames(g: Graph, base: str) -> list[str]:
    """Names of a quantizer's outputs: ``<x>_q``, ``<x>_scale``, ``<x>_zero_point``."""
    return [g.unique_name(f"{base}_{suffix}") for suffix in ("q", "scale", "zero_point")]


def _weight_dq(
    g: Graph, plan: QdqPlan, original: Graph, t: Target, node: Node, cache: dict[str, Value], prov: Provenance
) -> Value:
    smoothed = t.x in plan.smooth
    key = f"{t.w}@{t.node}" if smoothed else t.w
    hit = cache.get(key)
    if hit is not None:
        return hit
    q, scale = plan.quantized_weight(original, t)
    base = t.w if not smoothed else f"{t.w}_{t.node}"
    qv = g.add_initializer(f"{base}_int8", q, unique=True)
    sv = g.add_initializer(f"{base}_scale", scale, unique=True)
    attrs = {"axis": 1} if scale.ndim == 1 else {}
    dq = g.add_node("DequantizeLinear", [qv, sv], attrs, name=f"{base}_dequantize", before=node, provenance=prov)
    cache[key] = dq.output
    return dq.output


__all__ = [
    "PASS_NAME",
    "QdqPlan",
    "Scheme",
    "Target",
    "apply",
    "quantize_weight",
    "select_targets",
    "smoothing_factors",
]
