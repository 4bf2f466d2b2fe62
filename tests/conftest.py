"""Shared pytest setup.

Having this file in ``tests/`` puts ``tests/`` on ``sys.path`` (pytest's default
"prepend" import mode), so test files in subfolders (``tests/passes/...``) can
``import modelzoo`` like the ones at the top level.

Fixtures: ``tiny_bert``, the path of the cached tiny ONNX BERT (legacy exporter, opset 17).
"""

from __future__ import annotations

import os
from pathlib import Path

import planted_passes  # noqa: F401  (registers the test-only passes: damage, break-graph)
import pytest

# Model-zoo exports and Hugging Face loads never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert() -> Path:
    """The tiny BERT (hidden 64, 2 layers) exported to ONNX by the legacy exporter at opset 17, cached."""
    import modelzoo

    return modelzoo.export_onnx("bert", exporter="legacy", opset=17)
