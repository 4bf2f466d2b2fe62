"""The cpu target end to end on the tiny BERT: fp32, int8 and fp16 against the interpreter, buckets and batches,
the artifact in a fresh process, CPU features, mcpu checks, bf16 refusal, threads and schedule coverage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import accelopt as ao
import modelzoo
from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.ir import DType
from accelopt.targets.base import get_target
from accelopt.targets.cpu import CpuArtifact, CpuTarget, host
from accelopt.targets.relax import Kernels

SEQ = 16


@pytest.fixture(scope="module")
def fp32(tiny_bert: Path):
    return ao.optimize(str(tiny_bert), target="cpu", passes="cleanup,fuse", seq_len=SEQ, num_samples=4)


def _max_err(got: dict, want: dict, seq: int | None = None) -> float:
    errs = []
    for k, w in want.items():
        g = got[k]
        if seq is not None and w.ndim >= 2 and k == "last_hidden_state":
            g, w = g[:, :seq], w[:, :seq]
        errs.append(float(np.abs(g.astype(np.float64) - w).max()))
    return max(errs)


def test_fp32_matches_the_interpreter_and_is_validated(fp32):
    assert fp32.report.status == "ok"
    assert fp32.report.artifact_check is not None and fp32.report.artifact_check.ok
    assert fp32.report.artifact_check.vs_reference["max_abs"] <= 1e-4
    feed = modelzoo.family_inputs("bert", 1, SEQ, seed=5)
    assert _max_err(fp32.artifact.run(feed), run(fp32.graph, feed)) <= 1e-5


def test_other_batches_run_in_chunks_and_short_sequences_are_padded(fp32):
    feed = modelzoo.family_inputs("bert", 3, 10, seed=6)  # batch 3 over a batch-1 function; seq 10 padded to 16
    got = fp32.artifact.run(feed)
    assert got["last_hidden_state"].shape == (3, 10, 64)
    assert _max_err(got, run(fp32.graph, feed)) <= 1e-5
    with pytest.raises(TargetError, match="no compiled function"):
        fp32.artifact.run(modelzoo.family_inputs("bert", 1, SEQ + 4, seed=6))
    with pytest.raises(TargetError, match="missing input"):
        fp32.artifact.run({"input_ids": feed["input_ids"]})


def test_every_primfunc_got_a_schedule_rule(fp32):
    sched = fp32.artifact.metadata["schedule"]
    assert sched["functions"] and "unscheduled" not in sched["functions"].values(), sched["failures"]
    counts = sched["counts"]
    # the x86 kernels: each distinct dense (QKV, output, FFN in/out, pooler), the attention core, the LayerNorms
    assert counts.get("kernel:dense_fp32", 0) >= 5 and counts.get("kernel:attention_fp32", 0) >= 1
    assert counts.get("kernel:layer_norm_fp32", 0) >= 1
    assert not any("kernel:" in f for f in sched["failures"]), sched["failures"]


def test_saved_artifact_runs_in_a_fresh_process(fp32, tmp_path: Path):
    out = tmp_path / "art"
    files = {p.name for p in fp32.artifact.save(out)}
    assert files == {"metadata.json", "model.so", "params.bin"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["target"] == "cpu" and meta["cpu"]["mcpu"] == host.detect_mcpu()
    assert meta["parameters"]["bytes"] > 100_000 and (out / "model.so").stat().st_size < meta["parameters"]["bytes"]
    feed = modelzoo.family_inputs("bert", 2, SEQ, seed=7)
    np.savez(tmp_path / "in.npz", **feed)
    code = (
        "import sys, numpy as np, accelopt as ao\n"
        "a = ao.Artifact.load(sys.argv[1])\n"
        "print(type(a).__name__)\n"
        "np.savez(sys.argv[3], **a.run(dict(np.load(sys.argv[2]))))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(out), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "CpuArtifact" in res.stdout
    got = dict(np.load(tmp_path / "out.npz"))
    want = fp32.artifact.run(feed)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_loading_on_a_cpu_without_a_needed_feature_is_refused(fp32, tmp_path: Path):
    lacking = [f for f in host.CHECKED_FEATURES if f not in host.host_flags()]
    if not lacking:
        pytest.skip("this CPU has every feature accelopt checks")
    out = tmp_path / "art"
    fp32.artifact.save(out)
    meta = json.loads((out / "metadata.json").read_text())
    meta["cpu"]["features"].append(lacking[0])
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(TargetError, match=f"lacks.*{lacking[0]}|{lacking[0]}.*lacks"):
        ao.Artifact.load(out)


def test_compiling_for_a_cpu_with_more_features_writes_the_artifact_unrun(tiny_bert: Path, tmp_path: Path):
    """Cross-compiling: the artifact is built for the other CPU, not run here, and the report says why."""
    other = next(
        (c for c in ("sapphirerapids", "graniterapids", "znver5") if set(host.llvm_features(c)) - host.host_flags()),
        None,
    )
    if other is None:
        pytest.skip("this CPU has every feature of the CPUs tried")
    r = ao.optimize(str(tiny_bert), target=f"cpu{{mcpu={other}}}", passes="cleanup", seq_len=8, num_samples=2)
    assert r.report.artifact_check is None
    assert any("not run here" in n and "lacks" in n for n in r.report.notes), r.report.notes
    r.artifact.save(tmp_path / "x")
    with pytest.raises(TargetError, match="lacks"):
        ao.Artifact.load(tmp_path / "x")


def test_unknown_mcpu_is_an_error_naming_close_cpus():
    with pytest.raises(TargetError, match="unknown mcpu 'znver44'.*znver4"):
        get_target("cpu{mcpu=znver44}").capabilities  # noqa: B018
    assert get_target("cpu{mcpu=skylake-avx512}").capabilities.extra["mcpu"] == "skylake-avx512"


def test_mcpu_override_compiles_for_that_cpu(tiny_bert: Path):
    r = ao.optimize(
        str(tiny_bert), target="cpu{mcpu=skylake-avx512}", passes="cleanup,fuse", seq_len=8, num_samples=2
    )
    cpu = r.artifact.metadata["cpu"]
    assert cpu["mcpu"] == "skylake-avx512" and "avx512f" in cpu["features"] and "avx512vnni" not in cpu["features"]
    assert r.report.artifact_check is not None and r.report.artifact_check.ok


@pytest.mark.parametrize("passes,tol", [("fuse,int8", 1e-5), ("cleanup,fuse,fp16", 2.5e-4)])
def test_int8_and_fp16_graphs_match_the_interpreter(tiny_bert: Path, passes: str, tol: float):
    r = ao.optimize(str(tiny_bert), target="cpu", passes=passes, seq_len=SEQ, num_samples=4)
    ops = r.graph.op_counts()
    assert ops.get("QLinear", 0) + ops.get("Cast", 0) > 0, ops  # the pass did change the graph
    feed = modelzoo.family_inputs("bert", 2, SEQ, seed=8)
    assert _max_err(r.artifact.run(feed), run(r.graph, feed)) <= tol
    assert r.report.artifact_check is not None and r.report.artifact_check.ok
    # the same graph through the generic kernels (what the gpu and fpga targets build on) matches too
    generic = CpuTarget(seq_lens=(SEQ,)).lower(r.graph, kernels=Kernels())
    assert generic.metadata["kernels"] == "generic"
    assert _max_err(generic.run(feed), run(r.graph, feed)) <= tol


def test_sequence_buckets_compile_one_function_each(tiny_bert: Path):
    tgt = CpuTarget().with_seq_lens([8, 24])
    r = ao.optimize(str(tiny_bert), target=tgt, passes="cleanup,fuse", seq_len=[8, 24], num_samples=2)
    art = r.artifact
    assert [b["name"] for b in art.buckets] == ["b1_s8", "b1_s24"]
    for seq in (24, 20, 8):  # 20 runs in the 24 bucket, padded
        feed = modelzoo.family_inputs("bert", 2, seq, seed=seq)
        assert _max_err(art.run(feed), run(r.graph, feed)) <= 1e-5
    # parameters are shared by name: the second bucket adds none
    assert set(art.buckets[0]["params"]) == set(art.buckets[1]["params"])


def test_threads_change_nothing_but_speed(fp32):
    feed = modelzoo.family_inputs("bert", 1, SEQ, seed=9)
    one = fp32.artifact.run(feed, num_threads=1)
    two = fp32.artifact.run(feed, num_threads=2)
    for k in one:
        np.testing.assert_allclose(one[k], two[k], rtol=1e-6, atol=1e-6)
    assert fp32.artifact.threads() == 2
    with pytest.raises(TargetError, match="num_threads"):
        fp32.artifact.run(feed, num_threads=0)


def test_bf16_is_refused_with_the_reason(tiny_bert: Path):
    r = ao.optimize(str(tiny_bert), target="cpu", passes="cleanup,fuse,bf16", seq_len=8, num_samples=2)
    bf16 = [rec for rec in r.records if rec.name == "convert-bf16"][0]
    assert not bf16.modified and any("vdpbf16ps" in n for n in bf16.notes), bf16.notes
    g = r.graph.copy()
    v = g.inputs[0]
    c = g.add_node("Cast", [v], {"to": DType.BFLOAT16})
    g.set_outputs([*g.outputs, c.output])
    with pytest.raises(TargetError, match="bfloat16.*vdpbf16ps"):
        CpuTarget().lower(g)


def test_artifact_loader_dispatches_on_metadata(fp32, tmp_path: Path):
    fp32.artifact.save(tmp_path / "cpu")
    assert isinstance(ao.Artifact.load(tmp_path / "cpu"), CpuArtifact)
    (tmp_path / "junk").mkdir()
    with pytest.raises(TargetError, match="no metadata.json"):
        ao.Artifact.load(tmp_path / "junk")
    (tmp_path / "junk" / "metadata.json").write_text('{"format": "nope", "target": "nope"}')
    with pytest.raises(TargetError, match="unknown artifact format 'nope'"):
        ao.Artifact.load(tmp_path / "junk")
