"""The fpga target end to end on small graphs: offload, bit-exact layers, artifact run/save/load/dump, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fpga_helpers import integer_reference, node_inputs, quantize_for_fpga

from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir import parse
from accelopt.ir.graph import Graph
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.targets.base import get_target
from accelopt.targets.fpga.artifact import FpgaArtifact
from accelopt.targets.fpga.config import VTAConfig
from accelopt.targets.fpga.isa import decode_program
from accelopt.targets.fpga.simulator import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "passes"))
from quant_check import attention_graph, inputs_for, mlp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def encoder_block(seed: int = 0) -> Graph:
    """An attention block and a 3-layer MLP (hidden 40: nothing a multiple of 16) in one graph."""
    att = attention_graph(seed)
    g = mlp(layers=3, hidden=8, seed=seed)
    rng = np.random.default_rng(seed)
    text = """graph enc(%x: float32[batch,8,40], %mask: int64[batch,8]) {
  %w: float32[40,120] = const <sha:0>
  %b: float32[120] = const <sha:1>
  %w1: float32[40,72] = const <sha:2>
  %b1: float32[72] = const <sha:3>
  %w2: float32[72,40] = const <sha:4>
  %att: float32[batch,8,40] = Attention{num_heads=4}(%x, %w, %b, %mask) @att
  %h: float32[batch,8,72] = Linear{activation="gelu"}(%att, %w1, %b1) @ffn1
  %y: float32[batch,8,40] = Linear(%h, %w2) @ffn2
  return %y
}
"""
    del att, g
    weights = {
        "w": rng.standard_normal((40, 120)).astype(np.float32) / 6,
        "b": rng.standard_normal(120).astype(np.float32) * 0.1,
        "w1": rng.standard_normal((40, 72)).astype(np.float32) / 6,
        "b1": rng.standard_normal(72).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((72, 40)).astype(np.float32) / 8,
    }
    return parse(text, weights)


@pytest.fixture(scope="module")
def built() -> tuple[Graph, Graph, FpgaArtifact, dict[str, np.ndarray]]:
    g = encoder_block()
    cal = [inputs_for(g, n=8, seed=2, seq=8)]
    q, art = quantize_for_fpga(g, cal, "fpga{seq_len=8}")
    feeds = inputs_for(g, n=1, seed=5, seq=8)
    feeds["mask"][0, 6:] = 0
    return g, q, art, feeds


def test_every_dense_layer_runs_on_vta(built) -> None:
    _, q, art, _ = built
    assert [layer.node for layer in art.layers] == ["att_qkv", "ffn1", "ffn2"]
    macs = art.metadata["macs"]
    assert macs["vta"] == 8 * (40 * 120 + 40 * 72 + 72 * 40)
    assert macs["host"] == 2 * 8 * 8 * 40  # the attention scores and context
    assert all(h["op"] == "ScaledDotProductAttention" for h in art.metadata["host_layers"])


def test_offloaded_layers_are_bit_exact(built) -> None:
    _, q, art, feeds = built
    env = node_inputs(q, feeds)
    for layer in art.layers:
        node = q.node(layer.node)
        args = [None if v is None else env[v.name] for v in node.inputs[:3]]
        got = art.run_layer(layer, *args)
        np.testing.assert_array_equal(got, integer_reference(q, node, env), err_msg=layer.node)
        # the interpreter's QLinear rounds the same float values half to even: at most one step apart
        assert np.abs(got.astype(int) - env[node.outputs[0].name].astype(int)).max() <= 1


def test_artifact_runs_the_model(built) -> None:
    g, q, art, feeds = built
    want = run(q, feeds)["y"]
    got = art.run(feeds)["y"]
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    ref = run(g, feeds)["y"]
    cos = (got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)
    assert cos > 0.99
    assert art.last_counters["001_ffn1"].gemm_counter == 8 * 3 * 5  # 8 rows x ceil(40/16) x ceil(72/16)


def test_more_rows_than_compiled_run_in_chunks(built) -> None:
    _, q, art, _ = built
    feeds = inputs_for(q, n=3, seed=7, seq=8)  # batch 3 against programs compiled for batch 1
    np.testing.assert_allclose(art.run(feeds)["y"], run(q, feeds)["y"], atol=0.05)
    assert art._calls["000_att_qkv"] == 3


def test_save_load_in_a_fresh_process(built, tmp_path: Path) -> None:
    _, _, art, feeds = built
    art.save(tmp_path / "a")
    np.savez(tmp_path / "in.npz", **feeds)
    script = (
        "import sys, numpy as np\n"
        "from accelopt.targets.fpga import FpgaArtifact\n"
        f"a = FpgaArtifact.load({str(tmp_path / 'a')!r})\n"
        f"feeds = dict(np.load({str(tmp_path / 'in.npz')!r}))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, a.run(feeds)['y'])\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), art.run(feeds)["y"])
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["format"] == "accelopt-fpga-artifact" and meta["config"]["log_block_in"] == 4
    prog = json.loads((tmp_path / "a" / "programs" / "001_ffn1" / "program.json").read_text())
    assert {r["role"] for r in prog["regions"].values()} == {"constant", "input", "output"}
    insns = (tmp_path / "a" / "programs" / "001_ffn1" / "insns.bin").read_bytes()
    assert len(insns) == 16 * prog["instructions"]
    dram = np.fromfile(tmp_path / "a" / "dram.bin", np.uint8)
    out = prog["regions"]["output"]
    assert not dram[out["address"] : out["address"] + out["nbytes"]].any()  # the initial image: outputs empty


def test_dumped_programs_replay(built, tmp_path: Path) -> None:
    _, _, art, feeds = built
    art.run(feeds, dump_dir=tmp_path)
    call = tmp_path / "002_ffn2" / "call0"
    info = json.loads((call / "call.json").read_text())
    seg = np.fromfile(call / "dram_in.bin", np.uint8)
    assert seg.size == info["segment"]["nbytes"]
    dram = np.zeros(info["segment"]["address"] + seg.size, np.uint8)  # a fresh memory holding just that segment
    dram[info["segment"]["address"] :] = seg
    cfg = VTAConfig()
    Simulator(cfg, dram).run(decode_program((call / "insns.bin").read_bytes(), cfg))
    o = info["output"]
    np.testing.assert_array_equal(
        dram[o["address"] : o["address"] + o["nbytes"]], np.fromfile(call / "output.bin", np.uint8)
    )


def test_describe_feeds_the_report(built) -> None:
    _, _, art, _ = built
    d = art.describe()
    assert d["target"] == "fpga" and "dram.bin" in d["files"]
    assert d["summary"][0] == "VTA accelerator (default Pynq-class config), simulated; times are estimates"
    assert any(line.startswith("MACs on VTA:") and "(94.3%)" in line for line in d["summary"])
    assert any("GEMM-core utilization" in line for line in d["summary"])
    titles = [t["title"] for t in d["details"]]
    assert titles[0].startswith("VTA programs") and titles[1].startswith("MAC split")
    assert d["details"][0]["rows"][0][1] == "att_qkv"
    assert any(t.get("text") and "LOAD  UOP" in t["text"][0] for t in d["details"])


def test_float_layers_stay_on_the_host_with_a_reason() -> None:
    g = mlp(layers=2)
    q, _ = PassManager(build_pipeline("int8"), PassContext()).run(g)  # float outputs (no target)
    art = get_target("fpga").lower(q)
    assert art.layers == []
    reasons = {h["node"]: h["reason"] for h in art.metadata["host_layers"]}
    assert set(reasons) == {"fc0", "fc1"}
    assert all("float result" in r or "fused activation" in r for r in reasons.values())
    assert any("no layer runs on VTA" in n for n in art.metadata["notes"])


def test_options_and_boards(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="unknown board 'nope'"):
        get_target("fpga{board=nope}")
    big = get_target("fpga{board=zcu104-1x32}")
    assert big.capabilities.tile_sizes["gemm"] == (32, 32)
    f = tmp_path / "vta.json"
    f.write_text(json.dumps({"TARGET": "custom", "clock_mhz": 150}))
    t = get_target(f"fpga{{config={f}}}")
    assert t.vta_config.clock_mhz == 150 and t.capabilities.quantization["scales"] == "power2"


def test_html_report_shows_the_details(built) -> None:
    from accelopt.report_html import artifact_details

    _, _, art, _ = built
    html = "".join(artifact_details(art.describe()["details"]))
    assert html.count("<details>") == 2 + len(art.layers)
    assert "<summary>VTA programs (estimated cycles; counters as VTA&#x27;s simulator reports them)</summary>" in html
    assert '<td class="num">' in html and "<td>att_qkv</td>" in html
    assert "<pre>    0  LOAD  UOP  sram=0x0000" in html
    assert "[pop l2g, push g2l]" in html  # the GEMMs' tokens, disassembled


def test_cli_optimize_run_and_dump(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``optimize MODEL --target fpga --passes fuse,int8 -o OUT``, then ``optimize run OUT --dump-programs DIR``."""
    import accelopt as ao
    from accelopt.cli.main import main

    out = tmp_path / "out"
    rc = main(
        [
            str(tiny_bert),
            "--target",
            "fpga",
            "--passes",
            "fuse,int8",
            "-o",
            str(out),
            "--seq-len",
            "16",
            "--samples",
            "8",
            "--report",
            "json,html",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    art = ao.Artifact.load(out)
    assert isinstance(art, FpgaArtifact) and art.layers
    report = json.loads((out / "report.json").read_text())
    assert report["artifact"]["target"] == "fpga" and report["artifact"]["macs"]["vta_share"] > 0.5
    assert "<summary>VTA programs" in (out / "report.html").read_text()
    feeds = {s["name"]: np.ones((1, 16), np.int64) for s in art.metadata["inputs"]}
    np.savez(tmp_path / "in.npz", **feeds)
    dump = tmp_path / "dump"
    rc = main(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--dump-programs", str(dump)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in dump.iterdir()) == sorted(layer.name for layer in art.layers)
    assert (dump / art.layers[0].name / "call0" / "dram_in.bin").is_file()
