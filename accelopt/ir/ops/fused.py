"""Fused transformer ops (domain ``accelopt``) with float32 numpy reference kernels.

Each kernel computes exactly what the unfused subgraph it replaces computes, in
the input's precision (float32 for float32 models; float16/bfloat16 inputs are
computed in float32 and cast back), so a fusion changes outputs by rounding
only (about 1e-6 relative).

Ops:

1. ``LayerNorm(x, gamma, beta?){axis=-1, epsilon}``: normalization over the
   axes from ``axis`` to the last one.
2. ``SkipLayerNorm(x, skip, gamma, beta?, bias?){epsilon}`` = LayerNorm over the
   last axis of ``x + skip (+ bias)``; an optional second output is that sum.
3. ``Linear(x, W[K,N], b?){activation}``: ``act(x @ W + b)``, activation one
   of ``none``, ``gelu`` (exact), ``gelu_tanh``, ``gelu_sigmoid``
   (``x * sigmoid(1.702 x)``), ``relu``.
4. ``QuickGelu(x){alpha=1.702}`` = ``x * sigmoid(alpha * x)`` (the sigmoid
   approximation of GELU, onnxruntime's com.microsoft QuickGelu).
5. ``RMSNorm(x, scale){axis=-1, epsilon}`` = ``x / sqrt(mean(x^2) + epsilon) *
   scale`` over the axes from ``axis`` to the last one (no mean subtraction,
   no shift: T5's norm, ONNX opset 23's ``RMSNormalization``).
6. ``EmbedLayerNorm(input_ids, token_type_ids?, word_emb, pos_emb, type_emb?,
   gamma, beta, position_ids?){epsilon}`` = LayerNorm(word_emb[input_ids] +
   pos_emb[positions] + type_emb[token_type_ids]); positions are
   ``position_ids`` when given, else ``0..S-1``. An optional second output is
   the embedding sum before the normalization.
7. ``PackedLinear(x, Wp, b?){activation, transposed, tile, k, n}`` = ``Linear``
   with the weight ``W [k, n]`` stored in a target's layout: ``transposed=1``
   stores ``W^T [n, k]``; ``tile=[tk, tn]`` stores zero-padded blocks,
   ``[ceil(k/tk), ceil(n/tn), tk, tn]`` (transposed: blocks of ``W^T``,
   ``[ceil(n/tn), ceil(k/tk), tn, tk]``). ``pack_weight``/``unpack_weight``
   convert; the kernel unpacks, so results equal ``Linear``'s exactly.
8. ``ConvNHWC(x[N, *spatial, C], w[*kernel, C/group, O], b?)`` with ``Conv``'s
   attributes: the channels-last convolution (same numbers as ``Conv`` on the
   transposed tensors).

The attention ops (``Attention``, ``MultiHeadAttention``) live in
``accelopt.ir.ops.attention``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.attention import attention, attention_from_qkv  # noqa: F401 (they lived here: still importable)
from accelopt.ir.ops.common import dims_compatible_k, infer_axis, same_as_input
from accelopt.ir.ops.onnx_conv import CONV_ATTRS, conv_nchw, infer_conv_dims
from accelopt.ir.ops.onnx_elementwise import gelu
from accelopt.ir.ops.onnx_math import layer_norm as onnx_layer_norm
from accelopt.ir.ops.onnx_math import matmul
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import TensorType

DOMAIN = "accelopt"

#: activations ``Linear`` accepts
LINEAR_ACTIVATIONS = ("none", "gelu", "gelu_tanh", "gelu_sigmoid", "relu")


# -------------------------------------------------------------------- helpers
def _compute_dtype(x: np.ndarray) -> np.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def quick_gelu(x: np.ndarray, alpha: float = 1.702) -> np.ndarray:
    """``x * sigmoid(alpha x)``."""
    from scipy.special import expit

    return x * expit(x * x.dtype.type(alpha)).astype(x.dtype, copy=False)


def apply_activation(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "none":
        return y
    if activation == "gelu":
        return gelu(y, "none")
    if activation == "gelu_tanh":
        return gelu(y, "tanh")
    if activation == "gelu_sigmoid":
        return quick_gelu(y)
    if activation == "relu":
        return np.maximum(y, 0)
    raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(LINEAR_ACTIVATIONS)}")


def layer_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, epsilon: float, axis: int = -1
) -> np.ndarray:
    """Layer normalization over the axes ``axis..``, all of it in ``x``'s compute precision."""
    ct = _compute_dtype(x)
    xc = x.astype(ct, copy=False)
    own = xc if xc is not x else None  # a float32 copy of a half tensor may be overwritten
    y = onnx_layer_norm(
        xc, gamma.astype(ct, copy=False), None if beta is None else beta.astype(ct, copy=False), axis, epsilon, out=own
    )[0]
    return y.astype(x.dtype, copy=False)


# ------------------------------------------------------------------ LayerNorm
def _layernorm_infer(ctx: InferContext) -> list[TensorType]:
    x, gamma = ctx.type(0), ctx.type(1)
    if x.shape is not None:
        axis = infer_axis(ctx, int(ctx.attrs["axis"]), len(x.shape))
        if gamma.shape is not None and len(gamma.shape) > len(x.shape) - axis:
            raise ctx.error(f"gamma {gamma} has more dims than the normalized axes of {x}")
    return [x] + [x] * (ctx.num_outputs - 1)


def _layernorm_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    x, gamma, beta = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    return [layer_norm(x, gamma, beta, float(attrs["epsilon"]), int(attrs["axis"]))]


define_op(
    "LayerNorm",
    domain=DOMAIN,
    inputs=(2, 3),
    attrs={"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-5)},
    infer=_layernorm_infer,
    kernel=_layernorm_kernel,
    doc="Layer normalization of x over axes axis.. with scale gamma and optional shift beta.",
)


# -------------------------------------------------------------------- RMSNorm
def rms_norm(x: np.ndarray, scale: np.ndarray, epsilon: float, axis: int = -1) -> np.ndarray:
    """``x / sqrt(mean(x^2 over axis..) + epsilon) * scale`` in ``x``'s compute precision (case 5)."""
    ct = _compute_dtype(x)
    xc = x.astype(ct, copy=False)
    axes = tuple(range(axis % x.ndim, x.ndim))
    ms = np.mean(np.square(xc), axis=axes, keepdims=True)
    y = xc / np.sqrt(ms + ct.type(epsilon))
    y *= scale.astype(ct, copy=False)
    return y.astype(x.dtype, copy=False)


def _rmsnorm_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    return [rms_norm(ins[0], ins[1], float(attrs["epsilon"]), int(attrs["axis"]))]


define_op(
    "RMSNorm",
    domain=DOMAIN,
    inputs=2,
    attrs={"axis": AttrSpec("int", -1), "epsilon": AttrSpec("float", 1e-5)},
    infer=_layernorm_infer,
    kernel=_rmsnorm_kernel,
    doc="Root-mean-square normalization of x over axes axis.. times scale (no mean subtraction, no shift).",
)


# -------------------------------------------------------------- SkipLayerNorm
def _skip_infer(ctx: InferContext) -> list[TensorType]:
    x, skip = ctx.type(0), ctx.type(1)
    if x.dtype != skip.dtype:
        raise ctx.error(f"x is {x} but skip is {skip}")
    if x.shape is not None and skip.shape is not None:
        if len(x.shape) != len(skip.shape):
            raise ctx.error(f"x {x} and skip {skip} differ in rank")
        shape = tuple(b if a is None else a for a, b in zip(x.shape, skip.shape))
        x = TensorType(x.dtype, shape)
    return [x] * ctx.num_outputs


def _skip_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    x, skip, gamma = ins[0], ins[1], ins[2]
    beta = ins[3] if len(ins) > 3 else None
    bias = ins[4] if len(ins) > 4 else None
    s = x + skip
    if bias is not None:
        s = s + bias
    s = s.astype(x.dtype, copy=False)
    y = layer_norm(s, gamma, beta, float(attrs["epsilon"]))
    return [y, s][:n_out]


define_op(
    "SkipLayerNorm",
    domain=DOMAIN,
    inputs=(3, 5),
    outputs=(1, 2),
    attrs={"epsilon": AttrSpec("float", 1e-5)},
    infer=_skip_infer,
    kernel=_skip_kernel,
    doc="LayerNorm(x + skip (+ bias)) over the last axis; output 1 (optional) is the sum.",
)


# --------------------------------------------------------------------- Linear
def check_linear_operands(ctx: InferContext, w_index: int, bias_index: int) -> None:
    """Checks shared by ``Linear`` and ``QLinear``: a known ``activation`` attr, a 2-D weight
    ``[K, N]`` at ``w_index`` and, when given, a 1-D bias ``[N]`` at ``bias_index``."""
    act = ctx.attrs["activation"]
    if act not in LINEAR_ACTIVATIONS:
        raise ctx.error(f"unknown activation {act!r}; expected one of {', '.join(LINEAR_ACTIVATIONS)}")
    w = ctx.type(w_index)
    if w.shape is not None and len(w.shape) != 2:
        raise ctx.error(f"weight must be 2-D [K, N], got {w}")
    if ctx.has(bias_index):
        b = ctx.type(bias_index)
        if b.shape is not None and len(b.shape) != 1:
            raise ctx.error(f"bias must be 1-D [N], got {b}")


def linear_result(ctx: InferContext, x: TensorType, w: TensorType, dtype: DType) -> list[TensorType]:
    """``x [..., K] @ w [K, N]`` -> ``[..., N]`` of ``dtype`` (unknown rank when either shape is)."""
    if x.shape is None or w.shape is None:
        return [TensorType(dtype, None)]
    if len(x.shape) < 1:
        raise ctx.error(f"input must have rank >= 1, got {x}")
    if not dims_compatible_k(x.shape[-1], w.shape[0]):
        raise ctx.error(f"inner dimensions differ: {x} @ {w}")
    return [TensorType(dtype, tuple(x.shape[:-1]) + (w.shape[1],))]


def _linear_infer(ctx: InferContext) -> list[TensorType]:
    check_linear_operands(ctx, 1, 2)
    x = ctx.type(0)
    return linear_result(ctx, x, ctx.type(1), x.dtype)


def _linear_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    y = matmul(x, w)
    if b is not None:
        y += b
    y = apply_activation(y.astype(x.dtype, copy=False), attrs["activation"])
    return [y.astype(x.dtype, copy=False)]


define_op(
    "Linear",
    domain=DOMAIN,
    inputs=(2, 3),
    attrs={"activation": AttrSpec("str", "none")},
    infer=_linear_infer,
    kernel=_linear_kernel,
    doc="act(x @ W + b) with W laid out [K, N]; activation none|gelu|gelu_tanh|gelu_sigmoid|relu.",
)


# ------------------------------------------------------------------ QuickGelu
define_op(
    "QuickGelu",
    domain=DOMAIN,
    attrs={"alpha": AttrSpec("float", 1.702)},
    infer=same_as_input(0),
    kernel=lambda ins, attrs, n: [quick_gelu(ins[0], float(attrs["alpha"])).astype(ins[0].dtype, copy=False)],
    doc="x * sigmoid(alpha * x): the sigmoid approximation of GELU.",
)


# ------------------------------------------------------------- EmbedLayerNorm
def _embed_infer(ctx: InferContext) -> list[TensorType]:
    ids, word = ctx.type(0), ctx.type(2)
    ctx.type(3)
    ctx.type(5)
    if not ids.dtype.is_int:
        raise ctx.error(f"input_ids must be integers, got {ids}")
    if word.shape is not None and len(word.shape) != 2:
        raise ctx.error(f"word embedding must be [vocab, hidden], got {word}")
    if ctx.has(1) != ctx.has(4):
        raise ctx.error("token_type_ids and the token type embedding must be given together")
    hidden = None if word.shape is None else word.shape[1]
    shape = None if ids.shape is None else tuple(ids.shape) + (hidden,)
    return [TensorType(word.dtype, shape)] * ctx.num_outputs


def _embed_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    ids, types, word, pos, type_emb, gamma, beta = ins[:7]
    pos_ids = ins[7] if len(ins) > 7 else None
    s = word[ids]
    if pos_ids is None:
        s = s + pos[np.arange(ids.shape[-1])]
    else:
        s = s + pos[np.asarray(pos_ids)]
    if types is not None:
        s = s + type_emb[types]
    s = s.astype(word.dtype, copy=False)
    return [layer_norm(s, gamma, beta, float(attrs["epsilon"])), s][:n_out]


define_op(
    "EmbedLayerNorm",
    domain=DOMAIN,
    inputs=(7, 8),
    outputs=(1, 2),
    attrs={"epsilon": AttrSpec("float", 1e-12)},
    infer=_embed_infer,
    kernel=_embed_kernel,
    doc="LayerNorm(word[ids] + pos[positions] + type[token_types]); inputs 1 and 4 may be omitted (_).",
)

# --------------------------------------------------------------- PackedLinear
def pack_weight(w: np.ndarray, *, transposed: bool = False, tile: tuple[int, ...] = ()) -> np.ndarray:
    """``W [k, n]`` in the PackedLinear layout (case 7)."""
    m = w.T if transposed else w
    if not tile:
        return np.ascontiguousarray(m)
    t0, t1 = (tile[1], tile[0]) if transposed else (tile[0], tile[1])
    r, c = m.shape
    rp, cp = -(-r // t0) * t0, -(-c // t1) * t1
    padded = np.zeros((rp, cp), dtype=m.dtype)
    padded[:r, :c] = m
    return np.ascontiguousarray(padded.reshape(rp // t0, t0, cp // t1, t1).transpose(0, 2, 1, 3))


def unpack_weight(wp: np.ndarray, *, k: int, n: int, transposed: bool = False, tile: tuple[int, ...] = ()) -> np.ndarray:
    """The ``W [k, n]`` that ``pack_weight`` packed."""
    if tile:
        b0, b1, t0, t1 = wp.shape
        m = wp.transpose(0, 2, 1, 3).reshape(b0 * t0, b1 * t1)
    else:
        m = wp
    m = m[:n, :k] if transposed else m[:k, :n]
    return m.T if transposed else m


def _packed_layout(attrs: Mapping[str, Any]) -> tuple[bool, tuple[int, ...], int, int]:
    tile = tuple(int(t) for t in (attrs.get("tile") or ()))
    return bool(attrs["transposed"]), tile, int(attrs["k"]), int(attrs["n"])


def _packed_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    act = ctx.attrs["activation"]
    if act not in LINEAR_ACTIVATIONS:
        raise ctx.error(f"unknown activation {act!r}; expected one of {', '.join(LINEAR_ACTIVATIONS)}")
    transposed, tile, k, n = _packed_layout(ctx.attrs)
    if tile and (len(tile) != 2 or min(tile) <= 0):
        raise ctx.error(f"tile must be two positive sizes [tk, tn], got {list(tile)}")
    if w.shape is not None and all(isinstance(d, int) for d in w.shape):
        if tile:
            t0, t1 = (tile[1], tile[0]) if transposed else tile
            r, c = (n, k) if transposed else (k, n)
            want: tuple[int, ...] = (-(-r // t0), -(-c // t1), t0, t1)
        else:
            want = (n, k) if transposed else (k, n)
        if tuple(w.shape) != want:
            raise ctx.error(f"packed weight is {w}, expected {list(want)} for k={k}, n={n}, layout {ctx.attrs}")
    if x.shape is None:
        return [TensorType(x.dtype, None)]
    if not dims_compatible_k(x.shape[-1], k):
        raise ctx.error(f"input {x} does not have k={k} features")
    return [TensorType(x.dtype, tuple(x.shape[:-1]) + (n,))]


def _packed_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    transposed, tile, k, n = _packed_layout(attrs)
    w = unpack_weight(ins[1], k=k, n=n, transposed=transposed, tile=tile)
    return _linear_kernel([ins[0], w] + list(ins[2:]), attrs, n_out)


define_op(
    "PackedLinear",
    domain=DOMAIN,
    inputs=(2, 3),
    attrs={
        "activation": AttrSpec("str", "none"),
        "transposed": AttrSpec("int", 0),
        "tile": AttrSpec("ints", ()),
        "k": AttrSpec("int"),
        "n": AttrSpec("int"),
    },
    infer=_packed_infer,
    kernel=_packed_kernel,
    doc="Linear with its weight pre-transposed and/or packed into zero-padded tiles.",
)


# ------------------------------------------------------------------- ConvNHWC
def _nhwc_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.type(0), ctx.type(1)
    if x.shape is None or w.shape is None:
        return [TensorType(x.dtype, None)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.error(f"input {x} and weight {w} must be [N, *spatial, C] and [*kernel, C/group, O]")
    out = infer_conv_dims(ctx, x.shape[1:-1], w.shape[:-2])
    return [TensorType(x.dtype, (x.shape[0], *out, w.shape[-1]))]


def _nhwc_kernel(ins: list[Any], attrs: Mapping[str, Any], n_out: int) -> Sequence[np.ndarray]:
    x, w = ins[0], ins[1]
    sp = x.ndim - 2
    xc = np.moveaxis(x, -1, 1)
    wc = np.transpose(w, (sp + 1, sp) + tuple(range(sp)))
    y = conv_nchw(xc, wc, ins[2] if len(ins) > 2 else None, attrs)
    return [np.ascontiguousarray(np.moveaxis(y, 1, -1))]


define_op(
    "ConvNHWC",
    domain=DOMAIN,
    inputs=(2, 3),
    attrs=dict(CONV_ATTRS),
    infer=_nhwc_infer,
    kernel=_nhwc_kernel,
    doc="Channels-last convolution: x [N, *spatial, C], w [*kernel, C/group, O]; Conv's attributes.",
)

__all__ = [
    "DOMAIN",
    "LINEAR_ACTIVATIONS",
    "apply_activation",
    "layer_norm",
    "pack_weight",
    "unpack_weight",
    "quick_gelu",
    "rms_norm",
]
