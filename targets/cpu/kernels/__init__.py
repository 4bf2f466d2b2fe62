"""accelopt's x86 kernels for the cpu target: TE computes and the ``s_tir.Schedule`` rules behind them.

- ``x86``: ``X86Kernels``, the cpu target's ``Kernels`` hook (which op goes to which kernel);
- ``dense``: fp32 ``act(x @ W + b)`` with the weight packed into column panels;
- ``qdense`` / ``vnni``: int8 ``QLinear`` through AVX-512 VNNI; ``quantize``: per-row DynamicQuantize;
- ``attention``: the fused attention core (scores, masked softmax, context) per (batch, head);
- ``norm``: LayerNorm / SkipLayerNorm, one pass per row;
- ``fastmath``: vectorizable ``exp``, ``erf``, ``tanh`` and the Linear activations;
- ``rules``: the schedule rules, registered with the target's dispatcher on import.
"""

from accelopt.targets.cpu.kernels.rules import register_all
from accelopt.targets.cpu.kernels.x86 import X86Kernels

register_all()

__all__ = ["X86Kernels"]
