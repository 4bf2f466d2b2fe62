"""The int8 pass's ``scales=power2`` steps that need the QDQ plan: which layers, and their calibration.

1. ``split_targets``: split the quantizable layers' fused activations and
   Attention nodes (``quant_power2.split_for_power2``) and find the targets
   again in the split graph; an Attention target becomes its QKV projection,
   the Linear named ``<attention>_qkv`` (``nodes=`` and ``exclude=`` given by
   the Attention's name follow it).
2. ``calibrate_power2``: one calibration pass over the (smoothed) float graph
   observes every quantized input and every target's output; each input gets
   its base scale ``S`` (by the pass's calibration method: minmax by default),
   per tensor for ``mode=static`` (a static quantizer), per row otherwise;
   with ``activations=asymmetric`` only inputs whose range is lopsided (the
   smaller side under a quarter of the larger, e.g. after GELU) get a zero
   point per row: on all-MiniLM-L6-v2 that keeps the accuracy of asymmetric
   rows everywhere (worst token cosine 0.9916 against 0.9913; symmetric
   0.9884) and spares the accelerator the zero-point columns of the other
   layers. Each target gets its per-channel output shifts and scales
   (``quant_power2.output_shifts`` / ``output_scales``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accelopt.ir.graph import Graph
from accelopt.passes.quant_calibration import choose_range, observe, qparams
from accelopt.passes.quant_power2 import SHIFT_RANGE, base_scale, output_scales, output_shifts, split_for_power2
from accelopt.passes.quant_qdq import QdqPlan, Target, apply, select_targets

#: asymmetric activations get a zero point per row only where the calibrated range is this lopsided
LOPSIDED = 0.25


def lopsided(lo: float, hi: float) -> bool:
    """A range whose smaller side is under ``LOPSIDED`` of its larger one (after GELU: about -0.17 vs several)."""
    small, large = sorted((abs(lo), abs(hi)))
    return small < LOPSIDED * large


def split_targets(
    graph: Graph,
    targets: list[Target],
    ops: Sequence[str],
    exclude: Sequence[str],
    nodes: Sequence[str],
    notes: list[str],
) -> tuple[Graph, list[Target]]:
    """Case 1: the split graph and its targets (the same layers, Attention ones as their QKV Linear)."""
    split, split_notes = split_for_power2(graph, [t.node for t in targets])
    notes.extend(split_notes)
    rename = {t.node: f"{t.node}_qkv" for t in targets if t.op == "Attention"}
    all_ops = tuple(dict.fromkeys(tuple(ops) + (("Linear",) if rename else ())))
    new, _ = select_targets(
        split, all_ops, tuple(rename.get(n, n) for n in exclude), tuple(rename.get(n, n) for n in nodes)
    )
    wanted = {rename.get(t.node, t.node) for t in targets}
    return split, [t for t in new if t.node in wanted]


def calibrate_power2(graph: Graph, plan: QdqPlan, batches: list, method: str, percentile: float) -> str:
    """Case 2: fills ``plan.static`` or ``plan.pow2_base``, and ``plan.out_scales``; returns a note."""
    smoothed, qin = apply(graph, plan, plan.targets, quantize=False)
    outs = {t.node: smoothed.node(t.node).outputs[0].name for t in plan.targets}
    obs = observe(smoothed, list(qin.values()) + list(outs.values()), batches, histogram=method != "minmax")
    for xname, vname in qin.items():
        lo, hi = choose_range(obs[vname], method, percentile)
        if plan.scheme.mode == "static":  # a constant scale (and zero point) VTA folds into its bias
            plan.static[xname] = qparams(lo, hi, plan.scheme.np_dtype, plan.scheme.symmetric)
        else:
            symmetric = plan.scheme.symmetric or not lopsided(lo, hi)
            plan.pow2_sym[xname] = symmetric
            plan.pow2_base[xname] = base_scale(lo, hi, symmetric)
    shifts = []
    for t in plan.targets:
        base = np.float32(plan.static[t.x][0] if plan.scheme.mode == "static" else plan.pow2_base[t.x])
        _, w_scale = plan.quantized_weight(graph, t)
        ws = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (t.n,))
        y_abs = obs[outs[t.node]].channel_absmax
        sh = output_shifts(np.zeros(t.n) if y_abs is None else y_abs, base * ws)
        plan.out_scales[t.node] = (output_scales(base, ws, sh), base)
        shifts.append(sh)
    allsh = np.concatenate(shifts) if shifts else np.zeros(0, np.int64)
    capped = int((allsh == SHIFT_RANGE[1]).sum())
    rows = sum(int(np.asarray(next(iter(b.values()))).shape[0]) for b in batches if b)
    return (
        f"power2: base scales on {rows} calibration sample(s) ({method}); output shifts "
        f"{int(allsh.min(initial=0))}..{int(allsh.max(initial=0))} over {len(plan.targets)} layer(s)"
        + (f"; {capped} channel(s) at the cap {SHIFT_RANGE[1]} may clip" if capped else "")
    )


__all__ = ["LOPSIDED", "calibrate_power2", "lopsided", "split_targets"]
