"""Graph IR: mutation API, text form round trip, verifier, interpreter, networkx/DOT."""

from __future__ import annotations

import numpy as np
import pytest

import accelopt.ir as ir
from accelopt.errors import InterpreterError, ParseError, VerifyError
from accelopt.interpreter import Interpreter, run
from accelopt.ir.analysis import has_cycle, to_dot

F32 = ir.DType.FLOAT32


def _tiny() -> ir.Graph:
    g = ir.Graph("tiny")
    x = g.add_input("x", ir.TensorType(F32, ("batch", 4)))
    w = g.add_initializer("w", np.arange(16, dtype=np.float32).reshape(4, 4) / 10)
    b = g.add_initializer("b", np.arange(4, dtype=np.float32))
    y = g.add_node("MatMul", [x, w], name="mm").output
    z = g.add_node("Add", [y, b], name="add").output
    r = g.add_node("Relu", [z], name="relu").output
    g.set_outputs([r])
    return g


def test_build_infers_symbolic_types() -> None:
    g = _tiny()
    assert str(g.node("mm").output.type) == "float32[batch,4]"
    assert g.op_counts() == {"MatMul": 1, "Add": 1, "Relu": 1}
    assert g.parameter_bytes() == {"float32": 80}
    g.verify()


def test_use_lists_follow_mutations() -> None:
    g = _tiny()
    mm, add, relu = g.nodes
    x = g.inputs[0]
    assert x.uses == [(mm, 0)]
    # bypass the Add: Relu reads the MatMul output directly
    add.output.replace_all_uses_with(mm.output)
    assert relu.inputs[0] is mm.output
    assert mm.output.uses == [(add, 0), (relu, 0)]
    assert add.output.uses == []
    g.remove_node(add)
    assert mm.output.uses == [(relu, 0)]
    assert g.initializers["b"].uses == []
    g.verify()
    assert g.remove_unused() == 1  # the now-unused bias initializer
    assert "b" not in g.initializers
    g.verify()


def test_replace_updates_graph_outputs() -> None:
    g = _tiny()
    relu = g.nodes[-1]
    n = relu.output.replace_all_uses_with(g.nodes[0].output)
    assert n == 1 and g.outputs[0] is g.nodes[0].output
    g.remove_node(relu)
    g.remove_unused()
    assert [n.op for n in g.nodes] == ["MatMul"]
    g.verify()


def test_remove_used_node_is_refused() -> None:
    g = _tiny()
    with pytest.raises(VerifyError, match="used by relu"):
        g.remove_node(g.node("add"))


def test_insert_before_and_toposort() -> None:
    g = _tiny()
    relu = g.node("relu")
    neg = g.add_node("Relu", [g.node("mm").output], name="early", before=g.node("add"))
    assert g.nodes.index(neg) == 1
    relu.set_input(0, neg.output)
    g.verify()
    # appending a producer after its consumer breaks order; toposort repairs it
    late = g.add_node("Relu", [g.inputs[0]], name="late")
    g.node("mm").set_input(0, late.output)
    with pytest.raises(VerifyError, match="used before it is defined"):
        g.verify()
    g.toposort()
    g.verify()
    assert g.nodes[0] is late


def test_verifier_reports_every_problem() -> None:
    g = _tiny()
    g.node("add").outputs[0].type = ir.TensorType(ir.DType.INT64, ("batch", 4))
    g.node("relu").attrs = ir.graph.freeze_attrs({"bogus": 1})
    with pytest.raises(VerifyError) as e:
        g.verify()
    msg = str(e.value)
    assert "node add (Add): output %add has dtype int64, inferred float32" in msg
    assert "node relu (Relu): unknown attribute 'bogus'" in msg


def test_inference_rejects_bad_shapes() -> None:
    g = ir.Graph()
    a = g.add_input("a", ir.TensorType(F32, (2, 3)))
    b = g.add_input("b", ir.TensorType(F32, (4, 5)))
    with pytest.raises(VerifyError, match="inner dimensions differ"):
        g.add_node("MatMul", [a, b])


def test_text_round_trip_is_identical() -> None:
    g = _tiny()
    g.add_node("Constant", [], {"value": np.array([1.5, -2.0], np.float32)}, name="c")
    big = g.add_initializer("onnx::W.1", np.ones((8, 8), np.float32))
    g.add_node("Relu", [big], name="big_relu")
    text = ir.print_graph(g)
    assert '%"onnx::W.1": float32[8,8] = const <sha:' in text
    assert "Constant{value=tensor<float32[2]>[1.5, -2.0]}() @c" in text
    g2 = ir.parse(text)
    assert ir.print_graph(g2) == text
    g2.verify()


def test_parse_fills_elided_weights_from_mapping() -> None:
    g = _tiny()
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    g.add_initializer("big", w)
    g2 = ir.parse(str(g), weights={"big": w})
    np.testing.assert_array_equal(g2.initializers["big"].const, w)
    assert str(g2) == str(g)


def test_parse_golden_text() -> None:
    text = """
    graph g(%x: float32[2,?], %m: bool[*]) {
      %k: int64[2] = const [0, -1]
      %y: float32[2,?] = Relu(%x) @r   # a comment
      return %y, %k
    }
    """
    g = ir.parse(text)
    assert g.inputs[0].type.shape == (2, None)
    assert g.inputs[1].type.shape is None
    assert g.initializers["k"].const.tolist() == [0, -1]
    assert str(g).splitlines()[2] == "  %y: float32[2,?] = Relu(%x) @r"


@pytest.mark.parametrize(
    "text, match",
    [
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = Nope(%x) @n\n  return %y\n}", "unknown op 'Nope'"),
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = Relu(%z) @n\n  return %y\n}", "undefined value %z"),
        ("graph g(%x: flot32[2]) {\n  return %x\n}", "unknown dtype 'flot32'"),
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = Relu{axis=1}(%x) @n\n  return %y\n}", "no attribute 'axis'"),
    ],
)
def test_parse_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        ir.parse(text)


def test_copy_is_independent() -> None:
    g = _tiny()
    c = g.copy()
    assert str(c) == str(g)
    c.node("relu").output.replace_all_uses_with(c.node("add").output)
    c.remove_node(c.node("relu"))
    assert "Relu" in str(g) and "Relu" not in str(c)
    g.verify()
    c.verify()
    assert c.initializers["w"].const is g.initializers["w"].const  # weights shared, read-only
    with pytest.raises(ValueError):
        c.initializers["w"].const[0, 0] = 1.0


def test_interpreter_matches_numpy_and_frees_values() -> None:
    g = _tiny()
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    expect = np.maximum(x @ w + np.arange(4, dtype=np.float32), 0)
    out = run(g, {"x": x})
    np.testing.assert_allclose(out["relu"], expect, rtol=1e-6, atol=1e-6)
    everything = Interpreter(g).run({"x": x}, keep_intermediates=True)
    assert set(everything) >= {"x", "w", "b", "mm", "add", "relu"}


def test_interpreter_input_errors() -> None:
    g = _tiny()
    with pytest.raises(InterpreterError, match="missing input"):
        run(g, {})
    with pytest.raises(InterpreterError, match=r"expected shape float32\[batch,4\]"):
        run(g, {"x": np.zeros((2, 5), np.float32)})


def test_networkx_and_dot() -> None:
    g = _tiny()
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 5  # input, 3 ops, output
    assert not has_cycle(g)
    dot = to_dot(g)
    assert dot.startswith('digraph "tiny"') and '"mm" -> "add"' in dot


def test_round_trip_keeps_digest_of_large_tensor_attributes() -> None:
    g = ir.Graph("c")
    big = np.arange(100, dtype=np.float32)
    g.add_node("Constant", [], {"value": big}, name="k")
    g.set_outputs([g.nodes[0].output])
    text = str(g)
    assert "tensor<float32[100]><sha:" in text
    assert str(ir.parse(text)) == text
    assert str(ir.parse(str(ir.parse(text)))) == text
