"""Quantization on all-MiniLM-L6-v2 (real weights): accuracy against fp32, weight bytes, onnxruntime speed.

Everything is measured in one run against peers measured in the same run:

1. Accuracy on the 32 built-in held-out sentences (sequence 128; the passes calibrate on the disjoint
   calibration sentences): worst mean-pooled embedding cosine and largest pairwise-similarity change of
   ``last_hidden_state`` against the original model in onnxruntime (fp32), plus the worst token-row cosine.
   Peer: onnxruntime's ``quantize_dynamic`` (int8 weights, its defaults). accelopt rows: ``fuse,int8`` with
   default settings for ``--target onnx`` (judged on the written model run by onnxruntime, and on the
   interpreter), without a target (symmetric activations), and variants; ``fp16``/``bf16`` on the
   interpreter.
2. Accuracy-aware fallback: ``fuse,int8{activations=symmetric}`` with ``--tolerance cosine=0.995``: the
   layers kept float and what each cost.
3. Linear weight bytes under int8 (the quantize-int8 pass's figures).
4. onnxruntime latency, batch 1, sequence 128, default threads: the original fp32 model, onnxruntime's
   ``quantize_dynamic`` output and accelopt's ``--target onnx`` int8 model, timed interleaved (median of
   rounds); the ratio accelopt / quantize_dynamic (goal <= 1.1).

    python -m benchmarks.run quantization
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEQ = 128
ROUNDS = 400


def _fmt(m: dict[str, float]) -> str:
    return (
        f"{m.get('pooled_cosine_min', float('nan')):.5f} | {m.get('similarity_max_abs', float('nan')):.4f} | "
        f"{m.get('cosine_min', float('nan')):.5f}"
    )


def _timed(sessions: list[tuple[str, Any, dict[str, np.ndarray]]]) -> dict[str, list[float]]:
    """Interleaved timing: each round runs every session once (so load changes hit all of them alike)."""
    for _, sess, feed in sessions:
        for _ in range(10):
            sess.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name, _, _ in sessions}
    for _ in range(ROUNDS):
        for name, sess, feed in sessions:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def run(lines: list[str]) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import accelopt as ao
    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.passes.base import PassContext, build_pipeline
    from accelopt.passmanager import PassManager
    from accelopt.samples import HELDOUT_SENTENCES, bundled_tokenizer, default_samples, tokenize
    from accelopt.validation import ValidationConfig, Validator

    path = modelzoo.minilm_onnx()
    model = load_onnx(path)
    validator = Validator(model, ValidationConfig(num_samples=32, seq_len=SEQ))
    samples = validator.samples

    def lhs(rec: Any) -> dict[str, float]:
        return rec.per_output["last_hidden_state"]

    rows: list[tuple[str, str, dict[str, float]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="accelopt-bench-quant-"))

    # -- peer: onnxruntime quantize_dynamic
    peer_path = tmp / "ort_quantize_dynamic.onnx"
    t0 = time.perf_counter()
    quantize_dynamic(str(path), str(peer_path), weight_type=QuantType.QInt8)
    peer_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    peer = ort.InferenceSession(str(peer_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in peer.get_outputs()]

    def run_peer(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {i.name: batch[i.name] for i in peer.get_inputs()}
        res = dict(zip(names, peer.run(None, feed)))
        return [res[n] for n in validator.output_names]

    peer_rec = validator.evaluate_outputs(validator.run_inputs(run_peer, model.graph))
    rows.append(("onnxruntime `quantize_dynamic` (peer)", "onnxruntime", lhs(peer_rec)))

    # -- accelopt int8 for --target onnx (defaults)
    t0 = time.perf_counter()
    res = ao.optimize(str(path), target="onnx", passes="fuse,int8", num_samples=32, seq_len=SEQ)
    ours_s = time.perf_counter() - t0
    assert res.report.final is not None and res.report.artifact_check is not None
    rows.append(("accelopt `fuse,int8`, `--target onnx` (defaults)", "onnxruntime", lhs(res.report.artifact_check)))
    rows.append(("same graph", "interpreter", lhs(res.report.final)))
    quant = next(r for r in res.records if r.name == "quantize-int8")

    # -- other settings on the interpreter (no target: symmetric int8 activations by default)
    cal = default_samples(model.graph, None, n=32, seq_len=SEQ, purpose="calibration").as_list()
    fused, _ = PassManager(build_pipeline("fuse"), PassContext()).run(model.graph)
    variants = [
        ("int8", "`fuse,int8`, no target (symmetric int8 per row)"),
        ("int8{smoothquant=0.5}", "`fuse,int8{smoothquant=0.5}`, no target"),
        ("int8{activations=asymmetric,granularity=tensor}", "`fuse,int8{granularity=tensor}` (per-tensor, asymmetric)"),
        ("int8{mode=static,activations=asymmetric}", "`fuse,int8{mode=static}` (minmax, asymmetric)"),
        (
            "int8{mode=static,calibration=percentile,activations=asymmetric}",
            "`fuse,int8{mode=static,calibration=percentile}` (99.99, asymmetric)",
        ),
        (
            "int8{mode=static,calibration=entropy,activations=asymmetric}",
            "`fuse,int8{mode=static,calibration=entropy}` (asymmetric)",
        ),
        ("bf16", "`fuse,bf16`"),
        ("fp16", "`fuse,fp16`"),
    ]
    for spec, label in variants:
        g, recs = PassManager(build_pipeline(spec), PassContext(calibration=cal)).run(fused)
        rows.append((label, "interpreter", lhs(validator.evaluate(g))))

    # -- fallback with a tighter tolerance
    fb = ao.optimize(
        str(path),
        target="onnx",
        passes="fuse,int8{activations=symmetric}",
        tolerance="cosine=0.995",
        num_samples=32,
        seq_len=SEQ,
    )
    fbq = next(r for r in fb.records if r.name == "quantize-int8")

    # -- latency
    model_path = tmp / "accelopt"
    res.artifact.save(model_path)
    tok_feed = tokenize(bundled_tokenizer(), list(HELDOUT_SENTENCES[:1]), SEQ)
    sessions = []
    for name, p in (("fp32", path), ("peer", peer_path), ("accelopt", model_path / "model.onnx")):
        s = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        sessions.append((name, s, {i.name: tok_feed[i.name] for i in s.get_inputs()}))
    times = _timed(sessions)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    # each round ran both models back to back: the median of the per-round ratios cancels slow drifts in load
    ratio = statistics.median(a / p for a, p in zip(times["accelopt"], times["peer"]))

    # -- report
    lines.append("## Quantization: all-MiniLM-L6-v2 (real weights), int8 / fp16 / bf16")
    lines.append("")
    lines.append(
        f"Held-out inputs: {samples.source}, sequence {SEQ}; the int8 passes calibrate on the disjoint built-in "
        "calibration sentences. Reference: the original model in onnxruntime (fp32). Metrics on "
        "`last_hidden_state`: worst mean-pooled embedding cosine (goal >= 0.99 for int8, >= 0.999 bf16, "
        ">= 0.9995 fp16), largest change of a pairwise cosine similarity (goal <= 0.02), worst token-row cosine."
    )
    lines.append("")
    lines.append("| model | run by | worst pooled cosine | max similarity change | worst token cosine |")
    lines.append("|---|---|---:|---:|---:|")
    for label, by, m in rows:
        lines.append(f"| {label} | {by} | {_fmt(m)} |")
    lines.append("")
    wb = quant.stats["linear_weight_bytes"]
    lines.append(
        f"Linear/Attention weights under `int8` (report of `quantize-int8`): float32 {wb['float32'] / 2**20:.1f} MiB "
        f"-> int8 {wb['int8'] / 2**20:.1f} MiB + scales {wb['scales'] / 2**10:.0f} KiB: **{wb['float32'] / wb['int8']:.2f}x** "
        f"smaller (int8 data), {wb['ratio']:.2f}x with the scales. Scheme: {quant.stats['scheme']}. "
        f"Pipeline run (fuse, int8, validation, ONNX write, artifact check): {ours_s:.0f} s; "
        f"`quantize_dynamic`: {peer_s:.1f} s."
    )
    lines.append("")
    lines.append("### Accuracy-aware fallback: `fuse,int8{activations=symmetric}`, `--tolerance cosine=0.995`")
    lines.append("")
    fin = fb.report.final
    fin_m = lhs(fin) if fin is not None else {}
    lines.append(
        f"Status **{fb.report.status}**; final worst token cosine {fin.vs_reference['cosine_min'] if fin else float('nan'):.4f} "
        f"(all outputs), pooled {fin_m.get('pooled_cosine_min', float('nan')):.4f}, similarity change "
        f"{fin_m.get('similarity_max_abs', float('nan')):.4f}; {fbq.stats['layers']['float']} of "
        f"{fbq.stats['layers']['total']} layers kept float:"
    )
    lines.append("")
    for n in fbq.notes:
        if n.startswith(("kept float", "fallback")):
            lines.append(f"- {n}")
    lines.append("")
    lines.append(f"### onnxruntime latency, batch 1, sequence {SEQ} (interleaved, {ROUNDS} rounds)")
    lines.append("")
    lines.append("| model | median ms | min ms |")
    lines.append("|---|---:|---:|")
    for name, label in (
        ("fp32", "original fp32"),
        ("peer", "onnxruntime `quantize_dynamic`"),
        ("accelopt", "accelopt int8 (`--target onnx`)"),
    ):
        lines.append(f"| {label} | {med[name]:.2f} | {low[name]:.2f} |")
    lines.append(
        f"| ratio accelopt / quantize_dynamic | {med['accelopt'] / med['peer']:.2f}x | {low['accelopt'] / low['peer']:.2f}x |"
    )
    lines.append("")
    lines.append(
        f"**Ratio accelopt / quantize_dynamic: {ratio:.3f}x** (goal <= 1.1; median over the {ROUNDS} rounds of the "
        "ratio of the two times measured back to back in that round)."
    )
    lines.append("")
    lines.append(
        "onnxruntime: CPU execution provider, default threads and graph optimizations. accelopt's model runs "
        "per-row dynamic quantization as standard ops feeding `com.microsoft.MatMulIntegerToFloat` (u8 x s8) "
        "and the fused attention as `com.microsoft.MultiHeadAttention`."
    )


if __name__ == "__main__":
    out: list[str] = []
    run(out)
    print("\n".join(out))
