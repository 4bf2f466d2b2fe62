"""The int8 path of the TPU target: the descriptor the int8 pass reads, per-row QDQ activations read as int8
dot_generals, the integer ops (QLinear / QAttention) on int8 and bf16 chips, and the CLI end to end (tiny BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tpu_helpers import call_lowered, encoder_inputs, tiny_encoder_graph

import modelzoo
from accelopt.cli.main import main
from accelopt.interpreter import run
from accelopt.ir import DType, Graph, TensorType
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passes.quant_int8 import Int8Options, scheme_for
from accelopt.passmanager import PassManager
from accelopt.targets.tpu import TpuTarget, lowered_ops
from accelopt.targets.tpu.export import inspect_stablehlo

CAPS = TpuTarget().capabilities


def _types(art) -> set[tuple[str, str, str]]:
    return {(d.lhs.dtype, d.rhs.dtype, d.out.dtype) for d in inspect_stablehlo(art.stablehlo()).dots}


def _weight_dot_types(art) -> list[tuple[str, str, str]]:
    return [
        (d.lhs.dtype, d.rhs.dtype, d.out.dtype) for d in inspect_stablehlo(art.stablehlo()).dots if d.is_weight_matmul
    ]


def test_descriptor_keeps_the_qdq_form_and_asks_for_per_row_int8():
    assert {"QLinear", "QAttention"} <= lowered_ops()
    assert not {"QLinear", "QAttention"} & CAPS.native_ops  # lower-quantized leaves the QDQ form
    assert "int8" in CAPS.dtypes and "uint8" not in CAPS.dtypes
    scheme = scheme_for(Int8Options(), CAPS)
    assert (scheme.granularity, scheme.symmetric, scheme.dtype) == ("row", False, "uint8")
    sym = scheme_for(Int8Options(activations="symmetric"), CAPS)
    assert (sym.symmetric, sym.dtype) == (True, "int8")  # no uint8 on the TPU: symmetric activations are int8

    g = tiny_encoder_graph(seed=3)
    out, records = PassManager(build_pipeline("int8"), PassContext(target=CAPS)).run(g)
    lower_rec = next(r for r in records if r.name == "lower-quantized")
    assert not lower_rec.modified
    ops = out.op_counts()
    assert "QLinear" not in ops and "QAttention" not in ops and ops["DynamicQuantize"] == 4
    dqs = [n for n in out.nodes if n.op == "DequantizeLinear" and n.inputs[0].dtype == DType.UINT8]
    assert dqs and all(n.attrs.get("block_size") == n.inputs[0].shape[-1] for n in dqs)


def _row_graph(symmetric: bool, to: DType, k: int = 96, n: int = 80, seed: int = 0) -> Graph:
    """x -> DynamicQuantize(row) -> DequantizeLinear(axis=-1, block_size=K) -> Linear(DQ(int8 W per channel), b)."""
    rng = np.random.default_rng(seed)
    g = Graph("row_qdq")
    x = g.add_input("x", TensorType(DType.FLOAT32, ("batch", "seq", k)))
    q, s, z = g.add_node(
        "DynamicQuantize", [x], {"to": to, "symmetric": int(symmetric), "granularity": "row"}, outputs=3
    ).outputs
    dq = g.add_node("DequantizeLinear", [q, s, z], {"axis": -1, "block_size": k}).output
    w = rng.standard_normal((k, n)).astype(np.float32)
    ws = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    wq = g.add_initializer("w_q", np.clip(np.rint(w / ws), -127, 127).astype(np.int8))
    dw = g.add_node("DequantizeLinear", [wq, g.add_initializer("w_s", ws)], {"axis": 1}).output
    y = g.add_node("Linear", [dq, dw, g.add_initializer("b", rng.standard_normal(n).astype(np.float32))]).output
    g.set_outputs([y])
    g.verify()
    return g


@pytest.mark.parametrize(
    "symmetric,to", [(True, DType.INT8), (False, DType.UINT8), (False, DType.INT8), (True, DType.UINT8)]
)
def test_per_row_activations_become_int8_dot_generals(symmetric, to):
    g = _row_graph(symmetric, to)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 5, 96)) + np.linspace(-1, 3, 96)).astype(np.float32)  # one-sided rows
    art = TpuTarget(seq_lens=(5,), platforms=("cpu",)).lower(g)
    assert art.metadata["policy"]["precision"] == "int8"
    assert _types(art) == {("i8", "i8", "i32")}
    assert art.buckets[0]["stablehlo_check"] == []
    want = run(g, {"x": x})[g.outputs[0].name]
    got = art.run({"x": x})[g.outputs[0].name]
    # exact int32 sums; only the float32 scale product and bias add round
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_per_row_on_v4_runs_bf16():
    g = _row_graph(False, DType.UINT8)
    x = np.random.default_rng(2).standard_normal((2, 4, 96)).astype(np.float32)
    art = TpuTarget(chip="v4", seq_lens=(4,), platforms=("cpu",)).lower(g)
    assert art.metadata["policy"]["precision"] == "bf16"
    assert _types(art) == {("bf16", "bf16", "f32")}
    want = run(g, {"x": x})[g.outputs[0].name]
    got = art.run({"x": x})[g.outputs[0].name]
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.9999


@pytest.fixture(scope="module")
def integer_encoder():
    """The tiny encoder quantized by the int8 group and lowered to QLinear / QAttention (lower-quantized)."""
    g = tiny_encoder_graph(seed=5)
    passes = build_pipeline("quantize-int8,lower-quantized{when=always}")
    out, _ = PassManager(passes, PassContext(target=CAPS)).run(g)
    assert out.op_counts()["QLinear"] == 3 and out.op_counts()["QAttention"] == 1
    return out


@pytest.mark.parametrize("chip,types", [("v5e", {("i8", "i8", "i32"), ("bf16", "bf16", "f32")}), ("v4", None)])
def test_integer_ops_on_int8_and_bf16_chips(integer_encoder, chip, types):
    feed = encoder_inputs(3, 16, seed=4)
    want = run(integer_encoder, feed)[integer_encoder.outputs[0].name]
    art = TpuTarget(chip=chip, seq_lens=(16,), platforms=("cpu",)).lower(integer_encoder)
    got = art.run(feed)[integer_encoder.outputs[0].name]
    assert art.buckets[0]["stablehlo_check"] == []
    if types is None:  # v4: the centered integers as bf16 (exact), f32 accumulation
        assert _types(art) == {("bf16", "bf16", "f32")}
    else:
        assert _types(art) == types and set(_weight_dot_types(art)) == {("i8", "i8", "i32")}
    rows = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert rows.min() > 0.9995  # attention scores/context run bf16 on the chip; the interpreter runs float32
    exact = call_lowered(integer_encoder, feed, precision="fp32")[integer_encoder.outputs[0].name]
    np.testing.assert_allclose(exact, want, rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------------ the CLI on a tiny BERT
@pytest.fixture(scope="module")
def tiny_bert() -> Path:
    return modelzoo.export_onnx("bert", exporter="dynamo", opset=17)


def _cli(model: Path, out: Path, passes: str | None) -> tuple[int, dict, dict, str]:
    args = [str(model), "--target", "tpu", "-o", str(out), "-q", "--samples", "8", "--seq-len", "32"]
    rc = main(args + (["--passes", passes] if passes else []))
    meta = json.loads((out / "metadata.json").read_text())
    report = json.loads((out / "report.json").read_text())
    text = (out / meta["buckets"][0]["stablehlo_file"]).read_text()
    return rc, meta, report, text


def test_cli_fuse_int8_writes_an_int8_artifact(tiny_bert, tmp_path):
    out = tmp_path / "int8"
    rc, meta, report, text = _cli(tiny_bert, out, "fuse,int8")
    assert rc == 0 and report["status"] == "ok"
    for f in ("params.bin", "model.b8_s32.jaxexport", "model.b8_s32.stablehlo.mlir", "report.md", "report.html"):
        assert (out / f).is_file(), f
    assert meta["policy"]["precision"] == "int8" and meta["buckets"][0]["stablehlo_check"] == []
    dots = inspect_stablehlo(text).dots
    weight = [(d.lhs.dtype, d.rhs.dtype, d.out.dtype) for d in dots if d.is_weight_matmul]
    assert len(weight) == 2 * 9  # 2 layers x (QKV, out, FFN in, FFN out) + pooler, for tpu and cpu
    assert set(weight) == {("i8", "i8", "i32")}
    others = {(d.lhs.dtype, d.rhs.dtype, d.out.dtype) for d in dots if not d.is_weight_matmul}
    assert others == {("bf16", "bf16", "f32")}  # attention scores and context


def test_cli_fuse_bf16_and_the_default_pipeline_leave_no_f32_dot(tiny_bert, tmp_path):
    for passes, pipeline in (("fuse,bf16", "fuse,bf16"), (None, "cleanup,fuse,bf16")):
        rc, meta, report, text = _cli(tiny_bert, tmp_path / str(passes), passes)
        assert rc == 0 and report["status"] == "ok" and report["pipeline"] == pipeline
        assert meta["policy"]["precision"] == "bf16"
        dots = inspect_stablehlo(text).dots
        assert dots and all((d.lhs.dtype, d.rhs.dtype, d.out.dtype) == ("bf16", "bf16", "f32") for d in dots)


def test_cli_explicit_fuse_keeps_the_fp32_export(tiny_bert, tmp_path):
    rc, meta, report, text = _cli(tiny_bert, tmp_path / "fuse", "fuse")
    assert rc == 0 and report["pipeline"] == "fuse" and meta["policy"]["precision"] == "fp32"
    assert {(d.lhs.dtype, d.out.dtype) for d in inspect_stablehlo(text).dots} == {("f32", "f32")}
