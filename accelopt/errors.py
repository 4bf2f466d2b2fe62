"""The accelopt error hierarchy.

Every user-facing failure raises one of these, chained with ``from e`` where
another exception caused it. Messages name the file, node and op involved.
"""

from __future__ import annotations


class AccelOptError(Exception):
    """Base class of every error accelopt raises on purpose; ``hint`` (optional) says what to do about it."""

    def __init__(self, *args: object, hint: str = "") -> None:
        super().__init__(*args)
        self.hint = hint


class FrontendError(AccelOptError):
    """A model could not be imported (missing/corrupt file, unsupported op...)."""


class VerifyError(AccelOptError):
    """A graph broke an IR invariant (types, order, dangling uses).

    ``nodes`` names the nodes the problems were found at (in graph order, each once).
    """

    def __init__(self, message: str, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


class ParseError(AccelOptError):
    """The text form of a graph could not be parsed."""


class PassError(AccelOptError):
    """A pass failed, or a pipeline spec / pass option is invalid."""


class PassOptionError(PassError):
    """A pass's options do not fit the model (e.g. they name a node it does not have).

    Raised by a pass while it runs; unlike any other failure inside a pass, it
    ends the run (the user asked for something impossible) instead of rolling
    the pass back.
    """


class ValidationError(AccelOptError):
    """Validation inputs or tolerances are invalid."""


class TargetError(AccelOptError):
    """A target could not lower or run a graph."""


class InterpreterError(AccelOptError):
    """The reference interpreter could not run a node (``node``: its name, when one failed)."""

    def __init__(self, *args: object, node: str = "", hint: str = "") -> None:
        super().__init__(*args, hint=hint)
        self.node = node
