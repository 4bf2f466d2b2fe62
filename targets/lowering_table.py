"""The op -> lowering table that the Relax (cpu, gpu, fpga host) and TPU lowerings share.

A target's lowerings register themselves with a decorator (``@lower("MatMul")``)
in ``ops_*.py`` modules; the table imports those modules the first time it is
asked about an op, so that importing the lowering core does not pull in every
op (and the op modules can import the core without a cycle).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

E = TypeVar("E")  # a table entry (the target's ``Lowering`` dataclass)
F = TypeVar("F")  # the registered function


class LoweringTable(Generic[E]):
    """Entries by op name, filled by ``register`` from the modules in ``modules`` (imported on first use)."""

    def __init__(self, what: str, modules: Sequence[str]) -> None:
        #: how errors name the table ("Relax", "TPU")
        self.what = what
        self.modules = tuple(modules)
        self._entries: dict[str, E] = {}
        self._loaded = False

    def register(self, ops: Iterable[str], make: Callable[[str, F], E]) -> Callable[[F], F]:
        """A decorator that adds ``make(op, fn)`` for each op in ``ops``; an op registered twice is a ``ValueError``."""
        names = tuple(ops)

        def deco(fn: F) -> F:
            for op in names:
                if op in self._entries:
                    raise ValueError(f"op {op!r} already has a {self.what} lowering")
                self._entries[op] = make(op, fn)
            return fn

        return deco

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            for name in self.modules:
                importlib.import_module(name)
            self._loaded = True

    def get(self, op: str) -> E | None:
        """The entry of ``op``, or None when it has no lowering."""
        self._ensure_loaded()
        return self._entries.get(op)

    def __getitem__(self, op: str) -> E:
        self._ensure_loaded()
        return self._entries[op]

    def ops(self) -> set[str]:
        """Names of every op with a lowering."""
        self._ensure_loaded()
        return set(self._entries)

    def missing(self, ops: Iterable[str]) -> list[str]:
        """The ops among ``ops`` that have no lowering, sorted."""
        self._ensure_loaded()
        return sorted({op for op in ops if op not in self._entries})


__all__ = ["LoweringTable"]
