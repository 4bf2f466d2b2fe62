"""ATen converters for scaled dot-product attention (kept as one ``ScaledDotProductAttention`` op)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import ValueTuple, converter
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------- attention
@converter("aten.scaled_dot_product_attention.default")
def _sdpa(
    imp: Importer,
    node: Any,
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Value:
    if dropout_p:
        raise FrontendError(
            f"{imp.source}: node {node.name} (scaled_dot_product_attention) has dropout_p={dropout_p}; "
            "export the model in eval mode"
        )
    qv, kv, vv = imp.tensor(q), imp.tensor(k), imp.tensor(v)
    if enable_gqa and imp.meta(q).shape[-3] != imp.meta(k).shape[-3]:
        raise FrontendError(f"{imp.source}: node {node.name}: grouped-query attention (enable_gqa) is not supported")
    inputs = [qv, kv, vv]
    if attn_mask is not None:
        m = imp.tensor(attn_mask)
        if m.dtype != DType.BOOL and m.dtype != qv.dtype:
            m = imp.emit("Cast", [m], {"to": qv.dtype}, part="mask")
        inputs.append(m)
    attrs = {"scale": float(scale) if scale else 0.0, "is_causal": int(bool(is_causal))}
    return imp.emit("ScaledDotProductAttention", inputs, attrs)


@converter("aten._scaled_dot_product_flash_attention_for_cpu.default")
def _sdpa_cpu(
    imp: Importer,
    node: Any,
    q: Any,
    k: Any,
    v: Any,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    attn_mask: Any = None,
    scale: float | None = None,
) -> Any:
    out = _sdpa(imp, node, q, k, v, attn_mask, dropout_p, is_causal, scale=scale)
    out = imp.finish(out, imp.fx.meta["val"][0])
    return ValueTuple((out, None))
