"""The Python API: ``load`` a model, ``optimize`` it for a target, get a ``Result``.

Example (a build script)::

    import accelopt as ao

    model = ao.load("bert.onnx")                 # or an HF folder, nn.Module, ExportedProgram
    result = ao.optimize(model, target="onnx", passes="cleanup", tolerance="cosine=0.9999")
    result.report.save("out/report.html")
    result.artifact.save("out/")                 # out/model.onnx
    outputs = result.artifact.run(inputs)

What ``optimize`` does, in order:

1. checks its arguments (tolerance, target, pipeline, sizes) before any
   heavy work, so a usage error costs nothing;
2. loads the model when given a path or a torch object (``load``);
3. builds the validation inputs (user samples, else built-in sentences, else
   seeded random inputs; see ``accelopt.samples``) and the ``Validator``;
   when validating, checks that the imported model runs on them (its first
   micro-batch for a large model; a failure is a ``FrontendError``) and
   computes the reference outputs;
4. runs the pipeline through the ``PassManager`` (verify always; validation
   and rollback when ``validate``; IR dumps when ``dump_ir``);
5. judges the final graph against the reference (the user's tolerance, else
   the loosest tolerance of the pass families kept);
6. lowers the graph with the target and, when validating, runs the artifact
   on the validation inputs and judges it the same way;
7. assembles the ``Report``.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from accelopt.errors import FrontendError, InterpreterError, ValidationError
from accelopt.interpreter import release_memory
from accelopt.ir.graph import Graph
from accelopt.model import Model
from accelopt.model_checks import check_inputs_hold_values, check_validation_size, warn_nonfinite_weights
from accelopt.records import AccuracyRecord, PassRecord
from accelopt.report import Report
from accelopt.samples import SampleSet, check_sample_arrays, default_samples, load_samples, text_samples

if TYPE_CHECKING:
    from accelopt.passes.base import Pass

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ load
def load(source: Any, example_inputs: Any = None, **kwargs: Any) -> Model:
    """Import a model, dispatching on what ``source`` is (cases below); a warning names any weight tensor
    holding NaN or Inf (``accelopt.model_checks``).

    1. a ``Model``: returned as is;
    2. a Hugging Face model folder, as ``is_huggingface_folder`` tells it: ``config.json`` +
       weights at the top, or one level down (a sentence-transformers folder with the model in
       ``0_Transformer/``): the Hugging Face frontend, which keeps the tokenizer;
       ``example_inputs`` (a dict of arrays) are passed to it and used for the export
       (needed when the folder has no tokenizer);
    3. a ``.onnx`` file, or a folder holding one (an ``optimum`` export folder has a
       ``config.json`` beside its ``model.onnx``): the ONNX frontend;
    4. a folder with a ``config.json`` but no weights and no ``.onnx``: the Hugging Face
       frontend, whose error names what is missing;
    5. a ``torch.nn.Module`` (with ``example_inputs``) or ``torch.export.ExportedProgram``:
       the torch.export frontend.

    Anything else, a path that does not exist, or a folder with no model in it is a
    ``FrontendError`` naming the path.
    """
    if isinstance(source, Model):
        return source
    model = _load(source, example_inputs, **kwargs)
    warn_nonfinite_weights(model.graph, model.source)
    return model


def _load(source: Any, example_inputs: Any = None, **kwargs: Any) -> Model:
    """The frontend for ``source`` (see ``load``)."""
    if isinstance(source, Model):
        return source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FrontendError(f"model {str(p)!r} does not exist")
        if p.is_dir():
            if _is_huggingface_folder(p):  # case 2
                return _load_huggingface(p, example_inputs, **kwargs)
            if any(f.is_file() for f in [*p.glob("*.onnx"), p / "onnx" / "model.onnx"]):  # case 3
                from accelopt.frontends.onnx import load_onnx

                return load_onnx(p, **kwargs)
            if (p / "config.json").is_file():  # case 4
                return _load_huggingface(p, example_inputs, **kwargs)
            raise FrontendError(
                f"folder {str(p)!r} holds no model: no .onnx file and no Hugging Face model "
                "(config.json + model.safetensors or pytorch_model.bin, at the top or one folder down)"
            )
        if p.suffix.lower() == ".onnx":
            from accelopt.frontends.onnx import load_onnx

            return load_onnx(p, **kwargs)
        raise FrontendError(
            f"cannot tell the format of {str(p)!r}: expected a .onnx file, a folder holding one, "
            "or a Hugging Face model folder (config.json + weights)"
        )
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, (torch.nn.Module, torch.export.ExportedProgram)):
        from accelopt.frontends.torch_export import load_torch

        return load_torch(source, example_inputs, **kwargs)
    raise FrontendError(f"cannot load a {type(source).__name__}: pass a path, an nn.Module or an ExportedProgram")


def _is_huggingface_folder(path: Path) -> bool:
    try:
        from accelopt.frontends.huggingface import is_huggingface_folder
    except ImportError:
        return False
    return is_huggingface_folder(path)


def _load_huggingface(path: Path, example_inputs: Any = None, **kwargs: Any) -> Model:
    try:
        from accelopt.frontends.huggingface import load_huggingface
    except ImportError as e:
        raise FrontendError(f"{path}: the Hugging Face frontend is not available: {e}") from e
    return load_huggingface(path, example_inputs, **kwargs)


# ---------------------------------------------------------------- result
@dataclass
class Result:
    """What ``optimize`` returns: the final graph, the report, the target's artifact."""

    graph: Graph
    report: Report
    artifact: Any
    model: Model
    records: list[PassRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when the final accuracy tolerance was not met."""
        return self.report.ok


class Progress(Protocol):
    """What ``optimize`` reports progress to (the CLI draws a rich progress bar)."""

    def advance(self, done: int, total: int, description: str) -> None: ...

    def status(self, description: str) -> None: ...


class _StatusInstrument:
    """Says which pass is running."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def before_pass(self, pass_: Any, graph: Graph, ctx: Any) -> None:
        self.progress.status(f"pass {pass_.spec}")


# ------------------------------------------------------------- optimize
def optimize(
    model_or_path: Any,
    target: Any = "onnx",
    passes: str | Sequence[Pass] | None = None,
    calibration: Any = None,
    tolerance: str | Mapping[str, float] | None = None,
    seq_len: int | Sequence[int] = 128,
    batch: int = 1,
    validate: bool = True,
    dump_ir: str | os.PathLike[str] | None = None,
    *,
    num_samples: int = 32,
    seed: int = 0,
    local_validation: bool = True,
    example_inputs: Any = None,
    instruments: Sequence[Any] = (),
    progress: Progress | None = None,
) -> Result:
    """Optimize a model for a target; see the module docstring for the steps.

    ``target``: a target name (``"onnx"``), with options (``"tpu{chip=v4}"``), or
    a ``Target``. ``passes``: a pipeline string (``"cleanup,fuse"``) or a list
    of ``Pass`` objects; ``None`` takes the target's default pipeline.
    ``calibration``: a path (``.npz`` of input arrays, or a text file of
    sentences), a list of sentences, a dict of input arrays (samples along
    axis 0) or a ``SampleSet``; used for validation and by passes that need
    data. ``tolerance``: ``"cosine=0.995,max_abs=1e-3"`` or a dict; it
    overrides the family defaults and bounds the final result against the
    reference. ``seq_len`` and ``batch`` bind symbolic sequence and batch
    dims (cost estimates, static-shape targets, generated inputs);
    validation runs ``num_samples`` samples batched. ``seq_len`` may be a
    list of sequence buckets (``[128, 256, 512]``): a target with buckets
    (tpu) exports one program per length; validation, calibration and cost
    estimates use the FIRST length, so put the one to check first; a target
    that takes one length raises ``TargetError``. ``dump_ir``: a folder
    for ``NNN_<pass>.txt`` text-form dumps. ``instruments`` are added to the
    pass manager's. ``local_validation``: exact rewrites (cleanup, fusion,
    layout) are checked on what they rewrote, in one sweep, with the whole
    model checked once after them (``accelopt.passmanager``, case 7); False
    runs the whole new graph after every pass.

    Raises ``ValidationError``, ``TargetError``, ``PassError`` for bad
    arguments (``ValidationError`` also for a model too large to validate),
    ``FrontendError`` for a model that cannot be imported, has an empty
    input, does not run on the validation inputs (the node and shapes are
    named) or whose original outputs are NaN/Inf. A pass that breaks the
    graph is rolled back (``PassRecord.pass_error``), not raised.
    """
    from accelopt.cost import estimate_macs
    from accelopt.instruments import DumpIRInstrument, TimingInstrument
    from accelopt.passes.base import PassContext, build_pipeline, format_pipeline, parse_pipeline
    from accelopt.passmanager import PassManager
    from accelopt.targets.base import Target, get_target
    from accelopt.validation import ValidationConfig, Validator, format_tolerance, parse_tolerance, tolerance_for

    t_start = time.perf_counter()
    # 1. arguments
    seq_lens = _seq_lens(seq_len)
    seq = seq_lens[0]
    for name, value in (("batch", batch), ("num_samples", num_samples)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValidationError(f"{name} must be a positive integer, got {value!r}")
    overrides = parse_tolerance(tolerance)
    tgt = target if isinstance(target, Target) else get_target(str(target))
    tgt = tgt.with_seq_lens(seq_lens).with_batch(int(batch))
    tgt.capabilities  # noqa: B018 - options that depend on others (a tpu chip) fail here, before the model loads
    spec = tgt.default_passes if passes is None else passes
    if isinstance(spec, str):
        requested = format_pipeline(parse_pipeline(spec))
        pipeline = build_pipeline(spec)
    else:
        pipeline = list(spec)
        requested = format_pipeline(pipeline)
    pipeline_str = format_pipeline(pipeline)

    # 2. model
    if progress is not None:
        progress.status("loading the model")
    model = load(model_or_path, example_inputs)
    graph_in = model.graph
    bindings = _shape_bindings(graph_in, batch=int(batch), seq_len=seq)
    check_inputs_hold_values(graph_in, model.source)
    at_once = int(num_samples)  # validation runs every sample in one batch
    check_validation_size(
        graph_in, _shape_bindings(graph_in, batch=at_once, seq_len=seq), samples=at_once, values=validate
    )

    # 3. inputs and validator
    user_samples = _user_samples(calibration, model, seq, seed) if calibration is not None else None
    validator: Validator | None = None
    if validate:
        config = ValidationConfig(
            num_samples=int(num_samples), seq_len=seq, seed=seed, tolerance=overrides, local=bool(local_validation)
        )
        status_fn = progress.status if progress is not None else None
        validator = Validator(model, config, user_samples, progress=status_fn)
    if user_samples is not None:
        calib = user_samples
    else:
        calib = default_samples(
            graph_in, model.tokenizer, n=int(num_samples), seq_len=seq, purpose="calibration", seed=seed
        )

    # 4. passes
    insts: list[Any] = [TimingInstrument()]
    if dump_ir is not None:
        insts.append(DumpIRInstrument(dump_ir))
    if progress is not None:
        insts.append(_StatusInstrument(progress))
    insts.extend(instruments)
    ctx = PassContext(
        target=tgt.capabilities,
        validator=validator,
        calibration=calib.as_list(_static_batch(graph_in)),
        instruments=insts,
        options={
            "shape_bindings": bindings,
            "seq_len": seq,
            "seq_lens": seq_lens,
            "batch": int(batch),
            "seed": seed,
        },
        progress=progress.advance if progress is not None else None,
    )
    baseline: AccuracyRecord | None = None
    if validator is not None:  # the imported model runs (first micro-batch): else a FrontendError, before the passes
        _model_runs(validator, model, lambda: validator.precheck(graph_in))
    graph, records = PassManager(pipeline, ctx).run(graph_in)
    if validator is not None:  # the passes' first check ran the imported graph on every sample (cached)
        baseline = _model_runs(validator, model, lambda: validator.evaluate(graph_in, tolerance_for("cleanup")))

    # 5. final accuracy
    final = artifact_check = None
    final_tol: dict[str, float] = {}
    status = "not-validated"
    notes: list[str] = [f"{r.pass_error}; rolled back (status pass-error)" for r in records if r.pass_error]
    if validator is not None:
        kept = [r.family for r in records if r.modified and not r.rolled_back]
        final_tol = validator.final_tolerance(kept)
        if progress is not None:
            progress.status("checking the final graph")
        final = validator.evaluate(graph, final_tol)
        status = "ok" if final.ok else "tolerance-not-met"

    # 6. lowering
    if progress is not None:
        progress.status(f"lowering for {tgt.spec}")
    artifact = tgt.lower(graph, model=model, samples=validator.samples if validator is not None else calib)
    if artifact is not None:
        artifact.metadata.setdefault("pipeline", pipeline_str)
    # an artifact built for hardware this machine lacks (gpu without a GPU) says why it cannot run here
    cannot_run = getattr(artifact, "cannot_run_here", lambda: None)() if artifact is not None else None
    if cannot_run:
        notes.append(f"the artifact was not run here: {cannot_run}")
    if validator is not None and artifact is not None and not cannot_run:
        if progress is not None:
            progress.status("running the artifact")
        release_memory()  # the validator's spare heap goes back before the artifact's runtime loads the weights
        artifact_check = _check_artifact(validator, artifact, graph, final_tol, int(batch))
        if not artifact_check.ok:
            status = "tolerance-not-met"
            notes.append(
                "the written artifact does not meet the final tolerance: " + "; ".join(artifact_check.failures)
            )

    # 7. report
    vinfo: dict[str, Any] = {"enabled": validator is not None}
    if validator is not None:
        s = validator.samples
        vinfo.update(
            reference_runtime=validator.reference_runtime,
            inputs=s.source,
            num_samples=s.num_samples,
            seq_len=seq,
            **({"seq_lens": list(seq_lens)} if len(seq_lens) > 1 else {}),
            batch=int(batch),
            tolerance=overrides,
            final_tolerance=final_tol,
            reference_seconds=validator.reference_seconds,
            notes=list(s.notes)
            + (
                [
                    f"sequence buckets {', '.join(map(str, seq_lens))}: validated at {seq} (the first); "
                    "the other buckets are exported from the same graph and not run here"
                ]
                if len(seq_lens) > 1
                else []
            )
            + (
                []
                if baseline is None or baseline.ok
                else ["imported graph vs reference: " + "; ".join(baseline.failures)]
            ),
        )
    report = Report(
        model=_graph_info(graph_in, model, bindings, estimate_macs),
        target={"name": tgt.name, "spec": tgt.spec, "capabilities": tgt.capabilities.as_dict()},
        pipeline=pipeline_str,
        requested_pipeline=requested,
        passes=records,
        validation=vinfo,
        baseline=baseline,
        final=final,
        artifact_check=artifact_check,
        status=status,
        result={
            "nodes": len(graph.nodes),
            "ops": dict(graph.op_counts()),
            "parameter_bytes": graph.parameter_bytes(),
            "macs": estimate_macs(graph, bindings),
        },
        artifact=artifact.describe() if artifact is not None else None,
        command=_command_line(
            model.source,
            tgt.spec,
            pipeline_str,
            calibration=calibration,
            tolerance=format_tolerance(overrides) if overrides else "",
            seq_lens=seq_lens,
            batch=int(batch),
            validate=validate,
        ),
        notes=notes,
    )
    report.seconds = time.perf_counter() - t_start
    return Result(graph=graph, report=report, artifact=artifact, model=model, records=records)


# --------------------------------------------------------------- helpers
def _static_batch(graph: Graph) -> int | None:
    for v in graph.inputs:
        if v.shape and isinstance(v.shape[0], int):
            return int(v.shape[0])
    return None


def _seq_lens(seq_len: Any) -> tuple[int, ...]:
    """``seq_len`` as a tuple of positive lengths: an int, a list of ints, or ``"128,256"``; order kept."""
    values: Any = seq_len
    if isinstance(seq_len, str):
        values = [x.strip() for x in seq_len.split(",")]
    elif isinstance(seq_len, (int, np.integer)):
        values = [seq_len]
    out: list[int] = []
    try:
        for v in values:
            if isinstance(v, bool) or isinstance(v, float):
                raise ValueError
            n = int(v)
            if n < 1 or (isinstance(v, str) and not v.isdigit()):
                raise ValueError
            out.append(n)
    except (TypeError, ValueError):
        raise ValidationError(
            f"seq_len must be a positive integer or a list of them (sequence buckets), got {seq_len!r}"
        ) from None
    if not out:
        raise ValidationError("seq_len must be a positive integer or a list of them, got an empty list")
    if len(set(out)) != len(out):
        raise ValidationError(f"seq_len lists a sequence length twice: {seq_len!r}")
    return tuple(out)


def _shape_bindings(graph: Graph, *, batch: int, seq_len: int) -> dict[str, int]:
    """Symbol -> size: ``batch``/``seq`` names, and the symbols at dim 0 / dim 1 of the inputs."""
    out = {"batch": batch, "seq": seq_len, "sequence": seq_len}
    for v in graph.inputs:
        if not v.shape:
            continue
        if isinstance(v.shape[0], str):
            out.setdefault(v.shape[0], batch)
        if len(v.shape) > 1 and isinstance(v.shape[1], str):
            out.setdefault(v.shape[1], seq_len)
    return out


def _user_samples(calibration: Any, model: Model, seq_len: int, seed: int) -> SampleSet:
    """Cases: 1. a ``SampleSet``; 2. a path (``.npz`` or text); 3. a list of sentences;
    4. a dict of arrays; 5. a list of input dicts (concatenated along axis 0)."""
    graph = model.graph
    if isinstance(calibration, SampleSet):
        return calibration
    if isinstance(calibration, (str, os.PathLike)):
        return load_samples(calibration, graph, model.tokenizer, seq_len=seq_len, seed=seed)
    if isinstance(calibration, Sequence) and calibration and all(isinstance(s, str) for s in calibration):
        tok = model.tokenizer
        if tok is None:
            from accelopt.samples import BUNDLED_VOCAB_SIZE, bundled_tokenizer, lookup_table_size

            if lookup_table_size(graph, "input_ids") != BUNDLED_VOCAB_SIZE:
                raise ValidationError("calibration sentences need a tokenizer; the model has none: pass input arrays")
            tok = bundled_tokenizer()
        return text_samples(
            graph, tok, list(calibration), seq_len, source=f"{len(calibration)} user sentences", seed=seed
        )
    if isinstance(calibration, Mapping):
        arrays = {k: np.asarray(v) for k, v in calibration.items()}
    elif isinstance(calibration, Sequence) and calibration and all(isinstance(d, Mapping) for d in calibration):
        keys = list(calibration[0])
        arrays = {k: np.concatenate([np.asarray(d[k]) for d in calibration], axis=0) for k in keys}
    else:
        raise ValidationError(
            f"calibration must be a path, a list of sentences, a dict of arrays or a list of input dicts, "
            f"not {type(calibration).__name__}"
        )
    out = check_sample_arrays(arrays, graph, "calibration data")
    mask = out.get("attention_mask")
    n = len(next(iter(out.values()))) if out else 0
    return SampleSet(out, f"{n} user samples", mask=mask if mask is not None and mask.ndim == 2 else None)


def _model_runs(validator: Any, model: Model, fn: Callable[[], Any]) -> Any:
    """``fn()``, with an ``InterpreterError`` (the imported model itself fails: a shape or index problem
    is the model's) raised as a ``FrontendError`` naming the input shapes."""
    try:
        return fn()
    except InterpreterError as e:
        shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in validator.samples.arrays.items())
        raise FrontendError(
            f"{model.source}: the model does not run on the validation inputs ({shapes}): {e}",
            hint="the model itself fails on these shapes; check --seq-len and --batch against what it takes",
        ) from e


def _check_artifact(
    validator: Any, artifact: Any, graph: Graph, tolerance: Mapping[str, float], batch: int
) -> AccuracyRecord:
    """Run the artifact on the validation inputs: judged against the reference, compared with the final graph.

    The artifact gets ``batch`` samples at a time, the batch size a static-shape
    target binds its batch dimension to (a symbolic one takes any).
    """
    names = [v.name for v in graph.outputs]

    def run(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = artifact.run(batch)
        if set(names) <= set(res):
            return [np.asarray(res[k]) for k in names]
        return [np.asarray(v) for v in res.values()]

    return validator.evaluate_outputs(validator.run_inputs(run, graph, batch=batch), tolerance, previous=graph)


def _graph_info(
    graph: Graph, model: Model, bindings: Mapping[str, int], macs: Callable[..., int | None]
) -> dict[str, Any]:
    return {
        "source": model.source,
        "kind": model.kind,
        "graph": graph.name,
        "inputs": {v.name: str(v.type) for v in graph.inputs},
        "outputs": {v.name: str(v.type) for v in graph.outputs},
        "nodes": len(graph.nodes),
        "ops": dict(graph.op_counts()),
        "parameter_bytes": graph.parameter_bytes(),
        "macs": macs(graph, bindings),
    }


def _command_line(
    source: str,
    target: str,
    pipeline: str,
    *,
    calibration: Any,
    tolerance: str,
    seq_lens: Sequence[int],
    batch: int,
    validate: bool,
) -> str:
    parts = [
        "optimize",
        source,
        "--target",
        target,
        "--passes",
        pipeline,
        "--seq-len",
        ",".join(str(s) for s in seq_lens),
        "--batch",
        str(batch),
    ]
    if isinstance(calibration, (str, os.PathLike)):
        parts += ["--calibration", os.fspath(calibration)]
    if tolerance:
        parts += ["--tolerance", tolerance]
    if not validate:
        parts.append("--no-validate")
    return " ".join(shlex.quote(p) for p in parts)
