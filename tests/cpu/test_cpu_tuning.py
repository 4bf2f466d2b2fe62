"""Tuning of the cpu target: options and flags, the database keeping the faster schedule, a warm database
running no trials, and (slow) MetaSchedule end to end, locally and through an RPC tracker on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from cli_check import run as run_cli
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

import accelopt as ao
from accelopt.cli.main import EXIT_USAGE
from accelopt.errors import TargetError
from accelopt.interpreter import run
from accelopt.targets.base import get_target
from accelopt.targets.cpu import host, tuning
from accelopt.targets.cpu.build import llvm_target
from accelopt.targets.cpu.kernels import dense
from modelzoo import one_op_graph

M, K, N = 16, 64, 96


def _linear_graph() -> tuple[object, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, K), dtype=np.float32)
    w = (rng.standard_normal((K, N)) / 8).astype(np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    return one_op_graph("Linear", [x, w, b], {"activation": "gelu"}, consts={1, 2}, name="lin")


def _compile(graph: object, spec: str) -> ao.Artifact:
    return get_target(spec).lower(graph)  # type: ignore[arg-type]


def _target() -> tvm.target.Target:
    return llvm_target(host.detect_mcpu(), 2)


# ----------------------------------------------------------------- options
def test_tuning_options_are_checked():
    with pytest.raises(TargetError, match="HOST:PORT:KEY"):
        get_target("cpu{rpc=localhost}")
    with pytest.raises(TargetError, match="tune_trials must be >= 0"):
        get_target("cpu{tune_trials=-1}")
    t = get_target("cpu{tune_trials=8,tuning_db=/tmp/x,rpc=127.0.0.1:9190:cpu}")
    assert t.options.tuning() == tuning.TuningOptions(trials=8, database="/tmp/x", rpc="127.0.0.1:9190:cpu")
    assert tuning.parse_rpc("10.0.0.1:9190:cpu").tracker_port == 9190


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "onnx", "--tune-trials", "4"], "has no tuning options"),
        (["--target", "cpu", "--tune-trials", "-2"], "tune_trials must be >= 0"),
        (["--target", "cpu", "--rpc", "nohost"], "HOST:PORT:KEY"),
        (["--target", "cpu{tune_trials=4}", "--tune-trials", "8"], "given twice"),
    ],
)
def test_tuning_flags_usage_errors(argv, message, tiny_bert: Path, tmp_path: Path, capsys):
    rc, _, err = run_cli([tiny_bert, *argv, "-o", tmp_path / "out"], capsys)
    assert rc == EXIT_USAGE and message in err


def test_tuning_flags_set_the_target_options():
    from accelopt.cli import tuning_flags

    class Args:
        tune_trials, tuning_db, rpc = 12, "/tmp/db", None

    t = tuning_flags.apply(get_target("cpu"), Args())  # type: ignore[arg-type]
    assert (t.options.tune_trials, t.options.tuning_db, t.options.rpc) == (12, "/tmp/db", "")


# ---------------------------------------------------------------- database
def _record(db: tuning.Database, func: object, tile: dense.DenseTile, secs: float) -> None:
    target = _target()
    mod = tuning._module(func)  # type: ignore[arg-type]
    sch = Schedule(mod)
    dense.schedule_dense(sch, tile)
    args = ms.arg_info.ArgInfo.from_prim_func(func)
    workload = db.ms.commit_workload(tuning._module(func))  # type: ignore[arg-type]
    db.ms.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [secs], target, args))


@pytest.mark.parametrize("faster", ["hand", "other"])
def test_the_database_keeps_the_faster_schedule(faster: str, tmp_path: Path):
    """Two records of one task: the compile applies whichever was measured faster."""
    func = dense.dense_primfunc(M, K, N, bias=True, activation="none")
    hand, other = dense.DenseTile(8, 3), dense.DenseTile(2, 3, 4)
    db = tuning.Database(tmp_path / "db")
    _record(db, func, hand, 1e-3 if faster == "hand" else 2e-3)
    _record(db, func, other, 2e-3 if faster == "hand" else 1e-3)
    reopened = tuning.Database(tmp_path / "db")  # the JSON files, as a fresh process reads them
    best = reopened.best(func, _target())
    assert best is not None and best[1] == pytest.approx(1e-3)
    want = Schedule(tuning._module(func))
    dense.schedule_dense(want, hand if faster == "hand" else other)
    plain = lambda f: f.without_attr("global_symbol").without_attr("tirx.noalias")  # noqa: E731
    tvm.ir.assert_structural_equal(plain(best[0]), plain(want.mod["main"]))


def _dense_func(graph: object) -> object:
    """The graph's legalized dense PrimFunc (the one tuning task of ``_linear_graph``)."""
    return next(f for _, f in _legalized_funcs(graph) if "dense_fp32" in str(f.attrs.get("accelopt.kernel", "")))


def _compile_with_record(graph: object, tmp_path: Path, tile: dense.DenseTile) -> ao.Artifact:
    """Compile ``graph`` with a tuning database holding one record: the dense task scheduled with ``tile``."""
    db = tuning.Database(tmp_path / "db")
    _record(db, _dense_func(graph), tile, 1e-3)
    return _compile(graph, f"cpu{{tuning_db={tmp_path / 'db'}}}")


def _verdict(monkeypatch: pytest.MonkeyPatch, keep: str) -> None:
    """The end-to-end comparison of tuned and hand-scheduled modules, decided without timing."""
    from accelopt.targets.cpu import build
    from accelopt.targets.cpu.tuning_guard import Verdict

    monkeypatch.setattr(build, "compare", lambda tuned, hand, mod: Verdict(keep, 1.0, 2.0) if keep == "tuned" else Verdict(keep, 2.0, 1.0))


def test_a_database_schedules_the_model_without_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A compile with ``tuning_db`` and no trials applies the records it has, and the result is correct."""
    _verdict(monkeypatch, "tuned")
    graph, feed = _linear_graph()
    plain = _compile(graph, "cpu")
    art = _compile_with_record(graph, tmp_path, dense.DenseTile(4, 3))
    counts = art.metadata["schedule"]["counts"]
    assert counts.get("database:dense_fp32") == 1 and "kernel:dense_fp32" not in counts
    assert art.metadata["tuning"]["trials"] == 0 and art.metadata["tuning"]["end_to_end"]["kept"] == "tuned"
    want = run(graph, feed)  # type: ignore[arg-type]
    for out in (art.run(feed), plain.run(feed)):
        np.testing.assert_allclose(out[graph.outputs[0].name], want[graph.outputs[0].name], rtol=0, atol=1e-4)  # type: ignore[attr-defined]


def test_hand_schedules_are_kept_when_the_tuned_module_is_slower_end_to_end(tmp_path: Path, monkeypatch):
    """Kernels measured faster alone can make the model slower: then the build keeps the hand schedules."""
    _verdict(monkeypatch, "hand")
    graph, feed = _linear_graph()
    art = _compile_with_record(graph, tmp_path, dense.DenseTile(4, 3))
    counts = art.metadata["schedule"]["counts"]
    assert counts.get("kernel:dense_fp32") == 1 and not any(k.startswith("database:") for k in counts)
    assert art.metadata["tuning"]["end_to_end"] == {"kept": "hand", "tuned_ms": 2.0, "hand_ms": 1.0}
    want = run(graph, feed)  # type: ignore[arg-type]
    name = graph.outputs[0].name  # type: ignore[attr-defined]
    np.testing.assert_allclose(art.run(feed)[name], want[name], rtol=0, atol=1e-4)


def _kept_the_faster(e2e: dict) -> bool:
    """The verdict names the faster module (either one where the rounded times tie)."""
    if e2e["tuned_ms"] == e2e["hand_ms"]:
        return e2e["kept"] in ("tuned", "hand")
    return e2e["kept"] == ("tuned" if e2e["tuned_ms"] < e2e["hand_ms"] else "hand")


def test_the_end_to_end_check_times_both_modules_and_keeps_the_faster(tmp_path: Path):
    graph, _ = _linear_graph()
    art = _compile_with_record(graph, tmp_path, dense.DenseTile(2, 3))
    e2e = art.metadata["tuning"]["end_to_end"]
    assert e2e["tuned_ms"] > 0 and e2e["hand_ms"] > 0
    assert _kept_the_faster(e2e)
    database_rules = any(k.startswith("database:") for k in art.metadata["schedule"]["counts"])
    assert database_rules == (e2e["kept"] == "tuned")
    assert "end_to_end_check" in art.metadata["seconds"]


def test_the_end_to_end_check_is_skipped_where_this_machine_cannot_time_the_code():
    from accelopt.targets.cpu.build import _faster_of
    from accelopt.targets.cpu.schedule_rules import ScheduleReport

    rep = tuning.TuningReport()
    report = ScheduleReport()
    ex, got = _faster_of("tuned-executable", report, tvm.IRModule({}), _target(), rep, "candidates were measured over RPC")
    assert ex == "tuned-executable" and got is report
    assert rep.end_to_end == {"kept": "tuned", "skipped": "candidates were measured over RPC"}


def _legalized_funcs(graph: object) -> list[tuple[str, object]]:
    from accelopt.targets.cpu.build import legalize
    from accelopt.targets.cpu.kernels import X86Kernels
    from accelopt.targets.relax import Bucket, build_module

    lowered = build_module(graph, [Bucket("f", {})], X86Kernels())  # type: ignore[arg-type]
    mod = legalize(lowered.mod, _target())
    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


# --------------------------------------------------------------- end to end
def _tune_twice(graph: object, spec: str) -> tuple[ao.Artifact, ao.Artifact, float]:
    t0 = time.perf_counter()
    first = _compile(graph, spec)
    took = time.perf_counter() - t0
    return first, _compile(graph, spec), took


@pytest.mark.slow
def test_tuning_end_to_end_never_slower_and_a_warm_database_runs_no_trials(tmp_path: Path):
    graph, feed = _linear_graph()
    spec = f"cpu{{tune_trials=4,tuning_db={tmp_path / 'db'}}}"
    first, second, _ = _tune_twice(graph, spec)
    rep1, rep2 = first.metadata["tuning"], second.metadata["tuning"]
    assert rep1["trials"] == 4 and rep1["tasks"] and not rep1["reused"]
    assert rep2["trials"] == 0 and rep2["reused"] == rep1["tasks"]  # the warm database: no new trials
    e2e = second.metadata["tuning"]["end_to_end"]  # the whole module: tuned kept only where it ran faster
    assert _kept_the_faster(e2e)
    kernel_rule = "database:dense_fp32" if e2e["kept"] == "tuned" else "kernel:dense_fp32"
    assert second.metadata["schedule"]["counts"].get(kernel_rule) == 1
    db = tuning.Database(tmp_path / "db")
    func = _dense_func(graph)
    records = db.ms.get_top_k(db.ms.commit_workload(tuning._module(func)), 100)
    assert len(records) >= 2  # the hand schedule and what the search measured
    hand = Schedule(tuning._module(func))
    dense.schedule_dense(hand)
    hand_secs = [tuning._mean(r.run_secs) for r in records if _same_schedule(r, func, hand)]
    assert hand_secs, "the hand schedule was measured and committed"
    assert tuning._mean(records[0].run_secs) <= min(hand_secs)  # never slower than the hand schedule
    want = run(graph, feed)  # type: ignore[arg-type]
    name = graph.outputs[0].name  # type: ignore[attr-defined]
    np.testing.assert_allclose(second.run(feed)[name], want[name], rtol=0, atol=1e-4)


def _same_schedule(record: object, func: object, sch: Schedule) -> bool:
    """Whether ``record``'s trace, replayed on ``func``, gives ``sch``'s module."""
    replay = Schedule(tuning._module(func))  # type: ignore[arg-type]
    record.trace.apply_to_schedule(replay, remove_postproc=False)  # type: ignore[attr-defined]
    try:
        tvm.ir.assert_structural_equal(replay.mod, sch.mod)
    except ValueError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_tuning_measures_through_an_rpc_tracker(tmp_path: Path):
    pytest.importorskip("tornado")
    from tvm.rpc import server, tracker

    tr = tracker.Tracker(host="127.0.0.1", port=_free_port(), port_end=65000, silent=True)
    sv = server.Server(
        host="127.0.0.1", port=_free_port(), port_end=65000, key="accelopt-test", tracker_addr=("127.0.0.1", tr.port),
        silent=True,
    )
    try:
        graph, feed = _linear_graph()
        spec = f"cpu{{tune_trials=2,tuning_db={tmp_path / 'db'},rpc=127.0.0.1:{tr.port}:accelopt-test}}"
        art = _compile(graph, spec)
        assert art.metadata["tuning"]["trials"] == 2
        records = tuning.Database(tmp_path / "db").ms.get_all_tuning_records()
        assert len(records) >= 2 and all(r.run_secs for r in records)
        name = graph.outputs[0].name  # type: ignore[attr-defined]
        np.testing.assert_allclose(art.run(feed)[name], run(graph, feed)[name], rtol=0, atol=1e-4)  # type: ignore[arg-type]
    finally:
        sv.terminate()
        tr.terminate()
