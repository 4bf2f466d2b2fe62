"""``optimize --list-passes`` and ``--list-targets``: readable in a narrow terminal and through a pipe.

1. Not a terminal (a pipe, a file, CI logs): one line per pass, target and
   group, never wrapped, so ``grep`` and ``less`` see whole entries.
2. A terminal: entries wrap at the console width on word boundaries, and a
   long option list breaks after a ``,`` or a ``+`` (the separators of the
   spec syntax), never inside a name; continuation lines are indented.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

#: where an options line may break: after ", " or "+"
_BREAK = re.compile(r"(?<=, )|(?<=\+)")


def wrap(text: str, width: int, *, indent: int, first: int | None = None) -> list[str]:
    """``text`` in lines of at most ``width`` columns (a single token longer than that stays whole).

    Breaks at spaces, after ``", "`` and after ``"+"``; the first line starts at
    column ``first`` (default ``indent``), the others at ``indent``; when not even
    the first token fits on the first line, that line is empty.
    """
    pieces = [p for chunk in re.split(r"(?<= )", text) for p in _BREAK.split(chunk) if p]
    lines: list[str] = []
    line, col = "", indent if first is None else first
    for p in pieces:
        if col + len(p.rstrip()) > width and (line or col > indent):  # a first line with no room starts empty
            lines.append(line.rstrip())
            line, col = "", indent
        line += p
        col += len(p)
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _print(console: Any, text: Any) -> None:
    console.print(text, soft_wrap=True)  # our line breaks only; the terminal does no extra wrapping


def list_passes(console: Any) -> None:
    """Every registered pass with its family, what it does and its options (defaults in spec syntax)."""
    from rich.text import Text

    from accelopt.passes.base import _format_option, registered_groups, registered_passes

    tty = console.is_terminal
    width = max(console.width, 40)
    note = "(options as in --passes 'name{key=value,...}', with defaults)"
    lines = [note] if not tty else wrap(note, width, indent=2, first=8)
    _print(console, Text.assemble(("passes", "bold"), "  ", lines[0]))
    for line in lines[1:]:
        _print(console, Text("  " + line))
    for name, cls in sorted(registered_passes().items()):
        defaults = cls.Options()
        opts = ", ".join(f"{f.name}={_format_option(getattr(defaults, f.name))}" for f in dataclasses.fields(cls.Options))
        head = Text.assemble("  ", (name, "bold"), " ", (f"({cls.family})", "dim"), "  ")
        if not tty:  # case 1
            _print(console, head + Text(cls.describe()) + (Text(f"  [{opts}]", style="dim") if opts else Text()))
            continue
        desc = wrap(cls.describe(), width, indent=6, first=len(head))  # case 2
        first = head + Text(desc[0] if desc else "")
        first.rstrip()
        _print(console, first)
        for line in desc[1:]:
            _print(console, Text(" " * 6 + line))
        for line in wrap(opts, width, indent=6):
            _print(console, Text(" " * 6 + line, style="dim"))
    _print(console, Text("\ngroups", style="bold"))
    for name, members in sorted(registered_groups().items()):
        head = Text.assemble("  ", (name, "bold"), " = ")
        lines = [", ".join(members)] if not tty else wrap(", ".join(members), width, indent=6, first=len(head))
        _print(console, head + Text(lines[0]))
        for line in lines[1:]:
            _print(console, Text(" " * 6 + line))


def list_targets(console: Any) -> None:
    """Every target: built or not, its default passes and what it is."""
    from rich.text import Text

    from accelopt.targets.base import list_targets as _targets

    width = max(console.width, 40)
    _print(console, Text("targets", style="bold"))
    for info in _targets():
        status = Text("built", style="green") if info.built else Text("not built yet", style="yellow")
        head = Text.assemble("  ", (info.name, "bold"), "  [", status, "]  default passes: ", info.default_passes or "-")
        if not console.is_terminal:  # case 1
            _print(console, head + Text("  " + info.summary))
            continue
        name = Text.assemble("  ", (info.name, "bold"), "  ")  # case 2
        rest = f"[{status.plain}]  default passes: {info.default_passes or '-'}  {info.summary}"
        lines = wrap(rest, width, indent=6, first=len(name))
        first = name + Text(lines[0])
        first.rstrip()
        _print(console, first)
        for line in lines[1:]:
            _print(console, Text(" " * 6 + line))
