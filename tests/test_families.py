"""The family zoo through cleanup,fuse: every attention block fused in its form, FFN epilogues in Linear, exact.

Quick tests use the TorchScript exports (about a second each to make); the dynamo exports and the torch path
are ``slow``. Families an importer does not take yet (pooling, batch norm and convolution ops are being added)
are skipped with the importer's reason; ``benchmarks/bench_models.py`` tabulates them.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import families
import numpy as np
import pytest

from accelopt.errors import FrontendError
from accelopt.interpreter import run
from accelopt.passes.base import PassContext, build_pipeline
from accelopt.passes.fuse_attention_scores import is_attention
from accelopt.passmanager import PassManager

#: per family: the fused op of its attention blocks and the attributes every one of them has
FORMS: dict[str, tuple[set[str], dict[str, object], bool]] = {
    # family: (fused ops, attributes, has an attention_bias input)
    "electra": ({"Attention"}, {}, False),
    "xlm-roberta": ({"Attention"}, {}, False),
    "camembert": ({"Attention"}, {}, False),
    "mpnet": ({"Attention"}, {}, True),
    "deberta-v2": ({"MultiHeadAttention"}, {}, True),
    "mobilebert": ({"MultiHeadAttention"}, {}, False),
    "convbert": ({"MultiHeadAttention"}, {}, False),
    # T5's first layer reads K's shape for its position bias: its projections stay, so MultiHeadAttention there
    "t5": ({"Attention", "MultiHeadAttention"}, {"scale": 1.0}, True),
    "gpt2": ({"Attention"}, {"unidirectional": 1}, False),
    "vit": ({"Attention"}, {}, False),
}
ACTIVATIONS = {"Gelu", "Relu", "Erf", "Tanh", "QuickGelu", "Sigmoid"}
SLOW_PATHS = [pytest.param(f, p, marks=pytest.mark.slow) for f in FORMS for p in ("dynamo", "torch")]


def _load(family: str, path: str):  # noqa: ANN202 - a Model
    logging.getLogger("accelopt").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return families.load(family, path)
        except FrontendError as e:
            pytest.skip(f"{family} through {path} does not import yet: {str(e)[:200]}")


def _check(family: str, path: str) -> None:
    model = _load(family, path)
    graph = model.graph
    present = sum(1 for n in graph.nodes if is_attention(graph, n))
    assert present == families.FAMILIES[family].attention_blocks
    fused, records = PassManager(build_pipeline("cleanup,fuse"), PassContext()).run(graph)
    ops, attrs, biased = FORMS[family]
    atts = [n for n in fused.nodes if n.op in ("Attention", "MultiHeadAttention")]
    assert len(atts) == present and {n.op for n in atts} <= ops, Counter(n.op for n in fused.nodes)
    for n in atts:
        assert all(n.attr(k, None) == v for k, v in attrs.items()), (n.name, n.attrs)
        assert (len(n.inputs) > 4 and n.inputs[4] is not None) == biased, n.name
    # every FFN activation is a Linear epilogue
    assert not ACTIVATIONS & set(fused.op_counts()), fused.op_counts()
    assert any(n.op == "Linear" and n.attr("activation", "none") != "none" for n in fused.nodes)
    if family == "t5":
        assert fused.op_counts()["RMSNorm"] == 5  # two per layer and the final one
    dims = graph.inputs[0].shape or ()
    seq = dims[1] if len(dims) > 1 and isinstance(dims[1], int) else 11  # torch.export may fix the length
    feeds = families.inputs(family, batch=3, seq=seq, seed=1)
    ref = model.reference(feeds)
    got = run(fused, feeds)
    for k, want in ref.items():
        err = float(np.max(np.abs(got[k].astype(np.float64) - want)))
        assert err <= 1e-4, (family, path, k, err)


@pytest.mark.parametrize("family", sorted(FORMS))
def test_legacy_export_fuses_every_block(family: str) -> None:
    _check(family, "legacy")


@pytest.mark.parametrize("family, path", SLOW_PATHS)
def test_dynamo_export_and_torch_path_fuse_every_block(family: str, path: str) -> None:
    _check(family, path)


def test_convbert_says_the_convolution_half_stays() -> None:
    model = _load("convbert", "legacy")
    _, records = PassManager(build_pipeline("cleanup,fuse-attention"), PassContext()).run(model.graph)
    rec = next(r for r in records if r.name == "fuse-attention")
    halves = [n for n in rec.notes if "self-attention half of a mixed attention" in n]
    assert len(halves) == 2 and all("joins it at Concat" in n for n in halves)
    # its convolution-kernel softmax (over axis 1) is a candidate that says why it is no attention
    assert any("softmax axis is 1, expected the last axis" in m for m in rec.near_misses)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_every_family_builds_and_exports(family: str) -> None:
    """The zoo itself: each family builds offline and both exporters write it (the importers may still refuse)."""
    for exporter in ("legacy", "dynamo"):
        assert families.export(family, exporter).is_file()
    names = families.input_names(family)
    assert set(families.inputs(family)) == set(names)
