"""TVM's C++ log lines, taken off the process's stderr and sent to ``logging``.

TVM's C++ code writes ``LOG(WARNING)`` lines straight to file descriptor 2, past
Python's ``sys.stderr`` and so past the CLI's console. TVM 0.27 writes one such
line for every Relax constant of a VM executable, each time it is saved or
loaded (``vm/executable.cc``: "Scope Saving:" / "Scope Loaded:" followed by the
constant's empty memory scope; every ``relax.Constant`` carries a default
``VDevice``), which is noise to a user running ``optimize`` or ``optimize bench``.

``native_stderr_to_log`` wraps the few calls that save or load a library: it
points descriptor 2 at a temporary file for the call, then drops the lines known
to be noise and logs every other line as a warning of this module's logger, so
nothing TVM says is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: lines TVM writes that say nothing to a user
NOISE = (re.compile(r"vm/executable\.cc:\d+: Warning: Scope (Saving|Loaded):"),)


def forward(text: str, what: str) -> list[str]:
    """Log the lines of ``text`` that are not noise (blank lines dropped); returns them."""
    kept = [line for line in text.splitlines() if line.strip() and not any(p.search(line) for p in NOISE)]
    for line in kept:
        log.warning("%s: %s", what, line)
    return kept


@contextlib.contextmanager
def native_stderr_to_log(what: str) -> Iterator[None]:
    """Capture descriptor 2 while the block runs; then ``forward`` what was written (``what`` names the call)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            forward(tmp.read().decode("utf-8", errors="replace"), what)
