"""Shared checks for the fusion pass tests: golden text, numerics, exact ``modified``, verify()."""

from __future__ import annotations

from typing import Any

from cleanup_check import check_numerics, check_pass, run_pass, seeded_inputs  # noqa: F401  (re-exported)

from accelopt.passes.base import PassResult


def check_fusion(spec: str, before: str, after: str | None, *, atol: float = 2e-6, **options: Any) -> PassResult:
    """``check_pass`` for fusions: texts compared in canonical form, outputs equal within ``atol`` (no relative
    tolerance; fusions reassociate float math). ``options``: ``weights``, ``bindings``, ``inputs``,
    ``expect_modified`` as in ``check_pass``."""
    return check_pass(spec, before, after, atol=atol, rtol=0.0, canonical=False, **options)


def matched(result: PassResult) -> dict[str, int]:
    return {k: v["matched"] for k, v in result.stats.items() if isinstance(v, dict) and v.get("matched")}
