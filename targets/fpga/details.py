"""What the fpga artifact tells the report: summary lines and per-layer detail tables.

``describe(artifact)`` returns the artifact's ``describe()`` dict:

1. ``summary``: the label ("VTA accelerator (default Pynq-class config),
   simulated; times are estimates"), the design and board, the MAC split
   (VTA vs host) in total, the estimated time of the offloaded layers against
   the peak, GEMM-core utilization, what bounds the programs (compute or the
   bus, with the numbers), and the host layers with why they stay there;
2. ``details``: tables the HTML report shows in collapsible sections (the
   report's generic hook: ``{"title", "columns", "rows"}`` or ``{"title",
   "text"}``): per layer the program size (instructions, micro-ops, DRAM
   bytes), VTA's counters, estimated cycles, utilization and GOP/s; the MAC
   split per node; the first instructions of each program, disassembled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelopt.targets.fpga.artifact import FpgaArtifact

#: instructions of each program shown disassembled in the HTML report
DISASSEMBLY_LINES = 12
#: programs whose first instructions are shown (the first ones; the rest repeat the same shapes)
DISASSEMBLY_PROGRAMS = 4


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _macs(n: float) -> str:
    return f"{n / 1e9:.3f} GMAC" if n >= 1e8 else f"{n / 1e6:.2f} MMAC"


def summary_lines(a: FpgaArtifact) -> list[str]:
    m = a.metadata
    lines = [str(m.get("label", "")), f"design: {m.get('config_summary', a.config.describe())}"]
    macs = m.get("macs") or {}
    total = macs.get("total", 0)
    lines.append(
        f"MACs on VTA: {_macs(macs.get('vta', 0))} of {_macs(total)} ({_pct(macs.get('vta_share', 0.0))}) in "
        f"{len(a.layers)} program(s); host ({m.get('host', 'interpreter')}): {_macs(macs.get('host', 0))}"
    )
    est = m.get("total_estimate")
    if est:
        peak = a.config.peak_gops
        lines.append(
            f"estimated VTA time for the offloaded layers: {est['seconds'] * 1e3:.2f} ms ({est['cycles']:,} cycles at "
            f"{a.config.clock_mhz:g} MHz), {est['gops']:.1f} GOP/s against a peak of {peak:.1f} GOP/s; GEMM-core "
            f"utilization {_pct(est['utilization'])}, useful MACs {_pct(est['mac_utilization'])} of the peak (estimate)"
        )
        bus, gemm = est["bus_cycles"], est["gemm_cycles"]
        busy = est["busy"]
        if est["bound"] in ("bus", "load", "store"):
            lines.append(
                f"bound by the memory bus (estimate): transfers need {bus:,} cycles, the GEMMs {gemm:,}; "
                f"{a.config.bus_bytes * 8}-bit bus"
            )
        else:
            lines.append(
                f"bound by compute (estimate): compute busy {busy['compute']:,} cycles (GEMM {gemm:,}, ALU "
                f"{est['alu_cycles']:,}, reset {est['reset_cycles']:,}); bus busy {bus:,} cycles, hidden by double "
                "buffering"
            )
    for h in m.get("host_layers") or []:
        if h["op"] == "QLinear":
            lines.append(f"host: {h['node']} ({h['op']}): {h['reason']}")
    host_ops: dict[str, int] = {}
    for h in m.get("host_layers") or []:
        if h["op"] != "QLinear":
            host_ops[h["op"]] = host_ops.get(h["op"], 0) + 1
    if host_ops:
        lines.append(
            "host: " + ", ".join(f"{n} {op}" for op, n in sorted(host_ops.items())) + " (scores and context multiply "
            "two activations); embeddings, softmax, LayerNorm, GELU and (de)quantization run there too"
        )
    lines.extend(f"note: {n}" for n in m.get("notes") or [])
    return lines


def layer_table(a: FpgaArtifact) -> dict[str, Any]:
    cols = [
        "program",
        "node",
        "rows x K x N",
        "instructions",
        "micro-ops",
        "DRAM bytes",
        "tiling",
        "gemm_counter",
        "alu_counter",
        "inp/wgt/acc/uop load bytes",
        "out_store_nbytes",
        "est. cycles",
        "utilization",
        "GOP/s",
        "bound",
    ]
    rows = []
    for layer in a.layers:
        p = layer.program
        est = layer.info.get("estimate") or {}
        c = layer.info.get("counters") or {}
        rows.append(
            [
                layer.name,
                layer.node,
                f"{p.rows} x {p.k} x {p.n}",
                len(p.insns),
                p.num_uops,
                p.dram_bytes,
                f"{p.plan.m_tile}x{p.plan.n_tile}x{p.plan.k_tile} blocks",
                c.get("gemm_counter", ""),
                c.get("alu_counter", ""),
                "/".join(
                    str(c.get(k, ""))
                    for k in ("inp_load_nbytes", "wgt_load_nbytes", "acc_load_nbytes", "uop_load_nbytes")
                ),
                c.get("out_store_nbytes", ""),
                est.get("cycles", ""),
                _pct(est["utilization"]) if "utilization" in est else "",
                f"{est['gops']:.1f}" if "gops" in est else "",
                est.get("bound", ""),
            ]
        )
    return {
        "title": "VTA programs (estimated cycles; counters as VTA's simulator reports them)",
        "columns": cols,
        "rows": rows,
    }


def mac_table(a: FpgaArtifact) -> dict[str, Any]:
    by_node = (a.metadata.get("macs") or {}).get("by_node") or {}
    rows = [[node, d["where"], d["macs"]] for node, d in by_node.items()]
    macs = a.metadata.get("macs") or {}
    rows.append(["total", f"VTA {_pct(macs.get('vta_share', 0.0))}", macs.get("total", 0)])
    return {"title": "MAC split: VTA vs host, per node", "columns": ["node", "runs on", "MACs"], "rows": rows}


def disassembly(a: FpgaArtifact) -> list[dict[str, Any]]:
    out = []
    for layer in a.layers[:DISASSEMBLY_PROGRAMS]:
        p = layer.program
        text = p.disassembly(DISASSEMBLY_LINES)
        if len(p.insns) > DISASSEMBLY_LINES:
            text.append(f"... {len(p.insns) - DISASSEMBLY_LINES} more instruction(s)")
        out.append({"title": f"first instructions of {layer.name} ({layer.node})", "text": text})
    return out


def describe(a: FpgaArtifact) -> dict[str, Any]:
    from accelopt.targets.base import _jsonable

    meta = {k: v for k, v in a.metadata.items() if k not in ("macs",)}
    return {
        "target": "fpga",
        "files": list(a.files),
        "summary": summary_lines(a),
        "details": [layer_table(a), mac_table(a)] + disassembly(a),
        "macs": {k: v for k, v in (a.metadata.get("macs") or {}).items() if k != "by_node"},
        "layers": [layer.as_dict() for layer in a.layers],
        **_jsonable(meta),
    }


__all__ = ["describe", "summary_lines"]
