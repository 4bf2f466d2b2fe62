"""TPU target benchmarks: export time, CPU-XLA latency of the export vs onnxruntime, bf16 accuracy, estimates.

1. BERT-base (BertConfig defaults, seeded weights; torch dynamo export,
   opset 17) after ``cleanup,fuse`` (or ``cleanup`` while the fusion passes
   are not registered): lowering + ``jax.export`` time of the TPU artifact
   (bf16, chip v5e, platforms tpu+cpu, batch 8, sequence 128), its StableHLO
   checks, and the roofline estimate per chip (labelled: an estimate, not a
   measurement).
2. The fp32 export (``precision=auto`` on the fp32 graph, batch not padded)
   run on this machine's CPU XLA against onnxruntime on the original file,
   batch 1, sequence 128: medians interleaved in one process, their ratio,
   and the max abs difference. This is a sanity bound on the lowering; the
   TPU is the real target.
3. all-MiniLM-L6-v2 (real weights): the same latency pair, and the worst /
   mean cosine of mask-mean-pooled sentence embeddings of 32 held-out
   built-in sentences (sequence 128) from the bf16, fp32 and int8 exports
   against onnxruntime fp32. The int8 graph comes from the ``int8`` pass
   when it is registered (calibrated on the other built-in sentences); until
   then from a plain min-max QDQ quantizer (``tests/tpu/tpu_helpers.py``:
   per-channel int8 weights, per-tensor uint8 activations), labelled so.

    python -m benchmarks.run tpu      # or: python benchmarks/bench_tpu.py
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "tpu")]

SEQ = 128
CHIPS = ("v4", "v5e", "v5p", "v6e")


def _optimized(graph: Any) -> tuple[Any, str]:
    """``cleanup,fuse`` when the fusion passes exist, else ``cleanup``."""
    from accelopt.errors import PassError
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager

    for spec in ("cleanup,fuse", "cleanup"):
        try:
            passes = build_pipeline(spec)
        except PassError:
            continue
        out, _records = PassManager(passes, PassContext()).run(graph)
        return out, spec
    return graph, "none"


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _interleaved(fns: dict[str, Any], *, rounds: int = 3, repeat: int = 5) -> dict[str, float]:
    """Median ms of each function, alternating rounds so machine load affects all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _pooled(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float64)[:, :, None]
    return (a.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def latency_vs_onnxruntime(graph: Any, path: Path, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Section 2 for one model: fp32 export on CPU XLA vs onnxruntime (batch as given, not padded)."""
    from accelopt.targets.tpu import TpuTarget

    art = TpuTarget(seq_lens=(feed["input_ids"].shape[1],), batch_multiple=1).lower(graph)
    sess = _ort(path)
    names = {i.name for i in sess.get_inputs()}
    ort_feed = {k: v for k, v in feed.items() if k in names}
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_feed)))
    got = art.run(feed)
    max_abs = max(float(np.abs(got[k].astype(np.float64) - ref[k]).max()) for k in ref if k in got)
    ms = _interleaved({"xla": lambda: art.run(feed), "ort": lambda: sess.run(None, ort_feed)})
    return {
        "xla_ms": ms["xla"],
        "ort_ms": ms["ort"],
        "ratio": ms["xla"] / ms["ort"],
        "max_abs": max_abs,
        "precision": art.metadata["policy"]["precision"],
    }


def bert_base(report: list[str]) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.targets.tpu import TpuTarget

    path = modelzoo.export_onnx("bert", exporter="dynamo", opset=17, size="full")
    model = load_onnx(path)
    graph, pipeline = _optimized(model.graph)
    t0 = time.perf_counter()
    art = TpuTarget(seq_lens=(SEQ,), precision="bf16").lower(graph)
    export_s = time.perf_counter() - t0
    b = art.buckets[0]
    report += [
        "### BERT-base, TPU artifact",
        "",
        f"Pipeline `{pipeline}`, {len(graph.nodes)} nodes; target `tpu{{precision=bf16}}` (chip v5e), "
        f"platforms tpu+cpu, bucket {b['name']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| lowering + jax.export (goal <= 60 s) | {export_s:.1f} s |",
        f"| dot_general types | {', '.join(f'{k}: {v}' for k, v in b['dot_general'].items())} |",
        f"| StableHLO policy problems | {len(b['stablehlo_check'])} |",
        f"| custom_calls | {', '.join(b['custom_calls']) or 'none'} |",
        f"| weights | {art.parameter_bytes / 1e6:.1f} MB |",
        "",
        "Roofline **estimates** (published peak rates and HBM bandwidth; not measurements), batch 8, sequence 128:",
        "",
        "| chip | per-op roofline | lower bound | bound | matmul GFLOP |",
        "|---|---|---|---|---|",
    ]
    for chip in CHIPS:
        r = (
            art
            if chip == "v5e"
            else TpuTarget(chip=chip, seq_lens=(SEQ,), precision="bf16", platforms=("cpu",)).lower(graph)
        )
        est = r.buckets[0]["roofline"]
        report.append(
            f"| {chip} | {est['estimate_s'] * 1e3:.3f} ms | {est['lower_bound_s'] * 1e3:.3f} ms | {est['bound']} | "
            f"{est['matmul_flops'] / 1e9:.1f} |"
        )
    feed = modelzoo.family_inputs("bert", 1, SEQ, seed=0)
    lat = latency_vs_onnxruntime(graph, path, feed)
    report += [
        "",
        "### BERT-base fp32 export on CPU XLA vs onnxruntime (batch 1, sequence 128)",
        "",
        "| runtime | median |",
        "|---|---|",
        f"| accelopt tpu export ({lat['precision']}) on CPU XLA | {lat['xla_ms']:.1f} ms |",
        f"| onnxruntime fp32 (original file) | {lat['ort_ms']:.1f} ms |",
        f"| **ratio** (goal <= 1.5x) | **{lat['ratio']:.2f}x** |",
        f"| max abs difference | {lat['max_abs']:.2e} |",
        "",
    ]


def _int8_graph(graph: Any, calibration: dict[str, np.ndarray]) -> tuple[Any, str]:
    """The int8 pass's QDQ graph when the pass exists, else the test helpers' min-max QDQ quantizer."""
    from accelopt.errors import PassError
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager

    try:
        passes = build_pipeline("int8")
    except PassError:
        from tpu_helpers import qdq_quantize

        return qdq_quantize(graph, calibration), "min-max QDQ from tests/tpu/tpu_helpers.py (int8 pass not built yet)"
    ctx = PassContext(calibration=[calibration])
    out, _records = PassManager(passes, ctx).run(graph)
    return out, "`int8` pass"


def minilm(report: list[str]) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.samples import CALIBRATION_SENTENCES, HELDOUT_SENTENCES, bundled_tokenizer, tokenize
    from accelopt.targets.tpu import TpuTarget

    path = modelzoo.minilm_onnx()
    model = load_onnx(path)
    graph, pipeline = _optimized(model.graph)
    tok = bundled_tokenizer()
    feed = tokenize(tok, list(HELDOUT_SENTENCES[:32]), SEQ)
    calibration = tokenize(tok, list(CALIBRATION_SENTENCES[:32]), SEQ)
    sess = _ort(path)
    names = {i.name for i in sess.get_inputs()}
    ref = sess.run(["last_hidden_state"], {k: v for k, v in feed.items() if k in names})[0]
    ref_emb = _pooled(ref, feed["attention_mask"])
    int8_graph, int8_source = _int8_graph(graph, calibration)
    rows = []
    for label, g, options in (
        ("bf16 (`precision=bf16`)", graph, {"precision": "bf16"}),
        ("fp32", graph, {}),
        ("int8, chip v5e", int8_graph, {}),
        ("int8 graph, chip v4 (bf16 fallback)", int8_graph, {"chip": "v4"}),
    ):
        t0 = time.perf_counter()
        art = TpuTarget(seq_lens=(SEQ,), **options).lower(g)
        export_s = time.perf_counter() - t0
        out = art.run(feed)["last_hidden_state"]
        cos = _cosines(_pooled(out, feed["attention_mask"]), ref_emb)
        kinds = ", ".join(f"{k}: {v // 2}" for k, v in art.buckets[0]["dot_general"].items())
        rows.append(f"| {label} | {export_s:.1f} s | {kinds} | {cos.min():.6f} | {cos.mean():.6f} |")
    one = {k: v[:1] for k, v in feed.items()}
    lat = latency_vs_onnxruntime(graph, path, one)
    report += [
        "### all-MiniLM-L6-v2 (real weights)",
        "",
        f"Pipeline `{pipeline}`; 32 held-out built-in sentences at sequence 128 through the exported artifact on "
        "CPU XLA (batch padded to 8, run in chunks); mean-pooled embeddings against onnxruntime fp32. "
        f"int8 graph: {int8_source}.",
        "",
        "| export | lowering + export | matmuls (dot_general per platform) | worst cosine (goal bf16 >= 0.999) "
        "| mean cosine |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"fp32 export on CPU XLA, batch 1: {lat['xla_ms']:.1f} ms vs onnxruntime {lat['ort_ms']:.1f} ms "
        f"(**{lat['ratio']:.2f}x**), max abs difference {lat['max_abs']:.2e}.",
        "",
    ]


def run(report: list[str]) -> None:
    """Append the TPU section's Markdown lines to ``report``."""
    logging.getLogger("jax").setLevel(logging.ERROR)
    report += ["## TPU target (XLA, StableHLO via jax.export)", ""]
    bert_base(report)
    minilm(report)


if __name__ == "__main__":
    lines: list[str] = []
    run(lines)
    print("\n".join(lines))
