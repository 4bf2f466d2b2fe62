"""Imports every built-in pass module so they register themselves, and defines the group aliases.

Groups:

- ``cleanup`` = ``constant-fold, remove-noops, cse, dce``, repeated until none of
  them changes the graph (at most 10 rounds).
- ``fuse`` = ``fuse-layernorm, fuse-rmsnorm, fuse-gelu, fuse-attention,
  fuse-embedlayernorm, fuse-linear, fuse-skiplayernorm``, once each in that order.

Test-only passes (``damage``, ``break-graph``) are not here: ``tests/planted_passes.py``
registers them from the tests, so ``optimize --list-passes`` never shows them.
"""

from accelopt.passes import (  # noqa: F401
    cleanup_constant_fold,
    cleanup_cse,
    cleanup_dce,
    cleanup_noops,
    fuse_attention,
    fuse_embedlayernorm,
    fuse_gelu,
    fuse_layernorm,
    fuse_linear,
    fuse_rmsnorm,
    fuse_skiplayernorm,
    gelu_approx,
    layout_cancel_transposes,
    layout_nhwc,
    layout_pack_weights,
    layout_pad,
    layout_transpose_weights,
)
from accelopt.passes.base import register_group

register_group("cleanup", ["constant-fold", "remove-noops", "cse", "dce"], fixed_point=True)
#: order matters: GELU and LayerNorm first (Linear epilogues and SkipLayerNorm need them), attention before
#: fuse-linear (it packs the raw Q/K/V projections), embeddings before fuse-skiplayernorm
register_group(
    "fuse",
    [
        "fuse-layernorm",
        "fuse-rmsnorm",
        "fuse-gelu",
        "fuse-attention",
        "fuse-embedlayernorm",
        "fuse-linear",
        "fuse-skiplayernorm",
    ],
)

# quantization: int8 = QDQ (quantize-int8) then integer ops where the target runs them (lower-quantized)
from accelopt.passes import precision_bf16, precision_fp16, quant_int8, quant_lower  # noqa: E402,F401

register_group("int8", ["quantize-int8", "lower-quantized"])
register_group("fp16", ["convert-fp16"])
register_group("bf16", ["convert-bf16"])
# layout: weights in the target's preferred orientation, dims padded to its tile multiple, weights packed into
# its GEMM tiles, then transposes the rewrites made redundant cancelled (tile sizes come from the target)
register_group(
    "layout",
    ["layout-transpose-weights", "layout-pad", "layout-pack-weights", "layout-cancel-transposes"],
)
