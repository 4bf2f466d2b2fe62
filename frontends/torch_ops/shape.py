"""ATen converters for views and data movement: reshape, transpose, expand, slice, gather/index, concat, split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.frontends.torch_ops.base import INT64_MAX, ValueTuple, converter, expr_of, target_name
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Value

if TYPE_CHECKING:
    from accelopt.frontends.torch_importer import Importer


# ------------------------------------------------------------- shape ops
@converter("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten._reshape_alias.default")
def _view(imp: Importer, node: Any, x: Any, sizes: Sequence[Any], *rest: Any) -> Value:
    v = imp.tensor(x)
    out_shape = tuple(imp.fx.meta["val"].shape)
    if v.shape is not None and tuple(imp.dim_of(s) for s in out_shape) == v.shape and None not in v.shape:
        return v  # a view to the same shape
    attrs = {"allowzero": 1} if any(isinstance(s, int) and s == 0 for s in sizes) else {}
    return imp.emit("Reshape", [v, imp.shape_vec(sizes, allow_infer=True)], attrs)


def transpose(imp: Importer, v: Value, perm: list[int]) -> Value:
    if perm == list(range(len(perm))):
        return v
    if v.const is not None:  # case 9: fold into a transposed initializer
        folded = np.ascontiguousarray(np.transpose(v.const, perm))
        return imp.g.add_initializer(f"{v.name}_T", folded, unique=True)
    return imp.emit("Transpose", [v], {"perm": perm})


@converter("aten.permute.default")
def _permute(imp: Importer, node: Any, x: Any, dims: Sequence[int]) -> Value:
    rank = imp.rank(x)
    return transpose(imp, imp.tensor(x), [d % rank if rank else 0 for d in dims])


@converter("aten.transpose.int")
def _transpose_int(imp: Importer, node: Any, x: Any, d0: int, d1: int) -> Value:
    rank = imp.rank(x)
    perm = list(range(rank))
    a, b = d0 % rank, d1 % rank
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(imp, imp.tensor(x), perm)


@converter("aten.t.default", "aten.numpy_T.default")
def _t(imp: Importer, node: Any, x: Any) -> Value:
    rank = imp.rank(x)
    return transpose(imp, imp.tensor(x), list(range(rank))[::-1])


@converter("aten.expand.default")
def _expand(imp: Importer, node: Any, x: Any, sizes: Sequence[Any], *, implicit: bool = False) -> Value:
    v = imp.tensor(x)
    exprs = [imp.sym(s) for s in sizes]
    rank = len(exprs)
    in_shape = list(imp.meta(x).shape)
    offset = rank - len(in_shape)
    same = offset == 0 and all(
        (isinstance(e, int) and e == -1) or expr_of(e) == expr_of(in_shape[i]) for i, e in enumerate(exprs)
    )
    if same:
        return v
    ones = [1 if isinstance(e, int) and e == -1 else s for e, s in zip(exprs, sizes)]
    return imp.emit("Expand", [v, imp.shape_vec(ones, allow_infer=False)])


@converter("aten.flip.default")
def _flip(imp: Importer, node: Any, x: Any, dims: Sequence[int]) -> Value:
    """Reversed axes: ``Slice`` with step -1 from the end to before the start."""
    rank = imp.rank(x)
    axes = [d % rank for d in dims]
    n = len(axes)
    return imp.emit(
        "Slice",
        [imp.tensor(x), imp.ints([-1] * n), imp.ints([-INT64_MAX] * n), imp.ints(axes), imp.ints([-1] * n)],
    )


@converter("aten.repeat.default")
def _repeat(imp: Importer, node: Any, x: Any, repeats: Sequence[Any]) -> Value:
    v = imp.tensor(x)
    extra = len(repeats) - imp.rank(x)
    if extra > 0:
        v = imp.emit("Unsqueeze", [v, imp.ints(list(range(extra)))], part="expand_rank")
    return imp.emit("Tile", [v, imp.shape_vec(list(repeats), allow_infer=False)])


@converter("aten.tril.default", "aten.triu.default")
def _trilu(imp: Importer, node: Any, x: Any, diagonal: Any = 0) -> Value:
    upper = int("triu" in target_name(node.target))
    k = imp.sym(diagonal)
    kv = imp.scalar(k, DType.INT64) if isinstance(k, int) else imp.sym_scalar(k)
    return imp.emit("Trilu", [imp.tensor(x), kv], {"upper": upper})


@converter("aten.unsqueeze.default")
def _unsqueeze(imp: Importer, node: Any, x: Any, dim: int) -> Value:
    rank = imp.rank(x) + 1
    return imp.emit("Unsqueeze", [imp.tensor(x), imp.ints([dim % rank])])


@converter("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(imp: Importer, node: Any, x: Any, dims: Any = None) -> Value:
    shape = list(imp.meta(x).shape)
    rank = len(shape)
    if dims is None:
        cand = list(range(rank))
    elif isinstance(dims, int):
        cand = [dims % max(rank, 1)]
    else:
        cand = [d % max(rank, 1) for d in dims]
    axes = [d for d in cand if d < rank and isinstance(shape[d], int) and shape[d] == 1]
    v = imp.tensor(x)
    if not axes:  # torch leaves non-1 dims alone
        return v
    return imp.emit("Squeeze", [v, imp.ints(axes)])


def _bounds(imp: Importer, shape: Sequence[Any], dim: int, start: Any, end: Any) -> tuple[Any, Any, bool]:
    """(start, end, whether end reaches the end of ``dim``) as ints or sympy expressions."""
    s = 0 if start is None else imp.sym(start)
    e = INT64_MAX if end is None else imp.sym(end)
    size = expr_of(shape[dim])
    full_end = (isinstance(e, int) and (e >= INT64_MAX or (size.is_number and e >= int(size)))) or (
        not isinstance(e, int) and e == size
    )
    return s, e, full_end


def _slice_of(imp: Importer, v: Value, dim: int, s: Any, e: Any, step: int, part: str | None = None) -> Value:
    starts = imp.sym_vec(s) if not isinstance(s, int) else imp.ints([s])
    ends = imp.sym_vec(e) if not isinstance(e, int) else imp.ints([min(e, INT64_MAX)])
    return imp.emit("Slice", [v, starts, ends, imp.ints([dim]), imp.ints([step])], part=part)


@converter("aten.slice.Tensor")
def _slice(imp: Importer, node: Any, x: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Value:
    v = imp.tensor(x)
    shape = list(imp.meta(x).shape)
    dim = dim % len(shape)
    s, e, full_end = _bounds(imp, shape, dim, start, end)
    if s == 0 and step == 1 and full_end:
        return v
    return _slice_of(imp, v, dim, s, e, step)


@converter("aten.slice_scatter.default")
def _slice_scatter(
    imp: Importer, node: Any, x: Any, src: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1
) -> Value:
    """``x`` with ``x[..., start:end:step, ...] = src``: a ``Concat`` of the kept slices around ``src``
    (step 1), else ``ScatterElements`` at the static positions."""
    v, sv = imp.tensor(x), imp.tensor(src)
    shape = list(imp.meta(x).shape)
    dim = dim % len(shape)
    size = expr_of(shape[dim])
    s, e, full_end = _bounds(imp, shape, dim, start, end)
    for b in (s, e):
        if isinstance(b, int) and b < 0 and not size.is_number:
            raise FrontendError(f"{imp.source}: node {node.name}: a negative bound on a symbolic dim is not supported")
    s = s + int(size) if isinstance(s, int) and s < 0 else s
    e = e + int(size) if isinstance(e, int) and e < 0 else e
    if step == 1:
        pieces = ([_slice_of(imp, v, dim, 0, s, 1, part="before")] if s != 0 else []) + [sv]
        if not full_end:
            pieces.append(_slice_of(imp, v, dim, e, INT64_MAX, 1, part="after"))
        return pieces[0] if len(pieces) == 1 else imp.emit("Concat", pieces, {"axis": dim})
    if not (isinstance(s, int) and isinstance(e, int) and size.is_number):
        raise FrontendError(f"{imp.source}: node {node.name}: slice_scatter with step {step} needs static bounds")
    positions = np.arange(s, min(e, int(size)), step, dtype=np.int64)
    where = [1] * len(shape)
    where[dim] = len(positions)
    index = imp.emit(
        "Expand",
        [imp.const(positions.reshape(where), "positions"), imp.emit("Shape", [sv], part="shape")],
        part="index",
    )
    return imp.emit("ScatterElements", [v, index, sv], {"axis": dim})


@converter("aten.select.int")
def _select(imp: Importer, node: Any, x: Any, dim: int, index: Any) -> Value:
    rank = imp.rank(x)
    idx = imp.sym(index)
    iv = imp.scalar(idx, DType.INT64) if isinstance(idx, int) else imp.sym_scalar(idx)
    return imp.emit("Gather", [imp.tensor(x), iv], {"axis": dim % rank})


@converter("aten.embedding.default")
def _embedding(imp: Importer, node: Any, weight: Any, indices: Any, *args: Any, **kw: Any) -> Value:
    return imp.emit("Gather", [imp.tensor(weight), imp.tensor(indices)], {"axis": 0})


@converter("aten.index_select.default")
def _index_select(imp: Importer, node: Any, x: Any, dim: int, index: Any) -> Value:
    return imp.emit("Gather", [imp.tensor(x), imp.tensor(index)], {"axis": dim % imp.rank(x)})


@converter("aten.gather.default")
def _gather(imp: Importer, node: Any, x: Any, dim: int, index: Any, *, sparse_grad: bool = False) -> Value:
    return imp.emit("GatherElements", [imp.tensor(x), imp.tensor(index)], {"axis": dim % imp.rank(x)})


@converter("aten.index.Tensor")
def _index(imp: Importer, node: Any, x: Any, indices: Sequence[Any]) -> Value:
    """``x[..., i0, i1, ...]`` (advanced indexing).

    One index tensor at position p becomes ``Gather(axis=p)``. Several become
    one flat index ``sum_j i_j * stride_j`` into ``x`` reshaped to
    ``[-1, rest...]``, after a ``Transpose`` that brings the indexed dims to the
    front when they are not the leading ones. As in numpy, the broadcast index
    dims then stand where the indexed dims were when those are adjacent, and
    first otherwise. Negative indices are wrapped unless the index provably
    comes from a non-negative ``arange``.
    """
    v = imp.tensor(x)
    shape = list(imp.meta(x).shape)
    present = [i for i, ix in enumerate(indices) if ix is not None]
    for i in present:
        if imp.tensor(indices[i]).dtype == DType.BOOL:
            raise FrontendError(
                f"{imp.source}: node {node.name} (aten.index.Tensor): boolean mask indexing is not supported"
            )
    if len(present) == 1:
        return imp.emit("Gather", [v, imp.tensor(indices[present[0]])], {"axis": present[0]})
    k = len(present)
    if present != list(range(k)):
        perm = present + [i for i in range(len(shape)) if i not in present]
        v = imp.emit("Transpose", [v], {"perm": perm}, part="indexed_first")
        shape = [shape[i] for i in perm]
    flat: Value | None = None
    for j, pos in enumerate(present):
        idx = imp.tensor(indices[pos])
        if idx.dtype != DType.INT64:
            idx = imp.emit("Cast", [idx], {"to": DType.INT64}, part=f"index{j}")
        if not _nonnegative(indices[pos]):
            size = expr_of(shape[j])
            sv = imp.scalar(int(size), DType.INT64) if size.is_number else imp.sym_scalar(size)
            neg = imp.emit("Less", [idx, imp.scalar(0, DType.INT64)], part=f"index{j}_neg")
            idx = imp.emit("Where", [neg, imp.emit("Add", [idx, sv], part=f"index{j}_wrap"), idx], part=f"index{j}")
        stride = [expr_of(s) for s in shape[j + 1 : k]]
        if stride:
            prod = math.prod(stride[1:], start=stride[0])
            sv = imp.scalar(int(prod), DType.INT64) if prod.is_number else imp.sym_scalar(prod)
            idx = imp.emit("Mul", [idx, sv], part=f"index{j}_offset")
        flat = idx if flat is None else imp.emit("Add", [flat, idx], part="flat_index")
    rest = shape[k:]  # ints or SymInts: shape_vec reads them
    data = imp.emit("Reshape", [v, imp.shape_vec([-1, *rest], allow_infer=False)], part="flat_data")
    first = present[0]
    if present != list(range(first, first + k)) or first == 0:
        return imp.emit("Gather", [data, flat], {"axis": 0})
    out = imp.emit("Gather", [data, flat], {"axis": 0}, part="gather")
    nb = max(imp.rank(indices[i]) for i in present)  # the broadcast index rank
    perm = list(range(nb, nb + first)) + list(range(nb)) + list(range(nb + first, nb + len(rest)))
    return imp.emit("Transpose", [out], {"perm": perm})


_NONNEG_PASSTHROUGH = {
    "aten.unsqueeze.default",
    "aten.view.default",
    "aten.reshape.default",
    "aten.expand.default",
    "aten.clone.default",
    "aten.slice.Tensor",
    "aten.permute.default",
    "aten.squeeze.dim",
    "aten._to_copy.default",
}


def _nonnegative(arg: Any, depth: int = 0) -> bool:
    """True when an fx index tensor is provably >= 0 (an arange from >= 0, reshaped or shifted up)."""
    if depth > 16 or not hasattr(arg, "target"):
        return False
    name = target_name(arg.target)
    if name in _NONNEG_PASSTHROUGH:
        return _nonnegative(arg.args[0], depth + 1)
    if name.startswith("aten.arange."):
        start = 0 if name == "aten.arange.default" else arg.args[0]
        step = arg.args[2] if name == "aten.arange.start_step" and len(arg.args) > 2 else 1
        start_ok = not isinstance(start, (int, float)) or start >= 0  # a SymInt start is a size
        return start_ok and isinstance(step, (int, float)) and step > 0
    if name in ("aten.add.Tensor", "aten.add.Scalar"):
        a, b = arg.args[0], arg.args[1]
        ok_b = _nonnegative(b, depth + 1) if hasattr(b, "target") else isinstance(b, (int, float)) and b >= 0
        return _nonnegative(a, depth + 1) and ok_b and arg.kwargs.get("alpha", 1) == 1
    return False


@converter("aten.cat.default", "aten.concat.default")
def _cat(imp: Importer, node: Any, tensors: Sequence[Any], dim: int = 0) -> Value:
    rank = imp.rank(node)
    dt = imp.out_dtype()
    parts = []
    for t in tensors:
        m = imp.meta(t)
        if m.dim() == 1 and isinstance(m.shape[0], int) and m.shape[0] == 0 and rank != 1:
            continue  # torch skips legacy empty tensors
        parts.append(imp.operand(t, dt))
    if len(parts) == 1:
        return parts[0]
    return imp.emit("Concat", parts, {"axis": dim % rank})


@converter("aten.split.Tensor", "aten.split_with_sizes.default", "aten.unbind.int")
def _split(imp: Importer, node: Any, x: Any, split: Any = None, dim: int = 0) -> Any:
    name = target_name(node.target)
    if name == "aten.unbind.int":
        dim = split if split is not None else 0
    rank = imp.rank(x)
    dim = dim % rank
    outs = imp.fx.meta["val"]
    sizes = [imp.sym(o.shape[dim]) if name != "aten.unbind.int" else 1 for o in outs]
    v = imp.tensor(x)
    if not all(isinstance(s, int) for s in sizes):
        raise FrontendError(f"{imp.source}: node {node.name} ({name}): split sizes must be static, got {sizes}")
    parts = imp.emit(
        "Split",
        [v, imp.ints(sizes)],
        {"axis": dim},
        n_out=len(sizes),
        part="parts" if name == "aten.unbind.int" else None,
    )
    if len(sizes) == 1:
        parts = ValueTuple((parts,))
    if name == "aten.unbind.int":
        parts = ValueTuple(imp.emit("Squeeze", [p, imp.ints([dim])]) for p in parts)
    return ValueTuple(imp.finish(p, o) for p, o in zip(parts, outs))
