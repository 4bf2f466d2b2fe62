"""The cpu target against onnxruntime, OpenVINO and torch: BERT-base and all-MiniLM-L6-v2, seq 128, batch 1 and 8.

For each model and batch size, in one run, every runtime is timed in alternating blocks
(``benchmarks.common.interleaved_ms``: medians after warm-up, a pause before each block):

- accelopt ``--target cpu``: fp32 untuned (``cleanup,fuse``, the x86 kernels' hand schedules), fp32
  tuned (BERT-base, batch 1: MetaSchedule with ``TUNE_TRIALS`` trials, about a 30-minute budget here; the
  records persist in the default tuning database, so a later run of this benchmark reuses them and runs no
  trials), and
  int8 (``cleanup,fuse,int8``: VNNI dense, per-row dynamic activations). bf16 is not offered by the cpu
  target (TVM cannot emit ``vdpbf16ps``; see README), so there is no accelopt bf16 row;
- onnxruntime: the exported model, the same after its transformers optimizer
  (``optimize_model(model_type="bert")``), and after ``quantize_dynamic`` (int8 weights per channel);
- OpenVINO (``pip install -e .[bench]``): fp32, bf16 (inference precision hint) and int8 through NNCF
  post-training quantization (calibrated on the built-in calibration sentences); rows are skipped with a
  note when openvino/nncf are not installed;
- torch eager and ``torch.compile`` (the same weights), 2 threads.

Accuracy beside each row: for fp32 rows the largest difference from onnxruntime's output on the timed
inputs; for int8/bf16 rows the worst mean-pooled embedding cosine on all-MiniLM-L6-v2's 32 held-out
sentences against the fp32 model (as ``bench_quantization`` measures it). Compile/prepare times are
the wall time to produce each runtime's executable (accelopt: the target's lowering and build).

    python -m benchmarks.run cpu
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEQ = 128
BATCHES = (1, 8)
#: MetaSchedule trials for the tuned BERT-base batch-1 row (a budget of about 30 minutes on 2 cores;
#: the tuning time measured is reported beside the row)
TUNE_TRIALS = 640
ROUNDS = {1: 5, 8: 3}
REPEAT = {1: 5, 8: 2}
log = logging.getLogger(__name__)


@dataclass
class Row:
    name: str
    fn: Callable[[], Any]
    prepare_s: float
    accuracy: str = ""
    note: str = ""


@dataclass
class Result:
    rows: dict[str, Row] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ models
@dataclass
class Model:
    key: str
    label: str
    path: Path
    family: str
    heads: int
    hidden: int
    torch_model: Callable[[], Any]


def _models() -> list[Model]:
    import modelzoo

    return [
        Model(
            "bert",
            "BERT-base (seeded random weights)",
            modelzoo.export_onnx("bert", size="full"),
            "bert",
            12,
            768,
            lambda: modelzoo.build_model("bert", modelzoo.full_config("bert")),
        ),
        Model(
            "minilm",
            "all-MiniLM-L6-v2 (real weights)",
            modelzoo.minilm_onnx(),
            "minilm",
            12,
            384,
            lambda: modelzoo.build_model("minilm"),
        ),
    ]


def _inputs(model: Model, batch: int) -> dict[str, np.ndarray]:
    """BERT-base: seeded random tokens (padded rows after the first); MiniLM: held-out sentences, padded."""
    import modelzoo
    from accelopt.samples import HELDOUT_SENTENCES, bundled_tokenizer, tokenize

    if model.family == "minilm":
        return tokenize(bundled_tokenizer(), list(HELDOUT_SENTENCES[:batch]), SEQ)
    return modelzoo.family_inputs("bert", batch, SEQ, seed=0, config=modelzoo.full_config("bert"))


# ---------------------------------------------------------------- runtimes
def _accelopt(model: Model, batch: int, passes: str, options: str = "") -> tuple[Any, float, dict[str, Any]]:
    import accelopt as ao

    spec = f"cpu{{batch={batch}{',' + options if options else ''}}}"
    res, _ = _timed(lambda: ao.optimize(str(model.path), target=spec, passes=passes, seq_len=SEQ, validate=False))
    meta = res.artifact.metadata
    return res.artifact, float(meta["seconds"]["total"]), meta


def _ort_session(path: Path | str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_runner(sess: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    f = _feed_for(sess, feed)
    return lambda: sess.run(None, f)


def _ort_variants(model: Model, tmp: Path) -> dict[str, tuple[Path, float]]:
    """onnxruntime's transformers optimizer and quantize_dynamic (per channel) outputs, with their times."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    out: dict[str, tuple[Path, float]] = {}
    opt_path = tmp / f"{model.key}-ort-opt.onnx"

    def opt() -> None:
        m = optimize_model(str(model.path), model_type="bert", num_heads=model.heads, hidden_size=model.hidden)
        m.save_model_to_file(str(opt_path))

    with _quiet():
        _, s = _timed(opt)
    out["opt"] = (opt_path, s)
    q_path = tmp / f"{model.key}-ort-int8.onnx"
    with _quiet():
        _, s = _timed(lambda: quantize_dynamic(str(model.path), str(q_path), weight_type=QuantType.QInt8, per_channel=True))
    out["int8"] = (q_path, s)
    return out


@contextlib.contextmanager
def _quiet() -> Any:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _openvino(model: Model, batch: int, calibration: list[dict[str, np.ndarray]]) -> dict[str, tuple[Any, float]]:
    """OpenVINO fp32, bf16 and NNCF int8 compiled models (empty when openvino/nncf are missing)."""
    try:
        import openvino as ov
    except ImportError:
        return {}
    core = ov.Core()
    shape = {n: [batch, SEQ] for n in _input_names(model)}
    out: dict[str, tuple[Any, float]] = {}

    def compile_fp(hint: str) -> Any:
        m = core.read_model(str(model.path))
        m.reshape(shape)
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint})

    for name, hint in (("fp32", "f32"), ("bf16", "bf16")):
        cm, s = _timed(lambda h=hint: compile_fp(h))
        out[name] = (cm, s)
    try:
        import nncf
    except ImportError:
        return out

    def quantize() -> Any:
        m = core.read_model(str(model.path))
        m.reshape(shape)
        data = nncf.Dataset(calibration)
        q = nncf.quantize(m, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
        return core.compile_model(q, "CPU")

    with _quiet():
        cm, s = _timed(quantize)
    out["int8"] = (cm, s)
    return out


def _input_names(model: Model) -> list[str]:
    import modelzoo

    return modelzoo.input_names(model.family)


def _ov_runner(cm: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    names = [i.get_any_name() for i in cm.inputs]
    f = {k: feed[k] for k in names}
    req = cm.create_infer_request()
    return lambda: req.infer(f)


def _torch(model: Model, feed: dict[str, np.ndarray]) -> dict[str, tuple[Callable[[], Any], float]]:
    import torch

    torch.set_num_threads(2)
    with _quiet():
        m = model.torch_model()
    args = [torch.from_numpy(feed[n]) for n in _input_names(model)]

    def eager() -> Any:
        with torch.inference_mode():
            return m(*args)

    compiled = torch.compile(m)

    def comp() -> Any:
        with torch.inference_mode():
            return compiled(*args)

    _, s = _timed(comp)  # the first call compiles
    return {"eager": (eager, 0.0), "compile": (comp, s)}


# ---------------------------------------------------------------- accuracy
class MiniLMAccuracy:
    """Worst pooled cosine on MiniLM's held-out sentences against the original model (fp32, onnxruntime)."""

    def __init__(self, path: Path) -> None:
        from accelopt.frontends.onnx import load_onnx
        from accelopt.validation import ValidationConfig, Validator

        self.model = load_onnx(path)
        self.validator = Validator(self.model, ValidationConfig(num_samples=32, seq_len=SEQ))

    def pooled_cosine(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> float:
        v = self.validator

        def run_batch(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
            out = run(batch)
            return [out[n] for n in v.output_names]

        rec = v.evaluate_outputs(v.run_inputs(run_batch, self.model.graph))
        return float(rec.per_output["last_hidden_state"]["pooled_cosine_min"])

    def calibration(self, batch: int) -> list[dict[str, np.ndarray]]:
        from accelopt.samples import default_samples

        samples = default_samples(self.model.graph, None, n=32, seq_len=SEQ, purpose="calibration")
        return [b for b in samples.as_list(batch) if next(iter(b.values())).shape[0] == batch]


def _chunked(run1: Callable[[dict[str, np.ndarray]], Any], names: list[str], batch: int) -> Callable[..., Any]:
    """A runner compiled for ``batch`` applied to any number of rows (padded with the last row)."""

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = next(iter(feed.values())).shape[0]
        outs: list[Any] = []
        for s in range(0, n, batch):
            part = {k: v[s : s + batch] for k, v in feed.items()}
            got = part[next(iter(part))].shape[0]
            if got < batch:
                part = {k: np.concatenate([v, np.repeat(v[-1:], batch - got, 0)]) for k, v in part.items()}
            res = run1(part)
            outs.append([np.asarray(r)[:got] for r in res])
        return {nm: np.concatenate([o[i] for o in outs]) for i, nm in enumerate(names)}

    return run


# ------------------------------------------------------------------- bench
def bench(model: Model, batch: int, tmp: Path, ort_extra: dict[str, tuple[Path, float]], acc: MiniLMAccuracy | None,
          tune: bool) -> Result:
    feed = _inputs(model, batch)
    res = Result()
    out_names = ["last_hidden_state", "pooler_output"]
    ref_sess = _ort_session(model.path)
    ref = ref_sess.run(None, _feed_for(ref_sess, feed))[0]

    def max_err(out: Any) -> str:
        return f"max abs {float(np.max(np.abs(np.asarray(out, np.float64) - ref))):.1e}"

    def cosine(run1: Callable[[dict[str, np.ndarray]], Any]) -> str:
        if acc is None:
            return ""
        return f"pooled cosine {acc.pooled_cosine(_chunked(run1, out_names, batch)):.4f}"

    res.rows["ort"] = Row("onnxruntime fp32", _ort_runner(ref_sess, feed), 0.0, "reference")
    opt_sess = _ort_session(ort_extra["opt"][0])
    res.rows["ort_opt"] = Row("onnxruntime fp32, transformers optimizer", _ort_runner(opt_sess, feed),
                              ort_extra["opt"][1], max_err(opt_sess.run(None, _feed_for(opt_sess, feed))[0]))
    q_sess = _ort_session(ort_extra["int8"][0])
    res.rows["ort_int8"] = Row("onnxruntime int8 (`quantize_dynamic`, per channel)", _ort_runner(q_sess, feed),
                               ort_extra["int8"][1], cosine(lambda f: q_sess.run(None, _feed_for(q_sess, f))))
    art, s, meta = _accelopt(model, batch, "cleanup,fuse")
    res.rows["acc_fp32"] = Row("accelopt cpu fp32, untuned", lambda: art.run(feed), s,
                               max_err(art.run(feed)["last_hidden_state"]))
    if tune:
        art_t, s_t, meta_t = _accelopt(model, batch, "cleanup,fuse", f"tune_trials={TUNE_TRIALS}")
        t = meta_t.get("tuning") or {}
        how = (f"tuned now: {t.get('trials')} trials in {t.get('seconds', 0):.0f} s" if t.get("trials")
               else f"database from an earlier run ({TUNE_TRIALS} trials), no new trials")
        e2e = t.get("end_to_end") or {}
        if "kept" in e2e and "tuned_ms" in e2e:
            how += (f"; whole module timed at compile: tuned {e2e['tuned_ms']:.1f} ms, hand-scheduled "
                    f"{e2e['hand_ms']:.1f} ms, the {e2e['kept']} schedules kept")
        res.rows["acc_tuned"] = Row(f"accelopt cpu fp32, tuned ({TUNE_TRIALS} trials)", lambda: art_t.run(feed), s_t,
                                    max_err(art_t.run(feed)["last_hidden_state"]), how)
    art_q, s_q, meta_q = _accelopt(model, batch, "cleanup,fuse,int8")
    res.rows["acc_int8"] = Row("accelopt cpu int8", lambda: art_q.run(feed), s_q,
                               cosine(lambda f: [art_q.run(f)[n] for n in out_names]))
    cal = acc.calibration(batch) if acc is not None else [feed]
    ov = _openvino(model, batch, cal)
    if not ov:
        res.notes.append("OpenVINO rows skipped: `openvino`/`nncf` not installed (`pip install -e .[bench]`).")
    for key, label in (("fp32", "OpenVINO fp32"), ("bf16", "OpenVINO bf16"), ("int8", "OpenVINO int8 (NNCF)")):
        if key not in ov:
            continue
        cm, s = ov[key]
        accuracy = max_err(cm(feed)[0]) if key == "fp32" else cosine(lambda f, c=cm: list(c(f).values()))
        res.rows[f"ov_{key}"] = Row(label, _ov_runner(cm, feed), s, accuracy)
    for key, (fn, s) in _torch(model, feed).items():
        label = "torch eager" if key == "eager" else "torch.compile"
        res.rows[f"torch_{key}"] = Row(label, fn, s, max_err(fn()[0].numpy()))
    res.ms = _measure({k: r.fn for k, r in res.rows.items()}, batch)
    del meta, meta_q
    return res


def _feed_for(sess: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}


def _measure(fns: dict[str, Callable[[], Any]], batch: int) -> dict[str, float]:
    from benchmarks.common import interleaved_ms

    return interleaved_ms(fns, rounds=ROUNDS[batch], repeat=REPEAT[batch], warmup=2, settle_s=0.3)


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run(lines: list[str], models: tuple[str, ...] = ("bert", "minilm"), batches: tuple[int, ...] = BATCHES) -> None:
    logging.getLogger("accelopt").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="accelopt-bench-cpu-"))
    lines.append(f"## cpu target: BERT-base and all-MiniLM-L6-v2, sequence {SEQ}")
    lines.append("")
    lines.append(
        "Latency medians (ms) after warm-up, every runtime timed in alternating blocks in one run per model and "
        "batch size; ratios against onnxruntime fp32 measured in the same run. Accuracy: fp32 rows, the largest "
        "difference from onnxruntime's `last_hidden_state`; int8/bf16 rows, the worst mean-pooled embedding cosine "
        "on all-MiniLM-L6-v2's 32 held-out sentences (MiniLM only). Prepare: wall seconds to produce the "
        "executable (accelopt: lowering and TVM build; torch.compile: the first call)."
    )
    lines.append("")
    for model in _models():
        if model.key not in models:
            continue
        acc = MiniLMAccuracy(model.path) if model.family == "minilm" else None
        ort_extra = _ort_variants(model, tmp)
        results = {}
        loads = {}
        for batch in batches:
            loads[batch] = _load()
            results[batch] = bench(model, batch, tmp, ort_extra, acc, tune=model.key == "bert" and batch == 1)
        _table(lines, model, results, loads)
    lines.append(
        "accelopt bf16: not offered. TVM 0.27 turns bf16 vectors into f32 in its BF16ComputeLegalize/"
        "BF16StorageLegalize passes (also through a uint16 reinterpret), and skipping those passes crashes its LLVM "
        "codegen; without `vdpbf16ps` a bf16 dense runs as convert + f32 FMA, slower than fp32, so the cpu target "
        "keeps bf16 graphs in fp32 and says so."
    )


def _table(lines: list[str], model: Model, results: dict[int, Result], loads: dict[int, str]) -> None:
    lines.append(f"### {model.label}")
    lines.append("")
    batches = sorted(results)
    head = " | ".join(f"b{b} ms | b{b} vs ORT" for b in batches)
    lines.append(f"| runtime | {head} | prepare s | accuracy |")
    lines.append("|---|" + "---:|---:|" * len(batches) + "---:|---|")
    keys = list(results[batches[0]].rows)
    for k in keys:
        cells = []
        for b in batches:
            r = results[b]
            if k not in r.ms:
                cells.append("- | -")
                continue
            cells.append(f"{r.ms[k]:.1f} | {r.ms[k] / r.ms['ort']:.2f}")
        row = results[batches[0]].rows[k]
        prep = statistics.mean(results[b].rows[k].prepare_s for b in batches if k in results[b].rows)
        extra = "; ".join(x for x in (row.accuracy, row.note) if x)
        lines.append(f"| {row.name} | {' | '.join(cells)} | {prep:.1f} | {extra} |")
    lines.append("")
    for b in batches:
        r = results[b]
        if "acc_fp32" in r.ms and "ov_fp32" in r.ms:
            lines.append(f"- batch {b}: accelopt fp32 / OpenVINO fp32 = {r.ms['acc_fp32'] / r.ms['ov_fp32']:.2f}; "
                         + (f"accelopt int8 / OpenVINO int8 = {r.ms['acc_int8'] / r.ms['ov_int8']:.2f}; "
                            if "ov_int8" in r.ms else "")
                         + f"accelopt int8 / onnxruntime int8 = {r.ms['acc_int8'] / r.ms['ort_int8']:.2f} "
                         f"(load average {loads[b]} before the run)")
        for n in r.notes:
            lines.append(f"- {n}")
    lines.append("")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    wanted_models = tuple(a for a in args if a in ("bert", "minilm")) or ("bert", "minilm")
    wanted_batches = tuple(int(a[1:]) for a in args if a.startswith("b") and a[1:].isdigit()) or BATCHES
    out: list[str] = []
    run(out, wanted_models, wanted_batches)
    print("\n".join(out))
