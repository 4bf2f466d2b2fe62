"""Standard ONNX linear algebra, normalization and reduction ops (latest opset).

Cases handled:

1. MatMul (numpy broadcasting batch dims, 1-D operands), Gemm (transA/transB,
   alpha, beta, optional C broadcast to [M, N]), Einsum (explicit and implicit
   output, ellipsis). bfloat16 products are computed in float32.
2. Softmax, LogSoftmax, Hardmax along ``axis`` (opset-13 semantics), computed
   stably (max subtracted) in float32 for float16/bfloat16 inputs.
3. LayerNormalization: normalizes over axes ``axis..rank-1``; outputs Y and
   the optional Mean and InvStdDev (shape ``X.shape[:axis] + [1]*k``, dtype
   from ``stash_type``); float16/bfloat16 statistics in float32.
4. Reductions with axes as an input (ReduceSum, Mean, Max, Min, Prod, L1, L2,
   LogSum, LogSumExp, SumSquare): ``keepdims``, ``noop_with_empty_axes``,
   empty reductions give the identity (-inf for Max, +inf for Min, ...).
5. ArgMax/ArgMin (``keepdims``, ``select_last_index``), CumSum (``exclusive``,
   ``reverse``), TopK (ties resolved toward the lower index).
"""

from __future__ import annotations

import numpy as np

from accelopt.ir.dtypes import DType
from accelopt.ir.ops.common import (
    FLOAT_TYPES,
    NUMERIC_TYPES,
    Attrs,
    Ins,
    broadcast_shapes,
    check_dtype_in,
    check_same_dtype,
    ctx_sym,
    dims_compatible_k,
    infer_axes,
    infer_axis,
    ints_arg,
    normalize_axes,
    normalize_axis,
    onnx_dtype,
)
from accelopt.ir.registry import AttrSpec, InferContext, define_op
from accelopt.ir.types import Dim, TensorType

BF16 = DType.BFLOAT16.np
_HALF = (np.dtype(np.float16), BF16)
I64 = DType.INT64


def _work(x: np.ndarray) -> np.ndarray:
    """float16/bfloat16 upcast to float32 for accumulation; others unchanged."""
    return x.astype(np.float32) if x.dtype in _HALF else x



# ------------------------------------------------------------ 1. linear algebra
def _matmul_infer(ctx: InferContext) -> list[TensorType]:
    check_same_dtype(ctx, [0, 1])
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    a, b = ctx.type(0), ctx.type(1)
    if a.shape is None or b.shape is None:
        return [TensorType(a.dtype, None)]
    if len(a.shape) == 0 or len(b.shape) == 0:
        raise ctx.error(f"MatMul operands must have rank >= 1: {a} @ {b}")
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) == 1:
        sa = [1, *sa]
    if len(sb) == 1:
        sb = [*sb, 1]
    if not dims_compatible_k(sa[-1], sb[-2]):
        raise ctx.error(f"inner dimensions differ: {a} @ {b}")
    try:
        batch = broadcast_shapes([tuple(sa[:-2]), tuple(sb[:-2])]) or ()
    except ValueError as e:
        raise ctx.error(f"batch dimensions do not broadcast: {a} @ {b}: {e}") from None
    out = list(batch) + [sa[-2], sb[-1]]
    if len(a.shape) == 1:
        out.pop(-2)
    if len(b.shape) == 1:
        out.pop(-1)
    return [TensorType(a.dtype, tuple(out))]


_BLAS = None


def _single_thread_blas():  # noqa: ANN202 - a threadpoolctl context manager
    """A context that runs BLAS on one thread (created once; entering it costs ~10 us)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _blasable(x: np.ndarray) -> np.ndarray:
    """``x`` with its last two axes in a layout BLAS takes without numpy's slow fallback loop."""
    if x.ndim >= 2 and x.strides[-1] != x.itemsize:
        return np.ascontiguousarray(x)
    return x


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul at BLAS speed; float16 and bfloat16 via float32 (float32 accumulation, rounded back).

    1. An N-D activation times a 2-D weight runs as one 2-D GEMM.
    2. A stack of small matrices (attention scores, context) runs with single-threaded BLAS:
       OpenBLAS's per-call thread hand-off costs more than the tiny GEMMs (measured 4x on 2 cores).
    3. Operands whose last axis is strided (transposed views) are made contiguous first; numpy's
       matmul otherwise falls back to a loop far slower than the copy.
    """
    if a.dtype in _HALF:
        return matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous and a.dtype == b.dtype:  # case 1
        out = np.empty(a.shape[:-1] + (b.shape[-1],), a.dtype)  # owns its memory (a later op may reuse it)
        np.matmul(a.reshape(-1, a.shape[-1]), b, out=out.reshape(-1, b.shape[-1]))
        return out
    a, b = _blasable(a), _blasable(b)  # case 3
    if (a.ndim > 2 or b.ndim > 2) and a.dtype.kind == "f":  # case 2
        with _single_thread_blas():
            return np.asarray(np.matmul(a, b))
    return np.asarray(np.matmul(a, b))


define_op("MatMul", inputs=2, infer=_matmul_infer, kernel=lambda ins, a, n: [matmul(ins[0], ins[1])])


def _gemm_infer(ctx: InferContext) -> list[TensorType]:
    check_same_dtype(ctx, [0, 1, 2])
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    a, b = ctx.type(0), ctx.type(1)
    for t in (a, b):
        if t.shape is not None and len(t.shape) != 2:
            raise ctx.error(f"Gemm operands must be 2-D: {a}, {b}")
    m: Dim = None if a.shape is None else a.shape[1 if ctx.attrs["transA"] else 0]
    ka: Dim = None if a.shape is None else a.shape[0 if ctx.attrs["transA"] else 1]
    kb: Dim = None if b.shape is None else b.shape[1 if ctx.attrs["transB"] else 0]
    n: Dim = None if b.shape is None else b.shape[0 if ctx.attrs["transB"] else 1]
    if not dims_compatible_k(ka, kb):
        raise ctx.error(
            f"inner dimensions differ: {a}, {b} (transA={ctx.attrs['transA']}, transB={ctx.attrs['transB']})"
        )
    if ctx.has(2):
        c = ctx.type(2)
        try:
            out = broadcast_shapes([(m, n), c.shape])
        except ValueError as e:
            raise ctx.error(f"C {c} does not broadcast to [{m},{n}]: {e}") from None
        if c.shape is not None and len(c.shape) > 2:
            raise ctx.error(f"C must have rank <= 2, got {c}")
        if out is not None:
            m, n = out
    return [TensorType(a.dtype, (m, n))]


def _gemm(ins: Ins, attrs: Attrs, n_out: int) -> list[np.ndarray]:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    dt = a.dtype
    a, b = _work(a), _work(b)
    if attrs["transA"]:
        a = a.T
    if attrs["transB"]:
        b = b.T
    y = np.matmul(a, b)
    alpha, beta = attrs["alpha"], attrs["beta"]
    if y.dtype.kind in "iu":
        y = y.astype(np.float64) * alpha
        if c is not None:
            y = y + beta * c.astype(np.float64)
        return [y.astype(dt)]
    if alpha != 1.0:
        y *= alpha
    if c is not None:
        c = _work(c)
        y += c if beta == 1.0 else c * beta
    return [y.astype(dt, copy=False)]


define_op(
    "Gemm",
    inputs=(2, 3),
    infer=_gemm_infer,
    kernel=_gemm,
    attrs={
        "alpha": AttrSpec("float", 1.0),
        "beta": AttrSpec("float", 1.0),
        "transA": AttrSpec("int", 0),
        "transB": AttrSpec("int", 0),
    },
)


def parse_einsum(equation: str, n_inputs: int) -> tuple[list[str], str]:
    """Split an einsum equation into input terms and the (explicit or implicit) output term.

    Ellipses stay as ``...`` in the returned terms.
    """
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, rhs = eq.split("->")
    else:
        lhs, rhs = eq, None
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        raise ValueError(f"equation {equation!r} has {len(terms)} terms for {n_inputs} inputs")
    if rhs is None:
        letters = [c for t in terms for c in t.replace("...", "")]
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        rhs = ("..." if any("..." in t for t in terms) else "") + "".join(once)
    for t in terms + [rhs]:
        body = t.replace("...", "", 1)
        if "." in body or not all(c.isalpha() for c in body):
            raise ValueError(f"invalid einsum term {t!r} in {equation!r}")
    return terms, rhs


def _einsum_infer(ctx: InferContext) -> list[TensorType]:
    n = len(ctx.input_types)
    dt = check_same_dtype(ctx, list(range(n)))
    try:
        terms, rhs = parse_einsum(ctx.attrs["equation"], n)
    except ValueError as e:
        raise ctx.error(str(e)) from None
    letter: dict[str, Dim] = {}
    ell_shapes: list[tuple[Dim, ...]] = []
    for i, term in enumerate(terms):
        shape = ctx.type(i).shape
        if shape is None:
            return [TensorType(dt, None)]
        n_letters = len(term.replace("...", ""))
        if "..." in term:
            k = len(shape) - n_letters
            if k < 0:
                raise ctx.error(f"term {term!r} does not match {ctx.type(i)}")
            at = term.index("...")
            ell_shapes.append(tuple(shape[at : at + k]))
            dims = list(shape[:at]) + list(shape[at + k :])
        else:
            if n_letters != len(shape):
                raise ctx.error(f"term {term!r} does not match {ctx.type(i)}")
            dims = list(shape)
        for c, d in zip(term.replace("...", ""), dims):
            prev = letter.get(c)
            if c not in letter or prev == 1 or (prev is None and d != 1):
                letter[c] = d
            elif isinstance(prev, int) and isinstance(d, int) and d not in (1, prev):
                raise ctx.error(f"index {c!r} has sizes {prev} and {d}")
    try:
        ell = broadcast_shapes(ell_shapes) if ell_shapes else ()
    except ValueError as e:
        raise ctx.error(f"ellipsis dimensions do not broadcast: {e}") from None
    missing = [c for c in rhs.replace("...", "") if c not in letter]
    if missing:
        raise ctx.error(f"output indices {missing} do not appear in the inputs")
    if "..." in rhs:
        pre, post = rhs.split("...")
        out = [letter[c] for c in pre] + list(ell or ()) + [letter[c] for c in post]
    else:
        out = [letter[c] for c in rhs]
    return [TensorType(dt, tuple(out))]


def _einsum(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    dt = ins[0].dtype
    arrs = [_work(a) for a in ins]
    terms, rhs = parse_einsum(attrs["equation"], len(ins))
    r = np.einsum(",".join(terms) + "->" + rhs, *arrs, optimize=len(arrs) > 2)
    return [np.asarray(r).astype(dt, copy=False)]


define_op("Einsum", inputs=(1, -1), infer=_einsum_infer, kernel=_einsum, attrs={"equation": AttrSpec("str")})


# ------------------------------------------------------------ 2. softmax family
def _softmax_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype_in(ctx, 0, FLOAT_TYPES)
    if t.shape is not None:
        infer_axis(ctx, ctx.attrs["axis"], len(t.shape))
    return [t]


def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Numerically stable softmax in x's precision (float32 for half types).

    ``out`` (may be ``x`` itself) receives the result when x is float32/float64; half types
    are computed in a float32 copy whatever ``out`` says.
    """
    xf = _work(x)
    e = np.subtract(xf, xf.max(axis=axis, keepdims=True), out=out if xf is x else None)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    xf = _work(x)
    d = xf - xf.max(axis=axis, keepdims=True)
    d -= np.log(np.exp(d).sum(axis=axis, keepdims=True))
    return d.astype(x.dtype, copy=False)


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    idx = np.expand_dims(np.argmax(_work(x), axis=axis), axis)
    out = np.zeros_like(x)
    np.put_along_axis(out, idx, 1, axis=axis)
    return out


def _softmax_inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
    x = ins[0]
    if x.dtype not in (np.float32, np.float64):
        return None
    return [softmax(x, normalize_axis(attrs["axis"], x.ndim), out=x)]


for _name, _fn in {"Softmax": softmax, "LogSoftmax": _log_softmax, "Hardmax": _hardmax}.items():

    def _mk(f):
        return lambda ins, a, n: [f(ins[0], normalize_axis(a["axis"], ins[0].ndim))]

    define_op(
        _name,
        infer=_softmax_infer,
        kernel=_mk(_fn),
        attrs={"axis": AttrSpec("int", -1)},
        inplace=_softmax_inplace if _name == "Softmax" else None,
    )


# ----------------------------------------------------------- 3. LayerNormalization
def _ln_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.type(0)
    check_dtype_in(ctx, 0, FLOAT_TYPES)
    check_same_dtype(ctx, [0, 1, 2])
    stash = onnx_dtype(ctx.attrs["stash_type"], ctx)
    out = [x]
    if x.shape is None:
        stat_shape = None
    else:
        axis = infer_axis(ctx, ctx.attrs["axis"], len(x.shape))
        stat_shape = tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)
    for _ in range(1, ctx.num_outputs):
        out.append(TensorType(stash, stat_shape))
    return out


def layer_norm(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray | None,
    axis: int = -1,
    epsilon: float = 1e-5,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, Mean, InvStdDev) of ONNX LayerNormalization; statistics in float32 or wider.

    ``out`` (may be ``x`` itself) receives Y when x is float32/float64; ignored for half types.
    """
    axis = normalize_axis(axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    xf = _work(x)
    mean = xf.mean(axis=axes, keepdims=True)
    d = np.subtract(xf, mean, out=out if xf is x else None)
    var = np.square(d).mean(axis=axes, keepdims=True)
    var += epsilon
    inv = np.sqrt(var, out=var)
    np.reciprocal(inv, out=inv)
    d *= inv
    y = d.astype(x.dtype, copy=False)
    y *= scale
    if bias is not None:
        y += bias
    return y, mean, inv


def _ln_kernel(ins: Ins, attrs: Attrs, n: int, out: np.ndarray | None = None) -> list[np.ndarray]:
    bias = ins[2] if len(ins) > 2 else None
    y, mean, inv = layer_norm(ins[0], ins[1], bias, attrs["axis"], attrs["epsilon"], out=out)
    stash = DType.from_onnx(attrs["stash_type"]).np
    return [y, mean.astype(stash, copy=False), inv.astype(stash, copy=False)][:n]


def _ln_inplace(ins: Ins, attrs: Attrs, n: int, i: int) -> list[np.ndarray] | None:
    x = ins[0]
    if i != 0 or x.dtype not in (np.float32, np.float64) or x.dtype != ins[1].dtype:
        return None
    return _ln_kernel(ins, attrs, n, out=x)


define_op(
    "LayerNormalization",
    inputs=(2, 3),
    outputs=(1, 3),
    infer=_ln_infer,
    kernel=_ln_kernel,
    inplace=_ln_inplace,
    attrs={
        "axis": AttrSpec("int", -1),
        "epsilon": AttrSpec("float", 1e-5),
        "stash_type": AttrSpec("int", 1),
    },
    doc="stash_type is an ONNX TensorProto code (1 = float32)",
)


# ------------------------------------------------------------------ 4. reductions
def _reduce_infer_factory(allowed: frozenset[DType], out_dtype: DType | None = None):
    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.type(0)
        check_dtype_in(ctx, 0, allowed)
        dt = out_dtype or t.dtype
        keep = ctx.attrs["keepdims"]
        axes = ints_arg(ctx, 1) if ctx.has(1) else []  # absent: as empty (below)
        if t.shape is None:
            return [TensorType(dt, None)]
        r = len(t.shape)
        if axes is None:
            return [TensorType(dt, (None,) * r if keep else None)]
        if not axes:
            if ctx.attrs["noop_with_empty_axes"]:
                return [TensorType(dt, t.shape)]
            axes = list(range(r))
        axes = infer_axes(ctx, axes, r)
        if keep:
            return [TensorType(dt, tuple(1 if i in axes else d for i, d in enumerate(t.shape)))]
        return [TensorType(dt, tuple(d for i, d in enumerate(t.shape) if i not in axes))]

    return infer


def _lse(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


def _extreme(fn, ident_float: float):
    def f(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
        if x.dtype == np.bool_:
            return fn(x, axis=axis, keepdims=keepdims, initial=ident_float > 0)
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            return fn(x, axis=axis, keepdims=keepdims, initial=info.min if ident_float < 0 else info.max)
        return fn(x, axis=axis, keepdims=keepdims, initial=ident_float)

    return f


_REDUCTIONS = {
    "ReduceSum": (lambda x, ax, k: np.sum(x, axis=ax, keepdims=k, dtype=x.dtype), None),
    "ReduceMean": (lambda x, ax, k: np.mean(x, axis=ax, keepdims=k), None),
    "ReduceMax": (_extreme(np.max, -np.inf), None),
    "ReduceMin": (_extreme(np.min, np.inf), None),
    "ReduceProd": (lambda x, ax, k: np.prod(x, axis=ax, keepdims=k, dtype=x.dtype), None),
    "ReduceL1": (lambda x, ax, k: np.sum(np.abs(x), axis=ax, keepdims=k, dtype=x.dtype), np.abs),
    "ReduceL2": (
        lambda x, ax, k: np.sqrt(
            np.sum(np.square(x.astype(np.float64) if x.dtype.kind in "iu" else x), axis=ax, keepdims=k)
        ),
        np.abs,
    ),
    "ReduceSumSquare": (lambda x, ax, k: np.sum(np.square(x), axis=ax, keepdims=k, dtype=x.dtype), np.square),
    "ReduceLogSum": (lambda x, ax, k: np.log(np.sum(x, axis=ax, keepdims=k)), np.log),
    "ReduceLogSumExp": (_lse, lambda x: np.log(np.exp(x))),
}


def _reduce_kernel(name: str):
    reduce_fn, noop_fn = _REDUCTIONS[name]

    def kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
        x = ins[0]
        axes_in = ins[1] if len(ins) > 1 and ins[1] is not None else None
        axes = [] if axes_in is None else [int(a) for a in axes_in.reshape(-1)]
        dt = x.dtype
        xw = _work(x) if name != "ReduceMax" and name != "ReduceMin" else x
        if xw.dtype == BF16:
            xw = xw.astype(np.float32)
        with np.errstate(all="ignore"):
            if not axes and attrs["noop_with_empty_axes"]:
                r = xw if noop_fn is None else noop_fn(xw)
            else:
                ax = tuple(normalize_axes(axes, x.ndim)) if axes else tuple(range(x.ndim))
                r = reduce_fn(xw, ax, bool(attrs["keepdims"]))
        if dt.kind in "iu" and np.asarray(r).dtype.kind == "f":
            r = np.trunc(r)
        return [np.asarray(r).astype(dt, copy=False)]

    return kernel


_RED_ATTRS = {"keepdims": AttrSpec("int", 1), "noop_with_empty_axes": AttrSpec("int", 0)}
for _name in _REDUCTIONS:
    _allowed = NUMERIC_TYPES | {DType.BOOL} if _name in ("ReduceMax", "ReduceMin") else NUMERIC_TYPES
    define_op(
        _name,
        inputs=(1, 2),
        infer=_reduce_infer_factory(_allowed),
        kernel=_reduce_kernel(_name),
        attrs=dict(_RED_ATTRS),
    )


# ------------------------------------------------------- 5. ArgMax, CumSum, TopK
def _arg_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    if t.shape is None:
        return [TensorType(I64, None)]
    axis = infer_axis(ctx, ctx.attrs["axis"], len(t.shape))
    if ctx.attrs["keepdims"]:
        return [TensorType(I64, tuple(1 if i == axis else d for i, d in enumerate(t.shape)))]
    return [TensorType(I64, tuple(d for i, d in enumerate(t.shape) if i != axis))]


def _arg_kernel(fn):
    def kernel(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
        x = ins[0]
        if x.dtype == BF16:
            x = x.astype(np.float32)
        axis = normalize_axis(attrs["axis"], x.ndim)
        if attrs["select_last_index"]:
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return [np.expand_dims(idx, axis) if attrs["keepdims"] else idx]

    return kernel


for _name, _arg_fn in {"ArgMax": np.argmax, "ArgMin": np.argmin}.items():
    define_op(
        _name,
        infer=_arg_infer,
        kernel=_arg_kernel(_arg_fn),
        attrs={"axis": AttrSpec("int", 0), "keepdims": AttrSpec("int", 1), "select_last_index": AttrSpec("int", 0)},
    )


def _cumsum_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    check_dtype_in(ctx, 1, frozenset({DType.INT32, DType.INT64}))
    if ctx.type(1).shape not in (None, (), (1,)):
        raise ctx.error(f"axis must be a scalar, got {ctx.type(1)}")
    return [ctx.type(0)]


def _cumsum(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x = ins[0]
    axis = normalize_axis(int(np.asarray(ins[1]).reshape(-1)[0]), x.ndim)
    a = np.flip(x, axis) if attrs["reverse"] else x
    c = np.cumsum(_work(a), axis=axis, dtype=None if a.dtype.kind == "f" else a.dtype)
    if attrs["exclusive"]:
        c = np.roll(c, 1, axis=axis)
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(0, 1)
        c[tuple(idx)] = 0
    if attrs["reverse"]:
        c = np.flip(c, axis)
    return [c.astype(x.dtype, copy=False)]


define_op(
    "CumSum",
    inputs=2,
    infer=_cumsum_infer,
    kernel=_cumsum,
    attrs={"exclusive": AttrSpec("int", 0), "reverse": AttrSpec("int", 0)},
)


def _topk_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.type(0)
    check_dtype_in(ctx, 0, NUMERIC_TYPES)
    check_dtype_in(ctx, 1, frozenset({I64}))
    if t.shape is None:
        return [TensorType(t.dtype, None), TensorType(I64, None)]
    axis = infer_axis(ctx, ctx.attrs["axis"], len(t.shape))
    k = ctx_sym(ctx, 1)
    shape = list(t.shape)
    shape[axis] = k[1][0] if k is not None and len(k[1]) == 1 else None
    return [TensorType(t.dtype, tuple(shape)), TensorType(I64, tuple(shape))]


def _topk(ins: Ins, attrs: Attrs, n: int) -> list[np.ndarray]:
    x, k = ins
    k = int(np.asarray(k).reshape(-1)[0])
    axis = normalize_axis(attrs["axis"], x.ndim)
    xw = _work(x)
    if attrs["largest"]:
        key = -(xw.astype(np.int64) if xw.dtype.kind == "u" else xw)
    else:
        key = xw
    idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


define_op(
    "TopK",
    inputs=2,
    outputs=2,
    infer=_topk_infer,
    kernel=_topk,
    attrs={"axis": AttrSpec("int", -1), "largest": AttrSpec("int", 1), "sorted": AttrSpec("int", 1)},
)
