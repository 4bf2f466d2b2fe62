"""gpu target section: what the H100 run measured (``benchmarks/gpu_h100.py``), or that nothing was measured yet.

The GPU numbers come from one run on a lent GPU machine::

    python -m benchmarks.gpu_carry --out gpu_carry                      # here: build, ~15-25 min on 2 cores
    python3 benchmarks/gpu_h100.py --carry gpu_carry --out $OUT         # there, carrying gpu_carry/
    cp $OUT/gpu_h100.json benchmarks/results/gpu_h100.json              # then: python -m benchmarks.run gpu

This section reads ``benchmarks/results/gpu_h100.json`` and names the GPU it
ran on; without that file it says that the GPU numbers are unmeasured. It
also reports what the build measured here (the carry's build times), and builds
all-MiniLM-L6-v2 and BERT-base (``--passes fuse,fp16``, sequence 128, batch 1)
for sm_90 on this machine to give the compile time (issue 11's bound: BERT-base
within 5 minutes on 2 cores) and what the library holds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_h100.json"


def _table(res: dict[str, Any]) -> list[str]:
    torch = {(t["model"], t["runtime"], t["batch"]): t for t in res["torch"]}
    lines = [
        "| model | precision | batch | accelopt ms | torch eager fp16 ms | torch.compile fp16 ms | "
        "ratio to eager | max abs vs fp32 ref | worst pooled cosine | bar met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        eager = torch.get((r["model"], "torch eager fp16", r["batch"]), {})
        comp = torch.get((r["model"], "torch.compile fp16", r["batch"]), {})
        e_ms, c_ms = eager.get("ms"), comp.get("ms")
        ratio = f"{r['ms'] / e_ms:.2f}" if e_ms else "-"
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['batch']} | {r['ms']:.3f} | "
            f"{f'{e_ms:.3f}' if e_ms else '-'} | {f'{c_ms:.3f}' if c_ms else comp.get('skipped', '-')} | {ratio} | "
            f"{r['max_abs']:.2e} | {r['worst_cosine']:.6f} | {'yes' if r['ok'] else '**no**'} |"
        )
    return lines


def _builds() -> list[str]:
    """Build MiniLM and BERT-base for sm_90 here; one row each with the build's own times."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import accelopt as ao
    import modelzoo

    out = [
        "Built here (`optimize MODEL --target gpu --passes fuse,fp16`, sequence 128, batch 1; validation off, the",
        "build alone timed; wall s is the whole `optimize` call):",
        "",
        "| model | wall s | build s (schedule / TVM compile / nvcc) | kernels | schedule rules | machine code | parameters |",
        "|---|---:|---|---:|---|---|---:|",
    ]
    for label, path in (("all-MiniLM-L6-v2", modelzoo.minilm_onnx()), ("BERT-base", modelzoo.export_onnx("bert", size="full"))):
        t0 = time.perf_counter()
        res = ao.optimize(str(path), target="gpu", passes="fuse,fp16", seq_len=128, validate=False)
        wall = time.perf_counter() - t0
        m = res.artifact.metadata
        b = m["build_seconds"]
        rules = ", ".join(f"{k} {v}" for k, v in sorted(m["schedules"]["rules"].items()))
        code = ", ".join(f"{c['kind']} {c['arch']} {c['bytes'] / 1e6:.2f} MB" for c in m["machine_code"])
        out.append(
            f"| {label} | {wall:.0f} | {b['total']:.0f} ({b['schedule']:.0f} / {b['compile']:.0f} / {b['nvcc']:.0f}) | "
            f"{m['kernels']} | {rules} | {code} | {m['parameter_bytes'] / 2**20:.0f} MiB |"
        )
    return out


def run(lines: list[str]) -> None:
    lines += ["## gpu target (TVM Relax -> CUDA, sm_90)", ""]
    lines += [*_builds(), ""]
    if not RESULTS.is_file():
        lines += [
            "**GPU numbers: unmeasured.** No GPU has run the gpu target's artifacts yet (the sessions that",
            "built it were lent no GPU). Everything up to the GPU is tested here: the artifacts build for",
            "sm_90 with tensor-core instructions in their SASS (`tests/gpu/`), and the H100 script runs",
            "in `--dry-run` mode (parameters rebuilt bit for bit, bundle loaded in Python without TVM).",
            "",
            "To measure: `python -m benchmarks.gpu_carry --out gpu_carry` here, then on the GPU machine",
            "`python3 benchmarks/gpu_h100.py --carry gpu_carry --out $OUT`, copy `$OUT/gpu_h100.json` to",
            "`benchmarks/results/gpu_h100.json` and rerun `python -m benchmarks.run gpu`.",
        ]
        return
    res = json.loads(RESULTS.read_text())
    dev = res["device"]
    lines += [
        f"Ran on **{dev.get('name', '?')}** (compute capability {dev.get('compute_capability', '?')}), Python "
        f"{dev.get('python', '?')}, torch {dev.get('torch', '?')}, with TVM's runtime alone (the carried bundle); "
        f"sequence {res['manifest']['seq']}, {res['manifest']['sentences']} built-in sentences; medians of host-timed "
        "runs with a device synchronize each, inputs on the GPU, CUDA graphs on. References: onnxruntime fp32 on the "
        "same (fp16-exact) weights, computed when the carry was built. Bars: fp32 max abs <= 1e-3, fp16 worst "
        f"pooled cosine >= 0.999. Whole run: {res['seconds']} s.",
        "",
        *_table(res),
        "",
        "Build here (2 cores): " + "; ".join(res["manifest"].get("log", [])),
    ]
