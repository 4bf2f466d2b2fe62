"""TPU target end to end on tiny graphs: export, StableHLO checks, artifact save/load/run, buckets, estimate."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from tpu_helpers import encoder_inputs, qdq_matmul_graph, qdq_quantize, tiny_encoder_graph

from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir import DType, Graph, TensorType
from accelopt.targets.base import get_target, list_targets
from accelopt.targets.tpu import TpuArtifact, TpuTarget, get_chip
from accelopt.targets.tpu.export import (
    check_stablehlo,
    inspect_stablehlo,
    stable_custom_call_targets,
)
from accelopt.targets.tpu.policy import choose_policy


@pytest.fixture(scope="module")
def encoder() -> Graph:
    return tiny_encoder_graph()


@pytest.fixture(scope="module")
def bf16_artifact(encoder) -> TpuArtifact:
    return TpuTarget(seq_lens=(16,), precision="bf16").lower(encoder)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_bf16_export_obeys_the_policy(bf16_artifact):
    meta = bf16_artifact.metadata
    bucket = meta["buckets"][0]
    assert (meta["platforms"], meta["policy"]["precision"], bucket["name"]) == (["tpu", "cpu"], "bf16", "b8_s16")
    assert bucket["stablehlo_check"] == []
    summary = inspect_stablehlo(bf16_artifact.stablehlo())
    assert summary.dots, "no dot_general in the export"
    for d in summary.dots:  # every matmul bf16 x bf16 -> f32: no f32 matmul remains
        assert (d.lhs.dtype, d.rhs.dtype, d.out.dtype) == ("bf16", "bf16", "f32"), d.line
    weight_dots = [d for d in summary.dots if d.is_weight_matmul]
    # QKV, attention output, FFN in, FFN out; twice (the tpu and cpu branches of the multi-platform module)
    assert len(weight_dots) == 8
    for d in weight_dots:
        assert d.k % 128 == 0 and d.n % 128 == 0 and d.m % 8 == 0, d.line
    assert set(summary.custom_calls) <= stable_custom_call_targets()


def test_bf16_artifact_matches_the_interpreter(encoder, bf16_artifact):
    feed = encoder_inputs(3, 16, seed=5)
    want = run(encoder, feed)[encoder.outputs[0].name]
    got = bf16_artifact.run(feed)[encoder.outputs[0].name]
    assert got.shape == want.shape == (3, 16, 64) and got.dtype == np.float32
    assert _cos_rows(got, want).min() >= 0.999
    assert np.abs(got - want).max() < 0.1


def test_bf16_graph_exports_with_the_bf16_policy(encoder):
    """A graph whose weights and activations are bf16 (what a bf16 pass makes) lowers under the bf16 policy."""
    bf16_graph = tiny_encoder_graph(dtype=ml_dtypes.bfloat16)
    art = TpuTarget(seq_lens=(8,), platforms=("cpu",)).lower(bf16_graph)
    assert art.metadata["policy"]["precision"] == "bf16"
    assert art.metadata["buckets"][0]["dot_general"] == {"bf16xbf16->f32": 6}
    assert art.metadata["parameters"]["by_dtype"].keys() == {"bfloat16"}
    feed = encoder_inputs(2, 8, seed=3)
    got = art.run(feed)[bf16_graph.outputs[0].name]
    assert got.dtype == ml_dtypes.bfloat16
    want = run(encoder, feed)[encoder.outputs[0].name]
    assert _cos_rows(got, want).min() >= 0.99


def test_fp32_export_is_tight(encoder):
    art = TpuTarget(seq_lens=(16,), precision="fp32", platforms=("cpu",)).lower(encoder)
    feed = encoder_inputs(2, 16, seed=6)
    want = run(encoder, feed)[encoder.outputs[0].name]
    got = art.run(feed)[encoder.outputs[0].name]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    summary = inspect_stablehlo(art.stablehlo())
    assert {(d.lhs.dtype, d.out.dtype) for d in summary.dots} == {("f32", "f32")}
    assert all("HIGHEST" in d.line for d in summary.dots)


def test_v6e_pads_weight_matmuls_to_256(encoder):
    art = TpuTarget(chip="v6e", seq_lens=(8,), platforms=("cpu",), precision="bf16").lower(encoder)
    dots = [d for d in inspect_stablehlo(art.stablehlo()).dots if d.is_weight_matmul]
    assert dots and all(d.k % 256 == 0 and d.n % 256 == 0 for d in dots)
    assert art.metadata["buckets"][0]["stablehlo_check"] == []


def test_int8_export_uses_int8_dot_general():
    g = qdq_matmul_graph()
    art = TpuTarget(seq_lens=(5,)).lower(g)
    assert art.metadata["policy"]["precision"] == "int8"
    assert art.metadata["buckets"][0]["dot_general"] == {"i8xi8->i32": 2}  # tpu and cpu branches
    assert art.metadata["buckets"][0]["stablehlo_check"] == []
    x = np.random.default_rng(0).standard_normal((3, 5, 96)).astype(np.float32)
    np.testing.assert_allclose(art.run({"x": x})["bias"], run(g, {"x": x})["bias"], rtol=1e-5, atol=2e-5)
    v4 = TpuTarget(chip="v4", seq_lens=(5,), platforms=("cpu",)).lower(g)
    assert v4.metadata["buckets"][0]["dot_general"] == {"bf16xbf16->f32": 1}
    assert any("no speedup" in n for n in v4.notes)


def test_check_stablehlo_reports_violations(encoder):
    fp32 = TpuTarget(seq_lens=(8,), precision="fp32", platforms=("cpu",), pad_to_tile=False).lower(encoder)
    summary = inspect_stablehlo(fp32.stablehlo())
    bf16_policy = choose_policy(encoder, get_chip("v5e"), precision="bf16")
    problems = check_stablehlo(summary, bf16_policy)
    assert any("f32 x f32 -> f32 under the bf16 policy" in p for p in problems)
    assert any("not multiples of the 128 tile" in p for p in problems)
    fake = inspect_stablehlo(
        "%0 = stablehlo.custom_call @my_kernel(%arg0) : (tensor<4xf32>) -> tensor<4xf32>\n"
        "%1 = stablehlo.custom_call @Sharding(%0) : (tensor<4xf32>) -> tensor<4xf32>"
    )
    assert fake.custom_calls == ["my_kernel", "Sharding"]
    assert check_stablehlo(fake, bf16_policy) == [
        "custom_call @my_kernel is not among JAX's stable custom_call targets"
    ]


def test_save_load_roundtrip(tmp_path, encoder, bf16_artifact):
    files = bf16_artifact.save(tmp_path / "out")
    names = sorted(p.name for p in files)
    assert names == ["metadata.json", "model.b8_s16.jaxexport", "model.b8_s16.stablehlo.mlir", "params.bin"]
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["format"] == "accelopt-tpu-artifact" and meta["chip"]["name"] == "v5e"
    assert meta["parameters"]["bytes"] == sum(t["nbytes"] for t in meta["parameters"]["tensors"])
    assert "estimate" in meta["buckets"][0]["roofline"]["label"]
    assert "stablehlo.dot_general" in (tmp_path / "out" / "model.b8_s16.stablehlo.mlir").read_text()
    described = bf16_artifact.describe()  # what the report shows
    assert sorted(described["files"]) == names
    assert any("not a measurement" in line for line in described["summary"])
    loaded = TpuArtifact.load(tmp_path / "out")
    feed = encoder_inputs(2, 16, seed=9)
    a = bf16_artifact.run(feed)[encoder.outputs[0].name]
    b = loaded.run(feed)[encoder.outputs[0].name]
    np.testing.assert_array_equal(a, b)


def test_tpu_only_export_is_refused_on_cpu(tmp_path, encoder):
    art = TpuTarget(seq_lens=(8,), platforms=("tpu",)).lower(encoder)
    with pytest.raises(TargetError, match="exported for platform\\(s\\) tpu only.*backend is 'cpu'"):
        art.run(encoder_inputs(1, 8))
    art.save(tmp_path / "tpu")
    with pytest.raises(TargetError, match="platforms=\\('tpu', 'cpu'\\)"):
        TpuArtifact.load(tmp_path / "tpu")
    inspect_only = TpuArtifact.load(tmp_path / "tpu", check_platform=False)
    assert "stablehlo.dot_general" in inspect_only.stablehlo()


def test_broken_artifacts_raise_target_error(tmp_path, bf16_artifact):
    with pytest.raises(TargetError, match="no metadata.json"):
        TpuArtifact.load(tmp_path)
    d = tmp_path / "art"
    bf16_artifact.save(d)
    (d / "model.b8_s16.jaxexport").write_bytes(b"not a flatbuffer")
    with pytest.raises(TargetError, match="not a serialized jax.export artifact"):
        TpuArtifact.load(d)
    bf16_artifact.save(d)
    (d / "params.bin").write_bytes(b"\0" * 10)
    with pytest.raises(TargetError, match="truncated"):
        TpuArtifact.load(d)


def test_sequence_buckets_and_padding(encoder):
    art = TpuTarget(seq_lens=(8, 16), precision="fp32", platforms=("cpu",)).lower(encoder)
    assert [b["name"] for b in art.buckets] == ["b8_s8", "b8_s16"]
    assert art.metadata["seq"]["mask_inputs"] == ["attention_mask"]
    out = encoder.outputs[0].name
    for seq in (8, 12, 16):  # 12 runs padded in the 16 bucket; the mask hides the padding
        feed = encoder_inputs(2, seq, seed=seq)
        got = art.run(feed)[out]
        assert got.shape == (2, seq, 64)
        np.testing.assert_allclose(got, run(encoder, feed)[out], rtol=1e-4, atol=1e-4)
    with pytest.raises(TargetError, match="no bucket is long enough.*b8_s8, b8_s16"):
        art.run(encoder_inputs(1, 20))


def test_large_batches_run_in_chunks_of_the_export_batch(encoder):
    art = TpuTarget(seq_lens=(8,), precision="fp32", platforms=("cpu",)).lower(encoder)
    feed = encoder_inputs(11, 8, seed=2)
    out = encoder.outputs[0].name
    np.testing.assert_allclose(art.run(feed)[out], run(encoder, feed)[out], rtol=1e-4, atol=1e-4)


def test_baked_constants_match_arguments(encoder):
    args = TpuTarget(seq_lens=(8,), platforms=("cpu",)).lower(encoder)
    baked = TpuTarget(seq_lens=(8,), platforms=("cpu",), weights="constants").lower(encoder)
    assert baked.params == {} and args.params
    assert baked.parameter_bytes == args.parameter_bytes > 0
    exp = baked.exports["b8_s8"]
    assert len(exp.in_avals) == len(encoder.inputs)  # weights are inside the program
    assert len(args.exports["b8_s8"].in_avals) == len(encoder.inputs) + len(args.params)
    feed = encoder_inputs(2, 8, seed=4)
    out = encoder.outputs[0].name
    np.testing.assert_allclose(baked.run(feed)[out], args.run(feed)[out], rtol=1e-5, atol=1e-5)


def test_roofline_is_labelled_and_counts_matmul_flops():
    w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    g = Graph("mm")
    x = g.add_input("x", TensorType(DType.FLOAT32, ("batch", "seq", 256)))
    y = g.add_node("MatMul", [x, g.add_initializer("w", w)]).output
    g.set_outputs([y])
    v5e = TpuTarget(seq_lens=(128,), platforms=("cpu",), precision="bf16").lower(g)
    v6e = TpuTarget(chip="v6e", seq_lens=(128,), platforms=("cpu",), precision="bf16").lower(g)
    r5, r6 = v5e.buckets[0]["roofline"], v6e.buckets[0]["roofline"]
    assert r5["matmul_flops"] == 2 * 8 * 128 * 256 * 512
    assert r5["compute_s"] == pytest.approx(r5["matmul_flops"] / 197e12)
    assert r5["minimal_bytes"] == 256 * 512 * 2 + 8 * 128 * 256 * 4 + 8 * 128 * 512 * 4
    assert r6["estimate_s"] < r5["estimate_s"]
    assert "not a measurement" in r5["label"]
    assert any("estimate" in line for line in v5e.summary())


def test_target_registry_and_options():
    tgt = get_target("tpu{chip=v4,seq_lens=64+128,batch=2}")
    assert isinstance(tgt, TpuTarget)
    assert (tgt.options.chip, tgt.options.seq_lens, tgt.options.batch) == ("v4", (64, 128), 2)
    assert "seq_lens=64+128" in tgt.spec
    caps = tgt.capabilities
    assert caps.tile_sizes["matmul"] == (128, 128) and caps.runs_natively("Attention")
    assert TpuTarget(chip="v6e").capabilities.pad_multiple == 256
    assert any(t.name == "tpu" and t.built for t in list_targets())
    with pytest.raises(TargetError, match="unknown tpu option"):
        TpuTarget(chips="v4")
    with pytest.raises(TargetError, match="seq_lens: expected integers"):
        TpuTarget(seq_lens="a+b")


def test_symbolic_dims_beyond_batch_and_sequence_need_sizes():
    g = Graph("sym")
    x0 = g.add_input("x0", TensorType(DType.FLOAT32, ("batch", "seq", "feat")))
    g.set_outputs([g.add_node("Relu", [x0]).output])
    with pytest.raises(TargetError, match="axis 2 \\(feat\\)"):
        TpuTarget(platforms=("cpu",)).lower(g)
    art = TpuTarget(platforms=("cpu",), seq_lens=(3,), dims={"feat": 4}).lower(g)
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(art.run({"x0": x})[g.outputs[0].name], np.maximum(x, 0))


def test_bucket_defaults_to_the_samples_sequence_length(encoder):
    from accelopt.samples import SampleSet

    samples = SampleSet(encoder_inputs(4, 24, seed=1), "test samples")
    art = TpuTarget(platforms=("cpu",)).lower(encoder, samples=samples)
    assert [b["name"] for b in art.buckets] == ["b8_s24"]
    assert any("taken from the validation samples" in n for n in art.notes)
    assert [b["name"] for b in TpuTarget(platforms=("cpu",)).lower(qdq_matmul_graph()).buckets] == ["b8_s128"]


def test_qdq_encoder_runs_int8_matmuls_on_v5e_and_bf16_on_v4(encoder):
    """A fused encoder quantized the way the int8 pass does (QDQ): Linear and Attention weights become int8 MXU
    operands; the weights are stored int8; accuracy against the same QDQ graph in the interpreter holds."""
    qdq = qdq_quantize(encoder, encoder_inputs(4, 16, seed=11))
    art = TpuTarget(seq_lens=(16,)).lower(qdq)
    b = art.buckets[0]
    assert art.metadata["policy"]["precision"] == "int8" and b["stablehlo_check"] == []
    # QKV, attention output, FFN in, FFN out in int8; scores and context in bf16; twice (tpu and cpu branches)
    assert b["dot_general"] == {"i8xi8->i32": 8, "bf16xbf16->f32": 4}
    assert art.metadata["parameters"]["by_dtype"]["int8"] == 3 * 128 * 128 + 128 * 256  # padded; QKV is 64x192
    feed = encoder_inputs(3, 16, seed=12)
    out = qdq.outputs[0].name
    want = run(qdq, feed)[out]
    got = art.run(feed)[out]
    assert _cos_rows(got, want).min() >= 0.999
    v4 = TpuTarget(chip="v4", seq_lens=(16,), platforms=("cpu",)).lower(qdq)
    assert v4.buckets[0]["dot_general"] == {"bf16xbf16->f32": 6}
    assert "int8" not in v4.metadata["parameters"]["by_dtype"]
    assert _cos_rows(v4.run(feed)[out], want).min() >= 0.999
