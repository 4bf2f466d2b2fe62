"""fuse-attention, what the terms on the scores are: a key-padding mask, a causal mask, a bias, or nothing.

Each term (``fuse_attention_scores.Term``) is evaluated on the probes (seeded
inputs, and two key-padding patterns for the attention-mask input ``M`` when
there is one) and laid out like the scores ``[B, *, S, T]``. Case 6 of
``fuse_attention``, per term, in order:

1. the term depends (through data, not shapes, and not through the block's
   inputs) on ``M`` alone and masks exactly the padded keys of every probe ->
   the key-padding ``mask`` input of the fused op;
2. ... exactly the padded keys and the keys after each query (``j > i``) ->
   the mask input plus ``unidirectional=1`` (GPT-2's combined mask);
3. the term depends on no graph input and masks exactly the keys after each
   query -> ``unidirectional=1`` (a causal mask built from shapes);
4. the term depends on no graph input and is zero everywhere -> dropped (an
   all-ones mask made from shapes when the model was exported without one);
5. anything else -> added into ``attention_bias``: an additive term as it is
   (times the factors after it, reshaped like the scores when it was added
   before their ``Reshape``), a ``Where`` mask as ``Where(cond, fill, 0)``
   (T5's relative bias with its mask, MPNet's relative position bias,
   DeBERTa's disentangled bias and query-and-key mask).

"Masks" means: an additive term is exactly 0 for kept pairs and <= -1e4 for
masked ones; a ``Where`` condition selects exactly the masked pairs. Only the
first term of kinds 1-3 becomes the mask or the flag; a repeat is kept as a
bias (adding the mask twice would change nothing but the fill). The fused op's
``mask_filter_value`` is the least negative masked value found (``-inf``
becomes the float32 minimum).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from accelopt.ir.graph import Value
from accelopt.passes.fuse_attention_paths import AttentionMiss
from accelopt.passes.fuse_attention_scores import MASK_THRESHOLD, Term

F32_MIN = float(np.finfo(np.float32).min)


@dataclass
class TermProbe:
    """One term's arrays on one probe: the value (or condition) and the scores shape where it was applied."""

    value: np.ndarray
    scores_shape: tuple[int, ...]


@dataclass
class Masking:
    """How the terms map onto the fused op's inputs and attributes."""

    mask_input: Value | None = None
    unidirectional: bool = False
    #: the mask_filter_value (None until a mask term gives one)
    fill: float | None = None
    bias_terms: list[Term] = field(default_factory=list)
    dropped: list[Term] = field(default_factory=list)
    #: per probe, the ``attention_bias`` array the fused op gets (None without bias terms)
    bias: list[np.ndarray | None] = field(default_factory=list)


def probe_masks(bsz: int, seq: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Two key-padding masks: suffix padding, then scattered padding; key 0 is always kept (so a causal
    query 0 always sees a key) and every other row keeps at least one more key when it can."""
    a = np.ones((bsz, seq), dtype=np.int64)
    for r in range(bsz):
        keep = max(1, seq - 1 - r) if seq > 1 else 1
        a[r, keep:] = 0
    b = (rng.random((bsz, seq)) < 0.6).astype(np.int64)
    b[:, 0] = 1
    for r in range(bsz):
        if seq > 2 and b[r].all():
            b[r, int(rng.integers(1, seq))] = 0
    return [a, b]


def _full(term: Term, tp: TermProbe, final: tuple[int, ...]) -> np.ndarray:
    """The term broadcast over the scores where it was applied, then laid out as the final scores."""
    v = tp.value
    try:
        shape = np.broadcast_shapes(v.shape, tp.scores_shape)
    except ValueError:
        raise AttentionMiss(
            f"the term of shape {list(v.shape)} does not broadcast to the scores {list(tp.scores_shape)}",
            term.node,
            "term",
        ) from None
    if shape != tuple(tp.scores_shape):
        raise AttentionMiss(
            f"the term of shape {list(v.shape)} broadcasts the scores {list(tp.scores_shape)} to {list(shape)}",
            term.node,
            "term",
        )
    full = np.broadcast_to(v, shape)
    if term.reshape is not None:
        if len(final) != 4:
            raise AttentionMiss(f"the scores are reshaped to {list(final)}, not [batch, heads, queries, keys]",
                                term.reshape, "scores")
        if v.shape != tuple(tp.scores_shape):
            raise AttentionMiss(
                f"the term of shape {list(v.shape)} is smaller than the scores {list(tp.scores_shape)} and added "
                "before they are reshaped",
                term.node,
                "term",
            )
        full = full.reshape(final)
    return full


def _pattern(blocked: np.ndarray, pm: np.ndarray | None) -> str:
    """Which mask ``blocked`` (``[B, X, S, T]``) is: padding, causal+padding, causal, none, or other."""
    s, t = blocked.shape[-2:]
    fut = np.triu(np.ones((s, t), dtype=np.bool_), 1)[None, None]
    if not blocked.any():
        return "none"
    if np.array_equal(blocked, np.broadcast_to(fut, blocked.shape)):
        return "causal"
    if pm is not None and pm.shape == (blocked.shape[0], t):
        pad = (pm == 0)[:, None, None, :]
        if np.array_equal(blocked, np.broadcast_to(pad, blocked.shape)):
            return "padding"
        if np.array_equal(blocked, np.broadcast_to(pad | fut, blocked.shape)):
            return "causal+padding"
    return "other"


def classify(
    terms: Sequence[Term],
    probes: Sequence[Sequence[TermProbe]],
    masks: Sequence[np.ndarray | None],
    sources: Sequence[set[Value]],
    mask_input: Value | None,
    final: Sequence[tuple[int, ...]],
) -> Masking:
    """Cases 1-5 for every term; ``probes[i][j]`` is term ``j`` on probe ``i`` (whose mask is ``masks[i]``)."""
    out = Masking()
    fills: list[float] = []
    for j, term in enumerate(terms):
        kinds: set[str] = set()
        term_fills: list[float] = []
        for i, pm in enumerate(masks):
            full = _full(term, probes[i][j], final[i])
            bsz, s, t = final[i][0], final[i][-2], final[i][-1]
            if term.kind == "add":
                eff = full.astype(np.float64) * term.factor
                blocked = eff <= MASK_THRESHOLD
                if np.any(eff[~blocked] != 0):
                    kinds.add("other")
                    continue
                if blocked.any():
                    term_fills.append(float(np.max(eff[blocked])))
            else:
                blocked = full.astype(bool) != term.keep_if
                term_fills.append(term.fill * term.factor)
            kinds.add(_pattern(blocked.reshape(bsz, -1, s, t), pm))
        kind = kinds.pop() if len(kinds) == 1 else "other"
        src = sources[j]
        wants_mask = kind in ("padding", "causal+padding")
        if wants_mask and (mask_input is None or src != {mask_input} or out.mask_input is not None):
            kind = "other"
        if kind == "none" and src:
            kind = "other"  # zero on the probes but computed from an input: kept, to be safe
        if kind == "causal" and not src <= ({mask_input} if mask_input is not None else set()):
            kind = "other"
        if "causal" in kind and out.unidirectional:
            kind = "other"
        if kind == "none":
            out.dropped.append(term)
            continue
        if kind == "other":
            out.bias_terms.append(term)
            continue
        if wants_mask:
            out.mask_input = mask_input
        out.unidirectional = out.unidirectional or "causal" in kind
        fills.extend(term_fills)
    if fills:
        fill = max(fills)
        out.fill = F32_MIN if not np.isfinite(fill) or fill < F32_MIN else float(fill)
    out.bias = [_bias(out.bias_terms, terms, probes[i], final[i]) for i in range(len(masks))]
    return out


def _bias(bias_terms: Sequence[Term], terms: Sequence[Term], probe: Sequence[TermProbe],
          final: tuple[int, ...]) -> np.ndarray | None:
    """The ``attention_bias`` array on one probe, computed as the rewrite's nodes will (float32, same order)."""
    acc: np.ndarray | None = None
    for term in bias_terms:
        tp = probe[terms.index(term)]
        v = tp.value
        if term.kind == "where":
            fill = np.float32(term_fill(term))
            zero = np.float32(0)
            part = np.where(v.astype(bool), zero, fill) if term.keep_if else np.where(v.astype(bool), fill, zero)
        else:
            part = v.astype(np.float32, copy=False)
            if term.factor != 1.0:
                part = part * np.float32(term.factor)
            if term.reshape is not None:
                part = part.reshape(final)
        acc = part if acc is None else acc + part
    if acc is not None and len(final) == 3 and acc.ndim == 3 and acc.shape[0] != 1:
        raise AttentionMiss(
            f"a bias of shape {list(acc.shape)} is added to [batch*heads, queries, keys] scores that are never "
            "viewed per head",
            bias_terms[0].node,
            "bias",
        )
    return acc


def term_fill(term: Term) -> float:
    """A Where term's fill as an additive bias value (times the factors after it; -inf becomes the float32 min)."""
    fill = term.fill * term.factor
    return F32_MIN if not np.isfinite(fill) or fill < F32_MIN else float(fill)
