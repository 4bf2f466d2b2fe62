"""Issue 14 item 2: ``--batch`` reaches every target, and the artifact says what it was built for.

The shared pattern for every target: ``optimize TINY --target T --batch 4`` must
write an artifact whose metadata holds ``batch: {"requested": 4, "export": E,
"padded": P}`` (``E`` is ``"any"`` when the batch dim stays symbolic), whose
report line says so, and which runs a batch of 4 matching the optimized graph.
A target that is built but missing from ``EXPECTED`` fails
``test_every_built_target_is_covered``: whoever builds a target adds its row
(and a ``slow`` mark when its compile takes long).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_check import run

import accelopt as ao
import modelzoo as mz
from accelopt.cli.main import EXIT_OK, EXIT_USAGE
from accelopt.interpreter import run as interpret
from accelopt.targets.base import list_targets

BATCH = 4
SEQ = 16
#: target -> (the batch its artifact is built for when --batch 4 is asked, "padded" flag, pytest marks)
EXPECTED: dict[str, tuple[Any, bool, list[Any]]] = {
    "onnx": ("any", False, []),  # dim 0 stays symbolic: any batch runs
    "tpu": (8, True, []),  # rounded up to the policy's batch multiple (8)
    "cpu": (4, False, [pytest.mark.slow]),  # one compiled function for batch 4 (a TVM build)
    "fpga": (4, False, []),  # VTA programs compiled for 4 x seq rows (none here: cleanup quantizes nothing)
    "gpu": (4, False, [pytest.mark.slow]),  # one CUDA function for batch 4 (a TVM build; runs only on a GPU)
}


def _cases() -> list[Any]:
    return [pytest.param(name, *EXPECTED[name][:2], marks=EXPECTED[name][2], id=name) for name in sorted(EXPECTED)]


def test_every_built_target_is_covered() -> None:
    built = {t.name for t in list_targets() if t.built}
    assert built <= set(EXPECTED), f"add {sorted(built - set(EXPECTED))} to EXPECTED in {__file__}"


@pytest.mark.parametrize(("target", "export", "padded"), _cases())
def test_batch_reaches_the_target(
    target: str, export: Any, padded: bool, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if target not in {t.name for t in list_targets() if t.built}:
        pytest.skip(f"target {target} is not built here")
    out = tmp_path / "out"
    argv = [tiny_bert, "--target", target, "--passes", "cleanup", "--batch", BATCH, "--seq-len", SEQ]
    rc, stdout, stderr = run([*argv, "--samples", 6, "-o", out, "--report", "json"], capsys)
    assert rc == EXIT_OK, stderr
    report = json.loads((out / "report.json").read_text())
    b = report["artifact"]["batch"]
    assert (b["requested"], b["export"], bool(b.get("padded"))) == (BATCH, export, padded)
    assert f"--batch {BATCH}" in report["command"]
    said = f"padded to {export}" if padded else ("any batch runs" if export == "any" else f"built for {export}")
    assert f"batch: --batch {BATCH}" in stdout and said in stdout
    # the written artifact runs a batch of 4 and matches the optimized graph
    art = ao.Artifact.load(out)
    if getattr(art, "cannot_run_here", lambda: None)():
        return  # a gpu artifact on a machine without a GPU: built for the batch (checked above), not runnable here
    feeds = mz.family_inputs("bert", BATCH, SEQ, seed=5)
    got = art.run(feeds)
    graph = ao.optimize(tiny_bert, target="onnx", passes="cleanup", validate=False, seq_len=SEQ).graph
    want = interpret(graph, feeds)
    for name, w in want.items():
        assert got[name].shape == w.shape
        tol = 5e-2 if target == "tpu" else 1e-4  # the tpu target's default policy computes in bf16
        assert float(np.max(np.abs(got[name] - w))) <= tol * max(1.0, float(np.max(np.abs(w)))), name


def test_tpu_batch_in_the_spec_and_on_the_command_line(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from accelopt.targets.base import get_target

    assert get_target("tpu{batch=2}").with_batch(1).options.batch == 2  # --batch left at its default
    assert get_target("tpu{batch=2}").with_batch(2).options.batch == 2
    assert get_target("tpu").with_batch(3).options.batch == 3
    rc, _, stderr = run(
        [tiny_bert, "--target", "tpu{batch=2}", "--batch", 4, "--seq-len", SEQ, "-o", tmp_path / "o"], capsys
    )
    assert rc == EXIT_USAGE and "batch=2 in the target spec and --batch 4 disagree" in stderr
