"""The H100 script's preparation: parameters travel as derivations and come back bit for bit; dry run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_nvcc

from benchmarks import gpu_carry, gpu_h100

ROOT = Path(__file__).resolve().parents[2]


def test_seeded_weights_are_reproducible_and_fp16_exact() -> None:
    for name, shape in (("encoder.layer.0.attention.self.query.weight", (8, 4)), ("a.LayerNorm.weight", (6,))):
        a = gpu_h100.recipe_array(0, name, shape)
        assert a.dtype == np.float32 and np.array_equal(a, gpu_h100.recipe_array(0, name, shape))
        assert np.array_equal(a, a.astype(np.float16).astype(np.float32))  # fp16-exact
    assert abs(float(gpu_carry.recipe_array(0, "x.LayerNorm.weight", (100,)).mean()) - 1.0) < 0.01


def test_parameters_are_rebuilt_from_their_derivations(tmp_path: Path) -> None:
    shapes = {"wq": (16, 8), "wk": (16, 8), "wv": (16, 8), "bq": (8,), "bk": (8,), "bv": (8,), "pos": (40, 8)}
    weights = {n: gpu_carry.recipe_array(3, n, s) for n, s in shapes.items()}
    params = {
        "qkv": np.concatenate([weights["wq"], weights["wk"], weights["wv"]], axis=-1).astype(np.float16),
        "qkv_bias": np.concatenate([weights["bq"], weights["bk"], weights["bv"]]),
        "wq_t": np.ascontiguousarray(weights["wq"].T),
        "pos32": weights["pos"][:32].reshape(1, 32, 8),
        "folded": np.arange(12, dtype=np.int64),
    }
    extras: dict[str, np.ndarray] = {}
    derive = gpu_carry.derive_params(params, gpu_carry.Deriver(weights), extras)
    assert [derive[k]["op"] for k in params] == ["concat", "concat", "T", "rows", "raw"]
    (tmp_path / "recipe.json").write_text(json.dumps({"seed": 3, "weights": {n: list(s) for n, s in shapes.items()}}))
    np.savez(tmp_path / "extras.npz", **extras)
    rebuilt = gpu_h100.Weights(tmp_path).params(derive)
    for k, v in params.items():
        assert rebuilt[k].dtype == v.dtype and np.array_equal(rebuilt[k], v), k
    with pytest.raises(SystemExit, match="matches no weight and is too large"):
        gpu_carry.derive_params({"big": np.ones((600, 600), np.float32)}, gpu_carry.Deriver(weights), {})


@needs_nvcc
@pytest.mark.slow
def test_carry_and_dry_run_on_the_tiny_bert(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    manifest = gpu_carry.prepare(carry, ["tiny"], [1, 8, 32], ["fp32", "fp16"])
    assert manifest["bytes"] < gpu_carry.CARRY_LIMIT
    assert any("rebuilt bit for bit" in line for line in manifest["log"])
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_h100.py"), "--carry", str(carry), "--out", str(out),
         "--dry-run"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("load stops as expected: no CUDA GPU found") == 2
    res = json.loads((out / "gpu_h100.json").read_text())
    assert sorted((r["precision"], r["batch"]) for r in res["rows"]) == [
        ("fp16", 1), ("fp16", 8), ("fp16", 32), ("fp32", 1), ("fp32", 8), ("fp32", 32)
    ]  # fmt: skip
