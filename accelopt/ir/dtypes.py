"""Element types of the IR and their numpy / ONNX equivalents."""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np
from numpy.typing import DTypeLike


class DType(enum.Enum):
    """An element type. The value is the name used in the text form."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT64 = "int64"
    INT32 = "int32"
    INT16 = "int16"
    INT8 = "int8"
    UINT8 = "uint8"
    BOOL = "bool"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    @property
    def np(self) -> np.dtype:
        """The numpy dtype (bfloat16 through ml_dtypes)."""
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT64, DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)

    @property
    def is_int(self) -> bool:
        return self in (DType.INT64, DType.INT32, DType.INT16, DType.INT8, DType.UINT8)

    @property
    def onnx(self) -> int:
        """The ``onnx.TensorProto`` data type enum value."""
        return _TO_ONNX[self]

    @staticmethod
    def from_numpy(dtype: DTypeLike) -> DType:
        dt = np.dtype(dtype)
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"numpy dtype {dt} has no accelopt equivalent") from None

    @staticmethod
    def from_onnx(code: int) -> DType:
        try:
            return _FROM_ONNX[code]
        except KeyError:
            raise TypeError(f"ONNX element type {code} has no accelopt equivalent") from None

    @staticmethod
    def parse(name: str) -> DType:
        try:
            return DType(name)
        except ValueError:
            raise TypeError(f"unknown dtype {name!r}") from None


_TO_NUMPY: dict[DType, np.dtype] = {
    DType.FLOAT64: np.dtype(np.float64),
    DType.FLOAT32: np.dtype(np.float32),
    DType.FLOAT16: np.dtype(np.float16),
    DType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DType.INT64: np.dtype(np.int64),
    DType.INT32: np.dtype(np.int32),
    DType.INT16: np.dtype(np.int16),
    DType.INT8: np.dtype(np.int8),
    DType.UINT8: np.dtype(np.uint8),
    DType.BOOL: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}

# onnx.TensorProto codes (kept literal so this module does not import onnx).
_TO_ONNX: dict[DType, int] = {
    DType.FLOAT32: 1,
    DType.UINT8: 2,
    DType.INT8: 3,
    DType.INT16: 5,
    DType.INT32: 6,
    DType.INT64: 7,
    DType.BOOL: 9,
    DType.FLOAT16: 10,
    DType.FLOAT64: 11,
    DType.BFLOAT16: 16,
}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}
