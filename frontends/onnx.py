"""The ONNX frontend: ``.onnx`` files (and in-memory ``ModelProto``) to the graph IR.

``load_onnx(path)`` returns a ``Model`` whose reference runs the original file
in onnxruntime; ``import_onnx_model(proto)`` returns the ``Graph`` alone.

Cases handled (comments cite the numbers):

1. Files: a path to a ``.onnx`` file, or a directory holding ``model.onnx``,
   ``onnx/model.onnx`` or exactly one ``*.onnx``. External data is loaded from
   the file's directory. Missing files, directories without a model, files that
   are not ONNX protobufs (or are truncated) and missing external data files
   raise ``FrontendError`` naming the file. Large initializers (more than
   ``onnx_weights.SKELETON_MAX_ELEMENTS`` elements) never enter the protobuf; each is read
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
   5i Resize/Upsample before opset 11 are rejected (different defaults);
   5j BatchNormalization's ``spatial`` attribute (opsets 7-8) is dropped when 1,
      an error when 0 (per-activation statistics).
   Any attribute the registry does not declare is an error naming the node, so
   an unhandled old form can never be imported with silently wrong semantics.
6. Graph inputs that are also initializers (old exporters) are initializers:
   they are constants in the IR and are not graph inputs; their names are kept
   in ``graph.metadata["overridable_initializers"]``. A graph with no outputs,
   an input whose element type is not an ONNX type, or an input with a static
   dimension of 0 is a ``FrontendError`` (``onnx_interface``).
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

Where the cases live: this module reads files (case 1, with the weights and
wire-format scan in ``onnx_weights``) and holds the public API;
``onnx_importer`` turns a ``ModelProto`` into the IR (cases 2-4, 6-10);
``onnx_rewrites`` upgrades old op versions (case 5).

The frontend never writes files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from accelopt.errors import FrontendError
from accelopt.frontends.onnx_importer import MAX_OPSET, MIN_OPSET, Importer
from accelopt.frontends.onnx_weights import (
    Payload,
    ScanError,
    external_payloads,
    external_tensors,
    strip_inline_weights,
)
from accelopt.ir.graph import Graph
from accelopt.model import Model

__all__ = ["MAX_OPSET", "MIN_OPSET", "MODEL_FILE_CANDIDATES", "import_onnx_model", "load_onnx"]

log = logging.getLogger(__name__)

#: file names looked for inside a directory (case 1)
MODEL_FILE_CANDIDATES = ("model.onnx", "onnx/model.onnx")


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
    graph = Importer(model, source, payloads).run()
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


def _read_model(file: Path) -> tuple[onnx.ModelProto, dict[str, Payload]]:
    """The file's ``ModelProto`` without its large weights, and where to read them (case 1)."""
    model: onnx.ModelProto | None = None
    payloads: dict[str, Payload] = {}
    try:
        stripped, inline = strip_inline_weights(file)  # 1b
    except ScanError as e:  # 1c
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
    for t, _ in external_tensors(model):
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        if not loc or not (file.parent / loc).is_file():
            missing.append((t.name, loc))
    if missing:
        shown = ", ".join(f"{loc or '?'} (tensor {name})" for name, loc in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FrontendError(f"{file}: missing external data file(s) next to the model: {shown}{more}")
    payloads.update(external_payloads(model, file))  # 1a
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



def _check_is_model(model: onnx.ModelProto, source: str) -> None:
    if not model.HasField("graph") or model.ir_version == 0 or not model.opset_import:
        raise FrontendError(f"{source}: not an ONNX model (no graph, IR version or opset import)")


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

            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # a failure is raised and reported by the validation, not logged by ORT
            self._session = ort.InferenceSession(str(self.file), opts, providers=self.providers)
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

    def release(self) -> None:
        """Drop the session (and onnxruntime's copy of the weights); the next call makes a new one."""
        self._session = None


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
    return Importer(model, source).run()
