"""Broken and hostile variants of an ONNX model, for the robustness and fuzz tests (issue 13 item 4, issue 14).

Named mutations (``MUTATIONS``) each take a ``ModelProto`` and return a
changed copy; ``corpus(data, seed, n)`` draws ``n`` seeded cases mixing the
named mutations with random bit flips and random structural edits, each as
the bytes of a ``.onnx`` file and a label saying what was done.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Mutation = Callable[[onnx.ModelProto], onnx.ModelProto]


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    return out


def _first(m: onnx.ModelProto, op: str, pred: Callable[[onnx.NodeProto], bool] = lambda n: True) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == op and pred(n))


def _init(m: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name == name)


def _replace_init(m: onnx.ModelProto, name: str, arr: np.ndarray) -> None:
    t = _init(m, name)
    t.CopyFrom(numpy_helper.from_array(arr, name))


def _weight_of_last_matmul(m: onnx.ModelProto) -> str:
    """The weight of the last MatMul by a constant (the last FFN's output projection: nothing after it
    guards against NaN, unlike the attention's ``Where(IsNaN(p), 0, p)``)."""
    inits = {t.name for t in m.graph.initializer}
    return [n.input[1] for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits][-1]


# --------------------------------------------------------------- named ones
def outputs_removed(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    del m.graph.output[:]
    return m


def input_dim_zero(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    d = m.graph.input[0].type.tensor_type.shape.dim[1]
    d.Clear()
    d.dim_value = 0
    return m


def input_elem_type_99(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    m.graph.input[0].type.tensor_type.elem_type = 99
    return m


def input_dim_huge(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    d = m.graph.input[0].type.tensor_type.shape.dim[1]
    d.Clear()
    d.dim_value = 10**12
    return m


def expand_huge(m: onnx.ModelProto) -> onnx.ModelProto:
    """An extra output: the first hidden state expanded to [10**6, batch, seq, hidden]."""
    m = _copy(m)
    src = m.graph.output[0].name
    shape = helper.make_tensor("huge_shape", TensorProto.INT64, [4], [10**6, 1, 1, 1])
    m.graph.initializer.append(shape)
    m.graph.node.append(helper.make_node("Expand", [src, "huge_shape"], ["huge"], name="expand_huge"))
    m.graph.output.append(helper.make_tensor_value_info("huge", TensorProto.FLOAT, [10**6, "batch", "sequence", 64]))
    return m


def constant_of_shape_huge(m: onnx.ModelProto) -> onnx.ModelProto:
    """An extra output: ``ConstantOfShape([10**4, 10**4])`` (400 MB of float32 if materialized)."""
    m = _copy(m)
    shape = helper.make_tensor("cos_shape", TensorProto.INT64, [2], [10**4, 10**4])
    m.graph.initializer.append(shape)
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    m.graph.node.append(helper.make_node("ConstantOfShape", ["cos_shape"], ["big"], name="cos_big", value=value))
    m.graph.output.append(helper.make_tensor_value_info("big", TensorProto.FLOAT, [10**4, 10**4]))
    return m


def embeddings_cut(m: onnx.ModelProto) -> onnx.ModelProto:
    """``word_embeddings`` cut to 10 rows: token ids beyond 9 index out of range."""
    m = _copy(m)
    name = next(t.name for t in m.graph.initializer if "word_embeddings" in t.name)
    _replace_init(m, name, numpy_helper.to_array(_init(m, name))[:10].copy())
    return m


def positions_cut(m: onnx.ModelProto) -> onnx.ModelProto:
    """``position_embeddings`` cut to 10 rows: at sequence 16 the model's own position ids index out of range."""
    m = _copy(m)
    name = next(t.name for t in m.graph.initializer if "position_embeddings" in t.name)
    _replace_init(m, name, numpy_helper.to_array(_init(m, name))[:10].copy())
    return m


def matmul_swapped(m: onnx.ModelProto) -> onnx.ModelProto:
    """The first MatMul by a weight with its operands swapped ([H, H] @ [B, S, H] does not fit)."""
    m = _copy(m)
    inits = {t.name for t in m.graph.initializer}
    n = _first(m, "MatMul", lambda n: n.input[1] in inits)
    a, b = n.input[0], n.input[1]
    n.input[0], n.input[1] = b, a
    return m


def reshape_impossible(m: onnx.ModelProto) -> onnx.ModelProto:
    """An attention Reshape to [7, -1, 13] (the element count is not a multiple of 91)."""
    m = _copy(m)
    n = _first(m, "Reshape", lambda n: "attention" in n.name)
    m.graph.initializer.append(helper.make_tensor("bad_shape", TensorProto.INT64, [3], [7, -1, 13]))
    n.input[1] = "bad_shape"
    return m


def weight_nan(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    name = _weight_of_last_matmul(m)
    arr = numpy_helper.to_array(_init(m, name)).copy()
    arr.reshape(-1)[::7] = np.nan
    _replace_init(m, name, arr)
    return m


def weight_inf(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    name = _weight_of_last_matmul(m)
    arr = numpy_helper.to_array(_init(m, name)).copy()
    arr.reshape(-1)[:3] = np.inf
    _replace_init(m, name, arr)
    return m


MUTATIONS: dict[str, Mutation] = {
    "outputs_removed": outputs_removed,
    "input_dim_zero": input_dim_zero,
    "input_elem_type_99": input_elem_type_99,
    "input_dim_huge": input_dim_huge,
    "expand_huge": expand_huge,
    "constant_of_shape_huge": constant_of_shape_huge,
    "embeddings_cut": embeddings_cut,
    "positions_cut": positions_cut,
    "matmul_swapped": matmul_swapped,
    "reshape_impossible": reshape_impossible,
    "weight_nan": weight_nan,
    "weight_inf": weight_inf,
}


# ------------------------------------------------------------------ random
def bit_flips(data: bytes, rng: random.Random, k: int) -> bytes:
    buf = bytearray(data)
    for _ in range(k):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _random_edit(m: onnx.ModelProto, rng: random.Random) -> tuple[str, onnx.ModelProto]:
    """One structural edit at a random place."""
    m = _copy(m)
    nodes = m.graph.node
    n = nodes[rng.randrange(len(nodes))]
    kind = rng.choice(["drop_node", "dangling_input", "attr_int", "swap_inputs", "dup_output", "init_dims", "opset"])
    if kind == "drop_node":
        nodes.remove(n)
    elif kind == "dangling_input" and n.input:
        n.input[rng.randrange(len(n.input))] = "no_such_value"
    elif kind == "attr_int" and n.attribute:
        a = n.attribute[rng.randrange(len(n.attribute))]
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([-7, 5, 99, 10**9])
        elif a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([-9, 7, 10**6])
    elif kind == "swap_inputs" and len(n.input) >= 2:
        n.input[0], n.input[1] = n.input[1], n.input[0]
    elif kind == "dup_output" and n.output:
        n.output[0] = nodes[0].output[0]
    elif kind == "init_dims" and m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        if t.dims:
            t.dims[0] = t.dims[0] + rng.choice([1, 3])
    elif kind == "opset":
        m.opset_import[0].version = rng.choice([1, 5, 99])
    return f"{kind}@{n.name}", m


def corpus(data: bytes, seed: int, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` seeded cases: every named mutation first, then bit flips and random structural edits."""
    rng = random.Random(seed)
    base = onnx.load_from_string(data)
    count = 0
    for name, fn in MUTATIONS.items():
        if count >= n:
            return
        yield name, fn(base).SerializeToString()
        count += 1
    while count < n:
        if rng.random() < 0.4:
            k = rng.choice([1, 4, 32])
            yield f"bitflip{k}-{count}", bit_flips(data, rng, k)
        else:
            label, m = _random_edit(base, rng)
            yield f"{label}-{count}", m.SerializeToString()
        count += 1
