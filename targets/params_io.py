"""``params.bin``: named arrays in one file, 64-byte aligned, indexed from the artifact's metadata.

``write_params(path, arrays)`` returns the index (key, dtype, shape, offset,
nbytes per tensor) that ``read_params(path, index)`` takes back; arrays come
back as read-only views of a memory map (no copy until used).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from accelopt.errors import TargetError

ALIGN = 64
_BF16 = np.dtype(ml_dtypes.bfloat16)


def dtype_name(dt: np.dtype) -> str:
    return "bfloat16" if dt == _BF16 else str(dt)


def _dtype(name: str) -> np.dtype:
    return _BF16 if name == "bfloat16" else np.dtype(name)


def write_params(path: Path, arrays: Mapping[str, np.ndarray], *, sort: bool = True) -> list[dict[str, Any]]:
    """Write ``arrays`` into ``path`` (sorted by key, or in the mapping's order); returns the index."""
    index = []
    offset = 0
    with open(path, "wb") as f:
        for key in sorted(arrays) if sort else list(arrays):
            arr = np.ascontiguousarray(arrays[key])
            pad = (-offset) % ALIGN
            f.write(b"\0" * pad)
            offset += pad
            f.write(arr.tobytes())
            index.append(
                {"key": key, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "offset": offset, "nbytes": int(arr.nbytes)}
            )
            offset += arr.nbytes
    return index


def read_params(path: Path, index: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The arrays ``write_params`` wrote, by key (``TargetError`` for a missing or truncated file)."""
    if not index:
        return {}
    if not path.is_file():
        raise TargetError(f"{path}: missing parameter file")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for t in index:
        end = t["offset"] + t["nbytes"]
        if end > data.size:
            raise TargetError(f"{path}: truncated (tensor {t['key']} ends at byte {end}, file has {data.size})")
        raw = np.asarray(data[t["offset"] : end])
        out[t["key"]] = raw.view(_dtype(t["dtype"])).reshape(t["shape"])
    return out
