"""Pass infrastructure: ``Pass``, ``PassResult``, ``PassContext``, the pass registry and pipeline specs.

A pass has a ``name``, options as a frozen dataclass (``Options``), and
``run(graph, ctx) -> PassResult(graph, modified)``. ``modified`` is exact: it
is True if and only if the graph's text form changed.

Pipeline specs round-trip::

    >>> specs = parse_pipeline("fuse,int8{calibration=percentile,percentile=99.99},gelu-tanh")
    >>> format_pipeline(specs)
    'fuse,int8{calibration=percentile,percentile=99.99},gelu-tanh'

Group aliases (``fuse``, ``cleanup``, ...) name a list of passes and are
expanded when a pipeline is built, so a report's pipeline line reproduces the
run as long as the group definitions stay the same.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from accelopt.errors import PassError
from accelopt.ir.graph import Graph
from accelopt.suggest import did_you_mean

log = logging.getLogger(__name__)

#: Pass families; validation tolerances are chosen per family.
FAMILIES = ("cleanup", "fusion", "layout", "approximation", "quantization", "precision", "test")


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


@dataclass
class PassResult:
    """What a pass returns. ``stats`` holds rule match counts and other figures for the report."""

    graph: Graph
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)
    #: explanations of rules that did not match (closest candidate and the failed check)
    near_misses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Pass:
    """Base class of all passes. Subclasses set ``name``, ``family``, ``Options`` and implement ``run``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "cleanup"
    Options: ClassVar[type] = NoOptions
    #: documentation shown by ``optimize --list-passes`` (first line of the docstring if empty)
    summary: ClassVar[str] = ""

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is None:
            options = self.Options(**kwargs)
        elif kwargs:
            options = dataclasses.replace(options, **kwargs)
        self.options = options
        #: set by ``build_pipeline`` on passes expanded from a group element (``cleanup``)
        self.group: GroupRun | None = None

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def spec(self) -> PassSpec:
        """The spec that recreates this pass: options that differ from their defaults."""
        default = self.Options()
        opts = {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(self.options)
            if getattr(self.options, f.name) != getattr(default, f.name)
        }
        return PassSpec(self.name, {k: _format_option(v) for k, v in opts.items()})

    @classmethod
    def describe(cls) -> str:
        if cls.summary:
            return cls.summary
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def __repr__(self) -> str:
        return f"<Pass {self.spec}>"


# ------------------------------------------------------------------ context
class Validator(Protocol):
    """Checks a candidate graph against the reference (implemented in accelopt.validation)."""

    def check(self, graph: Graph, *, family: str, previous: Graph | None = None) -> Any: ...


@dataclass
class PassContext:
    """All configuration of a run. Passes read it; nothing lives in globals or env vars.

    ``target`` is the target's capability descriptor (or None), ``validator``
    checks accuracy after each pass (None disables validation), ``calibration``
    holds sample inputs (a list of input dicts) for passes that need data.
    """

    target: Any = None
    validator: Validator | None = None
    calibration: list[dict[str, Any]] | None = None
    instruments: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    #: called with (done, total, description) as passes progress; the CLI draws a bar with it
    progress: Callable[[int, int, str], None] | None = None


# ----------------------------------------------------------------- registry
_PASSES: dict[str, type[Pass]] = {}
_GROUPS: dict[str, list[str]] = {}
_FIXED_POINT_GROUPS: set[str] = set()


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _PASSES or cls.name in _GROUPS:
        raise ValueError(f"pass name {cls.name!r} is already registered")
    if cls.family not in FAMILIES:
        raise ValueError(f"pass {cls.name!r}: unknown family {cls.family!r}")
    _PASSES[cls.name] = cls
    return cls


def register_group(name: str, members: Sequence[str], *, fixed_point: bool = False) -> None:
    """A group alias expands to several passes (``fuse`` = all fusions).

    ``fixed_point=True`` makes the pass manager repeat the group's passes until
    none of them modifies the graph (``cleanup``).
    """
    if name in _PASSES:
        raise ValueError(f"group name {name!r} clashes with a pass")
    _GROUPS[name] = list(members)
    if fixed_point:
        _FIXED_POINT_GROUPS.add(name)
    else:
        _FIXED_POINT_GROUPS.discard(name)


def group_is_fixed_point(name: str) -> bool:
    _ensure_loaded()
    return name in _FIXED_POINT_GROUPS


def _ensure_loaded() -> None:
    import accelopt.passes.library  # noqa: F401  (registers every built-in pass)


def registered_passes() -> dict[str, type[Pass]]:
    _ensure_loaded()
    return dict(_PASSES)


def registered_groups() -> dict[str, list[str]]:
    _ensure_loaded()
    return {k: list(v) for k, v in _GROUPS.items()}


def get_pass_class(name: str) -> type[Pass]:
    _ensure_loaded()
    if name not in _PASSES:
        names = sorted(_PASSES) + sorted(_GROUPS)
        raise PassError(f"unknown pass {name!r}{did_you_mean(name, names)}; known passes and groups: {', '.join(names)}")
    return _PASSES[name]


# ------------------------------------------------------------ pipeline specs
@dataclass(frozen=True)
class PassSpec:
    """One element of a pipeline string: a pass or group name and its options as strings."""

    name: str
    options: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + "{" + ",".join(f"{k}={v}" for k, v in self.options.items()) + "}"


_SPEC_RE = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[PassSpec]:
    """Parse ``a,b{k=v,k2=v2},c`` into specs (syntax only; names are checked by ``build_pipeline``)."""
    specs: list[PassSpec] = []
    pos = 0
    text = text.strip()
    if not text:
        return specs
    while pos < len(text):
        m = _SPEC_RE.match(text, pos)
        if not m or m.end() == pos:
            raise PassError(f"bad pipeline spec {text!r} at character {pos}: expected name or name{{key=value,...}}")
        opts: dict[str, str] = {}
        if m.group(3) is not None:
            for item in filter(None, (s.strip() for s in m.group(3).split(","))):
                if "=" not in item:
                    raise PassError(f"bad option {item!r} for {m.group(1)!r} in {text!r}: expected key=value")
                k, v = (s.strip() for s in item.split("=", 1))
                opts[k] = v
        specs.append(PassSpec(m.group(1), opts))
        pos = m.end()
    return specs


@dataclass(frozen=True, eq=False)
class GroupRun:
    """Tags the passes expanded from one group element of a pipeline (compared by identity)."""

    spec: PassSpec
    fixed_point: bool = False


def format_pipeline(specs: Sequence[PassSpec | Pass]) -> str:
    """The pipeline string; consecutive passes expanded from one group print as that group element."""
    parts: list[str] = []
    last_group: GroupRun | None = None
    for s in specs:
        group = s.group if isinstance(s, Pass) else None
        if group is not None:
            if group is not last_group:
                parts.append(str(group.spec))
            last_group = group
            continue
        last_group = None
        parts.append(str(s.spec if isinstance(s, Pass) else s))
    return ",".join(parts)


def _format_option(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list, frozenset)):
        return "+".join(str(x) for x in v)
    return str(v)


def _convert_option(pass_name: str, f: dataclasses.Field, raw: str) -> Any:
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if typ == "bool":
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ.startswith(("tuple", "frozenset")):
            return tuple(x for x in raw.split("+") if x)
        if typ.startswith(("float | None", "int | None")):
            return None if raw.lower() == "none" else (float(raw) if typ.startswith("float") else int(raw))
        return raw
    except ValueError as e:
        raise PassError(f"pass {pass_name!r}: bad value {raw!r} for option {f.name!r} ({typ}): {e}") from None


def make_pass(spec: PassSpec) -> Pass:
    """Instantiate one pass from a spec, converting and checking its options."""
    cls = get_pass_class(spec.name)
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    kwargs: dict[str, Any] = {}
    for key, raw in spec.options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise PassError(f"pass {spec.name!r} has no option {key!r}{did_you_mean(key, fields)}; its options: {known}")
        kwargs[key] = _convert_option(spec.name, fields[key], raw)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PassError(f"pass {spec.name!r}: {e}") from e


def build_pipeline(spec: str | Sequence[PassSpec]) -> list[Pass]:
    """Expand groups and instantiate passes. Options given to a group apply to each member that has them."""
    _ensure_loaded()
    specs = parse_pipeline(spec) if isinstance(spec, str) else list(spec)
    out: list[Pass] = []
    for s in specs:
        if s.name in _GROUPS:
            tag = GroupRun(s, fixed_point=s.name in _FIXED_POINT_GROUPS)
            for member in _GROUPS[s.name]:
                cls = get_pass_class(member)
                names = {f.name for f in dataclasses.fields(cls.Options)}
                opts = {k: v for k, v in s.options.items() if k in names}
                p = make_pass(PassSpec(member, opts))
                p.group = tag
                out.append(p)
            options = {f.name for m in _GROUPS[s.name] for f in dataclasses.fields(get_pass_class(m).Options)}
            unused = sorted(set(s.options) - options)
            if unused:
                raise PassError(
                    f"group {s.name!r} has no option {unused[0]!r}{did_you_mean(unused[0], options)}; "
                    f"its passes' options: {', '.join(sorted(options)) or 'none'}"
                )
        else:
            out.append(make_pass(s))
    return out
