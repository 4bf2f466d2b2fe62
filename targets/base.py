"""Targets: capability descriptors, the ``Target`` and ``Artifact`` base classes, and the target registry.

A target is a small package under ``targets/`` that registers itself::

    from accelopt.targets.base import Artifact, Capabilities, Target, register_target

    @register_target
    class MyTarget(Target):
        name = "mine"
        summary = "what it is, in one line"
        default_passes = "cleanup,fuse"
        capabilities = Capabilities(name="mine", dtypes=("float32", "int8"), tile_sizes={"gemm": (16, 16)})

        def lower(self, graph, *, model=None, samples=None):
            return MyArtifact(self.name, graph, ...)

Lookup (``get_target``) is lazy: the names in ``KNOWN_TARGETS`` map to the
module that defines them, which is imported on first use, so a new target
only has to exist and register itself. A known name whose module does not
exist yet (or registers nothing) is "not built yet" (``TargetError``).
Targets take options as a frozen dataclass (``Options``), given in the same
syntax as pass options: ``tpu{chip=v4}``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from accelopt.errors import PassError, TargetError
from accelopt.ir.graph import Graph
from accelopt.suggest import did_you_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a target runs well; passes read it from ``PassContext.target``.

    1. ``dtypes``: element types it computes in (``"float32"``, ``"int8"``...).
    2. ``preferred_layouts``: e.g. ``{"matmul_weight": "KN"}`` or ``{"conv": "NHWC"}``.
    3. ``tile_sizes``: e.g. ``{"gemm": (16, 16)}``; ``pad_multiple``: dims are padded to it (0: none).
    4. ``native_ops``: ops it runs natively (empty: every registry op).
    5. ``quantization``: e.g. ``{"weights": "per-channel-symmetric", "activations": "symmetric"}``.
    6. ``estimate_only``: timings from this target are model estimates, not measurements.
    """

    name: str
    description: str = ""
    dtypes: tuple[str, ...] = ("float32",)
    preferred_layouts: Mapping[str, str] = field(default_factory=dict)
    tile_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    pad_multiple: int = 0
    native_ops: frozenset[str] = frozenset()
    quantization: Mapping[str, str] = field(default_factory=dict)
    estimate_only: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def supports_dtype(self, dtype: Any) -> bool:
        return str(dtype) in self.dtypes

    def runs_natively(self, op: str) -> bool:
        return not self.native_ops or op in self.native_ops

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "dtypes": list(self.dtypes),
            "preferred_layouts": dict(self.preferred_layouts),
            "tile_sizes": {k: list(v) for k, v in self.tile_sizes.items()},
            "pad_multiple": self.pad_multiple,
            "native_ops": sorted(self.native_ops),
            "quantization": dict(self.quantization),
            "estimate_only": self.estimate_only,
        }


class Artifact:
    """What ``Target.lower`` returns: saveable, loadable, runnable.

    Subclasses implement ``save``, ``run`` and ``load``; ``benchmark`` times
    ``run``. ``files`` lists the names ``save`` writes (for the report).
    """

    target: str = ""
    files: tuple[str, ...] = ()

    def __init__(self, target: str, graph: Graph | None = None, *, metadata: Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.graph = graph
        self.metadata: dict[str, Any] = dict(metadata or {})

    def save(self, directory: str | Path) -> list[Path]:  # pragma: no cover - abstract
        """Write the artifact's files into ``directory`` (created if needed); returns their paths."""
        raise NotImplementedError

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Run on numpy inputs keyed by graph input name; outputs keyed by output name."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> Artifact:
        """Read an artifact folder. On ``Artifact`` itself: any kind accelopt writes, chosen by its
        ``metadata.json`` (``load_artifact``); subclasses read their own format."""
        if cls is Artifact:
            return load_artifact(directory)
        raise NotImplementedError(f"{cls.__name__}.load")

    def benchmark(self, inputs: Mapping[str, np.ndarray], *, warmup: int = 2, repeat: int = 10) -> dict[str, float]:
        """Wall-clock time of ``run`` in seconds: median, min and mean over ``repeat`` runs after ``warmup``."""
        for _ in range(warmup):
            self.run(inputs)
        times = []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            self.run(inputs)
            times.append(time.perf_counter() - t0)
        arr = np.array(times)
        return {"median_s": float(np.median(arr)), "min_s": float(arr.min()), "mean_s": float(arr.mean())}

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for the report."""
        return {"target": self.target, "files": list(self.files), **_jsonable(self.metadata)}


class BucketedArtifact(Artifact):
    """An artifact with one compiled function per sequence bucket (metadata ``buckets``) and its weights saved
    beside the program (metadata ``parameters``): the Relax (cpu, gpu) and TPU artifacts."""

    @property
    def buckets(self) -> list[dict[str, Any]]:
        return list(self.metadata["buckets"])

    @property
    def parameter_bytes(self) -> int:
        return int(self.metadata["parameters"]["bytes"])


@dataclass(frozen=True)
class NoOptions:
    """Options of a target that takes none."""


class Target:
    """Base class of targets: ``name``, ``summary``, ``capabilities``, ``default_passes``, ``lower``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_passes: ClassVar[str] = "cleanup"
    capabilities: ClassVar[Capabilities] = Capabilities(name="")
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is None:
            try:
                options = self.Options(**kwargs)
            except TypeError as e:
                raise TargetError(f"target {self.name!r}: {e}") from e
        self.options = options

    #: True when ``lower`` can export one program per sequence length (``with_seq_lens``)
    seq_buckets: ClassVar[bool] = False

    def lower(self, graph: Graph, *, model: Any = None, samples: Any = None) -> Artifact:  # pragma: no cover
        raise NotImplementedError

    def with_seq_lens(self, seq_lens: Sequence[int]) -> Target:
        """This target bound to the sequence lengths ``seq_lens`` (``--seq-len 128,256,512``).

        1. one length (or repeats of one): the target as is; symbolic sequence
           dims bind to it at validation and, for static-shape targets, at lowering;
        2. several lengths on a target without sequence buckets: ``TargetError``
           naming the targets that have them;
        3. targets with buckets (``seq_buckets``) override this to export one
           program per length.
        """
        if len(set(seq_lens)) <= 1:
            return self
        with_buckets = sorted(n for n, c in _TARGETS.items() if c.seq_buckets) or ["tpu"]
        raise TargetError(
            f"target {self.name!r} takes a single sequence length, got {len(seq_lens)} "
            f"({', '.join(str(s) for s in seq_lens)}); one export per sequence bucket is supported by: "
            f"{', '.join(with_buckets)}"
        )

    def with_batch(self, batch: int) -> Target:
        """This target bound to batch size ``batch`` (``--batch``); targets that compile static shapes
        override it (with ``bound_batch`` for the value), the others keep it in ``requested_batch``
        so their artifact can say what it was built for."""
        target = copy.copy(self)
        target.requested_batch = int(batch)
        return target

    #: the ``--batch`` a target without a batch option was given (``with_batch``)
    requested_batch: int = 1

    @property
    def spec(self) -> str:
        """The target with the options that differ from their defaults, as ``name{k=v}``."""
        from accelopt.passes.base import PassSpec, _format_option

        default = self.Options()
        opts = {
            f.name: _format_option(getattr(self.options, f.name))
            for f in dataclasses.fields(self.options)
            if getattr(self.options, f.name) != getattr(default, f.name)
        }
        return str(PassSpec(self.name, opts))

    def __repr__(self) -> str:
        return f"<Target {self.spec}>"


def bound_batch(target: str, option: int, requested: int, *, default: int = 1) -> int:
    """The batch a static-shape target compiles for: ``--batch`` (``requested``), unless the target spec
    set its ``batch`` option (``option``) and ``--batch`` was left at ``default``. A spec option and a
    ``--batch`` that disagree are a ``TargetError``. Every target with a ``batch`` option uses this."""
    requested = int(requested)
    if requested < 1:
        raise TargetError(f"{target} target: batch must be at least 1, got {requested}")
    if option == requested or requested == default:
        return option
    if option != default:
        raise TargetError(
            f"{target} target: batch={option} in the target spec and --batch {requested} disagree; give the batch once"
        )
    return requested


# ---------------------------------------------------------------- registry
#: every target name the project plans, the module that defines it, and what it is
KNOWN_TARGETS: dict[str, tuple[str, str]] = {
    "onnx": ("accelopt.targets.onnx_target", "ONNX written back for ONNX Runtime (contrib ops for fused ops)"),
    "cpu": ("accelopt.targets.cpu", "TVM Relax -> LLVM for the host CPU"),
    "gpu": ("accelopt.targets.gpu", "TVM Relax -> CUDA"),
    "fpga": ("accelopt.targets.fpga", "VTA-class int8 GEMM accelerator (simulator and cycle model)"),
    "tpu": ("accelopt.targets.tpu", "XLA: StableHLO exported with jax.export"),
}

_TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator adding a target to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    existing = _TARGETS.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"target name {cls.name!r} is already registered by {existing.__module__}")
    _TARGETS[cls.name] = cls
    return cls


def _import_target(name: str) -> None:
    module = KNOWN_TARGETS.get(name, (f"accelopt.targets.{name}", ""))[0]
    try:
        if importlib.util.find_spec(module) is None:
            return
    except (ImportError, ValueError):
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise TargetError(f"target {name!r} could not be loaded ({module}): {e}") from e


def _try_load(name: str) -> bool:
    """Import ``name``'s module if needed; True when the target is registered."""
    if name not in _TARGETS:
        try:
            _import_target(name)
        except TargetError as e:
            log.debug("%s", e)
            return False
    return name in _TARGETS


def target_class(name: str) -> type[Target]:
    """The class registered under ``name``, importing its module on first use.

    Raises ``TargetError``: 1. a known target whose module is missing or
    registers nothing: "not built yet"; 2. a module that fails to import: the
    import error; 3. an unknown name: lists the known ones.
    """
    if name not in _TARGETS:
        _import_target(name)
    if name in _TARGETS:
        return _TARGETS[name]
    if name in KNOWN_TARGETS:
        built = [n for n in KNOWN_TARGETS if n != name and _try_load(n)]
        raise TargetError(f"target {name!r} is not built yet; available targets: {', '.join(built) or 'none'}")
    names = sorted(set(KNOWN_TARGETS) | set(_TARGETS))
    raise TargetError(f"unknown target {name!r}{did_you_mean(name, names)}; known targets: {', '.join(names)}")


def get_target(spec: str) -> Target:
    """A target instance from ``name`` or ``name{key=value,...}`` (options converted like pass options)."""
    from accelopt.passes.base import _convert_option, parse_pipeline

    try:
        specs = parse_pipeline(spec)
    except PassError as e:
        raise TargetError(f"bad target {spec!r}: {e}") from None
    if len(specs) != 1:
        raise TargetError(f"bad target {spec!r}: expected one name, e.g. onnx or tpu{{chip=v4}}")
    s = specs[0]
    cls = target_class(s.name)
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    kwargs: dict[str, Any] = {}
    for key, raw in s.options.items():
        if key not in fields:
            raise TargetError(
                f"target {s.name!r} has no option {key!r}{did_you_mean(key, fields)}; "
                f"its options: {', '.join(fields) or 'none'}"
            )
        try:
            kwargs[key] = _convert_option(s.name, fields[key], raw)
        except PassError as e:
            raise TargetError(str(e).replace("pass ", "target ", 1)) from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise TargetError(f"target {s.name!r}: {e}") from e


@dataclass(frozen=True)
class TargetInfo:
    """One row of ``optimize --list-targets``."""

    name: str
    built: bool
    summary: str
    default_passes: str = ""
    error: str = ""


def list_targets() -> list[TargetInfo]:
    """Every known or registered target, with whether it is built."""
    rows = []
    for name in sorted(set(KNOWN_TARGETS) | set(_TARGETS)):
        try:
            cls = target_class(name)
        except TargetError as e:
            rows.append(TargetInfo(name, False, KNOWN_TARGETS.get(name, ("", ""))[1], error=str(e)))
            continue
        rows.append(TargetInfo(name, True, cls.summary or KNOWN_TARGETS.get(name, ("", ""))[1], cls.default_passes))
    return rows


# ------------------------------------------------------- artifact loader
#: artifact format (metadata.json "format") -> its class, filled by register_artifact
_ARTIFACTS: dict[str, type[Artifact]] = {}
METADATA_FILE = "metadata.json"


def register_artifact(fmt: str, cls: type[Artifact]) -> type[Artifact]:
    """Make ``Artifact.load`` read folders whose metadata.json says ``"format": fmt`` with ``cls.load``."""
    existing = _ARTIFACTS.get(fmt)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"artifact format {fmt!r} is already registered by {existing.__module__}")
    _ARTIFACTS[fmt] = cls
    return cls


def artifact_metadata(directory: str | Path) -> dict[str, Any]:
    """An artifact folder's metadata.json; a folder holding only ``model.onnx`` (written before metadata.json
    existed) reads as the onnx target's. ``TargetError`` for anything else."""
    import json

    d = Path(directory)
    if not d.is_dir():
        raise TargetError(f"{d}: no such artifact folder")
    path = d / METADATA_FILE
    if not path.is_file():
        if (d / "model.onnx").is_file():
            return {"format": "accelopt-onnx-artifact", "target": "onnx", "version": 0}
        raise TargetError(f"{d}: no {METADATA_FILE}; not an artifact folder written by accelopt")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TargetError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise TargetError(f"{path}: expected a JSON object")
    return meta


def load_artifact(directory: str | Path) -> Artifact:
    """Load any artifact accelopt wrote: the target named in its metadata.json registers the reader."""
    meta = artifact_metadata(directory)
    fmt, target = meta.get("format"), meta.get("target")
    if fmt not in _ARTIFACTS and isinstance(target, str) and target in (set(KNOWN_TARGETS) | set(_TARGETS)):
        try:
            target_class(target)
        except TargetError as e:
            raise TargetError(f"{directory}: an artifact of target {target!r}, which cannot be loaded here: {e}") from e
    cls = _ARTIFACTS.get(str(fmt))
    if cls is None:
        known = ", ".join(sorted(_ARTIFACTS)) or "none"
        raise TargetError(f"{directory}: unknown artifact format {fmt!r} (target {target!r}); readable formats: {known}")
    return cls.load(directory)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
