"""The Hugging Face frontend: a local model folder -> ``Model`` (kind ``"huggingface"``).

``load_huggingface(folder)`` loads a folder written by ``save_pretrained`` (or a
sentence-transformers folder) strictly offline (``local_files_only=True``; the
hub is never contacted), exports it through the torch.export frontend and keeps
the tokenizer on ``model.tokenizer``.

Cases handled:

1. Finding the model folder: ``folder`` itself when its ``config.json`` names a
   ``model_type``; else the sentence-transformers ``Transformer`` module listed in
   ``modules.json``; else the one subfolder (depth 1) with such a ``config.json``.
2. Weights: ``model.safetensors``, ``pytorch_model.bin`` or their sharded
   ``*.index.json`` forms. A folder without ``config.json`` or without weights is a
   ``FrontendError`` naming the folder and what is missing.
3. The model class: ``config.architectures[0]`` when transformers has that class
   (``BertForSequenceClassification`` -> logits), else ``AutoModel``.
4. Attention implementation ``"sdpa"``: torch.export keeps
   ``aten.scaled_dot_product_attention`` as one op, imported as
   ``ScaledDotProductAttention``, so a layer's attention is one node to fuse or
   lower. (``"eager"`` also exports, as bmm/softmax/bmm.)
5. The tokenizer: ``AutoTokenizer`` from the model folder, else from the outer
   folder (sentence-transformers keeps it at the root). Missing tokenizer files
   are an error only when example inputs must be built from it.
6. Example inputs, unless given: the built-in held-out sentences
   (``accelopt.samples``) tokenized and padded to ``seq_len``, ``batch`` of them,
   keeping only the arguments the model's ``forward`` takes. The export is
   dynamic in batch and sequence, so the graph runs at other shapes too.
7. Output names are the model output's fields: ``last_hidden_state``,
   ``pooler_output``, ``logits``...
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.model import Model

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
ATTN_IMPLEMENTATION = "sdpa"


def is_huggingface_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding (directly or one level down) a HF model: config + weights."""
    try:
        _model_folder(Path(path))
    except FrontendError:
        return False
    return True


def load_huggingface(
    folder: str | Path,
    example_inputs: Mapping[str, Any] | None = None,
    *,
    seq_len: int = 128,
    batch: int = 1,
) -> Model:
    """Load a local Hugging Face model folder offline and import it (cases 1-7)."""
    root = Path(folder)
    model_dir = _model_folder(root)
    config = _read_config(model_dir)
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - a dependency
        raise FrontendError("the Hugging Face frontend needs transformers installed") from e
    cls, arch = _model_class(transformers, config)
    hf_logging = transformers.utils.logging
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code does not print (transformers' tqdm bar)
    try:
        hf_model = cls.from_pretrained(str(model_dir), local_files_only=True, attn_implementation=ATTN_IMPLEMENTATION)
    except Exception as e:
        raise FrontendError(f"{model_dir}: transformers could not load the model: {type(e).__name__}: {e}") from e
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    hf_model.eval()
    tokenizer = _load_tokenizer(transformers, model_dir, root)
    if example_inputs is None:
        if tokenizer is None:
            raise FrontendError(
                f"{root}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) to build example inputs; "
                "pass example_inputs"
            )
        example_inputs = _example_inputs(tokenizer, hf_model, seq_len=seq_len, batch=batch)
    else:
        example_inputs = {k: np.asarray(v) for k, v in example_inputs.items()}

    from accelopt.frontends.torch_export import load_torch

    model = load_torch(hf_model, dict(example_inputs), dynamic=True, source=str(root))
    model.kind = "huggingface"
    model.tokenizer = tokenizer
    model.metadata.update(
        {
            "folder": str(model_dir),
            "model_type": config.get("model_type"),
            "architecture": arch,
            "attn_implementation": ATTN_IMPLEMENTATION,
            "example_inputs": {k: np.asarray(v) for k, v in example_inputs.items()},
            "config": config,
        }
    )
    return model


# ---------------------------------------------------------------- folders
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FrontendError(f"{folder}: no config.json") from None
    except (OSError, ValueError) as e:
        raise FrontendError(f"{path}: not a readable JSON config: {e}") from e


def _has_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in WEIGHT_FILES)


def _is_model_dir(folder: Path) -> bool:
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        return False
    try:
        return "model_type" in _read_config(folder)
    except FrontendError:
        return False


def _model_folder(root: Path) -> Path:
    """Case 1: the folder holding config.json (with model_type) and the weights."""
    if not root.exists():
        raise FrontendError(f"{root}: no such folder")
    if not root.is_dir():
        raise FrontendError(f"{root}: not a folder (a Hugging Face model is a folder with config.json and weights)")
    if _is_model_dir(root):
        return root
    candidates: list[Path] = []
    modules = root / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
            for m in entries:
                if str(m.get("type", "")).endswith("Transformer"):
                    candidates.append(root / m.get("path", ""))
        except (OSError, ValueError, AttributeError):
            log.warning("%s: modules.json is not readable; ignored", modules)
    candidates += sorted(p for p in root.iterdir() if p.is_dir())
    for c in candidates:
        if _is_model_dir(c):
            return c
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    if not _has_weights(root):
        missing.append("weights (" + " or ".join(WEIGHT_FILES[:2]) + ")")
    if not missing:
        missing.append("a model_type in config.json")
    raise FrontendError(f"{root}: not a Hugging Face model folder: missing {', '.join(missing)}")


def _model_class(transformers: Any, config: Mapping[str, Any]) -> tuple[Any, str]:
    """Case 3: the class named by ``architectures``, else ``AutoModel``."""
    for arch in config.get("architectures") or []:
        cls = getattr(transformers, str(arch), None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls, str(arch)
    return transformers.AutoModel, "AutoModel"


def _load_tokenizer(transformers: Any, model_dir: Path, root: Path) -> Any:
    """Case 5: AutoTokenizer from the model folder, else from the outer folder."""
    for folder in dict.fromkeys([model_dir, root]):
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            continue
        try:
            return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # a broken tokenizer must not stop the model import
            log.warning("%s: tokenizer could not be loaded (%s: %s)", folder, type(e).__name__, e)
    log.warning("%s: no tokenizer found", root)
    return None


def _example_inputs(tokenizer: Any, hf_model: Any, *, seq_len: int, batch: int) -> dict[str, np.ndarray]:
    """Case 6: tokenized built-in sentences, padded to ``seq_len``."""
    from accelopt.samples import HELDOUT_SENTENCES

    if batch < 1 or seq_len < 1:
        raise FrontendError(f"batch and seq_len must be positive (got batch={batch}, seq_len={seq_len})")
    sentences = [HELDOUT_SENTENCES[i % len(HELDOUT_SENTENCES)] for i in range(batch)]
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    accepted = set(inspect.signature(hf_model.forward).parameters)
    out = {k: np.asarray(v).astype(np.int64) for k, v in dict(enc).items() if k in accepted}
    if "input_ids" not in out:
        raise FrontendError(f"the tokenizer returned {sorted(dict(enc))}; the model takes no input_ids")
    return out
