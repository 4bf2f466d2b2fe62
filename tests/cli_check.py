"""Shared pieces of the command-line tests: run ``optimize`` in-process, find temporary leftovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accelopt.cli.main import main


def run(argv: list[Any], capsys: pytest.CaptureFixture[str], **kw: Any) -> tuple[int, str, str]:
    """``main`` on ``argv`` (each item through ``str``): the exit code, stdout and stderr."""
    rc = main([str(a) for a in argv], **kw)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def leftovers(parent: Path) -> list[str]:
    """Names of the temporary folders a run leaves in ``parent`` (``.partial-*``, ``.old-*``)."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def assert_no_output(out: Path) -> None:
    """No output folder ``out``, and no temporary leftovers beside it."""
    assert not out.exists()
    assert leftovers(out.parent) == []
