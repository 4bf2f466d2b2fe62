"""The ONNX frontend: ``.onnx`` files (and in-memory ``ModelProto``) to the graph IR.

``load_onnx(path)`` returns a ``Model`` whose reference runs the original file
in onnxruntime; ``import_onnx_model(proto)`` returns the ``Graph`` alone.

Cases handled (comments cite the numbers):

1. Files: a path to a ``.onnx`` file, or a directory holding ``model.onnx``,
   ``onnx/model.onnx`` or exactly one ``*.onnx``. External data is loaded from
   the file's directory. Missing files, directories without a model, files that
   are not ONNX protobufs (or are truncated) and missing external data files
   raise ``FrontendError`` naming the file. Large initializers (more than
   ``_SKELETON_MAX_ELEMENTS`` elements) never enter the protobuf; each is read
   from its file straight into the array the graph keeps:
   1a external data: by the ``offset``/``length`` of its ``external_data``
      entries, checked against the data file's size up front (an error names the
      data file and the tensor); small external tensors are loaded into the
      protobuf as ``onnx.load`` would, so shape inference sees their values;
   1b inline ``raw_data``: the file is memory-mapped and its protobuf wire format
      scanned (ModelProto.graph -> GraphProto.initializer -> TensorProto dims,
      data_type, name, raw_data); ``onnx`` parses a copy without those payloads;
   1c anything the scanner does not expect (several ``graph`` fields, groups,
      duplicate initializer names, ...) falls back to ``onnx.load`` of the whole
      file; tensors it cannot read directly (``float_data``..., odd sizes,
      unsupported element types) stay in the protobuf and take the normal path;
   1d every initializer array owns its memory, so the graph keeps it uncopied.
2. Model-local functions are inlined before anything else.
3. Every node whose op the registry lacks (or has in another domain), or that
   carries a subgraph (If/Loop/Scan), is collected; all of them are reported in
   one ``FrontendError`` with node names and counts. ``com.microsoft`` and other
   domains are accepted only where the registry defines the op in that domain.
4. The model must pass ``onnx.checker``, run on a skeleton whose large
   initializers are typed graph inputs: the checker never holds the weights,
   and models past protobuf's 2 GiB limit are checked too.
5. Opsets ``MIN_OPSET``..``MAX_OPSET`` of the default domain are read; older
   op versions are rewritten to the latest-opset semantics the IR uses:
   5a Squeeze/Unsqueeze/Reduce*/Split ``axes``/``split`` attributes become int64
      initializer inputs;
   5b Slice-1 ``starts``/``ends``/``axes`` attributes become inputs;
   5c Softmax/LogSoftmax/Hardmax before opset 13 (coerce-to-2D): kept as one
      node when the axis is the last one, otherwise emulated as
      Shape + Flatten + op(axis=-1) + Reshape;
   5d Clip-6 ``min``/``max`` and Pad-2 ``pads``/``value`` attributes become inputs;
   5e Dropout before opset 12: ``ratio`` becomes an input, ``is_test`` is dropped;
   5f TopK-1 ``k`` becomes an input;
   5g Constant ``value_float(s)``/``value_int(s)``/``sparse_value`` become ``value``;
   5h attributes typed ``dtype`` in the registry (Cast ``to``...) become ``DType``;
   5i Resize/Upsample before opset 11 are rejected (different defaults).
   Any attribute the registry does not declare is an error naming the node, so
   an unhandled old form can never be imported with silently wrong semantics.
6. Graph inputs that are also initializers (old exporters) are initializers:
   they are constants in the IR and are not graph inputs; their names are kept
   in ``graph.metadata["overridable_initializers"]``.
7. Types: graph inputs keep their ``dim_param`` names as symbols (names that are
   not identifiers are sanitized), unnamed dynamic dims are ``None``. Node output
   types come from the registry's inference merged with ONNX shape inference
   (``data_prop=True``) and the file's ``value_info``: per dimension a static
   size beats a symbol beats unknown; a static mismatch, a dtype mismatch or a
   registry inference failure is a ``FrontendError`` naming file, node and op.
8. Names: value and node names are kept; nodes without a name get generated
   ones; omitted optional inputs (``""``) become ``None``; omitted optional
   outputs in the middle get generated names, trailing ones are dropped.
9. Nodes are put in topological order if the file has them out of order.
10. ``graph.metadata``: ``source``, ``opset``, ``producer``, ``ir_version``.

The frontend never writes files.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import mmap
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, numpy_helper

from accelopt.errors import FrontendError, VerifyError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import ORIGINAL, Graph, Provenance, Value, freeze_attrs
from accelopt.ir.registry import REQUIRED, OpDef, all_ops
from accelopt.ir.types import Dim, TensorType
from accelopt.model import Model

log = logging.getLogger(__name__)

#: oldest / newest default-domain opset read (case 5)
MIN_OPSET = 7
MAX_OPSET = 23
#: file names looked for inside a directory (case 1)
MODEL_FILE_CANDIDATES = ("model.onnx", "onnx/model.onnx")
#: protobuf's hard limit on a serialized message (the skeleton must stay under it)
_PROTO_LIMIT = 2**31 - 1
#: initializers with more elements are replaced by typed inputs for shape inference
_SKELETON_MAX_ELEMENTS = 4096
#: attributes dropped without being declared by the registry: (op, attr) -> why
_IGNORABLE_ATTRS: dict[tuple[str, str], str] = {
    ("Cast", "saturate"): "only affects float8 targets",
    ("CastLike", "saturate"): "only affects float8 targets",
    ("Dropout", "seed"): "inference only",
    ("Dropout", "is_test"): "inference only (opset < 7 form)",
}
_IMPORT = Provenance(pass_name="onnx-import")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


# ====================================================================== files
def load_onnx(path: str | os.PathLike[str], *, providers: Sequence[str] | None = None) -> Model:
    """Load an ONNX file (or a directory holding one) as a ``Model`` (case 1).

    ``reference_fn`` runs the original file in onnxruntime (CPU unless
    ``providers`` says otherwise), fed with the graph's input names, and
    returns the outputs keyed by the graph's output names.
    """
    file = _resolve_model_file(Path(path))
    source = str(file)
    model, payloads = _read_model(file)
    graph = _Importer(model, source, payloads).run()
    del model  # the protobuf (weights left out) is not needed past the import
    input_names = [v.name for v in graph.inputs]
    output_names = [v.name for v in graph.outputs]
    input_dtypes = {v.name: v.dtype.np for v in graph.inputs}
    reference = _OrtReference(
        file, list(providers or ["CPUExecutionProvider"]), input_names, output_names, input_dtypes
    )
    return Model(graph=graph, source=source, kind="onnx", reference_fn=reference, metadata=dict(graph.metadata))


def _resolve_model_file(path: Path) -> Path:
    if path.is_dir():
        for cand in MODEL_FILE_CANDIDATES:
            if (path / cand).is_file():
                return path / cand
        found = sorted(p for p in path.glob("*.onnx") if p.is_file())
        if len(found) == 1:
            return found[0]
        looked = ", ".join(MODEL_FILE_CANDIDATES) + ", *.onnx"
        if not found:
            raise FrontendError(f"{path}: directory holds no ONNX model (looked for {looked})")
        raise FrontendError(
            f"{path}: directory holds {len(found)} ONNX files and no model.onnx; "
            f"pass one of: {', '.join(p.name for p in found)}"
        )
    if not path.exists():
        raise FrontendError(f"{path}: no such file")
    if not path.is_file():
        raise FrontendError(f"{path}: not a regular file")
    return path


def _read_model(file: Path) -> tuple[onnx.ModelProto, dict[str, _Payload]]:
    """The file's ``ModelProto`` without its large weights, and where to read them (case 1)."""
    model: onnx.ModelProto | None = None
    payloads: dict[str, _Payload] = {}
    try:
        stripped, inline = _strip_inline_weights(file)  # 1b
    except _ScanError as e:  # 1c
        log.debug("%s: %s; reading the whole file with onnx.load", file, e)
    else:
        try:
            model = onnx.load_from_string(stripped)
            payloads = {p.name: p for p in inline}
        except Exception as e:  # 1c: onnx.load reports it (or reads a text-format file)
            log.debug("%s: the scanned protobuf does not parse (%s); reading the whole file", file, e)
    if model is None:
        model = _parse_model(file, lambda: onnx.load(str(file), load_external_data=False))
    _check_is_model(model, str(file))
    missing = []
    for t, _ in _external_tensors(model):
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        if not loc or not (file.parent / loc).is_file():
            missing.append((t.name, loc))
    if missing:
        shown = ", ".join(f"{loc or '?'} (tensor {name})" for name, loc in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FrontendError(f"{file}: missing external data file(s) next to the model: {shown}{more}")
    payloads.update(_external_payloads(model, file))  # 1a
    return model, payloads


def _parse_model(file: Path, parse: Callable[[], onnx.ModelProto]) -> onnx.ModelProto:
    try:
        return parse()
    except DecodeError as e:
        raise FrontendError(f"{file}: not an ONNX model, or truncated (protobuf decode failed: {e})") from e
    except OSError as e:
        raise FrontendError(f"{file}: cannot read: {e}") from e
    except Exception as e:  # protobuf raises a few other types on garbage
        raise FrontendError(f"{file}: not an ONNX model ({type(e).__name__}: {e})") from e


def _external_tensors(model: onnx.ModelProto) -> list[tuple[TensorProto, bool]]:
    """Tensors with external data, each with whether it is an initializer."""
    out = [(t, True) for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL:
                out.append((a.t, False))
    return out


def _check_is_model(model: onnx.ModelProto, source: str) -> None:
    if not model.HasField("graph") or model.ir_version == 0 or not model.opset_import:
        raise FrontendError(f"{source}: not an ONNX model (no graph, IR version or opset import)")


# ==================================================================== weights
def _num_elements(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def _is_large(dims: Sequence[int]) -> bool:
    """Whether an initializer is read outside the protobuf (1a, 1b) and a skeleton input (4, 7)."""
    return _num_elements(dims) > _SKELETON_MAX_ELEMENTS


def _np_dtype(code: int) -> np.dtype | None:
    """The numpy dtype of a plain little-endian element type the IR holds, else None."""
    try:
        dtype = DType.from_onnx(code).np
    except TypeError:
        return None
    return dtype if sys.byteorder == "little" or dtype.itemsize == 1 else None


@dataclass(frozen=True)
class _Payload:
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


def _external_payloads(model: onnx.ModelProto, file: Path) -> dict[str, _Payload]:
    """Case 1a: large external initializers become payloads; other external tensors are loaded."""
    counts = Counter(t.name for t in model.graph.initializer)
    payloads: dict[str, _Payload] = {}
    for t, is_init in _external_tensors(model):
        loc, offset, nbytes = _external_span(t, file)
        dtype = _np_dtype(t.data_type)
        dims = [int(d) for d in t.dims]
        if is_init and counts[t.name] == 1 and dtype is not None and min(dims, default=0) >= 0 and _is_large(dims):
            expected = _num_elements(dims) * dtype.itemsize
            if nbytes != expected:
                raise FrontendError(
                    f"{file}: initializer {t.name!r} ({TensorProto.DataType.Name(t.data_type)}{dims}) "
                    f"is corrupt: its external data in {loc} holds {nbytes} bytes, not {expected}"
                )
            payloads[t.name] = _Payload(t.name, file.parent / loc, offset, nbytes, dtype, (*dims,), (file.parent, loc))
            continue
        # small (or unusual) tensors go into the protobuf, as onnx.load puts them there
        raw = _Payload(t.name, file.parent / loc, offset, nbytes, np.dtype(np.uint8), (nbytes,), (file.parent, loc))
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


class _ScanError(Exception):
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
            raise _ScanError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _ScanError(f"overlong varint at byte {pos}")


def _encode_varint(value: int) -> bytes:
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
            raise _ScanError(f"field number 0 at byte {pos}")
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
            raise _ScanError(f"wire type {wire} (groups) at byte {pos}")
        if stop > end:
            raise _ScanError(f"field {number} at byte {pos} runs past the end of its message")
        yield _Field(number, wire, pos, key_end, begin, stop, value)
        pos = stop


def _scan_tensor(buf: Any, outer: _Field, file: Path) -> tuple[str, _Field | None, _Payload | None]:
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
            raise _ScanError(f"tensor field {n} with wire type {w} at byte {f.start}")
    try:
        text = bytes(name).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _ScanError(f"initializer name at byte {outer.begin} is not UTF-8") from e
    dims = [d - (1 << 64) if d >= 1 << 63 else d for d in dims]  # int64 two's complement
    dtype = _np_dtype(data_type)
    if len(raw) != 1 or unusual or location == TensorProto.EXTERNAL or dtype is None or min(dims, default=0) < 0:
        return text, None, None
    if not _is_large(dims) or raw[0].value != _num_elements(dims) * dtype.itemsize:
        return text, None, None  # small: kept in the protobuf; wrong size: the normal path reports it
    return text, raw[0], _Payload(text, file, raw[0].begin, raw[0].value, dtype, tuple(dims))


def _strip_inline_weights(file: Path) -> tuple[bytes, list[_Payload]]:
    """Case 1b: the file's bytes without large initializers' ``raw_data``, and those payloads.

    The file is memory-mapped and only the bytes around the payloads are read;
    ``ModelProto.graph`` and each stripped ``initializer`` get new length
    prefixes, everything else is copied as is.
    """
    try:
        with open(file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _strip(mm, len(mm), file)
    except (OSError, ValueError) as e:  # empty files cannot be mapped
        raise _ScanError(f"cannot map the file ({e})") from e


def _strip(buf: Any, size: int, file: Path) -> tuple[bytes, list[_Payload]]:
    graphs = [f for f in _fields(buf, 0, size) if f.number == _MODEL_GRAPH]
    if len(graphs) != 1 or graphs[0].wire != _LEN:
        raise _ScanError(f"{len(graphs)} graph fields")
    graph = graphs[0]
    names: set[str] = set()
    pieces: list[bytes] = []
    payloads: list[_Payload] = []
    pos = graph.begin
    for f in _fields(buf, graph.begin, graph.end):
        if f.number != _GRAPH_INITIALIZER:
            continue
        if f.wire != _LEN:
            raise _ScanError(f"initializer with wire type {f.wire} at byte {f.start}")
        name, raw, payload = _scan_tensor(buf, f, file)
        if name in names:
            raise _ScanError(f"initializer name {name!r} appears twice")
        names.add(name)
        if raw is None or payload is None:
            continue
        tensor = buf[f.begin : raw.start] + buf[raw.end : f.end]
        pieces += [buf[pos : f.start], buf[f.start : f.key_end], _encode_varint(len(tensor)), tensor]
        pos = f.end
        payloads.append(payload)
    pieces.append(buf[pos : graph.end])
    body = b"".join(pieces)
    key = buf[graph.start : graph.key_end]
    return b"".join([buf[: graph.start], key, _encode_varint(len(body)), body, buf[graph.end : size]]), payloads


class _OrtReference:
    """Runs the original file in onnxruntime; the session is made on first use."""

    def __init__(
        self,
        file: Path,
        providers: list[str],
        input_names: list[str],
        output_names: list[str],
        input_dtypes: Mapping[str, np.dtype],
    ) -> None:
        self.file = file
        self.providers = providers
        self.input_names = input_names
        self.output_names = output_names
        self.input_dtypes = dict(input_dtypes)
        self._session: Any = None

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.file), providers=self.providers)
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise FrontendError(f"{self.file}: reference run is missing input(s) {', '.join(missing)}")
        feeds = {}
        for name in self.input_names:
            arr = np.asarray(inputs[name])
            want = self.input_dtypes[name]
            if arr.dtype != want and (arr.dtype.kind in "iub" and want.kind in "iub" or arr.dtype.kind == want.kind):
                arr = arr.astype(want)
            feeds[name] = arr
        outs = self._session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))


# ===================================================================== import
def import_onnx_model(
    model: onnx.ModelProto,
    *,
    source: str = "<memory>",
    model_path: str | os.PathLike[str] | None = None,
) -> Graph:
    """Import an ONNX ``ModelProto`` into a ``Graph`` (cases 2-10).

    ``source`` names the model in errors and in ``graph.metadata``;
    ``model_path`` (optional) is the file it was read from; it is accepted for
    compatibility and no longer needed: the checker and shape inference run on a
    skeleton without the large weights, whatever the model's size.
    """
    del model_path
    _check_is_model(model, source)
    return _Importer(model, source).run()


@dataclass
class _ONode:
    """A node being imported: an ONNX NodeProto with decoded attributes."""

    name: str
    op: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Unsupported:
    """An attribute value the IR cannot hold (subgraphs, type protos, strings tensors...)."""

    what: str


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def _qualified(domain: str, op: str) -> str:
    return f"{domain}.{op}" if domain else op


class _Importer:
    def __init__(self, model: onnx.ModelProto, source: str, payloads: Mapping[str, _Payload] | None = None) -> None:
        self.model = model
        self.source = source
        self.payloads = dict(payloads or {})  # large initializers left out of ``model`` (1a, 1b)
        self.skeleton: onnx.ModelProto | None = None  # the model without large weights (4, 7)
        self.opset = next((o.version for o in model.opset_import if _domain(o.domain) == ""), 0)
        self.g = Graph(model.graph.name or "main")
        self.values: dict[str, Value] = {}
        self.file_names: set[str] = set()  # every value name in the file, filled by run()
        self.onnx_types: dict[str, TensorType] = {}

    def fail(self, msg: str, node: _ONode | None = None) -> FrontendError:
        where = f"node {node.name} ({_qualified(node.domain, node.op)}): " if node is not None else ""
        return FrontendError(f"{self.source}: {where}{msg}")

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        model = self.model
        if model.functions:  # case 2
            try:
                model = onnx.inliner.inline_local_functions(model)
            except Exception as e:
                raise self.fail(f"cannot inline model-local functions: {e}") from e
            self.model = model
        g = model.graph
        self.file_names = {v.name for v in g.input} | {t.name for t in g.initializer}
        self.file_names |= {s.values.name for s in g.sparse_initializer}
        self.file_names |= {o for n in g.node for o in n.output}
        nodes = self._decode_nodes(g)
        self._check_supported(nodes)  # case 3
        order = self._toposort(nodes)  # case 9
        if order != list(range(len(nodes))):
            log.info("%s: nodes were not in topological order; sorted", self.source)
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            del model.graph.node[:]
            model.graph.node.extend(self.model.graph.node[i] for i in order)
            self.model = model
            nodes = [nodes[i] for i in order]
        self.skeleton = _skeleton(self.model)
        self._check_model()  # case 4
        if not MIN_OPSET <= self.opset <= MAX_OPSET:  # case 5
            raise self.fail(
                f"default-domain opset {self.opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}"
            )
        self._infer_onnx_types()  # case 7
        self._import_inputs_and_initializers()  # case 6
        for node in nodes:
            self._import_node(node)
        self._import_outputs()
        try:
            self.g.verify()
        except VerifyError as e:
            raise self.fail(f"imported graph is inconsistent: {e}") from e
        self.g.metadata.update(  # case 10
            {
                "source": self.source,
                "opset": self.opset,
                "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
                "ir_version": model.ir_version,
            }
        )
        log.debug("imported %s: %d nodes, opset %d", self.source, len(self.g.nodes), self.opset)
        return self.g

    # ------------------------------------------------------------- decoding
    def _decode_nodes(self, graph: onnx.GraphProto) -> list[_ONode]:
        used = {n.name for n in graph.node if n.name}
        seen: set[str] = set()
        counter = Counter[str]()
        out = []
        for n in graph.node:
            name = n.name
            if not name or name in seen:  # case 8: generate names, keep them unique
                base = n.name or n.op_type
                while True:
                    counter[base] += 1
                    name = f"{base}_{counter[base]}"
                    if name not in used and name not in seen:
                        break
            seen.add(name)
            attrs = {a.name: self._decode_attr(a) for a in n.attribute}
            out.append(_ONode(name, n.op_type, _domain(n.domain), list(n.input), list(n.output), attrs))
        return out

    def _decode_attr(self, a: AttributeProto) -> Any:
        t = a.type
        if t == AttributeProto.INT:
            return int(a.i)
        if t == AttributeProto.FLOAT:
            return float(a.f)
        if t == AttributeProto.STRING:
            return a.s.decode("utf-8", errors="replace")
        if t == AttributeProto.INTS:
            return [int(x) for x in a.ints]
        if t == AttributeProto.FLOATS:
            return [float(x) for x in a.floats]
        if t == AttributeProto.STRINGS:
            return [s.decode("utf-8", errors="replace") for s in a.strings]
        if t == AttributeProto.TENSOR:
            return self._tensor_to_array(a.t, f"attribute {a.name}")
        if t == AttributeProto.SPARSE_TENSOR:
            return _sparse_to_array(a.sparse_tensor)
        if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            return _Unsupported("a subgraph")
        return _Unsupported(f"an attribute of type {AttributeProto.AttributeType.Name(t)}")

    def _tensor_to_array(self, t: TensorProto, what: str) -> np.ndarray | _Unsupported:
        try:
            DType.from_onnx(t.data_type)
        except TypeError:
            return _Unsupported(f"{what} of element type {TensorProto.DataType.Name(t.data_type)}")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:  # wrong data size for its dims, unreadable external data...
            raise self.fail(f"{what} ({TensorProto.DataType.Name(t.data_type)}{list(t.dims)}) is corrupt: {e}") from e
        if arr.base is not None or not arr.flags.c_contiguous or not arr.flags.writeable:
            arr = np.array(arr, copy=True, order="C")  # 1d: owned, so the graph keeps it without a copy
        return arr

    # ------------------------------------------------------------- case 3
    def _check_supported(self, nodes: list[_ONode]) -> None:
        ops = all_ops()
        bad: dict[str, list[str]] = {}
        for n in nodes:
            key = _qualified(n.domain, n.op)
            opdef = ops.get(n.op)
            subgraph = any(isinstance(v, _Unsupported) and v.what == "a subgraph" for v in n.attrs.values())
            if opdef is None or opdef.domain != n.domain or subgraph:
                bad.setdefault(key + (" (subgraphs)" if subgraph and opdef is not None else ""), []).append(n.name)
        if bad:
            total = sum(len(v) for v in bad.values())
            parts = []
            for key, names in bad.items():
                shown = ", ".join(names[:8]) + (f", ... {len(names) - 8} more" if len(names) > 8 else "")
                parts.append(f"{key} ({'node' if len(names) == 1 else 'nodes'} {shown})")
            raise FrontendError(f"{self.source}: {total} unsupported op(s): {', '.join(parts)}")

    # ------------------------------------------------------------- case 4
    def _check_model(self) -> None:
        """``onnx.checker`` on the skeleton, whose large initializers are typed inputs (case 4)."""
        skel = self.skeleton or _skeleton(self.model)
        if skel.ByteSize() > _PROTO_LIMIT:  # nodes alone past 2 GiB (huge Constant attributes)
            log.warning("%s: model over 2 GiB without its initializers; onnx.checker skipped", self.source)
            return
        try:
            onnx.checker.check_model(skel)
        except onnx.checker.ValidationError as e:
            raise self.fail(f"model fails the ONNX checker: {str(e).strip()}") from e

    # ------------------------------------------------------------- case 7
    def _infer_onnx_types(self) -> None:
        """Types from ONNX shape inference on a copy whose large weights are typed inputs."""
        skel = self.skeleton or _skeleton(self.model)
        try:
            inferred = onnx.shape_inference.infer_shapes(skel, data_prop=True)
        except Exception as e:  # inference is advisory: the registry decides
            log.warning("%s: ONNX shape inference failed (%s); using registry inference only", self.source, e)
            inferred = skel
        g = inferred.graph
        for vi in list(g.value_info) + list(g.output) + list(self.model.graph.value_info):
            t = self._value_info_type(vi, intermediate=True)
            if t is not None and vi.name not in self.onnx_types:
                self.onnx_types[vi.name] = t

    def _value_info_type(self, vi: onnx.ValueInfoProto, *, intermediate: bool) -> TensorType | None:
        if not vi.type.HasField("tensor_type"):
            return None
        tt = vi.type.tensor_type
        try:
            dtype = DType.from_onnx(tt.elem_type)
        except TypeError:
            return None
        if not tt.HasField("shape"):
            return TensorType(dtype, None)
        return TensorType(dtype, tuple(_dim(d, intermediate=intermediate) for d in tt.shape.dim))

    # ------------------------------------------------------------- case 6
    def _import_inputs_and_initializers(self) -> None:
        graph = self.model.graph
        init_names = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        overridable = []
        for vi in graph.input:
            if vi.name in init_names:
                overridable.append(vi.name)
                continue
            if not vi.type.HasField("tensor_type"):
                raise self.fail(f"graph input {vi.name!r} is not a tensor")
            code = vi.type.tensor_type.elem_type
            try:
                DType.from_onnx(code)
            except TypeError:
                raise self.fail(
                    f"graph input {vi.name!r} has unsupported element type {TensorProto.DataType.Name(code)}"
                ) from None
            t = self._value_info_type(vi, intermediate=False)
            assert t is not None  # tensor type with a known dtype was checked above
            self.values[vi.name] = self._claim(functools.partial(self.g.add_input, vi.name, t), vi.name)
        if overridable:
            self.g.metadata["overridable_initializers"] = overridable
        for t in graph.initializer:
            payload = None if t.HasField("raw_data") else self.payloads.pop(t.name, None)
            if payload is not None:  # 1a, 1b: straight from the file
                arr: np.ndarray | _Unsupported = payload.read(self.source)
            else:
                arr = self._tensor_to_array(t, f"initializer {t.name!r}")
            if isinstance(arr, _Unsupported):
                raise self.fail(f"{arr.what} is not supported")
            self._add_initializer(t.name, arr)
        for s in graph.sparse_initializer:
            self._add_initializer(s.values.name, _sparse_to_array(s))

    def _add_initializer(self, name: str, arr: np.ndarray) -> None:
        self.values[name] = self._claim(lambda: self.g.add_initializer(name, arr), name)

    def _claim(self, make: Callable[[], Any], name: str) -> Any:
        if name in self.values:
            raise self.fail(f"value {name!r} is defined more than once")
        try:
            return make()
        except VerifyError as e:
            raise self.fail(str(e)) from e

    def fresh(self, hint: str) -> str:
        """A value name free in the IR graph and in the file (whose later names are not claimed yet)."""
        name, i = self.g.unique_name(hint), 0
        while name in self.file_names:
            i += 1
            name = self.g.unique_name(f"{hint}_{i}")
        self.file_names.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> Value:
        """A new initializer (used by the old-opset rewrites)."""
        v = self.g.add_initializer(self.fresh(hint), array)
        self.values[v.name] = v
        return v

    # ------------------------------------------------------------- case 9
    def _toposort(self, nodes: list[_ONode]) -> list[int]:
        """A stable topological order of ``nodes`` (indices); names nobody produces count as ready."""
        produced = {o for n in nodes for o in n.outputs if o}
        ready: set[str] = set()
        order: list[int] = []
        pending = list(range(len(nodes)))
        while pending:
            rest = []
            for i in pending:
                if all(name in ready or name not in produced for name in nodes[i].inputs):
                    order.append(i)
                    ready.update(nodes[i].outputs)
                else:
                    rest.append(i)
            if len(rest) == len(pending):
                names = ", ".join(nodes[i].name for i in rest[:5])
                raise self.fail(f"graph has a cycle among nodes {names}")
            pending = rest
        return order

    # ------------------------------------------------------------- nodes
    def _import_node(self, node: _ONode) -> None:
        rewrite = _REWRITES.get(node.op) if node.domain == "" else None
        if rewrite is not None:
            rewritten = rewrite(self, node)
            if rewritten is None:
                return
            node = rewritten
        self.emit(node)

    def input_value(self, node: _ONode, name: str) -> Value | None:
        if name == "":
            return None
        v = self.values.get(name)
        if v is None:
            raise self.fail(f"input {name!r} is not defined by any node, input or initializer", node)
        return v

    def input_type(self, node: _ONode, i: int) -> TensorType | None:
        if i >= len(node.inputs) or node.inputs[i] == "":
            return None
        v = self.input_value(node, node.inputs[i])
        return None if v is None else v.type

    def emit(self, node: _ONode, *, provenance: Provenance | None = None) -> list[Value]:
        """Add ``node`` to the IR with registry-checked attributes and merged types."""
        from accelopt.ir.registry import get_op

        opdef = get_op(node.op)
        attrs = self._coerce_attrs(opdef, node)
        inputs = list(node.inputs)
        while inputs and inputs[-1] == "":
            inputs.pop()
        ins = [self.input_value(node, name) for name in inputs]
        lo, hi = opdef.inputs
        if len(ins) < lo or (hi >= 0 and len(ins) > hi):
            raise self.fail(f"{len(ins)} inputs, the op takes {lo}..{hi if hi >= 0 else 'n'}", node)
        outs = list(node.outputs)
        while outs and outs[-1] == "":
            outs.pop()
        lo, hi = opdef.outputs
        if len(outs) < lo:  # the registry needs outputs the file omitted: add unused ones
            outs += [""] * (lo - len(outs))
        if hi >= 0 and len(outs) > hi:
            raise self.fail(f"{len(outs)} outputs, the op has at most {hi}", node)
        out_names = [o or self.fresh(f"{node.name}_unused_{i}") for i, o in enumerate(outs)]
        frozen = freeze_attrs(attrs)
        try:
            inferred = opdef.infer_types(ins, frozen, len(out_names), node_name=node.name)
        except Exception as e:
            raise self.fail(f"shape inference failed: {e}", node) from e
        if len(inferred) != len(out_names):
            raise self.fail(f"registry inferred {len(inferred)} output types for {len(out_names)} outputs", node)
        types = [self._merge(node, name, t, self.onnx_types.get(name)) for name, t in zip(out_names, inferred)]
        for name in out_names:
            if name in self.values:
                raise self.fail(f"output {name!r} is already defined", node)
        try:
            ir = self.g.add_node(
                node.op,
                ins,
                frozen,
                outputs=out_names,
                types=types,
                name=node.name,
                provenance=provenance or ORIGINAL,
            )
        except VerifyError as e:
            raise self.fail(str(e), node) from e
        for v in ir.outputs:
            self.values[v.name] = v
        return list(ir.outputs)

    def _coerce_attrs(self, opdef: OpDef, node: _ONode) -> dict[str, Any]:
        """Attributes in the registry's kinds (case 5h); undeclared ones are errors."""
        out: dict[str, Any] = {}
        for key, val in node.attrs.items():
            spec = opdef.attrs.get(key)
            if spec is None:
                if (node.op, key) in _IGNORABLE_ATTRS:
                    log.debug("node %s: dropping attribute %s (%s)", node.name, key, _IGNORABLE_ATTRS[(node.op, key)])
                    continue
                raise self.fail(f"attribute {key!r} (opset {self.opset}) is not supported by the IR op", node)
            if isinstance(val, _Unsupported):
                raise self.fail(f"attribute {key!r} holds {val.what}, which is not supported", node)
            try:
                out[key] = _coerce(spec.kind, val)
            except (TypeError, ValueError) as e:
                raise self.fail(f"attribute {key!r}: {e}", node) from e
        for key, spec in opdef.attrs.items():
            if spec.default is REQUIRED and key not in out:
                raise self.fail(f"missing required attribute {key!r}", node)
        return out

    def _merge(self, node: _ONode | None, name: str, reg: TensorType, other: TensorType | None) -> TensorType:
        """Merge the IR's inferred type with the file's / ONNX inference's (case 7)."""
        if other is None:
            return reg
        if other.dtype != reg.dtype:
            raise self.fail(f"output {name!r}: the file/ONNX inference says {other}, the IR infers {reg}", node)
        if reg.shape is None:
            return TensorType(reg.dtype, other.shape)
        if other.shape is None:
            return reg
        if len(reg.shape) != len(other.shape):
            raise self.fail(f"output {name!r}: the file/ONNX inference says {other}, the IR infers {reg}", node)
        dims: list[Dim] = []
        for a, b in zip(reg.shape, other.shape):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise self.fail(
                    f"inconsistent shapes: output {name!r} is {other} per the file/ONNX inference, {reg} per the IR",
                    node,
                )
            dims.append(_better_dim(a, b))
        return TensorType(reg.dtype, tuple(dims))

    # ------------------------------------------------------------- outputs
    def _import_outputs(self) -> None:
        outs = []
        for vi in self.model.graph.output:
            v = self.values.get(vi.name)
            if v is None:
                raise self.fail(f"graph output {vi.name!r} is not produced by any node")
            declared = self._value_info_type(vi, intermediate=False)
            if declared is not None and v.producer is not None:
                v.type = self._merge(None, vi.name, v.type, declared)
            outs.append(v)
        self.g.set_outputs(outs)


def _better_dim(a: Dim, b: Dim) -> Dim:
    """Prefer a static size, then a symbol, then unknown; ``a`` wins ties."""
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    if a is not None:
        return a
    return b


def _dim(d: onnx.TensorShapeProto.Dimension, *, intermediate: bool) -> Dim:
    if d.HasField("dim_value") and d.dim_value >= 0:
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        p = d.dim_param
        if intermediate:
            # ONNX inference invents ``unk__N``; exporters write expressions ("2*sequence")
            return p if _IDENT.match(p) and not p.startswith("unk__") else None
        return p if _IDENT.match(p) else (re.sub(r"[^A-Za-z0-9_.]", "_", p).lstrip("0123456789.") or None)
    return None


def _coerce(kind: str, val: Any) -> Any:
    if kind == "dtype":
        if isinstance(val, DType):
            return val
        return DType.from_onnx(int(val))
    if kind == "int":
        if isinstance(val, (list, np.ndarray)):
            raise TypeError(f"expected an int, got {val!r}")
        return int(val)
    if kind == "float":
        return float(val)
    if kind == "str":
        return str(val)
    if kind == "ints":
        return tuple(int(x) for x in np.asarray(val).reshape(-1))
    if kind == "floats":
        return tuple(float(x) for x in np.asarray(val).reshape(-1))
    if kind == "strs":
        return tuple(str(x) for x in val)
    if kind == "tensor":
        if not isinstance(val, np.ndarray):
            raise TypeError(f"expected a tensor, got {type(val).__name__}")
        return val
    raise TypeError(f"unknown attribute kind {kind!r}")


def _sparse_to_array(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for the checker and shape inference: large initializers become typed graph inputs.

    "Large" is ``_is_large``, the rule that also keeps weights out of the protobuf
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
        if not _is_large(t.dims):
            g.initializer.append(t)
        else:
            if t.name not in declared:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skel


# ================================================================= rewrites (case 5)
_Rewrite = Callable[[_Importer, _ONode], "_ONode | None"]
_REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)


def _attr_to_input(
    imp: _Importer, node: _ONode, attr: str, index: int, dtype: np.dtype, *, scalar: bool = False
) -> None:
    """Move attribute ``attr`` to input ``index`` as a new initializer (5a-5f)."""
    if attr not in node.attrs:
        return
    val = node.attrs.pop(attr)
    arr = np.asarray(val, dtype=dtype)
    if scalar:
        arr = arr.reshape(())
    while len(node.inputs) < index:
        node.inputs.append("")
    if len(node.inputs) > index and node.inputs[index] != "":
        raise imp.fail(f"has both attribute {attr!r} and input {index}", node)
    v = imp.const(f"{node.name}_{attr}", arr)
    if len(node.inputs) == index:
        node.inputs.append(v.name)
    else:
        node.inputs[index] = v.name


def _input_np_dtype(imp: _Importer, node: _ONode, i: int = 0) -> np.dtype:
    t = imp.input_type(node, i)
    return np.dtype(np.float32) if t is None else t.dtype.np


def _rw_axes_input(since: int) -> _Rewrite:
    def rewrite(imp: _Importer, node: _ONode) -> _ONode:  # 5a
        if imp.opset < since:
            _attr_to_input(imp, node, "axes", 1, np.dtype(np.int64))
        return node

    return rewrite


def _rw_split(imp: _Importer, node: _ONode) -> _ONode:  # 5a
    if imp.opset < 13:
        _attr_to_input(imp, node, "split", 1, np.dtype(np.int64))
    return node


def _rw_slice(imp: _Importer, node: _ONode) -> _ONode:  # 5b
    if imp.opset < 10:
        for i, key in enumerate(("starts", "ends", "axes"), start=1):
            _attr_to_input(imp, node, key, i, np.dtype(np.int64))
    return node


def _rw_softmax(imp: _Importer, node: _ONode) -> _ONode | None:  # 5c
    if imp.opset >= 13:
        return node
    axis = int(node.attrs.pop("axis", 1))
    t = imp.input_type(node, 0)
    rank = None if t is None or t.shape is None else len(t.shape)
    if rank is not None and (axis % max(rank, 1) == rank - 1 or rank <= 1):
        node.attrs["axis"] = -1
        return node
    # coerce-to-2D semantics: flatten at ``axis``, normalize the last axis, restore the shape
    prov = Provenance(pass_name="onnx-import", rule=f"{node.op.lower()}-opset{imp.opset}", origins=(node.name,))
    x = node.inputs[0]

    def part(suffix: str, op: str, ins: list[str], attrs: dict[str, Any]) -> Value:
        out = imp.fresh(f"{node.name}_{suffix}")
        (v,) = imp.emit(_ONode(f"{node.name}/{suffix}", op, "", ins, [out], attrs), provenance=prov)
        return v

    shape = part("shape", "Shape", [x], {})
    flat = part("flatten", "Flatten", [x], {"axis": axis})
    norm = part("2d", node.op, [flat.name], {"axis": -1})
    imp.emit(_ONode(node.name, "Reshape", "", [norm.name, shape.name], node.outputs[:1]), provenance=prov)
    return None


def _rw_clip(imp: _Importer, node: _ONode) -> _ONode:  # 5d
    if imp.opset < 11:
        dt = _input_np_dtype(imp, node)
        if "min" not in node.attrs and "max" in node.attrs:
            node.inputs.append("")
        _attr_to_input(imp, node, "min", 1, dt, scalar=True)
        _attr_to_input(imp, node, "max", 2, dt, scalar=True)
    return node


def _rw_pad(imp: _Importer, node: _ONode) -> _ONode:  # 5d
    if imp.opset < 11:
        _attr_to_input(imp, node, "pads", 1, np.dtype(np.int64))
        _attr_to_input(imp, node, "value", 2, _input_np_dtype(imp, node), scalar=True)
    return node


def _rw_dropout(imp: _Importer, node: _ONode) -> _ONode:  # 5e
    if imp.opset < 12:
        node.attrs.pop("is_test", None)
        _attr_to_input(imp, node, "ratio", 1, _input_np_dtype(imp, node), scalar=True)
    return node


def _rw_topk(imp: _Importer, node: _ONode) -> _ONode:  # 5f
    if imp.opset < 10:
        k = node.attrs.pop("k", None)
        if k is not None:
            node.attrs["k"] = [int(k)]
            _attr_to_input(imp, node, "k", 1, np.dtype(np.int64))
    return node


def _rw_constant(imp: _Importer, node: _ONode) -> _ONode:  # 5g
    forms: dict[str, Callable[[Any], np.ndarray]] = {
        "value_float": lambda v: np.array(v, dtype=np.float32),
        "value_floats": lambda v: np.array(v, dtype=np.float32).reshape(-1),
        "value_int": lambda v: np.array(v, dtype=np.int64),
        "value_ints": lambda v: np.array(v, dtype=np.int64).reshape(-1),
        "sparse_value": lambda v: np.asarray(v),
    }
    for key, make in forms.items():
        if key in node.attrs:
            node.attrs["value"] = make(node.attrs.pop(key))
    for key in ("value_string", "value_strings"):
        if key in node.attrs:
            raise imp.fail("string constants are not supported", node)
    if isinstance(node.attrs.get("value"), _Unsupported):
        raise imp.fail(f"value holds {node.attrs['value'].what}, which is not supported", node)
    return node


def _rw_resize(imp: _Importer, node: _ONode) -> _ONode:  # 5i
    if imp.opset < 11:
        raise imp.fail(f"{node.op} before opset 11 has different semantics; upgrade the model's opset", node)
    return node


_REWRITES: dict[str, _Rewrite] = {
    "Squeeze": _rw_axes_input(13),
    "Unsqueeze": _rw_axes_input(13),
    "ReduceSum": _rw_axes_input(13),
    **{op: _rw_axes_input(18) for op in _REDUCE_OPS},
    "Split": _rw_split,
    "Slice": _rw_slice,
    "Softmax": _rw_softmax,
    "LogSoftmax": _rw_softmax,
    "Hardmax": _rw_softmax,
    "Clip": _rw_clip,
    "Pad": _rw_pad,
    "Dropout": _rw_dropout,
    "TopK": _rw_topk,
    "Constant": _rw_constant,
    "Resize": _rw_resize,
    "Upsample": _rw_resize,
}
