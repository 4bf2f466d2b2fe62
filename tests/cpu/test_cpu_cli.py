"""``optimize --target cpu``, ``optimize run`` and ``optimize bench`` from the command line, errors included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_check import run

import modelzoo
from accelopt.cli.main import EXIT_OK, EXIT_USAGE


@pytest.fixture(scope="module")
def cpu_out(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "out"
    from accelopt.cli.main import main

    rc = main([str(tiny_bert), "--target", "cpu", "--passes", "cleanup,fuse", "--seq-len", "16", "--samples", "4",
               "-o", str(out), "--report", "json", "-q"])
    assert rc == EXIT_OK
    return out


def test_optimize_writes_a_validated_cpu_artifact(cpu_out: Path):
    names = {p.name for p in cpu_out.iterdir()}
    assert {"metadata.json", "model.so", "params.bin", "report.json"} <= names
    report = json.loads((cpu_out / "report.json").read_text())
    assert report["status"] == "ok" and report["target"]["name"] == "cpu"
    assert report["validation"]["artifact"]["ok"] is True
    meta = json.loads((cpu_out / "metadata.json").read_text())
    assert meta["pipeline"] == report["pipeline"] and meta["inputs"][0]["vocab"] == 1000


def test_run_writes_outputs_matching_the_artifact(cpu_out: Path, tmp_path: Path, capsys):
    import accelopt as ao

    feed = modelzoo.family_inputs("bert", 2, 16, seed=1)
    np.savez(tmp_path / "in.npz", **feed)
    rc, stdout, stderr = run(["run", cpu_out, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "o.npz"], capsys)
    assert rc == EXIT_OK, stderr
    got = dict(np.load(tmp_path / "o.npz"))
    want = ao.Artifact.load(cpu_out).run(feed)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    rc, stdout, _ = run(["run", cpu_out, "--inputs", tmp_path / "in.npz"], capsys)
    assert rc == EXIT_OK and "last_hidden_state" in stdout and "[2, 16, 64]" in stdout


def test_bench_reports_median_and_p90(cpu_out: Path, capsys):
    rc, stdout, stderr = run(["bench", cpu_out, "--batch", "2", "--seq-len", "16", "--warmup", "1", "--repeat", "3"],
                             capsys)
    assert rc == EXIT_OK, stderr
    assert "median" in stdout and "p90" in stdout and "input_ids[2, 16]" in stdout
    rc, stdout, stderr = run(["bench", cpu_out, "--warmup", "0", "--repeat", "2", "--profile"], capsys)
    assert rc == EXIT_OK, stderr
    assert "where the time goes" in stdout and "dense_fp32" in stdout and "%" in stdout  # the x86 dense kernel


@pytest.mark.parametrize(
    "argv_tail,message",
    [
        (["--inputs", "{tmp}/none.npz"], "does not exist"),
        (["--inputs", "{tmp}/missing.npz"], "missing attention_mask"),
        (["--inputs", "{tmp}/rank.npz"], "input_ids has rank 1"),
        (["--inputs", "{tmp}/long.npz"], "no compiled function"),
        (["--inputs", "{tmp}/junk.npz"], "cannot read inputs file"),
    ],
)
def test_run_usage_errors_name_the_expected_inputs(cpu_out: Path, tmp_path: Path, capsys, argv_tail, message):
    ids = np.ones((1, 16), np.int64)
    np.savez(tmp_path / "missing.npz", input_ids=ids, token_type_ids=ids)
    np.savez(tmp_path / "rank.npz", input_ids=ids[0], attention_mask=ids, token_type_ids=ids)
    long = np.ones((1, 40), np.int64)
    np.savez(tmp_path / "long.npz", input_ids=long, attention_mask=long, token_type_ids=long)
    (tmp_path / "junk.npz").write_text("not a zip")
    argv = ["run", cpu_out, *[a.replace("{tmp}", str(tmp_path)) for a in argv_tail]]
    rc, stdout, stderr = run(argv, capsys)
    assert rc == EXIT_USAGE
    assert message in " ".join(stderr.split()) and "Traceback" not in stdout + stderr
    if "does not exist" not in message and "cannot read" not in message:
        assert "input_ids int64['batch', 'sequence']" in " ".join(stderr.split())


def test_run_and_bench_refuse_a_folder_that_is_no_artifact(tmp_path: Path, capsys):
    rc, _, stderr = run(["run", tmp_path / "nowhere", "--inputs", "x.npz"], capsys)
    assert rc == EXIT_USAGE and "does not exist" in stderr
    rc, _, stderr = run(["bench", tmp_path], capsys)
    assert rc == EXIT_USAGE and "no metadata.json" in stderr
    rc, _, stderr = run(["bench", tmp_path, "--repeat", "0"], capsys)
    assert rc == EXIT_USAGE and "--repeat must be at least 1" in stderr
    rc, _, _ = run(["run", tmp_path], capsys)  # --inputs is required
    assert rc == EXIT_USAGE


def test_bench_works_for_an_onnx_artifact(tiny_bert: Path, tmp_path: Path, capsys):
    out = tmp_path / "onnx"
    rc, _, stderr = run([tiny_bert, "--passes", "cleanup", "-o", out, "--no-validate", "--report", "none", "-q"],
                        capsys)
    assert rc == EXIT_OK, stderr
    rc, stdout, stderr = run(["bench", out, "--seq-len", "8", "--warmup", "0", "--repeat", "2"], capsys)
    assert rc == EXIT_OK, stderr
    assert "(onnx)" in stdout and "median" in stdout


def test_unknown_mcpu_is_a_usage_error(tiny_bert: Path, tmp_path: Path, capsys):
    rc, _, stderr = run([tiny_bert, "--target", "cpu{mcpu=znver44}", "-o", tmp_path / "o"], capsys)
    assert rc == EXIT_USAGE and "unknown mcpu 'znver44'" in " ".join(stderr.split())


def test_tvm_native_log_noise_stays_off_the_console(tiny_bert: Path, tmp_path: Path, capfd):
    """TVM 0.27 writes "Scope Saving/Loaded:" to descriptor 2 for every VM constant; a user never sees it."""
    import accelopt as ao
    from accelopt.cli.main import main

    capfd.readouterr()
    rc = main([str(tiny_bert), "--target", "cpu", "--passes", "fuse", "--seq-len", "16", "--samples", "2",
               "-o", str(tmp_path / "out"), "-q"])
    assert rc == EXIT_OK
    art = ao.Artifact.load(tmp_path / "out")
    art.run(modelzoo.family_inputs("bert", 1, 16, seed=1))
    err = capfd.readouterr().err
    assert "Scope Loaded" not in err and "Scope Saving" not in err and "executable.cc" not in err


def test_native_stderr_lines_other_than_the_noise_are_logged(caplog, capfd):
    import os

    from accelopt.targets.relax.native_stderr import forward, native_stderr_to_log

    with caplog.at_level("WARNING", logger="accelopt.targets.relax.native_stderr"):
        with native_stderr_to_log("load_module"):
            os.write(2, b"[09:50:11] /project/src/runtime/vm/executable.cc:340: Warning: Scope Loaded:\n\n")
            os.write(2, b"[09:50:12] /project/src/runtime/x.cc:1: Warning: something real\n")
    assert "Scope Loaded" not in capfd.readouterr().err
    assert [r.getMessage() for r in caplog.records] == ["load_module: [09:50:12] /project/src/runtime/x.cc:1: Warning: something real"]
    assert forward("\n[t] vm/executable.cc:276: Warning: Scope Saving:\n", "x") == []
