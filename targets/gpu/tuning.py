"""MetaSchedule tuning for the gpu target: measured on a GPU, here or behind TVM's RPC tracker.

``gpu{tune_trials=N}`` tunes the legalized module's kernels with
MetaSchedule before scheduling; ``tune_db=DIR`` keeps the database (JSON
records), and a later build with the same kernels reuses it, tuning only
what is missing (``tune_trials=0`` with ``tune_db`` applies the records
alone). Kernels the database covers are reported as scheduled by
``metaschedule``; dlight and accelopt's rules schedule the rest.

Measuring needs a GPU:

1. ``rpc=HOST:PORT:KEY``: MetaSchedule's RPC runner asks TVM's tracker at
   HOST:PORT for a server registered under KEY (``python -m tvm.exec.rpc_tracker``
   and ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` on the
   GPU machine). The tracker is asked first: unreachable, or no server under
   KEY, is a ``TargetError`` before any tuning starts;
2. no ``rpc``: the local GPU; none here is a ``TargetError`` that says to
   give ``rpc``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from accelopt.errors import TargetError
from accelopt.targets.gpu.runtime import NoGpuError, check_gpu
from accelopt.targets.gpu.schedules import ScheduleReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RpcSpec:
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, text: str) -> RpcSpec:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2] or not parts[1].isdigit():
            raise TargetError(f"bad rpc {text!r}: expected HOST:PORT:KEY, e.g. gpu-box:9190:h100")
        return cls(parts[0], int(parts[1]), parts[2])


def check_tracker(rpc: RpcSpec, timeout: float = 10.0) -> dict[str, Any]:
    """Case 1: the tracker answers and has a server under the key; its summary otherwise a ``TargetError``."""
    import socket

    try:
        with socket.create_connection((rpc.host, rpc.port), timeout=timeout):
            pass
    except OSError as e:
        raise TargetError(f"gpu tuning: the RPC tracker {rpc.host}:{rpc.port} is not reachable ({e})") from e
    try:
        summary = tvm.rpc.connect_tracker(rpc.host, rpc.port).summary()
    except Exception as e:  # noqa: BLE001 - TVM's RPC raises its own error types
        raise TargetError(f"gpu tuning: {rpc.host}:{rpc.port} does not answer as a TVM RPC tracker ({e})") from e
    keys = {str(k).split(":")[0] for k in summary.get("queue_info", {})}
    if rpc.key not in keys:
        raise TargetError(
            f"gpu tuning: the tracker {rpc.host}:{rpc.port} has no server under key {rpc.key!r} "
            f"(keys: {', '.join(sorted(keys)) or 'none'})"
        )
    return dict(summary)


def make_runner(rpc: str) -> Any:
    """Cases 1-2: the MetaSchedule runner that measures on a GPU, or ``TargetError`` when none is reachable."""
    from tvm.s_tir import meta_schedule as ms

    if rpc:
        spec = RpcSpec.parse(rpc)
        check_tracker(spec)
        config = ms.runner.RPCConfig(
            tracker_host=spec.host, tracker_port=spec.port, tracker_key=spec.key, session_timeout_sec=120
        )
        return ms.runner.RPCRunner(rpc_config=config)
    try:
        check_gpu("sm_50")
    except NoGpuError as e:
        raise TargetError(
            f"gpu tuning measures kernels on a GPU and this machine has none ({e}); "
            "tune through TVM's RPC tracker instead: gpu{tune_trials=N,rpc=HOST:PORT:KEY}"
        ) from e
    return "local"


def tune(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path, trials: int, rpc: str) -> Any:
    """Tune ``mod``'s kernels for up to ``trials`` measurements in all; returns the (reused) database."""
    from tvm.s_tir import meta_schedule as ms

    runner = make_runner(rpc)
    work_dir.mkdir(parents=True, exist_ok=True)
    log.info("gpu tuning: %d trials, database %s", trials, work_dir)
    return ms.relax_integration.tune_relax(
        mod, {}, target, str(work_dir), max_trials_global=int(trials), runner=runner, database="json"
    )


def open_database(work_dir: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    if not (work_dir / "database_workload.json").is_file():
        raise TargetError(f"{work_dir} holds no MetaSchedule database (database_workload.json)")
    return ms.database.JSONDatabase(work_dir=str(work_dir))


def apply_database(mod: tvm.IRModule, target: tvm.target.Target, database: Any, report: ScheduleReport) -> Any:
    """Schedule the kernels the database has records for; report them as ``metaschedule``."""
    before = {g.name_hint for g, f in mod.functions_items() if _scheduled(f)}
    with target, database:
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    for g, f in mod.functions_items():
        if _scheduled(f) and g.name_hint not in before:
            report.rules[g.name_hint] = "metaschedule"
    return mod


def _scheduled(f: Any) -> bool:
    return isinstance(f, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in f.attrs and int(f.attrs["tirx.is_scheduled"]) == 1
