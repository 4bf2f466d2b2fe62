"""Shared pytest setup.

Having this file in ``tests/`` puts ``tests/`` on ``sys.path`` (pytest's default
"prepend" import mode), so test files in subfolders (``tests/passes/...``) can
``import modelzoo`` like the ones at the top level.
"""

from __future__ import annotations

import os

# Model-zoo exports and Hugging Face loads never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
