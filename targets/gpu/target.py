"""The ``gpu`` target: options, capability descriptor, and ``lower(graph) -> GpuArtifact``.

``GpuTarget.lower`` does, in order:

1. bind the graph's symbolic dims as the cpu and tpu targets do
   (``accelopt.targets.buckets``: axis 0 of an input is the batch, from the
   ``batch`` option plus one function per extra ``batches`` entry; axis 1 the
   sequence, one function per ``seq_lens`` entry, else the validation
   samples' length, else 128; any other symbol is a ``TargetError``);
2. lower the graph with the shared Relax lowering (``accelopt.targets.relax``)
   through ``CudaKernels``; parameters stay outside the library;
3. build for CUDA (``build.py``: legalize, fuse, optional MetaSchedule
   tuning, a schedule for every kernel, CUDA graphs, nvcc machine code);
4. read the machine code back (fatbin entries; with cuobjdump, the kernels
   that use tensor cores) and check that it holds code for the arch;
5. write the artifact folder: ``model.so``, ``params.npz``, ``metadata.json``
   and the runtime bundle (``runtime/``, unless ``bundle=false``).

Default pipeline: ``cleanup,fuse,fp16``: fp16 matmul operands with fp32
accumulation on the tensor cores, LayerNorm/Softmax statistics in fp32.
fp32 is the pipeline without ``fp16`` (``--passes cleanup,fuse``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets.base import Capabilities, Target, register_target
from accelopt.targets.buckets import bind_symbols
from accelopt.targets.gpu import machine_code, runtime
from accelopt.targets.gpu.artifact import BUNDLE_DIR, GpuArtifact, write_metadata
from accelopt.targets.gpu.build import DEFAULT_ARCH, build_library
from accelopt.targets.gpu.kernels import CudaKernels
from accelopt.targets.gpu.schedules import SCHEDULE_SETS

log = logging.getLogger(__name__)

DEFAULT_SEQ_LEN = 128
LIBRARY = "model.so"
PARAMS = "params.npz"


@dataclass(frozen=True)
class GpuOptions:
    """``--target gpu{arch=sm_90,cuda_graphs=true,...}``."""

    arch: str = DEFAULT_ARCH
    batch: int = 1
    batches: tuple[int, ...] = ()  # more batch sizes compiled into the same library (one function each)
    seq_lens: tuple[int, ...] = ()  # () -> the samples' sequence length, else 128
    cuda_graphs: bool = True
    schedules: str = "accelopt"  # accelopt (own rules first, then dlight) | dlight
    bundle: bool = True  # write the runtime bundle into the artifact
    tune_trials: int = 0
    tune_db: str = ""  # MetaSchedule database folder, reused across builds
    rpc: str = ""  # HOST:PORT:KEY of TVM's RPC tracker with a GPU server
    nvcc: str = ""  # nvcc to compile with (default: PATH, /usr/local/cuda)

    def __post_init__(self) -> None:
        if self.schedules not in SCHEDULE_SETS:
            raise TargetError(f"gpu: schedules must be one of {', '.join(SCHEDULE_SETS)}, got {self.schedules!r}")
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))
        if int(self.batch) < 1 or any(int(s) < 1 for s in (*self.seq_lens, *self.batches)):
            raise TargetError(f"gpu: batch and seq_lens must be positive, got {self.batch} / {self.seq_lens}")
        if not (self.arch.startswith("sm_") and self.arch[3:5].isdigit()):
            raise TargetError(f"gpu: bad arch {self.arch!r}: expected sm_<major><minor>, e.g. sm_90")
        object.__setattr__(self, "seq_lens", tuple(int(s) for s in self.seq_lens))
        object.__setattr__(self, "batch", int(self.batch))


def _bucket(binding: Any, batch: int, seq: int) -> Any:
    """The Relax lowering's bucket for one batch size and sequence length."""
    from accelopt.targets.relax import Bucket

    b = dataclasses.replace(binding, export_batch=batch)
    return Bucket(b.bucket_name(seq), b.dims(seq))


def _sample_seq(samples: Any) -> int | None:
    arrays = getattr(samples, "arrays", None) or {}
    for a in arrays.values():
        if getattr(a, "ndim", 0) >= 2:
            return int(a.shape[1])
    return None


@register_target
class GpuTarget(Target):
    """NVIDIA GPUs through TVM Relax -> CUDA, compiled here with nvcc, run with TVM's runtime alone."""

    name = "gpu"
    summary = "CUDA via TVM Relax (dlight + accelopt schedules), sm_90 machine code built here with nvcc"
    default_passes = "cleanup,fuse,fp16"
    Options = GpuOptions
    seq_buckets = True

    def __init__(self, options: GpuOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            try:
                options = GpuOptions(**kwargs)
            except TypeError as e:
                raise TargetError(f"target 'gpu': {e}") from e
        self.options = options

    def with_batch(self, batch: int) -> GpuTarget:
        """``--batch N``: the batch the functions are compiled for (other batches run in chunks of it)."""
        return self if batch == self.options.batch else GpuTarget(dataclasses.replace(self.options, batch=batch))

    def with_seq_lens(self, seq_lens: Sequence[int]) -> GpuTarget:
        buckets = tuple(int(s) for s in seq_lens)
        if len(set(buckets)) <= 1:
            return self
        return GpuTarget(dataclasses.replace(self.options, seq_lens=buckets))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # depends on the options
        from accelopt.targets.relax import lowered_ops

        return Capabilities(
            name=self.name,
            description=f"NVIDIA GPU ({self.options.arch}) through TVM Relax -> CUDA",
            dtypes=("float32", "float16", "int32", "int64", "bool"),
            preferred_layouts={"matmul_weight": "KN"},
            tile_sizes={"tensor_core": (16, 16, 16)},
            native_ops=frozenset(lowered_ops()),
            extra={"arch": self.options.arch, "cuda_graphs": self.options.cuda_graphs},
        )

    def lower(self, graph: Graph, *, model: Any = None, samples: Any = None) -> GpuArtifact:
        from accelopt.targets.relax import build_module

        opts = self.options
        t0 = time.perf_counter()
        binding = bind_symbols(graph, batch=opts.batch, target=self.name)  # case 1
        notes: list[str] = list(binding.notes)
        seq_lens = opts.seq_lens or ((_sample_seq(samples) or DEFAULT_SEQ_LEN),)
        batches = dict.fromkeys((opts.batch, *opts.batches))
        buckets = [_bucket(binding, b, s) for b in batches for s in dict.fromkeys(seq_lens)]
        lowered = build_module(graph, buckets, CudaKernels())  # case 2
        notes.extend(lowered.notes)
        lowering_s = time.perf_counter() - t0
        out = Path(tempfile.mkdtemp(prefix="accelopt-gpu-"))
        built = build_library(  # case 3
            lowered.mod, out / LIBRARY, arch=opts.arch, schedules=opts.schedules, cuda_graphs=opts.cuda_graphs,
            tune_trials=opts.tune_trials, tune_db=opts.tune_db, rpc=opts.rpc,
            toolkit=None if not opts.nvcc else _toolkit(opts.nvcc),
        )  # fmt: skip
        entries = machine_code.library_entries(built.library)  # case 4
        arch_num = int(opts.arch[3:5])
        if not any(e.kind == "elf" and e.arch == arch_num for e in entries):
            raise TargetError(f"gpu target: the built library holds no {opts.arch} machine code ({entries})")
        params: dict[str, Any] = dict(lowered.params)
        np.savez(out / PARAMS, **params)  # case 5
        metadata = self._metadata(graph, lowered, buckets, built, entries, notes, lowering_s)
        metadata["batch"] = {
            "keys": sorted(binding.batch_keys),
            "requested": opts.batch,
            "export": opts.batch,
            "padded": False,
            "also": list(opts.batches),
        }
        write_metadata(out, metadata)
        if opts.bundle:
            from accelopt.targets.gpu.bundle import write_bundle

            write_bundle(out / BUNDLE_DIR)
        metadata["total_seconds"] = round(time.perf_counter() - t0, 3)
        write_metadata(out, metadata)
        return GpuArtifact(out, metadata, graph)

    def _metadata(
        self,
        graph: Graph,
        lowered: Any,
        buckets: Sequence[Any],
        built: Any,
        entries: Sequence[machine_code.FatbinEntry],
        notes: list[str],
        lowering_s: float,
    ) -> dict[str, Any]:
        functions = []
        for b in buckets:
            batch = int(b.name[1:].split("_")[0])
            ins = lowered.input_shapes[b.name]
            outs = lowered.output_shapes[b.name]
            functions.append(
                {
                    "name": b.name,
                    "batch": batch,
                    "dims": dict(b.dims),
                    "inputs": [
                        {"name": v.name, "dtype": str(v.dtype), "shape": list(ins[v.name])} for v in graph.inputs
                    ],
                    "outputs": [
                        {"name": v.name, "dtype": str(v.dtype), "shape": list(outs[v.name])} for v in graph.outputs
                    ],
                    "params": list(lowered.signatures[b.name]),
                }
            )
        return {
            "format": runtime.FORMAT,
            "version": 1,
            "target": self.name,
            "graph": graph.name,
            "arch": self.options.arch,
            "library": LIBRARY,
            "params_file": PARAMS,
            "parameter_bytes": int(sum(a.nbytes for a in lowered.params.values())),
            "functions": functions,
            "cuda_graphs": self.options.cuda_graphs,
            "options": {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)},
            "machine_code": [{"kind": e.kind, "arch": e.name, "bytes": e.size} for e in entries],
            "schedules": {"set": self.options.schedules, "rules": built.schedules.counts(),
                          "per_kernel": built.schedules.rules},  # fmt: skip
            "kernels": built.kernels,
            "build_seconds": {"lowering": round(lowering_s, 3), **built.seconds, "nvcc": round(built.nvcc.seconds, 3)},
            "versions": {p: _version(p) for p in ("apache-tvm", "apache-tvm-ffi")} | {"nvcc": _nvcc_version()},
            "notes": notes,
            "bundle": BUNDLE_DIR if self.options.bundle else None,
        }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _nvcc_version() -> str:
    from accelopt.targets.gpu.toolchain import find_toolkit

    return find_toolkit().version


def _toolkit(nvcc: str) -> Any:
    from accelopt.targets.gpu.toolchain import find_toolkit

    return find_toolkit(nvcc)


def function_inputs(meta: Mapping[str, Any]) -> dict[str, tuple[list[int], str]]:
    """The first function's inputs: name -> (shape, dtype)."""
    f = meta["functions"][0]
    return {i["name"]: (list(i["shape"]), i["dtype"]) for i in f["inputs"]}
