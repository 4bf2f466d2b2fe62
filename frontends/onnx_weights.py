"""Reading an ONNX file's weights without holding them twice (case 1 of ``accelopt.frontends.onnx``).

* ``Payload``: a tensor's bytes in a file, read straight into the array the graph keeps
  (1a external data, 1b inline ``raw_data``, 1d owned memory);
* ``external_payloads``: large external initializers as payloads, small external tensors
  loaded into the protobuf as ``onnx.load`` would;
* ``strip_inline_weights``: the file's protobuf without its large inline ``raw_data``
  (a wire-format scan of the memory-mapped file; ``ScanError`` means "use ``onnx.load``", 1c);
* ``skeleton``: the model with large initializers turned into typed graph inputs, for the
  checker and ONNX shape inference (cases 4 and 7).
"""

from __future__ import annotations

import io
import math
import mmap
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from accelopt.errors import FrontendError
from accelopt.ir.dtypes import DType

PROTO_LIMIT = 2**31 - 1
#: initializers with more elements are replaced by typed inputs for shape inference
SKELETON_MAX_ELEMENTS = 4096
#: attributes dropped without being declared by the registry: (op, attr) -> why

def external_tensors(model: onnx.ModelProto) -> list[tuple[TensorProto, bool]]:
    """Tensors with external data, each with whether it is an initializer."""
    out = [(t, True) for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL:
                out.append((a.t, False))
    return out


# ==================================================================== weights
def _num_elements(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def is_large(dims: Sequence[int]) -> bool:
    """Whether an initializer is read outside the protobuf (1a, 1b) and a skeleton input (4, 7)."""
    return _num_elements(dims) > SKELETON_MAX_ELEMENTS


def _np_dtype(code: int) -> np.dtype | None:
    """The numpy dtype of a plain little-endian element type the IR holds, else None."""
    try:
        dtype = DType.from_onnx(code).np
    except TypeError:
        return None
    return dtype if sys.byteorder == "little" or dtype.itemsize == 1 else None


@dataclass(frozen=True)
class Payload:
    """A tensor's bytes in a file, read straight into the array the graph keeps (1a, 1b, 1d)."""

    name: str
    file: Path  #: the file holding the bytes
    offset: int
    nbytes: int
    dtype: np.dtype
    shape: tuple[int, ...]
    #: external data: the model's directory and the location as written (opened with onnx's checks)
    external: tuple[Path, str] | None = None

    def read(self, source: str) -> np.ndarray:
        """The tensor as a new array owning its memory (no intermediate copy)."""
        arr = np.empty(self.shape, dtype=self.dtype)
        self._fill(arr.reshape(-1).view(np.uint8).data, source)
        return arr

    def read_bytes(self, source: str) -> bytes:
        """The bytes alone (small tensors that go into the protobuf)."""
        buf = bytearray(self.nbytes)
        self._fill(memoryview(buf), source)
        return bytes(buf)

    def _fill(self, buf: memoryview, source: str) -> None:
        got = 0
        try:
            with self._open() as f:
                f.seek(self.offset)
                while got < self.nbytes:
                    n = f.readinto(buf[got:])
                    if not n:
                        break
                    got += n
        except Exception as e:  # OSError, or the checker's ValidationError on an unsafe location
            raise FrontendError(f"{source}: tensor {self.name!r}: cannot read {self.file}: {e}") from e
        if got != self.nbytes:
            raise FrontendError(
                f"{source}: tensor {self.name!r}: {self.file} ends after {got} of its {self.nbytes} "
                f"bytes at offset {self.offset}"
            )

    def _open(self) -> io.BufferedReader:
        if self.external is None:
            return open(self.file, "rb")
        return _open_external(*self.external, self.name)


def _open_external(base: Path, location: str, tensor: str) -> io.BufferedReader:
    """Open an external data file with ``onnx``'s own checks (relative, inside ``base``, no symlink)."""
    opener = getattr(onnx.external_data_helper, "_open_external_data_fd", None)
    if opener is not None:
        return os.fdopen(opener(str(base), location, tensor, True), "rb")
    rel = Path(location)  # older onnx: the same rules, checked here
    if rel.is_absolute() or ".." in rel.parts or (base / rel).is_symlink():
        raise ValueError(f"external data {location!r} of tensor {tensor!r} is outside {base} or a symbolic link")
    return open(base / rel, "rb")


def _external_span(t: TensorProto, file: Path) -> tuple[str, int, int]:
    """Location, offset and byte count of a tensor's external data, checked against the data file (1a)."""
    entries = {e.key: e.value for e in t.external_data}
    loc = entries.get("location", "")
    try:
        offset = int(entries.get("offset") or 0)
        length = None if entries.get("length") in (None, "") else int(entries["length"])
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"offset {offset} and length {length} of tensor {t.name!r} must not be negative")
        with _open_external(file.parent, loc, t.name) as f:
            size = os.fstat(f.fileno()).st_size
    except Exception as e:  # bad numbers, or the checker's ValidationError on an unsafe location
        raise FrontendError(f"{file}: cannot load external data: {type(e).__name__}: {e}") from e
    if offset > size or (length is not None and offset + length > size):
        want = "the rest" if length is None else f"{length} bytes"
        raise FrontendError(
            f"{file}: external data file {loc} is too short for tensor {t.name!r}: "
            f"it has {size} bytes, the tensor wants {want} from offset {offset}"
        )
    return loc, offset, size - offset if length is None else length


def external_payloads(model: onnx.ModelProto, file: Path) -> dict[str, Payload]:
    """Case 1a: large external initializers become payloads; other external tensors are loaded."""
    counts = Counter(t.name for t in model.graph.initializer)
    payloads: dict[str, Payload] = {}
    for t, is_init in external_tensors(model):
        loc, offset, nbytes = _external_span(t, file)
        dtype = _np_dtype(t.data_type)
        dims = [int(d) for d in t.dims]
        if is_init and counts[t.name] == 1 and dtype is not None and min(dims, default=0) >= 0 and is_large(dims):
            expected = _num_elements(dims) * dtype.itemsize
            if nbytes != expected:
                raise FrontendError(
                    f"{file}: initializer {t.name!r} ({TensorProto.DataType.Name(t.data_type)}{dims}) "
                    f"is corrupt: its external data in {loc} holds {nbytes} bytes, not {expected}"
                )
            payloads[t.name] = Payload(t.name, file.parent / loc, offset, nbytes, dtype, (*dims,), (file.parent, loc))
            continue
        # small (or unusual) tensors go into the protobuf, as onnx.load puts them there
        raw = Payload(t.name, file.parent / loc, offset, nbytes, np.dtype(np.uint8), (nbytes,), (file.parent, loc))
        t.raw_data = raw.read_bytes(str(file))
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
    return payloads


# ------------------------------------------------------------- wire format (1b)
#: field numbers in onnx.proto
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_T_DIMS, _T_DATA_TYPE, _T_SEGMENT, _T_NAME, _T_RAW_DATA, _T_DATA_LOCATION = 1, 2, 3, 8, 9, 14
_T_TYPED_DATA = (4, 5, 6, 7, 10, 11)  # float_data, int32_data, string_data, int64_data, double_data, uint64_data
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class ScanError(Exception):
    """The file is not laid out the way the scanner expects: read it with ``onnx.load`` (1c)."""


@dataclass(frozen=True)
class _Field:
    """One protobuf field: its key is ``start``..``key_end``, its value (payload) ``begin``..``end``."""

    number: int
    wire: int
    start: int
    key_end: int
    begin: int
    end: int
    value: int  #: the varint (wire type 0) or the payload length (wire type 2)


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise ScanError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ScanError(f"overlong varint at byte {pos}")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: Any, pos: int, end: int) -> Iterator[_Field]:
    """The fields of the message in ``buf[pos:end]``, without decoding nested messages."""
    while pos < end:
        key, key_end = _varint(buf, pos, end)
        begin = key_end
        number, wire = key >> 3, key & 7
        value = 0
        if number == 0:
            raise ScanError(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, stop = _varint(buf, begin, end)
        elif wire == _FIXED64:
            stop = begin + 8
        elif wire == _FIXED32:
            stop = begin + 4
        elif wire == _LEN:
            value, begin = _varint(buf, begin, end)
            stop = begin + value
        else:
            raise ScanError(f"wire type {wire} (groups) at byte {pos}")
        if stop > end:
            raise ScanError(f"field {number} at byte {pos} runs past the end of its message")
        yield _Field(number, wire, pos, key_end, begin, stop, value)
        pos = stop


def _scan_tensor(buf: Any, outer: _Field, file: Path) -> tuple[str, _Field | None, Payload | None]:
    """An initializer's name; its ``raw_data`` field and payload when that is a plain large array."""
    dims: list[int] = []
    data_type = location = 0
    name = b""
    raw: list[_Field] = []
    unusual = False  # segment, or typed data besides raw_data: left to onnx
    for f in _fields(buf, outer.begin, outer.end):
        n, w = f.number, f.wire
        if n == _T_DIMS and w == _VARINT:
            dims.append(f.value)
        elif n == _T_DIMS and w == _LEN:  # packed
            pos = f.begin
            while pos < f.end:
                v, pos = _varint(buf, pos, f.end)
                dims.append(v)
        elif n == _T_DATA_TYPE and w == _VARINT:
            data_type = f.value
        elif n == _T_NAME and w == _LEN:
            name = buf[f.begin : f.end]
        elif n == _T_RAW_DATA and w == _LEN:
            raw.append(f)
        elif n == _T_DATA_LOCATION and w == _VARINT:
            location = f.value
        elif n == _T_SEGMENT or n in _T_TYPED_DATA:
            unusual = True
        elif n in (_T_DIMS, _T_DATA_TYPE, _T_NAME, _T_RAW_DATA, _T_DATA_LOCATION):
            raise ScanError(f"tensor field {n} with wire type {w} at byte {f.start}")
    try:
        text = bytes(name).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScanError(f"initializer name at byte {outer.begin} is not UTF-8") from e
    dims = [d - (1 << 64) if d >= 1 << 63 else d for d in dims]  # int64 two's complement
    dtype = _np_dtype(data_type)
    if len(raw) != 1 or unusual or location == TensorProto.EXTERNAL or dtype is None or min(dims, default=0) < 0:
        return text, None, None
    if not is_large(dims) or raw[0].value != _num_elements(dims) * dtype.itemsize:
        return text, None, None  # small: kept in the protobuf; wrong size: the normal path reports it
    return text, raw[0], Payload(text, file, raw[0].begin, raw[0].value, dtype, tuple(dims))


def strip_inline_weights(file: Path) -> tuple[bytes, list[Payload]]:
    """Case 1b: the file's bytes without large initializers' ``raw_data``, and those payloads.

    The file is memory-mapped and only the bytes around the payloads are read;
    ``ModelProto.graph`` and each stripped ``initializer`` get new length
    prefixes, everything else is copied as is.
    """
    try:
        with open(file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _strip(mm, len(mm), file)
    except (OSError, ValueError) as e:  # empty files cannot be mapped
        raise ScanError(f"cannot map the file ({e})") from e


def _strip(buf: Any, size: int, file: Path) -> tuple[bytes, list[Payload]]:
    graphs = [f for f in _fields(buf, 0, size) if f.number == _MODEL_GRAPH]
    if len(graphs) != 1 or graphs[0].wire != _LEN:
        raise ScanError(f"{len(graphs)} graph fields")
    graph = graphs[0]
    names: set[str] = set()
    pieces: list[bytes] = []
    payloads: list[Payload] = []
    pos = graph.begin
    for f in _fields(buf, graph.begin, graph.end):
        if f.number != _GRAPH_INITIALIZER:
            continue
        if f.wire != _LEN:
            raise ScanError(f"initializer with wire type {f.wire} at byte {f.start}")
        name, raw, payload = _scan_tensor(buf, f, file)
        if name in names:
            raise ScanError(f"initializer name {name!r} appears twice")
        names.add(name)
        if raw is None or payload is None:
            continue
        tensor = buf[f.begin : raw.start] + buf[raw.end : f.end]
        pieces += [buf[pos : f.start], buf[f.start : f.key_end], encode_varint(len(tensor)), tensor]
        pos = f.end
        payloads.append(payload)
    pieces.append(buf[pos : graph.end])
    body = b"".join(pieces)
    key = buf[graph.start : graph.key_end]
    return b"".join([buf[: graph.start], key, encode_varint(len(body)), body, buf[graph.end : size]]), payloads


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for the checker and shape inference: large initializers become typed graph inputs.

    "Large" is ``is_large``, the rule that also keeps weights out of the protobuf
    (1a, 1b), so the skeleton never needs a weight the protobuf lacks.
    """
    src = model.graph
    skel = onnx.ModelProto()
    skel.ir_version = model.ir_version
    skel.opset_import.extend(model.opset_import)
    g = skel.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    skel.functions.extend(model.functions)
    declared = {vi.name for vi in src.input}
    for t in src.initializer:
        if not is_large(t.dims):
            g.initializer.append(t)
        else:
            if t.name not in declared:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skel
