"""``host=cpu``: the host part compiled by the cpu target (TVM), each VTA layer called back from the compiled code.

1. ``fpga_kernels(base, calls)``: the cpu target's kernels (``base``), except
   that an offloaded ``QLinear`` (``calls``: node -> function name) becomes a
   ``call_dps_packed`` of a global function with its run-time operands
   ``(x_q, x_scale[, x_zero_point])`` and an int8 result; its weights never
   enter the compiled module.
2. ``compile_host``: the cpu target lowers the whole graph with those kernels
   for the batch and sequence the programs were compiled for.
3. ``register_layers``: the global functions, each running its layer's VTA
   program on the simulator (``FpgaArtifact.run_layer``) and writing the
   result into the output tensor TVM passes. Names carry the artifact's
   token, so two artifacts in one process do not call each other's programs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tvm import relax

from accelopt.ir.graph import Graph, Node
from accelopt.targets.relax import Kernels

if TYPE_CHECKING:
    from accelopt.targets.cpu.artifact import CpuArtifact
    from accelopt.targets.fpga.artifact import FpgaArtifact

PREFIX = "accelopt_fpga"


def packed_name(token: str, layer: str) -> str:
    return f"{PREFIX}.{token}.{layer}"


def fpga_kernels(base: Kernels, calls: Mapping[str, str]) -> Kernels:
    """Case 1: ``base``'s emitters, with the offloaded ``QLinear`` nodes as calls of their global functions."""
    base_cls = type(base)

    class FpgaKernels(base_cls):  # type: ignore[valid-type, misc]
        name = f"{base_cls.name}+vta"

        def qlinear(self, ctx: Any, node: Node, x_q: Any, x_scale: Any, x_zp: Any, *rest: Any) -> relax.Expr:
            fn = calls.get(node.name)
            if fn is None:
                return super().qlinear(ctx, node, x_q, x_scale, x_zp, *rest)
            args = [ctx.expr(x_q), ctx.expr(x_scale, "float32")]
            if x_zp is not None:
                args.append(ctx.expr(x_zp))
            shape = [*ctx.shape(x_q)[:-1], rest[0].n]  # rest[0]: the QWeight [K, N]
            out = relax.TensorType(shape, "int8")
            return ctx.emit(relax.call_dps_packed(fn, relax.Tuple(args), out))

    kernels = FpgaKernels.__new__(FpgaKernels)
    kernels.__dict__.update(base.__dict__)
    return kernels


def compile_host(graph: Graph, calls: Mapping[str, str], batch: int, seq: int, samples: Any = None) -> CpuArtifact:
    """Case 2: the cpu target's artifact for ``graph`` with the offloaded layers as calls."""
    from accelopt.targets.cpu.target import CpuOptions, CpuTarget, cpu_kernels

    target = CpuTarget(CpuOptions(seq_lens=(seq,), batch=batch))
    return target.lower(graph, samples=samples, kernels=fpga_kernels(cpu_kernels(), calls))


def register_layers(artifact: FpgaArtifact, token: str) -> None:
    """Case 3: one global function per layer, replacing any registered under the same name."""
    for layer in artifact.layers:

        def call(*args: Any, _layer: Any = layer) -> None:
            *ins, out = args
            arrays = [np.asarray(a.numpy()) for a in ins]
            res = artifact.run_layer(_layer, *arrays)
            out.copyfrom(np.ascontiguousarray(res, np.int8))

        tvm.register_global_func(packed_name(token, layer.name), call, override=True)


__all__ = ["PREFIX", "compile_host", "fpga_kernels", "packed_name", "register_layers"]
