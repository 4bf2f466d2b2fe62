"""The gpu target end to end on the tiny BERT: sm_90 machine code, tensor cores, every kernel scheduled, artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_nvcc

import accelopt as ao
from accelopt.errors import TargetError
from accelopt.targets.base import get_target, load_artifact
from accelopt.targets.gpu import GpuArtifact, GpuTarget, machine_code, toolchain
from accelopt.targets.gpu.tuning import RpcSpec, make_runner

pytestmark = needs_nvcc


@pytest.fixture(scope="module")
def tiny_fp16(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The tiny BERT through ``cleanup,fuse,fp16`` for ``gpu`` (no bundle), saved; and the result."""
    res = ao.optimize(str(tiny_bert), target="gpu{bundle=false}", passes="cleanup,fuse,fp16", seq_len=32)
    out = tmp_path_factory.mktemp("tiny-gpu") / "out"
    res.artifact.save(out)
    return out, res


def test_options_and_errors() -> None:
    t = get_target("gpu")
    assert isinstance(t, GpuTarget) and t.default_passes == "cleanup,fuse,fp16"
    assert t.options.arch == "sm_90" and t.options.cuda_graphs and t.options.schedules == "accelopt"
    assert get_target("gpu{arch=sm_80,cuda_graphs=false}").options.cuda_graphs is False
    assert t.with_batch(8).options.batch == 8 and t.with_seq_lens([128, 256]).options.seq_lens == (128, 256)
    for spec, msg in (
        ("gpu{arch=ampere}", "bad arch"),
        ("gpu{schedules=fast}", "schedules must be one of"),
        ("gpu{nothing=1}", "has no option"),
    ):
        with pytest.raises(TargetError, match=msg):
            get_target(spec)


def test_tuning_needs_a_gpu_or_a_tracker() -> None:
    if toolchain.driver_available():
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(TargetError, match="measures kernels on a GPU and this machine has none"):
        make_runner("")
    with pytest.raises(TargetError, match="expected HOST:PORT:KEY"):
        RpcSpec.parse("host:key")
    with pytest.raises(TargetError, match="is not reachable"):
        make_runner("127.0.0.1:1:h100")  # nothing listens on port 1
    assert RpcSpec.parse("gpu-box:9190:h100") == RpcSpec("gpu-box", 9190, "h100")


def test_tiny_bert_builds_sm90_machine_code(tiny_fp16: tuple[Path, object]) -> None:
    out, res = tiny_fp16
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format"] == "accelopt-gpu-artifact" and meta["arch"] == "sm_90"
    entries = machine_code.library_entries(out / "model.so")
    assert {(e.kind, e.name) for e in entries} >= {("elf", "sm_90")}
    assert all(e.name in ("sm_90", "compute_90") for e in entries)
    assert b"__global__" not in (out / "model.so").read_bytes()
    # every kernel got a rule, and the report names it
    per_kernel = meta["schedules"]["per_kernel"]
    assert len(per_kernel) == meta["kernels"] > 0
    assert set(per_kernel.values()) <= {
        "accelopt.small-fp16-matmul", "dlight.Matmul", "dlight.GEMV", "dlight.Reduction",
        "dlight.GeneralReduction", "dlight.Fallback",
    }  # fmt: skip
    # parameters live outside the library
    params = np.load(out / "params.npz")
    assert sum(params[k].nbytes for k in params.files) == meta["parameter_bytes"] > 0
    assert (out / "model.so").stat().st_size < 5e6


def test_fp16_projection_and_ffn_matmuls_use_tensor_cores(tiny_fp16: tuple[Path, object]) -> None:
    out, _ = tiny_fp16
    if machine_code.find_cuobjdump() is None:
        pytest.skip("cuobjdump is not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    tc = machine_code.tensor_core_kernels(machine_code.sass(out / "model.so"))
    meta = json.loads((out / "metadata.json").read_text())
    matmuls = [k for k in meta["schedules"]["per_kernel"] if k.startswith("fused_matmul")]
    tensorized = [k for k in matmuls if meta["schedules"]["per_kernel"][k] != "dlight.Reduction"]
    assert tensorized, matmuls
    for k in tensorized:  # projections, FFN (with the bias + GELU epilogue), attention products
        assert f"{k}_kernel" in tc and tc[f"{k}_kernel"].get("HMMA", 0) > 0, k
    assert any("erf" in k for k in tensorized)  # FFN up-projection: matmul + bias + GELU in one kernel


def test_artifact_loads_and_says_it_cannot_run_without_a_gpu(tiny_fp16: tuple[Path, object]) -> None:
    out, res = tiny_fp16
    art = load_artifact(out)
    assert isinstance(art, GpuArtifact) and art.metadata["functions"][0]["name"] == "b1_s32"
    if toolchain.driver_available():
        pytest.skip("this machine has an NVIDIA driver")
    reason = art.cannot_run_here()
    assert reason is not None and reason.startswith("no CUDA GPU found")
    assert any("the artifact was not run here: no CUDA GPU found" in n for n in res.report.notes)
    ids = np.zeros((1, 32), np.int64)
    with pytest.raises(TargetError, match="no CUDA GPU found"):
        art.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})


@pytest.mark.gpu
def test_tiny_bert_runs_on_the_gpu_like_the_interpreter(tiny_fp16: tuple[Path, object]) -> None:
    out, res = tiny_fp16
    art = load_artifact(out)
    if art.cannot_run_here():
        pytest.skip(art.cannot_run_here() or "")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (1, 32)).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    inputs = {v.name: inputs[v.name] for v in res.graph.inputs}
    want = res.model.run(inputs) if hasattr(res, "model") else None
    got = art.run(inputs)
    assert set(got) == {v.name for v in res.graph.outputs}
    if want is not None:
        for k in got:
            a, b = got[k].astype(np.float32).ravel(), np.asarray(want[k], np.float32).ravel()
            assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.999
