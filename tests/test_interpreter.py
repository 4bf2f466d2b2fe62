"""Interpreter buffer reuse: ops with an ``inplace`` kernel write into a dying input's array.

What is checked:

1. Results with buffer reuse equal, bit for bit, a run that keeps every value (no reuse).
2. Reuse never touches an array someone else still sees: a live view (Reshape, Transpose),
   the same array under another live value (Identity), a graph input, a constant.
3. Reuse happens: a chain of elementwise ops on a 4 MB tensor peaks near one tensor of
   traced memory instead of one per op.
4. Every registered ``inplace`` kernel agrees with its plain kernel (shape, dtype, values),
   including broadcasting cases where it must decline.
5. The malloc tuning (glibc): freed large blocks are reused without page faults, and
   ``ACCELOPT_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import accelopt.ir as ir
from accelopt.interpreter import Interpreter
from accelopt.ir.registry import get_op

F32 = ir.DType.FLOAT32
RNG_SEED = 7


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(RNG_SEED).standard_normal(shape).astype(np.float32)


def _chain_graph(n: int = 1024) -> ir.Graph:
    """x -> Add(b) -> Mul(c) -> Erf -> Relu -> Sub(x) -> Softmax."""
    g = ir.Graph("chain")
    x = g.add_input("x", ir.TensorType(F32, (n, n)))
    b = g.add_initializer("b", np.linspace(-1, 1, n, dtype=np.float32))
    c = g.add_initializer("c", np.array(0.5, np.float32))
    y = g.add_node("Add", [x, b], name="add").output
    y = g.add_node("Mul", [y, c], name="mul").output
    y = g.add_node("Erf", [y], name="erf").output
    y = g.add_node("Relu", [y], name="relu").output
    y = g.add_node("Sub", [y, x], name="sub").output
    y = g.add_node("Softmax", [y], name="softmax").output
    g.set_outputs([y])
    return g


def test_reuse_gives_the_same_bits_as_keeping_every_value() -> None:
    g = _chain_graph(64)
    x = _x((64, 64))
    interp = Interpreter(g)
    reused = interp.run({"x": x})["softmax"]
    kept = interp.run({"x": x}, keep_intermediates=True)["softmax"]
    np.testing.assert_array_equal(reused, kept)


def test_reuse_keeps_memory_near_one_tensor() -> None:
    n = 1024
    g = _chain_graph(n)
    x = _x((n, n))
    interp = Interpreter(g)
    interp.run({"x": x})  # warm up lazy imports outside the trace
    tensor = n * n * 4
    tracemalloc.start()
    try:
        interp.run({"x": x})
        _, reused_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        interp.run({"x": x}, keep_intermediates=True)
        _, kept_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # reuse: the first op's output is carried through the chain (+ Softmax's row statistics)
    assert reused_peak < 1.5 * tensor, reused_peak / tensor
    assert kept_peak >= 6 * tensor, kept_peak / tensor


def _graph_with_alias(kind: str) -> ir.Graph:
    """x2 = Add(x, b) dies at Relu while ``alias`` (a view or the same array) is still needed."""
    g = ir.Graph(kind)
    x = g.add_input("x", ir.TensorType(F32, (4, 6)))
    b = g.add_initializer("b", np.ones(6, np.float32))
    x2 = g.add_node("Add", [x, b], name="add").output
    if kind == "reshape":
        shape = g.add_initializer("shape", np.array([6, 4], np.int64))
        alias = g.add_node("Reshape", [x2, shape], name="alias").output
        back = g.add_initializer("back", np.array([4, 6], np.int64))
    elif kind == "transpose":
        alias = g.add_node("Transpose", [x2], attrs={"perm": [1, 0]}, name="alias").output
    else:
        alias = g.add_node("Identity", [x2], name="alias").output
    r = g.add_node("Neg", [x2], name="neg").output  # x2's last use: a reuse candidate
    if kind == "reshape":
        alias = g.add_node("Reshape", [alias, back], name="alias_back").output
    elif kind == "transpose":
        alias = g.add_node("Transpose", [alias], attrs={"perm": [1, 0]}, name="alias_back").output
    out = g.add_node("Sub", [alias, r], name="out").output
    g.set_outputs([out])
    return g


@pytest.mark.parametrize("kind", ["reshape", "transpose", "identity"])
def test_reuse_never_overwrites_a_live_alias(kind: str) -> None:
    x = _x((4, 6))
    out = Interpreter(_graph_with_alias(kind)).run({"x": x})["out"]
    x2 = x + 1
    np.testing.assert_array_equal(out, x2 - (-x2))


def test_reuse_leaves_inputs_and_constants_alone() -> None:
    g = ir.Graph("consts")
    x = g.add_input("x", ir.TensorType(F32, (3, 5)))
    c = g.add_initializer("c", _x((3, 5)))
    y = g.add_node("Add", [x, c], name="add").output  # both operands die here
    ident = g.add_node("Identity", [c], name="ident").output
    z = g.add_node("Mul", [ident, y], name="mul").output  # ident dies here but is the constant
    g.set_outputs([z])
    x = _x((3, 5)) * 3
    x_before, c_before = x.copy(), g.initializers["c"].const.copy()
    out = Interpreter(g).run({"x": x})["mul"]
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(g.initializers["c"].const, c_before)
    np.testing.assert_array_equal(out, c_before * (x_before + c_before))


_INPLACE_CASES = [
    ("Add", [(2, 3, 4), (4,)], {}),
    ("Add", [(4,), (2, 3, 4)], {}),  # input 0 is smaller than the result: must decline for i=0
    ("Sub", [(2, 3, 4), (2, 3, 4)], {}),
    ("Mul", [(2, 1, 4), (2, 3, 4)], {}),  # input 0 broadcasts: must decline for i=0
    ("Div", [(2, 3, 4), (1, 1, 4)], {}),
    ("Erf", [(2, 3, 4)], {}),
    ("Exp", [(2, 3, 4)], {}),
    ("Sqrt", [(2, 3, 4)], {}),
    ("Tanh", [(2, 3, 4)], {}),
    ("Sigmoid", [(2, 3, 4)], {}),
    ("Neg", [(2, 3, 4)], {}),
    ("Relu", [(2, 3, 4)], {}),
    ("Softmax", [(2, 3, 4)], {"axis": 1}),
    ("LayerNormalization", [(2, 3, 4), (4,), (4,)], {"epsilon": 1e-5}),
    ("Where", [(2, 3, 4), (2, 3, 4), (1, 3, 4)], {}),
    ("Where", [(3, 4), (2, 3, 4), (2, 3, 4)], {}),
    ("Where", [(2, 3, 4), (2, 3, 1), (2, 3, 4)], {}),
]


@pytest.mark.parametrize("op,shapes,attrs", _INPLACE_CASES, ids=lambda v: str(v))
def test_inplace_kernel_agrees_with_kernel(op: str, shapes: list[tuple[int, ...]], attrs: dict) -> None:
    opdef = get_op(op)
    assert opdef.inplace is not None
    full = opdef.full_attrs(attrs)
    rng = np.random.default_rng(RNG_SEED)
    ins = [np.abs(rng.standard_normal(s)).astype(np.float32) + 0.1 for s in shapes]
    if op == "Where":
        ins[0] = ins[0] > 0.8
    want = opdef.kernel([a.copy() for a in ins], full, 1)
    for i in range(len(ins) if op != "LayerNormalization" else 1):
        args = [a.copy() for a in ins]
        got = opdef.inplace(args, full, 1, i)
        broadcasting = op in ("Add", "Sub", "Mul", "Div", "Where")
        result_shape = np.broadcast_shapes(*shapes) if broadcasting else shapes[0]
        if shapes[i] != result_shape or (op == "Where" and i == 0):
            assert got is None, f"{op} wrote a {result_shape} result into input {i} of shape {shapes[i]}"
            continue
        assert got is not None and got[0] is args[i]
        np.testing.assert_array_equal(got[0], want[0])
        assert got[0].dtype == want[0].dtype


def test_inplace_declines_half_precision_and_mixed_dtypes() -> None:
    h = np.ones((2, 3), np.float16)
    assert get_op("Erf").inplace([h], {}, 1, 0) is None
    assert get_op("Add").inplace([h, np.ones((2, 3), np.float32)], {}, 1, 0) is None
    assert get_op("Softmax").inplace([h], {"axis": -1}, 1, 0) is None


def test_malloc_tuning_reuses_freed_pages() -> None:
    """After the tuning, a freed 40 MB array's pages serve the next one: no page faults (untuned glibc
    maps every such array afresh: ~500 faults here, and ~9,300 per BERT-base run)."""
    import resource

    from accelopt.interpreter import _tune_malloc

    Interpreter(_chain_graph(4))  # the first Interpreter tunes malloc
    if not _tune_malloc():
        pytest.skip("malloc tuning is off (not glibc, or ACCELOPT_MALLOC_TUNING=0)")
    a = np.ones(10 << 20, np.float32)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(10 << 20, np.float32)
    del a
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 50


def test_malloc_tuning_can_be_turned_off() -> None:
    code = "from accelopt.interpreter import _tune_malloc; print(_tune_malloc())"
    env = {**os.environ, "ACCELOPT_MALLOC_TUNING": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
