"""Rewrite rules: declarative pattern / check / rewrite, an imperative matcher for hard cases, one driver.

A rule has three parts. The **pattern** is a tree of op nodes with captured
inputs (see ``pattern.py`` for every element). **check** looks at the match
and either accepts it or explains why not. **rewrite** builds the replacement
through a ``Rewriter`` (the graph's mutation API, with new nodes inserted
before the matched root and tagged with ``Provenance(pass, rule, origins)``)
and returns the values that replace the root's outputs. The driver
(``apply_rules``) does the rest: candidates, matching, rewiring, removing dead
nodes, counting, and recording near misses.

Example: fold a bias ``Add`` into a ``MatMul`` as one ``Linear``::

    from accelopt.passes.patterns import P, Rule, MatchResult, RulePass, apply_rules

    x, w, b = P.var("x"), P.const("w"), P.const("b")
    pattern = P.op("Add", P.op("MatMul", x, w, name="mm"), b, commute=True)

    def check(m):
        if m.const("b").ndim != 1:
            return MatchResult.fail(f"bias has rank {m.const('b').ndim}, expected 1")
        return MatchResult()

    def rewrite(rw, m):
        return rw.op("Linear", [m["x"], m["w"], m["b"]], {"activation": "none"})

    rule = Rule("matmul-bias", pattern, check=check, rewrite=rewrite)
    outcome = apply_rules(graph, [rule], pass_name="fuse-linear")
    outcome.stats        # {"matmul-bias": {"candidates": 12, "matched": 11, "near_misses": 1}}
    outcome.near_misses  # ["matmul-bias: 11 of 12 matched; closest: node add_7, stopped at check in node add_7: bias has rank 2, expected 1"]

A pass made of rules subclasses ``RulePass`` and returns them from
``rules()``; its ``PassResult`` carries the stats and near misses into the
report.

Hard cases (many optional forms, e.g. the attention mask) override
``Rule.match(graph, node)``: build a ``Match(rule.name, graph, node)``, call
``m.match(sub_pattern, value)`` for the regular parts, ``m.add_node`` /
``m.bind`` for what the code finds itself, and return the ``Match`` or a
``MatchResult.fail(reason, node=..., where=..., progress=m.size)``.

Candidates and near misses (the contract, see ``driver.py``): a root the rule
accepts counts as a candidate when it matches or when its failure got at
least ``rule.min_progress`` pattern nodes deep (half of them by default;
``near_miss_min = 1`` for a rule whose every root is a real candidate, such
as attention anchored on ``Softmax``). Every candidate yields a match or a
reason: ``stats[rule]`` has ``candidates == matched + near_misses``,
``RewriteOutcome.reasons`` holds each reason, and every rule with an
unmatched candidate gets one near-miss line for the closest, as
``"<rule>: <m> of <n> matched; closest: node <root>, stopped at <element> in
node <node>: <reason>"``.
"""

from accelopt.passes.patterns.driver import RewriteOutcome, RulePass, apply_rules, remove_dead, replace_value
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.pattern import Absent, Const, OneOf, OpPattern, P, Pattern, Var
from accelopt.passes.patterns.rule import Rewriter, Rule

__all__ = [
    "Absent",
    "Const",
    "Match",
    "MatchResult",
    "OneOf",
    "OpPattern",
    "P",
    "Pattern",
    "RewriteOutcome",
    "Rewriter",
    "Rule",
    "RulePass",
    "Var",
    "apply_rules",
    "remove_dead",
    "replace_value",
]
