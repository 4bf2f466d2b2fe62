"""Shared pieces of the fpga target tests: quantize a graph for VTA, and an independent integer reference."""

from __future__ import annotations

import numpy as np

from accelopt.interpreter import Interpreter
from accelopt.ir.graph import Graph, Node
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passmanager import PassManager
from accelopt.targets.base import get_target
from accelopt.targets.fpga.artifact import FpgaArtifact


def quantize_for_fpga(graph: Graph, calibration: list, spec: str = "fpga") -> tuple[Graph, FpgaArtifact]:
    """``int8`` with the fpga target's capabilities (power2 scales), then lowered by ``spec``."""
    tgt = get_target(spec)
    ctx = PassContext(calibration=calibration, target=tgt.capabilities)
    g, _ = PassManager(build_pipeline("int8"), ctx).run(graph)
    return g, tgt.lower(g)


def base_of(graph: Graph, node: Node) -> float:
    """The base scale S of a QLinear's input scale: a constant, or the constant factor of ``Mul(S, 2^-e)``."""
    v = node.inputs[1]
    c = graph.const_value(v)
    if c is not None:
        return float(c)
    p = v.producer
    assert p is not None and p.op == "Mul"
    for x in p.inputs:
        c = graph.const_value(x)
        if c is not None:
            return float(c)
    raise AssertionError("no base scale")


def integer_reference(graph: Graph, node: Node, env: dict[str, np.ndarray]) -> np.ndarray:
    """The int8 output of one QLinear, from the graph's own constants in numpy integers.

    ``acc = (x_q - z) @ W_q``; ``acc >>= e`` per row with ``2^-e = x_scale / S``; ``acc += round(b / (S *
    w_scale))`` and the rounding term; ``acc >>= log2(y_scale / (S * w_scale))``; clip to int8. Written
    from the definitions, not from the compiler's code.
    """
    ins = list(node.inputs) + [None] * 9

    def const(i: int) -> np.ndarray | None:
        return None if ins[i] is None else graph.const_value(ins[i])

    x = env[ins[0].name].astype(np.int64)
    x_scale = env[ins[1].name] if const(1) is None else const(1)
    z = 0 if ins[2] is None else (env[ins[2].name] if const(2) is None else const(2)).astype(np.int64)
    w = const(3).astype(np.int64)
    s = base_of(graph, node)
    unit = s * const(4).astype(np.float64)
    bias = np.zeros(w.shape[1]) if const(6) is None else const(6).astype(np.float64)
    shift = np.rint(np.log2(const(7).astype(np.float64) / unit)).astype(np.int64)
    e = np.rint(np.log2(s / np.asarray(x_scale, np.float64))).astype(np.int64)
    acc = np.matmul((x - z).astype(np.float64), w.astype(np.float64)).astype(np.int64)
    acc = acc >> np.broadcast_to(e, acc.shape[:-1] + (1,))
    acc = acc + np.rint(bias / unit).astype(np.int64) + np.where(shift > 0, 1 << np.maximum(shift - 1, 0), 0)
    acc = acc >> shift
    return np.clip(acc, -128, 127).astype(np.int8)


def node_inputs(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of ``graph`` on ``feeds`` (the interpreter, intermediates kept)."""
    return Interpreter(graph).run(feeds, keep_intermediates=True)
