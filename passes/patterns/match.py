"""``MatchResult`` (success or a reason for failing) and ``Match`` (what a rule matched)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.registry import get_op

if TYPE_CHECKING:
    from accelopt.passes.patterns.pattern import Pattern


@dataclass
class MatchResult:
    """Success, or why a match failed: ``MatchResult.fail("softmax axis is 1, expected -1")``.

    ``node`` is the graph node where matching stopped, ``where`` the pattern
    element (``"Where(mask)"``), ``progress`` how many pattern ops had matched
    (used to pick the closest candidate for the report).
    """

    ok: bool = True
    reason: str = ""
    node: str | None = None
    where: str = ""
    progress: int = 0

    @classmethod
    def success(cls) -> MatchResult:
        return cls()

    @classmethod
    def fail(cls, reason: str, *, node: str | None = None, where: str = "", progress: int = 0) -> MatchResult:
        return cls(False, reason, node, where, progress)

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        if self.ok:
            return "matched"
        at = self.where or "?"
        if self.node:
            at += f" in node {self.node}"
        return f"stopped at {at}: {self.reason}"


def as_match_result(value: Any, *, progress: int = 0) -> MatchResult:
    """Normalize what ``check`` returned: None/True = success, False = an unexplained failure."""
    if isinstance(value, MatchResult):
        if not value.ok and value.progress == 0:
            value.progress = progress
        return value
    if value is None or value is True:
        return MatchResult()
    if value is False:
        return MatchResult.fail("check returned False", where="check", progress=progress)
    raise TypeError(f"check must return a MatchResult, bool or None, not {type(value).__name__}")


class Match:
    """The values and nodes a rule matched, by capture name.

    ``m["x"]`` is the value captured as ``x`` (for an op capture: the node's
    matched output); ``m.node("ln")`` the node; ``m.const("eps")`` constant
    data; ``m.attr("sm", "axis")`` an attribute with its registry default.
    ``matched`` lists every graph node the match covers (removed after the
    rewrite when nothing else uses them); ``shared`` those that may keep
    users outside the match.
    """

    def __init__(self, rule: str, graph: Graph, root: Node) -> None:
        self.rule = rule
        self.graph = graph
        self.root = root
        self.values: dict[str, Value] = {}
        self.nodes: dict[str, Node] = {}
        self._matched: dict[int, Node] = {}
        self.shared: set[int] = set()

    # ------------------------------------------------------------- building
    def bind(self, name: str, value: Value) -> None:
        self.values[name] = value

    def add_node(self, node: Node, name: str | None = None, *, shared: bool = False) -> None:
        """Record ``node`` as part of the match (``name`` also captures it)."""
        self._matched[id(node)] = node
        if shared:
            self.shared.add(id(node))
        if name is not None:
            self.nodes[name] = node

    def match(self, pattern: Pattern, value: Value | None) -> MatchResult:
        """Match a sub-pattern against ``value``, extending this match's captures (for imperative matchers)."""
        from accelopt.passes.patterns.pattern import match_into

        return match_into(pattern, value, self)

    def snapshot(self) -> tuple[dict, dict, dict, set]:
        return dict(self.values), dict(self.nodes), dict(self._matched), set(self.shared)

    def restore(self, snap: tuple[dict, dict, dict, set]) -> None:
        self.values, self.nodes, self._matched, self.shared = (dict(snap[0]), dict(snap[1]), dict(snap[2]), set(snap[3]))

    # -------------------------------------------------------------- queries
    @property
    def matched(self) -> list[Node]:
        """Matched nodes in graph order."""
        ids = self._matched
        return [n for n in self.graph.nodes if id(n) in ids]

    @property
    def size(self) -> int:
        return len(self._matched)

    def contains(self, node: Node) -> bool:
        return id(node) in self._matched

    def __getitem__(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        if name in self.nodes:
            return self.nodes[name].outputs[0]
        raise KeyError(f"rule {self.rule}: nothing captured as {name!r}")

    def __contains__(self, name: str) -> bool:
        return name in self.values or name in self.nodes

    def get(self, name: str) -> Value | None:
        return self[name] if name in self else None

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            raise KeyError(f"rule {self.rule}: no node captured as {name!r}")
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray | None:
        """Constant data of the captured value ``name`` (None if it is not constant)."""
        return self.graph.const_value(self[name])

    def scalar(self, name: str) -> float:
        arr = self.const(name)
        if arr is None or arr.size != 1:
            raise ValueError(f"rule {self.rule}: {name!r} is not a constant scalar")
        return float(np.asarray(arr).reshape(-1)[0])

    def attr(self, node_name: str, attr: str) -> Any:
        """An attribute of a captured node, with the op's registry default filled in."""
        node = self.node(node_name)
        return get_op(node.op).full_attrs(node.attrs).get(attr)

    def origins(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.matched)

    def interior_escapes(self) -> list[tuple[Node, str]]:
        """Non-root, non-shared matched nodes whose outputs are used outside the match."""
        out: list[tuple[Node, str]] = []
        graph_outs = {id(v) for v in self.graph.outputs}
        for node in self._matched.values():
            if node is self.root or id(node) in self.shared:
                continue
            for v in node.outputs:
                if id(v) in graph_outs:
                    out.append((node, f"%{v.name} is a graph output"))
                    break
                users = [u for u in v.consumers if id(u) not in self._matched]
                if users:
                    out.append((node, f"%{v.name} is also used by {_names(users)} outside the pattern"))
                    break
        return out

    def __repr__(self) -> str:
        caps = ", ".join(sorted(set(self.values) | set(self.nodes)))
        return f"<Match {self.rule} at {self.root.name}: {caps}>"


def _names(nodes: Iterable[Node]) -> str:
    names = [n.name for n in nodes]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
