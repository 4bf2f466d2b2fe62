"""Activation substitution: exact GELU -> its tanh (``gelu-tanh``) or sigmoid (``gelu-sigmoid``) approximation.

Both are approximations (family ``approximation``): the pass manager validates
the result and rolls the pass back if it breaks the tolerance (cosine 0.9999 by
default). Cases, for each pass:

1. ``Gelu{approximate="none"}`` -> ``Gelu{approximate="tanh"}`` (gelu-tanh) or
   ``QuickGelu{alpha=1.702}``, i.e. ``x * sigmoid(1.702 x)`` (gelu-sigmoid).
2. ``Linear{activation="gelu"}`` -> ``Linear{activation="gelu_tanh"}`` or
   ``Linear{activation="gelu_sigmoid"}``.
3. Exact GELU still written out with ``Erf`` is first recognised with
   fuse-gelu's erf rules, then substituted as in case 1.

GELUs that are already approximations (tanh or sigmoid) are left alone, so
running a pass twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelopt.ir.graph import Graph, Provenance
from accelopt.passes.base import PassContext, PassResult, register_pass
from accelopt.passes.fuse_gelu import gelu_rules
from accelopt.passes.patterns.driver import RulePass, apply_rules, replace_node
from accelopt.passes.patterns.rule import Rule

QUICK_ALPHA = 1.702


@dataclass(frozen=True)
class _Target:
    gelu_op: str  # what Gelu{none} becomes
    gelu_attrs: tuple[tuple[str, object], ...]
    linear_activation: str


class _GeluApprox(RulePass):
    family = "approximation"
    target: _Target

    def rules(self) -> list[Rule]:  # case 3
        return [r for r in gelu_rules() if r.name.startswith("gelu-erf")]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pre = apply_rules(graph, self.rules(), pass_name=self.name)
        stats: dict[str, dict[str, int]] = {"gelu": {"candidates": 0, "matched": 0}, "linear": {"candidates": 0, "matched": 0}}
        changed = 0
        for node in list(graph.nodes):
            if node.op == "Gelu":  # case 1
                stats["gelu"]["candidates"] += 1
                if node.attr("approximate", "none") != "none":
                    continue
                prov = Provenance(self.name, "gelu", node.provenance.origins or (node.name,))
                if self.target.gelu_op == "Gelu":
                    node.set_attrs(dict(self.target.gelu_attrs))
                    node.provenance = prov
                else:
                    new = graph.add_node(
                        self.target.gelu_op, list(node.inputs), dict(self.target.gelu_attrs),
                        name=f"{node.name}_{self.target.gelu_op.lower()}", after=node, provenance=prov,
                    ).outputs[0]
                    replace_node(graph, node, new)  # the substituted value keeps its name
                stats["gelu"]["matched"] += 1
                changed += 1
            elif node.op == "Linear" and node.attr("activation", "none") == "gelu":  # case 2
                stats["linear"]["candidates"] += 1
                node.set_attrs({**node.attrs, "activation": self.target.linear_activation})
                node.provenance = Provenance(self.name, "linear", node.provenance.origins or (node.name,))
                stats["linear"]["matched"] += 1
                changed += 1
        stats.update({f"pre/{k}": v for k, v in pre.stats.items() if v.get("matched")})
        return PassResult(graph, changed > 0 or pre.modified, stats=stats)


@register_pass
class GeluTanh(_GeluApprox):
    """Replace exact GELU by its tanh approximation (validated; rolled back if inaccurate)."""

    name = "gelu-tanh"
    target = _Target("Gelu", (("approximate", "tanh"),), "gelu_tanh")


@register_pass
class GeluSigmoid(_GeluApprox):
    """Replace exact GELU by x * sigmoid(1.702 x) (validated; rolled back if inaccurate)."""

    name = "gelu-sigmoid"
    target = _Target("QuickGelu", (("alpha", QUICK_ALPHA),), "gelu_sigmoid")
