"""accelopt: compiler-style optimization of BERT-class transformer models for accelerators.

Public API::

    import accelopt as ao

    model = ao.load("bert.onnx")
    result = ao.optimize(model, target="onnx", passes="cleanup")
    result.report.save("out/report.html")
    result.artifact.save("out/")
    artifact = ao.Artifact.load("out/")   # any target's artifact, by its metadata.json
"""

from __future__ import annotations

import importlib.metadata

from accelopt.api import Result, load, optimize
from accelopt.errors import (
    AccelOptError,
    FrontendError,
    InterpreterError,
    PassError,
    TargetError,
    ValidationError,
    VerifyError,
)
from accelopt.ir.graph import Graph
from accelopt.model import Model
from accelopt.records import AccuracyRecord, Localization, PassRecord
from accelopt.report import Report, diff_reports
from accelopt.samples import SampleSet
from accelopt.targets.base import Artifact

try:
    __version__ = importlib.metadata.version("accelopt")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "0.0.0"

__all__ = [
    "AccelOptError",
    "AccuracyRecord",
    "Artifact",
    "FrontendError",
    "Graph",
    "InterpreterError",
    "Localization",
    "Model",
    "PassError",
    "PassRecord",
    "Report",
    "Result",
    "SampleSet",
    "TargetError",
    "ValidationError",
    "VerifyError",
    "__version__",
    "diff_reports",
    "load",
    "optimize",
]
