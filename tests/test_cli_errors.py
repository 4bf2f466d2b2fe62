"""Bad input at every entry point: ``optimize``, ``optimize diff``, ``accelopt.load``, ``accelopt.optimize``.

Each CLI case checks the exit code, one ``error:`` line naming the file, node,
op or option at fault, no traceback, and no output folder (nor temporary
leftovers) after the run. The API cases check the typed error and its message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_check import assert_no_output, leftovers, run
from onnx import TensorProto, helper

import accelopt as ao
import modelzoo as mz
from accelopt.cli.main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNSUPPORTED, EXIT_USAGE
from accelopt.errors import FrontendError, PassError, TargetError, ValidationError

FAST = ["--seq-len", "16", "--samples", "4"]
SEQ = 16


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[str, Path]:
    """Every bad input file, made once."""
    d = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}

    files["empty_dir"] = d / "empty_dir"
    files["empty_dir"].mkdir()
    files["text_file"] = d / "notes.txt"
    files["text_file"].write_text("not a model\n")
    files["fake_onnx"] = d / "fake.onnx"
    files["fake_onnx"].write_bytes(b"\x00\x01 this is not protobuf " * 8)
    data = tiny_bert.read_bytes()
    files["truncated"] = d / "truncated.onnx"
    files["truncated"].write_bytes(data[: len(data) // 2])

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("LpPool", ["x"], ["a"], name="pool_1", kernel_shape=[2, 2]),
        helper.make_node("LpPool", ["a"], ["b"], name="pool_2", kernel_shape=[1, 1]),
        helper.make_node("Det", ["b"], ["y"], name="det_0"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    files["unsupported"] = d / "unsupported.onnx"
    onnx.save(model, files["unsupported"])

    good = mz.family_inputs("bert", 4, SEQ, seed=0)

    def npz(name: str, **change: Any) -> None:
        files[name] = d / f"{name}.npz"
        np.savez(files[name], **{**good, **change})

    npz("rank", input_ids=np.ones((4, SEQ, 2), np.int64))
    npz("seq_mismatch", attention_mask=np.ones((4, SEQ - 4), np.int64))
    npz("vocab", input_ids=np.full((4, SEQ), 5000, np.int64))
    npz("fractional", input_ids=np.full((4, SEQ), 2.5))
    npz("count", token_type_ids=np.zeros((3, SEQ), np.int64))
    files["lacks"] = d / "lacks.npz"
    np.savez(files["lacks"], input_ids=good["input_ids"])
    files["empty_txt"] = d / "empty.txt"
    files["empty_txt"].write_text("\n  \n")
    files["binary_txt"] = d / "binary.txt"
    files["binary_txt"].write_bytes(bytes(range(256)) * 4)
    files["latin1_txt"] = d / "latin1.txt"
    files["latin1_txt"].write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    files["corrupt_npz"] = d / "corrupt.npz"
    files["corrupt_npz"].write_bytes(b"PK\x03\x04 truncated zip")

    files["foreign"] = d / "foreign"
    files["foreign"].mkdir()
    (files["foreign"] / "keep.txt").write_text("mine")
    files["a_file"] = d / "a_file"
    files["a_file"].write_text("x")
    files["not_json"] = d / "not.json"
    files["not_json"].write_text("{ broken")
    return files


def assert_clean_error(stderr: str, rc: int, want_rc: int, *fragments: str) -> None:
    """The exit code, one ``error:`` line holding every fragment, no traceback."""
    assert rc == want_rc, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])


# ------------------------------------------------------------- CLI: model
@pytest.mark.parametrize(
    ("key", "want_rc", "fragments"),
    [
        (None, EXIT_USAGE, ["does not exist", "missing.onnx"]),
        ("empty_dir", EXIT_UNSUPPORTED, ["unsupported model", "empty_dir", "holds no model"]),
        ("text_file", EXIT_UNSUPPORTED, ["cannot tell the format", "notes.txt"]),
        ("fake_onnx", EXIT_UNSUPPORTED, ["fake.onnx", "not an ONNX model, or truncated"]),
        ("truncated", EXIT_UNSUPPORTED, ["truncated.onnx", "not an ONNX model, or truncated"]),
        (
            "unsupported",
            EXIT_UNSUPPORTED,
            ["unsupported.onnx", "3 unsupported op(s)", "LpPool (nodes pool_1, pool_2)", "Det (node det_0)"],
        ),
    ],
)
def test_bad_model(
    bad: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key: str | None,
    want_rc: int,
    fragments: list[str],
) -> None:
    model = bad[key] if key else tmp_path / "missing.onnx"
    out = tmp_path / "out"
    rc, _, stderr = run([model, "-o", out, *FAST], capsys)
    assert_clean_error(stderr, rc, want_rc, *fragments)
    assert_no_output(out)


# ------------------------------------------------------- CLI: calibration
@pytest.mark.parametrize(
    ("key", "fragments"),
    [
        ("rank", ["rank.npz", "input 'input_ids' has shape [4, 16, 2], expected [N, sequence]", "rank 2"]),
        ("seq_mismatch", ["input 'attention_mask' has shape [4, 12]", "sequence = 16 as in input 'input_ids'"]),
        ("vocab", ["input 'input_ids' holds token ids 5000..5000", "vocabulary (0..999)"]),
        ("fractional", ["input 'input_ids' is int64 but holds non-integer values"]),
        ("count", ["count.npz", "disagree on the number of samples", "'token_type_ids': 3"]),
        ("lacks", ["lacks.npz", "lacks input(s) attention_mask, token_type_ids"]),
        ("corrupt_npz", ["corrupt.npz", "cannot read calibration file"]),
        ("empty_txt", ["empty.txt", "is empty: no sentences"]),
        ("binary_txt", ["binary.txt", "is binary, not text"]),
        ("latin1_txt", ["latin1.txt", "is not UTF-8 text (byte 0xe9 at offset 3)"]),
    ],
)
def test_bad_calibration(
    tiny_bert: Path,
    bad: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    fragments: list[str],
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--calibration", bad[key], "-o", out, *FAST], capsys)
    assert_clean_error(stderr, rc, EXIT_USAGE, *fragments)
    assert "hint: --calibration takes a .npz" in stderr
    assert_no_output(out)


# ------------------------------------------------ CLI: options and -o
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--tolerance", "cosine0.99"], ["bad tolerance 'cosine0.99'", "expected key=value"]),
        (["--tolerance", "cosine=0.99,,max_abs"], ["bad tolerance 'max_abs'"]),
        (["--tolerance", "cosin=0.99"], ["unknown tolerance 'cosin'; did you mean 'cosine'", "known: max_abs"]),
        (["--tolerance", "cosine=high"], ["tolerance cosine='high' is not a number"]),
        (["--tolerance", "cosine=1.5"], ["tolerance cosine='1.5' is out of range", "between -1 and 1"]),
        (["--tolerance", "max_abs=-1e-3"], ["tolerance max_abs='-1e-3' is out of range", "at least 0"]),
        (["--tolerance", "cosine=0.9,cosine=0.8"], ["tolerance 'cosine' is given twice"]),
        (["--target", "tpuu"], ["unknown target 'tpuu'", "known targets: cpu, fpga, gpu, onnx, tpu"]),
        (["--target", "tpu{chipp=v4}"], ["target 'tpu' has no option 'chipp'", "its options: chip"]),
        (["--target", "tpu{chip=v9}"], ["target 'tpu{chip=v9}'", "unknown TPU chip 'v9'", "v5e"]),
        (["--target", "tpu{batch=x}"], ["target 'tpu'", "bad value 'x' for option 'batch'"]),
        (["--target", "tpu{chip=v4"], ["bad target 'tpu{chip=v4'"]),
        (["--passes", "cleanup,fusee"], ["unknown pass 'fusee'", "known passes and groups"]),
        (["--passes", "constant-fold{max_elements=abc}"], ["'constant-fold'", "bad value 'abc'", "'max_elements'"]),
        (["--passes", "constant-fold{foo=1}"], ["pass 'constant-fold' has no option 'foo'", "max_elements"]),
        (["--passes", "cleanup,{"], ["bad pipeline spec 'cleanup,{'"]),
        (["--report", "json,pdf"], ["unknown report format 'pdf'"]),
        # issue 14 item 6: the closest names are offered for typos
        (["--target", "tpuu"], ["unknown target 'tpuu'; did you mean 'tpu'?"]),
        (["--target", "onnx{foo=1}"], ["target 'onnx' has no option 'foo'; its options: none"]),
        (["--target", "tpu{precison=bf16}"], ["has no option 'precison'; did you mean 'precision'?"]),
        (["--passes", "cleanup,fuse-gelus"], ["unknown pass 'fuse-gelus'; did you mean 'fuse-gelu'"]),
        (["--passes", "layernorm"], ["unknown pass 'layernorm'; did you mean 'fuse-layernorm'"]),
        (["--passes", "constant-fold{max_element=5}"], ["no option 'max_element'; did you mean 'max_elements'?"]),
        (["--passes", "cleanup{max_elemnts=5}"], ["group 'cleanup' has no option 'max_elemnts'; did you mean"]),
        (["--passes", "int8{calibraton=minmax}"], ["group 'int8' has no option 'calibraton'; did you mean 'calibration'?"]),
        (["--report", "jsn"], ["unknown report format 'jsn'; did you mean 'json'?"]),
        (["--batch", "0"], ["--batch must be at least 1, got 0"]),
        (["--seq-len", "12x"], ["--seq-len takes a length or a comma list"]),
    ],
)
def test_bad_options(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "-o", out, *FAST, *args], capsys)
    assert_clean_error(stderr, rc, EXIT_USAGE, *fragments)
    assert_no_output(out)


def test_output_in_a_foreign_folder_is_refused(
    tiny_bert: Path, bad: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = bad["foreign"]
    rc, _, stderr = run([tiny_bert, "-o", foreign, *FAST], capsys)
    assert_clean_error(stderr, rc, EXIT_USAGE, str(foreign), "is not empty and was not written by optimize")
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    assert leftovers(foreign.parent) == []


@pytest.mark.parametrize("sub", ["", "out"])
def test_output_under_or_on_a_file_is_refused(
    tiny_bert: Path, bad: dict[str, Path], capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    target = bad["a_file"] / sub if sub else bad["a_file"]
    rc, _, stderr = run([tiny_bert, "-o", target, *FAST], capsys)
    want = "cannot write to output folder" if sub else "exists and is not a folder"
    assert_clean_error(stderr, rc, EXIT_USAGE, str(target), want)
    assert bad["a_file"].read_text() == "x" and leftovers(bad["a_file"].parent) == []


# ------------------------------------------------------------ CLI: Ctrl-C
@pytest.mark.parametrize("where", ["load", "lower", "save-report"])
def test_interrupt_at_any_stage_leaves_nothing(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import accelopt.api
    from accelopt.report import Report
    from accelopt.targets.onnx_target import OnnxTarget

    def interrupt(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    if where == "load":
        monkeypatch.setattr(accelopt.api, "load", interrupt)
    elif where == "lower":
        monkeypatch.setattr(OnnxTarget, "lower", interrupt)
    else:  # model.onnx is already in the staging folder when the report is written
        monkeypatch.setattr(Report, "save", interrupt)
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--passes", "cleanup", "-o", out, *FAST], capsys)
    assert_clean_error(stderr, rc, EXIT_INTERRUPTED, "interrupted; nothing was written")
    assert_no_output(out)


def test_a_bug_is_one_line_without_output(
    tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelopt.targets.onnx_target import OnnxTarget

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(OnnxTarget, "lower", boom)
    out = tmp_path / "out"
    rc, _, stderr = run([tiny_bert, "--passes", "dce", "-o", out, *FAST], capsys)
    assert_clean_error(stderr, rc, EXIT_FAILED, "internal error: RuntimeError: something unexpected")
    assert_no_output(out)


# -------------------------------------------------------------- CLI: diff
@pytest.mark.parametrize(
    ("which", "fragments"),
    [
        ("missing", ["cannot read report", "missing.json"]),
        ("dir", ["cannot read report", "empty_dir"]),
        ("not_json", ["not.json", "is not JSON"]),
        ("onnx", ["fake.onnx", "is not JSON"]),
    ],
)
def test_diff_bad_inputs(
    bad: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, fragments: list[str]
) -> None:
    path = {
        "missing": tmp_path / "missing.json",
        "dir": bad["empty_dir"],
        "not_json": bad["not_json"],
        "onnx": bad["fake_onnx"],
    }[which]
    rc, _, stderr = run(["diff", path, path], capsys)
    assert_clean_error(stderr, rc, EXIT_USAGE, *fragments)


def test_diff_usage(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, stderr = run(["diff", "only-one.json"], capsys)
    assert rc == EXIT_USAGE and "Traceback" not in stderr and "B.json" in stderr


def test_real_process_stderr_has_no_traceback(bad: dict[str, Path], tmp_path: Path) -> None:
    """The console script end to end: exit code and stderr as a shell sees them."""
    exe = Path(sys.executable).with_name("optimize")
    res = subprocess.run(
        [str(exe), str(bad["unsupported"]), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )
    assert res.returncode == EXIT_UNSUPPORTED and "Traceback" not in res.stderr
    assert re.search(r"^error: .*LpPool \(nodes pool_1, pool_2\), Det \(node det_0\)$", res.stderr, re.M)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------- accelopt.load
@pytest.mark.parametrize(
    ("key", "match"),
    [
        (None, "does not exist"),
        ("empty_dir", "holds no model: no .onnx file and no Hugging Face model"),
        ("text_file", r"cannot tell the format of .*notes\.txt"),
        ("fake_onnx", r"fake\.onnx: not an ONNX model, or truncated"),
        ("truncated", r"truncated\.onnx: not an ONNX model, or truncated"),
        ("unsupported", r"3 unsupported op\(s\): LpPool \(nodes pool_1, pool_2\), Det \(node det_0\)"),
    ],
)
def test_load_bad_models(bad: dict[str, Path], tmp_path: Path, key: str | None, match: str) -> None:
    with pytest.raises(FrontendError, match=match):
        ao.load(bad[key] if key else tmp_path / "missing.onnx")


# ------------------------------------------------------ accelopt.optimize
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"calibration": "rank"}, ValidationError, r"input 'input_ids' has shape \[4, 16, 2\], expected \[N, seq"),
        ({"calibration": "seq_mismatch"}, ValidationError, "sequence = 16 as in input 'input_ids'"),
        ({"calibration": "vocab"}, ValidationError, "outside the model's vocabulary"),
        ({"calibration": "empty_txt"}, ValidationError, "is empty: no sentences"),
        ({"calibration": "binary_txt"}, ValidationError, "is binary, not text"),
        ({"tolerance": "cosine0.99"}, ValidationError, "expected key=value"),
        ({"tolerance": {"cosin": 0.9}}, ValidationError, "did you mean 'cosine'"),
        ({"target": "tpuu"}, TargetError, "unknown target 'tpuu'"),
        ({"target": "tpu{chipp=v4}"}, TargetError, "has no option 'chipp'"),
        ({"target": "tpu{chip=v9}"}, TargetError, "unknown TPU chip 'v9'"),
        ({"passes": "cleanup,fusee"}, PassError, "unknown pass 'fusee'"),
        ({"passes": "constant-fold{foo=1}"}, PassError, "has no option 'foo'"),
    ],
)
def test_optimize_bad_arguments(
    tiny_bert: Path, bad: dict[str, Path], kwargs: dict[str, Any], error: type, match: str
) -> None:
    if isinstance(kwargs.get("calibration"), str):
        kwargs = {**kwargs, "calibration": bad[kwargs["calibration"]]}
    with pytest.raises(error, match=match):
        ao.optimize(tiny_bert, seq_len=SEQ, num_samples=4, **kwargs)


def test_optimize_bad_calibration_arrays(tiny_bert: Path) -> None:
    good = mz.family_inputs("bert", 3, SEQ, seed=1)
    with pytest.raises(ValidationError, match=r"calibration data: input 'token_type_ids' has shape \[3\]"):
        ao.optimize(tiny_bert, calibration={**good, "token_type_ids": np.zeros(3, np.int64)}, seq_len=SEQ)
    with pytest.raises(ValidationError, match="calibration data lacks input"):
        ao.optimize(tiny_bert, calibration={"input_ids": good["input_ids"]}, seq_len=SEQ)
    with pytest.raises(FrontendError, match="does not exist"):
        ao.optimize("/nonexistent/model.onnx")
