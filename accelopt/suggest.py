"""Did-you-mean suggestions for unknown names (passes, groups, options, targets, tolerance keys)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, known: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The known names closest to ``name`` (difflib's ratio >= ``cutoff``), best first."""
    return difflib.get_close_matches(str(name), sorted(set(known)), n=n, cutoff=cutoff)


def did_you_mean(name: str, known: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> str:
    """``"; did you mean 'fuse-gelu'?"`` (or ``'a' or 'b'``) for the closest known names; ``""`` when none is close.

    Meant to follow the "unknown ..." part of a message, before its list of every known name.
    """
    close = close_names(name, known, n=n, cutoff=cutoff)
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {text}?"
