"""``CpuArtifact``: the cpu target's compiled library, parameters and metadata (a ``RelaxArtifact``).

Beyond the Relax artifact's files and run logic (``accelopt.targets.relax.artifact``):

1. metadata.json records the ``mcpu`` the library was compiled for and the
   CPU features its code uses (``cpu.features``); ``load`` and ``run`` refuse
   (``TargetError``) on a CPU that lacks any of them, naming them and the
   option to compile for this CPU instead; ``cannot_run_here`` says the same
   without raising (``optimize`` then writes the artifact unrun, with a note).
2. Threads: the TVM runtime uses one thread here unless told; the artifact
   configures its thread pool before the first run with ``num_threads``
   workers (the run argument, else the compile-time option, else one per
   physical core this process may use), each pinned to its own core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tvm

from accelopt.errors import TargetError
from accelopt.targets.base import register_artifact
from accelopt.targets.cpu import host
from accelopt.targets.relax.artifact import RelaxArtifact

log = logging.getLogger(__name__)

FORMAT = "accelopt-cpu-artifact"
#: TVM's thread-pool affinity mode "every worker on its own listed CPU"
_ONE_CORE_PER_THREAD = -2


class CpuArtifact(RelaxArtifact):
    """A library compiled by the cpu target; runs on this CPU through the Relax VM."""

    target_name: ClassVar[str] = "cpu"
    format: ClassVar[str] = FORMAT
    version: ClassVar[int] = 1

    def __init__(self, *args: Any, num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_threads = num_threads

    def cannot_run_here(self) -> str | None:
        """Case 1: why this CPU cannot run the library (features it lacks), or None.

        ``optimize`` asks before its final check, so compiling for another CPU
        (``cpu{mcpu=sapphirerapids}`` here) writes the artifact with a note.
        """
        cpu = self.metadata.get("cpu", {})
        missing = host.missing_features(cpu.get("features", []))
        if not missing:
            return None
        return (
            f"compiled for mcpu {cpu.get('mcpu')!r}, whose code uses CPU feature(s) {', '.join(missing)} that this "
            f"CPU ({host.detect_mcpu()}) lacks; compile it here, or for this CPU with --target "
            f"cpu{{mcpu={host.detect_mcpu()}}}"
        )

    def check_host(self) -> None:
        """Case 1: ``TargetError`` from ``load`` and ``run`` on a CPU that lacks a needed feature."""
        why = self.cannot_run_here()
        if why:
            raise TargetError(f"{self.source}: {why}")

    def threads(self) -> int:
        """Case 2: the worker count the next run uses."""
        n = self.num_threads or int(self.metadata.get("cpu", {}).get("num_threads") or 0)
        return n if n > 0 else len(host.physical_cores())

    def prepare(self) -> None:
        configure_threads(self.threads())

    def run(self, inputs: Mapping[str, np.ndarray], *, num_threads: int | None = None) -> dict[str, np.ndarray]:
        if num_threads is not None:
            if num_threads < 1:
                raise TargetError(f"num_threads must be at least 1, got {num_threads}")
            self.num_threads = num_threads
        configure_threads(self.threads())  # cached per calling thread: free after the first run
        return super().run(inputs)

    def summary(self) -> list[str]:
        """Report lines: CPU, threads, buckets, parameters, compile time, which rules scheduled the kernels."""
        m = self.metadata
        cpu = m.get("cpu", {})
        lines = [
            f"CPU target: mcpu {cpu.get('mcpu')} ({', '.join(cpu.get('features', [])) or 'baseline'}), "
            f"{self.threads()} thread(s), kernels {m.get('kernels', 'generic')}",
            f"buckets: {', '.join(b['name'] for b in self.buckets)}; parameters {self.parameter_bytes / 1e6:.1f} MB "
            "outside the library",
            "compile: " + ", ".join(f"{k} {v:.1f} s" for k, v in m.get("seconds", {}).items()),
            "schedules: " + ", ".join(f"{k} {v}" for k, v in m.get("schedule", {}).get("counts", {}).items()),
        ]
        lines.extend(f"note: {n}" for n in m.get("notes", []))
        return lines

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["summary"] = self.summary()
        out.get("schedule", {}).pop("functions", None)
        return out


#: thread id -> worker count last configured (TVM's thread pool belongs to the calling thread)
_configured: dict[int, int] = {}


def configure_threads(n: int) -> None:
    """Case 2: ``n`` TVM worker threads, one per physical core (round-robin when ``n`` exceeds them)."""
    me = threading.get_ident()
    if _configured.get(me) == n:
        return
    cores = host.physical_cores()
    cpus = [str(cores[i % len(cores)]) for i in range(max(1, n))]
    tvm.get_global_func("runtime.config_threadpool")(_ONE_CORE_PER_THREAD, len(cpus), cpus)
    _configured[me] = n
    log.debug("TVM thread pool: %d worker(s) on CPU(s) %s", len(cpus), ", ".join(cpus))


register_artifact(FORMAT, CpuArtifact)
