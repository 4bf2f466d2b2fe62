"""Run every benchmark section and write BENCHMARKS.md.

    python -m benchmarks.run            # all sections
    python -m benchmarks.run foundation # only some

Each section module has ``run(lines: list[str]) -> None`` appending Markdown.
Ratios are always against peers measured in the same run; times are medians.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import re
import sys
from pathlib import Path

from benchmarks.common import machine

SECTIONS = ["foundation", "validation", "fusion", "quantization", "tpu", "cpu", "gpu", "fpga", "models", "large"]


def _sections(text: str) -> dict[str, str]:
    found = re.findall(r"<!-- section:(\w+) -->\n(.*?)<!-- /section -->\n", text, flags=re.S)
    return {name: body for name, body in found}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    wanted = argv or SECTIONS
    out = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    kept = _sections(out.read_text()) if out.exists() else {}
    for name in wanted:
        try:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
        except ModuleNotFoundError:
            print(f"skipping {name}: benchmarks/bench_{name}.py does not exist", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr)
        lines: list[str] = [
            f"_Measured {datetime.date.today().isoformat()} on {machine()}; "
            f"reproduce with `python -m benchmarks.run {name}`._",
            "",
        ]
        mod.run(lines)
        kept[name] = "\n".join(lines).rstrip() + "\n"
    header = [
        "# accelopt benchmarks",
        "",
        "Written by `python -m benchmarks.run [section ...]` (or `make bench`). Times are medians;",
        "every ratio compares numbers measured in the same run, on the machine named in its section.",
        "",
    ]
    body = [f"<!-- section:{n} -->\n{kept[n]}<!-- /section -->\n" for n in SECTIONS + sorted(set(kept) - set(SECTIONS)) if n in kept]
    out.write_text("\n".join(header) + "\n" + "\n".join(body))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
