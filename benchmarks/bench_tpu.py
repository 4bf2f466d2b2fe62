"""TPU target benchmarks: export time, CPU-XLA latency of the export vs onnxruntime, bf16 accuracy, estimates.

1. BERT-base (BertConfig defaults, seeded weights; torch dynamo export,
   opset 17) after ``cleanup,fuse`` (or ``cleanup`` while the fusion passes
   are not registered): lowering + ``jax.export`` time of the TPU artifacts
   (bf16, fp32, and int8 after the ``int8`` group; chip v5e, platforms
   tpu+cpu, batch 8, sequence 128), their StableHLO checks, and the roofline
   estimate per chip (labelled: an estimate, not a measurement).
2. The fp32 export (``--passes fuse``: ``precision=auto`` on the fp32 graph,
   batch not padded) run on this machine's CPU XLA against onnxruntime on
   the original file, batch 1, sequence 128: medians in alternating blocks in one
   process, their ratio, and the max abs difference. This is a sanity bound
   on the lowering; the TPU is the real target.
3. all-MiniLM-L6-v2 (real weights): the same latency pair, and the worst
   cosine of mask-mean-pooled sentence embeddings of 32 held-out built-in
   sentences (sequence 128) and the largest change of their pairwise cosine
   similarities, from the bf16, fp32 and int8 exports against onnxruntime
   fp32. The int8 graphs come from the ``int8`` group run with the TPU's
   capability descriptor in ``PassContext.target`` (as ``optimize --target
   tpu`` runs it: per-row asymmetric activations, QDQ form kept), on the
   fused graph, with dynamic scales (the calibration sentences are
   disjoint from the held-out ones); one row shows symmetric activations.

    python -m benchmarks.run tpu      # or: python benchmarks/bench_tpu.py
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved_ms

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
    ms = interleaved_ms({"xla": lambda: art.run(feed), "ort": lambda: sess.run(None, ort_feed)})
    return {
        "xla_ms": ms["xla"],
        "ort_ms": ms["ort"],
        "ratio": ms["xla"] / ms["ort"],
        "max_abs": max_abs,
        "precision": art.metadata["policy"]["precision"],
    }


def _kinds(art: Any) -> str:
    return ", ".join(f"{k}: {v // len(art.platforms)}" for k, v in sorted(art.buckets[0]["dot_general"].items()))


def bert_base(report: list[str]) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.targets.tpu import TpuTarget

    path = modelzoo.export_onnx("bert", exporter="dynamo", opset=17, size="full")
    model = load_onnx(path)
    graph, pipeline = _optimized(model.graph)
    int8_graph, scheme = _int8_graph(graph, modelzoo.family_inputs("bert", 4, SEQ, seed=1))
    report += [
        "### BERT-base, TPU artifacts",
        "",
        f"Pipeline `{pipeline}`, {len(graph.nodes)} nodes; chip v5e, platforms tpu+cpu, batch 8 (padded), "
        f"sequence 128. int8: the `int8` group with the tpu capabilities ({scheme}).",
        "",
        "| export | lowering + jax.export (goal <= 60 s) | dot_general per platform | StableHLO policy problems "
        "| custom_calls | weights |",
        "|---|---|---|---|---|---|",
    ]
    arts = {}
    for label, g, options in (
        ("bf16 (`precision=bf16`)", graph, {"precision": "bf16"}),
        ("fp32 (`--passes fuse`)", graph, {}),
        ("int8 (`--passes fuse,int8`)", int8_graph, {}),
    ):
        t0 = time.perf_counter()
        art = TpuTarget(seq_lens=(SEQ,), **options).lower(g)
        seconds = time.perf_counter() - t0
        arts[label] = art
        b = art.buckets[0]
        report.append(
            f"| {label} | {seconds:.2f} s | {_kinds(art)} | {len(b['stablehlo_check'])} | "
            f"{', '.join(b['custom_calls']) or 'none'} | {art.parameter_bytes / 1e6:.1f} MB |"
        )
    report += [
        "",
        "Roofline **estimates** (published peak rates and HBM bandwidth; not measurements), batch 8, sequence 128, "
        "per-op roofline (lower bound):",
        "",
        "| chip | bf16 export | int8 export | int8 matmul GOP |",
        "|---|---|---|---|",
    ]
    for chip in CHIPS:
        est = {}
        for key, g, options in (("bf16", graph, {"precision": "bf16"}), ("int8", int8_graph, {})):
            r = arts["bf16 (`precision=bf16`)" if key == "bf16" else "int8 (`--passes fuse,int8`)"]
            if chip != "v5e":
                r = TpuTarget(chip=chip, seq_lens=(SEQ,), platforms=("cpu",), **options).lower(g)
            est[key] = (r.buckets[0]["roofline"], r.metadata["policy"]["precision"])
        (bf, _), (i8, prec) = est["bf16"], est["int8"]
        report.append(
            f"| {chip} | {bf['estimate_s'] * 1e3:.3f} ms ({bf['lower_bound_s'] * 1e3:.3f} ms) | "
            f"{i8['estimate_s'] * 1e3:.3f} ms ({i8['lower_bound_s'] * 1e3:.3f} ms){'' if prec == 'int8' else ', as bf16'} | "
            f"{i8['int8_ops'] / 1e9:.1f} |"
        )
    feed = modelzoo.family_inputs("bert", 1, SEQ, seed=0)
    t0 = time.perf_counter()
    TpuTarget(seq_lens=(SEQ,), batch_multiple=1).lower(graph)
    export_s = time.perf_counter() - t0
    lat = latency_vs_onnxruntime(graph, path, feed)
    report += [
        "",
        "### BERT-base fp32 export (`--passes fuse`) on CPU XLA vs onnxruntime (batch 1, sequence 128)",
        "",
        "| runtime | median |",
        "|---|---|",
        f"| accelopt tpu export ({lat['precision']}) on CPU XLA | {lat['xla_ms']:.1f} ms |",
        f"| onnxruntime fp32 (original file) | {lat['ort_ms']:.1f} ms |",
        f"| **ratio** (goal <= 1.5x) | **{lat['ratio']:.2f}x** |",
        f"| max abs difference | {lat['max_abs']:.2e} |",
        f"| lowering + jax.export of this export | {export_s:.2f} s |",
        "",
    ]


def _int8_graph(graph: Any, calibration: dict[str, np.ndarray], spec: str = "int8") -> tuple[Any, str]:
    """The ``int8`` group's QDQ graph, run with the TPU's capabilities in ``PassContext.target`` (what the pass reads)."""
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passes.quant_int8 import scheme_for
    from accelopt.passmanager import PassManager
    from accelopt.targets.tpu import TpuTarget

    caps = TpuTarget().capabilities
    passes = build_pipeline(spec)
    out, _records = PassManager(passes, PassContext(target=caps, calibration=[calibration])).run(graph)
    return out, scheme_for(passes[0].options, caps).describe()


def minilm(report: list[str]) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager
    from accelopt.samples import CALIBRATION_SENTENCES, HELDOUT_SENTENCES, bundled_tokenizer, tokenize
    from accelopt.targets.tpu import TpuTarget
    from accelopt.validation import compare

    path = modelzoo.minilm_onnx()
    model = load_onnx(path)
    graph, pipeline = _optimized(model.graph)
    tok = bundled_tokenizer()
    feed = tokenize(tok, list(HELDOUT_SENTENCES[:32]), SEQ)
    calibration = tokenize(tok, list(CALIBRATION_SENTENCES[:32]), SEQ)
    sess = _ort(path)
    names = {i.name for i in sess.get_inputs()}
    ref = sess.run(["last_hidden_state"], {k: v for k, v in feed.items() if k in names})[0]
    bf16_graph, _ = PassManager(build_pipeline("bf16"), PassContext()).run(graph)
    int8_graph, scheme = _int8_graph(graph, calibration)
    sym_graph, sym_scheme = _int8_graph(graph, calibration, "int8{activations=symmetric}")
    rows = []
    for label, g, options in (
        ("`fuse,bf16` (bf16 graph, as the default pipeline)", bf16_graph, {}),
        ("fp32 graph, `precision=bf16`", graph, {"precision": "bf16"}),
        ("fp32 (`--passes fuse`)", graph, {}),
        ("`fuse,int8`, chip v5e", int8_graph, {}),
        ("`fuse,int8`, chip v4 (bf16 fallback)", int8_graph, {"chip": "v4"}),
        ("`fuse,int8{activations=symmetric}`, chip v5e", sym_graph, {}),
    ):
        t0 = time.perf_counter()
        art = TpuTarget(seq_lens=(SEQ,), **options).lower(g)
        export_s = time.perf_counter() - t0
        out = art.run(feed)["last_hidden_state"]
        m = compare(ref, out, name="last_hidden_state", mask=feed["attention_mask"])
        rows.append(
            f"| {label} | {export_s:.2f} s | {_kinds(art)} | {m['pooled_cosine_min']:.5f} | "
            f"{m['similarity_max_abs']:.4f} | {m['cosine_min']:.5f} |"
        )
    one = {k: v[:1] for k, v in feed.items()}
    lat = latency_vs_onnxruntime(graph, path, one)
    report += [
        "### all-MiniLM-L6-v2 (real weights)",
        "",
        f"Pipeline `{pipeline}`; 32 held-out built-in sentences at sequence 128 through the exported artifact on "
        "CPU XLA (batch padded to 8, run in chunks) against onnxruntime fp32 on the original file: worst "
        "mean-pooled embedding cosine (goals: bf16 >= 0.999, int8 >= 0.99), largest change of a pairwise "
        f"similarity (goal int8 <= 0.02), worst token cosine. int8: {scheme}; symmetric row: {sym_scheme}.",
        "",
        "| export | lowering + export | dot_general per platform | worst pooled cosine | similarity max change "
        "| worst token cosine |",
        "|---|---|---|---|---|---|",
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
