"""The standard ONNX op library (latest opset semantics) with numpy reference kernels.

Importing this module registers every standard op. The definitions live in:

1. ``onnx_elementwise``: unary math and activations, broadcasting arithmetic,
   comparisons and logic, variadic Max/Min/Sum/Mean, Where, Clip, Cast.
2. ``onnx_shape``: constants, Shape/Size, Reshape and friends, Concat/Split,
   Slice/Gather/GatherND/Scatter*, Trilu, Dropout (inference).
3. ``onnx_math``: MatMul, Gemm, Einsum, Softmax family, LayerNormalization,
   reductions, ArgMax/ArgMin, CumSum, TopK.
4. ``onnx_quant``: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
   MatMulInteger.
5. ``onnx_conv``: Conv; ``onnx_conv_transpose``: ConvTranspose; ``onnx_pool``: MaxPool, AveragePool, GlobalAveragePool,
   GlobalMaxPool; ``onnx_norm``: BatchNormalization; ``onnx_resize``: Resize.

Conventions shared by all of them: attributes that are inputs in the latest
opset (``axes``, ``split``, Clip bounds, ...) are inputs here too; Cast's
``to`` is a ``DType``; other dtype-valued attributes (EyeLike ``dtype``,
``stash_type``, ``output_dtype``) keep their ONNX TensorProto codes. float32
stays float32; float16/bfloat16 math that numpy cannot do well runs in
float32 and is rounded back.
"""

from __future__ import annotations

from accelopt.ir.ops import (
    onnx_conv,
    onnx_conv_transpose,
    onnx_elementwise,
    onnx_math,
    onnx_norm,
    onnx_pool,
    onnx_quant,
    onnx_resize,
    onnx_shape,
)

MODULES = (
    onnx_elementwise,
    onnx_shape,
    onnx_math,
    onnx_quant,
    onnx_conv,
    onnx_conv_transpose,
    onnx_pool,
    onnx_norm,
    onnx_resize,
)


def standard_op_names() -> list[str]:
    """Names of the standard-domain ops registered by this library."""
    from accelopt.ir.registry import all_ops

    return sorted(name for name, op in all_ops().items() if op.domain == "")
