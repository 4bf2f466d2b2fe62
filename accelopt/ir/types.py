"""Tensor types: an element type and a shape of ints, symbols or unknowns."""

from __future__ import annotations

from dataclasses import dataclass

from accelopt.ir.dtypes import DType

#: A dimension: a static size, a named symbol (``"batch"``), or ``None`` (unknown).
Dim = int | str | None


@dataclass(frozen=True)
class TensorType:
    """``dtype`` and ``shape``; ``shape is None`` means the rank is unknown."""

    dtype: DType
    shape: tuple[Dim, ...] | None

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))
            for d in self.shape:
                if not (d is None or isinstance(d, str) or (isinstance(d, int) and d >= 0)):
                    raise TypeError(f"invalid dimension {d!r} in shape {self.shape}")

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        if self.shape is None:
            return None
        n = 1
        for d in self.shape:
            if not isinstance(d, int):
                return None
            n *= d
        return n

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def with_shape(self, shape: tuple[Dim, ...] | None) -> TensorType:
        return TensorType(self.dtype, shape)

    def __str__(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"


def format_shape(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "[*]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def dims_compatible(a: Dim, b: Dim) -> bool:
    """True unless both dims are known and differ (ints) or differ (symbols vs int is fine)."""
    if a is None or b is None:
        return True
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return True


def shapes_compatible(a: tuple[Dim, ...] | None, b: tuple[Dim, ...] | None) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(dims_compatible(x, y) for x, y in zip(a, b))
