"""``TpuArtifact``: the exported programs (one per sequence bucket), their weights and metadata.

On disk (``save`` / ``load``)::

    metadata.json                      policy, chip, buckets, inputs/outputs, estimates, notes
    params.bin                         the weights (prepared: [K, N], padded, bf16/int8), 64-byte aligned
    model.<bucket>.jaxexport           jax.export serialized bytes (runs on a TPU VM and on CPU XLA)
    model.<bucket>.stablehlo.mlir      the same program as StableHLO text

Cases handled by ``run``:

1. Inputs are converted to the export's types (int64 -> int32, checked to fit).
2. The bucket whose sequence length equals the input's is used; a shorter
   input is padded (zeros) to the next bucket if the graph has an attention
   mask input to hide the padding; otherwise ``TargetError`` lists the buckets.
3. A batch smaller than the export's is padded with zero rows; a larger one
   runs in chunks; outputs are sliced back and cast to the IR's types.
4. An artifact exported without a platform this machine's JAX backend runs
   (e.g. ``platforms=("tpu",)`` here) raises ``TargetError`` on ``load``
   (``check_platform=False`` loads it for inspection only) and on ``run``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets import buckets as bk
from accelopt.targets.base import BucketedArtifact, register_artifact
from accelopt.targets.params_io import read_params, write_params
from accelopt.targets.tpu.export import deserialize, serialize

log = logging.getLogger(__name__)

FORMAT = "accelopt-tpu-artifact"
VERSION = 1

class TpuArtifact(BucketedArtifact):
    """Exported programs + weights + metadata; ``run`` executes them on this machine's XLA (CPU here)."""

    files = ("metadata.json", "params.bin", "model.<bucket>.jaxexport", "model.<bucket>.stablehlo.mlir")

    def __init__(
        self,
        *,
        metadata: dict[str, Any],
        exports: Mapping[str, Any],
        params: Mapping[str, np.ndarray],
        stablehlo: Mapping[str, str] | None = None,
        source: str = "<memory>",
        graph: Graph | None = None,
    ) -> None:
        super().__init__("tpu", graph, metadata=metadata)
        self.exports = dict(exports)
        self.params = dict(params)
        self._stablehlo = dict(stablehlo or {})
        self.source = source
        self._calls: dict[str, Any] = {}
        self._device_params: Any = None
        buckets = metadata.get("buckets", [])
        self.files = ("metadata.json", "params.bin", *(f for b in buckets for f in (b["file"], b["stablehlo_file"])))

    # ---------------------------------------------------------------- facts
    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.metadata["platforms"])

    @property
    def notes(self) -> list[str]:
        return list(self.metadata.get("notes", []))

    def stablehlo(self, bucket: str | None = None) -> str:
        """The StableHLO text of ``bucket`` (the first bucket by default)."""
        name = bucket or self.buckets[0]["name"]
        return self._stablehlo[name]

    def summary(self) -> list[str]:
        """Report lines: policy, weights, per-bucket export time and roofline estimate (labelled)."""
        m = self.metadata
        pol = m["policy"]
        lines = [
            f"TPU target: chip {m['chip']['name']}, precision {pol['precision']} (requested {pol['requested']}), "
            f"platforms {', '.join(self.platforms)}",
            f"weights: {m['weights']}, {self.parameter_bytes / 1e6:.1f} MB "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in m["parameters"]["by_dtype"].items()),
        ]
        for b in self.buckets:
            lines.append(
                f"bucket {b['name']}: export {b['export_seconds']:.2f} s; {b['roofline_summary']}"
                + (f"; StableHLO check: {len(b['stablehlo_check'])} problem(s)" if b["stablehlo_check"] else "")
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return lines

    # ------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> list[Path]:
        """Write the artifact files into ``directory`` (created if needed); returns their paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = json.loads(json.dumps(self.metadata))
        tensors = write_params(out / "params.bin", self.params)
        meta["parameters"]["file"] = "params.bin"
        meta["parameters"]["tensors"] = tensors
        written = [out / "params.bin"]
        for b in meta["buckets"]:
            name = b["name"]
            (out / b["file"]).write_bytes(serialize(self.exports[name]))
            (out / b["stablehlo_file"]).write_text(self._stablehlo[name])
            written += [out / b["file"], out / b["stablehlo_file"]]
        (out / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [out / "metadata.json", *written]

    @classmethod
    def load(cls, directory: str | Path, *, check_platform: bool = True) -> TpuArtifact:
        """Read an artifact written by ``save`` (case 4: refuses exports this backend cannot run)."""
        d = Path(directory)
        meta_path = d / "metadata.json"
        if not meta_path.is_file():
            raise TargetError(f"{d}: no metadata.json; not a TPU artifact directory")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise TargetError(f"{meta_path}: invalid JSON: {e}") from e
        if meta.get("format") != FORMAT:
            raise TargetError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != VERSION:
            raise TargetError(f"{meta_path}: artifact version {meta.get('version')}, this accelopt reads {VERSION}")
        if check_platform:
            _check_platform(tuple(meta["platforms"]), str(d))
        exports = {}
        stablehlo = {}
        for b in meta["buckets"]:
            path = d / b["file"]
            if not path.is_file():
                raise TargetError(f"{d}: missing {b['file']} for bucket {b['name']}")
            exports[b["name"]] = deserialize(path.read_bytes(), source=str(path))
            shlo = d / b["stablehlo_file"]
            stablehlo[b["name"]] = shlo.read_text() if shlo.is_file() else ""
        params = read_params(d / meta["parameters"].get("file", "params.bin"), meta["parameters"].get("tensors", []))
        return cls(metadata=meta, exports=exports, params=params, stablehlo=stablehlo, source=str(d))

    # ------------------------------------------------------------------- run
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute on this machine's XLA backend; outputs by name with the IR's dtypes (cases 1-3)."""
        _check_platform(self.platforms, self.source)
        bk.check_inputs(self.metadata, inputs, self.source)
        specs = self.metadata["inputs"]
        arrays = [bk.convert_input(s, inputs[s["name"]]) for s in specs]
        bucket, batch, sizes = bk.choose_bucket(self.metadata, arrays, self.source)
        export_batch = int(bucket["batch"])
        results: list[list[np.ndarray]] = []
        for start in range(0, max(batch, 1), export_batch):
            chunk = [bk.fit(self.metadata, s, a, bucket, start) for s, a in zip(specs, arrays)]
            outs = self._call(bucket["name"])(self._params_on_device(), *chunk)
            results.append([np.asarray(o) for o in outs])
        return {
            spec["name"]: bk.unfit(spec, [r[i] for r in results], batch, sizes)
            for i, spec in enumerate(self.metadata["outputs"])
        }

    def describe(self) -> dict[str, Any]:
        """The report's view: metadata without the per-tensor parameter index."""
        meta = json.loads(json.dumps(self.metadata))
        meta.get("parameters", {}).pop("tensors", None)
        return {"target": self.target, "files": list(self.files), "summary": self.summary(), **meta}

    # -------------------------------------------------------------- helpers
    def _params_on_device(self) -> Any:
        if self._device_params is None:
            self._device_params = jax.device_put(self.params) if self.metadata["weights"] == "arguments" else {}
        return self._device_params

    def _call(self, name: str) -> Any:
        fn = self._calls.get(name)
        if fn is None:
            fn = jax.jit(self.exports[name].call)
            self._calls[name] = fn
        return fn


def _check_platform(platforms: tuple[str, ...], source: str) -> None:
    backend = jax.default_backend()
    if backend not in platforms:
        raise TargetError(
            f"{source}: exported for platform(s) {', '.join(platforms)} only, but this machine's JAX backend is "
            f"{backend!r}; export with platforms=('tpu', '{backend}') to run it here "
            "(load with check_platform=False to inspect it)"
        )


register_artifact(FORMAT, TpuArtifact)
