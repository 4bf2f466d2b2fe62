"""accelopt's x86 kernels for the cpu target: TE computes and the ``s_tir.Schedule`` rules behind them.

- ``dense``: fp32 ``act(x @ W + b)`` with the weight packed into column panels;
- ``attention``: the fused attention core (scores, masked softmax, context) per (batch, head);
- ``norm``: LayerNorm / SkipLayerNorm, one pass per row;
- ``fastmath``: vectorizable ``exp``, ``erf``, ``tanh`` and the Linear activations.
"""
