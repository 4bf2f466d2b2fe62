"""PassManager: records, verification, exact ``modified``, rollback, instruments, fixed points, MACs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
from planted_passes import Damage

from accelopt.cost import estimate_macs
from accelopt.errors import InterpreterError, PassError
from accelopt.instruments import DumpIRInstrument, TimingInstrument
from accelopt.interpreter import Interpreter
from accelopt.ir import parse, print_graph
from accelopt.ir.graph import Graph
from accelopt.passes.base import Pass, PassContext, PassResult, build_pipeline
from accelopt.passmanager import PassGroup, PassManager
from accelopt.records import AccuracyRecord, Localization

MLP = """graph mlp(%x: float32[batch,4]) {
  %w1: float32[4,6] = const <sha:1>
  %w2: float32[6,3] = const <sha:2>
  %h: float32[batch,6] = MatMul(%x, %w1) @mm1
  %a: float32[batch,6] = Relu(%h) @relu
  %i: float32[batch,6] = Identity(%a) @id
  %y: float32[batch,3] = MatMul(%i, %w2) @mm2
  return %y
}
"""


def mlp() -> Graph:
    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.standard_normal((4, 6)).astype(np.float32),
        "w2": rng.standard_normal((6, 3)).astype(np.float32),
    }
    return parse(MLP, weights)


INPUTS = {"x": np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)}


# ------------------------------------------------------------ test passes
class AddRelu(Pass):
    """Appends a Relu after the first output (a new output name, changed values)."""

    name = "add-relu"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        out = graph.outputs[0]
        node = graph.add_node("Relu", [out], name="extra_relu")
        graph.set_outputs([node.outputs[0]] + graph.outputs[1:])
        return PassResult(graph, True, stats={"added": 1}, notes=["one relu"], near_misses=["x: 0 of 1"])


class Nothing(Pass):
    name = "nothing"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(graph, False)


class Breaks(Pass):
    name = "breaks"
    family = "fusion"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph.remove_node(graph.node("relu"), force=True)  # leaves %a dangling
        return PassResult(graph, True)


class Raises(Pass):
    name = "raises"
    family = "fusion"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise RuntimeError("boom")


class Lies(Pass):
    name = "lies"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph.remove_unused()
        ident = graph.node("id")
        ident.outputs[0].replace_all_uses_with(ident.inputs[0])
        graph.remove_node(ident)
        return PassResult(graph, False)


class ClaimsChange(Pass):
    name = "claims-change"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(graph, True)


class DropOneIdentity(Pass):
    """Removes one Identity per run (so a fixed point takes several rounds)."""

    name = "drop-one-identity"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        for node in graph.nodes:
            if node.op == "Identity":
                node.outputs[0].replace_all_uses_with(node.inputs[0])
                graph.remove_node(node)
                return PassResult(graph, True)
        return PassResult(graph, False)


class AlwaysModifies(Pass):
    name = "always-modifies"
    family = "cleanup"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        out = graph.outputs[0]
        node = graph.add_node("Identity", [out])
        graph.set_outputs([node.outputs[0]])
        return PassResult(graph, True)


# -------------------------------------------------------------- validator
class FakeValidator:
    """Max-abs error against the input graph's outputs; localizes by comparing same-named values."""

    def __init__(self, reference: Graph, tol: float = 1e-5) -> None:
        ref = Interpreter(reference).run(INPUTS)
        self.ref = [ref[v.name] for v in reference.outputs]
        self.tol = tol
        self.calls: list[str] = []

    def check(self, graph: Graph, *, family: str, previous: Graph | None = None) -> AccuracyRecord:
        self.calls.append(family)
        res = Interpreter(graph).run(INPUTS)
        got = [res[v.name] for v in graph.outputs]  # outputs compared by position
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, self.ref))
        ok = err <= self.tol
        failures = [] if ok else [f"max_abs {err:.3g} > {self.tol:g} on y"]
        return AccuracyRecord(vs_reference={"max_abs": err}, tolerance={"max_abs": self.tol}, ok=ok, failures=failures)

    def localize(self, old: Graph, new: Graph) -> Localization | None:
        a = Interpreter(old).run(INPUTS, keep_intermediates=True)
        b = Interpreter(new).run(INPUTS, keep_intermediates=True)
        for node in new.nodes:
            for v in node.outputs:
                if v.name in a and v.name in b:
                    err = float(np.max(np.abs(a[v.name] - b[v.name])))
                    if err > self.tol:
                        return Localization(node.name, node.op, v.name, "max_abs", err)
        return None


# ------------------------------------------------------------------ tests
def test_records_and_input_not_mutated() -> None:
    g = mlp()
    text = print_graph(g)
    ctx = PassContext(options={"shape_bindings": {"batch": 2}, "check_modified": True})
    out, recs = PassManager([AddRelu(), Nothing()], ctx).run(g)
    assert print_graph(g) == text
    assert out is not g
    assert [r.name for r in recs] == ["add-relu", "nothing"]
    r = recs[0]
    assert r.spec == "add-relu" and r.family == "cleanup" and r.options == {}
    assert r.modified and not r.rolled_back
    assert r.ops_before == {"MatMul": 2, "Relu": 1, "Identity": 1}
    assert r.ops_after == {"MatMul": 2, "Relu": 2, "Identity": 1}
    assert r.nodes_added == ["extra_relu"] and r.nodes_removed == []
    assert r.param_bytes_before == {"float32": (24 + 18) * 4} == r.param_bytes_after
    assert r.macs_before == 2 * 4 * 6 + 2 * 6 * 3 == r.macs_after
    assert r.stats == {"added": 1} and r.notes == ["one relu"] and r.near_misses == ["x: 0 of 1"]
    assert r.seconds > 0
    assert not recs[1].modified and recs[1].nodes_added == []
    # the output of the second pass is the first pass's graph
    assert print_graph(out).count("Relu") == 2


def test_output_is_a_copy_even_when_nothing_changes() -> None:
    g = mlp()
    out, recs = PassManager([Nothing()]).run(g)
    assert out is not g and print_graph(out) == print_graph(g)
    assert recs[0].macs_before is None  # "batch" is not bound


def test_broken_graph_is_a_pass_error_and_the_run_goes_on(tmp_path, caplog) -> None:
    g = mlp()
    dump = DumpIRInstrument(tmp_path / "ir")
    with caplog.at_level(logging.WARNING, logger="accelopt.passmanager"):
        out, recs = PassManager([AddRelu(), Nothing(), Breaks(), DropOneIdentity()], PassContext(instruments=[dump])).run(g)
    brk = recs[2]
    assert brk.name == "breaks" and brk.rolled_back and brk.modified
    assert brk.broken_nodes == ["id"]  # the node left reading the dangling %a
    assert brk.pass_error.startswith("pass 'breaks' broke the graph at node(s) id: ")
    assert "%a is used before it is defined" in brk.pass_error
    assert "passes run before it: add-relu, nothing" in brk.pass_error
    assert brk.rollback_reason.startswith("pass error: the pass broke the graph at node(s) id")
    assert brk.ops_after == brk.ops_before and brk.nodes_removed == []
    # the run went on from the graph before the broken pass
    assert recs[3].name == "drop-one-identity" and recs[3].modified and not recs[3].rolled_back
    assert "extra_relu" in {n.name for n in out.nodes} and "relu" in {n.name for n in out.nodes}
    out.verify()
    assert any("pass 'breaks' broke the graph" in r.message and r.levelname == "WARNING" for r in caplog.records)
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert "003_breaks.rejected.txt" in files and "003_breaks.txt" in files


def test_exception_in_pass_is_a_pass_error() -> None:
    g = mlp()
    out, recs = PassManager([AddRelu(), Raises(), Nothing()]).run(g)
    assert [r.name for r in recs] == ["add-relu", "raises", "nothing"]
    err = recs[1].pass_error
    assert err == "pass 'raises' raised RuntimeError: boom (passes run before it: add-relu)"
    assert recs[1].rolled_back and recs[1].broken_nodes == []
    assert print_graph(out) == print_graph(PassManager([AddRelu()]).run(mlp())[0])


def test_pass_option_error_ends_the_run() -> None:
    with pytest.raises(PassError, match=r"pass 'damage\{node=nope\}' failed \(passes run before it: add-relu\): damage: no MatMul"):
        PassManager([AddRelu(), Damage(node="nope")]).run(mlp())


def test_input_graph_is_verified() -> None:
    g = mlp()
    g.remove_node(g.node("relu"), force=True)
    with pytest.raises(PassError, match="'<input>' produced an invalid graph"):
        PassManager([Nothing()]).run(g)


def test_check_modified_catches_both_lies() -> None:
    ctx = PassContext(options={"check_modified": True})
    with pytest.raises(PassError, match="reported modified=False but the text form changed"):
        PassManager([Lies()], ctx).run(mlp())
    with pytest.raises(PassError, match="reported modified=True but the text form did not change"):
        PassManager([ClaimsChange()], ctx).run(mlp())
    # without the option the lie goes unnoticed (and the unchanged graph is kept)
    out, recs = PassManager([Lies()]).run(mlp())
    assert "Identity" in print_graph(out) and not recs[0].modified


def test_rollback_with_validator_and_localization(tmp_path) -> None:
    g = mlp()
    text = print_graph(g)
    validator = FakeValidator(g)
    dump = DumpIRInstrument(tmp_path / "ir")
    ctx = PassContext(validator=validator, instruments=[dump])
    passes = [Nothing(), Damage(scale=2.0), *build_pipeline("remove-noops")]
    out, recs = PassManager(passes, ctx).run(g)
    assert [r.name for r in recs] == ["nothing", "damage", "remove-noops"]
    assert validator.calls == ["test", "cleanup"]  # the unmodified pass is not validated
    dmg = recs[1]
    assert dmg.modified and dmg.rolled_back
    assert dmg.rollback_reason.startswith("max_abs ") and dmg.rollback_reason.endswith(" > 1e-05 on y")
    assert dmg.accuracy is not None and not dmg.accuracy.ok
    assert dmg.localization is not None and dmg.localization.node == "mm1" and dmg.localization.op == "MatMul"
    assert dmg.spec == "damage{scale=2.0}" and dmg.options == {"scale": 2.0, "seed": 0, "node": ""}
    assert dmg.ops_after == dmg.ops_before and dmg.nodes_added == [] and dmg.nodes_removed == []
    assert any("rolled back" in n for n in dmg.notes)
    # the next pass continued from the undamaged graph
    noops = recs[2]
    assert noops.modified and not noops.rolled_back and noops.accuracy is not None and noops.accuracy.ok
    assert noops.nodes_removed == ["id"]
    assert print_graph(out) == text.replace("  %i: float32[batch,6] = Identity(%a) @id\n", "").replace(
        "MatMul(%i, %w2)", "MatMul(%a, %w2)"
    )
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["000_input.txt", "001_nothing.txt", "002_damage.rejected.txt", "002_damage.txt", "003_remove-noops.txt"]
    assert (tmp_path / "ir" / "002_damage.txt").read_text() == (tmp_path / "ir" / "001_nothing.txt").read_text()
    assert "w1_damaged" in (tmp_path / "ir" / "002_damage.rejected.txt").read_text()
    assert print_graph(parse((tmp_path / "ir" / "003_remove-noops.txt").read_text())) == print_graph(out)


def test_unmodified_pass_reuses_previous_accuracy() -> None:
    g = mlp()
    validator = FakeValidator(g, tol=1.0e9)
    out, recs = PassManager([AddRelu(), Nothing()], PassContext(validator=validator)).run(g)
    assert validator.calls == ["cleanup"]
    assert recs[1].accuracy is recs[0].accuracy and recs[0].accuracy is not None
    assert recs[0].validate_seconds > 0 and recs[1].validate_seconds == 0


def test_graph_that_does_not_run_is_rolled_back() -> None:
    class Crashes(FakeValidator):
        def check(self, graph, *, family, previous=None):
            raise InterpreterError("node extra_relu (Relu) failed", node="extra_relu")

    g = mlp()
    out, recs = PassManager([AddRelu()], PassContext(validator=Crashes(g))).run(g)
    assert recs[0].rolled_back and recs[0].rollback_reason.startswith("the new graph does not run")
    assert recs[0].error == "node extra_relu (Relu) failed"
    assert recs[0].pass_error.startswith("pass 'add-relu' produced a graph that does not run")
    assert recs[0].broken_nodes == ["extra_relu"]
    assert print_graph(out) == print_graph(g)


def test_instrument_hooks_progress_and_timing(caplog) -> None:
    events: list[str] = []

    @dataclass
    class Recorder:
        def before_run(self, graph, ctx):
            events.append("before_run")

        def before_pass(self, pass_, graph, ctx):
            events.append(f"before:{pass_.name}")

        def after_pass(self, pass_, graph, record, ctx):
            events.append(f"after:{record.name}:{record.modified}")

        def after_run(self, records):
            events.append(f"after_run:{len(records)}")

    class OnlyAfterRun:  # instruments may implement any subset of the hooks
        def after_run(self, records):
            events.append("only")

    progress: list[tuple[int, int, str]] = []
    timing = TimingInstrument()
    ctx = PassContext(instruments=[Recorder(), OnlyAfterRun(), timing], progress=lambda d, t, s: progress.append((d, t, s)))
    with caplog.at_level(logging.INFO, logger="accelopt.instruments"):
        PassManager([AddRelu(), Nothing()], ctx).run(mlp())
    assert events == [
        "before_run",
        "before:add-relu",
        "after:add-relu:True",
        "before:nothing",
        "after:nothing:False",
        "after_run:2",
        "only",
    ]
    assert progress == [(1, 2, "add-relu"), (2, 2, "nothing")]
    assert [s for s, _ in timing.timings] == ["add-relu", "nothing"]
    assert any("pass add-relu:" in r.getMessage() for r in caplog.records)
    assert any("2 passes in" in r.getMessage() for r in caplog.records)


def test_fixed_point_group_repeats_until_stable() -> None:
    g = parse("""graph g(%x: float32[3]) {
  %a: float32[3] = Identity(%x) @i1
  %b: float32[3] = Identity(%a) @i2
  %c: float32[3] = Identity(%b) @i3
  %d: float32[3] = Relu(%c) @relu
  return %d
}
""")
    progress: list[tuple[int, int, str]] = []
    pm = PassManager([PassGroup([DropOneIdentity(), Nothing()], fixed_point=True)], PassContext(progress=lambda *a: progress.append(a)))
    out, recs = pm.run(g)
    assert [r.modified for r in recs] == [True, False, True, False, True, False, False, False]
    assert recs[2].notes == ["group: fixed-point round 2"]
    assert print_graph(out) == """graph g(%x: float32[3]) {
  %d: float32[3] = Relu(%x) @relu
  return %d
}
"""
    assert progress[-1][0] == progress[-1][1] == 8
    # without fixed_point the group runs once
    out1, recs1 = PassManager([PassGroup([DropOneIdentity()])]).run(g)
    assert len(recs1) == 1 and print_graph(out1).count("Identity") == 2


def test_fixed_point_gives_up_after_max_rounds() -> None:
    out, recs = PassManager([PassGroup([AlwaysModifies()], fixed_point=True)]).run(mlp())
    assert len(recs) == 10
    assert recs[-1].notes[-1] == "group: no fixed point after 10 rounds; stopped"


def test_registered_cleanup_group_runs_to_fixed_point() -> None:
    passes = build_pipeline("cleanup")
    pm = PassManager(passes)
    assert len(pm.units) == 1 and pm.units[0].fixed_point and pm.units[0].label == "cleanup"
    assert len(PassManager(build_pipeline("cleanup,dce,cleanup")).units) == 3
    out, recs = pm.run(mlp())
    names = [r.name for r in recs]
    assert names == ["constant-fold", "remove-noops", "cse", "dce"] * 2
    assert not any(r.modified for r in recs[4:])


def test_estimate_macs_cases() -> None:
    g = parse("""graph c(%x: float32[batch,seq,16], %a: float32[3,5], %q: float32[1,2,8,4]) {
  %w: float32[16,48] = const <sha:1>
  %bq: float32[48] = const <sha:2>
  %wl: float32[16,16] = const <sha:3>
  %bm: float32[3,4] = const <sha:4>
  %att: float32[batch,seq,16] = Attention{num_heads=2}(%x, %w, %bq) @att
  %lin: float32[batch,seq,16] = Linear(%att, %wl) @lin
  %gm: float32[5,4] = Gemm{transA=1}(%a, %bm) @gemm
  %sd: float32[1,2,8,4] = ScaledDotProductAttention(%q, %q, %q) @sdpa
  return %lin, %gm, %sd
}
""")
    b = {"batch": 1, "seq": 8}
    att = 8 * 16 * 48 + 2 * 8 * 8 * 16
    lin = 8 * 16 * 16
    gemm = 5 * 4 * 3
    sdpa = 2 * 8 * 8 * (4 + 4)
    assert estimate_macs(g, b) == att + lin + gemm + sdpa
    assert estimate_macs(g, {"batch": 1}) is None


def test_estimate_macs_fills_unknown_dims_from_operands() -> None:
    g = parse("""graph c(%h: float32[batch,seq,?], %p: float32[?,2,?,?], %v: float32[batch,2,seq,4]) {
  %w: float32[16,8] = const <sha:1>
  %y: float32[batch,seq,8] = MatMul(%h, %w) @dense
  %c: float32[batch,2,?,4] = MatMul(%p, %v) @ctx
  return %y, %c
}
""")
    b = {"batch": 3, "seq": 5}
    dense = 3 * 5 * 8 * 16  # K from the weight
    with pytest.raises(ValueError, match=r"node ctx \(MatMul\): unknown dimension"):
        from accelopt.cost import node_macs

        node_macs(g.node("ctx"), b)  # M is unknown everywhere
    assert estimate_macs(g, b) is None
    g.remove_node(g.node("ctx"), force=True)
    g.set_outputs([g.value("y")])
    assert estimate_macs(g, b) == dense
