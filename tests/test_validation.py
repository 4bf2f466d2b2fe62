"""Validation: metrics, tolerances, the Validator (caching, rollback decisions, localization) and sample inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import accelopt.ir as ir
from accelopt.errors import ValidationError
from accelopt.interpreter import Interpreter
from accelopt.ir.graph import Provenance
from accelopt.model import Model
from accelopt.samples import (
    BUNDLED_VOCAB_SIZE,
    CALIBRATION_SENTENCES,
    HELDOUT_SENTENCES,
    bundled_tokenizer,
    default_samples,
    load_samples,
    lookup_table_size,
    random_inputs,
    tokenize,
)
from accelopt.validation import (
    DEFAULT_TOLERANCES,
    ValidationConfig,
    Validator,
    compare,
    graph_fingerprint,
    loosest,
    parse_tolerance,
    summarize,
    tolerance_for,
    violations,
)

F32 = ir.DType.FLOAT32
I64 = ir.DType.INT64


# --------------------------------------------------------------- fixtures
def mlp(bias_scale: float = 1.0, *, w2_noise: float = 0.0, hidden_output: bool = False) -> ir.Graph:
    """x[batch, seq, 8] -> MatMul -> Add -> Relu -> MatMul -> y; weights seeded.
    ``hidden_output``: the Relu's result is a second output."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 8)).astype(np.float32)
    if w2_noise:
        w2 = w2 + w2_noise * np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    g = ir.Graph("mlp")
    x = g.add_input("x", ir.TensorType(F32, ("batch", "seq", 8)))
    a = g.add_node("MatMul", [x, g.add_initializer("w1", w1)], name="mm1").output
    b = g.add_node("Add", [a, g.add_initializer("b1", np.arange(8, dtype=np.float32) * bias_scale)], name="add1").output
    r = g.add_node("Relu", [b], name="relu").output
    y = g.add_node("MatMul", [r, g.add_initializer("w2", w2)], name="mm2").output
    g.set_outputs([y, r] if hidden_output else [y])
    return g


class CountingReference:
    """A reference runtime (the interpreter on a fixed graph) that counts its calls."""

    def __init__(self, graph: ir.Graph) -> None:
        self.interp = Interpreter(graph)
        self.calls = 0

    def __call__(self, inputs):
        self.calls += 1
        return self.interp.run(inputs)


def mlp_model(*, hidden_output: bool = False) -> tuple[Model, CountingReference]:
    ref = CountingReference(mlp(hidden_output=hidden_output))
    return Model(mlp(hidden_output=hidden_output), "mlp", "test", reference_fn=ref), ref


def text_graph(vocab: int) -> ir.Graph:
    """input_ids/attention_mask -> embedding Gather (table [vocab, 4]) -> masked states."""
    g = ir.Graph("text")
    ids = g.add_input("input_ids", ir.TensorType(I64, ("batch", "seq")))
    mask = g.add_input("attention_mask", ir.TensorType(I64, ("batch", "seq")))
    table = np.random.default_rng(0).standard_normal((vocab, 4)).astype(np.float32)
    emb = g.add_node("Gather", [g.add_initializer("table", table), ids], name="embed").output
    m = g.add_node("Cast", [mask], {"to": F32}, name="cast").output
    axes = g.add_initializer("axes", np.array([-1], dtype=np.int64))
    m3 = g.add_node("Unsqueeze", [m, axes], name="unsq").output
    out = g.add_node("Mul", [emb, m3], name="masked").output
    g.set_outputs([out])
    return g


# ----------------------------------------------------------------- tolerances
def test_parse_tolerance_and_errors() -> None:
    assert parse_tolerance("cosine=0.995, max_abs=1e-3") == {"cosine": 0.995, "max_abs": 1e-3}
    assert parse_tolerance({"argmax": 1}) == {"argmax": 1.0}
    assert parse_tolerance(None) == {}
    with pytest.raises(ValidationError, match="unknown tolerance 'cosin'.*known: max_abs"):
        parse_tolerance("cosin=0.9")
    with pytest.raises(ValidationError, match="not a number"):
        parse_tolerance("cosine=high")
    with pytest.raises(ValidationError, match="expected key=value"):
        parse_tolerance("cosine")
    with pytest.raises(ValidationError, match="not finite"):
        parse_tolerance("max_abs=inf")


def test_family_defaults_overrides_and_loosest() -> None:
    assert DEFAULT_TOLERANCES["cleanup"] == {"max_abs": 1e-4, "cosine": 0.99999}
    assert DEFAULT_TOLERANCES["quantization"] == {"cosine": 0.99}
    assert tolerance_for("fusion", {"cosine": 0.995}) == {"max_abs": 1e-4, "cosine": 0.995}
    assert tolerance_for("approximation") == {"cosine": 0.9999}
    # max_abs is unconstrained once a family without it took part; cosine takes the lowest bound
    assert loosest([tolerance_for("cleanup"), tolerance_for("quantization")]) == {"cosine": 0.99}
    assert loosest([tolerance_for("cleanup"), {"max_abs": 1e-3, "cosine": 0.999}]) == {"max_abs": 1e-3, "cosine": 0.999}


def test_violations_name_metric_bound_and_output() -> None:
    summary = {"max_abs": 0.5, "cosine_min": 0.9, "argmax_agreement": 1.0}
    where = {"max_abs": "logits", "cosine_min": "hidden"}
    msgs = violations(summary, {"max_abs": 1e-4, "cosine": 0.95, "argmax": 1.0}, against="previous", where=where)
    assert msgs == ["max_abs 0.5 > 0.0001 vs previous on logits", "cosine_min 0.9 < 0.95 vs previous on hidden"]
    assert violations({"max_abs": math.nan}, {"max_abs": 1.0}, against="reference") == ["max_abs nan > 1 vs reference"]


# --------------------------------------------------------------------- metrics
def test_compare_known_errors() -> None:
    ref = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    new = ref + np.array([[0.0, 0.5], [0.0, 0.0]], dtype=np.float32)
    m = compare(ref, new, name="hidden")
    assert m["max_abs"] == pytest.approx(0.5, abs=1e-7)
    assert m["mean_abs"] == pytest.approx(0.125, abs=1e-7)
    assert m["rel_l2"] == pytest.approx(0.5 / math.sqrt(26.0), rel=1e-6)
    cos0 = (9 + 4 * 4.5) / (5 * math.hypot(3, 4.5))
    assert m["cosine_min"] == pytest.approx(cos0, rel=1e-9)
    assert m["cosine_mean"] == pytest.approx((cos0 + 1) / 2, rel=1e-9)
    # two columns: treated as logits
    assert m["argmax_agreement"] == 1.0


def test_compare_identical_shape_mismatch_and_nan() -> None:
    a = np.random.default_rng(0).standard_normal((4, 3, 8)).astype(np.float32)
    same = compare(a, a.copy())
    assert same["max_abs"] == 0.0 and same["rel_l2"] == 0.0
    assert same["cosine_min"] == pytest.approx(1.0, abs=1e-12)
    bad = compare(a, a[:2])
    assert bad["max_abs"] == math.inf and bad["cosine_min"] == -1.0
    b = a.copy()
    b[0, 0, 0] = np.nan
    assert math.isnan(compare(a, b)["max_abs"])


def test_compare_ignores_padded_rows_with_mask() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 4, 8))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    new = ref.copy()
    new[1, 3] = -new[1, 3]  # a padded position flips sign
    masked = compare(ref, new, mask=mask)
    assert masked["cosine_min"] == pytest.approx(1.0, abs=1e-12)
    assert compare(ref, new)["cosine_min"] == pytest.approx(-1.0, abs=1e-12)
    # max_abs still sees every element
    assert masked["max_abs"] == pytest.approx(2 * np.abs(ref[1, 3]).max())


def test_compare_logits_argmax_agreement() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    new = ref.copy()
    new[3] = [2.5, 2.0, 0.0]  # one of four rows changes its argmax
    m = compare(ref, new, name="logits")
    assert m["argmax_agreement"] == 0.75
    assert "similarity_spearman" not in m


def test_compare_embeddings_similarity_metrics() -> None:
    rng = np.random.default_rng(0)
    states = rng.standard_normal((6, 5, 16))
    mask = np.ones((6, 5), dtype=np.int64)
    mask[2:, 3:] = 0
    # scaling every token state keeps the pooled directions: perfect similarity structure
    m = compare(states, 3.0 * states, mask=mask)
    assert m["pooled_cosine_min"] == pytest.approx(1.0, abs=1e-12)
    assert m["similarity_spearman"] == pytest.approx(1.0, abs=1e-12)
    assert m["similarity_max_abs"] == pytest.approx(0.0, abs=1e-12)
    # changing only padded tokens changes nothing once pooling is mask-aware
    noisy = states.copy()
    noisy[2:, 3:] += 100.0
    m2 = compare(states, noisy, mask=mask)
    assert m2["pooled_cosine_min"] == pytest.approx(1.0, abs=1e-12)
    # a real change in one sentence moves its similarities
    moved = states.copy()
    moved[0] = rng.standard_normal((5, 16))
    m3 = compare(states, moved, mask=mask)
    assert m3["pooled_cosine_min"] < 0.9 and m3["similarity_max_abs"] > 0.05 and m3["similarity_spearman"] < 1.0


def test_summarize_takes_the_worst_per_metric() -> None:
    s, where = summarize({"a": {"max_abs": 1.0, "cosine_min": 0.9}, "b": {"max_abs": 2.0, "cosine_min": 0.95}})
    assert s == {"max_abs": 2.0, "cosine_min": 0.9}
    assert where == {"max_abs": "b", "cosine_min": "a"}


# ------------------------------------------------------------------- validator
def test_validator_random_inputs_bind_symbolic_dims() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=6, seq_len=5))
    assert v.samples.arrays["x"].shape == (6, 5, 8)
    assert "random samples" in v.samples.source
    again = Validator(model, ValidationConfig(num_samples=6, seq_len=5)).samples.arrays["x"]
    np.testing.assert_array_equal(v.samples.arrays["x"], again)  # seeded


def test_check_accepts_equal_graph_and_rejects_damage() -> None:
    model, ref = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=6, seq_len=5))
    ok = v.check(mlp(), family="cleanup", previous=model.graph)
    assert ok.ok and ok.failures == []
    assert ok.vs_reference["max_abs"] == 0.0 and ok.vs_previous["max_abs"] == 0.0
    assert set(ok.tolerance) == {"max_abs", "cosine"}
    bad = v.check(mlp(bias_scale=1.5), family="cleanup", previous=model.graph)
    assert not bad.ok
    assert bad.failures[0].startswith("max_abs ") and "vs previous on mm2" in bad.failures[0]
    # the reference ran once, on all samples at once
    assert ref.calls == 1


def test_check_family_tolerance_and_user_budget() -> None:
    model, _ = mlp_model()
    slightly = mlp(w2_noise=1e-3)
    v = Validator(model, ValidationConfig(num_samples=6, seq_len=5))
    assert not v.check(slightly, family="fusion", previous=model.graph).ok  # max_abs 1e-4 is too tight
    rec = v.check(slightly, family="quantization", previous=model.graph)
    assert rec.ok and rec.vs_reference["cosine_min"] > 0.99
    # a user budget is also checked against the reference
    v2 = Validator(model, ValidationConfig(num_samples=6, seq_len=5, tolerance={"cosine": 0.999999999}))
    rec2 = v2.check(slightly, family="quantization", previous=model.graph)
    assert not rec2.ok and any("vs reference" in f for f in rec2.failures)


def test_outputs_are_cached_by_fingerprint() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    g = mlp()
    v.check(g, family="cleanup", previous=model.graph)
    runs = v.runs
    assert runs == 2  # the new graph and the previous graph
    v.check(g.copy(), family="cleanup", previous=g)  # a copy shares constants and attrs: cache hits
    assert v.runs == runs
    g2 = mlp(bias_scale=2.0)
    assert graph_fingerprint(g2)[0] != graph_fingerprint(g)[0]
    v.check(g2, family="cleanup", previous=g)
    assert v.runs == runs + 1


def test_static_batch_runs_in_chunks_and_pads_the_last() -> None:
    g = ir.Graph("static")
    x = g.add_input("x", ir.TensorType(F32, (4, 3)))
    y = g.add_node("Relu", [x], name="relu").output
    g.set_outputs([y])
    calls: list[int] = []

    def ref(inputs):
        calls.append(inputs["x"].shape[0])
        return {"relu": np.maximum(inputs["x"], 0)}

    v = Validator(Model(g, "static", "test", reference_fn=ref), ValidationConfig(num_samples=10))
    out = v.reference_outputs()[0]
    assert calls == [4, 4, 4]
    assert out.shape == (10, 3)
    np.testing.assert_array_equal(out, np.maximum(v.samples.arrays["x"], 0))


def test_evaluate_and_final_tolerance() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    assert v.final_tolerance([]) == tolerance_for("cleanup")
    assert v.final_tolerance(["cleanup", "precision"]) == {"cosine": 0.999}
    rec = v.evaluate(mlp(bias_scale=1.5), {"max_abs": 1e-4})
    assert not rec.ok and rec.vs_previous == {}
    assert v.evaluate(mlp(), {"max_abs": 0.0}).ok
    v2 = Validator(model, ValidationConfig(num_samples=4, seq_len=3, tolerance={"cosine": 0.5}))
    assert v2.final_tolerance(["cleanup"]) == {"cosine": 0.5}


def test_output_count_change_fails_the_check() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=3, seq_len=2))
    g = mlp()
    g.set_outputs([g.outputs[0], g.node("relu").output])
    rec = v.check(g, family="cleanup", previous=model.graph)
    assert not rec.ok and "2 outputs" in rec.failures[0]


# ---------------------------------------------------------------- localization
def test_localize_names_the_first_diverging_node_by_name() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    damaged = mlp(bias_scale=1.5)  # add1 changes; relu and mm2 follow
    v.check(damaged, family="cleanup", previous=model.graph)
    loc = v.localize(model.graph, damaged)
    assert loc is not None
    assert (loc.node, loc.op, loc.value, loc.metric) == ("add1", "Add", "add1", "max_abs")
    assert loc.error == pytest.approx(7 * 0.5, rel=1e-6)  # bias 7 * 1.5 vs 7 * 1.0 on the last column
    assert "matched by name" in loc.detail


def test_localize_matches_renamed_nodes_through_provenance() -> None:
    old = mlp()
    new = mlp()
    # replace Add+Relu by a renamed pair whose provenance points at the originals, with a wrong bias
    relu = new.node("relu")
    add = new.node("add1")
    bias = new.add_initializer("b1_bad", np.arange(8, dtype=np.float32) * 3.0)
    a2 = new.add_node(
        "Add", [add.inputs[0], bias], name="fused_add", after=relu, provenance=Provenance("fuse", "r", ("add1",))
    )
    r2 = new.add_node("Relu", [a2.output], name="fused_relu", after=a2, provenance=Provenance("fuse", "r", ("relu",)))
    relu.output.replace_all_uses_with(r2.output)
    new.remove_nodes([relu, add])
    new.remove_unused()
    new.toposort()
    new.verify()
    model = Model(old, "mlp", "test", reference_fn=CountingReference(mlp()))
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    loc = v.localize(old, new, family="fusion")
    assert loc is not None and loc.node == "fused_add"
    assert "provenance (origin add1)" in loc.detail


def test_localize_none_when_equal_and_cosine_for_quantization() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    assert v.localize(model.graph, mlp()) is None
    # under a cosine-only tolerance, a small relative error is not a divergence
    assert v.localize(model.graph, mlp(w2_noise=1e-4), family="quantization") is None


# --------------------------------------------------------------------- samples
def test_builtin_sentence_sets() -> None:
    assert len(CALIBRATION_SENTENCES) == 32 and len(HELDOUT_SENTENCES) == 32
    assert not set(CALIBRATION_SENTENCES) & set(HELDOUT_SENTENCES)
    assert len(set(CALIBRATION_SENTENCES + HELDOUT_SENTENCES)) == 64


def test_bundled_tokenizer_used_when_vocab_matches() -> None:
    g = text_graph(BUNDLED_VOCAB_SIZE)
    assert lookup_table_size(g, "input_ids") == BUNDLED_VOCAB_SIZE
    s = default_samples(g, None, n=5, seq_len=16)
    assert "bundled all-MiniLM-L6-v2 tokenizer" in s.source
    want = tokenize(bundled_tokenizer(), HELDOUT_SENTENCES[:5], 16)
    np.testing.assert_array_equal(s.arrays["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(s.arrays["attention_mask"], want["attention_mask"])
    assert s.arrays["input_ids"][0, 0] == 101  # [CLS]
    assert "token_type_ids" not in s.arrays  # the graph does not take it
    cal = default_samples(g, None, n=5, seq_len=16, purpose="calibration")
    assert not np.array_equal(cal.arrays["input_ids"], s.arrays["input_ids"])


def test_random_token_ids_in_vocab_with_padded_masks() -> None:
    g = text_graph(1000)
    s = default_samples(g, None, n=8, seq_len=12)
    ids, mask = s.arrays["input_ids"], s.arrays["attention_mask"]
    assert ids.shape == (8, 12) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 1000
    assert mask[0].all()  # one unpadded row
    lengths = mask.sum(axis=1)
    for row, n in zip(mask, lengths):
        assert row[:n].all() and not row[n:].any()  # padding is a tail
    assert (ids[mask == 0] == 0).all()
    assert lengths.min() < 12
    assert "vocabulary 1000" in s.source
    Interpreter(g).run(s.arrays)  # the ids are valid for the embedding table


def test_random_inputs_kinds() -> None:
    g = ir.Graph("kinds")
    g.add_input("x", ir.TensorType(F32, ("n", 3)))
    g.add_input("position_ids", ir.TensorType(I64, ("n", "s")))
    g.add_input("extra_mask", ir.TensorType(ir.DType.BOOL, ("n", "s")))
    arrs = random_inputs(g, 3, 5)
    assert arrs["x"].shape == (3, 3) and arrs["x"].dtype == np.float32
    np.testing.assert_array_equal(arrs["position_ids"], np.tile(np.arange(5), (3, 1)))
    assert arrs["extra_mask"].dtype == np.bool_ and arrs["extra_mask"][:, 0].all()


def test_load_samples_npz_text_and_errors(tmp_path: Path) -> None:
    g = text_graph(BUNDLED_VOCAB_SIZE)
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.savez(tmp_path / "s.npz", input_ids=ids, attention_mask=np.ones((3, 4), dtype=np.int64))
    s = load_samples(tmp_path / "s.npz", g, None, seq_len=8)
    assert s.num_samples == 3 and s.arrays["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(s.arrays["input_ids"], ids)
    np.savez(tmp_path / "bad.npz", input_ids=ids)
    with pytest.raises(ValidationError, match="lacks input"):
        load_samples(tmp_path / "bad.npz", g, None, seq_len=8)
    (tmp_path / "s.txt").write_text("Hello world.\n\nA second sentence.\n")
    t = load_samples(tmp_path / "s.txt", g, None, seq_len=8)
    assert t.num_samples == 2 and t.arrays["input_ids"].shape == (2, 8)
    assert "2 sentences from s.txt" == t.source
    with pytest.raises(ValidationError, match="does not exist"):
        load_samples(tmp_path / "missing.txt", g, None, seq_len=8)
    (tmp_path / "garbage.txt").write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ValidationError, match="UTF-8"):
        load_samples(tmp_path / "garbage.txt", g, None, seq_len=8)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValidationError, match="as .npz"):
        load_samples(tmp_path / "garbage.npz", g, None, seq_len=8)
    with pytest.raises(ValidationError, match="does not match the bundled one"):
        load_samples(tmp_path / "s.txt", text_graph(1000), None, seq_len=8)


def test_run_inputs_in_chunks_of_a_given_batch() -> None:
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=10, seq_len=2))
    sizes: list[int] = []
    interp = Interpreter(model.graph)

    def fn(batch):
        sizes.append(batch["x"].shape[0])
        return [interp.run(batch)["mm2"]]

    (out,) = v.run_inputs(fn, model.graph, batch=3)
    assert sizes == [3, 3, 3, 3]  # the last chunk of one sample is padded to three
    np.testing.assert_array_equal(out, v.outputs(model.graph)[0])
    rec = v.evaluate_outputs([out], {"max_abs": 0.0}, previous=model.graph)
    assert rec.ok and rec.vs_previous["max_abs"] == 0.0


@pytest.mark.parametrize("hidden_output", [False, True], ids=["one-output", "two-outputs"])
def test_precheck_runs_the_first_chunk_only_then_the_reference(
    monkeypatch: pytest.MonkeyPatch, hidden_output: bool
) -> None:
    """A model run in chunks: the pre-check runs the imported graph once on the first chunk (nothing
    cached, no full run; one run whatever the number of outputs) and computes the reference once; a
    later full run is not skipped."""
    model, ref = mlp_model(hidden_output=hidden_output)
    v = Validator(model, ValidationConfig(num_samples=10, seq_len=3, batch=4))
    sizes: list[int] = []
    run = Interpreter.run

    def counting(self, inputs, **kw):
        if self is not ref.interp:  # the validator's runs, not the reference's
            sizes.append(inputs["x"].shape[0])
        return run(self, inputs, **kw)

    monkeypatch.setattr(Interpreter, "run", counting)
    v.precheck(model.graph)
    assert sizes == [4]
    assert v.runs == 0
    assert ref.calls == 3  # the reference: 10 samples in chunks of 4, computed once
    v.precheck(model.graph)
    assert ref.calls == 3
    sizes.clear()
    rec = v.evaluate(model.graph, tolerance_for("cleanup"))
    assert rec.ok and sizes == [4, 4, 4] and v.runs == 1


def test_precheck_of_a_micro_batched_model_runs_one_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large model (micro-batches, no batch size asked for): one sample shows that it runs; the full
    run later goes in micro-batches."""
    import accelopt.validation as validation

    monkeypatch.setattr(validation, "MICRO_BATCH_BYTES", 1)
    model, ref = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=10, seq_len=3, micro_batch=4))
    sizes: list[int] = []
    run = Interpreter.run

    def counting(self, inputs, **kw):
        if self is not ref.interp:
            sizes.append(inputs["x"].shape[0])
        return run(self, inputs, **kw)

    monkeypatch.setattr(Interpreter, "run", counting)
    v.precheck(model.graph)
    assert sizes == [1] and v.runs == 0
    sizes.clear()
    v.evaluate(model.graph, tolerance_for("cleanup"))
    assert sizes == [4, 4, 4]


def test_precheck_of_an_unchunked_model_is_the_cached_full_run() -> None:
    model, ref = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=4, seq_len=3))
    v.precheck(model.graph)
    assert v.runs == 1 and ref.calls == 1
    v.evaluate(model.graph)
    assert v.runs == 1


def test_precheck_raises_when_the_first_chunk_fails() -> None:
    """A graph that does not run on the inputs: the pre-check raises InterpreterError naming the node."""
    from accelopt.errors import InterpreterError

    g = mlp()
    bad = g.copy()
    node = next(n for n in bad.nodes if n.name == "mm2")
    node.inputs[1].const = np.ones((3, 8), np.float32)  # [.., 8] @ [3, 8]: fails when run
    model, _ = mlp_model()
    v = Validator(model, ValidationConfig(num_samples=10, seq_len=3, batch=4))
    with pytest.raises(InterpreterError, match="mm2"):
        v.precheck(bad)
