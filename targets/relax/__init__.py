"""The IR -> Relax lowering shared by the TVM targets (cpu, gpu, and the fpga target's host part).

``lowering.py`` holds the op table and ``build_module`` (one Relax function per
sequence bucket, parameters outside the library); ``ops_*.py`` register the
lowerings by op family; ``kernels.py`` is the hook through which targets emit
the heavy ops (dense, attention, LayerNorm...) their own way.
"""

from accelopt.targets.relax.kernels import Kernels, QWeight, Weight
from accelopt.targets.relax.lowering import (
    MIN_PARAM_NUMEL,
    Bucket,
    LowerCtx,
    LoweredModule,
    Unlowerable,
    bind_shape,
    build_module,
    lower,
    lowered_ops,
    relax_dtype,
    unlowered_ops,
)

__all__ = [
    "MIN_PARAM_NUMEL",
    "Bucket",
    "Kernels",
    "LowerCtx",
    "LoweredModule",
    "QWeight",
    "Unlowerable",
    "Weight",
    "bind_shape",
    "build_module",
    "lower",
    "lowered_ops",
    "relax_dtype",
    "unlowered_ops",
]
