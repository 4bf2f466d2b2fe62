"""``optimize run`` and ``optimize bench``: use an artifact folder written by ``optimize`` (any target).

::

    optimize run OUTDIR --inputs FILE.npz [-o OUT.npz] [--threads N] [--dump-programs DIR]
    optimize bench OUTDIR [--batch N] [--seq-len N] [--inputs FILE.npz] [--warmup W] [--repeat R] [--threads N]
                          [--profile]

``run`` loads the artifact (``accelopt.Artifact.load``: the target is read
from its metadata.json), runs it on the arrays of FILE.npz (keyed by input
name) and writes the outputs to OUT.npz, or prints their shapes and ranges;
``--dump-programs DIR`` (fpga artifacts) writes, per VTA program call, the
DRAM segment as it was before the accelerator started and the output region
after, to replay on VTA's simulator or a board.
``bench`` times ``run`` after ``--warmup`` runs: median and p90 over
``--repeat`` runs, with a progress bar; inputs come from ``--inputs`` or are
generated from the artifact's input specs (``--batch`` x ``--seq-len``:
attention masks all ones, token types zeros, positions ``0..S-1``, other
ids below the vocabulary size recorded in the metadata, floats normal);
``--profile`` adds a table of the time each compiled kernel takes
(``accelopt.targets.relax.profile``).

Exit codes follow ``optimize``'s: 2 for a folder that is not an artifact,
an unreadable or mismatched inputs file (the message lists the inputs the
artifact expects), bad options; 4 when the artifact fails while running.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import TargetError

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 4


class CommandError(Exception):
    """An error with its exit code and an optional hint."""

    def __init__(self, message: str, code: int = EXIT_USAGE, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"optimize {command}",
        description="Run an artifact folder on inputs from a .npz file."
        if command == "run"
        else "Time an artifact folder: median and p90 latency after warm-up.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="a folder written by optimize -o")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: the artifact's)")
    if command == "run":
        p.add_argument("--inputs", required=True, metavar="FILE.npz", help="input arrays keyed by input name")
        p.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here (default: print a summary)")
        p.add_argument(
            "--dump-programs",
            metavar="DIR",
            help="fpga artifacts: per VTA program call, the DRAM segment before the run and the output region after",
        )
    else:
        p.add_argument("--inputs", metavar="FILE.npz", help="input arrays (default: generated from the input specs)")
        p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size of generated inputs (default 1)")
        p.add_argument("--seq-len", type=int, default=None, metavar="N", help="sequence length (default: the first bucket's)")
        p.add_argument("--warmup", type=int, default=3, metavar="W", help="untimed runs first (default 3)")
        p.add_argument("--repeat", type=int, default=20, metavar="R", help="timed runs (default 20)")
        p.add_argument(
            "--profile", action="store_true", help="also time every kernel the run calls (TVM artifacts), slowest first"
        )
    return p


def _load(outdir: str) -> Any:
    from accelopt.targets.base import load_artifact

    if not Path(outdir).is_dir():
        raise CommandError(f"artifact folder {outdir!r} does not exist", hint="give the -o OUTDIR of an optimize run")
    try:
        return load_artifact(outdir)
    except TargetError as e:
        raise CommandError(str(e), hint="give the -o OUTDIR of an optimize run") from None


def _specs(art: Any) -> list[dict[str, Any]]:
    return [s for s in art.metadata.get("inputs", []) if isinstance(s, dict) and "name" in s]


def _expected(art: Any) -> str:
    specs = _specs(art)
    if not specs:
        return "(the artifact does not record its inputs)"
    return ", ".join(f"{s['name']} {s.get('dtype', '?')}{s.get('shape', '')}" for s in specs)


def _read_inputs(path: str, art: Any) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"inputs file {path!r} does not exist", hint=f"the artifact takes: {_expected(art)}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except Exception as e:
        raise CommandError(
            f"cannot read inputs file {path!r}: {type(e).__name__}: {e}", hint="save the inputs with numpy.savez"
        ) from None
    specs = _specs(art)
    missing = [s["name"] for s in specs if s["name"] not in arrays]
    extra = sorted(set(arrays) - {s["name"] for s in specs}) if specs else []
    bad_rank = [
        f"{s['name']} has rank {arrays[s['name']].ndim}"
        for s in specs
        if s["name"] in arrays and isinstance(s.get("shape"), list) and arrays[s["name"]].ndim != len(s["shape"])
    ]
    if missing or extra or bad_rank:
        what = "; ".join(
            x
            for x in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
                "; ".join(bad_rank),
            )
            if x
        )
        raise CommandError(f"inputs file {path!r} does not fit the artifact: {what}", hint=f"expected: {_expected(art)}")
    return arrays


def _run(
    art: Any, inputs: Mapping[str, np.ndarray], threads: int | None, dump: str | None = None
) -> dict[str, np.ndarray]:
    try:
        if dump is not None:
            return dict(art.run(inputs, dump_dir=dump))
        if threads is not None and hasattr(art, "threads"):
            return dict(art.run(inputs, num_threads=threads))
        return dict(art.run(inputs))
    except TargetError as e:
        msg = str(e)
        if any(w in msg for w in ("input", "dimension", "bucket", "rank")):
            raise CommandError(msg, hint=f"expected: {_expected(art)}") from None
        raise CommandError(msg, code=EXIT_FAILED) from None


def generated_inputs(art: Any, batch: int, seq: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``bench`` from the artifact's input specs (see the module docstring)."""
    from accelopt.targets.buckets import np_dtype

    buckets = art.metadata.get("buckets") or [{}]
    seq = seq or buckets[0].get("seq_len") or 128
    rng = np.random.default_rng(seed)
    out = {}
    for s in _specs(art):
        shape = []
        for axis, d in enumerate(s.get("shape") or []):
            shape.append(d if isinstance(d, int) else batch if axis == 0 else seq if axis == 1 else 1)
        dt = np_dtype(str(s.get("dtype", "float32")))
        name = s["name"].lower()
        if "mask" in name:
            out[s["name"]] = np.ones(shape, dt)
        elif "token_type" in name:
            out[s["name"]] = np.zeros(shape, dt)
        elif "position" in name and shape:
            out[s["name"]] = np.broadcast_to(np.arange(shape[-1]), shape).astype(dt)
        elif dt.kind in "iu":
            out[s["name"]] = rng.integers(0, int(s.get("vocab") or 10), size=shape).astype(dt)
        elif dt.kind == "b":
            out[s["name"]] = np.ones(shape, dt)
        else:
            out[s["name"]] = rng.standard_normal(shape).astype(dt)
    return out


def cmd_run(args: argparse.Namespace, out: Any) -> int:
    art = _load(args.outdir)
    if args.dump_programs and art.target != "fpga":
        raise CommandError(f"--dump-programs dumps VTA programs: {args.outdir!r} is a {art.target} artifact, not fpga")
    inputs = _read_inputs(args.inputs, art)
    t0 = time.perf_counter()
    outputs = _run(art, inputs, args.threads, args.dump_programs)
    seconds = time.perf_counter() - t0
    if args.output:
        try:
            np.savez(args.output, **outputs)  # type: ignore[arg-type]
        except OSError as e:
            raise CommandError(f"cannot write {args.output!r}: {e.strerror or e}") from None
        out.print(f"wrote {args.output}: {', '.join(outputs)} ({seconds * 1e3:.1f} ms)", markup=False, soft_wrap=True)
        return EXIT_OK
    from rich.table import Table

    t = Table(title=f"{args.outdir}: outputs ({seconds * 1e3:.1f} ms)")
    for col in ("output", "dtype", "shape", "min", "max"):
        t.add_column(col)
    for k, v in outputs.items():
        lo, hi = (f"{v.min():.6g}", f"{v.max():.6g}") if v.size and v.dtype.kind in "fiub" else ("-", "-")
        t.add_row(k, str(v.dtype), str(list(v.shape)), lo, hi)
    out.print(t)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, out: Any, err: Any) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    for flag, value, least in (("--batch", args.batch, 1), ("--repeat", args.repeat, 1), ("--warmup", args.warmup, 0)):
        if value < least:
            raise CommandError(f"{flag} must be at least {least}, got {value}")
    if args.seq_len is not None and args.seq_len < 1:
        raise CommandError(f"--seq-len must be at least 1, got {args.seq_len}")
    art = _load(args.outdir)
    inputs = _read_inputs(args.inputs, art) if args.inputs else generated_inputs(art, args.batch, args.seq_len)
    times = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("warm-up", total=args.warmup + args.repeat)
        for i in range(args.warmup + args.repeat):
            t0 = time.perf_counter()
            _run(art, inputs, args.threads)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
            bar.update(task, advance=1, description="warm-up" if i + 1 < args.warmup else "timing")
    ms = np.array(times) * 1e3
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())
    out.print(
        f"{args.outdir} ({art.target}): median {np.median(ms):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms, "
        f"min {ms.min():.2f} ms over {len(ms)} runs after {args.warmup} warm-up; inputs {shapes}",
        markup=False,
        soft_wrap=True,
    )
    if args.profile:
        _print_profile(art, inputs, args.repeat, out)
    return EXIT_OK


def _print_profile(art: Any, inputs: Mapping[str, np.ndarray], repeat: int, out: Any) -> None:
    from rich.table import Table

    from accelopt.targets.relax.artifact import RelaxArtifact
    from accelopt.targets.relax.profile import profile

    if not isinstance(art, RelaxArtifact):
        raise CommandError(f"--profile needs a TVM artifact (cpu, gpu); this one is {art.target!r}")
    rows, total = profile(art, inputs, repeat=max(1, min(repeat, 10)))
    t = Table(title=f"where the time goes (one run: {total:.2f} ms with the per-call timer)")
    for col in ("function", "calls", "ms", "share"):
        t.add_column(col, justify="left" if col == "function" else "right")
    for r in rows:
        if r.share < 0.001 and len(rows) > 25:
            continue
        t.add_row(r.name, f"{r.calls:g}", f"{r.ms:.3f}", f"{r.share * 100:.1f}%")
    out.print(t)


def main(argv: Sequence[str], out: Any, err: Any, report_error: Any) -> int:
    """``optimize run ...`` / ``optimize bench ...``; ``report_error(err, message, hint)`` prints a user error."""
    command, rest = argv[0], list(argv[1:])
    try:
        args = _parser(command).parse_args(rest)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    try:
        return cmd_run(args, out) if command == "run" else cmd_bench(args, out, err)
    except CommandError as e:
        report_error(err, str(e), e.hint)
        return e.code
    except TargetError as e:
        report_error(err, str(e), "")
        return EXIT_FAILED
