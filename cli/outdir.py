"""The output folder, written atomically.

``Staging(OUTDIR).open()`` makes a temporary folder next to OUTDIR
(``.OUTDIR.partial-*``) and returns it; everything is written there.
``commit()`` renames it into place (an existing OUTDIR is moved aside first
and put back if the rename fails); ``rollback()`` removes it and any parent
folders ``open`` created. An existing OUTDIR is replaced only when it is empty
or holds the ``.accelopt`` marker that ``commit`` writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from accelopt.cli.usage import UsageError

MARKER = ".accelopt"


class Staging:
    """A temporary folder next to OUTDIR, renamed into place by ``commit``; removed on failure."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.created_parents: list[Path] = []
        self.tmp: Path | None = None

    def open(self) -> Path:
        out = self.outdir
        if out.exists() and not out.is_dir():
            raise UsageError(f"output {str(out)!r} exists and is not a folder", "choose another -o OUTDIR")
        if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
            raise UsageError(
                f"output folder {str(out)!r} is not empty and was not written by optimize",
                "choose a new or empty folder, or remove it first",
            )
        parent = out.parent
        missing = []
        p = parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                d.mkdir()
                self.created_parents.append(d)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        except OSError as e:
            self.rollback()
            raise UsageError(
                f"cannot write to output folder {str(out)!r}: {e.strerror or e}", "choose a writable -o OUTDIR"
            ) from None
        return self.tmp

    def commit(self) -> None:
        assert self.tmp is not None
        out = self.outdir
        (self.tmp / MARKER).write_text(json.dumps({"written_by": "accelopt optimize", "time": time.time()}) + "\n")
        backup = None
        if out.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            backup.rmdir()
            os.replace(out, backup)
        try:
            os.replace(self.tmp, out)
        except BaseException:  # an error or Ctrl-C between the two renames: put the old output back
            if backup is not None:
                os.replace(backup, out)
            raise
        self.tmp = None
        self.created_parents = []
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)

    def rollback(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for d in reversed(self.created_parents):
            try:
                d.rmdir()
            except OSError:
                break
        self.created_parents = []
