"""Fusion benchmarks: coverage on every family x exporter, BERT-base in onnxruntime, GELU approximations.

1. Coverage (tiny configs, 2 layers): after ``cleanup,fuse``, Attention /
   SkipLayerNorm / Linear{gelu} per layer and near misses; beside it, how many
   Attention nodes onnxruntime's own transformers optimizer
   (``optimize_model(model_type="bert")``) makes from the same file.
2. BERT-base (BertConfig defaults, seeded weights), batch 1, sequence 128:
   node count before/after ``cleanup,fuse``, max abs error against the
   original in onnxruntime, and onnxruntime latency of the original file, of
   onnxruntime's optimizer output and of accelopt's fused graph written with
   the ONNX writer: all three sessions in one run, same settings.
3. all-MiniLM-L6-v2 (real weights), the built-in sentences at sequence 64:
   max abs error after ``cleanup,fuse``, worst cosine of mean-pooled sentence
   embeddings after ``gelu-tanh`` and ``gelu-sigmoid``.

    python -m benchmarks.run fusion
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved_ms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

EXPORTS = (("dynamo", 17), ("dynamo", 18), ("legacy", 14), ("legacy", 17))
FAMILIES = ("bert", "distilbert", "roberta", "albert", "minilm")


def _fuse(graph: Any, pipeline: str = "cleanup,fuse") -> tuple[Any, list[Any]]:
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager

    return PassManager(build_pipeline(pipeline), PassContext()).run(graph)


def _ort_optimized(path: Path, out: Path, num_heads: int, hidden: int) -> tuple[Path, int]:
    """onnxruntime's transformers optimizer on ``path``; returns the saved file and its Attention count."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    opt = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden)
    ops = [n.op_type for n in opt.model.graph.node]
    opt.save_model_to_file(str(out), use_external_data_format=True)
    return out, sum(op in ("Attention", "MultiHeadAttention") for op in ops)


def _session(path: Path | bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


def _dims(family: str, size: str) -> tuple[int, int, int]:
    """(layers, heads, hidden) of a modelzoo family."""
    import modelzoo

    if family == "minilm":
        return 6, 12, 384
    cfg = modelzoo.config_for(family, size)
    layers = getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layers", 0))
    heads = getattr(cfg, "num_attention_heads", getattr(cfg, "n_heads", 0))
    hidden = getattr(cfg, "hidden_size", getattr(cfg, "dim", 0))
    return layers, heads, hidden


def _coverage(lines: list[str], tmp: Path) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx

    lines.append("### Coverage: `cleanup,fuse` on every family and exporter (tiny configs; MiniLM real)")
    lines.append("")
    lines.append("| model | export | layers | Attention | SkipLayerNorm | Linear{gelu} | near misses | nodes | "
                 "onnxruntime optimizer Attention |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for family in FAMILIES:
        layers, heads, hidden = _dims(family, "tiny")
        for exporter, opset in EXPORTS:
            path = modelzoo.export_onnx(family, exporter=exporter, opset=opset)
            model = load_onnx(path)
            graph, records = _fuse(model.graph)
            ops = graph.op_counts()
            gelu = sum(1 for n in graph.nodes if n.op == "Linear" and n.attr("activation", "none").startswith("gelu"))
            misses = sum(len(r.near_misses) for r in records)
            _, ort_att = _ort_optimized(path, tmp / f"{family}-{exporter}{opset}-ort.onnx", heads, hidden)
            lines.append(
                f"| {family} | {exporter} {opset} | {layers} | {ops['Attention']} | {ops['SkipLayerNorm']} | {gelu} | "
                f"{misses} | {len(model.graph.nodes)} -> {len(graph.nodes)} | {ort_att} |"
            )
    lines.append("")


def _bert_base(lines: list[str], tmp: Path) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.interpreter import Interpreter
    from accelopt.targets.onnx_writer import save_onnx

    lines.append("### BERT-base in onnxruntime (batch 1, sequence 128)")
    lines.append("")
    lines.append("| export | nodes before -> after `cleanup,fuse` | drop | fuse max abs | onnxruntime ms | "
                 "ORT optimizer ms (its Attention) | accelopt fused ms | ORT optimizer / accelopt |")
    lines.append("|---|---|---|---|---|---|---|---|")
    _, heads, hidden = _dims("bert", "full")
    for exporter, opset in (("dynamo", 18), ("legacy", 14)):
        path = modelzoo.export_onnx("bert", exporter=exporter, opset=opset, size="full")
        model = load_onnx(path)
        graph, records = _fuse(model.graph)
        before, after = len(model.graph.nodes), len(graph.nodes)
        inputs = modelzoo.family_inputs("bert", 1, 128, seed=0)
        padded = modelzoo.family_inputs("bert", 2, 128, seed=1)  # row 1 is padded
        ref = model.reference(padded)
        got = Interpreter(graph).run(padded)
        err = max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref)
        fused_path = tmp / f"bert-base-{exporter}{opset}-accelopt.onnx"
        save_onnx(graph, fused_path, external_data=True)
        ort_path, ort_att = _ort_optimized(path, tmp / f"bert-base-{exporter}{opset}-ort.onnx", heads, hidden)
        sessions = {"orig": _session(path), "ort": _session(ort_path), "ours": _session(fused_path)}
        feeds = {k: {i.name: inputs[i.name] for i in sess.get_inputs()} for k, sess in sessions.items()}
        times = interleaved_ms({k: lambda s=sess, f=feeds[k]: s.run(None, f) for k, sess in sessions.items()}, rounds=6)
        ours_out = sessions["ours"].run(None, {i.name: padded[i.name] for i in sessions["ours"].get_inputs()})
        err_ort = float(np.max(np.abs(ours_out[0] - ref[model.output_names[0]])))
        lines.append(
            f"| {exporter} {opset} | {before} -> {after} | {100 * (1 - after / before):.1f}% | {err:.1e} "
            f"(in ORT {err_ort:.1e}) | {times['orig']:.1f} | {times['ort']:.1f} ({ort_att}) | {times['ours']:.1f} | "
            f"{times['ort'] / times['ours']:.2f} |"
        )
    lines.append("")
    lines.append("Fused graph written with `accelopt.targets.onnx_writer` (com.microsoft Attention, "
                 "SkipLayerNormalization, EmbedLayerNormalization, BiasGelu). All sessions: CPU execution "
                 "provider, default threads and graph optimizations; medians of 30 runs each, timed in alternating blocks of 5 with a pause before each block. "
                 "A ratio above 1 means accelopt's graph is faster.")
    lines.append("")


def _minilm(lines: list[str]) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.interpreter import Interpreter
    from accelopt.samples import SENTENCES, bundled_tokenizer, tokenize
    from accelopt.validation import pooled

    lines.append("### all-MiniLM-L6-v2: accuracy of fusion and GELU approximations")
    lines.append("")
    lines.append(f"{len(SENTENCES)} built-in sentences, sequence 64, against the original in onnxruntime; "
                 "cosine of mask-aware mean-pooled sentence embeddings (worst sentence).")
    lines.append("")
    lines.append("| export | pipeline | max abs | worst cosine |")
    lines.append("|---|---|---|---|")
    toks = tokenize(bundled_tokenizer(), SENTENCES, 64)
    mask = toks["attention_mask"]
    for exporter, opset in (("dynamo", 18), ("legacy", 14)):
        model = load_onnx(modelzoo.minilm_onnx(exporter=exporter, opset=opset))
        feeds = {v.name: toks[v.name] for v in model.graph.inputs}
        ref = model.reference(feeds)["last_hidden_state"]
        a = pooled(ref, mask)
        for pipeline in ("cleanup,fuse", "cleanup,fuse,gelu-tanh", "cleanup,fuse,gelu-sigmoid"):
            graph, _ = _fuse(model.graph, pipeline)
            out = Interpreter(graph).run(feeds)["last_hidden_state"]
            b = pooled(out, mask)
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            lines.append(f"| {exporter} {opset} | `{pipeline}` | {float(np.max(np.abs(ref - out))):.2e} | "
                         f"{float(np.min(cos)):.7f} |")
    lines.append("")
    lines.append("Passes run without a validator here, so an approximation that breaks the default tolerance "
                 "(cosine 0.9999) is shown rather than rolled back.")


def run(lines: list[str]) -> None:
    lines.append("## Fusion")
    lines.append("")
    with tempfile.TemporaryDirectory(prefix="accelopt-bench-fusion-") as d:
        tmp = Path(d)
        _coverage(lines, tmp)
        _bert_base(lines, tmp)
    _minilm(lines)


if __name__ == "__main__":
    out: list[str] = []
    run(out)
    print("\n".join(out))
