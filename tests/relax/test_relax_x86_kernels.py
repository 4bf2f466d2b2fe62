"""``X86Kernels`` through the Relax lowering: the op cases of the ops it emits, against the interpreter.

The cases of ``tests/op_cases.py`` whose op goes through a ``Kernels`` hook are lowered with ``X86Kernels``
into one module (one build), run, and compared with the registry's reference kernels; the build record says
which x86 kernel scheduled each function.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES
from relax_helpers import Compiled, assert_matches

from accelopt.interpreter import run
from accelopt.ir import DType
from accelopt.ir.ops.quantized import dynamic_quantize
from accelopt.targets.cpu import host
from accelopt.targets.cpu.kernels import X86Kernels
from modelzoo import one_op_graph

HOOKED = (
    "Linear",
    "PackedLinear",
    "MatMul",
    "QLinear",
    "QAttention",
    "Attention",
    "ScaledDotProductAttention",
    "LayerNorm",
    "SkipLayerNorm",
    "EmbedLayerNorm",
    "LayerNormalization",
    "DynamicQuantize",
)
_R = np.random.default_rng(11)


def _wq(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    w = _R.uniform(-2, 2, (k, n)).astype(np.float32)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def _x(*shape: int) -> np.ndarray:
    return _R.uniform(-2, 2, shape).astype(np.float32)


_W = _wq(16, 20)
_S8 = dynamic_quantize(_x(2, 3, 16), DType.INT8, True, "row")
_U8 = dynamic_quantize(_x(2, 3, 16), DType.UINT8, False, "row")
_U8T = dynamic_quantize(_x(5, 16), DType.UINT8, False, "tensor")
#: QLinear cases the VNNI kernel takes (K a multiple of 4; op_cases' QLinears have K=7, which go generic)
VNNI_CASES = [
    ("VNNI-s8-row-gelu", "QLinear", [("in", _S8[0]), ("in", _S8[1]), ("none", None), ("const", _W[0]),
     ("const", _W[1]), ("none", None), ("const", _x(20))], {"activation": "gelu"}, 1),
    ("VNNI-u8-row-zp", "QLinear", [("in", _U8[0]), ("in", _U8[1]), ("in", _U8[2]), ("const", _W[0]),
     ("const", _W[1])], {}, 1),
    ("VNNI-u8-tensor-zp-relu", "QLinear", [("in", _U8T[0]), ("const", _U8T[1]), ("const", _U8T[2]),
     ("const", _W[0]), ("const", _W[1]), ("none", None), ("const", _x(20))], {"activation": "relu"}, 1),
    ("VNNI-requantize-u8", "QLinear", [("in", _S8[0]), ("in", _S8[1]), ("none", None), ("const", _W[0]),
     ("const", _W[1]), ("none", None), ("const", _x(20)), ("const", np.array(0.05, np.float32)),
     ("const", np.array(128, np.uint8))], {}, 1),
    ("DQ-then-VNNI", "DynamicQuantize", [("in", _x(4, 32))], {"to": DType.UINT8, "symmetric": 0}, 3),
]  # fmt: skip
CASES_HOOKED = [c for c in CASES if c[1] in HOOKED] + VNNI_CASES


@pytest.fixture(scope="module")
def compiled() -> tuple[Compiled, dict]:
    graphs, feeds = {}, {}
    for i, (case_id, op, inputs, attrs, n_out) in enumerate(CASES_HOOKED):
        arrays = [None if kind == "none" else arr for kind, arr in inputs]
        consts = {j for j, (kind, _) in enumerate(inputs) if kind == "const"}
        g, feed = one_op_graph(op, arrays, attrs, n_out, consts=consts, name=f"case_{op}")
        graphs[f"f{i}"] = g
        feeds[case_id] = (f"f{i}", feed)
    return Compiled(graphs, X86Kernels(host.llvm_features(host.detect_mcpu()))), feeds


@pytest.mark.parametrize("case_id,op,inputs,attrs,n_out", CASES_HOOKED, ids=[c[0] for c in CASES_HOOKED])
def test_x86_kernels_match_the_reference(compiled, case_id, op, inputs, attrs, n_out):
    comp, feeds = compiled
    name, feed = feeds[case_id]
    g = comp.graphs[name]
    got = comp.run(name, feed)
    want = run(g, feed)
    # integers (quantized values, requantized outputs) exactly; floats within the lowering tests' tolerances
    assert_matches(got, want, [v.name for v in g.outputs], case_id)


def test_the_x86_kernel_rules_scheduled_the_hooked_ops(compiled):
    comp, _ = compiled
    rules = set(comp.build.schedule.rules.values())
    want = {"kernel:dense_fp32", "kernel:attention_fp32", "kernel:layer_norm_fp32", "kernel:quantize_row"}
    if "avx512vnni" in host.llvm_features(host.detect_mcpu()):
        want.add("kernel:dense_int8")
    assert want <= rules, (rules, comp.build.schedule.failures[:5])
    assert not any("kernel:" in f for f in comp.build.schedule.failures), comp.build.schedule.failures


@pytest.mark.skipif("avx512vnni" not in host.llvm_features(host.detect_mcpu()), reason="no AVX-512 VNNI")
def test_vnni_and_generic_int8_are_chosen_and_noted(compiled):
    """op_cases' QLinears (K=7, or a weight zero point) go generic and say why in the lowering notes."""
    comp, _ = compiled
    generic = [n for n in comp.lowered.notes if "generic int8 kernel" in n]
    assert any("K=7 is not a multiple of 4" in n for n in generic), generic
    assert all("K=7 is not a multiple of 4" in n or "nonzero zero point" in n for n in generic), generic
    vnni = [f for f, rule in comp.build.schedule.rules.items() if rule == "kernel:dense_int8"]
    assert len(vnni) >= len([c for c in VNNI_CASES if c[1] == "QLinear"]), vnni
