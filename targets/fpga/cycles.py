"""The cycle model: an estimate of a VTA program's time, simulating the three modules and their queues in time.

Costs per instruction (``VTAConfig`` gives the rates; every figure is an
estimate, never a measurement):

1. GEMM: ``iter_out * iter_in * (uop_end - uop_bgn)`` cycles (one
   BATCH x BLOCK_IN by BLOCK_IN x BLOCK_OUT product per cycle; a reset GEMM
   clears one vector per cycle);
2. ALU: ``alu_cycles_per_op`` (2) times that;
3. LOAD / STORE: a fixed latency per transfer (``dma_latency_cycles``) plus
   ``bytes / bus bytes`` cycles on the memory bus, which all three modules
   share: a transfer's bytes move only while the bus is free, so ACC loads,
   weight/input loads and stores contend for it. A LOAD/STORE of nothing
   (a no-op carrying tokens) and FINISH take one cycle.

The schedule is an event simulation: each module runs its instructions in
order; an instruction starts when its module is free and every token it pops
has been pushed (tokens are pushed when the pushing instruction ends); among
the modules that can start, the earliest start goes first, so bus contention
is resolved in time order. The result (``CycleEstimate``) has the program's
cycles (the last instruction's end), each module's busy cycles, the bus's
busy cycles, GEMM-core utilization (non-reset GEMM cycles / total), the
useful MAC rate against the peak, and which resource bounds the program.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import UOP_BYTES, VTAConfig
from accelopt.targets.fpga.isa import AluInsn, FinishInsn, GemmInsn, Insn, MemInsn, MemType
from accelopt.targets.fpga.modules import MODULES, module_of, tokens

ESTIMATE_NOTE = "estimate from the analytic cycle model, not a measurement"


@dataclass
class CycleEstimate:
    """What the cycle model says about one program (all cycle counts are estimates)."""

    config: VTAConfig
    cycles: int
    busy: dict[str, int]
    bus_cycles: int
    gemm_cycles: int
    reset_cycles: int
    alu_cycles: int
    macs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.cycles / (self.config.clock_mhz * 1e6)

    @property
    def utilization(self) -> float:
        """GEMM-core utilization: cycles doing (non-reset) GEMM work over all cycles."""
        return self.gemm_cycles / self.cycles if self.cycles else 0.0

    @property
    def mac_utilization(self) -> float:
        """Useful MACs (unpadded) over the peak's MACs in the same cycles."""
        return self.macs / (self.cycles * self.config.macs_per_cycle) if self.cycles else 0.0

    @property
    def gops(self) -> float:
        return 2.0 * self.macs / self.seconds / 1e9 if self.cycles else 0.0

    @property
    def bound(self) -> str:
        """The resource busiest over the run: ``compute``, ``load``, ``store`` or ``bus``."""
        loads = dict(self.busy)
        loads["bus"] = self.bus_cycles
        return max(loads, key=lambda k: loads[k])

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "seconds": self.seconds,
            "busy": dict(self.busy),
            "bus_cycles": self.bus_cycles,
            "gemm_cycles": self.gemm_cycles,
            "reset_cycles": self.reset_cycles,
            "alu_cycles": self.alu_cycles,
            "macs": self.macs,
            "utilization": self.utilization,
            "mac_utilization": self.mac_utilization,
            "gops": self.gops,
            "peak_gops": self.config.peak_gops,
            "bound": self.bound,
            "note": ESTIMATE_NOTE,
            **self.extra,
        }


def _elem_bytes(insn: MemInsn, c: VTAConfig) -> int:
    return {
        MemType.UOP: UOP_BYTES,
        MemType.WGT: c.wgt_elem_bytes,
        MemType.INP: c.inp_elem_bytes,
        MemType.ACC: c.acc_elem_bytes,
        MemType.OUT: c.out_elem_bytes,
        MemType.ACC_8BIT: c.acc_elem_bytes // 4,
    }[insn.memory_type]


def estimate_cycles(insns: Sequence[Insn], config: VTAConfig, macs: int = 0) -> CycleEstimate:
    """Schedule ``insns`` in time (see the module docstring); ``macs`` are the useful MACs for the rates."""
    c = config
    lists: dict[str, list[int]] = {m: [] for m in MODULES}
    for i, insn in enumerate(insns):
        lists[module_of(insn)].append(i)
    pos = dict.fromkeys(MODULES, 0)
    free = dict.fromkeys(MODULES, 0)
    busy = dict.fromkeys(MODULES, 0)
    queues: dict[str, deque[int]] = {q: deque() for q in ("l2g", "g2l", "g2s", "s2g")}
    bus_free = bus_busy = gemm = reset = alu = 0
    end_time = 0
    while True:
        best: tuple[int, str] | None = None
        for m in MODULES:
            if pos[m] >= len(lists[m]):
                continue
            insn = insns[lists[m][pos[m]]]
            pops, _, _ = tokens(insn)
            if any(not queues[q] for q in pops):
                continue
            start = max([free[m]] + [queues[q][0] for q in pops])
            if best is None or start < best[0]:
                best = (start, m)
        if best is None:
            if any(pos[m] < len(lists[m]) for m in MODULES):
                raise TargetError("cycle model: the program deadlocks (run the simulator for the details)")
            break
        start, m = best
        i = lists[m][pos[m]]
        insn = insns[i]
        pops, pushes, _ = tokens(insn)
        for q in pops:
            queues[q].popleft()
        if isinstance(insn, GemmInsn):
            dur = insn.iter_out * insn.iter_in * max(0, insn.uop_end - insn.uop_bgn)
            if insn.reset:
                reset += dur
            else:
                gemm += dur
            end = start + dur
        elif isinstance(insn, AluInsn):
            dur = c.alu_cycles_per_op * insn.iter_out * insn.iter_in * max(0, insn.uop_end - insn.uop_bgn)
            alu += dur
            end = start + dur
        elif isinstance(insn, MemInsn) and insn.x_size and insn.y_size:
            nbytes = insn.x_size * insn.y_size * _elem_bytes(insn, c)
            xfer = -(-nbytes // c.bus_bytes)
            begin = max(start + c.dma_latency_cycles, bus_free)
            end = begin + xfer
            bus_free = end
            bus_busy += xfer
        else:  # no-op LOAD/STORE, FINISH
            end = start + 1
        busy[m] += end - start
        free[m] = end
        end_time = max(end_time, end)
        for q in pushes:
            queues[q].append(end)
        pos[m] += 1
        if isinstance(insn, FinishInsn):
            break
    return CycleEstimate(c, end_time, busy, bus_busy, gemm, reset, alu, macs)


def combine(estimates: Sequence[CycleEstimate], config: VTAConfig) -> CycleEstimate:
    """Programs run one after another: cycles, busy times and MACs add up."""
    busy = dict.fromkeys(MODULES, 0)
    for e in estimates:
        for m in MODULES:
            busy[m] += e.busy.get(m, 0)
    return CycleEstimate(
        config,
        sum(e.cycles for e in estimates),
        busy,
        sum(e.bus_cycles for e in estimates),
        sum(e.gemm_cycles for e in estimates),
        sum(e.reset_cycles for e in estimates),
        sum(e.alu_cycles for e in estimates),
        sum(e.macs for e in estimates),
    )


__all__ = ["ESTIMATE_NOTE", "CycleEstimate", "combine", "estimate_cycles"]
