"""``fuse-embedlayernorm``: word + position (+ token type) embedding lookups + LayerNorm -> ``EmbedLayerNorm``.

An imperative rule anchored at each ``LayerNorm`` over the last axis. Cases:

1. The LayerNorm's input is a tree of ``Add``s whose leaves are two or three
   ``Gather(table, indices){axis=0}`` lookups from constant 2-D tables with the
   same width. Interior ``Add``s are used only by the tree.
2. The **word** lookup is the one indexed directly by a graph input (the
   largest table if several are).
3. Of the others, the **position** lookup is the one with the larger table;
   the remaining one, if any, is the **token type** lookup, indexed by a graph
   input or by a computed tensor (a buffered all-zero ``token_type_ids``).
4. Positions are checked numerically on probe ``input_ids`` (with and without
   padding tokens): when they equal ``0..S-1`` in every row the fused op
   computes them itself; otherwise (RoBERTa's ``padding_idx + 1 + cumsum``
   scheme) the computed position ids are passed as the op's ``position_ids``
   input and a note says so.
5. The whole candidate is evaluated on the probes and must match the fused op
   within 1e-5 (relative to the output's magnitude).
6. When the embedding sum is used elsewhere too, the op's second output (the
   sum) takes over those uses; a lookup used outside the tree stops the fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from accelopt.errors import AccelOptError
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.ir.registry import get_op
from accelopt.passes.base import PassContext, PassResult, register_pass
from accelopt.passes.fuse_common import Prober, cone, const_of, dead_after_replacing, first_escape
from accelopt.passes.patterns.driver import RulePass, apply_rules, replace_value
from accelopt.passes.patterns.match import Match, MatchResult
from accelopt.passes.patterns.rule import Rewriter, Rule

PASS_NAME = "fuse-embedlayernorm"
PROBE_RTOL = 1e-5


@dataclass
class _Lookup:
    node: Node
    table: np.ndarray
    indices: Value


@dataclass
class _Cand:
    ln: Node
    word: _Lookup | None = None
    pos: _Lookup | None = None
    typ: _Lookup | None = None
    explicit_positions: bool = False
    tree: list[Node] = field(default_factory=list)
    region: list[Node] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, reason: str, node: Node, where: str, progress: int) -> None:
        super().__init__(reason)
        self.reason, self.node, self.where, self.progress = reason, node, where, progress


class EmbedLayerNormRule(Rule):
    """Cases 1-6 of the module docstring."""

    name = "embedlayernorm"
    root_ops = frozenset({"LayerNorm"})
    near_miss_min = 3
    allow_escapes = True

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, _Cand] = {}
        self.notes: list[str] = []

    def match(self, graph: Graph, node: Node) -> Match | MatchResult:
        try:
            cand = self._structure(graph, node)
            self._prove(graph, cand)
        except _Fail as f:
            return MatchResult.fail(f.reason, node=f.node.name, where=f.where, progress=f.progress)
        except AccelOptError as e:
            return MatchResult.fail(f"probe evaluation failed: {e}", node=node.name, where="probe", progress=3)
        m = Match(self.name, graph, node)
        for n in cand.region:
            m.add_node(n)
        self._pending[node.name] = cand
        return m

    def _structure(self, graph: Graph, ln: Node) -> _Cand:
        x = ln.inputs[0]
        rank = x.type.rank if x is not None else None
        axis = int(ln.attr("axis", -1))
        if x is None or rank is None or axis % rank != rank - 1:
            raise _Fail("LayerNorm is not over the last axis", ln, "LayerNorm", 0)
        cand = _Cand(ln)
        leaves: list[Value] = []
        stack = [x]
        while stack:  # case 1
            v = stack.pop()
            p = v.producer
            if p is not None and p.op == "Add" and (v is x or (len(v.uses) == 1 and v not in graph.outputs)):
                cand.tree.append(p)
                stack.extend(i for i in reversed(p.inputs) if i is not None)
            else:
                leaves.append(v)
        lookups: list[_Lookup] = []
        for v in leaves:
            p = v.producer
            table = const_of(graph, p.inputs[0]) if p is not None and p.op == "Gather" else None
            if p is None or table is None or table.ndim != 2 or int(p.attr("axis", 0)) != 0:
                raise _Fail(f"term %{v.name} is not an embedding lookup (Gather from a constant table)",
                            ln, "embedding sum", len(lookups) if len(lookups) >= 2 else 0)
            lookups.append(_Lookup(p, table, p.inputs[1]))  # type: ignore[arg-type]
        if not 2 <= len(lookups) <= 3:
            raise _Fail(f"{len(lookups)} embedding lookups, expected 2 or 3", ln, "embedding sum", 0)
        widths = {lk.table.shape[1] for lk in lookups}
        if len(widths) != 1:
            raise _Fail(f"embedding tables differ in width: {sorted(widths)}", ln, "embedding sum", 2)
        by_input = [lk for lk in lookups if lk.indices.is_input]
        if not by_input:  # case 2
            raise _Fail("no lookup is indexed by a graph input (input_ids)", ln, "word embedding", 2)
        cand.word = max(by_input, key=lambda lk: lk.table.shape[0])
        rest = sorted((lk for lk in lookups if lk is not cand.word), key=lambda lk: -lk.table.shape[0])
        cand.pos = rest[0]  # case 3
        cand.typ = rest[1] if len(rest) > 1 else None
        return cand

    def _prove(self, graph: Graph, cand: _Cand) -> None:
        assert cand.word is not None and cand.pos is not None
        ln = cand.ln
        ids = cand.word.indices
        prober = Prober(graph)
        if ids.type.rank != 2:
            raise _Fail(f"input_ids %{ids.name} is {ids.type}, expected [batch, seq]", ln, "word embedding", 3)
        bsz, seq = prober.shape(ids.type)
        vocab = cand.word.table.shape[0]
        rng = np.random.default_rng(7)
        probes = [rng.integers(min(3, vocab - 1), vocab, (bsz, seq))]
        padded = probes[0].copy()
        padded[:, max(1, seq // 2) :] = rng.integers(0, min(3, vocab), padded[:, max(1, seq // 2) :].shape)
        probes.append(padded)
        targets = [ln.outputs[0], cand.pos.indices] + ([cand.typ.indices] if cand.typ else [])
        arange = np.broadcast_to(np.arange(seq), (bsz, seq))
        explicit = False
        results = []
        for p in probes:
            res = prober.run(targets, {ids: p.astype(ids.dtype.np)})
            results.append(res)
            pos = res[1]
            try:
                same = np.array_equal(np.broadcast_to(pos, (bsz, seq)), arange)
            except ValueError:
                raise _Fail(f"position ids of shape {pos.shape} are not [batch, seq]", ln, "position ids", 3) from None
            explicit = explicit or not same
        cand.explicit_positions = explicit  # case 4
        gamma = const_of(graph, ln.inputs[1])
        beta = const_of(graph, ln.inputs[2]) if len(ln.inputs) > 2 else None
        if gamma is None or (len(ln.inputs) > 2 and ln.inputs[2] is not None and beta is None):
            raise _Fail("LayerNorm gamma/beta are not constant", ln, "LayerNorm", 3)
        kernel = get_op("EmbedLayerNorm").kernel
        eps = float(get_op("LayerNorm").full_attrs(ln.attrs)["epsilon"])
        for p, res in zip(probes, results):  # case 5
            types = res[2] if cand.typ else None
            pos_ids = np.broadcast_to(res[1], (bsz, seq)) if explicit else None
            ins = [p, types, cand.word.table, cand.pos.table, cand.typ.table if cand.typ else None, gamma, beta]
            if pos_ids is not None:
                ins.append(pos_ids)
            (got,) = kernel(ins, {"epsilon": eps}, 1)
            ref = res[0]
            err = float(np.max(np.abs(ref.astype(np.float64) - got)))
            if not err <= PROBE_RTOL * (1 + float(np.max(np.abs(ref)))):
                raise _Fail(f"the embeddings differ from the fused op by {err:.3g} on a probe", ln, "numerical check", 4)
        region = cone([ln.outputs[0]], stop=[v for v in graph.inputs])
        ln_outs = [v for v in (ln.outputs[0], ln.inputs[0]) if v is not None]
        dead = dead_after_replacing(graph, ln_outs, region)  # the sum may be output 1
        for n in [lk.node for lk in (cand.word, cand.pos, cand.typ) if lk is not None]:
            if id(n) not in dead:
                raise _Fail(first_escape(graph, n, dead), n, "escape", 4)
        cand.region = [n for n in region if id(n) in dead]

    def rewrite(self, rw: Rewriter, match: Match) -> Value:
        cand = self._pending.pop(match.root.name)
        assert cand.word is not None and cand.pos is not None
        ln = cand.ln
        origins = tuple(n.name for n in rw.graph.nodes if n in cand.tree or n is ln
                        or any(lk is not None and n is lk.node for lk in (cand.word, cand.pos, cand.typ)))
        rw.provenance = Provenance(rw.provenance.pass_name, self.name, origins)
        ins: list[Value | None] = [
            cand.word.indices,
            cand.typ.indices if cand.typ else None,
            cand.word.node.inputs[0],
            cand.pos.node.inputs[0],
            cand.typ.node.inputs[0] if cand.typ else None,
            ln.inputs[1],
            ln.inputs[2] if len(ln.inputs) > 2 else None,
        ]
        if cand.explicit_positions:
            ins.append(cand.pos.indices)
            self.notes.append(
                f"{ln.name}: position ids are not 0..S-1 (e.g. RoBERTa's padding_idx+1+cumsum scheme); "
                "they are passed to EmbedLayerNorm explicitly"
            )
        s = ln.inputs[0]
        assert s is not None
        graph = rw.graph
        shared = any(u is not ln for u in s.consumers) or s in graph.outputs
        eps = float(get_op("LayerNorm").full_attrs(ln.attrs)["epsilon"])
        node = rw.node("EmbedLayerNorm", ins, {"epsilon": eps}, name=f"{ln.name}_embed", outputs=2 if shared else 1)
        if shared:  # case 6
            replace_value(graph, s, node.outputs[1])
        return node.outputs[0]


@register_pass
class FuseEmbedLayerNorm(RulePass):
    """Fuse word/position/token-type embedding lookups and their LayerNorm into EmbedLayerNorm."""

    name = PASS_NAME
    family = "fusion"

    def rules(self) -> list[Rule]:
        return [EmbedLayerNormRule()]

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        rule = EmbedLayerNormRule()
        outcome = apply_rules(graph, [rule], pass_name=self.name)
        return PassResult(
            graph, outcome.modified, stats=outcome.stats, near_misses=outcome.near_misses, notes=list(rule.notes)
        )
