"""Foundation benchmarks on BERT-base (BertConfig defaults, seeded weights), batch 1, sequence 128.

1. ONNX import time (goal <= 5 s), median of 3 imports.
2. Interpreter latency vs onnxruntime on the same file (goal <= 1.5x): medians of 30 runs
   each, timed in alternating blocks of 5 with a pause before each block
   (``benchmarks.common.interleaved_ms``).
3. Peak memory of the import (goal <= 2x the model's file size), measured in a fresh process
   as the rise of the resident-set high-water mark over the process's size before the import.

    python -m benchmarks.run foundation
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

_PEAK_SNIPPET = """
import sys
from accelopt.frontends.onnx import load_onnx
import onnx, onnxruntime  # noqa: F401  (baseline includes the libraries)

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
base = rss("VmRSS:")
model = load_onnx(sys.argv[1])
print(rss("VmHWM:") - base)
"""


def _model_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def run(lines: list[str]) -> None:
    import numpy as np
    import onnxruntime as ort

    import modelzoo
    from accelopt.frontends.onnx import load_onnx
    from accelopt.interpreter import Interpreter
    from benchmarks.common import interleaved_ms, run_isolated

    lines.append("## Foundation: import and interpreter (BERT-base, batch 1, sequence 128)")
    lines.append("")
    lines.append("| export | file MB | import s (goal <= 5) | import peak MB (goal <= 2x file) | "
                 "interpreter ms | onnxruntime ms | ratio (goal <= 1.5) |")
    lines.append("|---|---|---|---|---|---|---|")
    for exporter, opset in (("dynamo", 17), ("legacy", 14)):
        path = modelzoo.export_onnx("bert", exporter=exporter, opset=opset, size="full")
        size = _model_bytes(path)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model = load_onnx(path)
            times.append(time.perf_counter() - t0)
        peak = int(run_isolated(_PEAK_SNIPPET, str(path)))
        inputs = modelzoo.family_inputs("bert", 1, 128, seed=0)
        interp = Interpreter(model.graph)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 0  # onnxruntime's default: all cores
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
        out = interp.run(inputs)
        ref = sess.run(None, feed)
        err = float(np.max(np.abs(out[model.output_names[0]] - ref[0])))
        ms = interleaved_ms(
            {"interp": lambda i=interp, x=inputs: i.run(x), "ort": lambda s=sess, f=feed: s.run(None, f)}, rounds=6
        )
        t_interp, t_ort = ms["interp"], ms["ort"]
        lines.append(
            f"| {exporter} opset {opset} | {size / 1e6:.0f} | {statistics.median(times):.2f} | "
            f"{peak / 1e6:.0f} ({peak / size:.2f}x) | {t_interp:.1f} | {t_ort:.1f} | {t_interp / t_ort:.2f} |"
        )
        lines.append(f"<!-- max abs error interpreter vs onnxruntime ({exporter}): {err:.2e} -->")
    lines.append("")
    lines.append("Interpreter: numpy kernels from the op registry (BLAS matmuls, buffer reuse, malloc tuned as "
                 "`accelopt/interpreter.py` says); onnxruntime: CPU execution provider, default threads, default graph "
                 "optimizations. Medians of 30 runs each, timed in alternating blocks of 5 with a 0.3 s pause before "
                 "each block so that neither runtime's spinning worker threads slow the other.")


if __name__ == "__main__":
    out: list[str] = []
    run(out)
    print("\n".join(out))
