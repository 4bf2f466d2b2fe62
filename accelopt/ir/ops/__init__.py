"""Op libraries; importing this package registers every op."""

from accelopt.ir.ops import attention, fused, onnx_std, quantized, sdpa  # noqa: F401
