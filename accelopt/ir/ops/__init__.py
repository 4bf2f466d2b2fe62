"""Op libraries; importing this package registers every op."""

from accelopt.ir.ops import fused, onnx_std  # noqa: F401
from accelopt.ir.ops import sdpa  # noqa: F401
from accelopt.ir.ops import quantized  # noqa: F401
