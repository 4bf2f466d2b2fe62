"""The TPU numeric and layout policy, chosen from the chip descriptor and the graph.

Cases decided here (the lowering reads the resulting ``Policy``):

1. ``precision="bf16"``: every matmul takes bf16 operands and accumulates in
   f32 (``preferred_element_type=float32``); other ops keep the graph's types.
2. ``precision="fp32"``: matmuls stay f32 and ask for ``Precision.HIGHEST``
   (on a TPU an f32 matmul otherwise runs as one bf16 pass).
3. ``precision="int8"``: matmuls whose operands are int8 (QDQ
   ``DequantizeLinear`` of int8 data, ``MatMulInteger``, ``QLinearMatMul``)
   become int8 x int8 -> int32 ``dot_general``; float matmuls follow case 1.
   Chosen only when the graph has int8 matmul work *and* the chip runs int8
   faster than bf16; otherwise the policy falls back to case 1 and records why
   in ``notes`` (v4: int8 runs at the bf16 rate).
4. ``precision="auto"`` (default) follows the pipeline: case 3 if its
   conditions hold (the int8 pass ran), case 1 if the graph's matmuls are
   bf16/fp16 (the bf16/fp16 pass ran; TPUs have no fast fp16, so fp16 runs as
   bf16), else case 2, so an fp32 graph exports as fp32 and validates as such.
5. Tile padding: K and N of weight matmuls are padded with zeros to the chip's
   MXU tile (128; 256 on v6e) and the result is sliced back.
6. Batch padding: the export's batch dimension is rounded up to
   ``batch_multiple`` (8: the TPU's sublane count); ``Artifact.run`` pads the
   inputs and slices the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelopt.errors import TargetError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph
from accelopt.targets.tpu.chips import Chip

PRECISIONS = ("auto", "bf16", "fp32", "int8")

#: ops whose presence means the graph carries int8 matmul work
INT8_MATMUL_OPS = frozenset({"MatMulInteger", "QLinearMatMul", "QLinear", "QAttention", "DynamicQuantizeMatMul"})
_INT8_TYPES = (DType.INT8, DType.UINT8)
#: ops that run on the MXU (their first input's dtype tells the graph's matmul precision)
MATMUL_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "Linear",
        "PackedLinear",
        "Attention",
        "MultiHeadAttention",
        "Einsum",
        "ScaledDotProductAttention",
        "Conv",
        "ConvNHWC",
    }
)


@dataclass(frozen=True)
class Policy:
    """What the lowering does with matmuls, padding and batch."""

    chip: Chip
    precision: str  # resolved: "bf16" | "fp32" | "int8"
    requested: str  # what the caller asked for
    pad_to_tile: bool = True
    batch_multiple: int = 8
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tile(self) -> int:
        return self.chip.mxu_tile if self.pad_to_tile else 1

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    def as_dict(self) -> dict[str, object]:
        return {
            "chip": self.chip.name,
            "precision": self.precision,
            "requested": self.requested,
            "matmul_inputs": {"bf16": "bfloat16", "fp32": "float32", "int8": "int8 (float matmuls bfloat16)"}[
                self.precision
            ],
            "accumulation": {"bf16": "float32", "fp32": "float32", "int8": "int32 (float matmuls float32)"}[
                self.precision
            ],
            "pad_to_tile": self.pad_to_tile,
            "tile": self.tile,
            "batch_multiple": self.batch_multiple,
            "notes": list(self.notes),
        }


def has_int8_matmuls(graph: Graph) -> bool:
    """True if the graph has int8 matmul work: integer matmul ops, or int8 data dequantized for a matmul."""
    for node in graph.nodes:
        if node.op in INT8_MATMUL_OPS:
            return True
        if node.op == "DequantizeLinear" and node.inputs and node.inputs[0] is not None:
            if node.inputs[0].dtype in _INT8_TYPES:
                return True
    return False


def low_precision_matmuls(graph: Graph) -> DType | None:
    """bf16 or fp16 if some matmul of the graph takes that type (a bf16/fp16 pass ran), else None."""
    for node in graph.nodes:
        if node.op in MATMUL_OPS and node.inputs and node.inputs[0] is not None:
            if node.inputs[0].dtype in (DType.BFLOAT16, DType.FLOAT16):
                return node.inputs[0].dtype
    return None


def choose_policy(
    graph: Graph,
    chip: Chip,
    *,
    precision: str = "auto",
    pad_to_tile: bool = True,
    batch_multiple: int = 8,
) -> Policy:
    """Resolve the requested precision against the graph and the chip (cases 1-4 above)."""
    if precision not in PRECISIONS:
        raise TargetError(f"unknown TPU precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if batch_multiple < 1:
        raise TargetError(f"batch_multiple must be >= 1, got {batch_multiple}")
    notes: list[str] = []
    resolved = precision
    if precision in ("auto", "int8"):
        int8_work = has_int8_matmuls(graph)
        if int8_work and chip.int8_speedup:
            resolved = "int8"
        elif int8_work:
            resolved = "bf16"
            notes.append(
                f"int8 matmuls lowered as bf16 x bf16 -> f32: TPU {chip.name} runs int8 at the bf16 rate "
                f"({chip.peak_int8_tops:g} TOP/s int8 vs {chip.peak_bf16_tflops:g} TFLOP/s bf16), "
                "so int8 brings no speedup; weights are dequantized at load"
            )
        elif precision == "int8":
            resolved = "bf16"
            notes.append("precision int8 requested but the graph has no int8 matmuls (run the int8 pass); using bf16")
        else:
            low = low_precision_matmuls(graph)
            resolved = "bf16" if low is not None else "fp32"
            if low == DType.FLOAT16:
                notes.append("fp16 matmuls run as bf16 x bf16 -> f32 (TPUs have no fast fp16)")
            elif low is None:
                notes.append(
                    "float32 graph: exported in fp32; run the bf16 pass or set precision=bf16 for bf16 matmuls"
                )
    if resolved == "bf16":
        notes.append("matmuls: bf16 operands, f32 accumulation")
    elif resolved == "fp32":
        notes.append("matmuls: f32 operands at Precision.HIGHEST (XLA runs it as 6 bf16 passes on a TPU)")
    else:
        notes.append("int8 matmuls: int8 x int8 -> int32 dot_general; float matmuls bf16 x bf16 -> f32")
    return Policy(chip, resolved, precision, pad_to_tile, batch_multiple, tuple(notes))
