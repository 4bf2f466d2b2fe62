"""Requantization: the integer work between GEMM and STORE, its parameters from float scales, and its reference.

A VTA program computes, for int8 inputs ``x_q [M, K]`` and weights
``W_q [K, N]`` (``DenseLayer``)::

    acc = x_q @ W_q                                  int32 (GEMM)
    acc = acc SHR e[m]              (rows with their own scale only: ALU SHR by a per-row ACC vector)
    acc = acc + bias[n]                              ALU ADD from an ACC vector (bias + rounding term)
    acc = acc SHR shift[n]                           ALU SHR from an ACC vector, shift in -15..15
    q   = MAX(MIN(acc, 127), -128)                   ALU MIN / MAX with immediates; STORE keeps 8 bits

``SHR`` by ``y >= 0`` is an arithmetic right shift, by ``y < 0`` a left shift;
the rounding term ``2**(shift-1)`` (for ``shift > 0``) is folded into the
bias vector, so ``(acc + bias) SHR shift`` rounds half up. ``reference``
computes exactly this in numpy integers (it is the bit-exactness oracle of
the simulator and of the compiled programs).

Where the parameters come from (``from_scales``): the host quantizes a row
with scale ``x_scale[m] = S * 2**-e[m]`` (``S`` the layer's base scale: a
constant per-tensor scale has ``e = 0``), the weights have per-channel
scales ``w_scale[n]``, and the layer's int8 output has per-channel scales
``y_scale[n]``. With the base unit ``u[n] = S * w_scale[n]``:

1. ``shift[n] = log2(y_scale[n] / u[n])`` must be an integer in -15..15
   (the int8 pass's ``scales=power2`` option makes it one);
2. ``bias[n] = round(b[n] / u[n])`` (that pass rounds the bias onto this grid,
   so nothing is lost) ``- z * colsum(W_q)[n]`` for a constant input zero
   point ``z`` (rows with their own scale must have ``z = 0``), plus the
   rounding term;
3. at run time ``e[m] = log2(S / x_scale[m])`` must be an integer in
   -15..15 (``row_shifts``); ``SHR`` by ``e[m]`` brings every row's
   accumulator to the base unit before the bias is added;
4. a zero point per row (asymmetric rows, ``z[m]`` in the row's unit) is
   subtracted by the GEMM itself: ``zero_point_rows`` appends J int8 weight
   rows summing to ``-colsum(W_q)``, and the host fills J extra input
   columns of each row with ``z[m]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelopt.errors import TargetError

SHIFT_MIN, SHIFT_MAX = -15, 15
_INT32 = (-(2**31), 2**31 - 1)
#: how far a scale ratio may be from a power of two (float32 rounding of the scales)
_POW2_RTOL = 1e-4


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """The integer layer one VTA program computes (see the module docstring)."""

    name: str
    weight: np.ndarray  # int8 [K, N]
    bias: np.ndarray  # int32 [N], rounding term included
    shift: np.ndarray  # int32 [N], -15..15
    row_shift: bool = False

    def __post_init__(self) -> None:
        if self.weight.dtype != np.int8 or self.weight.ndim != 2:
            raise TargetError(
                f"layer {self.name}: weights must be int8 [K, N], got {self.weight.dtype}{list(self.weight.shape)}"
            )
        n = self.weight.shape[1]
        if self.bias.shape != (n,) or self.shift.shape != (n,):
            raise TargetError(f"layer {self.name}: bias and shift must be [N={n}]")
        if self.shift.size and (self.shift.min() < SHIFT_MIN or self.shift.max() > SHIFT_MAX):
            raise TargetError(f"layer {self.name}: shifts must be in {SHIFT_MIN}..{SHIFT_MAX}")

    @property
    def k(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n(self) -> int:
        return int(self.weight.shape[1])


def wrap32(a: np.ndarray) -> np.ndarray:
    """int64 values wrapped to int32 (two's complement), kept as int64."""
    return (np.asarray(a, np.int64) + 2**31) % 2**32 - 2**31


def shr(a: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    """VTA's SHR on int32 lanes: arithmetic right by ``s >= 0``, left by ``-s`` (wrapping)."""
    a = np.asarray(a, np.int64)
    s = np.asarray(s, np.int64)
    return wrap32(np.where(s >= 0, a >> np.maximum(s, 0), a << np.maximum(-s, 0)))


def reference(layer: DenseLayer, x_q: np.ndarray, row_shift: np.ndarray | None = None) -> np.ndarray:
    """The layer's int8 output [M, N] in numpy integers (int64, wrapped to int32 at every VTA step)."""
    x = np.asarray(x_q)
    if x.dtype != np.int8 or x.ndim != 2 or x.shape[1] != layer.k:
        raise TargetError(f"layer {layer.name}: expected int8 [M, {layer.k}] inputs, got {x.dtype}{list(x.shape)}")
    acc = wrap32(np.matmul(x.astype(np.float64), layer.weight.astype(np.float64)).astype(np.int64))
    if layer.row_shift:
        if row_shift is None:
            raise TargetError(f"layer {layer.name}: rows have their own scale: row shifts are needed")
        acc = shr(acc, np.asarray(row_shift, np.int64)[:, None])
    acc = wrap32(acc + layer.bias.astype(np.int64))
    acc = shr(acc, layer.shift.astype(np.int64))
    return np.clip(acc, -128, 127).astype(np.int8)


def power_of_two(ratio: np.ndarray, what: str) -> np.ndarray:
    """``log2(ratio)`` as integers; ``TargetError`` naming ``what`` if a ratio is not a power of two."""
    r = np.asarray(ratio, np.float64)
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise TargetError(f"{what}: scale ratios must be positive and finite")
    e = np.rint(np.log2(r))
    bad = np.abs(r / np.exp2(e) - 1) > _POW2_RTOL
    if bad.any():
        i = int(np.argmax(bad))
        raise TargetError(f"{what}: scale ratio {r.reshape(-1)[i]:.6g} is not a power of two")
    return e.astype(np.int64)


def from_scales(
    name: str,
    w_q: np.ndarray,
    w_scale: np.ndarray,
    base_scale: float,
    y_scale: np.ndarray,
    bias: np.ndarray | None = None,
    zero_point: int = 0,
    row_shift: bool = False,
) -> DenseLayer:
    """A ``DenseLayer`` from float scales (cases 1-2 of the module docstring)."""
    n = w_q.shape[1]
    ws = np.broadcast_to(np.asarray(w_scale, np.float64).reshape(-1), (n,))
    ys = np.broadcast_to(np.asarray(y_scale, np.float64).reshape(-1), (n,))
    unit = float(base_scale) * ws
    shift = power_of_two(ys / unit, f"layer {name}: output scale / (input scale x weight scale)")
    if shift.min() < SHIFT_MIN or shift.max() > SHIFT_MAX:
        worst = int(shift.min() if shift.min() < SHIFT_MIN else shift.max())
        raise TargetError(f"layer {name}: output shift {worst} is outside the portable {SHIFT_MIN}..{SHIFT_MAX}")
    b = np.zeros(n, np.int64) if bias is None else np.rint(np.asarray(bias, np.float64) / unit).astype(np.int64)
    if zero_point:
        if row_shift:
            raise TargetError(f"layer {name}: rows with their own scale need a zero point of 0, got {zero_point}")
        b = b - int(zero_point) * w_q.astype(np.int64).sum(axis=0)
    b = b + np.where(shift > 0, 1 << np.maximum(shift - 1, 0), 0)
    if b.min(initial=0) < _INT32[0] or b.max(initial=0) > _INT32[1]:
        raise TargetError(f"layer {name}: the bias does not fit int32 in the accumulator's unit")
    return DenseLayer(name, np.ascontiguousarray(w_q, np.int8), b.astype(np.int32), shift.astype(np.int32), row_shift)


def zero_point_rows(w_q: np.ndarray) -> np.ndarray:
    """int8 rows ``[J, N]`` whose column sums are ``-colsum(W_q)``, J as small as int8 allows (at least 1).

    Appended to the weights, with every input row's zero point ``z[m]`` in the J matching input columns,
    the GEMM itself subtracts ``z[m] * colsum(W_q)[n]``: a per-row zero point costs J extra K columns.
    """
    rest = -w_q.astype(np.int64).sum(axis=0)
    j = max(1, -(-int(np.abs(rest).max(initial=0)) // 127))
    rows = np.zeros((j, w_q.shape[1]), np.int8)
    for i in range(j):
        part = np.clip(rest, -127, 127)
        rows[i] = part
        rest = rest - part
    return rows


def row_shifts(x_scale: np.ndarray, base_scale: float, name: str) -> np.ndarray:
    """Per-row shifts ``log2(S / x_scale[m])`` (case 3); ``TargetError`` if not integers in -15..15."""
    e = power_of_two(float(base_scale) / np.asarray(x_scale, np.float64).reshape(-1), f"layer {name}: row scale")
    if e.size and (e.min() < SHIFT_MIN or e.max() > SHIFT_MAX):
        raise TargetError(f"layer {name}: a row's scale is 2^{-int(e.max())} of the base, past the portable shifts")
    return e.astype(np.int32)


__all__ = [
    "SHIFT_MAX",
    "SHIFT_MIN",
    "DenseLayer",
    "from_scales",
    "power_of_two",
    "reference",
    "row_shifts",
    "shr",
    "zero_point_rows",
]
