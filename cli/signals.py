"""SIGTERM and SIGHUP end ``optimize`` the way Ctrl-C does: cleaned up, with a documented exit code.

``timeout``, CI runners, Kubernetes and systemd stop a process with SIGTERM
(a closed terminal sends SIGHUP). Python's default for both is to die on the
spot, which left the ``.OUTDIR.partial-*`` staging folder behind. While
``unwind_on_signals()`` is active (the whole command), either signal raises
``Terminated`` in the main thread; it unwinds like ``KeyboardInterrupt``
(a ``BaseException``), so the staging folder is removed and a previous OUTDIR
is kept, and ``main`` exits with ``128 + signal number`` (143 for SIGTERM, 129
for SIGHUP), the shell's convention. Further signals are ignored while the
command unwinds, so a second SIGTERM cannot cut the cleanup short. The
previous handlers come back when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: the signals that unwind the command (SIGHUP where the platform has it)
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM,) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())


class Terminated(BaseException):
    """A SIGTERM or SIGHUP arrived; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def unwind_on_signals() -> Iterator[None]:
    """Raise ``Terminated`` on SIGTERM/SIGHUP inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        for s in SIGNALS:  # the cleanup that follows runs to its end
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous: dict[signal.Signals, Any] = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
