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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph
from accelopt.targets.base import Artifact, register_artifact
from accelopt.targets.tpu.export import deserialize, serialize

log = logging.getLogger(__name__)

FORMAT = "accelopt-tpu-artifact"
VERSION = 1
_ALIGN = 64


def _dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _dtype_name(dt: np.dtype) -> str:
    return "bfloat16" if dt == np.dtype(ml_dtypes.bfloat16) else str(dt)


class TpuArtifact(Artifact):
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
    def buckets(self) -> list[dict[str, Any]]:
        return list(self.metadata["buckets"])

    @property
    def parameter_bytes(self) -> int:
        return int(self.metadata["parameters"]["bytes"])

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
        tensors = []
        offset = 0
        with open(out / "params.bin", "wb") as f:
            for key in sorted(self.params):
                arr = np.ascontiguousarray(self.params[key])
                pad = (-offset) % _ALIGN
                f.write(b"\0" * pad)
                offset += pad
                f.write(arr.tobytes())
                tensors.append(
                    {
                        "key": key,
                        "dtype": _dtype_name(arr.dtype),
                        "shape": list(arr.shape),
                        "offset": offset,
                        "nbytes": int(arr.nbytes),
                    }
                )
                offset += arr.nbytes
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
        params = _read_params(d / meta["parameters"].get("file", "params.bin"), meta["parameters"].get("tensors", []))
        return cls(metadata=meta, exports=exports, params=params, stablehlo=stablehlo, source=str(d))

    # ------------------------------------------------------------------- run
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute on this machine's XLA backend; outputs by name with the IR's dtypes (cases 1-3)."""
        _check_platform(self.platforms, self.source)
        specs = self.metadata["inputs"]
        missing = [s["name"] for s in specs if s["name"] not in inputs]
        if missing:
            raise TargetError(f"{self.source}: missing input(s) {', '.join(missing)}")
        arrays = [_convert_input(s, inputs[s["name"]]) for s in specs]
        bucket, batch, sizes = self._choose_bucket(arrays)
        export_batch = int(bucket["batch"])
        results: list[list[np.ndarray]] = []
        for start in range(0, max(batch, 1), export_batch):
            chunk = [self._fit(s, a, bucket, start, export_batch) for s, a in zip(specs, arrays)]
            outs = self._call(bucket["name"])(self._params_on_device(), *chunk)
            results.append([np.asarray(o) for o in outs])
        final: dict[str, np.ndarray] = {}
        for i, spec in enumerate(self.metadata["outputs"]):
            parts = [r[i] for r in results]
            final[spec["name"]] = self._unfit(spec, parts, batch, sizes, bucket)
        return final

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

    def _choose_bucket(self, arrays: Sequence[np.ndarray]) -> tuple[dict[str, Any], int, dict[str, int]]:
        """Case 2: the bucket for these inputs; returns it, the batch size and the bound symbol sizes."""
        specs = self.metadata["inputs"]
        sizes: dict[str, int] = {}
        batch_keys = set(self.metadata["batch"]["keys"])
        for s, a in zip(specs, arrays):
            if a.ndim != len(s["shape"]):
                raise TargetError(f"input {s['name']!r}: rank {a.ndim}, expected {len(s['shape'])} ({s['shape']})")
            for axis, key in enumerate(s["dim_keys"]):
                if key is None:
                    if a.shape[axis] != s["shape"][axis]:
                        raise TargetError(
                            f"input {s['name']!r}: dimension {axis} is {a.shape[axis]}, expected {s['shape'][axis]}"
                        )
                    continue
                if sizes.setdefault(key, a.shape[axis]) != a.shape[axis]:
                    raise TargetError(
                        f"input {s['name']!r}: dimension {axis} is {a.shape[axis]}, expected {sizes[key]}"
                    )
        batch = next((sizes[k] for k in batch_keys if k in sizes), int(self.metadata["batch"]["export"]))
        rest = {k: v for k, v in sizes.items() if k not in batch_keys}
        exact = [b for b in self.buckets if all(b["dims"].get(k) == v for k, v in rest.items())]
        if exact:
            return exact[0], batch, sizes
        seq_keys = set(self.metadata["seq"]["keys"])
        can_pad = bool(self.metadata["seq"].get("mask_inputs"))
        fits = [
            b
            for b in self.buckets
            if all(b["dims"].get(k) == v for k, v in rest.items() if k not in seq_keys)
            and all(b["dims"].get(k, -1) >= v for k, v in rest.items() if k in seq_keys)
        ]
        have = ", ".join(b["name"] for b in self.buckets)
        if fits and can_pad:
            return min(fits, key=lambda b: b["seq_len"]), batch, sizes
        why = "no bucket is long enough" if not fits else "the graph has no attention-mask input to hide padding"
        raise TargetError(f"{self.source}: no export for input sizes {rest} ({why}); buckets: {have}")

    def _fit(
        self, spec: dict[str, Any], a: np.ndarray, bucket: dict[str, Any], start: int, export_batch: int
    ) -> np.ndarray:
        """Cases 2-3: slice this batch chunk and zero-pad batch and sequence dims to the bucket's sizes."""
        batch_keys = set(self.metadata["batch"]["keys"])
        index = []
        widths = []
        for axis, key in enumerate(spec["dim_keys"]):
            if key is not None and key in batch_keys:
                part = slice(start, start + export_batch)
                n = len(range(a.shape[axis])[part])
                index.append(part)
                widths.append((0, export_batch - n))
            elif key is not None:
                index.append(slice(None))
                widths.append((0, int(bucket["dims"][key]) - a.shape[axis]))
            else:
                index.append(slice(None))
                widths.append((0, 0))
        a = a[tuple(index)]
        if any(w[1] for w in widths):
            a = np.pad(a, widths)
        return a

    def _unfit(
        self, spec: dict[str, Any], parts: list[np.ndarray], batch: int, sizes: dict[str, int], bucket: dict[str, Any]
    ) -> np.ndarray:
        roles = spec["dim_roles"]
        batch_axis = roles.index("batch") if "batch" in roles else None
        if batch_axis is not None:
            out = np.concatenate(parts, axis=batch_axis) if len(parts) > 1 else parts[0]
        else:
            out = parts[0]
        index = []
        for axis, role in enumerate(roles):
            if role == "batch":
                index.append(slice(0, batch))
            elif role is not None and role.startswith("seq:"):
                index.append(slice(0, sizes.get(role[4:], out.shape[axis])))
            else:
                index.append(slice(None))
        out = out[tuple(index)]
        want = _dtype(spec["dtype"])
        return out.astype(want) if out.dtype != want else out


def _check_platform(platforms: tuple[str, ...], source: str) -> None:
    backend = jax.default_backend()
    if backend not in platforms:
        raise TargetError(
            f"{source}: exported for platform(s) {', '.join(platforms)} only, but this machine's JAX backend is "
            f"{backend!r}; export with platforms=('tpu', '{backend}') to run it here "
            "(load with check_platform=False to inspect it)"
        )


def _convert_input(spec: dict[str, Any], value: Any) -> np.ndarray:
    """Case 1: the array in the export's dtype; integers must fit."""
    a = np.asarray(value)
    want = _dtype(spec["export_dtype"])
    if a.dtype == want:
        return a
    if a.dtype.kind in "iub" and want.kind in "iu":
        info = np.iinfo(want)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise TargetError(f"input {spec['name']!r}: values outside the {want} range of the export")
        return a.astype(want)
    if a.dtype.kind in "fiub" and (want.kind == "f" or want == _dtype("bfloat16")):
        return a.astype(want)
    if want.kind == "b":
        return a.astype(bool)
    raise TargetError(f"input {spec['name']!r}: got {a.dtype}, expected {spec['dtype']}")


def _read_params(path: Path, tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    if not tensors:
        return {}
    if not path.is_file():
        raise TargetError(f"{path}: missing parameter file")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for t in tensors:
        end = t["offset"] + t["nbytes"]
        if end > data.size:
            raise TargetError(f"{path}: truncated (tensor {t['key']} ends at byte {end}, file has {data.size})")
        raw = np.asarray(data[t["offset"] : end])
        out[t["key"]] = raw.view(_dtype(t["dtype"])).reshape(t["shape"])
    return out


register_artifact(FORMAT, TpuArtifact)
