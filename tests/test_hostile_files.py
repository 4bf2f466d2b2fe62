"""Broken and hostile model files end cleanly (issue 13 item 4; issue 14 items 4 and 8).

Each named mutation of the tiny BERT (``hostile.MUTATIONS``) through ``optimize``:
the exit code, one ``error:`` line naming the file, node or input and the
problem, no traceback, nothing left behind. Plus the pieces behind them:
constant folding's size limit, the interpreter's out-of-range ``Gather``,
non-finite weights at import, and numpy's warnings kept off the console.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import hostile
import numpy as np
import onnx
import pytest
from cli_check import assert_no_output, leftovers, run

import accelopt as ao
from accelopt.cli.main import EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from accelopt.errors import InterpreterError
from accelopt.interpreter import run as interpret
from accelopt.ir import parse

FAST = ["--seq-len", "16", "--samples", "4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    base = onnx.load(tiny_bert)
    out = {}
    for name, fn in hostile.MUTATIONS.items():
        out[name] = d / f"{name}.onnx"
        onnx.save(fn(base), out[name])
    return out


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr and "RuntimeWarning" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize(
    ("name", "code", "fragments"),
    [
        ("outputs_removed", EXIT_UNSUPPORTED, ["outputs_removed.onnx", "the graph has no outputs"]),
        ("input_dim_zero", EXIT_UNSUPPORTED, ["graph input 'input_ids' is declared [batch, 0]", "size 0"]),
        ("input_elem_type_99", EXIT_UNSUPPORTED, ["graph input 'input_ids' has element type 99"]),
        ("input_dim_huge", EXIT_UNSUPPORTED, ["input_dim_huge.onnx", "1000000000000 and 128 do not broadcast"]),
        ("expand_huge", EXIT_USAGE, ["too large to validate", "node expand_huge (Expand)", "float32[1000000,4,16,64]"]),
        (
            "matmul_swapped",
            EXIT_UNSUPPORTED,
            ["does not run on the validation inputs", "query/MatMul (MatMul)", "float32[64, 64], float32[4, 16, 64]"],
        ),
        ("reshape_impossible", EXIT_UNSUPPORTED, ["reshape_impossible.onnx", "(Transpose): shape inference failed"]),
        (
            "positions_cut",
            EXIT_UNSUPPORTED,
            ["position_embeddings/Gather (Gather)", "index 10 is out of range for axis 0 of size 10"],
        ),
        ("weight_nan", EXIT_UNSUPPORTED, ["outputs (onnxruntime)", "are not finite", "NaN of 4096", "hold non-finite"]),
        ("weight_inf", EXIT_UNSUPPORTED, ["are not finite", "3 Inf of"]),
    ],
)
def test_hostile_file_is_a_clean_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, code: int, fragments: list[str]
) -> None:
    out = tmp_path / "out"
    rc, _, stderr = run([files[name], "--passes", "cleanup,fuse", "-o", out, *FAST], capsys)
    assert rc == code, stderr
    line = _one_error(stderr)
    for f in fragments:
        assert f in line, (f, line)
    assert_no_output(out)


def test_cut_embedding_table_is_valid_for_the_ids_it_has(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """10 rows and no tokenizer: the validation draws ids below 10 and the model runs (out-of-range ids
    given as calibration data are a usage error naming the input and the range)."""
    out = tmp_path / "out"
    rc, _, stderr = run([files["embeddings_cut"], "--passes", "cleanup", "-o", out, *FAST], capsys)
    assert rc == EXIT_OK, stderr
    ids = np.full((2, 16), 199, np.int64)
    np.savez(tmp_path / "c.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    rc, _, stderr = run(
        [files["embeddings_cut"], "--calibration", tmp_path / "c.npz", "-o", tmp_path / "o2", *FAST], capsys
    )
    assert rc == EXIT_USAGE and "token ids 199..199, outside the model's vocabulary (0..9)" in _one_error(stderr)


def test_huge_constant_of_shape_is_not_folded(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """ConstantOfShape [10**4, 10**4] (381 MiB) as an extra output: constant-fold leaves it, fast."""
    out = tmp_path / "out"
    argv = [files["constant_of_shape_huge"], "--passes", "cleanup", "-o", out, "--report", "json", "--no-validate"]
    rc, _, stderr = run([*argv, *FAST], capsys)
    assert rc == EXIT_OK, stderr
    fold = json.loads((out / "report.json").read_text())["passes"][0]
    assert fold["name"] == "constant-fold" and fold["stats"]["too_large"] == 1
    assert "node cos_big (ConstantOfShape) not folded: its output would take 381 MiB" in " ".join(fold["notes"])


def test_constant_fold_refuses_before_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelopt.ir.registry import get_op
    from accelopt.passes.base import PassContext, build_pipeline

    g = parse("""graph g(%x: float32[3]) {
  %s: int64[2] = const [10000, 10000]
  %s2: int64[2] = const [64, 64]
  %big: float32[10000,10000] = ConstantOfShape(%s) @big
  %small: float32[64,64] = ConstantOfShape(%s2) @small
  return %x, %big, %small
}
""")
    opdef = get_op("ConstantOfShape")
    calls: list[tuple[int, ...]] = []
    kernel = opdef.kernel

    def spy(ins, attrs, n):  # type: ignore[no-untyped-def]
        calls.append(tuple(int(v) for v in ins[0]))
        return kernel(ins, attrs, n)

    monkeypatch.setattr(opdef, "kernel", spy)
    (fold,) = build_pipeline("constant-fold")
    res = fold.run(g, PassContext())
    assert calls == [(64, 64)]  # the 381 MiB one was never computed
    assert res.stats["too_large"] == 1 and res.stats["folded"] == 1
    assert [n.name for n in g.nodes] == ["big"] and "small" in g.initializers
    (tight,) = build_pipeline("constant-fold{max_bytes=1000}")
    g2 = parse("""graph g(%x: float32[3]) {
  %s2: int64[2] = const [64, 64]
  %small: float32[64,64] = ConstantOfShape(%s2) @small
  return %x, %small
}
""")
    assert not tight.run(g2, PassContext()).modified and [n.name for n in g2.nodes] == ["small"]


def test_interpreter_names_the_gather_and_the_index() -> None:
    g = parse("""graph g(%ids: int64[2,3]) {
  %table: float32[10,4] = const <sha:1>
  %e: float32[2,3,4] = Gather(%table, %ids) @lookup
  return %e
}
""", {"table": np.zeros((10, 4), np.float32)})
    ok = interpret(g, {"ids": np.array([[0, 9, -10], [1, 2, 3]])})
    assert ok["e"].shape == (2, 3, 4)
    with pytest.raises(InterpreterError, match=r"node lookup \(Gather\) .*index 12 is out of range for axis 0 of size 10"):
        interpret(g, {"ids": np.array([[0, 12, 1], [1, 2, 3]])})
    with pytest.raises(InterpreterError, match=r"index -11 is out of range .* \(valid: -10\.\.9\)"):
        interpret(g, {"ids": np.array([[0, -11, 1], [1, 2, 3]])})


def test_nonfinite_weights_are_named_at_import(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="accelopt"):
        ao.load(files["weight_nan"])
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "1 weight tensor(s) hold non-finite values" in msgs[0]
    assert re.search(r"'onnx::MatMul_\d+' \(1171 NaN of 8192 values\)", msgs[0]), msgs[0]


def test_nan_model_on_the_real_console(files: dict[str, Path], tmp_path: Path) -> None:
    """A fresh process: no numpy RuntimeWarning reaches stderr, only the one error line (and the import warning)."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "accelopt.cli.main", str(files["weight_nan"]), "-o", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_UNSUPPORTED, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert "hold non-finite values" in proc.stderr and "are not finite" in _one_error(proc.stderr)
    assert not out.exists() and leftovers(tmp_path) == []
