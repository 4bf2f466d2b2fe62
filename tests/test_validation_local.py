"""Local validation: the rewritten region of a pass, its sweep over real inputs, and the pass manager's use of it."""

from __future__ import annotations

import numpy as np
import pytest

import accelopt.ir as ir
from accelopt.instruments import DumpIRInstrument
from accelopt.interpreter import Interpreter, StepSpec, compile_plan, execute
from accelopt.ir import print_graph
from accelopt.ir.diff import diff_graphs
from accelopt.model import Model
from accelopt.passes.base import Pass, PassContext, PassResult, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.validation import ValidationConfig, Validator
from accelopt.validation_local import LocalSweep, PairStats, judge

F32 = ir.DType.FLOAT32
TIGHT = {"max_abs": 1e-4, "cosine": 0.99999}


def mlp() -> ir.Graph:
    """x[batch, seq, 8] -> MatMul mm1 -> Add add1 -> Relu relu -> MatMul mm2 -> Mul scale (x1000) -> y."""
    rng = np.random.default_rng(0)
    g = ir.Graph("mlp")
    x = g.add_input("x", ir.TensorType(F32, ("batch", "seq", 8)))
    a = g.add_node("MatMul", [x, g.add_initializer("w1", rng.standard_normal((8, 8)).astype(np.float32))], name="mm1")
    b = g.add_node("Add", [a.output, g.add_initializer("b1", np.arange(8, dtype=np.float32))], name="add1")
    r = g.add_node("Relu", [b.output], name="relu")
    m = g.add_node("MatMul", [r.output, g.add_initializer("w2", rng.standard_normal((8, 8)).astype(np.float32))], name="mm2")
    y = g.add_node("Mul", [m.output, g.add_initializer("k", np.array(1000.0, dtype=np.float32))], name="scale")
    g.set_outputs([y.output])
    return g


def model() -> Model:
    ref = Interpreter(mlp())
    return Model(mlp(), "mlp", "test", reference_fn=ref.run)


def validator(*, local: bool = True, n: int = 6) -> Validator:
    return Validator(model(), ValidationConfig(num_samples=n, seq_len=5, local=local, micro_batch=2))


def fused(g: ir.Graph) -> ir.Graph:
    """mm1 + add1 -> one Linear node ``lin`` (an exact rewrite)."""
    g = g.copy()
    mm, add = g.node("mm1"), g.node("add1")
    lin = g.add_node("Linear", [mm.inputs[0], mm.inputs[1], add.inputs[1]], name="lin", before=add)
    add.output.replace_all_uses_with(lin.output)
    g.remove_unused()
    return g


def damaged(g: ir.Graph, node: str = "mm2", scale: float = 0.1) -> ir.Graph:
    g = g.copy()
    n = g.node(node)
    w = n.inputs[1]
    assert w is not None and w.const is not None
    noise = np.random.default_rng(3).standard_normal(w.const.shape).astype(np.float32)
    n.set_input(1, g.add_initializer(f"{w.name}_damaged", w.const + scale * noise))
    g.remove_unused()
    return g


# ------------------------------------------------------------------- diff
def test_diff_of_a_fusion_names_the_region_and_the_edge_to_compare() -> None:
    g0 = mlp()
    g1 = fused(g0)
    rw = diff_graphs(g0, g1)
    assert [n.name for n in rw.region] == ["lin"]
    assert [(a.name, b.name) for a, b in rw.pairs] == [("lin", "add1")]
    assert rw.problem == ""
    # everything else maps to the old graph's values
    assert rw.value_map[id(g1.node("relu").output)] is g0.node("relu").output


def test_diff_of_an_unchanged_copy_is_empty_and_a_rename_is_a_region() -> None:
    g0 = mlp()
    rw = diff_graphs(g0, g0.copy())
    assert rw.region == [] and rw.pairs == []
    g1 = g0.copy()
    g1.rename_node(g1.node("relu"), "relu2")
    rw = diff_graphs(g0, g1)
    assert [n.name for n in rw.region] == ["relu2"]
    assert [(a.name, b.name) for a, b in rw.pairs] == [("relu", "relu")]


def test_diff_moves_a_node_whose_constant_changed_into_the_region() -> None:
    g0 = mlp()
    rw = diff_graphs(g0, damaged(g0))
    assert [n.name for n in rw.region] == ["mm2"]  # compared at its output, not at the weight
    assert [(a.name, b.name) for a, b in rw.pairs] == [("mm2", "mm2")]


def test_diff_folded_constant_is_compared_with_the_computed_value() -> None:
    g0 = ir.Graph("fold")
    x = g0.add_input("x", ir.TensorType(F32, ("batch", 8)))
    c1 = g0.add_initializer("c1", np.arange(8, dtype=np.float32))
    s = g0.add_node("Add", [c1, g0.add_initializer("c2", np.ones(8, dtype=np.float32))], name="sum")
    g0.set_outputs([g0.add_node("Mul", [x, s.output], name="mul").output])
    g1 = g0.copy()
    g1.node("mul").set_input(1, g1.add_initializer("sum_folded", np.arange(8, dtype=np.float32) + 1))
    g1.remove_unused()
    rw = diff_graphs(g0, g1)
    assert rw.region == []
    assert [(a.name, b.name) for a, b in rw.pairs] == [("sum_folded", "sum")]
    sweep = LocalSweep([g0, g1])
    sweep.run({"x": np.ones((2, 8), dtype=np.float32)})
    assert sweep.outcome(1, TIGHT).record.vs_previous["max_abs"] == 0.0  # type: ignore[union-attr]


def test_diff_problems_when_inputs_or_output_count_change() -> None:
    g0 = mlp()
    g1 = g0.copy()
    g1.set_outputs(g1.outputs + [g1.node("relu").output])
    assert "outputs" in diff_graphs(g0, g1).problem
    g2 = mlp()
    g2.inputs[0].type = ir.TensorType(F32, ("batch", "seq", 9))
    assert "graph inputs changed: x" in diff_graphs(g0, g2).problem


# ------------------------------------------------------------------ sweep
def test_sweep_outputs_equal_a_plain_run_and_stats_match_across_micro_batches() -> None:
    g0 = mlp()
    g1 = fused(g0)
    g2 = damaged(g1)
    x = np.random.default_rng(1).standard_normal((6, 5, 8)).astype(np.float32)
    sweep = LocalSweep([g0, g1, g2])
    # the damaged mm2 only: lin runs as the MatMul and Add that define it, which g0's mm1 and add1 are
    assert (sweep.tasks, sweep.shared) == (1, 1)
    outs = sweep.run({"x": x})
    np.testing.assert_array_equal(outs[0], Interpreter(g0).run({"x": x})["scale"])
    ok, bad = sweep.outcome(1, TIGHT), sweep.outcome(2, TIGHT)
    assert ok.record is not None and ok.record.ok and ok.record.scope == "local"
    assert ok.record.vs_previous["max_abs"] <= 1e-6
    assert bad.record is not None and not bad.record.ok
    assert bad.localization is not None and (bad.localization.node, bad.localization.op) == ("mm2", "MatMul")
    assert "[local]" in bad.record.failures[0] and "%mm2" in bad.record.failures[0]
    # the same statistics in micro-batches of 2 samples
    sweep2 = LocalSweep([g0, g1, g2])
    for i in range(0, 6, 2):
        sweep2.run({"x": x[i : i + 2]})
    assert sweep2.stats[2][0].max_err == pytest.approx(sweep.stats[2][0].max_err, rel=1e-12)
    assert sweep2.stats[2][0].cosine_min == pytest.approx(sweep.stats[2][0].cosine_min, rel=1e-12)


def test_sweep_shares_work_a_rewritten_node_repeats() -> None:
    g0 = mlp()
    g1 = g0.copy()
    mm2 = g1.node("mm2")
    lin = g1.add_node("Linear", list(mm2.inputs), name="lin2", before=mm2)  # MatMul as a bias-free Linear
    mm2.output.replace_all_uses_with(lin.output)
    g1.remove_unused()
    g2 = g1.copy()
    relu = g2.node("relu")
    again = g2.add_node("Relu", list(relu.inputs), name="relu_again", before=relu)  # the same node, renamed
    relu.output.replace_all_uses_with(again.output)
    g2.remove_unused()
    sweep = LocalSweep([g0, g1, g2])
    assert (sweep.tasks, sweep.shared) == (0, 2)  # both computed by g0's own nodes
    sweep.run({"x": np.random.default_rng(2).standard_normal((3, 5, 8)).astype(np.float32)})
    for k in (1, 2):
        out = sweep.outcome(k, TIGHT)
        assert out.record is not None and out.record.ok and out.compared == 1


def bias_chain(bias_noise: float = 0.0) -> list[ir.Graph]:
    """g0: x -> Relu -> MatMul -> Add -> y; g1: the Relu as Max(x, 0) (a rewritten node that runs);
    g2: MatMul + Add -> Linear(r, W, b); g3: the bias moved out again, Linear(r, W) -> Add."""
    rng = np.random.default_rng(4)
    g0 = ir.Graph("chain")
    x = g0.add_input("x", ir.TensorType(F32, ("batch", "seq", 8)))
    r = g0.add_node("Relu", [x], name="relu").output
    w = g0.add_initializer("w", rng.standard_normal((8, 8)).astype(np.float32))
    b = g0.add_initializer("b", rng.standard_normal(8).astype(np.float32))
    m = g0.add_node("MatMul", [r, w], name="mm").output
    g0.set_outputs([g0.add_node("Add", [m, b], name="add").output])
    g1 = g0.copy()
    relu = g1.node("relu")
    mx = g1.add_node("Max", [relu.inputs[0], g1.add_initializer("zero", np.zeros((), np.float32))], name="max", before=relu)
    relu.output.replace_all_uses_with(mx.output)
    g1.remove_unused()
    g2 = g1.copy()
    mm, add = g2.node("mm"), g2.node("add")
    bias = add.inputs[1]
    if bias_noise:
        bias = g2.add_initializer("b_damaged", bias.const + np.float32(bias_noise))
    lin = g2.add_node("Linear", [mm.inputs[0], mm.inputs[1], bias], name="lin", before=add)
    add.output.replace_all_uses_with(lin.output)
    g2.remove_unused()
    g3 = g2.copy()
    lin = g3.node("lin")
    bare = g3.add_node("Linear", list(lin.inputs[:2]), name="lin_bare", before=lin)
    moved = g3.add_node("Add", [bare.output, lin.inputs[2]], name="bias_add", before=lin)
    lin.output.replace_all_uses_with(moved.output)
    g3.remove_unused()
    return [g0, g1, g2, g3]


def test_sweep_runs_a_biased_linear_as_matmul_and_add_so_a_moved_bias_costs_no_product() -> None:
    """A Linear with bias runs as the MatMul and Add that define it: when a later pass moves the bias out
    (SkipLayerNorm fusion does), the bias-free Linear is that MatMul, computed once."""
    graphs = bias_chain()
    sweep = LocalSweep(graphs)
    assert (sweep.tasks, sweep.shared) == (2, 2)  # max, lin (its MatMul and Add); lin_bare and bias_add are shared
    assert sum("[pass 2, MatMul]" in st.node_name for st in sweep._steps) == 1
    x = np.random.default_rng(6).standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(sweep.run({"x": x})[0], Interpreter(graphs[0]).run({"x": x})["add"])
    for k in (1, 2, 3):
        out = sweep.outcome(k, TIGHT)
        assert out.record is not None and out.record.ok
    # a wrong bias in the Linear is still caught: its Add runs on the Linear's own bias
    bad = LocalSweep(bias_chain(bias_noise=0.5))
    bad.run({"x": x})
    out = bad.outcome(2, TIGHT)
    assert out.record is not None and not out.record.ok and "%lin" in out.record.failures[0]


def norm_chain(epsilon: float = 1e-5) -> list[ir.Graph]:
    """g0: x -> LayerNormalization -> MatMul -> Add(bias, product) -> y (an exported layer);
    g1: the LayerNormalization as an accelopt LayerNorm (``epsilon``);
    g2: MatMul + Add -> Linear(ln, W, b), with b an equal copy of the bias (as ``cse`` may leave it)."""
    rng = np.random.default_rng(7)
    g0 = ir.Graph("norm")
    x = g0.add_input("x", ir.TensorType(F32, ("batch", "seq", 8)))
    gamma = g0.add_initializer("gamma", rng.standard_normal(8).astype(np.float32))
    beta = g0.add_initializer("beta", rng.standard_normal(8).astype(np.float32))
    ln = g0.add_node("LayerNormalization", [x, gamma, beta], {"axis": -1, "epsilon": 1e-5}, name="ln").output
    m = g0.add_node("MatMul", [ln, g0.add_initializer("w", rng.standard_normal((8, 8)).astype(np.float32))], name="mm")
    bias = g0.add_initializer("b", rng.standard_normal(8).astype(np.float32))
    g0.set_outputs([g0.add_node("Add", [bias, m.output], name="add").output])
    g1 = g0.copy()
    old = g1.node("ln")
    new = g1.add_node("LayerNorm", list(old.inputs), {"axis": -1, "epsilon": epsilon}, name="ln_fused", before=old)
    old.output.replace_all_uses_with(new.output)
    g1.remove_unused()
    g2 = g1.copy()
    mm, add = g2.node("mm"), g2.node("add")
    copy = g2.add_initializer("b_copy", add.inputs[0].const.copy())
    lin = g2.add_node("Linear", [mm.inputs[0], mm.inputs[1], copy], name="lin", before=add)
    add.output.replace_all_uses_with(lin.output)
    g2.remove_unused()
    return [g0, g1, g2]


def test_sweep_runs_layernorm_as_the_exported_layernormalization_and_linear_as_its_ops() -> None:
    """A LayerNorm is ONNX LayerNormalization: rewriting an exported one runs nothing, and the Linear that
    reads it is the old MatMul and Add (the bias an equal copy, the Add's operands the other way round)."""
    graphs = norm_chain()
    sweep = LocalSweep(graphs)
    assert (sweep.tasks, sweep.shared) == (0, 2)
    x = np.random.default_rng(8).standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(sweep.run({"x": x})[0], Interpreter(graphs[0]).run({"x": x})["add"])
    for k in (1, 2):
        out = sweep.outcome(k, TIGHT)
        assert out.record is not None and out.record.ok
    # a LayerNorm with another epsilon is not the old node: it runs, and the check sees the difference
    bad = LocalSweep(norm_chain(epsilon=0.1))
    assert (bad.tasks, bad.shared) == (2, 0)  # ln_fused, and lin (its MatMul and Add) on its result
    bad.run({"x": x})
    out = bad.outcome(1, TIGHT)
    assert out.record is not None and not out.record.ok and "%ln_fused" in out.record.failures[0]


def test_pair_stats_scale_errors_by_magnitude_and_catch_nan_and_integers() -> None:
    s = PairStats("a", "b", "n", "Op")
    old = np.array([[-1e4, 0.5, 2.0]], dtype=np.float32)
    s.update(old + np.array([[0.5, 2e-5, 0.0]], dtype=np.float32), old)
    assert s.max_err == pytest.approx(5e-5, rel=1e-3)  # 0.5 on -1e4, 2e-5 on 0.5
    assert s.max_abs == pytest.approx(0.5)
    assert judge([s], TIGHT).record.ok  # type: ignore[union-attr]
    n = PairStats("a", "b", "n", "Op")
    n.update(np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    assert not judge([n], TIGHT).record.ok  # type: ignore[union-attr]
    i = PairStats("a", "b", "n", "Op")
    i.update(np.array([1, 2, 3]), np.array([1, 2, 4]))
    assert i.int_mismatches == 1 and not judge([i], TIGHT).record.ok  # type: ignore[union-attr]
    sc = PairStats("a", "b", "n", "Op")
    sc.update(np.array(2.0, dtype=np.float32), np.array(2.5, dtype=np.float32))  # scalars: no rows
    assert sc.max_err == pytest.approx(0.2) and sc.cosine_min == 1.0
    sh = PairStats("a", "b", "n", "Op")
    sh.update(np.zeros((2, 3)), np.zeros((3, 2)))
    assert "shape" in judge([sh], TIGHT).record.failures[0]  # type: ignore[union-attr]


def test_pair_stats_row_cosines_are_accurate_across_blocks_of_rows() -> None:
    """1 - cosine of nearly equal rows (rounding-sized differences, one row also rescaled: |a| != |b|)
    against float64 dot products; the worst row sits in a later block of rows than the first."""
    rng = np.random.default_rng(5)
    old = rng.standard_normal((2, 40, 4096)).astype(np.float32)
    new = (old * (1 + 1e-6 * rng.standard_normal(old.shape))).astype(np.float32)
    new[1, 37] *= np.float32(1 + 3e-5)  # a pure rescale: cosine 1 up to the rounding above
    new[1, 30] += np.float32(1e-3) * rng.standard_normal(4096).astype(np.float32)  # the worst row
    s = PairStats("a", "b", "n", "Op")
    s.update(new, old)
    x, y = new.reshape(-1, 4096).astype(np.float64), old.reshape(-1, 4096).astype(np.float64)
    one_minus = 1.0 - np.einsum("ij,ij->i", x, y) / np.sqrt(np.einsum("ij,ij->i", x, x) * np.einsum("ij,ij->i", y, y))
    assert int(np.argmax(one_minus)) == 40 + 30
    assert 1.0 - s.cosine_min == pytest.approx(float(one_minus.max()), rel=1e-3)
    assert s.max_abs == pytest.approx(float(np.abs(x - y).max()), rel=1e-6)
    rescaled = PairStats("a", "b", "n", "Op")
    rescaled.update(new[1, 37:38], old[1, 37:38])
    assert 1.0 - rescaled.cosine_min == pytest.approx(float(one_minus[77]), rel=0.05, abs=1e-13)


def test_plan_probe_sees_a_value_an_inplace_kernel_could_have_taken() -> None:
    seen: list[np.ndarray] = []
    specs = [
        StepSpec("r1", "Relu", {}, (0,), (1,)),
        StepSpec("r2", "Neg", {}, (1,), (2,)),  # slot 1 would be donated here without the probe below
        StepSpec("look", inputs=(1,), probe=lambda args: seen.append(np.array(args[0]))),
    ]
    steps = compile_plan(specs, keep={0, 2})
    x = np.array([-1.0, 2.0, -3.0], dtype=np.float32)
    env: list[np.ndarray | None] = [x, None, None]
    execute(steps, env)
    np.testing.assert_array_equal(seen[0], [0.0, 2.0, 0.0])
    np.testing.assert_array_equal(env[2], [0.0, -2.0, 0.0])
    assert env[1] is None  # freed after its last reader, the probe


# ------------------------------------------------------ the pass manager
class Fuse(Pass):
    """The ``fused`` rewrite as a pass."""

    name = "test-fuse"
    family = "fusion"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        if "mm1" not in {n.name for n in graph.nodes}:
            return PassResult(graph, False)
        return PassResult(fused(graph), True)


class Damage(Pass):
    name = "test-damage"
    family = "fusion"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        return PassResult(damaged(graph), True)


class Rename(Pass):
    name = "test-rename"
    family = "cleanup"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        relu = graph.node("relu")
        graph.rename_node(relu, "relu_renamed")
        graph.rename_value(relu.output, "relu_renamed")
        return PassResult(graph, True)


class Insert(Pass):
    """An Identity before mm2."""

    name = "test-insert"
    family = "cleanup"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        mm2 = graph.node("mm2")
        ident = graph.add_node("Identity", [mm2.inputs[0]], name="ident", before=mm2)
        mm2.set_input(0, ident.output)
        return PassResult(graph, True)


class Nudge(Pass):
    """Scales relu's input by 1 + 5e-5: within the local tolerance, but the output (x1000) moves by far more."""

    name = "test-nudge"
    family = "fusion"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        relu = graph.node("relu")
        k = graph.add_initializer("nudge", np.array(1 + 5e-5, dtype=np.float32))
        m = graph.add_node("Mul", [relu.inputs[0], k], name="nudged", before=relu)
        relu.set_input(0, m.output)
        return PassResult(graph, True)


class Scribble(Pass):
    """Tries to write into a weight it shares with the previous graph."""

    name = "test-scribble"
    family = "fusion"

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        w = graph.initializers["w1"].const
        assert w is not None
        w[0, 0] = 42.0  # read-only: raises
        return PassResult(graph, True)


def run(passes: list[Pass], v: Validator | None, **kw: object) -> tuple[ir.Graph, list]:
    return PassManager(passes, PassContext(validator=v, **kw)).run(mlp())  # type: ignore[arg-type]


def test_local_validation_keeps_what_whole_model_validation_keeps_with_fewer_runs() -> None:
    vl, vf = validator(local=True), validator(local=False)
    gl, rl = run([Fuse(), Damage(), *build_pipeline("cleanup")], vl)
    gf, rf = run([Fuse(), Damage(), *build_pipeline("cleanup")], vf)
    assert print_graph(gl) == print_graph(gf)
    assert [(r.spec, r.modified, r.rolled_back) for r in rl] == [(r.spec, r.modified, r.rolled_back) for r in rf]
    fuse, dmg = rl[0], rl[1]
    assert fuse.accuracy is not None and fuse.accuracy.scope == "local" and fuse.accuracy.ok
    assert any("validated locally" in n for n in fuse.notes)
    # the planted pass is still caught, judged on the whole model, and the diverging node named
    assert dmg.rolled_back and dmg.accuracy is not None and dmg.accuracy.scope == "model"
    assert dmg.localization is not None and dmg.localization.node == "mm2"
    assert any(n.startswith("local check: max_abs") for n in dmg.notes)


def test_exact_passes_cost_one_sweep_and_one_whole_model_run() -> None:
    vl, vf = validator(local=True), validator(local=False)
    gl, rl = run([Fuse(), Rename(), Insert()], vl)
    gf, rf = run([Fuse(), Rename(), Insert()], vf)
    assert print_graph(gl) == print_graph(gf)
    assert all(r.modified and not r.rolled_back for r in rl + rf)
    assert vl.runs == 2  # the sweep (start graph + rewritten nodes) and the final graph
    assert vf.runs == 4  # every graph once
    assert [r.accuracy.scope for r in rl if r.accuracy] == ["local"] * 3
    last = rl[-1].accuracy
    assert last is not None and last.vs_reference["max_abs"] <= 1e-3  # the whole-model check, on the last pass
    assert any(n.startswith("whole model after this pass") for n in rl[-1].notes)


def test_rollback_after_a_local_failure_restores_the_exact_graph_and_reruns_what_followed() -> None:
    g, recs = run([Fuse(), Damage(), Fuse()], validator())
    assert print_graph(g) == print_graph(fused(mlp()))
    assert [(r.spec, r.rolled_back) for r in recs] == [("test-fuse", False), ("test-damage", True), ("test-fuse", False)]
    assert not recs[2].modified  # ran again on the rolled-back graph: nothing left to fuse


def test_whole_model_check_catches_what_local_checks_let_through() -> None:
    v = validator()
    g, recs = run([Fuse(), Nudge()], v)
    assert print_graph(g) == print_graph(fused(mlp()))
    nudge = recs[-1]
    assert nudge.rolled_back and nudge.accuracy is not None and nudge.accuracy.scope == "model"
    assert any("vs previous" in f for f in nudge.accuracy.failures)
    assert any("whole-model check after locally validated passes test-fuse..test-nudge failed" in n for n in recs[0].notes)


def test_shared_weights_cannot_be_mutated_by_a_pass() -> None:
    start = mlp()
    w1 = start.initializers["w1"].const
    assert w1 is not None
    before = w1.copy()
    g, recs = PassManager([Scribble(), Fuse()], PassContext(validator=validator())).run(start)
    assert recs[0].pass_error and recs[0].rolled_back
    np.testing.assert_array_equal(w1, before)
    assert g.initializers["w1"].const is w1  # copies share the arrays, read-only


def test_hooks_and_dumps_stay_in_pipeline_order_with_deferred_checks(tmp_path) -> None:
    events: list[str] = []

    class Recorder:
        def after_pass(self, pass_, graph, record, ctx):
            events.append(f"after {record.spec}")

        def on_rollback(self, pass_, graph, record, ctx):
            events.append(f"rollback {record.spec}")

    dump = DumpIRInstrument(tmp_path)
    run([Fuse(), Damage(), *build_pipeline("dce")], validator(), instruments=[Recorder(), dump])
    assert events == ["after test-fuse", "rollback test-damage", "after test-damage", "after dce"]
    assert [p.name for p in dump.files] == [
        "000_input.txt",
        "001_test-fuse.txt",
        "002_test-damage.rejected.txt",
        "002_test-damage.txt",
        "003_dce.txt",
    ]


def test_a_pass_error_between_pending_passes_keeps_pipeline_order() -> None:
    events: list[str] = []

    class Recorder:
        def after_pass(self, pass_, graph, record, ctx):
            events.append(f"{'rollback ' if record.rolled_back else ''}{record.spec}")

    g, recs = run([Fuse(), *build_pipeline("break-graph"), Rename()], validator(), instruments=[Recorder()])
    assert events == ["test-fuse", "rollback break-graph", "test-rename"]
    assert recs[1].pass_error and not recs[0].rolled_back and not recs[2].rolled_back
    assert recs[1].accuracy is recs[0].accuracy  # a broken pass reuses the accuracy before it
    assert [r.accuracy.scope for r in (recs[0], recs[2]) if r.accuracy] == ["local", "local"]


@pytest.mark.parametrize(
    "family, exporter, opset", [("bert", "dynamo", 18), ("roberta", "legacy", 14), ("distilbert", "legacy", 17)]
)
def test_real_exports_keep_the_same_passes_either_way(family: str, exporter: str, opset: int) -> None:
    import modelzoo
    from accelopt.frontends.onnx import load_onnx

    m = load_onnx(modelzoo.export_onnx(family, exporter=exporter, opset=opset))
    results = {}
    for local in (True, False):
        v = Validator(m, ValidationConfig(num_samples=4, seq_len=16, local=local))
        g, recs = PassManager(build_pipeline("cleanup,fuse"), PassContext(validator=v)).run(m.graph)
        results[local] = (print_graph(g), [(r.spec, r.modified, r.rolled_back) for r in recs], v.runs)
    assert results[True][:2] == results[False][:2]
    assert any(kept for _, kept, back in results[True][1] if not back)
    assert results[True][2] == 2 < results[False][2]  # one sweep and the final graph
