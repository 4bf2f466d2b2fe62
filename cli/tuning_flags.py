"""``--tune-trials N``, ``--tuning-db DIR``, ``--rpc HOST:PORT:KEY``: the cpu target's tuning options as flags.

The target's options are the primary interface (``--target cpu{tune_trials=200}``); a flag sets the
option of the same name (``tune_trials``, ``tuning_db``, ``rpc``). Giving an option both ways with
different values, or a tuning flag to a target without tuning options, is a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from accelopt.cli.usage import UsageError
from accelopt.errors import TargetError

#: flag -> (argparse dest, target option)
FLAGS = {"--tune-trials": ("tune_trials", "tune_trials"), "--tuning-db": ("tuning_db", "tuning_db"), "--rpc": ("rpc", "rpc")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tune-trials",
        type=int,
        default=None,
        metavar="N",
        help="cpu: MetaSchedule trials over the model's kernels; the records persist in the tuning database",
    )
    p.add_argument(
        "--tuning-db", default=None, metavar="DIR", help="cpu: tuning database folder (default ~/.cache/accelopt/tuning)"
    )
    p.add_argument(
        "--rpc", default=None, metavar="HOST:PORT:KEY", help="cpu: measure tuning candidates through a TVM RPC tracker"
    )


def apply(target: Any, args: argparse.Namespace) -> Any:
    """``target`` with the tuning flags given on the command line set as its options."""
    given = {opt: getattr(args, dest) for flag, (dest, opt) in FLAGS.items() if getattr(args, dest) is not None}
    if not given:
        return target
    names = ", ".join(f for f, (dest, _) in FLAGS.items() if getattr(args, dest) is not None)
    options = getattr(target, "options", None)
    if options is None or not all(hasattr(options, k) for k in given):
        raise UsageError(f"{names}: target {target.name!r} has no tuning options", "tuning is for --target cpu")
    defaults = type(options)()
    for k, v in given.items():
        have = getattr(options, k)
        if have != getattr(defaults, k) and have != v:
            raise UsageError(f"{k} is given twice: {have!r} in the target spec and {v!r} as a flag", "give it once")
    try:
        return type(target)(dataclasses.replace(options, **given))
    except (TypeError, ValueError, TargetError) as e:
        raise UsageError(f"target {target.name!r}: {e}", "e.g. --tune-trials 200 --rpc 127.0.0.1:9190:cpu") from None
