"""The reference interpreter: runs a Graph on numpy arrays through the registry kernels.

Values are freed after their last use unless ``keep_intermediates`` is set
(used to localize where two graphs start to diverge). Matmuls go to numpy's
BLAS, so BERT-base runs at BLAS speed.

Buffer reuse: when an input of an op with an ``inplace`` kernel dies at that
node, the op may write its result into the input's array instead of allocating
a new one (elementwise chains, bias adds, softmax, layer norm). An array is only
handed over when it owns its memory and nothing but the interpreter holds it: a
view of it, the same array under another live value, a constant or a graph
input all keep a reference, which the reference count shows.

Allocator: numpy takes every array over 128 KiB from a fresh ``mmap``, so each
new activation is page-faulted in and unmapped again (BERT-base: ~9,300 faults
per run; 20 back-to-back runs took 158-170 ms at best with the tuning below and
182-210 ms without, on 2 Zen 4 cores). Like onnxruntime's arena, the first Interpreter
asks glibc (``mallopt``) to serve blocks up to 64 MiB from its heap and to keep
up to 128 MiB of freed heap, so a run reuses the previous run's pages. This is
process-wide and glibc-only; ``ACCELOPT_MALLOC_TUNING=0`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import InterpreterError
from accelopt.ir.graph import Graph, Value
from accelopt.ir.registry import OpDef, get_op
from accelopt.ir.types import TensorType

log = logging.getLogger(__name__)

#: a kernel as the registry defines them: (inputs, attrs, number of outputs) -> outputs
Kernel = Callable[[list, dict, int], Sequence[np.ndarray]]
#: a plan step that only reads its inputs (e.g. to compare two values) and produces nothing
Probe = Callable[[list[np.ndarray | None]], None]


@dataclass
class _Step:
    node_name: str
    op: str
    opdef: OpDef | None  # None for a probe
    attrs: dict
    inputs: list[int | None]  # slot ids
    outputs: list[int]
    free_after: list[int]
    kernel: Kernel | None = None  # None for a probe
    donors: tuple[int, ...] = ()  # input positions whose array the inplace kernel may take
    probe: Probe | None = None


@dataclass(frozen=True)
class StepSpec:
    """One step of an execution plan over numbered slots: a registry op, or a ``probe``.

    ``compile_plan`` turns a list of these into steps that ``execute`` runs; the
    ``Interpreter`` builds one spec per graph node, and validation builds plans
    that mix the nodes of several graphs with probes. ``kernel`` replaces the
    op's registry kernel (an ``Interpreter`` override); such a step never
    writes into its inputs.
    """

    name: str
    op: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[int | None, ...] = ()
    outputs: tuple[int, ...] = ()
    probe: Probe | None = None
    kernel: Kernel | None = None


def compile_plan(specs: Sequence[StepSpec], keep: Collection[int]) -> list[_Step]:
    """Steps for ``specs`` in order; a slot not in ``keep`` is freed after its last use."""
    last_use: dict[int, int] = {}
    for idx, spec in enumerate(specs):
        for s in spec.inputs:
            if s is not None:
                last_use[s] = idx
    frees: dict[int, list[int]] = {}
    for s, idx in last_use.items():
        if s not in keep:
            frees.setdefault(idx, []).append(s)
    steps = []
    for idx, spec in enumerate(specs):
        ins = list(spec.inputs)
        free = frees.get(idx, [])
        if spec.probe is not None:
            steps.append(_Step(spec.name, "probe", None, {}, ins, [], free, probe=spec.probe))
            continue
        opdef = get_op(spec.op)
        donors: tuple[int, ...] = ()
        if opdef.inplace is not None and spec.kernel is None:
            donors = tuple(i for i, s in enumerate(ins) if s is not None and s in free and ins.count(s) == 1)
        kernel = spec.kernel if spec.kernel is not None else opdef.kernel
        attrs = opdef.full_attrs(spec.attrs)
        steps.append(_Step(spec.name, spec.op, opdef, attrs, ins, list(spec.outputs), free, kernel, donors))
    return steps


def execute(steps: Sequence[_Step], env: list[np.ndarray | None], *, keep_intermediates: bool = False) -> None:
    """Run ``steps`` over ``env`` (arrays by slot, inputs and constants filled in), freeing dead slots.

    NaN/Inf follow IEEE rules, as in onnxruntime, without numpy warnings."""
    with np.errstate(all="ignore"):
        _execute(steps, env, keep_intermediates)


def _execute(steps: Sequence[_Step], env: list[np.ndarray | None], keep_intermediates: bool) -> None:
    for step in steps:
        args = [None if s is None else env[s] for s in step.inputs]
        if step.probe is not None:
            step.probe(args)
        else:
            assert step.opdef is not None and step.kernel is not None
            try:
                outs = None
                if step.donors and not keep_intermediates:
                    for i in step.donors:
                        if _unshared(args[i]):
                            outs = step.opdef.inplace(args, step.attrs, len(step.outputs), i)  # type: ignore[misc]
                            if outs is not None:
                                break
                if outs is None:
                    outs = step.kernel(args, step.attrs, len(step.outputs))
            except InterpreterError:
                raise
            except Exception as e:
                shapes = ", ".join("_" if a is None else f"{a.dtype}{list(a.shape)}" for a in args)
                raise InterpreterError(
                    f"node {step.node_name} ({step.op}) failed on inputs ({shapes}): {type(e).__name__}: {e}",
                    node=step.node_name,
                ) from e
            if len(outs) != len(step.outputs):
                raise InterpreterError(f"node {step.node_name} ({step.op}): kernel returned {len(outs)} outputs")
            for k, s in enumerate(step.outputs):  # no loop variable left holding an output
                env[s] = outs[k]
            outs = None
        args = []
        if not keep_intermediates:
            for s in step.free_after:
                env[s] = None


class Interpreter:
    """A compiled execution plan for one graph; ``run`` may be called many times.

    ``overrides`` maps node names to kernels that run those nodes instead of
    their op's registry kernel (a target running some layers elsewhere, such as
    the fpga target's VTA programs); such nodes never write into their inputs.
    """

    def __init__(self, graph: Graph, overrides: Mapping[str, Kernel] | None = None) -> None:
        self.graph = graph
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - {n.name for n in graph.nodes})
        if unknown:
            raise InterpreterError(f"graph {graph.name!r}: kernel overrides for unknown node(s) {', '.join(unknown)}")
        _tune_malloc()
        slots: dict[int, int] = {}

        def slot(v: Value) -> int:
            return slots.setdefault(id(v), len(slots))

        self._inputs = [(v.name, v.type, slot(v)) for v in graph.inputs]
        self._consts = [(slot(v), v.const) for v in graph.initializers.values()]
        self._outputs = [(v.name, slot(v)) for v in graph.outputs]
        self._slot_names: dict[int, str] = {}
        for v in graph.values():
            self._slot_names[slot(v)] = v.name
        specs = [
            StepSpec(
                node.name,
                node.op,
                node.attrs,
                tuple(None if v is None else slot(v) for v in node.inputs),
                tuple(slot(v) for v in node.outputs),
                kernel=overrides.get(node.name),
            )
            for node in graph.nodes
        ]
        keep = {s for _, s in self._outputs} | {s for s, _ in self._consts} | {s for _, _, s in self._inputs}
        self._steps = compile_plan(specs, keep)
        self._n_slots = len(slots)

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        keep_intermediates: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run the graph. Returns the outputs by name, or every value if ``keep_intermediates``."""
        env: list[np.ndarray | None] = [None] * self._n_slots
        missing = [name for name, _, _ in self._inputs if name not in inputs]
        if missing:
            raise InterpreterError(f"graph {self.graph.name!r}: missing input(s) {', '.join(missing)}")
        for name, t, s in self._inputs:
            env[s] = check_input(name, t, inputs[name])
        for s, arr in self._consts:
            env[s] = arr
        execute(self._steps, env, keep_intermediates=keep_intermediates)
        if keep_intermediates:
            return {self._slot_names[i]: a for i, a in enumerate(env) if a is not None}
        return {name: env[s] for name, s in self._outputs}  # type: ignore[misc]


_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 64 << 20
_TRIM_THRESHOLD = 128 << 20
_malloc_tuned: bool | None = None


def _tune_malloc() -> bool:
    """Once per process: glibc serves arrays up to 64 MiB from a heap it keeps (see the module docstring)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if os.environ.get("ACCELOPT_MALLOC_TUNING", "1") != "0" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                _malloc_tuned = bool(
                    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                )
            except (OSError, AttributeError) as e:
                log.debug("mallopt unavailable: %s", e)
        log.debug("malloc tuning %s", "on" if _malloc_tuned else "off")
    return _malloc_tuned


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (``fordblks``: free bytes in the heap)."""

    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]


def release_memory(min_free: int = 0) -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim``) when at least ``min_free``
    bytes of it are free; returns whether it trimmed.

    Freed blocks under the mmap threshold stay resident otherwise: after a large model's run (or a
    runtime's session is dropped) that is as much memory as the run's working set.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        if min_free > 0:
            info = libc.mallinfo2
            info.restype = _MallInfo2
            if info().fordblks < min_free:
                return False
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError) as e:
        log.debug("malloc_trim unavailable: %s", e)
        return False


def _holders(a: object) -> int:
    """``a``'s reference count as seen one call below the caller's frame."""
    return sys.getrefcount(a)


def _probe(a: object) -> int:
    return _holders(a)  # the same call shape as in ``_unshared``


def _baseline_holders() -> int:
    """The count ``_unshared`` sees for an array held only by an env slot and an argument list.

    Measured through the same call shape rather than assumed, so a Python that counts
    references differently (borrowed loads, say) keeps the check exact.
    """
    env = [np.empty(1)]
    args = [env[0]]
    return _probe(args[0])


_BASE_HOLDERS = _baseline_holders()


def _unshared(a: np.ndarray | None) -> bool:
    """``a`` owns its writable buffer and only the interpreter's env and argument list hold it."""
    return (
        isinstance(a, np.ndarray)
        and a.flags.owndata
        and a.flags.writeable
        and _holders(a) <= _BASE_HOLDERS
    )


def check_input(name: str, t: TensorType, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != t.dtype.np:
        if np.can_cast(arr.dtype, t.dtype.np, casting="same_kind") or (arr.dtype.kind in "iu" and t.dtype.is_int):
            arr = arr.astype(t.dtype.np)
        else:
            raise InterpreterError(f"input {name!r}: expected {t}, got {arr.dtype}{list(arr.shape)}")
    if t.shape is not None:
        ok = arr.ndim == len(t.shape) and all(not isinstance(d, int) or d == n for d, n in zip(t.shape, arr.shape))
        if not ok:
            raise InterpreterError(f"input {name!r}: expected shape {t}, got {list(arr.shape)}")
    return arr


def run(graph: Graph, inputs: Mapping[str, np.ndarray], *, keep_intermediates: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph`` once (see ``Interpreter`` to run it many times)."""
    return Interpreter(graph).run(inputs, keep_intermediates=keep_intermediates)
