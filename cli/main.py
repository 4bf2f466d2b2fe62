"""The ``optimize`` command.

::

    optimize MODEL --target onnx --passes cleanup -o OUTDIR [options]
    optimize diff A.json B.json
    optimize run OUTDIR --inputs FILE.npz [-o OUT.npz]      (artifact_commands.py)
    optimize bench OUTDIR [--batch N --seq-len N]
    optimize --list-passes | --list-targets

Exit codes (``EXIT_*``):

0. success;
1. the final accuracy tolerance was not met (outputs are still written);
2. usage error: a model path that does not exist, bad options or values,
   unknown pass/target or a target not built yet, calibration data that is
   unreadable or does not fit the model's inputs, an output folder that
   cannot be used;
3. unsupported model (the frontend could not import it);
4. a pass's options do not fit the model, the target failed while running
   (the message names it), or an internal error (one line; ``-vv`` logs the
   traceback);
130. interrupted (Ctrl-C);
143. terminated by SIGTERM (129: SIGHUP), cleaned up like Ctrl-C.

A pass that breaks the graph or crashes is rolled back (status ``pass-error``
in the report, a ``warning:`` line on stderr) and the run goes on; it does not
change the exit code.

``--seq-len 128,256,512`` binds a target with sequence buckets (tpu) to one
export per length; validation, calibration and cost estimates use the first
length. A target that takes one length rejects a list (exit 2).

OUTDIR is written atomically: everything goes to a temporary folder next to
it, renamed into place at the end; after a failure or an interrupt nothing is
left. An existing OUTDIR is replaced only when it is empty or was written by
``optimize`` (it holds the ``.accelopt`` marker). User errors print one red
line and a hint, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from accelopt.cli import tuning_flags
from accelopt.cli.listing import list_passes, list_targets
from accelopt.cli.outdir import MARKER as MARKER  # re-exported: the marker of an OUTDIR optimize wrote
from accelopt.cli.outdir import Staging
from accelopt.cli.signals import Terminated, unwind_on_signals
from accelopt.cli.usage import UsageError
from accelopt.errors import AccelOptError, FrontendError, PassError, TargetError, ValidationError
from accelopt.suggest import did_you_mean

EXIT_OK = 0
EXIT_TOLERANCE = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM; SIGHUP gives 129

REPORT_FORMATS = {"json": "report.json", "md": "report.md", "html": "report.html", "txt": "report.txt"}
TARGET_CHOICES = ("cpu", "gpu", "fpga", "tpu", "onnx")

log = logging.getLogger("accelopt.cli")


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optimize",
        description="Optimize a BERT-class model for a target, validating accuracy after every pass.",
        epilog=(
            "Compare two reports: optimize diff A.json B.json. "
            "Exit codes: 0 ok, 1 final accuracy tolerance not met, 2 usage error, 3 unsupported model, "
            "4 a pass or the target failed, 130 interrupted, 143 terminated (SIGTERM; 129 SIGHUP)."
        ),
    )
    p.add_argument("model", nargs="?", help="a .onnx file, a folder holding one, or a Hugging Face model folder")
    p.add_argument(
        "--target",
        "-t",
        default="onnx",
        metavar="TARGET",
        help=f"one of {', '.join(TARGET_CHOICES)}, with options as in NAME{{key=value}} (default: onnx)",
    )
    p.add_argument(
        "--passes", "-p", default=None, metavar="SPEC", help="pipeline, e.g. cleanup,fuse (default: the target's)"
    )
    p.add_argument("-o", "--output", metavar="OUTDIR", help="output folder (written atomically)")
    p.add_argument(
        "--calibration", metavar="FILE", help=".npz of input arrays, or a text file with one sentence per line"
    )
    p.add_argument(
        "--tolerance", metavar="K=V,...", help="e.g. cosine=0.995,max_abs=1e-3 (overrides the family defaults)"
    )
    p.add_argument(
        "--seq-len",
        default="128",
        metavar="N[,N...]",
        help="sequence length (default 128); a comma list (128,256,512) gives the tpu target one export per "
        "bucket, validated at the first length",
    )
    p.add_argument(
        "--batch", type=int, default=1, metavar="N", help="batch size symbolic batch dims bind to (default 1)"
    )
    p.add_argument("--samples", type=int, default=32, metavar="N", help="validation samples (default 32)")
    tuning_flags.add_arguments(p)
    p.add_argument(
        "--report",
        default="json,md,html",
        metavar="FORMATS",
        help=f"report formats to write, from {','.join(REPORT_FORMATS)} (default json,md,html; 'none' for none)",
    )
    p.add_argument(
        "--dump-ir",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="write the IR after every pass (NNN_<pass>.txt); default folder OUTDIR/ir",
    )
    p.add_argument("--no-validate", action="store_true", help="skip accuracy validation (no rollback)")
    p.add_argument("--list-passes", action="store_true", help="list passes and groups, then exit")
    p.add_argument("--list-targets", action="store_true", help="list targets, then exit")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    return p


# ------------------------------------------------------------------- output
def _consoles(quiet: bool) -> tuple[Any, Any]:
    from rich.console import Console

    return Console(quiet=quiet), Console(stderr=True)


def _error(err: Any, message: str, hint: str = "", label: str = "error") -> None:
    from rich.text import Text

    line = Text(f"{label}: ", style="bold red")
    line.append(" ".join(message.split()), style="red")  # one line, whatever the message holds
    err.print(line, soft_wrap=True)
    if hint:
        err.print(Text(f"hint: {hint}", style="yellow"), soft_wrap=True)


def _setup_logging(verbose: int, quiet: bool, err: Any) -> None:
    from rich.logging import RichHandler

    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    root = logging.getLogger("accelopt")
    for h in list(root.handlers):
        if getattr(h, "_accelopt_cli", False):
            root.removeHandler(h)
    handler = RichHandler(console=err, show_path=verbose >= 2, show_time=verbose >= 1, markup=False)
    handler._accelopt_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


# ------------------------------------------------------------------ progress
class _Bar:
    """A rich progress bar over passes; the description says what runs (pass, validation, lowering)."""

    def __init__(self, console: Any, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.task = self.progress.add_task("starting", total=None)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def advance(self, done: int, total: int, description: str) -> None:
        self.progress.update(self.task, completed=done, total=total, description=f"{description} done")

    def status(self, description: str) -> None:
        self.progress.update(self.task, description=description)


# --------------------------------------------------------------------- run
def _check_usage(args: argparse.Namespace) -> tuple[list[str], Any]:
    """Cheap checks before any model is loaded: formats, sizes, tolerance, target, pipeline, files."""
    from accelopt.passes.base import build_pipeline
    from accelopt.targets.base import get_target
    from accelopt.validation import parse_tolerance

    if not args.model:
        raise UsageError("no model given", "optimize MODEL --target onnx --passes cleanup -o OUTDIR")
    if not args.output:
        raise UsageError("no output folder given", "add -o OUTDIR")
    formats = [f.strip().lower() for f in (args.report or "").split(",") if f.strip()]
    if formats == ["none"]:
        formats = []
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad:
        raise UsageError(
            f"unknown report format {bad[0]!r}{did_you_mean(bad[0], REPORT_FORMATS)}",
            f"--report takes a comma list of {', '.join(REPORT_FORMATS)}",
        )
    args.seq_len = _parse_seq_len(args.seq_len)
    for flag, value in (("--batch", args.batch), ("--samples", args.samples)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    try:
        parse_tolerance(args.tolerance)
    except ValidationError as e:
        raise UsageError(str(e), "e.g. --tolerance cosine=0.995,max_abs=1e-3") from None
    try:
        target = get_target(args.target)
    except TargetError as e:
        raise UsageError(str(e), "optimize --list-targets shows every target") from None
    try:
        target.capabilities  # noqa: B018 - options checked here (e.g. an unknown tpu chip), not mid-run
    except TargetError as e:
        raise UsageError(f"target {args.target!r}: {e}", "optimize --list-targets shows every target") from None
    try:
        target = target.with_seq_lens(args.seq_len)
    except TargetError as e:
        raise UsageError(str(e), f"give --seq-len one length for --target {target.name}") from None
    try:
        target.with_batch(args.batch)
    except TargetError as e:
        raise UsageError(str(e), "give the batch once: --batch N") from None
    target = tuning_flags.apply(target, args)
    try:
        build_pipeline(args.passes if args.passes is not None else target.default_passes)
    except PassError as e:
        raise UsageError(str(e), "optimize --list-passes shows every pass and its options") from None
    if not Path(args.model).exists():
        raise UsageError(f"model {args.model!r} does not exist")
    if args.calibration is not None:
        c = Path(args.calibration)
        if not c.is_file() or not os.access(c, os.R_OK):
            raise UsageError(
                f"cannot read calibration file {args.calibration!r}",
                "--calibration takes a .npz of input arrays or a text file with one sentence per line",
            )
    return formats, target


def _parse_seq_len(text: str) -> tuple[int, ...]:
    """``--seq-len``: one length or a comma list of distinct ones, each at least 1."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.lstrip("-").isdigit() for p in parts):
        raise UsageError(
            f"--seq-len takes a length or a comma list of lengths, got {text!r}", "e.g. --seq-len 128 or 128,256,512"
        )
    values = tuple(int(p) for p in parts)
    bad = [v for v in values if v < 1]
    if bad:
        raise UsageError(f"--seq-len must be at least 1, got {bad[0]}")
    if len(set(values)) != len(values):
        raise UsageError(f"--seq-len lists a length twice: {text!r}")
    return values


def _run(args: argparse.Namespace, out: Any, err: Any, instruments: Sequence[Any]) -> int:
    from accelopt.api import optimize

    formats, target = _check_usage(args)
    staging = Staging(Path(args.output))
    tmp = staging.open()
    try:
        dump_ir = None
        if args.dump_ir is not None:
            dump_ir = tmp / "ir" if args.dump_ir == "" else Path(args.dump_ir)
        with _Bar(err, enabled=not args.quiet) as bar:
            result = optimize(
                args.model,
                target=target,
                passes=args.passes,
                calibration=args.calibration,
                tolerance=args.tolerance,
                seq_len=args.seq_len,
                batch=args.batch,
                validate=not args.no_validate,
                dump_ir=dump_ir,
                num_samples=args.samples,
                instruments=instruments,
                progress=bar,
            )
            bar.status("writing outputs")
            files = [Path(f).name for f in (result.artifact.save(tmp) if result.artifact is not None else [])]
            for fmt in formats:
                result.report.save(tmp / REPORT_FORMATS[fmt])
        staging.commit()
    except BaseException:
        staging.rollback()
        raise
    report = result.report
    if not args.quiet:
        report.render(out)
        written = files + [REPORT_FORMATS[f] for f in formats] + (["ir/"] if dump_ir == tmp / "ir" else [])
        out.print(f"wrote {args.output}: {', '.join(written)}", markup=False, soft_wrap=True)
    broken = [p.pass_error for p in report.passes if p.pass_error]
    for message in broken:  # loud, even with -q: the run went on without the pass
        _error(err, message, "the pass was rolled back and the run went on without it; please report it", "warning")
    if not report.ok:
        failures = (report.final.failures if report.final else []) + [
            n for n in report.notes if not any(n.startswith(m) for m in broken)
        ]
        _error(
            err,
            "final accuracy tolerance not met: " + "; ".join(failures),
            "see the report; loosen --tolerance or drop the pass",
        )
        return EXIT_TOLERANCE
    return EXIT_OK


def _diff(argv: Sequence[str], out: Any, err: Any) -> int:
    from accelopt.report import Report, diff_reports

    p = argparse.ArgumentParser(prog="optimize diff", description="Compare two reports pass by pass.")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--md", metavar="FILE", help="also write the comparison as Markdown")
    try:
        args = p.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    try:
        a, b = Report.load(args.a), Report.load(args.b)
    except ValueError as e:
        _error(err, str(e), "optimize diff takes two report.json files written by optimize")
        return EXIT_USAGE
    d = diff_reports(a, b)
    d.render(out)
    if args.md:
        try:
            Path(args.md).write_text(d.to_markdown(), encoding="utf-8")
        except OSError as e:
            _error(err, f"cannot write {args.md!r}: {e.strerror or e}")
            return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, instruments: Sequence[Any] = ()) -> int:
    """Run the command; returns the exit code. ``instruments`` are passed to the pass manager (embedding, tests).

    SIGTERM and SIGHUP unwind it like Ctrl-C (``accelopt.cli.signals``): nothing is left
    behind and the exit code is 128 + the signal number (143, 129).
    """
    try:
        with unwind_on_signals(), warnings.catch_warnings():
            warnings.showwarning = _log_warning  # library warnings (numpy's RuntimeWarning...) are not for users
            return _main(list(sys.argv[1:] if argv is None else argv), instruments)
    except Terminated as e:  # arrived outside the optimize run's own handling (parsing, diff, run, bench)
        _error(_consoles(False)[1], f"{e}; nothing was written")
        return e.exit_code


def _main(argv: list[str], instruments: Sequence[Any]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if argv and argv[0] == "diff" and not Path("diff").exists():
        out, err = _consoles(False)
        return _diff(argv[1:], out, err)
    if argv and argv[0] in ("run", "bench") and not Path(argv[0]).exists():
        from accelopt.cli import artifact_commands

        out, err = _consoles(False)
        return artifact_commands.main(argv, out, err, _error)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    out, err = _consoles(args.quiet)
    _setup_logging(args.verbose, args.quiet, err)
    try:
        if args.list_passes or args.list_targets:
            if args.list_passes:
                list_passes(out)
            if args.list_targets:
                list_targets(out)
            return EXIT_OK
        return _run(args, out, err, instruments)
    except UsageError as e:
        _error(err, str(e), e.hint)
        return EXIT_USAGE
    except ValidationError as e:
        hint = "--calibration takes a .npz of input arrays (samples along axis 0) or a text file, one sentence a line"
        _error(err, str(e), hint if "calibration" in str(e) else "")
        return EXIT_USAGE
    except FrontendError as e:
        _error(err, f"unsupported model: {e}", e.hint or "accelopt reads .onnx files, Hugging Face folders and torch modules")
        return EXIT_UNSUPPORTED
    except (PassError, TargetError) as e:
        _error(err, str(e), "run with -v for details; the report is not written")
        return EXIT_FAILED
    except AccelOptError as e:
        _error(err, f"{type(e).__name__}: {e}", "run with -v for details")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error(err, "interrupted; nothing was written")
        return EXIT_INTERRUPTED
    except Terminated as e:
        _error(err, f"{e}; nothing was written" + (", the previous output was kept" if _kept(args) else ""))
        return e.exit_code
    except Exception as e:  # a bug: still one line and no partial output; -vv logs the traceback
        log.debug("internal error", exc_info=True)
        _error(err, f"internal error: {type(e).__name__}: {e}", "please report it; run with -vv for the traceback")
        return EXIT_FAILED


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    log.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def _kept(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "output", None)) and Path(args.output).is_dir()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
