"""The ``fpga`` target: int8 dense layers compiled to VTA programs, the rest on the host.

``FpgaTarget.lower(graph)`` does, in order:

1. Resolve the VTA configuration: ``board`` (a preset, default ``pynq``) or a
   JSON ``config`` file (``--target fpga{config=vta.json}``).
2. Bind the batch (option ``batch``, 1) and the sequence length (option
   ``seq_len``, else the validation samples', else 128): each program is
   compiled for a fixed number of rows.
3. Find the layers VTA runs (``offload.analyze``: ``QLinear`` nodes whose
   requantization is integer work) and why the others stay on the host.
4. Compile each to a program (``emit.compile_layer``), giving each program
   its own DRAM segment, and build the DRAM image.
5. Estimate each program's time with the cycle model, read its counters off
   its instructions, and split the graph's MACs between VTA and the host.
6. With ``host=cpu``, compile the host part with the cpu target.
7. Return an ``FpgaArtifact`` (``artifact.py``); ``describe()`` feeds the
   report (``details.py``).

The host part runs on accelopt's interpreter (``host=interpreter``, the
default) or is compiled by the cpu target (``host=cpu``, TVM): the offloaded
layers then are calls from the compiled code back into the simulator
(``host_cpu.py``).

Capability descriptor: int8 weights per channel, asymmetric int8 activations
(per-row zero points: VTA's GEMM subtracts them through extra weight rows),
``scales=power2`` (the int8 pass then writes scales VTA applies with shifts),
SmoothQuant alpha 0.5 (the int8 pass's default for this target), GEMM tiles
of BLOCK_OUT x BLOCK_IN, estimate-only timings. On all-MiniLM-L6-v2 (32
held-out sentences, interpreter): symmetric rows give worst token cosine
0.988, asymmetric 0.991; without SmoothQuant 0.989.
Default pipeline: ``cleanup,fuse,int8``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets.base import Capabilities, Target, bound_batch, register_target
from accelopt.targets.buckets import input_spec
from accelopt.targets.fpga.artifact import FpgaArtifact, Layer
from accelopt.targets.fpga.config import DEFAULT_BOARD, PRESETS, VTAConfig, get_config
from accelopt.targets.fpga.counters import static_counters
from accelopt.targets.fpga.cycles import ESTIMATE_NOTE, CycleEstimate, combine, estimate_cycles
from accelopt.targets.fpga.emit import compile_layer
from accelopt.targets.fpga.offload import analyze, host_macs, safe_name
from accelopt.targets.fpga.program import ALIGN, DramImage
from accelopt.targets.fpga.simulator import MIN_DRAM_ADDRESS

log = logging.getLogger(__name__)

DEFAULT_SEQ_LEN = 128
#: what runs the host part: accelopt's interpreter, or the cpu target's compiled code (TVM)
HOSTS = ("interpreter", "cpu")
LABEL = "VTA accelerator (default Pynq-class config), simulated; times are estimates"


@dataclass(frozen=True)
class FpgaOptions:
    """``--target fpga{board=zcu104}``, ``fpga{config=vta.json}``, ``fpga{seq_len=64,batch=2}``, ``fpga{host=cpu}``."""

    board: str = DEFAULT_BOARD
    config: str = ""
    seq_len: int = 0
    batch: int = 1
    host: str = "interpreter"

    def __post_init__(self) -> None:
        if not self.config and self.board not in PRESETS:
            raise ValueError(f"unknown board {self.board!r}; presets: {', '.join(PRESETS)} (or config=FILE.json)")
        if self.host not in HOSTS:
            raise ValueError(f"host={self.host!r}: expected one of {', '.join(HOSTS)}")
        if self.batch < 1 or self.seq_len < 0:
            raise ValueError(f"batch must be >= 1 and seq_len >= 0, got batch={self.batch}, seq_len={self.seq_len}")


@register_target
class FpgaTarget(Target):
    """VTA (apache/tvm-vta's int8 GEMM accelerator): compiled programs, simulated bit-exactly, timed by a model."""

    name = "fpga"
    summary = LABEL
    default_passes = "cleanup,fuse,int8"
    Options = FpgaOptions

    def with_batch(self, batch: int) -> FpgaTarget:
        """``--batch N``: the batch the programs are compiled for (their rows are batch x sequence)."""
        b = bound_batch("fpga", self.options.batch, batch)
        return self if b == self.options.batch else FpgaTarget(dataclasses.replace(self.options, batch=b))

    @property
    def vta_config(self) -> VTAConfig:
        return get_config(self.options.board, self.options.config)

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # Target: a ClassVar; here it follows the board
        c = self.vta_config
        return Capabilities(
            name=self.name,
            description=f"{LABEL}: {c.describe()}",
            dtypes=("float32", "int8", "int32"),
            preferred_layouts={"matmul_weight": "KN"},
            tile_sizes={"gemm": (c.block_out, c.block_in)},
            pad_multiple=c.block_in,
            quantization={
                "weights": "per-channel-symmetric",
                "activations": "asymmetric",
                "scales": "power2",
                "smoothquant": "0.5",
            },
            estimate_only=True,
            extra={"vta": c.as_dict(), "design": c.design_name, "boards": sorted(PRESETS)},
        )

    def lower(self, graph: Graph, *, model: Any = None, samples: Any = None) -> FpgaArtifact:
        """Cases 1-6 of the module docstring."""
        t0 = time.perf_counter()
        config = self.vta_config  # case 1
        notes: list[str] = []
        bindings = _bindings(graph, self.options, samples, notes)  # case 2
        offloads, host = analyze(graph, bindings)  # case 3
        layers: list[Layer] = []
        estimates: list[CycleEstimate] = []
        address = MIN_DRAM_ADDRESS
        for i, off in enumerate(offloads):  # case 4
            name = f"{i:03d}_{safe_name(off.node)}"
            prog = compile_layer(off.layer, off.rows, config, address, name)
            address = -(-prog.segment[1] // ALIGN) * ALIGN
            est = estimate_cycles(prog.insns, config, off.macs)
            info: dict[str, Any] = {
                "estimate": est.as_dict(),
                "counters": static_counters(prog.insns, config).as_dict(),
                "tiling": prog.plan.describe(),
                "macs": off.macs,
            }
            estimates.append(est)
            layers.append(
                Layer(
                    name, off.node, prog, off.base_scale, off.row_shift, off.input_offset, off.zero_point_columns, info
                )
            )
        image = DramImage.build([layer.program for layer in layers])
        compile_s = time.perf_counter() - t0
        # case 5
        vta_macs = {off.node: off.macs for off in offloads}
        host_split = host_macs(graph, bindings, set(vta_macs))
        total = combine(estimates, config) if estimates else None
        on_vta, on_host = sum(vta_macs.values()), sum(host_split.values())
        if not layers:
            notes.append("no layer runs on VTA: quantize with int8 (scales=power2 is the fpga default) to offload")
        meta: dict[str, Any] = {
            "label": LABEL,
            "design": config.design_name,
            "board": config.name,
            "config_summary": config.describe(),
            "bindings": dict(bindings),
            "host": self.options.host,
            "compile_seconds": compile_s,
            "dram_bytes": int(image.data.size),
            "inputs": [input_spec(v, str(v.dtype), graph) for v in graph.inputs],
            "outputs": [{"name": v.name, "dtype": str(v.dtype), "shape": list(v.shape or ())} for v in graph.outputs],
            "batch": {
                "requested": self.options.batch,
                "export": self.options.batch,
                "padded": False,
                "note": "another batch runs in chunks of the compiled rows",
            },
            "buckets": [
                {
                    "name": f"b{bindings['batch']}_s{bindings['seq']}",
                    "batch": bindings["batch"],
                    "seq_len": bindings["seq"],
                }
            ],
            "macs": {
                "vta": on_vta,
                "host": on_host,
                "total": on_vta + on_host,
                "vta_share": on_vta / (on_vta + on_host) if on_vta + on_host else 0.0,
                "by_node": {
                    **{n: {"where": "vta", "macs": m} for n, m in vta_macs.items()},
                    **{n: {"where": "host", "macs": m} for n, m in host_split.items()},
                },
            },
            "host_layers": [{"node": h.node, "op": h.op, "reason": h.reason} for h in host],
            "total_estimate": total.as_dict() if total is not None else None,
            "estimate_note": ESTIMATE_NOTE,
            "notes": notes,
        }
        log.info("fpga: %d program(s) compiled in %.2f s", len(layers), compile_s)
        art = FpgaArtifact(graph, config, layers, image, meta)
        if self.options.host == "cpu":  # case 6: the host part through the cpu target, layers called back
            from accelopt.targets.fpga.host_cpu import compile_host, packed_name, register_layers  # imports TVM

            t1 = time.perf_counter()
            token = uuid.uuid4().hex[:12]
            calls = {layer.node: packed_name(token, layer.name) for layer in layers}
            art.host_artifact = compile_host(graph, calls, bindings["batch"], bindings["seq"], samples)
            art.metadata["host_token"] = token
            art.metadata["host_compile_seconds"] = time.perf_counter() - t1
            register_layers(art, token)
        return art


def _bindings(graph: Graph, opts: FpgaOptions, samples: Any, notes: list[str]) -> dict[str, int]:
    """Case 2: symbol -> size for batch and sequence dims (axis 0 / axis 1 of the graph inputs)."""
    seq = opts.seq_len
    if not seq:
        arrays = getattr(samples, "arrays", None) or {}
        for v in graph.inputs:
            a = arrays.get(v.name)
            if a is not None and getattr(a, "ndim", 0) >= 2 and v.shape is not None and not isinstance(v.shape[1], int):
                seq = int(a.shape[1])
                notes.append(f"programs compiled for sequence length {seq} (the validation samples')")
                break
    seq = seq or DEFAULT_SEQ_LEN
    out = {"batch": opts.batch, "seq": seq, "sequence": seq}
    for v in graph.inputs:
        if not v.shape:
            continue
        if isinstance(v.shape[0], str):
            out.setdefault(v.shape[0], opts.batch)
        if len(v.shape) > 1 and isinstance(v.shape[1], str):
            out.setdefault(v.shape[1], seq)
    return out


def fpga_target(options: Mapping[str, Any] | None = None) -> FpgaTarget:
    """A target instance from a mapping of options (unknown keys are an error)."""
    try:
        return FpgaTarget(FpgaOptions(**dict(options or {})))
    except (TypeError, ValueError) as e:
        raise TargetError(f"target 'fpga': {e}") from None


__all__ = ["LABEL", "FpgaOptions", "FpgaTarget", "fpga_target"]
