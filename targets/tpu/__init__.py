"""The ``tpu`` target: graphs lowered to JAX and exported as StableHLO with ``jax.export``.

See ``target.py`` for the flow, ``policy.py`` for the bf16/int8 choices,
``lowering.py`` for the op table, ``export.py`` for the StableHLO checks and
``roofline.py`` for the (labelled) latency estimate.
"""

from accelopt.targets.tpu.artifact import TpuArtifact
from accelopt.targets.tpu.chips import CHIPS, DEFAULT_CHIP, Chip, get_chip
from accelopt.targets.tpu.lowering import lower, lowered_ops, unlowered_ops
from accelopt.targets.tpu.policy import Policy, choose_policy
from accelopt.targets.tpu.target import TpuOptions, TpuTarget

__all__ = [
    "CHIPS",
    "DEFAULT_CHIP",
    "Chip",
    "Policy",
    "TpuArtifact",
    "TpuOptions",
    "TpuTarget",
    "choose_policy",
    "get_chip",
    "lower",
    "lowered_ops",
    "unlowered_ops",
]
