"""Type-check accelopt with mypy, each file under the module name it is installed as.

``pyproject.toml`` maps top-level folders into the ``accelopt`` namespace
(``[tool.setuptools.package-dir]``: ``frontends/`` is ``accelopt.frontends``, ``passes/`` is
``accelopt.passes``, ...). mypy names a file after the folders above it, so ``mypy frontends``
checks ``frontends/onnx.py`` as ``frontends.onnx``, while the code imports
``accelopt.frontends.onnx``; mypy cannot find that name (the editable install maps it with an
import hook, which mypy does not run), and with ``ignore_missing_imports`` every import across the
mapped folders silently becomes ``Any``. This script instead:

1. lists every ``.py`` file of every package in ``[tool.setuptools] packages``, each with the folder
   setuptools installs it from (the longest mapped prefix in ``package-dir``, as setuptools does);
2. lets mypy parse the command line and ``[tool.mypy]`` as usual (extra arguments such as
   ``--no-incremental`` or ``--cache-dir DIR`` are passed on);
3. renames each source to its installed module name and runs mypy's build on that list, so every
   file is checked once, imports across packages resolve to the real files, and errors name the
   real paths.

Usage: ``python tools/typecheck.py [mypy options]`` from any folder; exit status as mypy's (0 clean, 1 errors,
2 blocking error).
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools installs ``package`` from: its own ``package-dir`` entry, else the
    longest mapped parent plus the remaining components, else the root entry (``""``)."""
    parts = package.split(".")
    for i in range(len(parts), -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in package_dir:
            return ROOT.joinpath(package_dir[prefix], *parts[i:])
    return ROOT.joinpath(*parts)


def installed_modules(pyproject: dict) -> Iterator[tuple[Path, str]]:
    """(file, module name) for every ``.py`` file of every package setuptools installs."""
    setuptools = pyproject["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    for package in setuptools["packages"]:
        for path in sorted(package_folder(package, package_dir).glob("*.py")):
            yield path, package if path.name == "__init__.py" else f"{package}.{path.stem}"


def main(argv: list[str]) -> int:
    t0 = time.time()
    os.chdir(ROOT)  # paths below (and in the messages) are relative to the repository root
    pyproject_path = ROOT / "pyproject.toml"
    modules = dict(installed_modules(tomllib.loads(pyproject_path.read_text())))
    fscache = FileSystemCache()
    paths = [str(p.relative_to(ROOT)) for p in modules]
    sources, options = process_options(
        ["--config-file", str(pyproject_path), *argv, *paths], fscache=fscache
    )
    by_path = {p.resolve(): name for p, name in modules.items()}
    sources = [
        BuildSource(s.path, by_path.get(Path(s.path).resolve(), s.module) if s.path else s.module, s.text)
        for s in sources
    ]
    _, messages, blockers = run_build(sources, options, fscache, t0, sys.stdout, sys.stderr)
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    n_errors, _, n_files = util.count_stats(messages)
    if n_errors:
        summary = formatter.format_error(n_errors, n_files, len(sources), blockers=blockers, use_color=False)
        print(summary, file=sys.stderr if blockers else sys.stdout)
        return 2 if blockers else 1
    if blockers:
        return 2
    print(formatter.format_success(len(sources), use_color=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
