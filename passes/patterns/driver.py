"""The rewrite driver: applies a list of rules to a graph until none matches.

For every node (in order) and every rule that accepts it, the driver finds a
match, runs ``check``, calls ``rewrite``, points the root's users at the
replacement values, and removes the matched nodes (and initializers) that are
now dead. It sweeps the graph again while something changed, then refreshes
the stored types downstream of the rewrites (``refine_types``: a replacement
may know its shape better than the value it replaced). It counts candidates
and matches per rule and keeps, for each rule, the failed candidate that got
furthest, so the report can say why a fusion did not happen.

Candidates and near misses (the contract every rule follows):

1. A node a rule accepts (``rule.accepts``: its root op) is examined.
2. It counts as a **candidate** when the rule matched it, when its failure
   got at least ``rule.min_progress`` pattern nodes deep (``near_miss_min``;
   a ``MatchResult.fail(..., progress=n)`` from ``check`` or an imperative
   ``match`` says how deep), or when the rewrite declined after a complete
   match. A shallow failure (a residual ``Add`` examined by a bias-fusion
   rule) is not a candidate.
3. Every candidate yields a match or a **reason**: ``stats[rule]`` has
   ``candidates == matched + near_misses``, ``RewriteOutcome.reasons[rule]``
   maps each unmatched candidate to where and why it stopped (the driver
   fills in a reason a rule left empty), and every rule with an unmatched
   candidate gets one near-miss line naming the closest one. A report never
   says "0 of 2 matched" without saying where the closest match stopped.
4. A rule whose every root is a real candidate (one anchored on ``Softmax``)
   sets ``near_miss_min = 1``; a peephole rule whose misses are the normal
   case (remove-noops examines every ``Reshape``) sets it out of reach, so
   only its matches count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelopt.errors import PassError
from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.refine import refine_types
from accelopt.ir.types import shapes_compatible
from accelopt.passes.base import Pass, PassContext, PassResult
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.rule import Rewriter, Rule

log = logging.getLogger(__name__)

DEFAULT_MAX_SWEEPS = 16


@dataclass
class RewriteOutcome:
    """What ``apply_rules`` did: ``stats`` is ``{rule: {"candidates": n, "matched": m, "near_misses": k}}``.

    ``candidates == matched + near_misses`` for every rule (``near_misses`` only
    when not 0), and ``reasons[rule]`` holds one reason per near miss, so a
    counted candidate always yields a match or a reason (see the module docstring).
    """

    modified: bool = False
    rewrites: int = 0
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    near_misses: list[str] = field(default_factory=list)
    failures: dict[str, MatchResult] = field(default_factory=dict)  # rule -> closest failure
    reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # rule -> node -> where and why it stopped


def replace_value(graph: Graph, old: Value, new: Value) -> bool:
    """Point every use of ``old`` at ``new``; a graph output keeps its name (``new`` is renamed).

    Returns False (and changes nothing) when that is impossible: ``old`` is a
    graph output and ``new`` is a graph input or already a graph output.
    """
    if old is new:
        return False
    is_output = any(o is old for o in graph.outputs)
    if is_output and (new.is_input or any(o is new for o in graph.outputs)):
        return False
    old.replace_all_uses_with(new)
    if is_output:
        name = old.name
        graph.rename_value(old, graph.unique_name(name + "_replaced"))
        graph.rename_value(new, name)
    return True


def replace_node(graph: Graph, node: Node, new: Value) -> None:
    """Replace single-output ``node`` by ``new``, which takes over its output's uses and name.

    1. Every use of the output moves to ``new`` (``replace_value``; a graph output keeps its name).
    2. ``node`` is removed, and ``new`` is renamed to the old output's name unless a graph output
       already holds that name.
    3. The initializers ``node`` read that nothing uses any more are removed.
    """
    old = node.outputs[0]
    name = old.name
    replace_value(graph, old, new)
    consts = [v for v in node.inputs if v is not None and v.is_const]
    graph.remove_node(node)
    if new.name != name and all(o.name != name for o in graph.outputs):
        graph.rename_value(new, name)
    for v in consts:
        if not v.uses and graph.initializers.get(v.name) is v and v not in graph.outputs:
            graph.remove_initializer(v.name)


def remove_dead(graph: Graph, nodes: Sequence[Node]) -> int:
    """Remove those of ``nodes`` (and the initializers they used) that nothing uses any more."""
    removed = 0
    consts: dict[int, Value] = {}
    outs = {id(v) for v in graph.outputs}
    for node in sorted((n for n in nodes if n.graph is graph), key=graph.nodes.index, reverse=True):
        if any(v.uses or id(v) in outs for v in node.outputs):
            continue
        for v in node.inputs:
            if v is not None and v.is_const and v.name in graph.initializers:
                consts[id(v)] = v
        graph.remove_node(node)
        removed += 1
    for v in consts.values():
        if not v.uses and id(v) not in outs and graph.initializers.get(v.name) is v:
            graph.remove_initializer(v.name)
    return removed


def _normalize(result: Any, root: Node, rule: Rule) -> list[Value | None] | None:
    if result is None:
        return None
    if isinstance(result, Value):
        result = [result]
    values = list(result)
    if len(values) > len(root.outputs):
        raise PassError(f"rule {rule.name}: rewrite returned {len(values)} values for {len(root.outputs)} outputs")
    values += [None] * (len(root.outputs) - len(values))
    return values


def _apply(graph: Graph, rule: Rule, m: Match, pass_name: str) -> MatchResult:
    root = m.root
    rw = Rewriter(graph, m, pass_name, rule.name)
    values = _normalize(rule.rewrite(rw, m), root, rule)
    if values is None or all(v is None for v in values):
        rw.undo()
        return MatchResult.fail(
            "rewrite declined", node=root.name, where="rewrite", progress=max(m.size, rule.min_progress)
        )
    outs = {id(v) for v in graph.outputs}
    for old, new in zip(root.outputs, values):
        if new is None:
            continue
        if new.type.dtype != old.type.dtype or not shapes_compatible(new.type.shape, old.type.shape):
            rw.undo()
            raise PassError(
                f"rule {rule.name} ({rule.defined_at}) replaced %{old.name}: {old.type} "
                f"with %{new.name}: {new.type} at node {root.name}"
            )
        if id(old) in outs and (new.is_input or id(new) in outs):
            rw.undo()
            return MatchResult.fail(
                f"output %{old.name} is a graph output and its replacement %{new.name} is a graph "
                "input or output, so the interface would change",
                node=root.name,
                where="rewrite",
                progress=max(m.size, rule.min_progress),  # the rule agreed, the graph could not take it
            )
    for old, new in zip(root.outputs, values):
        if new is not None:
            replace_value(graph, old, new)
    remove_dead(graph, m.matched)
    return MatchResult()


def apply_rules(
    graph: Graph,
    rules: Sequence[Rule],
    *,
    pass_name: str = "",
    max_sweeps: int = DEFAULT_MAX_SWEEPS,
) -> RewriteOutcome:
    """Apply ``rules`` to ``graph`` in place until nothing matches (or ``max_sweeps``)."""
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise PassError(f"pass {pass_name}: duplicate rule names in {names}")
    out = RewriteOutcome(stats={r.name: {"candidates": 0, "matched": 0} for r in rules})
    misses: dict[str, dict[str, MatchResult]] = {r.name: {} for r in rules}
    for sweep in range(max_sweeps):
        applied = 0
        for node in list(graph.nodes):
            for rule in rules:
                if node.graph is not graph:
                    break
                if not rule.accepts(node):
                    continue
                found = rule.find(graph, node)
                if isinstance(found, MatchResult):
                    misses[rule.name][node.name] = found
                    continue
                matched_names = [n.name for n in found.matched]
                res = _apply(graph, rule, found, pass_name)
                if not res.ok:
                    misses[rule.name][node.name] = res
                    continue
                applied += 1
                out.stats[rule.name]["matched"] += 1
                for miss in misses.values():
                    for n in matched_names:
                        miss.pop(n, None)
                log.debug("%s: rule %s rewrote %s", pass_name, rule.name, ", ".join(matched_names))
        out.rewrites += applied
        if not applied:
            break
        if sweep == max_sweeps - 1:
            log.warning("%s: rules still matching after %d sweeps; stopped", pass_name, max_sweeps)
    if out.rewrites:
        graph.toposort()
        refine_types(graph)  # a replacement's more precise type reaches the values computed from it
    out.modified = out.rewrites > 0
    live = {n.name for n in graph.nodes}
    for rule in rules:
        s = out.stats[rule.name]
        pending = {k: _explained(v, rule) for k, v in misses[rule.name].items() if k in live}
        pending = {k: v for k, v in pending.items() if v.progress >= rule.min_progress}
        s["candidates"] = s["matched"] + len(pending)
        if not pending:
            continue
        s["near_misses"] = len(pending)
        out.reasons[rule.name] = {k: v.describe() for k, v in pending.items()}
        node_name, best = max(pending.items(), key=lambda kv: kv[1].progress)
        out.failures[rule.name] = best
        out.near_misses.append(
            f"{rule.name}: {s['matched']} of {s['candidates']} matched; closest: node {node_name}, {best.describe()}"
        )
    return out


def _explained(res: MatchResult, rule: Rule) -> MatchResult:
    """``res`` with a reason and a progress of at least 1 (the root's op matched), whatever the rule filled in."""
    res.progress = max(res.progress, 1)
    if not res.reason.strip():
        res.reason = f"rule {rule.name} ({rule.defined_at}) gave no reason"
    return res


class RulePass(Pass):
    """A pass made of rewrite rules: subclasses implement ``rules()``."""

    def rules(self) -> list[Rule]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        outcome = apply_rules(graph, self.rules(), pass_name=self.name)
        return PassResult(graph, outcome.modified, stats=outcome.stats, near_misses=outcome.near_misses)
