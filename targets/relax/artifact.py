"""``RelaxArtifact``: a compiled Relax VM library, its parameters and metadata (base of the cpu and gpu artifacts).

On disk (``save`` / ``load``)::

    metadata.json   format, target, inputs/outputs, sequence buckets (one VM function each), the
                    parameter index, versions, notes (and what the target adds: CPU features...)
    model.so        the compiled library (``export_library``): every bucket's function and kernels
    params.bin      the parameters (weights), outside the library, 64-byte aligned

``run(inputs)`` takes numpy arrays by graph input name (dtypes converted at
the boundary: integers checked to fit), picks the bucket for their sizes
(a shorter sequence is padded when the graph has a mask input; a batch
different from the compiled one is padded or run in chunks:
``accelopt.targets.buckets``), calls the VM function with the inputs (handed
over without a copy when they are aligned: ``device_tensor``) and the
parameters (moved to the device once), and returns numpy outputs by name in
the IR's dtypes.

Subclasses set ``target_name`` / ``format`` and may override ``device()``,
``check_host()`` (called by ``load`` and ``run``: e.g. CPU features) and
``prepare()`` (called before the first run: e.g. the thread pool).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets import buckets as bk
from accelopt.targets.base import BucketedArtifact
from accelopt.targets.params_io import read_params, write_params
from accelopt.targets.relax.native_stderr import native_stderr_to_log

log = logging.getLogger(__name__)

LIBRARY = "model.so"
PARAMS = "params.bin"
METADATA = "metadata.json"


class RelaxArtifact(BucketedArtifact):
    """A Relax VM executable with its parameters; runnable here when its device exists."""

    target_name: ClassVar[str] = "relax"
    format: ClassVar[str] = "accelopt-relax-artifact"
    version: ClassVar[int] = 1
    files = (METADATA, LIBRARY, PARAMS)

    def __init__(
        self,
        *,
        metadata: dict[str, Any],
        library: Any,
        params: Mapping[str, np.ndarray],
        source: str = "<memory>",
        graph: Graph | None = None,
    ) -> None:
        super().__init__(self.target_name, graph, metadata=metadata)
        self.library = library
        self.params = dict(params)
        self.source = source
        self._vm: Any = None
        self._device_params: dict[str, Any] = {}

    # ------------------------------------------------------------ hooks
    def device(self) -> Any:
        return tvm.cpu(0)

    def check_host(self) -> None:
        """Raise ``TargetError`` when this machine cannot run the library."""

    def prepare(self) -> None:
        """Called once before the first run."""

    # ------------------------------------------------------------ facts
    def input_specs(self) -> list[dict[str, Any]]:
        return list(self.metadata["inputs"])

    # ------------------------------------------------------------ save/load
    def save(self, directory: str | Path) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = json.loads(json.dumps(self.metadata))
        order = [n for b in meta["buckets"] for n in b["params"]]
        arrays = {k: self.params[k] for k in dict.fromkeys(order)}
        meta["parameters"]["file"] = PARAMS
        meta["parameters"]["tensors"] = write_params(out / PARAMS, arrays, sort=False)
        with native_stderr_to_log("export_library"):
            self.library.export_library(str(out / LIBRARY))
        (out / METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [out / METADATA, out / LIBRARY, out / PARAMS]

    @classmethod
    def load(cls, directory: str | Path) -> RelaxArtifact:
        d = Path(directory)
        meta = read_metadata(d)
        if meta.get("format") != cls.format:
            raise TargetError(f"{d / METADATA}: format {meta.get('format')!r}, expected {cls.format!r}")
        if meta.get("version") != cls.version:
            raise TargetError(f"{d / METADATA}: artifact version {meta.get('version')}, this accelopt reads {cls.version}")
        lib_path = d / LIBRARY
        if not lib_path.is_file():
            raise TargetError(f"{d}: missing {LIBRARY}")
        art = cls(metadata=meta, library=None, params={}, source=str(d))
        art.check_host()
        try:
            with native_stderr_to_log("load_module"):
                art.library = tvm.runtime.load_module(str(lib_path))
        except Exception as e:
            raise TargetError(f"{lib_path}: cannot load the compiled library: {e}") from e
        par = meta["parameters"]
        art.params = read_params(d / par.get("file", PARAMS), par.get("tensors", []))
        return art

    # ------------------------------------------------------------------ run
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_host()
        bk.check_inputs(self.metadata, inputs, self.source)
        specs = self.metadata["inputs"]
        arrays = [bk.convert_input(s, inputs[s["name"]]) for s in specs]
        bucket, batch, sizes = bk.choose_bucket(self.metadata, arrays, self.source)
        export_batch = int(bucket["batch"])
        fn, params = self._function(bucket)
        dev = self.device()
        results: list[list[np.ndarray]] = []
        for start in range(0, max(batch, 1), export_batch):
            chunk = [device_tensor(bk.fit(self.metadata, s, a, bucket, start), dev) for s, a in zip(specs, arrays)]
            outs = fn(*chunk, *params)
            results.append([o.numpy() for o in outs])
        return {
            spec["name"]: bk.unfit(spec, [r[i] for r in results], batch, sizes)
            for i, spec in enumerate(self.metadata["outputs"])
        }

    def _function(self, bucket: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        """The VM function of ``bucket`` and its parameters on the device (both created once)."""
        if self._vm is None:
            self.prepare()
            with native_stderr_to_log("VirtualMachine"):
                self._vm = relax.VirtualMachine(self.library, self.device())
        name = bucket["function"]
        if name not in self._device_params:
            dev = self.device()
            self._device_params[name] = [tvm.runtime.tensor(np.ascontiguousarray(self.params[k]), dev) for k in bucket["params"]]
        return self._vm[name], self._device_params[name]

    def describe(self) -> dict[str, Any]:
        """The report's view: metadata without the per-tensor parameter index."""
        meta = json.loads(json.dumps(self.metadata))
        meta.get("parameters", {}).pop("tensors", None)
        for b in meta.get("buckets", []):
            b.pop("params", None)
        return {"target": self.target, "files": list(self.files), **meta}


#: the compiled kernels assume buffers aligned to this many bytes (TVM's kAllocAlignment)
ALIGN = 64


def device_tensor(a: np.ndarray, dev: Any) -> Any:
    """``a`` as a TVM tensor on ``dev``: on the CPU without a copy when it is contiguous and 64-byte aligned
    (else one copy into an aligned buffer), through DLPack, which keeps the array alive; elsewhere a copy."""
    a = np.ascontiguousarray(a)
    if dev.dlpack_device_type() != tvm.cpu(0).dlpack_device_type() or a.dtype == np.bool_ or a.dtype.kind not in "iuf":
        return tvm.runtime.tensor(a, dev)
    if a.size and a.ctypes.data % ALIGN:
        buf = np.empty(a.nbytes + ALIGN, np.uint8)
        off = (-buf.ctypes.data) % ALIGN
        aligned = buf[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
        np.copyto(aligned, a)
        a = aligned
    return tvm_ffi.from_dlpack(a)


def read_metadata(d: Path) -> dict[str, Any]:
    """``d/metadata.json`` parsed (``TargetError`` when missing or invalid)."""
    path = d / METADATA
    if not path.is_file():
        raise TargetError(f"{d}: no {METADATA}; not an artifact folder written by accelopt")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TargetError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise TargetError(f"{path}: expected a JSON object")
    return meta

