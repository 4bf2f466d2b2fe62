"""The rewrite-rule engine: pattern DSL, backtracking, check/rewrite, driver stats and near misses."""

from __future__ import annotations

import numpy as np
import pytest

from accelopt.errors import PassError
from accelopt.interpreter import run
from accelopt.ir import parse, print_graph
from accelopt.ir.graph import Node
from accelopt.passes.base import PassContext
from accelopt.passes.patterns import Match, MatchResult, P, Rule, RulePass, apply_rules

RNG = np.random.default_rng(0)


def _matmul_add_graph() -> str:
    return """graph g(%x: float32[2,4]) {
  %w: float32[4,3] = const [0.5, -1.0, 2.0, 0.25, 1.5, -0.5, 1.0, 0.75, -2.0, 0.125, 3.0, -0.25]
  %b: float32[3] = const [1.0, 2.0, 3.0]
  %y: float32[2,3] = MatMul(%x, %w) @mm
  %z: float32[2,3] = Add(%b, %y) @add
  %r: float32[2,3] = Relu(%z) @relu
  return %r
}
"""


def _linear_rule(check=None) -> Rule:
    pat = P.op("Add", P.op("MatMul", P.var("x"), P.const("w"), name="mm"), P.const("b"), commute=True, name="add")
    return Rule(
        "matmul-bias",
        pat,
        check=check,
        rewrite=lambda rw, m: rw.op("Linear", [m["x"], m["w"], m["b"]]),
    )


def test_declarative_rule_golden_numerics_provenance() -> None:
    g = parse(_matmul_add_graph())
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    before = run(g, {"x": x})["r"]
    out = apply_rules(g, [_linear_rule()], pass_name="fuse-test")
    g.verify()
    assert out.modified and out.rewrites == 1
    assert out.stats == {"matmul-bias": {"candidates": 1, "matched": 1}}
    assert out.near_misses == []
    assert print_graph(g) == """graph g(%x: float32[2,4]) {
  %w: float32[4,3] = const [0.5, -1.0, 2.0, 0.25, 1.5, -0.5, 1.0, 0.75, -2.0, 0.125, 3.0, -0.25]
  %b: float32[3] = const [1.0, 2.0, 3.0]
  %linear: float32[2,3] = Linear(%x, %w, %b) @linear
  %r: float32[2,3] = Relu(%linear) @relu
  return %r
}
"""
    lin = g.node("linear")
    assert lin.provenance.pass_name == "fuse-test"
    assert lin.provenance.rule == "matmul-bias"
    assert lin.provenance.origins == ("mm", "add")
    np.testing.assert_allclose(run(g, {"x": x})["r"], before, rtol=1e-6, atol=1e-6)


def test_no_match_leaves_graph_untouched() -> None:
    g = parse(_matmul_add_graph().replace("Add(%b, %y)", "Sub(%y, %b)").replace("@add", "@sub"))
    text = print_graph(g)
    out = apply_rules(g, [_linear_rule()], pass_name="t")
    assert not out.modified
    assert print_graph(g) == text
    assert out.stats["matmul-bias"] == {"candidates": 0, "matched": 0}


def test_check_failure_is_a_near_miss_with_reason() -> None:
    g = parse(_matmul_add_graph())
    text = print_graph(g)

    def check(m: Match) -> MatchResult:
        return MatchResult.fail(f"bias has {m.const('b').size} elements, expected 4")

    out = apply_rules(g, [_linear_rule(check)], pass_name="t")
    assert not out.modified and print_graph(g) == text
    assert out.near_misses == [
        "matmul-bias: 0 of 1 matched; closest: node add, stopped at check in node add: bias has 3 elements, expected 4"
    ]
    assert out.stats["matmul-bias"]["near_misses"] == 1


def test_structural_failure_reports_deepest_point() -> None:
    # the MatMul weight is a graph input, not a constant: stops inside the pattern
    g = parse("""graph g(%x: float32[2,4], %w: float32[4,3]) {
  %b: float32[3] = const [1.0, 2.0, 3.0]
  %y: float32[2,3] = MatMul(%x, %w) @mm
  %z: float32[2,3] = Add(%y, %b) @add
  return %z
}
""")
    rule = _linear_rule()
    rule.near_miss_min = 1
    out = apply_rules(g, [rule], pass_name="t")
    assert not out.modified
    fail = out.failures["matmul-bias"]
    assert fail.where == "MatMul[mm](w)"
    assert fail.node == "mm"
    assert fail.reason == "expected a constant, found %w (a graph input)"
    assert out.near_misses[0].startswith("matmul-bias: 0 of 1 matched; closest: node add, stopped at MatMul[mm](w)")


def test_same_name_must_bind_same_value_and_backtracking_over_commute() -> None:
    # Sub(Mul(x, y), y): with Mul(a, b) - a, only the commuted order binds y consistently.
    g = parse("""graph g(%a: float32[3], %b: float32[3]) {
  %m: float32[3] = Mul(%a, %b) @mul
  %s: float32[3] = Sub(%m, %a) @sub
  return %s
}
""")
    pat = P.op("Sub", P.op("Mul", P.var("x"), P.var("y"), commute=True), P.var("y"))
    seen: list[tuple[str, str]] = []

    def rewrite(rw, m):
        seen.append((m["x"].name, m["y"].name))
        return None  # decline: only inspecting the binding

    out = apply_rules(g, [Rule("r", pat, rewrite=rewrite)], pass_name="t")
    assert seen == [("b", "a")]
    assert not out.modified

    no_commute = P.op("Sub", P.op("Mul", P.var("x"), P.var("y")), P.var("y"))
    res = Rule("r2", no_commute, rewrite=rewrite).find(g, g.node("sub"))
    assert isinstance(res, MatchResult) and not res.ok
    assert res.reason == "y is %a here but %b elsewhere"


def test_check_sees_every_alternative_binding() -> None:
    g = parse("""graph g(%a: float32[3], %b: float32[3]) {
  %m: float32[3] = Mul(%a, %b) @mul
  return %m
}
""")
    pat = P.op("Mul", P.var("x"), P.var("y"), commute=True)
    tried: list[str] = []

    def check(m):
        tried.append(m["x"].name)
        return m["x"].name == "b" or MatchResult.fail("x is not b")

    found = Rule("r", pat, check=check, rewrite=lambda rw, m: None).find(g, g.node("mul"))
    assert isinstance(found, Match)
    assert tried == ["a", "b"] and found["x"].name == "b" and found["y"].name == "a"


def test_scalar_attrs_one_of_and_where_constraints() -> None:
    g = parse("""graph g(%x: float32[2,3], %mask: float32[2,3]) {
  %half: float32[] = const [0.5]
  %h: float32[2,3] = Mul(%x, %half) @mul
  %s: float32[2,3] = Softmax{axis=1}(%h) @sm
  %o: float32[2,3] = Add(%s, %mask) @add
  return %o
}
""")
    x = P.var("x")
    scaled = P.op("Mul", x, P.scalar(0.5, "half"), commute=True)
    sm = P.op("Softmax", P.one_of(scaled, P.op("Div", x, P.scalar(2.0))), attrs={"axis": -1}, name="sm")
    r = Rule("sm-axis", P.op("Add", sm, P.var("mask")), rewrite=lambda rw, m: None)
    res = r.find(g, g.node("add"))
    assert isinstance(res, MatchResult)
    assert res.reason == "Softmax attribute axis is 1, expected -1" and res.where == "Softmax[sm]"

    sm_any = P.op("Softmax", P.one_of(scaled, P.op("Div", x, P.scalar(2.0))), name="sm")
    mask = P.var("mask").where(lambda v: v.is_const, "mask input is not a constant")
    r2 = Rule("mask", P.op("Add", sm_any, mask), rewrite=lambda rw, m: None)
    res2 = r2.find(g, g.node("add"))
    assert isinstance(res2, MatchResult)
    assert res2.reason == "mask input is not a constant" and res2.where == "Add(mask)"
    assert res2.progress == 3  # Add, Softmax, Mul matched before the mask failed

    r3 = Rule("ok", P.op("Add", sm_any, P.var("mask")), rewrite=lambda rw, m: None)
    m = r3.find(g, g.node("add"))
    assert isinstance(m, Match)
    assert m.scalar("half") == 0.5 and m["x"].name == "x" and m.node("sm").name == "sm"
    assert m.attr("sm", "axis") == 1


def test_interior_uses_block_the_rewrite_unless_shared() -> None:
    text = """graph g(%x: float32[2,4]) {
  %w: float32[4,3] = const [0.5, -1.0, 2.0, 0.25, 1.5, -0.5, 1.0, 0.75, -2.0, 0.125, 3.0, -0.25]
  %b: float32[3] = const [1.0, 2.0, 3.0]
  %y: float32[2,3] = MatMul(%x, %w) @mm
  %z: float32[2,3] = Add(%y, %b) @add
  %r: float32[2,3] = Relu(%y) @relu
  return %z, %r
}
"""
    g = parse(text)
    rule = _linear_rule()
    rule.near_miss_min = 1
    out = apply_rules(g, [rule], pass_name="t")
    assert not out.modified and print_graph(g) == text
    assert out.failures["matmul-bias"].reason == "%y is also used by relu outside the pattern"

    shared = P.op("Add", P.op("MatMul", P.var("x"), P.const("w"), shared=True), P.const("b"))
    g2 = parse(text)
    xin = RNG.standard_normal((2, 4)).astype(np.float32)
    ref = run(g2, {"x": xin})
    out2 = apply_rules(
        g2, [Rule("shared", shared, rewrite=lambda rw, m: rw.op("Linear", [m["x"], m["w"], m["b"]]))], pass_name="t"
    )
    g2.verify()
    assert out2.modified
    assert sorted(n.op for n in g2.nodes) == ["Linear", "MatMul", "Relu"]  # the MatMul stays for relu
    got = run(g2, {"x": xin})
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-6)


def test_graph_output_keeps_its_name_and_inputs_are_not_renamed() -> None:
    g = parse("""graph g(%x: float32[3]) {
  %a: float32[3] = Relu(%x) @relu
  %y: float32[3] = Identity(%a) @id
  %z: float32[3] = Identity(%x) @id2
  return %y, %z
}
""")
    rule = Rule("identity", P.op("Identity", P.var("x")), rewrite=lambda rw, m: m["x"])
    out = apply_rules(g, [rule], pass_name="t")
    g.verify()
    assert out.stats["identity"] == {"candidates": 2, "matched": 1, "near_misses": 1}
    assert out.reasons["identity"] == {
        "id2": "stopped at rewrite in node id2: output %z is a graph output and its replacement %x is a graph "
        "input or output, so the interface would change"
    }
    assert [v.name for v in g.outputs] == ["y", "z"]
    assert print_graph(g) == """graph g(%x: float32[3]) {
  %y: float32[3] = Relu(%x) @relu
  %z: float32[3] = Identity(%x) @id2
  return %y, %z
}
"""


def test_rewrite_dtype_mismatch_message() -> None:
    from accelopt.ir.dtypes import DType

    g = parse("""graph g(%x: float32[3]) {
  %a: float32[3] = Relu(%x) @relu
  return %a
}
""")
    bad = Rule("bad", P.op("Relu", P.var("x")), rewrite=lambda rw, m: rw.op("Cast", [m["x"]], {"to": DType.INT64}))
    with pytest.raises(PassError, match=r"rule bad .* replaced %a: float32\[3\] with %cast: int64\[3\] at node relu"):
        apply_rules(g, [bad], pass_name="t")


def test_imperative_rule_and_repeated_sweeps() -> None:
    class FoldReluChain(Rule):
        """Relu(Relu(...Relu(x))) -> one Relu: written imperatively."""

        name = "relu-chain"
        root_ops = frozenset({"Relu"})

        def match(self, graph, node: Node):
            m = Match(self.name, graph, node)
            m.add_node(node, "outer")
            inner = node.inputs[0]
            res = m.match(P.op("Relu", P.var("x"), name="inner"), inner)
            if not res:
                return MatchResult.fail(res.reason, node=node.name, where=res.where, progress=m.size)
            return m

        def rewrite(self, rw, m):
            return m["inner"]

    g = parse("""graph g(%x: float32[4]) {
  %a: float32[4] = Relu(%x) @r1
  %b: float32[4] = Relu(%a) @r2
  %c: float32[4] = Relu(%b) @r3
  %d: float32[4] = Relu(%c) @r4
  return %d
}
""")
    xin = np.array([-1.0, 0.0, 2.0, -3.0], dtype=np.float32)
    ref = run(g, {"x": xin})["d"]
    out = apply_rules(g, [FoldReluChain()], pass_name="t")
    g.verify()
    assert out.modified and out.rewrites == 3
    assert [n.op for n in g.nodes] == ["Relu"]
    assert g.outputs[0].name == "d"
    np.testing.assert_array_equal(run(g, {"x": xin})["d"], ref)


def test_rule_pass_carries_stats_and_defined_at() -> None:
    class Fuse(RulePass):
        name = "fuse-linear-test"
        family = "fusion"

        def rules(self):
            return [_linear_rule()]

    g = parse(_matmul_add_graph())
    res = Fuse().run(g, PassContext())
    assert res.modified and res.stats == {"matmul-bias": {"candidates": 1, "matched": 1}}
    assert "test_rules.py" in _linear_rule().defined_at


def test_duplicate_rule_names_rejected() -> None:
    g = parse(_matmul_add_graph())
    with pytest.raises(PassError, match="duplicate rule names"):
        apply_rules(g, [_linear_rule(), _linear_rule()], pass_name="t")


def test_pattern_construction_errors() -> None:
    with pytest.raises(ValueError, match="commute needs exactly two inputs"):
        P.op("Add", P.var("x"), commute=True)
    with pytest.raises(TypeError, match="not a pattern"):
        P.op("Add", "x", P.var("y"))  # type: ignore[arg-type]


def test_interface_change_is_declined_and_created_nodes_undone() -> None:
    text = """graph g(%x: float32[3]) {
  %y: float32[3] = Identity(%x) @id
  return %y
}
"""
    g = parse(text)

    def rewrite(rw, m):
        c = rw.const("scale", np.ones(3, dtype=np.float32))
        rw.op("Mul", [m["x"], c])  # built, then not used
        return m["x"]  # a graph input cannot take the output's name

    rule = Rule("identity", P.op("Identity", P.var("x")), rewrite=rewrite, near_miss_min=1)
    out = apply_rules(g, [rule], pass_name="t")
    g.verify()
    assert not out.modified and print_graph(g) == text
    assert out.failures["identity"].where == "rewrite"
    assert "is a graph output and its replacement %x is a graph input" in out.failures["identity"].reason


def test_rewrites_refresh_stale_types_downstream() -> None:
    """A replacement that knows its shape better reaches the values computed from it (issue 13 item 1)."""
    g = parse(
        """graph g(%x: float32[batch,4], %s: int64[2]) {
  %u: float32[?,?] = Reshape(%x, %s) @reshape
  %n: float32[?,4] = Neg(%u) @neg
  %t: float32[D0,4] = Relu(%n) @relu
  %k: float32[D0,4] = Sigmoid(%t) @sig
  return %k
}
"""
    )
    g.verify()  # [?,?] is compatible with the exporter's invented D0
    rule = Rule(
        "neg-direct", P.op("Neg", P.op("Reshape", P.var("x"), P.var("s"))), rewrite=lambda rw, m: rw.op("Neg", [m["x"]])
    )
    out = apply_rules(g, [rule], pass_name="t")
    assert out.modified
    g.verify()  # without the refresh: "node relu (Relu): output %t has shape float32[D0,4], inferred float32[batch,4]"
    assert [str(v.type) for v in (g.value("t"), g.value("k"))] == ["float32[batch,4]", "float32[batch,4]"]


def test_refined_type_cases() -> None:
    from accelopt.ir.dtypes import DType
    from accelopt.ir.refine import refined_type
    from accelopt.ir.types import TensorType

    f32 = DType.from_numpy(np.float32)

    def t(*dims: object) -> TensorType:
        return TensorType(f32, tuple(dims))  # type: ignore[arg-type]

    assert refined_type(t("D0", None, 4), t("batch", "seq", None)) == t("batch", "seq", 4)  # cases 3 and 1
    assert refined_type(t(None, "D1"), t(8, 2)) == t(8, 2)  # case 2
    assert refined_type(t(3, 5), t("batch", 6)) == t(3, 5)  # a static size stays; a conflict is the verifier's
    assert refined_type(t(3), t(3, 1)) == t(3)  # rank disagreements are left alone
    assert refined_type(TensorType(f32, None), t("batch")) == t("batch")


def test_every_candidate_yields_a_match_or_a_reason() -> None:
    """Issue 14 item 3: a planted candidate that matches nothing (and gives no reason) still gets a near miss."""
    g = parse("""graph g(%x: float32[2,4]) {
  %a: float32[2,4] = Softmax(%x) @sm_ok
  %b: float32[2,4] = Softmax(%a) @sm_planted
  return %b
}
""")

    class Anchored(Rule):
        name = "planted"
        root_ops = frozenset({"Softmax"})
        near_miss_min = 1  # every softmax is a candidate

        def match(self, graph, node):  # type: ignore[no-untyped-def]
            if node.name == "sm_planted":
                return MatchResult.fail("")  # no reason, no progress: the driver must still explain it
            m = Match(self.name, graph, node)
            m.add_node(node)
            m.bind("x", node.inputs[0])
            return m

        def rewrite(self, rw, m):  # type: ignore[no-untyped-def]
            return rw.op("Sigmoid", [m["x"]])

    out = apply_rules(g, [Anchored()], pass_name="t")
    s = out.stats["planted"]
    assert s == {"candidates": 2, "matched": 1, "near_misses": 1}
    assert s["candidates"] == s["matched"] + len(out.reasons["planted"])
    reason = out.reasons["planted"]["sm_planted"]
    assert "gave no reason" in reason and "test_rules.py" in reason
    assert out.near_misses == [f"planted: 1 of 2 matched; closest: node sm_planted, {reason}"]


def test_fuse_attention_explains_a_planted_softmax() -> None:
    """A softmax that is not attention at all is still a candidate with a near miss (MPNet, DeBERTa-v2 said
    "attention: 0 of 2 matched, 0 near misses")."""
    from accelopt.passes.base import build_pipeline

    g = parse("""graph g(%logits: float32[batch,8]) {
  %p: float32[batch,8] = Softmax(%logits) @planted
  return %p
}
""")
    (fuse,) = build_pipeline("fuse-attention")
    res = fuse.run(g, PassContext())
    assert not res.modified
    assert res.stats["attention"] == {"candidates": 1, "matched": 0, "near_misses": 1}
    assert len(res.near_misses) == 1 and res.near_misses[0].startswith("attention: 0 of 1 matched; closest: node planted, stopped at ")
