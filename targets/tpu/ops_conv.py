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
4. ``ConvTranspose(x[N, C, *in], w[C, M/group, *kernel], b?)``: a convolution of
   ``x`` dilated by the strides with the flipped kernel, its in/out channels
   swapped per group, padded ``dilation * (kernel - 1) - pad`` at each end
   (plus ``output_padding`` at the end); pads and the output size from the
   reference's ``transpose_geometry``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from accelopt.ir.ops.onnx_conv_transpose import transpose_geometry
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


@lower("ConvTranspose")
def _conv_transpose(ctx, node, ins, attrs):
    """Case 4."""
    x, w = ctx.jx(ins[0]), ctx.jx(ins[1])
    sp = x.ndim - 2
    kernel = list(w.shape[2:])
    strides, dil, extra, pads, _ = transpose_geometry(list(x.shape[2:]), kernel, attrs)
    group = int(attrs.get("group", 1))
    c, mg = w.shape[0], w.shape[1]
    rhs = w.reshape(group, c // group, mg, *kernel)
    rhs = jnp.swapaxes(rhs, 1, 2).reshape(group * mg, c // group, *kernel)
    rhs = jnp.flip(rhs, axis=tuple(range(2, 2 + sp)))
    reach = [d * (k - 1) for d, k in zip(dil, kernel)]
    padding = [(reach[i] - pads[i], reach[i] - pads[i + sp] + extra[i]) for i in range(sp)]
    dims = tuple(range(sp + 2))
    y = ctx.conv(node, x, rhs, attrs, (dims, dims, dims), geometry=([1] * sp, dil, padding, strides))
    return _finish(ctx, node, y, ins[2] if len(ins) > 2 else None, 1)
