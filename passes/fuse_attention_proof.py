"""fuse-attention, the proof: a candidate is fused only if it computes what the fused op computes.

Cases 7 and 8 of ``fuse_attention``, for one form (packed ``Attention`` or
``MultiHeadAttention``):

1. **Probes**: the block's inputs (``x``, or the merged Q, K, V values) get
   seeded normal values; the attention-mask input, when the terms read one,
   gets two key-padding patterns (``fuse_attention_terms.probe_masks``). All
   of it at two sizes, (batch 2, sequence 6) and (3, 7), so that nothing
   computed from shapes (a scale, a causal mask, a position bias) is trusted
   at one size only; scales computed from shapes must agree at both.
2. **Heads and scale**: the head size is Q's last dim at the scores matmul;
   the scale is the product of the factors on the scores and on Q and K.
3. **Terms**: classified on all probes (``fuse_attention_terms.classify``).
4. **Output**: the last value of the merge chain shaped ``[B, S, H]``, else
   one shaped ``[B, S, N, D]`` (the heads kept apart).
5. **Numbers**: on every probe, the reference kernel of the fused op equals
   the block within ``PROBE_RTOL`` relative to the output's magnitude.
6. **Escapes**: every node of the block (and, packed, of the projections) is
   dead once the output is replaced and the fused op reads the bias terms
   (so a projection that a computed bias also reads is not packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.ir.graph import Graph, Node, Value
from accelopt.ir.ops.attention import attention, multi_head_attention
from accelopt.passes.fuse_attention_paths import AttentionMiss, Path, packed_arrays
from accelopt.passes.fuse_attention_scores import Block
from accelopt.passes.fuse_attention_terms import Masking, TermProbe, classify, probe_masks
from accelopt.passes.fuse_common import Prober, cone, data_sources, dead_after_replacing, first_escape

#: numerical agreement required between the block and the fused op (relative to max |output|)
PROBE_RTOL = 1e-4
#: probe sizes by axis: two sets, so that what depends on shapes is seen at two sizes (case 1)
PROBE_SIZE_SETS = ({0: 2, 1: 6}, {0: 3, 1: 7})


@dataclass
class Cand:
    """A proven candidate: what the rewrite needs."""

    blk: Block
    form: str  # "packed" | "mha"
    paths: list[Path]
    masking: Masking
    out: Value
    num_heads: int
    scale: float
    split_out: tuple[int, int] | None = None  # (heads, head size) when the output is [B, S, N, D]
    region: list[Node] = field(default_factory=list)


@dataclass
class _Probe:
    """One probe: the block inputs fed, the mask (or None), the values of the targets."""

    feeds: dict[Value, np.ndarray]
    mask: np.ndarray | None
    values: list[np.ndarray]


def _targets(blk: Block, paths: Sequence[Path]) -> tuple[list[Value], dict[str, int]]:
    assert blk.q_end is not None and blk.k_end is not None
    targets: list[Value] = [blk.q_end, blk.k_end, *blk.ctx_chain]
    at = {"chain": 2, "scores": len(targets)}
    if blk.scores is not None:
        targets.append(blk.scores)
    at["terms"] = len(targets)
    for t in blk.terms:
        targets += [t.value, t.scores_in]
    at["dyn"] = len(targets)
    targets += [v for v, _ in _dyn_factors(blk, paths)]
    return targets, at


def _dyn_factors(blk: Block, paths: Sequence[Path]) -> list[tuple[Value, bool]]:
    return list(blk.dyn) + [d for p in paths[:2] for d in p.dyn]


def _run_probes(graph: Graph, cut: Sequence[Value], mask_input: Value | None, targets: list[Value],
                sizes: dict[int, int], seed: int) -> list[_Probe]:
    """Case 1 at one size set."""
    prober = Prober(graph, sizes=sizes)
    rng = np.random.default_rng(seed)
    bsz, seq = sizes[0], sizes[1]
    if mask_input is not None:
        bsz, seq = prober.shape(mask_input.type)
    feeds: dict[Value, np.ndarray] = {}
    for val in cut:
        if val in feeds:
            continue
        width = val.shape[-1] if val.shape else None
        if not isinstance(width, int):
            raise AttentionMiss(f"the block input %{val.name} has no static hidden size: {val.type}", None, "input")
        shape = prober.shape(val.type, fallback=(bsz, seq, width))
        if len(shape) != 3:
            raise AttentionMiss(f"block input %{val.name} is {val.type}, expected [batch, seq, hidden]", None, "input")
        feeds[val] = rng.standard_normal(shape).astype(val.dtype.np)
    keys = feeds[cut[1] if len(cut) > 1 else cut[0]]
    masks = probe_masks(keys.shape[0], keys.shape[1], rng) if mask_input is not None else [None]
    out = []
    for pm in masks:
        f = dict(feeds)
        if pm is not None:
            assert mask_input is not None
            f[mask_input] = pm.astype(mask_input.dtype.np)
        out.append(_Probe(feeds, pm, prober.run(targets, f)))
    return out


def prove_form(graph: Graph, blk: Block, paths: list[Path], form: str) -> Cand:
    """Cases 1-6 for one form."""
    q, k, v = paths
    if form == "packed":
        assert q.proj is not None and k.proj is not None and v.proj is not None
        cut: list[Value] = [q.proj.x]
    else:
        cut = [p.merged for p in paths if p.merged is not None]
    if v.dyn:
        raise AttentionMiss("V is scaled by a value computed from shapes", blk.anchor, "V path")
    sources = [data_sources(t.value, stop=cut) for t in blk.terms]
    rank2 = {id(s): s for src in sources for s in src if s.type.rank == 2}
    mask_input = next(iter(rank2.values())) if len(rank2) == 1 else None
    targets, at = _targets(blk, paths)
    try:
        probes = [p for i, sz in enumerate(PROBE_SIZE_SETS) for p in _run_probes(graph, cut, mask_input, targets,
                                                                                 sz, 1234 + i)]
    except AttentionMiss as miss:
        raise AttentionMiss(miss.reason, blk.anchor, miss.where) from None
    # case 2
    qp = probes[0].values[0]
    head = int(qp.shape[-1])
    hidden = q.proj.w.shape[1] if form == "packed" and q.proj is not None else int(probes[0].feeds[cut[0]].shape[-1])
    hidden_v = v.proj.w.shape[1] if form == "packed" and v.proj is not None else int(probes[0].feeds[cut[-1]].shape[-1])
    if head <= 0 or hidden % head:
        raise AttentionMiss(f"Q reaches the scores matmul with head size {head}, which does not divide {hidden}",
                            blk.anchor, "heads")
    heads = hidden // head
    if hidden_v % heads:
        raise AttentionMiss(f"V's hidden size {hidden_v} is not divisible by the {heads} heads", blk.anchor, "heads")
    base = (blk.sdpa_scale or 1.0 / np.sqrt(head)) if blk.sdpa_scale is not None else blk.score_factor
    scale = float(base * q.factor * k.factor * _dyn_value(blk, paths, probes, at["dyn"]))
    if np.isclose(scale, 1.0 / np.sqrt(head), rtol=1e-6, atol=0):
        scale = 0.0
    blk.progress = 4
    # case 3
    finals, term_probes = [], []
    for p in probes:
        kp = p.values[1]
        if blk.scores is not None:
            final = tuple(p.values[at["scores"]].shape)
        else:
            final = tuple(p.values[0].shape[:-1]) + (int(kp.shape[-1] if blk.k_transposed else kp.shape[-2]),)
        finals.append(final)
        vals = p.values[at["terms"] : at["dyn"]]
        term_probes.append([TermProbe(np.asarray(vals[2 * j]), final if blk.scores is None else
                                      tuple(vals[2 * j + 1].shape)) for j in range(len(blk.terms))])
    masking = classify(blk.terms, term_probes, [p.mask for p in probes], sources, mask_input, finals)
    if blk.causal:  # SDPA's is_causal: masked with -inf
        masking.unidirectional = True
    if masking.fill is None:
        masking.fill = float(np.finfo(np.float32).min) if blk.causal else -10000.0
    blk.progress = 5
    # cases 4 and 5
    dv = hidden_v // heads
    chain_at = at["chain"]
    chain_vals = probes[0].values[chain_at : at["scores"]]
    bsz, seq = probes[0].feeds[cut[0]].shape[:2]
    out_idx, split = _output_index(chain_vals, (bsz, seq, hidden_v), (bsz, seq, heads, dv))
    if out_idx is None:
        shapes = ", ".join(str(tuple(r.shape)) for r in chain_vals)
        raise AttentionMiss(f"the context is never merged back to [batch, seq, hidden] = {(bsz, seq, hidden_v)} "
                            f"(shapes after the context matmul: {shapes})", blk.anchor, "merge heads")
    for i, p in enumerate(probes):
        _compare(form, paths, p, p.values[chain_at + out_idx], masking, i, heads, scale, cut)
    out = blk.ctx_chain[out_idx]
    core = list(blk.core) + [val.producer for val in blk.ctx_chain[1 : out_idx + 1] if val.producer is not None]
    if form == "packed":
        core += [n for p in paths for n in p.nodes]
    blk.progress = 6
    # case 6: what the fused op reads (the bias terms and what they are computed from) stays
    fed = [t.value for t in masking.bias_terms]
    kept = {id(n) for n in cone(fed, stop=cut)}
    region = [n for n in cone([out], stop=cut) if id(n) not in kept]
    dead = dead_after_replacing(graph, out, region)
    for n in core:
        if id(n) not in dead:
            raise AttentionMiss(first_escape(graph, n, dead), n, "escape")
    blk.core = core
    cand = Cand(blk, form, paths, masking, out, heads, scale, (heads, dv) if split else None)
    cand.region = [n for n in region if id(n) in dead]
    return cand


def _dyn_value(blk: Block, paths: Sequence[Path], probes: Sequence[_Probe], at: int) -> float:
    """The product of the shape-computed scale factors; the same on every probe (case 1)."""
    dyn = _dyn_factors(blk, paths)
    if not dyn:
        return 1.0
    got = []
    for p in probes:
        f = 1.0
        for (_v, div), arr in zip(dyn, p.values[at:]):
            x = float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])
            f = f / x if div else f * x
        got.append(f)
    if not np.allclose(got, got[0], rtol=1e-6, atol=0):
        raise AttentionMiss(f"a scale computed from shapes changes with the input size ({got[0]:.4g}, {got[-1]:.4g})",
                            dyn[0][0].producer, "scale")
    return got[0]


def _compare(form: str, paths: Sequence[Path], p: _Probe, ref: np.ndarray, masking: Masking, i: int, heads: int,
             scale: float, cut: Sequence[Value]) -> None:
    """Case 5 on one probe."""
    q, k, v = paths
    fill = -10000.0 if masking.fill is None else masking.fill
    kw: dict[str, Any] = {"unidirectional": masking.unidirectional}
    m = p.mask if masking.mask_input is not None else None
    if form == "packed":
        assert q.proj is not None and k.proj is not None and v.proj is not None
        w, b = packed_arrays(q.proj, k.proj, v.proj, v.factor)
        fused = attention(p.feeds[cut[0]], w, b, m, heads, scale, fill, bias=masking.bias[i], **kw)
        op = "Attention"
    else:
        fq, fk, fv = (p.feeds[path.merged] for path in paths if path.merged is not None)
        fused = multi_head_attention(fq, fk, fv, m, masking.bias[i], heads, scale=scale,
                                     mask_filter_value=fill, **kw)
        op = "MultiHeadAttention"
    fused = fused.reshape(ref.shape)
    err = float(np.max(np.abs(ref.astype(np.float64) - fused)))
    tol = PROBE_RTOL * (1.0 + float(np.max(np.abs(ref))))
    if not err <= tol:
        raise AttentionMiss(f"the block differs from the fused {op} by {err:.3g} on a probe (tolerance {tol:.3g})",
                            None, "numerical check")


def _output_index(
    chain: Sequence[np.ndarray], merged: tuple[int, ...], per_head: tuple[int, ...]
) -> tuple[int | None, bool]:
    """Case 4: the last chain value shaped ``merged``, else the last shaped ``per_head`` (then True)."""
    for want, split in ((merged, False), (per_head, True)):
        for i in range(len(chain) - 1, -1, -1):
            if tuple(chain[i].shape) == want:
                return i, split
    return None, False
