"""Shared helpers for the benchmark scripts: timing medians, peak memory, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def interleaved_ms(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int = 4,
    repeat: int = 5,
    warmup: int = 3,
    settle_s: float = 0.3,
) -> dict[str, float]:
    """Median wall time (ms) of each function, in alternating blocks.

    Every round runs each function ``repeat`` times in a block; blocks alternate, so load
    from elsewhere on the machine hits all of them alike. Before each block the machine
    settles for ``settle_s`` and the block's first run is not counted: a runtime's worker
    threads keep spinning for a while after it returns (OpenBLAS, OpenMP, onnxruntime's
    pool), and timing the next runtime while they do slows it by up to 1.4x (measured:
    onnxruntime 185 ms right after the interpreter, 127 ms after a pause).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle_s)
            fn()
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {platform.system()}"


def run_isolated(code: str, *args: str) -> str:
    """Run a snippet in a fresh interpreter (for peak-memory figures) and return its stdout."""
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return res.stdout.strip()
