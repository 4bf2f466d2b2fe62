"""The ``cpu`` target: TVM Relax compiled by LLVM for the host CPU (or the ``mcpu`` given).

``CpuTarget.lower`` does, in order:

1. Refuse what it cannot compile, listing every problem at once: ops without
   a Relax lowering, and bfloat16 values (TVM 0.27 cannot emit
   ``vdpbf16ps``: its bf16 legalization computes through float32, slower than
   fp32, so the target does not offer bf16; the bf16 pass says so through the
   capability descriptor and leaves the graph in fp32).
2. Resolve the CPU: ``mcpu`` (default: the host's, from LLVM), checked
   against LLVM's CPU list (an unknown name is a ``TargetError``; TVM would
   only log it and fall back to a generic CPU); the features it implies are
   recorded as the artifact's requirements.
3. Bind symbolic dims: axis 0 of every input is the batch (``batch``), axis 1
   the sequence: one Relax function per ``seq_lens`` bucket (when none are
   given, the validation samples' length, else 128); other symbols need
   ``dims`` (``accelopt.targets.buckets``).
4. Lower the graph (``accelopt.targets.relax.build_module``) with the cpu
   kernels: ``X86Kernels`` from ``accelopt.targets.cpu.kernels`` for the
   mcpu's features (``lower(kernels=Kernels())`` forces the generic ones).
5. Build (``build.py``: legalize, fuse, schedule every PrimFunc with the
   rules of ``schedule_rules.py``, LLVM codegen) and return a ``CpuArtifact``.

Precision: float32 (and float64/integer graphs) compute in their types;
float16 graphs (``fp16`` pass) are computed correctly — values stored in
fp16, matmuls, reductions and transcendental ops in float32 — though not
faster than fp32 (x86 has no fp16 arithmetic below AVX-512-FP16); int8
graphs (``fuse,int8``) run ``QLinear`` / ``QAttention`` with exact int32
accumulation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tvm

import accelopt
from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.targets import buckets as bk
from accelopt.targets.base import Capabilities, Target, bound_batch, register_target
from accelopt.targets.cpu import host
from accelopt.targets.cpu.artifact import FORMAT, CpuArtifact
from accelopt.targets.cpu.build import compile_module, llvm_target
from accelopt.targets.cpu.tuning import TuningOptions, parse_rpc
from accelopt.targets.relax import Bucket, Kernels, build_module, lowered_ops, relax_dtype, unlowered_ops

log = logging.getLogger(__name__)

DEFAULT_SEQ_LEN = 128
BF16_REASON = (
    "TVM 0.27 cannot emit AVX-512 BF16 dot products (vdpbf16ps): its bf16 legalization computes through "
    "float32, slower than the fp32 pipeline, so the cpu target keeps bf16 graphs in fp32"
)


@dataclass(frozen=True)
class CpuOptions:
    """Options of the cpu target (``--target cpu{mcpu=skylake-avx512,num_threads=2}``; ``--seq-len``, ``--batch``)."""

    mcpu: str = ""  # "" = the host's (LLVM's name for it)
    num_threads: int = 0  # 0 = one per physical core available to the process
    seq_lens: tuple[int, ...] = ()  # () -> the samples' sequence length, else DEFAULT_SEQ_LEN
    batch: int = 1
    dims: tuple[str, ...] = field(default_factory=tuple)  # other symbols: ("heads:12",)
    tune_trials: int = 0  # MetaSchedule trials over the model's kernels (0: hand schedules only)
    tuning_db: str = ""  # tuning database folder ("" = ~/.cache/accelopt/tuning/<mcpu>-<cores>c when tuning)
    rpc: str = ""  # "host:port:key": measure tuning candidates through this TVM RPC tracker

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if any(int(s) < 1 for s in self.seq_lens):
            raise ValueError(f"seq_lens must be positive integers, got {self.seq_lens}")
        if self.tune_trials < 0:
            raise ValueError(f"tune_trials must be >= 0, got {self.tune_trials}")
        if self.rpc:
            parse_rpc(self.rpc)

    def tuning(self) -> TuningOptions:
        return TuningOptions(trials=self.tune_trials, database=self.tuning_db, rpc=self.rpc)

    def dim_sizes(self) -> dict[str, int]:
        out = {}
        for item in self.dims:
            k, _, n = str(item).partition(":")
            try:
                out[k] = int(n)
            except ValueError:
                raise TargetError(f"dims: expected symbol:size pairs, got {item!r}") from None
        return out


def cpu_kernels(features: Sequence[str] | None = None) -> Kernels:
    """Case 4: the x86 kernels for a CPU with LLVM ``features`` (None: the host's)."""
    from accelopt.targets.cpu.kernels import X86Kernels

    return X86Kernels(features)


@register_target
class CpuTarget(Target):
    """The host CPU through TVM Relax and LLVM."""

    name = "cpu"
    summary = "TVM Relax -> LLVM for the host CPU (AVX-512/VNNI detected; one function per sequence bucket)"
    default_passes = "cleanup,fuse"
    Options = CpuOptions
    seq_buckets = True

    def __init__(self, options: CpuOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            if "seq_lens" in kwargs:
                kwargs["seq_lens"] = bk.int_tuple(kwargs["seq_lens"], "seq_lens")
            if "dims" in kwargs and isinstance(kwargs["dims"], str):
                kwargs["dims"] = tuple(kwargs["dims"].replace("+", ",").split(","))
            try:
                options = CpuOptions(**kwargs)
            except (TypeError, ValueError) as e:
                raise TargetError(f"target 'cpu': {e}") from e
        self.options = options

    @property
    def mcpu(self) -> str:
        return host.check_mcpu(self.options.mcpu) if self.options.mcpu else host.detect_mcpu()

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # depends on mcpu
        mcpu = self.mcpu
        feats = host.llvm_features(mcpu)
        return Capabilities(
            name=self.name,
            description=f"host CPU through TVM Relax and LLVM (mcpu {mcpu})",
            dtypes=("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"),
            preferred_layouts={"matmul_weight": "KN"},
            tile_sizes={"gemm": (6, host.vector_width(mcpu) // 32 * 2)},
            native_ops=frozenset(lowered_ops()),
            quantization={"weights": "per-channel-symmetric", "activations": "asymmetric"},
            extra={
                "mcpu": mcpu,
                "features": sorted(feats),
                "vector_bits": host.vector_width(mcpu),
                "unsupported_dtypes": {"bfloat16": BF16_REASON},
            },
        )

    def with_seq_lens(self, seq_lens: Sequence[int]) -> CpuTarget:
        buckets = bk.bound_seq_lens(self.name, self.options.seq_lens, seq_lens)
        return self if buckets is None else CpuTarget(dataclasses.replace(self.options, seq_lens=buckets))

    def with_batch(self, batch: int) -> CpuTarget:
        """``--batch``: the batch the functions are compiled for (a spec ``batch`` that disagrees is an error)."""
        b = bound_batch(self.name, self.options.batch, batch)
        return self if b == self.options.batch else CpuTarget(dataclasses.replace(self.options, batch=b))

    # ------------------------------------------------------------------ lower
    def lower(
        self, graph: Graph, *, model: Any = None, samples: Any = None, kernels: Kernels | None = None
    ) -> CpuArtifact:
        """Cases 1-5."""
        opts = self.options
        t0 = time.perf_counter()
        problems = _refusals(graph)  # case 1
        if problems:
            raise TargetError(f"cpu target cannot compile graph {graph.name!r}: " + "; ".join(problems))
        mcpu = self.mcpu  # case 2
        features = sorted(host.llvm_features(mcpu))
        binding = bk.bind_symbols(graph, batch=opts.batch, dims=opts.dim_sizes(), target="cpu")  # case 3
        notes = list(binding.notes)
        seq_lens = opts.seq_lens or bk.sample_seq_len(graph, samples, notes, DEFAULT_SEQ_LEN)
        buckets = []
        for seq in dict.fromkeys(seq_lens):
            buckets.append(Bucket(binding.bucket_name(seq), binding.dims(seq)))
        kern = kernels if kernels is not None else cpu_kernels(features)  # case 4
        lowered = build_module(graph, buckets, kern)
        t_lower = time.perf_counter() - t0
        threads = opts.num_threads or len(host.physical_cores())
        missing = host.missing_features(features)
        measure_here = (
            "candidates were measured over RPC"
            if opts.rpc
            else f"this CPU lacks {', '.join(missing)}"
            if missing
            else None
        )
        result = compile_module(
            lowered.mod, llvm_target(mcpu, threads), opts.tuning(), measure_here=measure_here
        )  # case 5
        notes.extend(n for n in lowered.notes if n not in notes)
        first = buckets[0].name
        meta = {
            "format": FORMAT,
            "version": CpuArtifact.version,
            "target": self.name,
            "spec": self.spec,
            "graph": graph.name,
            "cpu": {"mcpu": mcpu, "features": features, "num_threads": opts.num_threads},
            "kernels": kern.name,
            "inputs": [bk.input_spec(v, relax_dtype(v.dtype), graph) for v in graph.inputs],
            "outputs": [
                bk.output_spec(v, binding, lowered.output_shapes[first][v.name], seq_lens[0], relax_dtype(v.dtype))
                for v in graph.outputs
            ],
            "batch": {
                "keys": sorted(binding.batch_keys),
                "requested": opts.batch,
                "export": binding.export_batch,
                "padded": False,
            },
            "seq": {
                "keys": sorted(binding.seq_keys),
                "buckets": list(dict.fromkeys(seq_lens)),
                "mask_inputs": binding.masks,
            },
            "buckets": [
                {
                    "name": b.name,
                    "function": b.name,
                    "dims": dict(b.dims),
                    "seq_len": s if binding.seq_keys else None,
                    "batch": binding.export_batch,
                    "params": lowered.signatures[b.name],
                }
                for b, s in zip(buckets, dict.fromkeys(seq_lens))
            ],
            "parameters": {"bytes": lowered.parameter_bytes, "count": len(lowered.params)},
            "schedule": {
                "counts": result.schedule.counts(),
                "functions": dict(sorted(result.schedule.rules.items())),
                "failures": result.schedule.failures[:50],
            },
            "seconds": {"lower": round(t_lower, 3), **result.seconds, "total": round(time.perf_counter() - t0, 3)},
            "tuning": result.tuning.as_dict() if result.tuning is not None else None,
            "notes": notes,
            "versions": {"accelopt": accelopt.__version__, "tvm": tvm.__version__},
        }
        return CpuArtifact(metadata=meta, library=result.executable, params=lowered.params, graph=graph)


def _refusals(graph: Graph) -> list[str]:
    """Case 1: every reason the graph cannot be compiled."""
    out = []
    missing = unlowered_ops(n.op for n in graph.nodes)
    if missing:
        nodes = [f"{n.name} ({n.op})" for n in graph.nodes if n.op in missing]
        out.append(f"no lowering for {len(missing)} op(s) {', '.join(missing)} at node(s) {', '.join(nodes[:20])}")
    bf16 = [v.name for v in graph.values() if v.dtype == DType.BFLOAT16]
    if bf16:
        out.append(f"{len(bf16)} bfloat16 value(s) (e.g. %{bf16[0]}): {BF16_REASON}")
    return out
