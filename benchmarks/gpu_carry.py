"""Prepare what one H100 run of ``benchmarks/gpu_h100.py`` carries (64 MiB at most): built here, no GPU needed.

    python -m benchmarks.gpu_carry --out gpu_carry                 # MiniLM + BERT-base, b1/8/32, s128
    python -m benchmarks.gpu_carry --out /tmp/c --models tiny      # the tiny BERT (tests, dry runs)

What travels (``gpu_carry/``)::

    manifest.json                  models, artifacts, sizes, how each was built
    runtime/                       the runtime bundle for this Python and 3.12 (the GPU machine's)
    <model>/<precision>/           model.so + metadata.json: one library with a function per batch
    <model>/derive.json            each artifact parameter as a derivation from the model's weights
    <model>/weights.npz            MiniLM: its weights, fp16, embedding rows the sentences use only
    <model>/recipe.json            BERT-base / tiny: seeded weights regenerated there (names, shapes)
    <model>/inputs.npz             the 32 built-in held-out sentences, tokenized, sequence 128
    <model>/reference.npz          onnxruntime fp32 on the same weights: last_hidden_state of
                                   sentences 0-7, mask-mean-pooled embeddings of all 32

Parameters do not travel as such (BERT-base's are 220-440 MB): the model's
ONNX weights are made fp16-exact first (MiniLM: its real weights rounded to
fp16; BERT-base: seeded normal weights rounded to fp16), the artifacts and
the reference are built from that model, and every parameter of every
artifact is matched here to the weights it came from: a copy (cast to the
parameter's dtype), a transpose, leading rows, or a concatenation (packed
QKV). ``gpu_h100.py`` rebuilds the parameters from those derivations. Rows
of the word embedding the sentences never read are zeros there: outputs on
the sentences are unchanged, and the timing does not depend on the values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.gpu_h100 import recipe_array  # noqa: E402 - one recipe for both sides

SEQ = 128
N_SENTENCES = 32
HIDDEN_ROWS = 8
CARRY_LIMIT = 64 * 2**20
#: float initializers this large are weights (seeded for BERT-base); smaller ones are the model's constants
#: (scales, epsilons), kept; the Relax lowering makes arrays of 64+ elements parameters
MIN_WEIGHT_NUMEL = 64
MODELS = {"minilm": "all-MiniLM-L6-v2 (real weights)", "bert-base": "BERT-base (seeded weights)", "tiny": "tiny BERT"}


# ------------------------------------------------------------------ weights
def _fp16_exact_model(src: Path, dst: Path, seed: int | None) -> dict[str, np.ndarray]:
    """Write ``src`` with fp16-exact float weights to ``dst`` (seeded ones when ``seed``); returns them.

    Small float constants keep their values (rounded to fp16 when in its range), so the model still
    computes what it did: only its weights change.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    weights = {}
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32:
            if seed is not None and a.size >= MIN_WEIGHT_NUMEL:
                a = recipe_array(seed, init.name, a.shape)
            elif np.all(np.abs(a) <= np.finfo(np.float16).max):
                a = a.astype(np.float16).astype(np.float32)
            # else: a constant beyond fp16's range (a mask filler such as finfo(float32).min) stays as it is
            init.CopyFrom(numpy_helper.from_array(a, init.name))
        weights[init.name] = a
    onnx.save(model, str(dst))
    return weights


def _key(a: np.ndarray) -> str:
    """Content key of an fp16-exact array (values beyond fp16's range all key as inf: such arrays are constants)."""
    with np.errstate(over="ignore"):
        b = a.astype(np.float16) if a.dtype.kind == "f" else a
    return hashlib.sha1(np.ascontiguousarray(b).tobytes()).hexdigest()


class Deriver:
    """Match artifact parameters to the weights they came from (module docstring)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.index: dict[tuple[tuple[int, ...], str], tuple[str, str]] = {}
        for name, w in weights.items():
            self.index.setdefault((w.shape, _key(w)), (name, "copy"))
            if w.ndim == 2:
                self.index.setdefault((w.T.shape, _key(w.T)), (name, "T"))

    def derive(self, p: np.ndarray) -> dict[str, Any] | None:
        hit = self.index.get((p.shape, _key(p)))
        if hit is not None:
            return {"op": hit[1], "of": hit[0]}
        flat = p.reshape(-1, p.shape[-1]) if p.ndim >= 2 else None
        if flat is not None:  # leading rows of a table (position embeddings), maybe with leading 1-dims
            for name, w in self.weights.items():
                if w.ndim == 2 and w.shape[1] == flat.shape[1] and w.shape[0] > flat.shape[0]:
                    if _key(w[: flat.shape[0]]) == _key(flat):
                        return {"op": "rows", "of": name, "n": flat.shape[0], "shape": list(p.shape)}
        if p.ndim >= 1 and p.shape[-1] % 3 == 0 and p.shape[-1] >= 3:  # packed Q, K, V
            parts = [self.derive(np.ascontiguousarray(x)) for x in np.split(p, 3, axis=-1)]
            if all(parts):
                return {"op": "concat", "parts": parts}
        return None


def derive_params(params: dict[str, np.ndarray], deriver: Deriver, extras: dict[str, np.ndarray]) -> dict[str, Any]:
    out = {}
    for name, p in params.items():
        d = deriver.derive(p)
        if d is None:
            if p.nbytes > 1 << 20:
                raise SystemExit(f"parameter {name} {p.shape} {p.dtype} matches no weight and is too large to carry")
            key = f"x{len(extras)}"
            extras[key] = p
            d = {"op": "raw", "of": key}
        d["dtype"] = str(p.dtype)
        out[name] = d
    return out


# ----------------------------------------------------------------- building
def _source(model: str) -> tuple[Path, int | None]:
    import modelzoo

    if model == "minilm":
        return modelzoo.minilm_onnx(), None
    size = "full" if model == "bert-base" else "tiny"
    return modelzoo.export_onnx("bert", exporter="legacy", opset=17, size=size), 0


def prepare_model(model: str, out: Path, batches: list[int], precisions: list[str], log: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    import accelopt as ao
    from accelopt.samples import default_samples

    src, seed = _source(model)
    d = out / model
    d.mkdir(parents=True)
    onnx_path = Path(tempfile.mkdtemp(prefix="gpu-carry-")) / "model.onnx"
    weights = _fp16_exact_model(src, onnx_path, seed)
    loaded = ao.load(str(onnx_path))
    samples = default_samples(loaded.graph, loaded.tokenizer, n=N_SENTENCES, seq_len=SEQ)
    inputs = {v.name: np.asarray(samples.arrays[v.name]) for v in loaded.graph.inputs}
    np.savez(d / "inputs.npz", **inputs)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    hidden = sess.run(None, inputs)[0].astype(np.float32)
    if not np.isfinite(hidden).all():
        raise SystemExit(f"{model}: the reference outputs are not finite with the fp16-exact weights")
    mask = inputs["attention_mask"].astype(np.float32)[..., None]
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    np.savez(d / "reference.npz", last_hidden_state=hidden[:HIDDEN_ROWS], pooled=pooled)
    deriver = Deriver(weights)
    extras: dict[str, np.ndarray] = {}
    derive: dict[str, Any] = {}
    actual: dict[str, dict[str, np.ndarray]] = {}
    artifacts = []
    for precision in precisions:
        passes = "cleanup,fuse,fp16" if precision == "fp16" else "cleanup,fuse"
        spec = f"gpu{{bundle=false,batch={batches[0]},batches={'+'.join(map(str, batches[1:]))}}}"
        if len(batches) == 1:
            spec = f"gpu{{bundle=false,batch={batches[0]}}}"
        t0 = time.perf_counter()
        res = ao.optimize(str(onnx_path), target=spec, passes=passes, seq_len=SEQ, validate=False)
        art = res.artifact
        pdir = d / precision
        pdir.mkdir()
        for f in ("model.so", "metadata.json"):
            shutil.copy2(art.directory / f, pdir / f)
        with np.load(art.directory / "params.npz") as params:
            actual[precision] = {k: params[k] for k in params.files}
        derive[precision] = derive_params(actual[precision], deriver, extras)
        secs = round(time.perf_counter() - t0, 1)
        log.append(f"{model} {precision}: built in {secs} s ({art.metadata['build_seconds']['total']} s in the target)")
        artifacts.append({"model": model, "precision": precision, "dir": f"{model}/{precision}", "seconds": secs,
                          "functions": [f["name"] for f in art.metadata["functions"]]})  # fmt: skip
    (d / "derive.json").write_text(json.dumps(derive))
    if extras:
        np.savez(d / "extras.npz", **extras)
    if seed is None:  # real weights travel (fp16), tables by the rows the sentences read
        ids = np.unique(inputs["input_ids"])
        store: dict[str, np.ndarray] = {}
        for name in _names(derive):
            w = weights[name]
            if w.ndim == 2 and w.shape[0] > 10000:
                store[f"{name}::rows"] = ids.astype(np.int64)
                store[f"{name}::shape"] = np.asarray(w.shape, np.int64)
                store[name] = w[ids].astype(np.float16)
            else:
                store[name] = w.astype(np.float16) if w.dtype == np.float32 else w
        np.savez_compressed(d / "weights.npz", **store)
    else:
        recipe = {"seed": seed, "weights": {n: list(weights[n].shape) for n in _names(derive)}}
        (d / "recipe.json").write_text(json.dumps(recipe))
    _check_rebuilt(d, derive, actual, log)
    return {"model": model, "description": MODELS[model], "artifacts": artifacts}


def _check_rebuilt(d: Path, derive: dict[str, Any], actual: dict[str, dict[str, np.ndarray]], log: list[str]) -> None:
    """Rebuild every parameter the way the GPU machine will (``gpu_h100.Weights``) and compare bit for bit.

    Tables carried by used rows only are compared on those rows (the others are zeros there).
    """
    from benchmarks.gpu_h100 import Weights

    w = Weights(d)
    for precision, params in actual.items():
        rebuilt = w.params(derive[precision])
        for name, want in params.items():
            got = rebuilt[name]
            if got.shape != want.shape or got.dtype != want.dtype:
                raise SystemExit(f"{d.name} {precision} {name}: rebuilt {got.shape} {got.dtype}, built {want.shape} {want.dtype}")
            same = got == want
            if not same.all():
                rows = ~same.reshape(same.shape[0], -1).all(1) if same.ndim >= 2 else None
                if rows is None or np.any(got[rows] != 0):
                    raise SystemExit(f"{d.name} {precision} {name}: the rebuilt parameter differs from the built one")
        log.append(f"{d.name} {precision}: {len(params)} parameters rebuilt bit for bit")


def _names(derive: dict[str, Any]) -> set[str]:
    out: set[str] = set()

    def walk(d: dict[str, Any]) -> None:
        if d["op"] == "concat":
            for p in d["parts"]:
                walk(p)
        elif d["op"] != "raw":
            out.add(d["of"])

    for per in derive.values():
        for d in per.values():
            walk(d)
    return out


def prepare(out: Path, models: list[str], batches: list[int], precisions: list[str]) -> dict[str, Any]:
    from accelopt.targets.gpu.bundle import write_bundle

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log: list[str] = []
    write_bundle(out / "runtime", pythons=["3.12"])
    entries = [prepare_model(m, out, batches, precisions, log) for m in models]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {"seq": SEQ, "sentences": N_SENTENCES, "batches": batches, "models": entries, "bytes": size,
                "log": log}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if size > CARRY_LIMIT:
        raise SystemExit(f"{out} holds {size / 2**20:.1f} MiB, over the 64 MiB a device run carries")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_carry")
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--precisions", default="fp32,fp16")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    m = prepare(a.out, models, [int(b) for b in a.batches.split(",")], a.precisions.split(","))
    print(f"{a.out}: {m['bytes'] / 2**20:.1f} MiB; " + "; ".join(m["log"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
