"""The gpu target on an H100: accuracy and latency of the carried artifacts against torch on the same GPU.

Runs on the GPU machine from the repository root with what ``benchmarks/gpu_carry.py``
prepared (no TVM, no accelopt there: numpy, torch and the carried runtime bundle)::

    python3 benchmarks/gpu_h100.py --carry gpu_carry --out $OUT            # on the GPU machine
    python benchmarks/gpu_h100.py --carry gpu_carry --out /tmp/r --dry-run  # here: everything but the GPU

For each model (all-MiniLM-L6-v2, BERT-base), precision (fp32, fp16) and
batch (1, 8, 32) at sequence 128:

1. parameters rebuilt from the carried derivations (``gpu_carry.py``);
2. the artifact loaded with the bundle's runtime (TVM runtime only) on GPU 0;
3. accuracy on the built-in sentences against onnxruntime fp32 on the same
   weights (computed when the carry was prepared): max abs of
   ``last_hidden_state`` (sentences 0-7) and the worst cosine of the
   mask-mean-pooled embeddings (all 32; batch b covers sentences 0..b-1);
   the issue's bars: fp32 max abs <= 1e-3, fp16 worst cosine >= 0.999;
4. latency: median of ``--repeat`` runs (host clock around run + device
   synchronize, inputs already on the GPU, CUDA graphs as built) after
   ``--warmup``; torch eager fp16 and ``torch.compile`` fp16 of the same
   architecture (Hugging Face ``BertModel``, weights irrelevant to timing) on
   the same GPU in the same process, timed the same way.

Results: ``OUT/gpu_h100.json`` (and a table on stdout); ``bench_gpu.py``
turns a copy under ``benchmarks/results/`` into BENCHMARKS.md. ``--dry-run``
does steps 1 and 3's bookkeeping, loads the bundle, expects the runtime's
"no CUDA GPU found" error instead of step 2, and builds the torch models on
the CPU without timing them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {  # Hugging Face BertConfig fields of the carried models
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base": {},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 1000},  # fmt: skip
}


def recipe_array(seed: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """BERT-base's seeded weights, fp16-exact (numpy only: ``gpu_carry.py`` builds the carried artifacts with them)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if len(shape) == 1 and ("LayerNorm.weight" in name or "layer_norm.weight" in name):
        a += np.float32(1.0)
    return a.astype(np.float16).astype(np.float32)


# ------------------------------------------------------------ parameters
class Weights:
    """The model's weights: carried (MiniLM, fp16, tables by used rows) or regenerated (seeded recipe)."""

    def __init__(self, d: Path) -> None:
        self.cache: dict[str, np.ndarray] = {}
        self.recipe = json.loads((d / "recipe.json").read_text()) if (d / "recipe.json").is_file() else None
        self.store = np.load(d / "weights.npz") if (d / "weights.npz").is_file() else None
        self.extras = np.load(d / "extras.npz") if (d / "extras.npz").is_file() else None

    def get(self, name: str) -> np.ndarray:
        if name not in self.cache:
            if self.recipe is not None:
                a = recipe_array(self.recipe["seed"], name, tuple(self.recipe["weights"][name]))
            else:
                assert self.store is not None
                a = self.store[name].astype(np.float32) if self.store[name].dtype == np.float16 else self.store[name]
                if f"{name}::rows" in self.store.files:
                    full = np.zeros(tuple(self.store[f"{name}::shape"]), np.float32)
                    full[self.store[f"{name}::rows"]] = a
                    a = full
            self.cache[name] = a
        return self.cache[name]

    def build(self, d: dict[str, Any]) -> np.ndarray:
        op = d["op"]
        if op == "raw":
            assert self.extras is not None
            return np.asarray(self.extras[d["of"]])
        if op == "concat":
            return np.concatenate([self.build(p) for p in d["parts"]], axis=-1)
        w = self.get(d["of"])
        if op == "T":
            w = np.ascontiguousarray(w.T)
        elif op == "rows":
            w = w[: d["n"]].reshape(d["shape"])
        return w

    def params(self, derive: dict[str, Any]) -> dict[str, np.ndarray]:
        return {n: np.ascontiguousarray(self.build(d).astype(d["dtype"])) for n, d in derive.items()}


# --------------------------------------------------------------- timing
def median_ms(fn: Any, sync: Any, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)[..., None]
    return (hidden.astype(np.float32) * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float((num / np.maximum(den, 1e-30)).min())


# ------------------------------------------------------------ the models
def run_artifact(rt: Any, carry: Path, model: str, precision: str, weights: Weights, args: Any) -> list[dict[str, Any]]:
    d = carry / model
    art = d / precision
    derive = json.loads((d / "derive.json").read_text())[precision]
    params = weights.params(derive)
    meta = json.loads((art / "metadata.json").read_text())
    expected = {p for f in meta["functions"] for p in f["params"]}
    missing = sorted(expected - set(params))
    if missing:
        raise SystemExit(f"{art}: parameters not rebuilt: {missing[:5]}")
    inputs = dict(np.load(d / "inputs.npz"))
    ref = dict(np.load(d / "reference.npz"))
    rows = []
    if args.dry_run:
        try:
            rt.load(art, bundle=carry / "runtime", params=params)
        except rt.NoGpuError as e:
            print(f"[dry-run] {model} {precision}: {len(params)} parameters rebuilt; load stops as expected: {e}")
            return [{"model": model, "precision": precision, "batch": f["batch"], "dry_run": True}
                    for f in meta["functions"]]  # fmt: skip
        raise SystemExit("--dry-run on a machine with a GPU: run without --dry-run")
    m = rt.load(art, bundle=carry / "runtime", params=params)
    for f in meta["functions"]:
        b = int(f["batch"])
        batch = {i["name"]: inputs[i["name"]][:b].astype(i["dtype"]) for i in f["inputs"]}
        out = m.run(batch)
        hidden = out[f["outputs"][0]["name"]].astype(np.float32)
        n = min(b, ref["last_hidden_state"].shape[0])
        max_abs = float(np.abs(hidden[:n] - ref["last_hidden_state"][:n]).max())
        cos = worst_cosine(pooled(hidden, batch["attention_mask"]), ref["pooled"][:b])
        dev = [m.upload(batch[i["name"]]) for i in f["inputs"]]
        ms = median_ms(lambda f=f, dev=dev: m.call(f["name"], dev), m.sync, args.warmup, args.repeat)
        rows.append({"model": model, "precision": precision, "batch": b, "max_abs": max_abs, "worst_cosine": cos,
                     "ms": ms, "ok": bool(max_abs <= 1e-3) if precision == "fp32" else bool(cos >= 0.999)})  # fmt: skip
        print(f"{model} {precision} b{b}: {ms:.3f} ms, max abs {max_abs:.2e}, worst cosine {cos:.6f}", flush=True)
    return rows


def run_torch(model: str, batches: list[int], inputs: dict[str, np.ndarray], args: Any, deadline: float) -> list[dict]:
    try:
        import torch
        import transformers
    except ImportError as e:
        if args.dry_run:
            print(f"[dry-run] torch {model}: not importable here ({e}); the GPU machine has torch and transformers")
            return []
        raise
    config = transformers.BertConfig(**CONFIGS[model])
    torch.manual_seed(0)
    net = transformers.BertModel(config, add_pooling_layer=True).eval()
    if args.dry_run:
        print(f"[dry-run] torch {model}: {sum(p.numel() for p in net.parameters())} parameters, built on the CPU")
        return []
    net = net.half().cuda()
    rows = []
    compiled = torch.compile(net)
    for b in batches:
        feed = {k: torch.from_numpy(v[:b]).cuda() for k, v in inputs.items()}
        with torch.inference_mode():
            for label, fn in (("torch eager fp16", net), ("torch.compile fp16", compiled)):
                if label.startswith("torch.compile") and time.time() > deadline:
                    rows.append({"model": model, "runtime": label, "batch": b, "skipped": "time budget"})
                    continue
                t0 = time.perf_counter()
                ms = median_ms(lambda fn=fn, feed=feed: fn(**feed), torch.cuda.synchronize, args.warmup, args.repeat)
                rows.append({"model": model, "runtime": label, "batch": b, "ms": ms,
                             "first_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
                print(f"{model} {label} b{b}: {ms:.3f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--carry", type=Path, default=ROOT / "gpu_carry")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--budget-s", type=float, default=420, help="skip torch.compile runs once this much time passed")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    start = time.time()
    manifest = json.loads((args.carry / "manifest.json").read_text())
    sys.path.insert(0, str(args.carry / "runtime" / "python"))
    import accelopt_gpu_runtime as rt

    device: dict[str, Any] = {"python": platform.python_version()}
    if not args.dry_run:
        device.update(rt.check_gpu("sm_90"))
    results: dict[str, Any] = {"device": device, "manifest": manifest, "rows": [], "torch": []}
    for entry in manifest["models"]:
        model = entry["model"]
        weights = Weights(args.carry / model)
        for art in entry["artifacts"]:
            results["rows"] += run_artifact(rt, args.carry, model, art["precision"], weights, args)
        inputs = dict(np.load(args.carry / model / "inputs.npz"))
        results["torch"] += run_torch(model, manifest["batches"], inputs, args, start + args.budget_s)
    results["seconds"] = round(time.time() - start, 1)
    try:
        import torch

        results["device"]["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - the GPU machine has torch
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_h100.json").write_text(json.dumps(results, indent=2) + "\n")
    bad = [r for r in results["rows"] if r.get("ok") is False]
    print(f"wrote {args.out / 'gpu_h100.json'} in {results['seconds']} s; {len(bad)} accuracy failure(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
