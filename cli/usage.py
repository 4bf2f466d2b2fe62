"""``UsageError``: a bad command line (exit code 2), with an optional hint."""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line (exit code 2), with an optional hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
