"""The ``tpu`` target: capability descriptor, options, and ``lower(graph) -> TpuArtifact``.

``TpuTarget.lower`` does, in order:

1. Refuse graphs with ops that have no TPU lowering, listing all of them at once.
2. Resolve the chip and the policy (``policy.choose_policy``).
3. Bind symbolic dims: axis 0 of every graph input is the batch (rounded up
   to the policy's batch multiple), axis 1 the sequence (one export per
   ``seq_lens`` bucket; when none are given, the sequence length of the
   validation samples ``lower`` receives, else 128); other symbols must be
   given in ``dims``.
4. Plan the weights (arguments or baked constants; prepared matmul forms)
   and build the JAX function.
5. Per bucket: ``jax.export`` for ``platforms``, the StableHLO text, the
   StableHLO policy checks and the roofline estimate.
6. Return a ``TpuArtifact`` whose metadata records all of the above.

Default pipeline (no ``--passes``): ``cleanup,fuse,bf16``, the issue's
policy "bf16 matmul inputs with f32 accumulation by default": the bf16 pass
makes the graph's matmuls bf16 (LayerNorm, Softmax and reductions stay f32)
and ``precision=auto`` then lowers every matmul as bf16 x bf16 -> f32, and
validation checks the graph the TPU runs. An explicit pipeline is taken as
written: ``--passes fuse`` keeps an fp32 graph, which ``precision=auto``
exports in fp32 (f32 matmuls at ``Precision.HIGHEST``); ``--passes
fuse,int8`` exports int8 ``dot_general`` ops where the chip gains from them.

Capability descriptor (what the passes read from ``PassContext.target``):

1. ``dtypes`` float32, bfloat16, int8, int32, bool: the MXU multiplies
   int8 x int8 -> int32 (and bf16 x bf16 -> f32).
2. ``quantization``: weights per-channel symmetric int8; activations
   asymmetric, so the int8 pass writes dynamic per-row uint8 activations
   with a zero point. The lowering shifts them exactly to int8 (q - 128,
   z - 128), the MXU still multiplies int8 x int8 -> int32, and the zero
   point is one correction in the matmul's epilogue, ``acc - z_row *
   colsum(W)``, with the weight's column sums computed at lowering time.
   Why not symmetric activations (zero point 0, no correction): on
   all-MiniLM-L6-v2 they put the largest change of a pairwise embedding
   similarity at 0.017-0.021 (limit 0.02: inputs after GELU are one-sided,
   so a symmetric scale leaves half the int8 levels unused), asymmetric at
   0.011-0.013; the correction costs an elementwise multiply-add per output.
   Symmetric graphs (``int8{activations=symmetric}``) lower too, with no
   correction at all.
3. ``native_ops``: every lowered op except ``QLinear`` / ``QAttention``, so
   the ``int8`` group's ``lower-quantized`` leaves the QDQ form in place;
   the lowering reads it (``LowerCtx.dq_source``: per-tensor and per-row
   dequantized activations, plan-time int8 weights).
4. ``tile_sizes`` / ``pad_multiple``: the chip's MXU tile (128; 256 on v6e).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jaxlib
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.suggest import did_you_mean
from accelopt.targets import buckets as bk
from accelopt.targets.base import Capabilities, Target, bound_batch, register_target
from accelopt.targets.tpu import export as tpu_export
from accelopt.targets.tpu.artifact import FORMAT, VERSION, TpuArtifact
from accelopt.targets.tpu.chips import CHIPS, DEFAULT_CHIP, get_chip
from accelopt.targets.tpu.lowering import (
    build_function,
    jax_dtype,
    lowered_ops,
    plan_weights,
    unlowered_ops,
)
from accelopt.targets.tpu.policy import choose_policy
from accelopt.targets.tpu.roofline import estimate

log = logging.getLogger(__name__)

#: integer ops the TPU lowers (graphs written for other targets run) but does not ask for: it reads the QDQ form
QDQ_READ_OPS = frozenset({"QLinear", "QAttention"})
DEFAULT_SEQ_LEN = 128


@dataclass(frozen=True)
class TpuOptions:
    """Options of the tpu target (CLI: ``--chip``, ``--seq-len 128,256``, ``--batch``)."""

    chip: str = DEFAULT_CHIP
    precision: str = "auto"  # auto | bf16 | fp32 | int8
    weights: str = "arguments"  # arguments | constants
    platforms: tuple[str, ...] = tpu_export.DEFAULT_PLATFORMS
    seq_lens: tuple[int, ...] = ()  # () -> the samples' sequence length, else DEFAULT_SEQ_LEN
    batch: int = 1
    batch_multiple: int = 8
    pad_to_tile: bool = True
    dims: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # other symbols: (("heads", 12),)

    @classmethod
    def make(cls, options: TpuOptions | Mapping[str, Any] | None = None, **overrides: Any) -> TpuOptions:
        """Options from an instance, a mapping (unknown keys are an error) and keyword overrides."""
        base = options if isinstance(options, TpuOptions) else cls()
        values = dict(options) if isinstance(options, Mapping) else {}
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        if "seq_len" in values:
            values["seq_lens"] = values.pop("seq_len")
        unknown = sorted(set(values) - known)
        if unknown:
            raise TargetError(
                f"unknown tpu option(s) {', '.join(unknown)}{did_you_mean(unknown[0], known)}; "
                f"known: {', '.join(sorted(known))}"
            )
        if "seq_lens" in values:
            values["seq_lens"] = bk.int_tuple(values["seq_lens"], "seq_lens")
        if "platforms" in values:
            p = values["platforms"]
            values["platforms"] = tuple(p.split(",")) if isinstance(p, str) else tuple(p)
        if "dims" in values:
            values["dims"] = _dims(values["dims"])
        for key in ("batch", "batch_multiple"):
            if key in values:
                values[key] = int(values[key])
        if "pad_to_tile" in values and isinstance(values["pad_to_tile"], str):
            values["pad_to_tile"] = values["pad_to_tile"].lower() in ("1", "true", "yes", "on")
        opts = dataclasses.replace(base, **values)
        if any(s < 1 for s in opts.seq_lens):
            raise TargetError(f"seq_lens must be positive integers, got {opts.seq_lens}")
        if opts.batch < 1:
            raise TargetError(f"batch must be >= 1, got {opts.batch}")
        bad = [p for p in opts.platforms if p not in ("tpu", "cpu", "cuda", "rocm")]
        if bad or not opts.platforms:
            raise TargetError(f"unknown export platform(s) {bad}; use tpu, cpu, cuda or rocm")
        return opts


def _dims(v: Any) -> tuple[tuple[str, int], ...]:
    """``{"heads": 12}``, ``(("heads", 12),)`` or ``("heads:12",)`` (the spec form ``dims=heads:12+k:4``)."""
    items = v.items() if isinstance(v, Mapping) else v
    out = []
    try:
        for item in items:
            if isinstance(item, str):
                k, _, n = item.partition(":")
                out.append((k, int(n)))
            else:
                k, n = item
                out.append((str(k), int(n)))
    except (TypeError, ValueError):
        raise TargetError(f"dims: expected symbol:size pairs, got {v!r}") from None
    return tuple(sorted(out))


@register_target
class TpuTarget(Target):
    """TPU through XLA: the graph as a JAX function exported to StableHLO with ``jax.export``."""

    name = "tpu"
    summary = "TPU via XLA: jax.export StableHLO for platforms (tpu, cpu); bf16/int8 policy per chip (v4/v5e/v5p/v6e)"
    default_passes = "cleanup,fuse,bf16"
    Options = TpuOptions

    seq_buckets = True

    def __init__(self, options: TpuOptions | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        self.options = TpuOptions.make(options, **overrides)

    def with_batch(self, batch: int) -> TpuTarget:
        """``--batch N``: the batch the exports are built for (rounded up to ``batch_multiple``, case 3)."""
        b = bound_batch("tpu", self.options.batch, batch)
        return self if b == self.options.batch else TpuTarget(dataclasses.replace(self.options, batch=b))

    def with_seq_lens(self, seq_lens: Sequence[int]) -> TpuTarget:
        """``--seq-len 128,256,512``: one export per bucket (the ``seq_lens`` option).

        One length keeps the target as is (the bucket follows the validation
        samples, case 3); buckets already given in the target spec must agree.
        """
        buckets = bk.bound_seq_lens(self.name, self.options.seq_lens, seq_lens)
        return self if buckets is None else TpuTarget(TpuOptions.make(self.options, seq_lens=buckets))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]  # Target: a ClassVar; here it depends on the chip
        chip = get_chip(self.options.chip)
        return Capabilities(
            name=self.name,
            description=f"TPU {chip.name} through XLA (StableHLO via jax.export); runs here on CPU XLA",
            dtypes=("float32", "bfloat16", "int8", "int32", "bool"),
            preferred_layouts={"matmul_weight": "KN"},
            tile_sizes={"matmul": (chip.mxu_tile, chip.mxu_tile), "batch": (self.options.batch_multiple,)},
            pad_multiple=chip.mxu_tile,
            native_ops=frozenset(lowered_ops() - QDQ_READ_OPS),
            quantization={"weights": "per-channel-symmetric", "activations": "asymmetric"},
            estimate_only=True,
            extra={"chip": chip.as_dict(), "chips": sorted(CHIPS), "int8_speedup": chip.int8_speedup},
        )

    def lower(
        self,
        graph: Graph,
        *,
        model: Any = None,
        samples: Any = None,
        options: TpuOptions | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> TpuArtifact:
        """Cases 1-6: lower and export ``graph`` (``options`` / keyword overrides replace the target's options)."""
        opts = TpuOptions.make(options if options is not None else self.options, **overrides)
        t0 = time.perf_counter()
        # case 1
        missing = unlowered_ops(n.op for n in graph.nodes)
        if missing:
            raise TargetError(
                f"tpu target: no lowering for {len(missing)} op(s) in graph {graph.name!r}: {', '.join(missing)}"
            )
        # case 2
        chip = get_chip(opts.chip)
        policy = choose_policy(
            graph, chip, precision=opts.precision, pad_to_tile=opts.pad_to_tile, batch_multiple=opts.batch_multiple
        )
        # case 3
        binding = bk.bind_symbols(
            graph, batch=opts.batch, batch_multiple=policy.batch_multiple, dims=dict(opts.dims), target="tpu"
        )
        # case 4
        plan = plan_weights(graph, policy, opts.weights)
        lowered = build_function(graph, policy, plan)
        lowering_s = time.perf_counter() - t0
        # case 5
        exports: dict[str, Any] = {}
        texts: dict[str, str] = {}
        buckets: list[dict[str, Any]] = []
        notes = list(policy.notes) + binding.notes
        seq_lens = opts.seq_lens or bk.sample_seq_len(graph, samples, notes, DEFAULT_SEQ_LEN)
        for seq in seq_lens:
            dims = binding.dims(seq)
            name = binding.bucket_name(seq)
            if name in exports:
                continue
            be = tpu_export.export_bucket(lowered, dims, name, opts.platforms)
            text = tpu_export.stablehlo_text(be.exported)
            summary = tpu_export.inspect_stablehlo(text)
            m_multiple = policy.batch_multiple if binding.batch_padded else 1
            problems = tpu_export.check_stablehlo(summary, policy, m_multiple=m_multiple)
            io_dtype_bytes = _io_bytes(be.exported, len(graph.inputs))
            records = be.ctx.records if be.ctx is not None else []
            est = estimate(records, chip, weight_bytes=plan.parameter_bytes, io_bytes=io_dtype_bytes)
            for n in be.ctx.notes if be.ctx is not None else []:
                if n not in notes:
                    notes.append(n)
            dot_kinds: dict[str, int] = {}
            for d in summary.dots:
                key = f"{d.lhs.dtype}x{d.rhs.dtype}->{d.out.dtype}"
                dot_kinds[key] = dot_kinds.get(key, 0) + 1
            exports[name] = be.exported
            texts[name] = text
            buckets.append(
                {
                    "name": name,
                    "dims": dims,
                    "seq_len": seq if binding.seq_keys else None,
                    "batch": binding.export_batch,
                    "file": f"model.{name}.jaxexport",
                    "stablehlo_file": f"model.{name}.stablehlo.mlir",
                    "export_seconds": round(be.seconds, 3),
                    "roofline": est.as_dict(),
                    "roofline_summary": est.summary(),
                    "stablehlo_check": problems,
                    "dot_general": dot_kinds,
                    "custom_calls": sorted(set(summary.custom_calls)),
                    "matmuls": dict(be.ctx.matmul_count) if be.ctx is not None else {},
                }
            )
            if problems:
                log.warning("bucket %s: %d StableHLO policy problem(s): %s", name, len(problems), problems[0])
        metadata = {
            "format": FORMAT,
            "version": VERSION,
            "target": self.name,
            "graph": graph.name,
            "platforms": list(opts.platforms),
            "chip": chip.as_dict(),
            "policy": policy.as_dict(),
            "weights": opts.weights,
            "options": _jsonable(dataclasses.asdict(opts)),
            "inputs": [bk.input_spec(v, _np_name(jax_dtype(v.dtype))) for v in graph.inputs],
            "outputs": [
                bk.output_spec(
                    v,
                    binding,
                    tuple(exports[buckets[0]["name"]].out_avals[i].shape),
                    buckets[0].get("seq_len"),
                    _np_name(jax_dtype(v.dtype)),
                )
                for i, v in enumerate(graph.outputs)
            ],
            "batch": {
                "keys": sorted(binding.batch_keys),
                "requested": opts.batch,
                "export": binding.export_batch,
                "padded": binding.batch_padded,
            },
            "seq": {"keys": sorted(binding.seq_keys), "buckets": list(seq_lens), "mask_inputs": binding.masks},
            "parameters": {"bytes": plan.parameter_bytes, "by_dtype": plan.parameter_bytes_by_dtype()},
            "buckets": buckets,
            "lowering_seconds": round(lowering_s, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
            "notes": notes,
            "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
        }
        params = plan.function_params()
        return TpuArtifact(metadata=metadata, exports=exports, params=params, stablehlo=texts, graph=graph)


def _np_name(dt: np.dtype) -> str:
    return "bfloat16" if dt.name == "bfloat16" else str(dt)


def _io_bytes(exported: Any, n_inputs: int) -> int:
    """Bytes of the graph's inputs and outputs (the weights, passed first, are excluded)."""
    total = 0
    ins = list(exported.in_avals)[len(exported.in_avals) - n_inputs :] if n_inputs else []
    for aval in ins + list(exported.out_avals):
        n = int(np.prod(aval.shape)) if aval.shape else 1
        total += n * np.dtype(aval.dtype).itemsize
    return total


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
