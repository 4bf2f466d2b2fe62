"""The ``optimize`` command end to end on a tiny ONNX BERT: outputs, rollback, reproducibility, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_check import assert_no_output, leftovers, run

import modelzoo as mz
from accelopt.cli.main import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TOLERANCE,
    EXIT_UNSUPPORTED,
    EXIT_USAGE,
    MARKER,
)

FAST = ["--seq-len", "16", "--samples", "8"]


# ------------------------------------------------------------------ success
def test_end_to_end_writes_model_and_reports(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc, stdout, stderr = run([tiny_bert, "--target", "onnx", "--passes", "cleanup", "-o", out, *FAST], capsys)
    assert rc == EXIT_OK, stderr
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "report.json", "report.md", "report.html", MARKER} <= names
    assert leftovers(tmp_path) == []
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok" and report["pipeline"] == "cleanup"
    assert report["artifact"]["files"] == ["model.onnx", "metadata.json"]
    assert report["validation"]["artifact"]["ok"] is True
    assert report["result"]["nodes"] < report["model"]["nodes"]
    assert "wrote" in stdout and "Traceback" not in stdout + stderr
    assert "written artifact vs reference" in stdout  # the artifact's own check, after the final graph's
    # the written model runs in onnxruntime and matches the original model
    import onnxruntime as ort

    feeds = mz.family_inputs("bert", 2, 16, seed=3)
    want = ort.InferenceSession(str(tiny_bert), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


def test_rollback_names_pass_metric_and_first_diverging_node(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc, stdout, stderr = run(
        [tiny_bert, "--target", "onnx", "--passes", "cleanup,damage{scale=2}", "-o", out, "--report", "json,md", *FAST],
        capsys,
    )
    assert rc == EXIT_OK, stderr  # the rollback kept the result within tolerance
    report = json.loads((out / "report.json").read_text())
    damage = [p for p in report["passes"] if p["name"] == "damage"]
    assert len(damage) == 1 and damage[0]["rolled_back"]
    assert damage[0]["rollback_reason"].startswith("max_abs ")
    loc = damage[0]["localization"]
    assert loc["node"] == damage[0]["stats"]["damaged_node"] and loc["op"] == "MatMul"
    assert report["status"] == "ok" and report["validation"]["final"]["ok"]
    md = (out / "report.md").read_text()
    assert "rolled back" in md and f"`{loc['node']}`" in md and "max_abs" in md
    assert "damage" in stdout and "rolled back" in stdout


def test_a_pass_that_breaks_the_graph_is_rolled_back_and_the_run_goes_on(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc, stdout, stderr = run(
        [tiny_bert, "--passes", "cleanup,break-graph,fuse-gelu", "-o", out, "--report", "json,md,html", *FAST], capsys
    )
    assert rc == EXIT_OK, stderr  # everything else is within tolerance
    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["passes"]][-2:] == ["break-graph", "fuse-gelu"]
    brk = next(p for p in report["passes"] if p["name"] == "break-graph")
    assert brk["rolled_back"] and brk["broken_nodes"] and brk["rollback_reason"].startswith("pass error")
    node = brk["broken_nodes"][0]
    assert brk["pass_error"].startswith(f"pass 'break-graph' broke the graph at node(s) {node}: ")
    assert "is used before it is defined" in brk["pass_error"]
    gelu = report["passes"][-1]
    assert gelu["modified"] and not gelu["rolled_back"]  # the run went on from the unbroken graph
    assert report["status"] == "ok" and any("status pass-error" in n for n in report["notes"])
    # loud on the console: a warning line on stderr, the status in the table and the reason under it
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: pass 'break-graph' broke")]
    assert len(warnings) == 1 and node in warnings[0] and "Traceback" not in stderr
    assert "PASS ERR" in stdout and "PASS ERROR, rolled back: pass 'break-graph'" in stdout
    assert "**pass error**" in (out / "report.md").read_text()
    assert "Pass error, rolled back" in (out / "report.html").read_text()


def test_report_pipeline_reproduces_the_graph(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    rc, _, err = run(
        [tiny_bert, "--passes", "cleanup,damage{scale=2}", "-o", a, "--dump-ir", "--report", "json", *FAST], capsys
    )
    assert rc == EXIT_OK, err
    pipeline = json.loads((a / "report.json").read_text())["pipeline"]
    assert pipeline == "cleanup,damage{scale=2.0}"  # options in their canonical form
    rc, _, err = run([tiny_bert, "--passes", pipeline, "-o", b, "--dump-ir", "--report", "json", *FAST], capsys)
    assert rc == EXIT_OK, err
    dumps_a = sorted((a / "ir").glob("*.txt"))
    dumps_b = sorted((b / "ir").glob("*.txt"))
    assert [p.name for p in dumps_a] == [p.name for p in dumps_b]
    assert dumps_a[0].name == "000_input.txt" and len(dumps_a) > 2
    assert dumps_a[-1].read_text() == dumps_b[-1].read_text()
    # the command line in the report names the same pipeline
    assert "'cleanup,damage{scale=2.0}'" in json.loads((a / "report.json").read_text())["command"]


def test_final_tolerance_not_met_exits_1_but_writes(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--passes", "cleanup", "-o", out, "--tolerance", "max_abs=1e-12", *FAST], capsys)
    assert rc == EXIT_TOLERANCE
    assert "final accuracy tolerance not met" in stderr and "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "tolerance-not-met" and report["ok"] is False


def test_existing_accelopt_output_is_replaced(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        run([tiny_bert, "--passes", "cleanup", "-o", out, "--report", "json", "--no-validate", *FAST], capsys)[0] == 0
    )
    (out / "stale.txt").write_text("from an older run")
    rc, _, err = run([tiny_bert, "--passes", "cleanup", "-o", out, "--report", "md", "--no-validate", *FAST], capsys)
    assert rc == EXIT_OK, err
    assert {p.name for p in out.iterdir()} == {"model.onnx", "metadata.json", "report.md", MARKER}
    assert leftovers(tmp_path) == []


def test_seq_len_buckets_give_tpu_one_export_each(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("jax")
    out = tmp_path / "out"
    rc, _, stderr = run(
        [tiny_bert, "--target", "tpu", "--passes", "cleanup", "--seq-len", "16,32", "--samples", "4", "-o", out],
        capsys,
    )
    assert rc == EXIT_OK, stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert [b["seq_len"] for b in meta["buckets"]] == [16, 32]
    for b in meta["buckets"]:
        assert (out / b["file"]).is_file() and (out / b["stablehlo_file"]).is_file()
    report = json.loads((out / "report.json").read_text())
    v = report["validation"]
    assert v["seq_len"] == 16 and v["seq_lens"] == [16, 32]  # validated at the first bucket
    assert any("validated at 16 (the first)" in n for n in v["notes"])
    assert report["target"]["spec"] == "tpu{seq_lens=16+32}" and "--seq-len 16,32" in report["command"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "onnx", "--seq-len", "16,32"], "target 'onnx' takes a single sequence length, got 2 (16, 32)"),
        (["--target", "tpu{seq_lens=64+128}", "--seq-len", "16,32"], "disagree; give the buckets once"),
        (["--seq-len", "16,abc"], "--seq-len takes a length or a comma list"),
        (["--seq-len", "16,16"], "--seq-len lists a length twice"),
        (["--seq-len", "16,-4"], "--seq-len must be at least 1, got -4"),
    ],
)
def test_seq_len_list_usage_errors(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "-o", out, "--samples", "4", *args], capsys)
    assert rc == EXIT_USAGE, stderr
    assert message in stderr and "Traceback" not in stderr
    assert_no_output(out)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--passes", "cleanup,nosuchpass"], "unknown pass 'nosuchpass'"),
        (["--passes", "damage{scale=abc}"], "bad value 'abc' for option 'scale'"),
        (["--passes", "damage{nope=1}"], "has no option 'nope'"),
        (["--target", "quantum"], "unknown target 'quantum'"),
        (["--tolerance", "cosine=high"], "is not a number"),
        (["--report", "json,pdf"], "unknown report format 'pdf'"),
        (["--seq-len", "0"], "--seq-len must be at least 1"),
        (["--calibration", "/nonexistent/samples.npz"], "cannot read calibration file"),
    ],
)
def test_usage_errors_exit_2_without_output(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "-o", out, *FAST, *args], capsys)
    assert rc == EXIT_USAGE
    assert message in stderr and "Traceback" not in stderr
    assert "hint:" in stderr or "error:" in stderr
    assert_no_output(out)


def test_target_not_built_yet_exits_2(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelopt.targets import base

    monkeypatch.setitem(base.KNOWN_TARGETS, "future", ("accelopt.targets.future_target_xyz", "a planned target"))
    unbuilt = [t.name for t in base.list_targets() if not t.built]
    assert "future" in unbuilt
    for name in unbuilt:
        out = tmp_path / f"out-{name}"
        rc, _, stderr = run([tiny_bert, "--target", name, "-o", out, *FAST], capsys)
        assert rc == EXIT_USAGE, name
        assert f"target {name!r} is not built yet" in stderr and "--list-targets" in stderr
        assert_no_output(out)


def test_unreadable_calibration_content_exits_2(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "samples.npz"
    bad.write_bytes(b"this is not a zip archive")
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--calibration", bad, "-o", out, *FAST], capsys)
    assert rc == EXIT_USAGE and "cannot read calibration file" in stderr and "Traceback" not in stderr
    assert_no_output(out)


def test_text_calibration_needs_a_tokenizer(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("A sentence.\nAnother one.\n")
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--calibration", sentences, "-o", out, *FAST], capsys)
    assert rc == EXIT_USAGE and "no tokenizer" in stderr
    assert_no_output(out)


def test_output_dir_not_writable(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, stderr = run([tiny_bert, "-o", blocker / "out", *FAST], capsys)
    assert rc == EXIT_USAGE and "cannot write to output folder" in stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is still writable")
        rc, _, stderr = run([tiny_bert, "-o", ro / "out", *FAST], capsys)
        assert rc == EXIT_USAGE and "cannot write to output folder" in stderr
    finally:
        ro.chmod(0o700)


def test_foreign_nonempty_output_dir_is_left_alone(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    rc, _, stderr = run([tiny_bert, "-o", out, *FAST], capsys)
    assert rc == EXIT_USAGE and "not written by optimize" in stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_unsupported_model_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    out = tmp_path / "out"
    rc, _, stderr = run([bad, "-o", out, *FAST], capsys)
    assert rc == EXIT_UNSUPPORTED and "unsupported model" in stderr and "Traceback" not in stderr
    assert_no_output(out)


def test_missing_model_and_no_output_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, stderr = run([tmp_path / "nope.onnx", "-o", tmp_path / "out"], capsys)
    assert rc == EXIT_USAGE and "does not exist" in stderr
    rc, _, stderr = run([tmp_path / "nope.onnx"], capsys)
    assert rc == EXIT_USAGE and "no output folder" in stderr
    rc, _, stderr = run(["--bogus-flag"], capsys)
    assert rc == EXIT_USAGE


class InterruptAfter:
    """A test instrument: Ctrl-C after ``n`` passes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def after_pass(self, pass_: Any, graph: Any, record: Any, ctx: Any) -> None:
        self.seen += 1
        if self.seen >= self.n:
            raise KeyboardInterrupt


def test_keyboard_interrupt_leaves_nothing(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    inst = InterruptAfter(2)
    rc, _, stderr = run([tiny_bert, "--passes", "cleanup", "-o", out, "--dump-ir", *FAST], capsys, instruments=[inst])
    assert inst.seen == 2
    assert rc == EXIT_INTERRUPTED and "interrupted" in stderr and "Traceback" not in stderr
    assert_no_output(out)


def test_interrupt_keeps_a_previous_output(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        run([tiny_bert, "--passes", "cleanup", "-o", out, "--report", "json", "--no-validate", *FAST], capsys)[0] == 0
    )
    before = sorted(p.name for p in out.iterdir())
    rc, _, _ = run([tiny_bert, "--passes", "cleanup", "-o", out, *FAST], capsys, instruments=[InterruptAfter(1)])
    assert rc == EXIT_INTERRUPTED
    assert sorted(p.name for p in out.iterdir()) == before
    assert leftovers(tmp_path) == []


def test_pass_failure_exits_4(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--passes", "damage{node=no_such_node}", "-o", out, *FAST], capsys)
    assert rc == EXIT_FAILED and "no MatMul named 'no_such_node'" in stderr and "Traceback" not in stderr
    assert_no_output(out)


# -------------------------------------------------------------- lists, diff
def test_list_passes_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--list-passes"], capsys)
    assert rc == EXIT_OK and "constant-fold" in out and "cleanup" in out and "damage" in out
    rc, out, _ = run(["--list-targets"], capsys)
    from accelopt.targets.base import KNOWN_TARGETS, list_targets

    assert rc == EXIT_OK
    for info in list_targets():  # every planned target, built or not, with its status
        assert info.name in KNOWN_TARGETS
        assert f"  {info.name}  [{'built' if info.built else 'not built yet'}]" in out


def test_test_only_passes_are_not_shown_to_users() -> None:
    """Issue 14 item 5: ``damage`` and ``break-graph`` are registered by the tests, not by accelopt."""
    code = "import json; from accelopt.passes.base import registered_passes; print(json.dumps(sorted(registered_passes())))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    names = json.loads(proc.stdout)
    assert "constant-fold" in names and "fuse-attention" in names
    assert "damage" not in names and "break-graph" not in names
    proc = subprocess.run(
        [sys.executable, "-m", "accelopt.cli.main", "--list-passes"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_OK and "constant-fold" in proc.stdout and "damage" not in proc.stdout


def test_diff_two_reports(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run([tiny_bert, "--passes", "cleanup", "-o", a, "--report", "json", *FAST], capsys)[0] == 0
    assert run([tiny_bert, "--passes", "cleanup,damage", "-o", b, "--report", "json", *FAST], capsys)[0] == 0
    md = tmp_path / "diff.md"
    rc, out, err = run(["diff", a / "report.json", b / "report.json", "--md", md], capsys)
    assert rc == EXIT_OK, err
    assert "pipeline" in out and "damage" in out and "only in" in out
    text = md.read_text()
    assert "| pipeline | cleanup | cleanup,damage |" in text and "only in B" in text
    rc, _, err = run(["diff", a / "report.json", a / "model.onnx"], capsys)
    assert rc == EXIT_USAGE and "cannot read report" in err
    (tmp_path / "x.json").write_text("[1, 2]")
    rc, _, err = run(["diff", a / "report.json", tmp_path / "x.json"], capsys)
    assert rc == EXIT_USAGE and "not a JSON object" in err


def test_console_script_entry_point() -> None:
    exe = Path(sys.executable).with_name("optimize")
    res = subprocess.run([str(exe), "--list-targets"], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "onnx" in res.stdout
    res = subprocess.run(
        [str(exe), "x.onnx", "--target", "tpu", "-o", "out"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == EXIT_USAGE and "Traceback" not in res.stderr


# --------------------------------------------------------- the real model
@pytest.mark.slow
def test_minilm_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's check: optimize <MiniLM .onnx> --target onnx --passes cleanup -o out/."""
    jsonschema = pytest.importorskip("jsonschema")
    from accelopt.report import Report

    out = tmp_path / "out"
    rc, stdout, stderr = run([mz.minilm_onnx(), "--target", "onnx", "--passes", "cleanup", "-o", out], capsys)
    assert rc == EXIT_OK, stderr
    assert {"model.onnx", "report.json", "report.md", "report.html"} <= {p.name for p in out.iterdir()}
    data = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(Report.schema()).validate(data)
    v = data["validation"]
    assert v["num_samples"] == 32 and v["seq_len"] == 128
    assert v["inputs"] == "32 built-in held-out sentences (bundled all-MiniLM-L6-v2 tokenizer)"
    final = v["final"]["vs_reference"]
    assert final["max_abs"] < 1e-4 and final["pooled_cosine_min"] > 0.99999 and final["similarity_spearman"] > 0.9999
    assert v["artifact"]["ok"]
    assert "<svg" in (out / "report.html").read_text()


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tiny_bert: Path, tmp_path: Path, sig: str, code: int) -> None:
    """Issue 14 item 1: a signal mid-run leaves no ``.partial-*`` folder and keeps the previous OUTDIR."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}\n")  # an earlier run's output
    (out / "model.onnx").write_text("previous")
    cmd = [sys.executable, "-m", "accelopt.cli.main", str(tiny_bert), "--passes", "cleanup,fuse", "-o", str(out)]
    proc = subprocess.Popen([*cmd, "--seq-len", "64", "--samples", "64"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(tmp_path), "the run never staged its output"
        time.sleep(0.5)  # inside the model load or validation
        proc.send_signal(getattr(signal, sig))
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert f"terminated by {sig}; nothing was written, the previous output was kept" in stderr
    assert "Traceback" not in stderr
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.onnx"]
    assert (out / "model.onnx").read_text() == "previous"


def _listing(width: int, terminal: bool) -> str:
    import io

    from rich.console import Console

    from accelopt.cli.listing import list_passes, list_targets

    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    list_passes(console)
    list_targets(console)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [40, 60, 100])
def test_list_passes_wraps_on_word_boundaries_in_a_narrow_terminal(width: int) -> None:
    """Issue 14 item 7: no name is cut ("Log / Softmax"), no line is wider than the terminal."""
    from accelopt.passes.base import registered_passes

    text = _listing(width, terminal=True)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    words = set(" ".join(lines).replace(",", " ").replace("+", " ").replace("=", " ").split())
    for name in ("LogSoftmax", "ReduceLogSumExp", "SkipLayerNorm", "max_const_elements", *registered_passes()):
        assert name in words, name


def test_list_passes_prints_one_line_per_pass_through_a_pipe() -> None:
    from accelopt.passes.base import registered_groups, registered_passes

    lines = _listing(80, terminal=False).splitlines()
    for name, cls in registered_passes().items():
        mine = [line for line in lines if line.startswith(f"  {name} (")]
        assert len(mine) == 1 and cls.describe() in mine[0], name
    for name in registered_groups():
        assert sum(line.startswith(f"  {name} = ") for line in lines) == 1
    assert any(line.startswith("  onnx  [built]  default passes: cleanup,fuse") for line in lines)
