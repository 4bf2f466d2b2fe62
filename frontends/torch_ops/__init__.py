"""ATen -> IR converters of the torch.export frontend, one module per op family.

Importing this package fills ``base.CONVERTERS``; the driver is
``accelopt.frontends.torch_importer`` and the public API
``accelopt.frontends.torch_export``.
"""

from accelopt.frontends.torch_ops import attention, cnn, creation, elementwise, nn, reduce, shape
from accelopt.frontends.torch_ops.base import CONVERTERS, IGNORED

__all__ = ["CONVERTERS", "IGNORED", "attention", "cnn", "creation", "elementwise", "nn", "reduce", "shape"]
