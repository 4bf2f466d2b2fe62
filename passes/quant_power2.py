"""``scales=power2`` for the int8 pass: scales an integer accelerator can apply with shifts (VTA).

An accelerator such as VTA multiplies int8 by int8 into int32 and can then
only add, shift and clamp before it stores int8. So with this option every
quantized layer's scales are related by powers of two:

1. **Activations**: a base scale ``S`` per quantized input, calibrated
   (``max |x| / 127`` over the calibration data). Static (``mode=static``):
   ``S`` per tensor. Dynamic (``mode=dynamic``, per row): each row's scale is
   ``S * 2**-e`` with ``e`` the largest integer in 0..15 for which the row's
   ``max |x|`` still fits 127 steps, so small rows keep their precision
   (written with standard ops: ``Abs``, ``ReduceMax``, ``Log``, ``Floor``,
   ``Clip``, ``Pow`` and a ``Mul`` by ``S``, then a blocked per-row
   ``QuantizeLinear``/``DequantizeLinear``). Symmetric int8 only.
2. **Outputs**: each quantized layer's result is requantized to int8 per
   output channel with ``y_scale[n] = S * w_scale[n] * 2**shift[n]``, the
   shift calibrated (``ceil(log2(max |y_n| / (127 * S * w_scale[n])))``,
   clipped to 0..15) so the channel's calibrated range fits: a
   ``QuantizeLinear``/``DequantizeLinear`` pair on the last axis after the
   layer, which ``lower-quantized`` folds into ``QLinear``'s output scale.
3. **Bias**: rounded onto the accumulator's grid (a multiple of
   ``S * w_scale[n]``), so it is an exact int32 in the accelerator's unit.

The layers must be separate for their outputs to be requantized, so first
(``split_for_power2``):

4. ``Linear{activation}`` becomes ``Linear`` then the activation as its own
   node (``Gelu``, ``Gelu{approximate=tanh}``, ``QuickGelu``, ``Relu``);
5. ``Attention`` with a constant packed weight becomes its QKV projection
   (``Linear``) and the rest in standard form: ``Reshape`` to
   ``[B, S, 3, heads, d]``, ``Transpose`` to ``[3, B, heads, S, d]``, three
   ``Gather``, ``ScaledDotProductAttention`` (with the key-padding mask as an
   additive ``[B, 1, 1, S]`` mask: ``mask_filter_value`` where the mask is 0),
   ``Transpose`` and ``Reshape`` back; the same numbers as ``Attention``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Provenance, Value

log = logging.getLogger(__name__)

SHIFT_RANGE = (0, 15)
#: activation of a fused Linear -> (op, attrs) of the node that applies it
ACTIVATION_NODES: dict[str, tuple[str, dict]] = {
    "gelu": ("Gelu", {"approximate": "none"}),
    "gelu_tanh": ("Gelu", {"approximate": "tanh"}),
    "gelu_sigmoid": ("QuickGelu", {}),
    "relu": ("Relu", {}),
}
_TINY = np.float32(np.finfo(np.float32).tiny)


# ------------------------------------------------------------ cases 4, 5
def split_for_power2(graph: Graph, names: Sequence[str] | None = None, rule: str = "power2") -> tuple[Graph, list[str]]:
    """A copy of ``graph`` with activations split off Linear layers (case 4) and Attention split (case 5).

    ``names`` limits the rewrite to those nodes (all Linear/Attention nodes by default). Returns the copy
    and a note per kind of rewrite.
    """
    g = graph.copy()
    acts = attns = 0
    wanted = set(names) if names is not None else None
    for node in list(g.nodes):
        if wanted is not None and node.name not in wanted:
            continue
        if node.op == "Linear" and node.attr("activation", "none") != "none":
            _split_activation(g, node, rule)
            acts += 1
        elif node.op == "Attention" and _packed_weight(g, node) is not None:
            _split_attention(g, node, rule)
            attns += 1
    notes = []
    if acts:
        notes.append(f"power2: {acts} Linear activation(s) split into their own node (outputs requantize before them)")
    if attns:
        notes.append(
            f"power2: {attns} Attention node(s) split into the QKV projection (a Linear layer) and "
            "ScaledDotProductAttention in standard form"
        )
    if acts or attns:
        g.toposort()
    return g, notes


def _split_activation(g: Graph, node: Node, rule: str) -> None:
    op, attrs = ACTIVATION_NODES[str(node.attr("activation"))]
    prov = Provenance("quantize-int8", rule, (node.name,))
    out = node.outputs[0]
    lin = g.add_node("Linear", list(node.inputs), {"activation": "none"}, name=node.name, before=node, provenance=prov)
    act = g.add_node(op, [lin.output], attrs, name=f"{node.name}_{op.lower()}", before=node, provenance=prov)
    _replace(g, node, out, act.output)
    g.rename_node(lin, node.name)


def _packed_weight(g: Graph, node: Node) -> np.ndarray | None:
    w = g.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    x = node.inputs[0]
    if w is None or w.ndim != 2 or x is None or x.type.rank != 3:
        return None
    return w


def _split_attention(g: Graph, node: Node, rule: str) -> None:
    """Case 5: ``Attention(x, W, b, mask)`` -> QKV ``Linear`` + standard ops + ``ScaledDotProductAttention``."""
    w = _packed_weight(g, node)
    assert w is not None
    heads = int(node.attr("num_heads"))
    hidden = w.shape[1] // 3
    d = hidden // heads
    prov = Provenance("quantize-int8", rule, (node.name,))
    name = node.name
    x = node.inputs[0]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    out = node.outputs[0]

    def add(op: str, ins: Sequence[Value | None], attrs: dict | None = None, suffix: str = "") -> Node:
        return g.add_node(op, ins, attrs or {}, name=f"{name}_{suffix or op.lower()}", before=node, provenance=prov)

    def const(suffix: str, arr: np.ndarray) -> Value:
        return g.add_initializer(f"{name}_{suffix}", arr, unique=True)

    qkv = add("Linear", [x, node.inputs[1]] + ([bias] if bias is not None else []), {"activation": "none"}, "qkv")
    r = add("Reshape", [qkv.output, const("qkv_shape", np.array([0, 0, 3, heads, d], np.int64))], suffix="split_heads")
    t = add("Transpose", [r.output], {"perm": [2, 0, 3, 1, 4]}, "qkv_transpose")
    parts = [
        add("Gather", [t.output, const(f"{p}_index", np.array(i, np.int64))], {"axis": 0}, p).output
        for i, p in enumerate(("q", "k", "v"))
    ]
    sdpa_ins: list[Value | None] = list(parts)
    if mask is not None:
        zero = const("mask_zero", np.zeros((), mask.dtype.np))
        pad = add("Equal", [mask, zero], suffix="mask_pad")
        filt = const("mask_filter", np.array(float(node.attr("mask_filter_value", -10000.0)), np.float32))
        add_mask = add("Where", [pad.output, filt, const("mask_keep", np.zeros((), np.float32))], suffix="mask_add")
        sdpa_ins.append(add("Unsqueeze", [add_mask.output, const("mask_axes", np.array([1, 2], np.int64))]).output)
    scale = float(node.attr("scale", 0.0)) or 1.0 / math.sqrt(d)
    o = add("ScaledDotProductAttention", sdpa_ins, {"scale": scale}, "sdpa")
    ot = add("Transpose", [o.output], {"perm": [0, 2, 1, 3]}, "merge_transpose")
    merged = add("Reshape", [ot.output, const("merge_shape", np.array([0, 0, hidden], np.int64))], suffix="merge_heads")
    _replace(g, node, out, merged.output)
    g.rename_node(qkv, f"{name}_qkv")


def _replace(g: Graph, old: Node, out: Value, new: Value) -> None:
    """``new`` takes ``out``'s place (its uses, its graph-output slot and its name); ``old`` goes."""
    name = out.name
    out.replace_all_uses_with(new)
    if out in g.outputs:
        g.set_outputs([new if v is out else v for v in g.outputs])
    g.remove_node(old)
    g.rename_value(new, name)


# ------------------------------------------------------------- cases 1-3
def base_scale(lo: float, hi: float, symmetric: bool) -> np.float32:
    """Case 1: ``S = max |x| / 127`` (symmetric) or ``(max(x, 0) - min(x, 0)) / 255`` (1 for all zeros)."""
    span = max(abs(lo), abs(hi)) / 127.0 if symmetric else (max(hi, 0.0) - min(lo, 0.0)) / 255.0
    return np.float32(span) if span > 0 else np.float32(1.0)


def output_shifts(y_absmax: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Case 2's shifts: the smallest ``s`` in 0..15 with ``max |y_n| <= 127 * unit[n] * 2**s``."""
    need = np.asarray(y_absmax, np.float64) / (127.0 * np.asarray(unit, np.float64))
    with np.errstate(divide="ignore"):
        s = np.ceil(np.log2(np.maximum(need, 1e-300)))
    return np.clip(s, *SHIFT_RANGE).astype(np.int64)


def output_scales(base: np.float32, w_scale: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """``y_scale = (S * w_scale) * 2**shift`` in float32 (the ratio to ``S * w_scale`` exactly a power of two)."""
    unit = np.float32(base) * np.asarray(w_scale, np.float32)
    return (unit * np.exp2(shifts).astype(np.float32)).astype(np.float32)


def round_bias(bias: np.ndarray, base: np.float32, w_scale: np.ndarray) -> np.ndarray:
    """Case 3: the bias rounded onto the grid of ``S * w_scale[n]``."""
    unit = np.float32(base) * np.asarray(w_scale, np.float32)
    return (np.rint(np.asarray(bias, np.float32) / unit) * unit).astype(np.float32)


def row_pow2_quantizer(
    g: Graph, src: Value, base: np.float32, k: int, per_row: bool, symmetric: bool, anchor: Node, prov: Provenance
) -> tuple[Value, Value, Value | None]:
    """Case 1's dynamic quantizer: ``(q, scale, zero_point)``, ``scale = S * 2**-e`` per row (or per tensor).

    Symmetric: ``e`` is the largest exponent (0..15) with ``max |x| <= 127 * scale``; no zero point.
    Asymmetric: with ``[lo, hi]`` the row's range widened to hold 0, the largest with ``hi - lo <= 255 *
    scale``, and the int8 zero point ``round(-128 - lo / scale)`` per row.
    """
    name = src.name

    def add(op: str, ins: Sequence[Value | None], attrs: dict | None = None, suffix: str = "") -> Node:
        return g.add_node(op, ins, attrs or {}, name=f"{name}_{suffix}", before=anchor, provenance=prov)

    def const(suffix: str, arr: Any) -> Value:
        return g.add_initializer(f"{name}_{suffix}", np.asarray(arr, np.float32), unique=True)

    def reduce(op: str, x: Value, suffix: str) -> Value:
        if per_row:
            axes = g.add_initializer(f"{name}_last_axis", np.array([-1], np.int64), unique=True)
            return add(op, [x, axes], {"keepdims": 1}, suffix).output
        return add(op, [x], {"keepdims": 0}, suffix).output

    rank = src.type.rank or 0
    zero = const("zero", 0.0)
    if symmetric:
        span = reduce("ReduceMax", add("Abs", [src], suffix="abs").output, "absmax")
        levels = 127
    else:
        hi = add("Max", [reduce("ReduceMax", src, "max"), zero], suffix="hi").output
        lo = add("Min", [reduce("ReduceMin", src, "min"), zero], suffix="lo").output
        span = add("Sub", [hi, lo], suffix="span").output
        levels = 255
    floor = add("Max", [span, const("tiny", _TINY)], suffix="span_floor")
    ratio = add("Div", [const("range", np.float32(base) * np.float32(levels)), floor.output], suffix="headroom")
    log2 = add(
        "Mul", [add("Log", [ratio.output], suffix="log").output, const("inv_ln2", 1 / math.log(2))], suffix="log2"
    )
    e = add("Floor", [log2.output], suffix="exponent_floor")
    clipped = add("Clip", [e.output, zero, const("exp_max", SHIFT_RANGE[1])], suffix="exponent")
    step = add("Pow", [const("half", 0.5), clipped.output], suffix="step")
    scale = add("Mul", [const("base_scale", base), step.output], suffix="scale").output
    zp: Value | None = None
    if not symmetric:
        offset = add("Div", [lo, scale], suffix="lo_steps")
        zf = add("Sub", [const("qmin", -128.0), offset.output], suffix="zero_float")
        qmin = zf.inputs[0]
        zr = add(
            "Clip",
            [add("Round", [zf.output], suffix="zero_round").output, qmin, const("qmax", 127.0)],
            suffix="zero_clip",
        )
        zp = add("Cast", [zr.output], {"to": DType.INT8}, "zero_point").output
    attrs: dict = {"output_dtype": DType.INT8.onnx}
    if per_row:
        attrs.update(axis=rank - 1 if rank else -1, block_size=int(k))
    q = add("QuantizeLinear", [src, scale] + ([zp] if zp is not None else []), attrs, "quantize")
    return q.output, scale, zp


def output_qdq(g: Graph, node: Node, y_scale: np.ndarray, prov: Provenance) -> None:
    """Case 2: ``QuantizeLinear``/``DequantizeLinear`` on the last axis after ``node``'s output."""
    out = node.outputs[0]
    rank = out.type.rank or 1
    uses = list(out.uses)
    was_output = out in g.outputs
    sv = g.add_initializer(f"{node.name}_out_scale", np.asarray(y_scale, np.float32), unique=True)
    zv = g.add_initializer(f"{node.name}_out_zero_point", np.zeros(y_scale.shape, np.int8), unique=True)
    attrs = {"axis": rank - 1}
    q = g.add_node("QuantizeLinear", [out, sv, zv], attrs, name=f"{node.name}_requantize", after=node, provenance=prov)
    dq = g.add_node(
        "DequantizeLinear", [q.output, sv, zv], attrs, name=f"{node.name}_out_dequantize", after=q, provenance=prov
    )
    for user, i in uses:
        user.set_input(i, dq.output)
    if was_output:  # the graph's output keeps its name
        g.set_outputs([dq.output if v is out else v for v in g.outputs])
        name = out.name
        g.rename_value(out, g.unique_name(f"{name}_float"))
        g.rename_value(dq.output, name)


__all__ = [
    "ACTIVATION_NODES",
    "SHIFT_RANGE",
    "base_scale",
    "output_qdq",
    "output_scales",
    "output_shifts",
    "round_bias",
    "row_pow2_quantizer",
    "split_for_power2",
]
