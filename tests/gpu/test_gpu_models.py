"""Slow: all-MiniLM-L6-v2 through the CLI and BERT-base through the API build sm_90 artifacts here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_nvcc

from accelopt.targets.gpu import machine_code

pytestmark = [needs_nvcc, pytest.mark.slow]


def _check_library(out: Path) -> dict:
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["arch"] == "sm_90" and meta["kernels"] == len(meta["schedules"]["per_kernel"])
    assert any(e.kind == "elf" and e.name == "sm_90" for e in machine_code.library_entries(out / "model.so"))
    if machine_code.find_cuobjdump() is not None:
        tc = machine_code.tensor_core_kernels(machine_code.sass(out / "model.so"))
        big = [k for k, r in meta["schedules"]["per_kernel"].items() if r == "dlight.Matmul"]
        assert big and all(tc.get(f"{k}_kernel", {}).get("HMMA", 0) > 0 for k in big), (big, tc)
    return meta


def test_minilm_cli_writes_an_sm90_artifact(tmp_path: Path) -> None:
    import modelzoo

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelopt.cli.main", str(modelzoo.minilm_onnx()), "--target", "gpu",
           "--passes", "fuse,fp16", "-o", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    meta = _check_library(out)
    assert (out / "runtime" / "bundle.json").is_file() and (out / "params.npz").is_file()
    # FuseTIR shares one kernel among the 6 layers: QKV, output projection, FFN up (+ GELU), FFN down
    assert meta["schedules"]["rules"].get("dlight.Matmul", 0) >= 4


def test_bert_base_builds_in_under_five_minutes(tmp_path: Path) -> None:
    import accelopt as ao
    import modelzoo

    path = modelzoo.export_onnx("bert", exporter="legacy", opset=17, size="full")
    res = ao.optimize(str(path), target="gpu{bundle=false}", passes="cleanup,fuse,fp16", seq_len=128,
                      validate=False)  # fmt: skip
    t0 = time.perf_counter()
    res.artifact.save(tmp_path / "out")
    meta = _check_library(tmp_path / "out")
    assert meta["build_seconds"]["total"] <= 300, meta["build_seconds"]
    assert time.perf_counter() - t0 < 60
