"""Helpers for the Relax lowering tests: lower graphs, compile them for this CPU in one module, run them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from accelopt.ir import Graph
from accelopt.targets.cpu.build import compile_module, llvm_target
from accelopt.targets.cpu.host import detect_mcpu
from accelopt.targets.relax import Kernels
from accelopt.targets.relax.lowering import build_functions


class Compiled:
    """Several graphs compiled into one VM (``run(name, feed)`` calls one of them), and the build's record."""

    def __init__(self, graphs: Mapping[str, Graph], kernels: Kernels | None = None) -> None:
        self.graphs = dict(graphs)
        self.lowered = build_functions([(name, g, {}) for name, g in self.graphs.items()], kernels)
        self.build = compile_module(self.lowered.mod, llvm_target(detect_mcpu(), 2))
        self.vm = relax.VirtualMachine(self.build.executable, tvm.cpu())

    def run(self, name: str, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.graphs[name]
        args = [tvm.runtime.tensor(np.ascontiguousarray(feed[v.name])) for v in g.inputs]
        args += [tvm.runtime.tensor(np.ascontiguousarray(self.lowered.params[k])) for k in self.lowered.signatures[name]]
        outs = self.vm[name](*args)
        return {v.name: outs[i].numpy() for i, v in enumerate(g.outputs)}


def assert_matches(got: Mapping[str, np.ndarray], want: Mapping[str, Any], names: Sequence[str], case: str,
                   rtol: float = 2e-5, atol: float = 2e-6) -> None:
    """Outputs equal in shape; integers and bools exactly, floats within the tolerances."""
    for n in names:
        w, o = np.asarray(want[n]), got[n]
        assert o.shape == w.shape, (case, n, o.shape, w.shape)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(o.astype(w.dtype), w, err_msg=f"{case}: {n}")
        else:
            np.testing.assert_allclose(o.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=f"{case}: {n}")
