"""ONNX backend node tests run through the ONNX frontend and the interpreter.

The ``onnx`` package defines ~1900 single-op (and function-expanded) test
cases. The data normally sits in ``<site-packages>/onnx/backend/test/data/node``
(``model.onnx`` plus ``test_data_set_*/{input,output}_*.pb``); wheels that
omit it get the same layout generated once from ``onnx.backend.test.case.node``
into ``~/.cache/accelopt-tests/onnx-node/<onnx version>/``.

A case is *claimed* when every op in it is registered (same domain). Claimed
cases are imported with ``accelopt.frontends.onnx.import_onnx_model``, run by
the interpreter with every intermediate kept, and checked (cases whose opset
the frontend refuses, ``MIN_OPSET..MAX_OPSET``, go through ``direct_import``,
a minimal latest-opset importer in this module, and are counted apart):

1. every output equals the expected one: float32/float64 within rtol 1e-4 and
   atol 1e-5, float16 within 2e-3 (two fp16 ulps), bfloat16 within 1.6e-2
   (two bf16 ulps), integers and bools exactly, NaNs in the same places;
2. every value is an ndarray (never a numpy scalar), its runtime dtype is
   the IR's inferred dtype and every static inferred dim equals the runtime
   dim (the inference is right, not just the numbers);
3. the graph verifies.

Claimed cases are skipped only for these reasons (``skip_reason``):

a. an element type the IR does not have (string, complex, float8/4, int4/2,
   uint16/32/64) anywhere in the model's types, initializers or attributes;
b. sequence, optional or map types (the IR holds tensors only);
c. the explicit cases in ``EXPLICIT_SKIPS``, each with its reason.

The counts (passed, skipped by reason, failed, unclaimed) and the claimed ops
are printed in pytest's terminal summary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from accelopt.interpreter import Interpreter
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Value
from accelopt.ir.registry import all_ops
from accelopt.ir.types import TensorType

NODE_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
CACHE_ROOT = Path(os.environ.get("ACCELOPT_TEST_CACHE", Path.home() / ".cache" / "accelopt-tests"))

#: claimed cases skipped on purpose (case c): name -> reason
EXPLICIT_SKIPS: dict[str, str] = {
    "test_training_dropout": "training-mode Dropout draws a random mask",
    "test_training_dropout_default": "training-mode Dropout draws a random mask",
    "test_training_dropout_default_mask": "training-mode Dropout draws a random mask",
    "test_training_dropout_mask": "training-mode Dropout draws a random mask",
    "test_averagepool_2d_ceil_last_window_starts_on_pad": (
        "the expected output is written to 4 decimals (0.1511 for the mean 0.151056), which rtol 1e-4 cannot match"
    ),
}

#: (rtol, atol) per expected dtype; ints and bools compare exactly
TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float64): (1e-4, 1e-5),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float16): (2e-3, 2e-3),
    DType.BFLOAT16.np: (1.6e-2, 1.6e-2),
}

_IR_ONNX_TYPES = {d.onnx for d in DType}


# ----------------------------------------------------------------- case data
@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    directory: Path
    ops: set[tuple[str, str]] = field(default_factory=set)

    def data_sets(self) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
        for ds in sorted(self.directory.glob("test_data_set_*")):
            ins = [_read_tensor(p) for p in sorted(ds.glob("input_*.pb"), key=_pb_index)]
            outs = [_read_tensor(p) for p in sorted(ds.glob("output_*.pb"), key=_pb_index)]
            yield ins, outs


def _pb_index(p: Path) -> int:
    return int(p.stem.split("_")[-1])


def _read_tensor(path: Path) -> np.ndarray:
    t = TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _generate_node_data(target: Path) -> None:
    """Write ONNX's node test cases in the data/node layout (tensor data only)."""
    import onnx.backend.test.case.node as node_cases

    tmp = Path(tempfile.mkdtemp(prefix="onnx-node-", dir=target.parent))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    for case in cases:
        d = tmp / case.name
        d.mkdir()
        (d / "model.onnx").write_bytes(case.model.SerializeToString())
        graph = case.model.graph
        if not all(vi.type.HasField("tensor_type") for vi in list(graph.input) + list(graph.output)):
            continue  # sequence/optional/map data: skipped by type anyway
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = d / f"test_data_set_{i}"
            ds.mkdir()
            for prefix, arrays, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, arr in enumerate(arrays):
                    t = arr if isinstance(arr, TensorProto) else numpy_helper.from_array(np.asarray(arr), infos[j].name)
                    (ds / f"{prefix}_{j}.pb").write_bytes(t.SerializeToString())
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)


def node_data_dir() -> Path:
    if NODE_DATA.is_dir() and any(NODE_DATA.iterdir()):
        return NODE_DATA
    target = CACHE_ROOT / "onnx-node" / onnx.__version__
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _generate_node_data(target)
    return target


def load_cases() -> list[Case]:
    cases = []
    for d in sorted(node_data_dir().iterdir()):
        if not (d / "model.onnx").is_file():
            continue
        model = onnx.load(str(d / "model.onnx"))
        ops = {(n.domain if n.domain != "ai.onnx" else "", n.op_type) for n in _all_nodes(model.graph)}
        cases.append(Case(d.name, model, d, ops))
    return cases


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _all_nodes(g)


def is_claimed(case: Case) -> bool:
    ops = all_ops()
    for domain, op in case.ops:
        opdef = ops.get(op)
        if opdef is None or opdef.domain != domain:
            return False
    # model-local functions are inlined by the frontend; their bodies must be claimed too
    for f in case.model.functions:
        for n in f.node:
            opdef = ops.get(n.op_type)
            if opdef is None or opdef.domain != (n.domain if n.domain != "ai.onnx" else ""):
                return False
    return bool(case.ops)


# ---------------------------------------------------------------- skip rules
def _type_problem(tp: onnx.TypeProto) -> str | None:
    kind = tp.WhichOneof("value")
    if kind != "tensor_type":
        return f"{kind} values are not in the IR (tensors only)"
    code = tp.tensor_type.elem_type
    if code not in _IR_ONNX_TYPES:
        return f"element type {TensorProto.DataType.Name(code)} is not in the IR"
    return None


_DTYPE_ATTRS = {
    ("Cast", "to"),
    ("EyeLike", "dtype"),
    ("QuantizeLinear", "output_dtype"),
    ("DequantizeLinear", "output_dtype"),
    ("RandomNormal", "dtype"),
    ("Bernoulli", "dtype"),
}


def skip_reason(case: Case) -> str | None:
    """Why a claimed case cannot run (rules a-c of the module docstring), or None."""
    if case.name in EXPLICIT_SKIPS:
        return EXPLICIT_SKIPS[case.name]
    g = case.model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        problem = _type_problem(vi.type)
        if problem:
            return problem
    for t in g.initializer:
        if t.data_type not in _IR_ONNX_TYPES:
            return f"element type {TensorProto.DataType.Name(t.data_type)} is not in the IR"
    for n in _all_nodes(g):
        for a in n.attribute:
            if (n.op_type, a.name) in _DTYPE_ATTRS and a.i and a.i not in _IR_ONNX_TYPES:
                return f"element type {TensorProto.DataType.Name(a.i)} is not in the IR"
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type not in _IR_ONNX_TYPES:
                return f"element type {TensorProto.DataType.Name(a.t.data_type)} is not in the IR"
            if a.type in (onnx.AttributeProto.STRING, onnx.AttributeProto.STRINGS) and n.op_type == "Constant":
                return "string constants are not in the IR"
    return None


# ------------------------------------------------------------------ checking
def compare(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """A mismatch description, or None when ``got`` matches ``want`` (check 1)."""
    got = np.asarray(got)
    if got.dtype != want.dtype:
        return f"{name}: dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"
    tol = TOLERANCES.get(want.dtype)
    if tol is None:
        if not np.array_equal(got, want):
            bad = int(np.count_nonzero(got != want))
            return f"{name}: {bad} of {want.size} elements differ (exact dtype {want.dtype})"
        return None
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    if not np.array_equal(np.isnan(g64), np.isnan(w64)):
        return f"{name}: NaNs differ"
    ok = np.isclose(g64, w64, rtol=tol[0], atol=tol[1], equal_nan=True)
    if not ok.all():
        i = np.unravel_index(int(np.argmin(ok)), ok.shape) if ok.ndim else ()
        err = float(np.nanmax(np.abs(g64 - w64)[~ok]))
        return (
            f"{name}: {int((~ok).sum())} of {want.size} elements off (max abs err {err:.3g}, "
            f"e.g. at {tuple(int(x) for x in i)}: got {g64[i]!r}, expected {w64[i]!r})"
        )
    return None


def check_types(graph, values: dict[str, np.ndarray]) -> list[str]:
    """Runtime arrays against inferred types (check 2)."""
    problems = []
    for v in graph.values():
        arr = values.get(v.name)
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray):
            problems.append(f"%{v.name}: runtime value is a {type(arr).__name__}, not an ndarray")
            continue
        if arr.dtype != v.type.dtype.np:
            problems.append(f"%{v.name}: runtime dtype {arr.dtype}, inferred {v.type}")
        elif v.type.shape is not None:
            s = v.type.shape
            if len(s) != arr.ndim or any(isinstance(d, int) and d != n for d, n in zip(s, arr.shape)):
                problems.append(f"%{v.name}: runtime shape {list(arr.shape)}, inferred {v.type}")
    return problems


def _attr_value(a: onnx.AttributeProto, kind: str):
    val = onnx.helper.get_attribute_value(a)
    if isinstance(val, TensorProto):
        return numpy_helper.to_array(val)
    if isinstance(val, bytes):
        return val.decode()
    if isinstance(val, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in val)
    if kind == "dtype":
        return DType.from_onnx(val)
    return val


def _onnx_type(tp: onnx.TypeProto) -> TensorType:
    tt = tp.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorType(DType.from_onnx(tt.elem_type), shape)


def direct_import(model: onnx.ModelProto) -> Graph:
    """Latest-opset ONNX to IR with no rewrites: used only where the frontend refuses the opset."""
    g = Graph(model.graph.name or "main")
    values: dict[str, Value] = {}
    for t in model.graph.initializer:
        values[t.name] = g.add_initializer(t.name, numpy_helper.to_array(t))
    for vi in model.graph.input:
        if vi.name not in values:
            values[vi.name] = g.add_input(vi.name, _onnx_type(vi.type))
    ops = all_ops()
    for k, n in enumerate(model.graph.node):
        opdef = ops[n.op_type]
        attrs = {}
        for a in n.attribute:
            if n.op_type == "Constant" and a.name != "value":
                val = onnx.helper.get_attribute_value(a)
                dt = np.float32 if a.name.startswith("value_float") else np.int64
                attrs["value"] = np.array(val, dtype=dt)
                continue
            spec = opdef.attrs.get(a.name)
            if spec is None:
                raise ValueError(f"node {n.name or k} ({n.op_type}): attribute {a.name!r} is not declared")
            attrs[a.name] = _attr_value(a, spec.kind)
        ins = [values[i] if i else None for i in n.input]
        while ins and ins[-1] is None:
            ins.pop()
        outs = list(n.output)
        while outs and not outs[-1]:
            outs.pop()
        outs += [""] * max(0, opdef.outputs[0] - len(outs))
        names = [o or g.unique_name(f"unused_{k}_{i}") for i, o in enumerate(outs)]
        node = g.add_node(n.op_type, ins, attrs, outputs=names, name=n.name or f"{n.op_type.lower()}_{k}")
        values.update({v.name: v for v in node.outputs})
    g.set_outputs([values[vi.name] for vi in model.graph.output])
    return g


def _frontend_refuses_opset(model: onnx.ModelProto) -> bool:
    from accelopt.frontends import onnx as fe

    lo, hi = getattr(fe, "MIN_OPSET", 1), getattr(fe, "MAX_OPSET", 10**6)
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return version is not None and not lo <= version <= hi


def run_case(case: Case) -> list[str]:
    """Import and run one claimed case; returns its problems (empty = passed)."""
    from accelopt.frontends.onnx import import_onnx_model

    try:
        if _frontend_refuses_opset(case.model):
            graph = direct_import(case.model)
        else:
            graph = import_onnx_model(case.model, source=case.name)
        graph.verify()
        interp = Interpreter(graph)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        return [f"import: {type(e).__name__}: {e}"]
    problems: list[str] = []
    in_names = [vi.name for vi in case.model.graph.input]
    out_names = [vi.name for vi in case.model.graph.output]
    for k, (ins, outs) in enumerate(case.data_sets()):
        feeds = dict(zip(in_names, ins))
        feeds = {v.name: feeds[v.name] for v in graph.inputs if v.name in feeds}
        try:
            with np.errstate(all="ignore"):
                # a plain run (buffers reused between ops) gives the outputs; a second run
                # keeping every value checks each value against its inferred type
                results = interp.run(feeds)
                values = interp.run(feeds, keep_intermediates=True)
        except Exception as e:  # noqa: BLE001
            problems.append(f"data set {k}: run: {type(e).__name__}: {e}")
            continue
        for name, want in zip(out_names, outs):
            if name not in results:
                problems.append(f"data set {k}: output {name!r} missing")
                continue
            msg = compare(name, results[name], want)
            if msg:
                problems.append(f"data set {k}: {msg}")
        problems += [f"data set {k}: {p}" for p in check_types(graph, values)]
    return problems


# --------------------------------------------------------------------- tests
@dataclass
class Results:
    passed: list[str] = field(default_factory=list)
    direct: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unclaimed: int = 0
    claimed_ops: set[str] = field(default_factory=set)
    passed_ops: Counter = field(default_factory=Counter)

    def summary(self) -> list[str]:
        by_reason = Counter(self.skipped.values())
        lines = [
            f"ONNX node conformance: {len(self.passed)} passed, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed, {self.unclaimed} unclaimed (ops not registered)",
            f"  {len(self.direct)} of the claimed cases use an opset the ONNX frontend refuses and were imported by "
            "direct_import (latest-opset, no rewrites)",
        ]
        lines += [f"  skipped {n:4d}: {reason}" for reason, n in by_reason.most_common()]
        lines.append(f"  ops with passing cases ({len(self.passed_ops)}): {' '.join(sorted(self.passed_ops))}")
        untested = sorted(self.claimed_ops - set(self.passed_ops))
        if untested:
            lines.append(f"  claimed ops without a passing case: {' '.join(untested)}")
        return lines


class _SummaryPlugin:
    def __init__(self, results: Results) -> None:
        self.results = results

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.section("onnx node conformance")
        for line in self.results.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return load_cases()


@pytest.fixture(scope="module")
def results(cases: list[Case], request: pytest.FixtureRequest) -> Results:
    res = Results()
    std_ops = {name for name, op in all_ops().items() if op.domain == ""}
    for case in cases:
        if not is_claimed(case):
            res.unclaimed += 1
            continue
        res.claimed_ops |= {op for _, op in case.ops}
        reason = skip_reason(case)
        if reason:
            res.skipped[case.name] = reason
            continue
        if _frontend_refuses_opset(case.model):
            res.direct.append(case.name)
        problems = run_case(case)
        if problems:
            res.failed[case.name] = problems
        else:
            res.passed.append(case.name)
            res.passed_ops.update(op for _, op in case.ops if op in std_ops)
    request.config.pluginmanager.register(_SummaryPlugin(res), "accelopt-onnx-conformance-summary")
    return res


def test_onnx_node_conformance(results: Results) -> None:
    """Every claimed, unskipped node test passes; the failure message lists every mismatch."""
    assert results.passed, "no ONNX node test case ran"
    if results.failed:
        lines = [f"{len(results.failed)} ONNX node test case(s) failed:"]
        for name, problems in sorted(results.failed.items()):
            lines.append(f"  {name}:")
            lines += [f"    {p}" for p in problems]
        lines += results.summary()
        pytest.fail("\n".join(lines), pytrace=False)


#: ops the library must cover with at least one passing node test
REQUIRED_OPS = """
Add And Cast Concat Constant ConstantOfShape CumSum Div Equal Erf Expand Flatten Gather GatherND Gelu Gemm
GreaterOrEqual Identity IsNaN LayerNormalization MatMul Mul Not Pow Range ReduceMean Reshape Shape Slice Softmax
Sqrt Sub Tanh Transpose Unsqueeze Where Squeeze Neg Abs Exp Log Reciprocal Sigmoid Relu Max Min Sum Less
LessOrEqual Greater Or Xor Sign Floor Ceil Clip ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 ReduceSumSquare
ArgMax Split Tile Dropout Trilu Mod Softplus HardSigmoid LeakyRelu Elu Einsum Size EyeLike Mish Sin Cos Softsign
MatMulInteger QuantizeLinear DequantizeLinear DynamicQuantizeLinear BitShift
Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Resize
""".split()


def test_required_ops_have_passing_cases(results: Results) -> None:
    missing = [op for op in REQUIRED_OPS if results.passed_ops[op] == 0]
    assert not missing, f"required ops without a passing ONNX node test: {missing}"


def test_explicit_skips_name_real_claimed_cases(cases: list[Case]) -> None:
    by_name = {c.name: c for c in cases}
    stale = [n for n in EXPLICIT_SKIPS if n not in by_name or not is_claimed(by_name[n])]
    assert not stale, f"EXPLICIT_SKIPS entries that are not claimed node tests: {stale}"


def test_compare_detects_mismatches() -> None:
    want = np.array([1.0, 2.0, np.nan], np.float32)
    assert compare("y", want.copy(), want) is None
    assert compare("y", want.astype(np.float64), want) is not None  # dtype
    assert compare("y", np.array([1.0, 2.001, np.nan], np.float32), want) is not None  # value
    assert compare("y", np.array([1.0, 2.0, 0.0], np.float32), want) is not None  # NaN placement
    assert compare("y", np.array([1, 2], np.int64), np.array([1, 3], np.int64)) is not None
    assert compare("y", np.array([[1, 2]], np.int64), np.array([1, 2], np.int64)) is not None  # shape
