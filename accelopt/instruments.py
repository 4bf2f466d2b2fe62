"""Pass instruments: hooks the pass manager calls around every pass.

An instrument is any object with some of these methods (all optional)::

    before_run(graph, ctx)                       # once, with the input graph
    before_pass(pass_, graph, ctx)               # graph: what the pass will see
    after_pass(pass_, result_graph, record, ctx) # result_graph: what the next pass sees
    on_rollback(pass_, rejected_graph, record, ctx)  # a pass's result was rejected (accuracy or pass error)
    after_run(records)                           # once, with every PassRecord

Instruments live in ``PassContext.instruments``; the CLI maps its flags to them
(``--dump-ir DIR`` -> ``DumpIRInstrument(DIR)``). Verification is not optional:
the pass manager always runs ``VerifyInstrument`` after every pass.

1. ``TimingInstrument`` logs each pass's time and keeps ``(spec, seconds)`` pairs.
2. ``DumpIRInstrument(dir)`` writes ``000_input.txt`` and then ``NNN_<pass>.txt``
   after every pass in the text form (``NNN_<pass>.rejected.txt`` for a result
   that was rolled back).
3. ``VerifyInstrument`` checks IR invariants; a broken graph becomes a
   ``PassError`` naming the pass and every pass that ran before it (the
   pass manager rolls such a pass back: a pass error).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelopt.errors import PassError, VerifyError
from accelopt.ir.graph import Graph
from accelopt.ir.printer import print_graph
from accelopt.records import PassRecord

log = logging.getLogger(__name__)


class Instrument:
    """Convenience base class with no-op hooks; instruments need not inherit from it."""

    def before_run(self, graph: Graph, ctx: Any) -> None:
        pass

    def before_pass(self, pass_: Any, graph: Graph, ctx: Any) -> None:
        pass

    def after_pass(self, pass_: Any, result_graph: Graph, record: PassRecord, ctx: Any) -> None:
        pass

    def on_rollback(self, pass_: Any, rejected_graph: Graph, record: PassRecord, ctx: Any) -> None:
        pass

    def after_run(self, records: Sequence[PassRecord]) -> None:
        pass


class TimingInstrument(Instrument):
    """Case 1: logs the time of every pass (and its validation) at INFO, and a total at the end."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        self.timings: list[tuple[str, float]] = []

    def after_pass(self, pass_: Any, result_graph: Graph, record: PassRecord, ctx: Any) -> None:
        self.timings.append((record.spec, record.seconds))
        self.log.info(
            "pass %s: %.3f s (validation %.3f s)%s",
            record.spec,
            record.seconds,
            record.validate_seconds,
            " [rolled back]" if record.rolled_back else "",
        )

    def after_run(self, records: Sequence[PassRecord]) -> None:
        total = sum(r.seconds + r.validate_seconds for r in records)
        self.log.info("%d passes in %.3f s", len(records), total)


_FILE_RE = re.compile(r"[^A-Za-z0-9_.\-]")


class DumpIRInstrument(Instrument):
    """Case 2: writes the graph in the text form before the first pass and after every pass."""

    def __init__(self, directory: str | os.PathLike[str], *, provenance: bool = True) -> None:
        self.directory = Path(directory)
        self.provenance = provenance
        self.count = 0
        self.files: list[Path] = []

    def _write(self, stem: str, graph: Graph) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.count:03d}_{_FILE_RE.sub('_', stem)}.txt"
        path.write_text(print_graph(graph, provenance=self.provenance))
        self.files.append(path)
        return path

    def before_run(self, graph: Graph, ctx: Any) -> None:
        self.count = 0
        self._write("input", graph)

    def on_rollback(self, pass_: Any, rejected_graph: Graph, record: PassRecord, ctx: Any) -> None:
        self.count += 1
        try:
            self._write(f"{record.name}.rejected", rejected_graph)
        except Exception as e:  # a pass error can leave a graph the printer cannot walk; the dump is a courtesy
            log.warning("cannot dump the rejected result of %s: %s: %s", record.spec, type(e).__name__, e)
        self.count -= 1  # the after_pass dump takes the same number

    def after_pass(self, pass_: Any, result_graph: Graph, record: PassRecord, ctx: Any) -> None:
        self.count += 1
        self._write(record.name, result_graph)


class VerifyInstrument(Instrument):
    """Case 3: ``graph.verify()`` after every pass (built into the pass manager, always on)."""

    def check(self, graph: Graph, *, pass_spec: str, history: Sequence[str]) -> None:
        try:
            graph.verify()
        except VerifyError as e:
            before = ", ".join(history) if history else "none"
            raise PassError(
                f"pass {pass_spec!r} produced an invalid graph (passes run before it: {before}): {e}"
            ) from e
