"""fuse-embedlayernorm: BERT-style (implicit positions), RoBERTa-style (explicit positions), sums used elsewhere."""

from __future__ import annotations

import numpy as np
from attention_graphs import Builder
from fuse_check import check_numerics, run_pass

import accelopt.ir as ir
from accelopt.ir import print_graph
from accelopt.ir.graph import Graph

I64 = ir.DType.INT64
rng = np.random.default_rng(0)
WORD = rng.standard_normal((20, 4)).astype(np.float32)
POS = rng.standard_normal((12, 4)).astype(np.float32)
TYPE = rng.standard_normal((2, 4)).astype(np.float32)


def _bert_like(*, sum_is_output: bool = False) -> Graph:
    g = Graph("embed")
    ids = g.add_input("input_ids", ir.TensorType(I64, ("batch", "seq")))
    tt = g.add_input("token_type_ids", ir.TensorType(I64, ("batch", "seq")))
    b = Builder(g)
    shape = b.op("Shape", [ids], name="shape")
    seq = b.op("Gather", [shape, b.c("one_i", 1, np.int64)], {"axis": 0}, name="seq_len")
    rng_ = b.op("Range", [b.c("zero_i", 0, np.int64), seq, b.c("step", 1, np.int64)], name="range")
    pos_ids = b.op("Unsqueeze", [rng_, b.c("axis0", [0], np.int64)], name="pos_ids")
    w = b.op("Gather", [b.c("word", WORD), ids], name="word")
    t = b.op("Gather", [b.c("type", TYPE), tt], name="type")
    p = b.op("Gather", [b.c("pos", POS), pos_ids], name="position")
    s = b.op("Add", [b.op("Add", [w, t], name="add_wt"), p], name="add_p")
    y = b.op("LayerNorm", [s, b.c("gamma", [1.0, 2.0, 0.5, 1.5]), b.c("beta", [0.1, 0.0, -0.1, 0.2])],
             {"epsilon": 1e-12}, name="ln")
    g.set_outputs([y, s] if sum_is_output else [y])
    return g


def _inputs(batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    r = np.random.default_rng(1)
    ids = r.integers(2, 20, (batch, seq))
    ids[1, 3:] = 1  # RoBERTa's padding id
    mask = (ids != 1).astype(np.int64)
    return {"input_ids": ids, "token_type_ids": r.integers(0, 2, (batch, seq)), "attention_mask": mask}


def _feeds(g: Graph, batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    full = _inputs(batch, seq)
    return {v.name: full[v.name] for v in g.inputs}


def test_bert_style_positions_are_implicit_golden() -> None:
    g = _bert_like()
    res = run_pass("fuse-embedlayernorm", g)
    res.graph.verify()
    text = print_graph(res.graph)
    assert res.modified and res.notes == []
    body = [line.strip() for line in text.splitlines() if "=" in line and "const" not in line]
    assert body == [
        "%ln: float32[batch,seq,4] = EmbedLayerNorm{epsilon=1e-12}(%input_ids, %token_type_ids, %word, %pos, "
        "%type, %gamma, %beta) @ln_embed"
    ]
    assert sorted(res.graph.initializers) == ["beta", "gamma", "pos", "type", "word"]
    node = res.graph.nodes[0]
    assert set(node.provenance.origins) == {"word", "type", "position", "add_wt", "add_p", "ln"}
    check_numerics(g, res.graph, _feeds(g), atol=2e-6)
    assert not run_pass("fuse-embedlayernorm", res.graph).modified


def test_case6_sum_used_elsewhere_becomes_second_output() -> None:
    g = _bert_like(sum_is_output=True)
    res = run_pass("fuse-embedlayernorm", g)
    (node,) = res.graph.nodes
    assert len(node.outputs) == 2 and res.graph.outputs[1] is node.outputs[1]
    assert res.graph.outputs[1].name == "add_p"
    check_numerics(g, res.graph, _feeds(g), atol=2e-6)


def test_roberta_style_positions_are_passed_explicitly() -> None:
    g = Graph("roberta_embed")
    ids = g.add_input("input_ids", ir.TensorType(I64, ("batch", "seq")))
    b = Builder(g)
    not_pad = b.op("Not", [b.op("Equal", [ids, b.c("pad", 1, np.int64)], name="is_pad")], name="not_pad")
    m = b.op("Cast", [not_pad], {"to": I64}, name="mask_i")
    cums = b.op("CumSum", [m, b.c("axis1", 1, np.int64)], name="cumsum")
    pos_ids = b.op("Add", [b.op("Mul", [cums, m], name="mul_mask"), b.c("pad_off", 1, np.int64)], name="pos_ids")
    zeros = b.op("Mul", [ids, b.c("zero_i", 0, np.int64)], name="zero_types")
    w = b.op("Gather", [b.c("word", WORD), ids], name="word")
    t = b.op("Gather", [b.c("type", TYPE[:1]), zeros], name="type")
    p = b.op("Gather", [b.c("pos", POS), pos_ids], name="position")
    s = b.op("Add", [b.op("Add", [w, t], name="add_wt"), p], name="add_p")
    y = b.op("LayerNorm", [s, b.c("gamma", [1.0, 2.0, 0.5, 1.5]), b.c("beta", [0.1, 0.0, -0.1, 0.2])],
             {"epsilon": 1e-5}, name="ln")
    g.set_outputs([y])
    res = run_pass("fuse-embedlayernorm", g)
    res.graph.verify()
    (eln,) = [n for n in res.graph.nodes if n.op == "EmbedLayerNorm"]
    assert eln.inputs[7] is res.graph.node("pos_ids").outputs[0]
    assert eln.inputs[1] is res.graph.node("zero_types").outputs[0]
    assert len(res.notes) == 1 and "position ids are not 0..S-1" in res.notes[0]
    assert res.near_misses == []
    check_numerics(g, res.graph, _feeds(g), atol=2e-6)


def test_no_match_layernorm_of_residual() -> None:
    g = Graph("residual")
    ids = g.add_input("input_ids", ir.TensorType(I64, ("batch", "seq")))
    h = g.add_input("h", ir.TensorType(ir.DType.FLOAT32, ("batch", "seq", 4)))
    b = Builder(g)
    w = b.op("Gather", [b.c("word", WORD), ids], name="word")
    y = b.op("LayerNorm", [b.op("Add", [w, h], name="add"), b.c("gamma", [1.0, 1.0, 1.0, 1.0])], name="ln")
    g.set_outputs([y])
    res = run_pass("fuse-embedlayernorm", g)
    assert not res.modified and res.near_misses == []
    assert print_graph(res.graph) == print_graph(g)
