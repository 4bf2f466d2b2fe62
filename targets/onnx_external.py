"""Large weights kept outside the ``ModelProto``: the graph's own arrays, shared, never copied into protobuf.

A model with a gigabyte of weights written the plain way holds them several
times over: the arrays, the ``TensorProto`` raw data, the bytes the checker
and onnxruntime parse. ``DetachedWeights`` instead gives the writer a
placeholder for every initializer of at least ``threshold`` bytes, an ONNX
external-data reference (location, 4 KiB-aligned offset, length) into
``location`` beside the model file, and keeps the array itself:

1. ``placeholder(array, name)``: the ``TensorProto`` the model holds (or
   ``None`` for a small tensor, or a dtype onnxruntime cannot take from
   numpy, which the writer embeds as before);
2. ``checkable(model)``: a copy of the (small) model for ``onnx.checker``, in
   which the detached initializers are typed graph inputs (the checker would
   look for the data file);
3. ``write(path)``: streams the arrays into the data file at their offsets;
4. ``session(model, options, providers)``: an onnxruntime session that reads
   the arrays in place, so a model runs before it is saved without a second
   copy of its weights. onnxruntime (1.20 to 1.32 measured) copies the
   initializers handed over with ``add_external_initializers`` at session
   creation (BERT-large: +1.25 GiB for 1.25 GiB of weights); the shared
   initializers of ``add_initializer`` are used in place when they live on the
   CPU and weight prepacking (MLAS's packed copy of each MatMul weight) is off.
   That path wants the model's data file to exist: it gets a sparse file of the
   right size in a temporary folder, never read (the shared arrays replace
   every tensor in it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

#: alignment of each tensor in the data file (lets onnxruntime map it)
ALIGN = 4096
#: dtypes onnxruntime takes from numpy without conversion
_ORT_DTYPES = frozenset(
    np.dtype(t) for t in ("float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
)


@dataclass
class DetachedWeights:
    """Initializers of at least ``threshold`` bytes, stored in ``location`` (see the module docstring)."""

    threshold: int
    location: str
    entries: list[tuple[str, np.ndarray, int]] = field(default_factory=list)  # name, array, offset
    size: int = 0
    _held: list[Any] = field(default_factory=list, repr=False)

    def placeholder(self, array: np.ndarray, name: str) -> TensorProto | None:
        """Case 1: an external-data ``TensorProto`` for ``array``, or ``None`` to embed it."""
        arr = np.asarray(array)
        if arr.nbytes < self.threshold or arr.dtype not in _ORT_DTYPES or arr.ndim == 0:
            return None
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        offset = -(-self.size // ALIGN) * ALIGN
        t = TensorProto()
        t.name = name
        t.dims.extend(arr.shape)
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(arr.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.entries.append((name, arr, offset))
        self.size = offset + arr.nbytes
        return t

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for _, a, _ in self.entries)

    def checkable(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """Case 2: ``model`` with the detached initializers as typed graph inputs."""
        names = {n for n, _, _ in self.entries}
        m = onnx.ModelProto()
        m.CopyFrom(model)
        detached = [t for t in m.graph.initializer if t.name in names]
        kept = [t for t in m.graph.initializer if t.name not in names]
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)
        m.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in detached)
        return m

    def write(self, path: str | os.PathLike[str]) -> None:
        """Case 3: the data file, each array at its offset."""
        with open(path, "wb") as f:
            for _, arr, offset in self.entries:
                f.write(b"\0" * (offset - f.tell()))
                f.write(arr.reshape(-1).view(np.uint8).data)

    def session(self, model: onnx.ModelProto, options: Any, providers: Sequence[str]) -> Any:
        """Case 4: an ``onnxruntime.InferenceSession`` of ``model`` (this object's placeholders) over the
        arrays themselves; ``options`` (a ``SessionOptions``) gets the shared initializers and
        ``session.disable_prepacking``."""
        import onnxruntime as ort

        values = [ort.OrtValue.ortvalue_from_numpy(a) for _, a, _ in self.entries]
        for (name, _, _), value in zip(self.entries, values):
            options.add_initializer(name, value)
        options.add_session_config_entry("session.disable_prepacking", "1")
        with tempfile.TemporaryDirectory(prefix="accelopt-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model.SerializeToString())
            with open(Path(tmp) / self.location, "wb") as f:
                f.truncate(self.size)  # sparse: no disk blocks, no memory
            sess = ort.InferenceSession(str(path), options, providers=list(providers))
        self._held = values  # the session reads these buffers: they live as long as the weights
        return sess
