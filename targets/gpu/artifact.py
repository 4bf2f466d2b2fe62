"""``GpuArtifact``: the compiled CUDA library, its parameters, metadata and (by default) the runtime bundle.

On disk::

    metadata.json   format accelopt-gpu-artifact, arch, functions (one per batch/sequence binding:
                    inputs, outputs, parameter order), machine code entries, the schedule rule per
                    kernel, build times, versions, notes
    model.so        the library: host code + the kernels' sm_90 machine code (no CUDA source)
    params.npz      the parameters (weights), outside the library
    runtime/        the runtime bundle (``bundle.py``), unless built with ``bundle=false``

``run`` goes through ``runtime.py`` (TVM's runtime only): on a machine
without a usable GPU it raises ``TargetError`` ("no CUDA GPU found ...");
``cannot_run_here`` says so without raising (``optimize`` then skips the
final run of the artifact and notes why). A batch no function was compiled
for runs in chunks of the largest compiled batch that fits, the last chunk zero-padded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets.base import Artifact, register_artifact
from accelopt.targets.gpu import runtime

BUNDLE_DIR = "runtime"


class GpuArtifact(Artifact):
    """A CUDA library built here; runs where a GPU of its arch is."""

    files = (runtime.METADATA, "model.so", "params.npz", BUNDLE_DIR)

    def __init__(self, directory: Path, metadata: Mapping[str, Any], graph: Graph | None = None) -> None:
        super().__init__("gpu", graph, metadata=metadata)
        self.directory = Path(directory)
        self._model: runtime.Model | None = None

    # ------------------------------------------------------------ on disk
    def save(self, directory: str | Path) -> list[Path]:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in (runtime.METADATA, self.metadata["library"], self.metadata["params_file"]):
            shutil.copy2(self.directory / name, out / name)
            written.append(out / name)
        if (self.directory / BUNDLE_DIR).is_dir():
            if (out / BUNDLE_DIR).exists():
                shutil.rmtree(out / BUNDLE_DIR)
            shutil.copytree(self.directory / BUNDLE_DIR, out / BUNDLE_DIR)
            written.append(out / BUNDLE_DIR)
        return written

    @classmethod
    def load(cls, directory: str | Path) -> GpuArtifact:
        d = Path(directory)
        meta = runtime.read_metadata(d)
        for name in (meta["library"], meta["params_file"]):
            if not (d / name).is_file():
                raise TargetError(f"{d}: the gpu artifact lacks {name}")
        return cls(d, meta)

    # ------------------------------------------------------------- running
    def cannot_run_here(self) -> str | None:
        """Why this machine cannot run the artifact (no GPU, an older one), or None when it can."""
        try:
            runtime.check_gpu(str(self.metadata["arch"]))
        except runtime.NoGpuError as e:
            return str(e)
        return None

    def model(self) -> runtime.Model:
        if self._model is None:
            bundle = self.directory / BUNDLE_DIR
            self._model = runtime.load(self.directory, bundle=bundle if bundle.is_dir() else None)
        return self._model

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self.model()
        fn = model.functions[self.metadata["functions"][0]["name"]]
        arrays = {i["name"]: np.asarray(inputs[i["name"]]) for i in fn["inputs"] if i["name"] in inputs}
        missing = [i["name"] for i in fn["inputs"] if i["name"] not in arrays]
        if missing:
            raise TargetError(f"gpu artifact: missing input(s) {', '.join(missing)}")
        n = int(next(iter(arrays.values())).shape[0])
        batches = sorted({int(f["batch"]) for f in model.functions.values()})
        if n in batches:
            return model.run(arrays)
        batch = max((b for b in batches if b <= n), default=batches[0])  # the largest that fits, else pad
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, batch):
            chunk = {}
            for k, a in arrays.items():
                c = a[start : start + batch]
                if c.shape[0] < batch:
                    c = np.concatenate([c, np.zeros((batch - c.shape[0], *c.shape[1:]), c.dtype)])
                chunk[k] = c
            parts.append(model.run(chunk))
        return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}

    def __repr__(self) -> str:
        return f"<GpuArtifact {self.metadata.get('arch')} {self.directory}>"


def write_metadata(directory: Path, metadata: Mapping[str, Any]) -> None:
    (directory / runtime.METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")


register_artifact(runtime.FORMAT, GpuArtifact)
