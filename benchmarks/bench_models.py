"""Models table: every family of the seeded zoo (``tests/families.py``) on every path.

For each family (ELECTRA, XLM-RoBERTa, CamemBERT, MPNet, DeBERTa-v2, MobileBERT, ConvBERT, T5 encoder, GPT-2,
ViT, Funnel, a small CNN) and path (legacy ONNX export, dynamo ONNX export, torch.export through
``accelopt.load(module, example_inputs=...)``):

1. **import**: whether ``accelopt.load`` takes it (else the reason, shortened);
2. **attention fused / present**: ``Attention`` + ``MultiHeadAttention`` nodes after ``cleanup,fuse`` / the
   attention blocks of the imported graph (softmaxes whose probabilities feed ``MatMul(probs, V)``, and SDPA
   nodes), with the fused forms;
3. **near misses**: the candidates fuse-attention did not fuse and why (the first reason);
4. **fuse max abs**: ``optimize --target onnx --passes cleanup,fuse``, the final graph against the original
   model in its own runtime (onnxruntime or torch) on the validation inputs (32 seeded sequences of length 16,
   or seeded images);
5. **int8 worst cosine**: ``--passes cleanup,fuse,int8`` (dynamic per-row int8, per-channel weights,
   accuracy-aware fallback), the worst per-row cosine of the final graph against the original, and how many
   layers stayed int8;
6. **tpu**: ``--target tpu --passes cleanup,fuse``: lowered, exported with ``jax.export`` and the written
   artifact run on this CPU within the final tolerance ("ok"), else why not.

    python -m benchmarks.run models
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SEQ = 16
PATH_LABELS = {"legacy": "legacy ONNX", "dynamo": "dynamo ONNX", "torch": "torch.export"}


def _short(msg: str, limit: int = 110) -> str:
    msg = re.sub(r"\S*/(model\.onnx)", r"\1", msg)  # the cache folder says nothing
    msg = re.sub(r"\s+", " ", msg).strip().replace("|", "/")
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _attention_present(graph: Any) -> int:
    from accelopt.passes.fuse_attention_scores import is_attention

    return sum(1 for n in graph.nodes if is_attention(graph, n))


def _fused(graph: Any) -> tuple[int, str]:
    forms: dict[str, int] = {}
    for n in graph.nodes:
        if n.op in ("Attention", "MultiHeadAttention", "QAttention"):
            tag = "MHA" if n.op == "MultiHeadAttention" else "Attention"
            extra = [t for t, on in (("causal", int(n.attr("unidirectional", 0))),
                                     ("bias", len(n.inputs) > 4 and n.inputs[4] is not None)) if on]
            key = tag + (f" ({', '.join(extra)})" if extra else "")
            forms[key] = forms.get(key, 0) + 1
    return sum(forms.values()), ", ".join(f"{v} {k}" for k, v in sorted(forms.items()))


def _record(res: Any, name: str) -> Any:
    return next((p for p in res.records if p.name == name and not p.rolled_back), None)


def _attention_misses(res: Any) -> str:
    rec = _record(res, "fuse-attention") or next((p for p in res.records if p.name == "fuse-attention"), None)
    if rec is None or not rec.near_misses:
        return "none"
    m = re.search(r"stopped at (.*)$", rec.near_misses[0])
    stats = rec.stats.get("attention", {}) if isinstance(rec.stats, dict) else {}
    count = stats.get("near_misses", len(rec.near_misses))
    why = re.sub(r" in node \S+?:", ":", m.group(1) if m else rec.near_misses[0])  # the node names say little here
    return f"{count}: " + _short(why, 100)


def _int8_layers(res: Any) -> str:
    rec = next((p for p in res.records if p.name == "quantize-int8"), None)
    if rec is None:
        return "not run"
    if rec.rolled_back:
        return "rolled back"
    layers = rec.stats.get("layers", {}) if isinstance(rec.stats, dict) else {}
    total = int(layers.get("total", 0))
    return f"{int(layers.get('quantized', 0))}/{total} layers int8" if total else "no quantizable layer"


def _metric(res: Any, key: str) -> float | None:
    final = res.report.final
    return None if final is None else final.vs_reference.get(key)


def _fmt(x: float | None, kind: str) -> str:
    from accelopt.report import fmt_metric

    if x is None:
        return "-"
    return f"{x:.1e}" if kind == "abs" else fmt_metric(x)


def _row(family: str, path: str) -> list[str]:
    import families

    import accelopt as ao

    label = PATH_LABELS[path]
    try:
        model = families.load(family, path)
    except Exception as e:  # the import failing is what the table reports
        return [family, label, "no: " + _short(str(e)), "-", "-", "-", "-", "-"]
    present = _attention_present(model.graph)
    opts: dict[str, Any] = {} if families.FAMILIES[family].image else {"seq_len": SEQ}
    cells = [family, label, "ok"]
    try:
        fuse = ao.optimize(model, target="onnx", passes="cleanup,fuse", **opts)
        n, forms = _fused(fuse.graph)
        cells += [f"{n} / {present}" + (f": {forms}" if forms else ""), _attention_misses(fuse),
                  _fmt(_metric(fuse, "max_abs"), "abs")]
    except Exception as e:
        cells += [f"? / {present}", "fuse failed: " + _short(str(e)), "-"]
    try:
        q = ao.optimize(model, target="onnx", passes="cleanup,fuse,int8", **opts)
        cells.append(f"{_fmt(_metric(q, 'cosine_min'), 'cos')} ({_int8_layers(q)})")
    except Exception as e:
        cells.append("failed: " + _short(str(e), 60))
    try:
        tpu = ao.optimize(model, target="tpu", passes="cleanup,fuse", **opts)
        check = tpu.report.artifact_check
        cells.append("ok" if tpu.ok and (check is None or check.ok) else "tolerance not met")
    except Exception as e:
        cells.append("no: " + _short(str(e), 60))
    return cells


def run(lines: list[str]) -> None:
    import families

    logging.getLogger("accelopt").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    lines += [
        "## Models: families x paths",
        "",
        "Small seeded models of each family (hidden 64, 2 layers, 4 heads; `tests/families.py`), exported by",
        "the TorchScript exporter (`dynamo=False`, opset 17) and the dynamo exporter (opset 18), and loaded from",
        "the `nn.Module` through torch.export. *attention* counts fused `Attention`/`MultiHeadAttention` nodes",
        "against the attention blocks of the imported graph; *near misses* gives fuse-attention's unfused",
        "candidates and the first reason; *fuse max abs* is the `cleanup,fuse` graph against the original model",
        f"in its own runtime (32 seeded inputs, sequence {SEQ}); *int8* the worst per-row cosine after",
        "`cleanup,fuse,int8` and the layers left in int8; *tpu* whether `--target tpu` exports and its artifact",
        "meets the tolerance on this CPU.",
        "",
        "| family | path | import | attention fused / present | near misses | fuse max abs | int8 worst cosine | tpu |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    t0 = time.perf_counter()
    for family in families.FAMILIES:
        for path in families.PATHS:
            print(f"  {family} {path} ...", file=sys.stderr, flush=True)
            lines.append("| " + " | ".join(_row(family, path)) + " |")
    lines += ["", f"_{time.perf_counter() - t0:.0f} s for the table._", ""]
