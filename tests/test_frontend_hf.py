"""Hugging Face frontend: local folders loaded offline, tokenizer kept, errors name what is missing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from accelopt.errors import FrontendError
from accelopt.frontends.huggingface import is_huggingface_folder, load_huggingface
from accelopt.samples import SENTENCES
from modelzoo import max_abs_errors, minilm_dir, save_tiny_bert, sentence_transformers_folder

TOL = 1e-5


def _write_tokenizer(folder: Path) -> None:
    """A tiny WordPiece vocabulary from the built-in sentences, saved as a BertTokenizerFast."""
    import transformers as tf

    words = sorted({w for s in SENTENCES for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", s.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 128}))
    tf.BertTokenizerFast.from_pretrained(str(folder), local_files_only=True).save_pretrained(str(folder))


def _tokenize(tok, sentences, seq):
    enc = tok(list(sentences), padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_tiny_bert(folder)
    _write_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_loaded(tiny_folder):
    return load_huggingface(tiny_folder, seq_len=32, batch=2)


# ----------------------------------------------------------------- loading
def test_tiny_folder_loads_with_tokenizer(tiny_folder, tiny_loaded):
    m = tiny_loaded
    assert m.kind == "huggingface"
    assert m.source == str(tiny_folder)
    assert type(m.tokenizer).__name__.startswith("BertTokenizer")  # transformers 5 drops the "Fast" suffix
    assert m.metadata["attn_implementation"] == "sdpa"
    assert m.metadata["architecture"] == "BertModel"
    assert sorted(m.input_names) == ["attention_mask", "input_ids", "token_type_ids"]
    assert m.output_names == ["last_hidden_state", "pooler_output"]
    assert all(v.shape == ("batch", "seq") for v in m.graph.inputs)
    assert m.graph.op_counts()["ScaledDotProductAttention"] == 2
    ex = m.metadata["example_inputs"]
    assert ex["input_ids"].shape == (2, 32)
    assert ex["attention_mask"][:, 0].all() and not ex["attention_mask"][:, -1].any()  # padded to seq_len
    assert not (ex["input_ids"] == 1).any()  # no [UNK]: the vocabulary covers the sentences
    m.graph.verify()


def test_tiny_folder_matches_torch(tiny_loaded):
    m = tiny_loaded
    errs = max_abs_errors(m.run(m.metadata["example_inputs"]), m.reference(m.metadata["example_inputs"]))
    assert max(errs.values()) <= TOL, errs
    inputs = _tokenize(m.tokenizer, SENTENCES[3:8], 20)  # another batch and sequence length
    errs = max_abs_errors(m.run(inputs), m.reference(inputs))
    assert max(errs.values()) <= TOL, errs


def test_architecture_picks_the_head(tmp_path):
    save_tiny_bert(tmp_path, "BertForSequenceClassification", num_labels=3)
    _write_tokenizer(tmp_path)
    m = load_huggingface(tmp_path, seq_len=16, batch=1)
    assert m.metadata["architecture"] == "BertForSequenceClassification"
    assert m.output_names == ["logits"]
    assert m.graph.outputs[0].shape == ("batch", 3)
    inputs = _tokenize(m.tokenizer, SENTENCES[:4], 24)
    assert max(max_abs_errors(m.run(inputs), m.reference(inputs)).values()) <= TOL


def test_sentence_transformers_layout(tmp_path):
    """modules.json at the root, the BertModel in 0_Transformer/, the tokenizer at the root."""
    sentence_transformers_folder(tmp_path, seed=1)
    _write_tokenizer(tmp_path)
    assert is_huggingface_folder(tmp_path)
    m = load_huggingface(tmp_path, seq_len=16)
    assert m.metadata["folder"] == str(tmp_path / "0_Transformer")
    assert m.tokenizer is not None
    ex = m.metadata["example_inputs"]
    assert max(max_abs_errors(m.run(ex), m.reference(ex)).values()) <= TOL


def test_example_inputs_given_without_tokenizer(tmp_path):
    save_tiny_bert(tmp_path)
    rng = np.random.default_rng(0)
    ex = {"input_ids": rng.integers(5, 1000, (2, 12)), "attention_mask": np.ones((2, 12), dtype=np.int64)}
    m = load_huggingface(tmp_path, example_inputs=ex)
    assert m.tokenizer is None
    assert sorted(m.input_names) == ["attention_mask", "input_ids"]
    inputs = {"input_ids": rng.integers(5, 1000, (3, 7)), "attention_mask": np.ones((3, 7), dtype=np.int64)}
    assert max(max_abs_errors(m.run(inputs), m.reference(inputs)).values()) <= TOL
    with pytest.raises(FrontendError, match="tokenizer"):
        load_huggingface(tmp_path)


# ----------------------------------------------------------------- errors
def test_folder_without_config_or_weights(tmp_path):
    with pytest.raises(FrontendError) as info:
        load_huggingface(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "config.json" in msg and "weights" in msg
    assert not is_huggingface_folder(tmp_path)


def test_folder_with_config_but_no_weights(tmp_path, tiny_folder):
    shutil.copy(tiny_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(FrontendError) as info:
        load_huggingface(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "weights" in msg and "config.json" not in msg.split("missing", 1)[1]
    assert not is_huggingface_folder(tmp_path)


def test_not_a_folder(tmp_path, tiny_folder):
    with pytest.raises(FrontendError, match="no such folder"):
        load_huggingface(tmp_path / "absent")
    with pytest.raises(FrontendError, match="not a folder"):
        load_huggingface(tiny_folder / "config.json")
    assert is_huggingface_folder(tiny_folder)
    assert not is_huggingface_folder(tiny_folder / "config.json")


def test_broken_config(tmp_path, tiny_folder):
    for f in ("model.safetensors",):
        shutil.copy(tiny_folder / f, tmp_path / f)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(FrontendError, match="config.json"):
        load_huggingface(tmp_path)


# ----------------------------------------------------------------- real weights
@pytest.mark.slow
def test_all_minilm_l6_v2_real_weights_seq128():
    folder = minilm_dir()
    m = load_huggingface(folder, seq_len=128, batch=1)
    assert m.metadata["model_type"] == "bert"
    assert m.graph.outputs[0].shape == ("batch", "seq", 384)
    errs = max_abs_errors(m.run(m.metadata["example_inputs"]), m.reference(m.metadata["example_inputs"]))
    inputs = _tokenize(m.tokenizer, SENTENCES[:8], 128)
    errs8 = max_abs_errors(m.run(inputs), m.reference(inputs))
    print(f"\nall-MiniLM-L6-v2 seq 128 (load_huggingface): batch 1 {errs}; batch 8 {errs8}")
    assert max(errs.values()) <= 1e-4 and max(errs8.values()) <= 1e-4
