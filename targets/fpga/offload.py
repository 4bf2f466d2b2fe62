"""Which layers of a quantized graph run on VTA, and the integer layer each one becomes.

A ``QLinear`` node runs on VTA (``Offload``) when everything between its
GEMM and its int8 result is integer work VTA's ALU can do (``requant``):

1. int8 inputs (uint8 ones are shifted to int8 on the host: ``q - 128``, the
   zero point with them) with a scale the compiler can name a base for: a
   constant per-tensor scale ``S`` (static quantization), or ``Mul(S, r)``
   with a constant scalar ``S`` and a run-time per-row (or per-tensor)
   factor ``r`` that must be ``2**-e`` (the int8 pass's ``scales=power2``);
2. a zero point of 0, a constant one with a constant scale (folded into
   the bias), or an int8 one per row at run time (asymmetric rows: the GEMM
   subtracts it through extra weight rows, ``requant.zero_point_rows``);
3. constant int8 weights ``[K, N]`` with per-channel or per-tensor scales and
   no zero point; an optional constant bias;
4. an int8 result: an output scale ``y_scale`` per channel or per tensor
   that is a power-of-two multiple (shift -15..15) of ``S * w_scale`` and a
   zero point of 0; no fused activation.

Every other node runs on the host, and a ``QLinear`` that fails a condition
is listed with the reason (``HostLayer``), e.g. "float result: only layers
requantized to int8 run on VTA (int8{scales=power2})". Rows per program:
the product of the input's leading dims with ``batch``/``seq`` bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Value
from accelopt.targets.fpga.requant import DenseLayer, from_scales, zero_point_rows


@dataclass(frozen=True, eq=False)
class Offload:
    """One ``QLinear`` node compiled for VTA."""

    node: str
    layer: DenseLayer
    base_scale: float
    row_shift: bool  # the input scale is computed at run time (per row or per tensor): SHR by e first
    input_offset: int  # 128 for uint8 inputs (shifted to int8 on the host), else 0
    rows: int
    zero_point_columns: int = 0  # run-time zero points: the GEMM subtracts them through this many extra columns

    @property
    def k(self) -> int:
        return self.layer.k - self.zero_point_columns

    @property
    def n(self) -> int:
        return self.layer.n

    @property
    def macs(self) -> int:
        return self.rows * self.k * self.n


@dataclass(frozen=True)
class HostLayer:
    """A node with MACs that stays on the host, and why."""

    node: str
    op: str
    reason: str


def _const(graph: Graph, v: Value | None) -> np.ndarray | None:
    return None if v is None else graph.const_value(v)


def _zero(arr: np.ndarray | None) -> bool:
    return arr is None or not np.any(arr)


def base_scale_of(graph: Graph, v: Value | None) -> tuple[float, bool] | str:
    """``(S, computed)`` of an activation scale (case 1), or why there is none."""
    if v is None:
        return "the activation has no scale"
    c = _const(graph, v)
    if c is not None:
        if c.size != 1:
            return "its constant activation scale is not per tensor"
        return float(c.reshape(())), False
    p = v.producer
    if p is not None and p.op == "Mul":
        for i in (0, 1):
            s = _const(graph, p.inputs[i])
            if s is not None and s.size == 1 and float(s.reshape(())) > 0:
                return float(s.reshape(())), True
    return "its activation scale is neither a constant nor S * 2^-e at run time (int8{scales=power2} writes that)"


def rows_of(v: Value, bindings: Mapping[str, int]) -> int | None:
    """The product of ``v``'s leading dims with symbols bound (None if one stays unknown)."""
    if v.shape is None or not v.shape:
        return None
    n = 1
    for d in v.shape[:-1]:
        if isinstance(d, int):
            n *= d
        elif isinstance(d, str) and d in bindings:
            n *= int(bindings[d])
        else:
            return None
    return n


def analyze_qlinear(graph: Graph, node: Node, bindings: Mapping[str, int]) -> Offload | str:
    """Cases 1-4 for one ``QLinear``: its ``Offload`` or the reason it stays on the host."""
    ins = list(node.inputs) + [None] * (9 - len(node.inputs))
    x, x_scale, x_zp, w, w_scale, w_zp, bias, y_scale, y_zp = ins[:9]
    if node.attr("activation", "none") != "none":
        return f"fused activation {node.attr('activation')!r} (VTA has none; int8{{scales=power2}} splits it off)"
    if y_scale is None:
        return "float result: only layers requantized to int8 run on VTA (int8{scales=power2})"
    if x is None or x.dtype not in (DType.INT8, DType.UINT8):
        return "its input is not int8/uint8"
    base = base_scale_of(graph, x_scale)
    if isinstance(base, str):
        return base
    s, computed = base
    offset = 128 if x.dtype == DType.UINT8 else 0
    zp_arr = _const(graph, x_zp)
    zp_columns = x_zp is not None and zp_arr is None  # case 2: per-row zero points at run time
    if zp_columns and (x.dtype != DType.INT8 or x_zp is None or x_zp.dtype != DType.INT8):
        return "run-time zero points must be int8 with int8 inputs"
    zp = (0 if zp_arr is None else int(np.asarray(zp_arr).reshape(-1)[0])) - offset
    if zp_arr is not None and zp_arr.size != 1:
        return "its input zero point is not per tensor"
    if zp and computed:
        return "a constant zero point with run-time scales would need a per-row correction"
    w_q, ws, bias_arr = _const(graph, w), _const(graph, w_scale), _const(graph, bias)
    if w_q is None or w_q.dtype != np.int8 or w_q.ndim != 2:
        return "its weight is not a constant int8 [K, N]"
    if ws is None or not _zero(_const(graph, w_zp)):
        return "its weight scale is not constant or its weight zero point is not 0"
    if bias is not None and bias_arr is None:
        return "its bias is computed at run time"
    ys = _const(graph, y_scale)
    yz = _const(graph, y_zp)
    if ys is None or (y_zp is not None and (yz is None or yz.dtype != np.int8 or np.any(yz))):
        return "its output is not int8 with a constant scale and zero point 0"
    rows = rows_of(x, bindings)
    if rows is None:
        return f"its input's leading dims {x.type} are unknown at lowering (bind batch/seq)"
    try:
        layer = from_scales(node.name, w_q, ws, s, ys, bias_arr, zp, row_shift=computed)
    except TargetError as e:
        return str(e).replace(f"layer {node.name}: ", "")
    extra = 0
    if zp_columns:
        zrows = zero_point_rows(w_q)
        extra = zrows.shape[0]
        layer = DenseLayer(node.name, np.vstack([w_q, zrows]), layer.bias, layer.shift, layer.row_shift)
    return Offload(node.name, layer, s, computed, offset, rows, extra)


def analyze(graph: Graph, bindings: Mapping[str, int]) -> tuple[list[Offload], list[HostLayer]]:
    """Every ``QLinear`` that runs on VTA, and every other node with MACs that stays on the host (with why)."""
    from accelopt.cost import node_macs

    offloads: list[Offload] = []
    host: list[HostLayer] = []
    for node in graph.nodes:
        if node.op == "QLinear":
            res = analyze_qlinear(graph, node, bindings)
            if isinstance(res, Offload):
                offloads.append(res)
                continue
            host.append(HostLayer(node.name, node.op, res))
            continue
        try:
            macs = node_macs(node, bindings)
        except (ValueError, IndexError):
            macs = 0
        if macs or node.op in ("QAttention", "MatMulInteger"):
            host.append(HostLayer(node.name, node.op, _host_reason(node)))
    return offloads, host


def _host_reason(node: Node) -> str:
    if node.op in ("ScaledDotProductAttention", "Attention"):
        return "attention scores and context multiply two activations: host"
    if node.op in ("Linear", "MatMul", "Gemm"):
        const_w = len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].is_const
        return "float layer (int8 quantizes it for VTA)" if const_w else "multiplies two activations: host"
    if node.op == "QAttention":
        return "fused QAttention (int8{scales=power2} splits its QKV projection into a layer VTA runs)"
    return "not an int8 dense layer"


def safe_name(name: str) -> str:
    """A file-system-safe version of a node name."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return out[:80] or "layer"


def host_macs(graph: Graph, bindings: Mapping[str, int], offloaded: set[str]) -> dict[str, int]:
    """MACs per node outside ``offloaded`` (the host's share)."""
    from accelopt.cost import node_macs

    out: dict[str, int] = {}
    for node in graph.nodes:
        if node.name in offloaded:
            continue
        try:
            m = node_macs(node, bindings)
        except (ValueError, IndexError):
            m = 0
        if node.op == "QAttention":  # projection + scores, as for Attention
            m = _qattention_macs(node, bindings)
        if m:
            out[node.name] = m
    return out


def _qattention_macs(node: Node, bindings: Mapping[str, int]) -> int:
    x, w = node.inputs[0], node.inputs[3]
    rows = rows_of(x, bindings) if x is not None else None
    if rows is None or w is None or w.shape is None or x is None or x.shape is None or len(x.shape) < 2:
        return 0
    seq = x.shape[-2]
    s = int(bindings.get(seq, 0)) if isinstance(seq, str) else int(seq or 0)
    k, n3 = (int(d) if isinstance(d, int) else 0 for d in w.shape)
    return rows * k * n3 + 2 * rows * s * (n3 // 3)


__all__ = ["HostLayer", "Offload", "analyze", "analyze_qlinear", "base_scale_of", "host_macs", "rows_of", "safe_name"]
