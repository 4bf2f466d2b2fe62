"""TPU lowerings of the convolutions: ``Conv`` (channels first) and ``ConvNHWC`` (channels last).

Both become one ``lax.conv_general_dilated`` (a StableHLO ``convolution``,
which XLA runs on the MXU) through ``LowerCtx.conv``, so they follow the
matmul policy: bf16 operands with f32 accumulation, or f32 at
``Precision.HIGHEST`` under the fp32 policy; the result is float32 until the
bias is added, then cast to the IR's type.

Cases:

1. ``Conv(x[N, C, *spatial], w[O, C/group, *kernel], b?)``: dimension numbers
   (0, 1, 2..), any number of spatial dims.
2. ``ConvNHWC(x[N, *spatial, C], w[*kernel, C/group, O], b?)``: the same
   attributes with channels last; no transposes are emitted, XLA takes the
   layout as given (NHWC is the TPU's native activation layout).
3. Attributes as ``Conv``: ``strides``, ``dilations``, explicit ``pads`` or
   ``auto_pad`` (``VALID``, ``SAME_UPPER``, ``SAME_LOWER``, resolved with the
   reference's ``resolve_pads`` against the static input shape), ``group``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from accelopt.targets.tpu.lowering import LowerCtx, lower


def _finish(ctx: LowerCtx, node: Any, y: Any, bias: Any, channel_axis: int) -> list[Any]:
    if bias is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        y = y + ctx.jx(bias).astype(jnp.float32).reshape(shape)
    return [y.astype(ctx.out_dtype(node))]


@lower("Conv")
def _conv(ctx, node, ins, attrs):
    """Case 1."""
    x = ctx.jx(ins[0])
    sp = x.ndim - 2
    dims = tuple(range(sp + 2))
    y = ctx.conv(node, x, ins[1], attrs, (dims, dims, dims))
    return _finish(ctx, node, y, ins[2] if len(ins) > 2 else None, 1)


@lower("ConvNHWC")
def _conv_nhwc(ctx, node, ins, attrs):
    """Case 2."""
    x = ctx.jx(ins[0])
    sp = x.ndim - 2
    act = (0, sp + 1, *range(1, sp + 1))  # N, C, spatial
    kernel = (sp + 1, sp, *range(sp))  # O, I, spatial
    y = ctx.conv(node, x, ins[1], attrs, (act, kernel, act))
    return _finish(ctx, node, y, ins[2] if len(ins) > 2 else None, x.ndim - 1)
