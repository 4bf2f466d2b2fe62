"""The pass manager's bookkeeping: pipeline units, the run's position and the passes whose checks are pending.

Kept apart from ``accelopt.passmanager`` (which runs them) so that each file
holds one concern; ``PassGroup`` is re-exported there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass
from accelopt.records import AccuracyRecord, PassRecord


class LocalValidator(Protocol):
    """What case 7 of the pass manager needs from a validator beyond ``check`` (``accelopt.validation.Validator``)."""

    def check(
        self, graph: Graph, *, family: str, previous: Graph | None = None, tolerance: Any = None
    ) -> AccuracyRecord: ...

    def check_chain(self, graphs: Sequence[Graph], families: Sequence[str]) -> list[Any]: ...

    def tolerance_for(self, family: str) -> dict[str, float]: ...


DEFAULT_MAX_ROUNDS = 10
#: pending passes may add at least this many bytes of constants before they are checked (case 7)
PENDING_MIN_BYTES = 256 << 20


@dataclass
class PassGroup:
    """Passes run as one unit; with ``fixed_point`` they repeat until no pass modifies the graph."""

    passes: list[Pass]
    fixed_point: bool = False
    name: str = "group"
    max_rounds: int = DEFAULT_MAX_ROUNDS


@dataclass
class Unit:
    passes: list[Pass]
    fixed_point: bool
    label: str
    max_rounds: int


@dataclass
class Cursor:
    """Where a run is: unit, round and pass index; whether this round changed the graph; passes so far."""

    unit: int = 0
    round: int = 1
    index: int = 0
    changed: bool = False
    total: int = 0


@dataclass
class Step:
    """One pass run whose record is not finished yet (its check may be pending)."""

    pass_: Pass
    cursor: Cursor  # the position before it ran
    old: Graph
    new: Graph  # its result; ``old`` when it changed nothing or was rolled back
    rec: PassRecord
    history: int = 0  # length of the run's history once it ran
    local: bool = False  # awaits a local check (case 7)
    new_bytes: int = 0  # bytes of constants it added
    rejected: Graph | None = None  # a rolled-back result, for the on_rollback hook


@dataclass
class RunState:
    history: list[str] = field(default_factory=list)
    records: list[PassRecord] = field(default_factory=list)
    accuracy: AccuracyRecord | None = None
    done: int = 0
    total: int = 0


def new_constant_bytes(old: Graph, new: Graph) -> int:
    """Bytes of the constants of ``new`` that ``old`` does not hold (by identity)."""
    held = {id(v.const) for v in old.initializers.values()}
    return sum(int(v.const.nbytes) for v in new.initializers.values() if v.const is not None and id(v.const) not in held)


def brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {metrics[k]:.3g}" for k in ("max_abs", "cosine_min") if k in metrics) or "-"


def one_line(text: str) -> str:
    return " ".join(text.split())


def hist(history: Sequence[str]) -> str:
    return ", ".join(history) if history else "none"


def options_dict(options: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(options):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        v = getattr(options, f.name)
        if isinstance(v, (tuple, frozenset, set)):
            v = list(v)
        elif not isinstance(v, (str, int, float, bool, list, dict)) and v is not None:
            v = str(v)
        out[f.name] = v
    return out
