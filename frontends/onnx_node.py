"""The decoded form of an ONNX node, shared by the importer and the old-opset rewrites."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass
class ONode:
    """A node being imported: an ONNX NodeProto with decoded attributes."""

    name: str
    op: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unsupported:
    """An attribute value the IR cannot hold (subgraphs, type protos, strings tensors...)."""

    what: str


def onnx_domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def qualified(domain: str, op: str) -> str:
    return f"{domain}.{op}" if domain else op


def sparse_to_array(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense
