"""The ``onnx`` target: the optimized graph written back to ONNX, run by ONNX Runtime.

``lower`` converts the graph with ``accelopt.targets.onnx_writer.write_onnx``
(fused ops become ONNX Runtime contrib ops where it has them; the writer runs
``onnx.checker`` on the result). The artifact:

1. ``save(dir)`` writes ``dir/model.onnx`` (tensors over 2 GiB in total go to
   ``model.onnx.data`` next to it, as ONNX external data);
   1a a graph whose initializers hold ``DETACH_BYTES`` (256 MiB) or more is
      lowered with those of at least 1 KiB *detached*
      (``onnx_writer.write_onnx_detached``): ``proto`` refers to them as external
      data and the artifact keeps the graph's arrays, uncopied; ``save``
      streams them into ``model.onnx.data`` (each tensor 4 KiB-aligned);
2. ``run(inputs)`` runs it in ONNX Runtime on the CPU (one session, created on
   first use; a detached artifact shares its arrays with onnxruntime, uncopied,
   until it is saved: ``DetachedWeights.session``); inputs are cast to the
   model's input types;
3. ``OnnxArtifact.load(dir)`` reads a saved ``model.onnx`` back; ``save`` also
   writes ``metadata.json`` (format, inputs, outputs), which
   ``accelopt.Artifact.load`` dispatches on (a folder with only ``model.onnx``,
   written before, loads too).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets.base import METADATA_FILE, Artifact, Capabilities, Target, register_artifact, register_target
from accelopt.targets.onnx_external import DetachedWeights

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
FORMAT = "accelopt-onnx-artifact"
EXTERNAL_DATA_FILE = "model.onnx.data"
#: protobuf's hard limit; larger models keep their tensors in external data
PROTO_LIMIT = 2**31 - 1
#: graphs with at least this many bytes of initializers are lowered with detached weights (case 1a)
DETACH_BYTES = 256 << 20
#: the smallest initializer detached (case 1a)
DETACH_TENSOR_BYTES = 1024

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxArtifact(Artifact):
    """An ONNX model (``onnx.ModelProto``) with an ONNX Runtime session for ``run``."""

    files = (MODEL_FILE, METADATA_FILE)

    def __init__(
        self,
        proto: Any,
        graph: Graph | None = None,
        *,
        path: Path | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        metadata: Mapping[str, Any] | None = None,
        weights: DetachedWeights | None = None,
    ) -> None:
        super().__init__("onnx", graph, metadata=metadata)
        self.proto = proto
        self.weights = weights
        self.path = path
        self.providers = list(providers)
        self._session: Any = None

    # --------------------------------------------------------------- files
    def save(self, directory: str | Path) -> list[Path]:
        import onnx

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / MODEL_FILE
        files = [path]
        try:
            if self.weights is not None:  # case 1a
                path.write_bytes(self.proto.SerializeToString())
                self.weights.write(d / self.weights.location)
                files.append(d / self.weights.location)
            else:
                external = self.proto.ByteSize() > PROTO_LIMIT
                onnx.save_model(
                    self.proto,
                    str(path),
                    save_as_external_data=external,
                    all_tensors_to_one_file=True,
                    location=EXTERNAL_DATA_FILE,
                )
                if external:
                    files.append(d / EXTERNAL_DATA_FILE)
        except (OSError, ValueError) as e:
            raise TargetError(f"cannot write {path}: {e}") from e
        self.path = path
        meta_path = d / METADATA_FILE
        meta_path.write_text(json.dumps(self._metadata_json(), indent=2, sort_keys=True) + "\n")
        return [*files, meta_path]

    def _metadata_json(self) -> dict[str, Any]:
        """What metadata.json says: the format ``Artifact.load`` dispatches on, and the model's inputs/outputs."""

        def spec(v: Any) -> dict[str, Any]:
            return {"name": v.name, "dtype": str(v.dtype), "shape": list(v.shape) if v.shape is not None else None}

        g = self.graph
        return {
            "format": FORMAT,
            "version": 1,
            "target": "onnx",
            "model": MODEL_FILE,
            "inputs": [spec(v) for v in g.inputs] if g is not None else [],
            "outputs": [spec(v) for v in g.outputs] if g is not None else [],
        }

    @classmethod
    def load(cls, directory: str | Path) -> OnnxArtifact:
        import onnx

        p = Path(directory)
        path = p / MODEL_FILE if p.is_dir() else p
        if not path.is_file():
            raise TargetError(f"no {MODEL_FILE} in {str(directory)!r}")
        try:
            proto = onnx.load_model(str(path))
        except Exception as e:
            raise TargetError(f"cannot read {path}: {e}") from e
        meta_path = path.parent / METADATA_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(proto, path=path, metadata=meta if isinstance(meta, dict) else {})

    # ----------------------------------------------------------------- run
    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # failures are raised as TargetError with ORT's message
            try:
                if self.path is not None and self.path.is_file():
                    self._session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
                elif self.weights is not None:
                    self._session = self.weights.session(self.proto, opts, self.providers)
                else:
                    self._session = ort.InferenceSession(self.proto.SerializeToString(), opts, providers=self.providers)
            except Exception as e:
                raise TargetError(f"onnxruntime cannot load the written model: {e}") from e
        return self._session

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.session()
        feed = {}
        for i in sess.get_inputs():
            if i.name not in inputs:
                raise TargetError(f"missing input {i.name!r}; the model takes {[x.name for x in sess.get_inputs()]}")
            arr = np.asarray(inputs[i.name])
            want = _ORT_TYPES.get(i.type)
            feed[i.name] = arr.astype(want, copy=False) if want is not None else arr
        try:
            outs = sess.run(None, feed)
        except Exception as e:
            raise TargetError(f"onnxruntime failed to run the model: {e}") from e
        return {o.name: np.asarray(v) for o, v in zip(sess.get_outputs(), outs)}


register_artifact(FORMAT, OnnxArtifact)


@register_target
class OnnxTarget(Target):
    """ONNX written back for ONNX Runtime."""

    name = "onnx"
    summary = "ONNX written back for ONNX Runtime (fused ops as contrib ops); writes model.onnx"
    default_passes = "cleanup,fuse"
    capabilities = Capabilities(
        name="onnx",
        description="ONNX Runtime CPU execution provider",
        dtypes=("float32", "float16", "int8", "uint8", "int32", "int64", "bool"),
        quantization={"weights": "per-channel-symmetric", "activations": "asymmetric"},
    )

    def lower(self, graph: Graph, *, model: Any = None, samples: Any = None) -> OnnxArtifact:
        """Write ``graph`` as an ONNX model; ``TargetError`` when an op has no ONNX form or the checker rejects it."""
        from accelopt.errors import AccelOptError

        try:
            from accelopt.targets.onnx_writer import write_onnx, write_onnx_detached
        except ImportError as e:
            raise TargetError(f"the ONNX writer is not available: {e}") from e
        weights = None
        try:
            if sum(int(v.const.nbytes) for v in graph.initializers.values() if v.const is not None) >= DETACH_BYTES:
                proto, weights = write_onnx_detached(graph, threshold=DETACH_TENSOR_BYTES, location=EXTERNAL_DATA_FILE)
            else:
                proto = write_onnx(graph)
        except AccelOptError:
            raise
        except Exception as e:
            raise TargetError(f"cannot write graph {graph.name!r} as ONNX: {type(e).__name__}: {e}") from e
        opsets = {i.domain or "ai.onnx": i.version for i in proto.opset_import}
        meta = {"opsets": opsets, "nodes": len(proto.graph.node), "batch": _batch_info(graph, self.requested_batch)}
        return OnnxArtifact(proto, graph, metadata=meta, weights=weights)


def _batch_info(graph: Graph, requested: int) -> dict[str, Any]:
    """What ``--batch`` means for the written model: dim 0 of the inputs stays symbolic (any batch runs),
    or is static (only that batch runs)."""
    dims = {v.shape[0] for v in graph.inputs if v.shape}
    static = sorted(d for d in dims if isinstance(d, int))
    if not static:
        keys = sorted(str(d) for d in dims if isinstance(d, str))
        return {"requested": requested, "export": "any", "keys": keys, "padded": False}
    info: dict[str, Any] = {"requested": requested, "export": static[0], "keys": [], "padded": False}
    if requested != static[0]:
        info["note"] = f"the model's inputs have a static batch of {static[0]}; --batch {requested} is not applied"
    return info
