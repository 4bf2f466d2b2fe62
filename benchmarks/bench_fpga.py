"""The fpga target (VTA, simulated): MiniLM through the artifact, BERT-base's offload share and estimated time.

1. all-MiniLM-L6-v2 (real weights), ``optimize --target fpga --passes fuse,int8`` with validation (32
   held-out sentences, sequence 128): accuracy of the written artifact against fp32 onnxruntime (worst
   pooled cosine, worst token cosine), the layers on VTA, then the simulation time of one inference through
   the artifact loaded from disk (batch 1, sequence 128; first run, then the median in alternating blocks
   against the interpreter running the same final graph, the host-only peer).
2. BERT-base (BertConfig defaults, seeded weights), batch 1, sequence 128, ``fuse,int8`` lowered for the
   default board (validated on 8 samples): the MAC share on VTA, the estimated time of the
   offloaded layers against the peak, GEMM-core utilization, what bounds the programs, and the per-layer
   table of one encoder layer; the same layers estimated on the zcu104 board (333 MHz, 128-bit bus).

Every time of the accelerator is an estimate of the cycle model; only the simulation time is measured.

    python -m benchmarks.run fpga
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEQ = 128


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _minilm(lines: list[str]) -> None:
    import accelopt as ao
    import modelzoo
    from accelopt.interpreter import Interpreter
    from accelopt.samples import HELDOUT_SENTENCES, bundled_tokenizer, tokenize
    from benchmarks.common import interleaved_ms

    path = modelzoo.minilm_onnx()
    t0 = time.perf_counter()
    res = ao.optimize(str(path), target="fpga", passes="fuse,int8", num_samples=32, seq_len=SEQ)
    total_s = time.perf_counter() - t0
    art = res.artifact
    rep = res.report
    assert rep.final is not None and rep.artifact_check is not None
    fin = rep.final.per_output["last_hidden_state"]
    chk = rep.artifact_check.per_output["last_hidden_state"]
    quant = next(r for r in res.records if r.name == "quantize-int8")
    kept_float = [n for n in quant.notes if n.startswith("kept float")]
    macs = art.metadata["macs"]
    with tempfile.TemporaryDirectory(prefix="accelopt-bench-fpga-") as tmp:
        art.save(tmp)
        loaded = ao.Artifact.load(tmp)
        feeds = tokenize(bundled_tokenizer(), list(HELDOUT_SENTENCES[:1]), SEQ)
        feeds = {v.name: feeds[v.name] for v in loaded.graph.inputs}
        t0 = time.perf_counter()
        loaded.run(feeds)
        first_s = time.perf_counter() - t0
        interp = Interpreter(loaded.graph)
        ms = interleaved_ms(
            {"artifact": lambda: loaded.run(feeds), "interpreter": lambda: interp.run(feeds)}, rounds=3, repeat=3
        )
    load = os.getloadavg()[0]
    lines.append("## fpga: VTA accelerator (default Pynq-class config), simulated; times are estimates")
    lines.append("")
    lines.append("### all-MiniLM-L6-v2 (real weights), `optimize --target fpga --passes fuse,int8`, sequence 128")
    lines.append("")
    lines.append("| measure | value |")
    lines.append("|---|---|")
    lines.append(
        f"| status | {rep.status} ({total_s:.0f} s for the whole run: passes, validation, lowering, 32 artifact runs) |"
    )
    lines.append(
        f"| written artifact vs fp32 onnxruntime: worst pooled cosine (goal >= 0.99) | {chk['pooled_cosine_min']:.5f} |"
    )
    lines.append(
        f"| written artifact: worst token cosine, max similarity change | {chk['cosine_min']:.5f}, {chk['similarity_max_abs']:.4f} |"
    )
    lines.append(f"| final graph (interpreter): worst pooled cosine | {fin['pooled_cosine_min']:.5f} |")
    lines.append(
        f"| layers on VTA | {len(art.layers)} of {len(art.layers) + len(kept_float)} dense layers ({len(kept_float)} kept float by the accuracy-aware fallback) |"
    )
    lines.append(
        f"| MACs on VTA | {_pct(macs['vta_share'])} ({macs['vta'] / 1e9:.3f} of {macs['total'] / 1e9:.3f} GMAC) |"
    )
    est = art.metadata["total_estimate"]
    lines.append(
        f"| estimated VTA time of the offloaded layers | {est['seconds'] * 1e3:.1f} ms, utilization {_pct(est['utilization'])}, {est['gops']:.1f} GOP/s (peak 51.2) |"
    )
    lines.append(f"| simulation through the artifact, first run after load (goal <= 10 s) | {first_s:.2f} s |")
    lines.append(f"| simulation through the artifact, median | {ms['artifact'] / 1e3:.2f} s |")
    lines.append(
        f"| the interpreter on the same graph (host-only peer), median | {ms['interpreter'] / 1e3:.3f} s ({ms['artifact'] / ms['interpreter']:.1f}x) |"
    )
    lines.append("")
    lines.append(
        f"Load average at the time: {load:.1f} (2 cores, shared). Layers kept float: "
        + ("; ".join(n.split(": ", 1)[1].split(" (")[0] for n in kept_float) or "none")
        + "."
    )
    lines.append("")


def _bert_base(lines: list[str]) -> None:
    import accelopt as ao
    import modelzoo
    from accelopt.targets.fpga.config import PRESETS
    from accelopt.targets.fpga.cycles import combine, estimate_cycles
    from accelopt.targets.fpga.emit import compile_layer

    path = modelzoo.export_onnx("bert", exporter="dynamo", opset=17, size="full")
    t0 = time.perf_counter()
    res = ao.optimize(str(path), target="fpga", passes="fuse,int8", num_samples=8, seq_len=SEQ)
    total_s = time.perf_counter() - t0
    art = res.artifact
    m = art.metadata
    macs, est = m["macs"], m["total_estimate"]
    chk = res.report.artifact_check
    quant = next(r for r in res.records if r.name == "quantize-int8")
    lines.append("### BERT-base, batch 1, sequence 128, `--target fpga --passes fuse,int8` (validated on 8 samples)")
    lines.append("")
    lines.append("| measure | value |")
    lines.append("|---|---|")
    lines.append(
        f"| MACs on VTA (goal >= 95%) | {_pct(macs['vta_share'])}: {macs['vta'] / 1e9:.2f} of {macs['total'] / 1e9:.2f} GMAC in {len(art.layers)} programs; host {macs['host'] / 1e9:.2f} GMAC (attention scores and context) |"
    )
    lines.append(
        f"| estimated GEMM-core utilization over the offloaded layers (goal >= 70%) | {_pct(est['utilization'])} "
        f"(useful MACs only, without the zero-point columns: {_pct(est['mac_utilization'])} of the peak) |"
    )
    lines.append(
        f"| estimated VTA time of the offloaded layers | {est['seconds'] * 1e3:.0f} ms ({est['cycles']:,} cycles at 100 MHz): {est['gops']:.1f} GOP/s against a peak of 51.2 GOP/s |"
    )
    busy = est["busy"]
    lines.append(
        f"| bound | {est['bound']}: compute busy {busy['compute']:,} cycles (GEMM {est['gemm_cycles']:,}, ALU "
        f"{est['alu_cycles']:,}, accumulator resets {est['reset_cycles']:,}); load module {busy['load']:,}, store "
        f"{busy['store']:,}; bus transfers {est['bus_cycles']:,} cycles, hidden behind the GEMMs |"
    )
    lines.append(
        f"| compile (lowering {m['compile_seconds']:.1f} s) and DRAM image | whole run {total_s:.0f} s; {m['dram_bytes'] / 2**20:.1f} MiB |"
    )
    if chk is not None:
        r = chk.vs_reference
        lines.append(
            f"| written artifact vs onnxruntime fp32 | worst token cosine {r['cosine_min']:.5f}, worst pooled "
            f"{r.get('pooled_cosine_min', float('nan')):.5f}; layers quantized: {quant.stats['layers']['quantized']} of "
            f"{quant.stats['layers']['total']} |"
        )
    lines.append("")
    lines.append("One encoder layer (estimates; counters as VTA's simulator reports them):")
    lines.append("")
    lines.append(
        "| program | rows x K x N | instructions | micro-ops | DRAM bytes | tiling (blocks) | gemm_counter | alu_counter | est. cycles | utilization | GOP/s | bound |"
    )
    lines.append("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for layer in art.layers[:4]:
        p = layer.program
        e, c = layer.info["estimate"], layer.info["counters"]
        lines.append(
            f"| {layer.name} | {p.rows} x {p.k} x {p.n} | {len(p.insns)} | {p.num_uops} | {p.dram_bytes:,} | "
            f"{p.plan.m_tile}x{p.plan.n_tile}x{p.plan.k_tile} | {c['gemm_counter']:,} | {c['alu_counter']:,} | "
            f"{e['cycles']:,} | {_pct(e['utilization'])} | {e['gops']:.1f} | {e['bound']} |"
        )
    lines.append("")
    # the same layers on a bigger board (compiled again for it; estimates only)
    rows = []
    for name in ("pynq", "zcu104"):
        cfg = PRESETS[name]
        ests = []
        for layer in art.layers:  # the same integer layers, read back from the artifact's DRAM image
            prog = compile_layer(_dense_from(art, layer), layer.program.rows, cfg, 0x1000)
            ests.append(estimate_cycles(prog.insns, cfg, int(layer.info["macs"])))
        tot = combine(ests, cfg)
        rows.append((name, cfg, tot))
    lines.append("| board | clock, bus | est. time | GOP/s (peak) | utilization | bus busy |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for name, cfg, tot in rows:
        lines.append(
            f"| {name} | {cfg.clock_mhz:g} MHz, {cfg.bus_bytes * 8}-bit | {tot.seconds * 1e3:.0f} ms | "
            f"{tot.gops:.1f} ({cfg.peak_gops:.1f}) | {_pct(tot.utilization)} | {_pct(tot.bus_cycles / tot.cycles)} |"
        )
    lines.append("")


def _dense_from(art: Any, layer: Any) -> Any:
    """The integer layer of an artifact's program, read back from its DRAM image."""
    from accelopt.targets.fpga.layout import unpack_weights
    from accelopt.targets.fpga.requant import DenseLayer

    p = layer.program
    w = unpack_weights(art.image.read(p.region("weight")), p.k, p.n)
    consts = art.image.read(p.region("constants")).reshape(-1, 2, art.config.block_out)
    bias = consts[:, 0].reshape(-1)[: p.n].copy()
    shift = consts[:, 1].reshape(-1)[: p.n].copy()
    return DenseLayer(layer.node, w, bias, shift, layer.row_shift)


def run(lines: list[str]) -> None:
    _minilm(lines)
    _bert_base(lines)
    lines.append(
        "Times of the accelerator are estimates of the cycle model (GEMM one 1x16x16 product per cycle, ALU one "
        "vector op per 2 cycles, DMA bytes over the shared bus plus 64 cycles per transfer, the three modules "
        "scheduled along their dependency tokens), not measurements. The simulation time is measured."
    )


if __name__ == "__main__":
    out: list[str] = []
    run(out)
    print("\n".join(out))
