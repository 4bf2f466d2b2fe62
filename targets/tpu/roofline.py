"""A roofline latency *estimate* for a lowered graph on a TPU chip — never a measurement.

Inputs: the work the trace recorded per op (FLOPs and bytes, ``OpRecord``) and
the chip's published peak rates and HBM bandwidth. Two figures:

1. ``lower_bound_s``: the whole-graph roofline, ``max(FLOPs / peak,
   minimal bytes / bandwidth)`` where the minimal bytes are the weights plus
   the graph's inputs and outputs, each moved once (perfect fusion and reuse).
2. ``estimate_s``: the sum over ops of each op's own roofline: a matmul takes
   ``max(FLOPs / peak, bytes / bandwidth)``; any other op is memory bound and
   takes ``bytes / bandwidth`` (elementwise ops unfused, so this errs high).

Peak rates by matmul type: bf16 at the chip's bf16 peak; int8 at its int8
peak; f32 at ``Precision.HIGHEST`` at a sixth of the bf16 peak (XLA emulates it
with six bf16 passes); int32 matmuls (rare, off the MXU) likewise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from accelopt.targets.tpu.chips import Chip
from accelopt.targets.tpu.lowering import OpRecord

LABEL = "estimate (roofline from published peak rates and HBM bandwidth; not a measurement)"
F32_PASSES = 6


@dataclass(frozen=True)
class RooflineEstimate:
    chip: str
    label: str
    matmul_flops: int  # bf16/f32 matmul FLOPs (2*M*K*N, padded dims)
    int8_ops: int  # int8 matmul operations
    other_flops: int  # elementwise/reduction work (not on the MXU; not timed)
    bytes_moved: int  # sum of per-op operand and result bytes (unfused)
    minimal_bytes: int  # weights + graph inputs + outputs, once
    compute_s: float
    memory_s: float
    lower_bound_s: float
    estimate_s: float
    bound: str  # "compute" | "memory": which term dominates the lower bound

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"TPU {self.chip} {self.label}: {self.estimate_s * 1e3:.3f} ms per-op roofline, "
            f"{self.lower_bound_s * 1e3:.3f} ms lower bound ({self.bound} bound); "
            f"{self.matmul_flops / 1e9:.2f} GFLOP matmul, {self.int8_ops / 1e9:.2f} GOP int8, "
            f"{self.minimal_bytes / 1e6:.1f} MB minimal traffic"
        )


def _peak(kind: str, chip: Chip) -> float:
    """Operations per second for a matmul record."""
    if kind == "int8_matmul":
        return chip.peak_int8_tops * 1e12
    if kind in ("matmul_f32", "matmul_int32"):
        return chip.peak_bf16_tflops * 1e12 / F32_PASSES
    return chip.peak_bf16_tflops * 1e12


def estimate(records: Iterable[OpRecord], chip: Chip, *, weight_bytes: int, io_bytes: int) -> RooflineEstimate:
    """Cases 1 and 2 for one export's recorded work on ``chip``."""
    bw = chip.hbm_gbps * 1e9
    mm_flops = int8_ops = other = moved = 0
    compute_s = per_op = 0.0
    for r in records:
        moved += r.bytes
        if r.kind in ("matmul", "int8_matmul"):
            kind = r.detail or r.kind
            if r.kind == "int8_matmul":
                int8_ops += r.flops
            else:
                mm_flops += r.flops
            t_compute = r.flops / _peak(kind, chip)
            compute_s += t_compute
            per_op += max(t_compute, r.bytes / bw)
        else:
            other += r.flops
            per_op += r.bytes / bw
    minimal = int(weight_bytes + io_bytes)
    memory_s = minimal / bw
    lower = max(compute_s, memory_s)
    return RooflineEstimate(
        chip=chip.name,
        label=LABEL,
        matmul_flops=mm_flops,
        int8_ops=int8_ops,
        other_flops=other,
        bytes_moved=moved,
        minimal_bytes=minimal,
        compute_s=compute_s,
        memory_s=memory_s,
        lower_bound_s=lower,
        estimate_s=max(per_op, lower),
        bound="compute" if compute_s >= memory_s else "memory",
    )
