"""Static-shape exports: which graph dims are batch and sequence, and how a run fits inputs to a bucket.

Targets that compile one program per sequence length (tpu, cpu, gpu) bind
the graph's symbolic dims the same way and keep the same metadata, so their
artifacts share the run-time logic here:

1. ``bind_symbols``: axis 0 of a graph input is the batch, axis 1 the
   sequence; any other symbolic dim must be given a size (``dims``); inputs
   whose name contains ``mask`` (rank >= 2) let shorter sequences be padded.
2. ``input_spec`` / ``output_spec``: the metadata of each input (``dim_keys``:
   the symbol each axis binds to) and output (``dim_roles``: which axes are
   batch or sequence, to slice padding off).
3. ``choose_bucket``: the bucket whose sizes equal the inputs'; else, with a
   mask input, the shortest longer bucket (inputs zero-padded); else
   ``TargetError`` listing the buckets.
4. ``fit`` / ``unfit``: one batch chunk of an input zero-padded to the
   bucket's sizes; outputs concatenated, sliced back and cast to the IR type.
5. ``convert_input``: an input array in the program's dtype (integers must fit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from accelopt.errors import TargetError
from accelopt.ir.graph import Graph, Value

_MASK_HINTS = ("mask",)


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@dataclass
class Binding:
    """Case 1: the symbols that are batch and sequence, fixed sizes of the others, and mask inputs."""

    batch_keys: set[str]
    seq_keys: set[str]
    fixed: dict[str, int]
    export_batch: int
    batch_padded: bool
    masks: list[str]
    notes: list[str] = field(default_factory=list)

    def dims(self, seq: int) -> dict[str, int]:
        """Symbol sizes of the bucket for sequence length ``seq``."""
        out = dict(self.fixed)
        out.update({k: self.export_batch for k in self.batch_keys})
        out.update({k: seq for k in self.seq_keys})
        return out

    def bucket_name(self, seq: int) -> str:
        return f"b{self.export_batch}_s{seq}" if self.seq_keys else f"b{self.export_batch}"


def symbol_key(v: Value, axis: int, d: Any) -> str:
    """The name a dim binds under: its symbol, or ``?<input>:<axis>`` for an unnamed one."""
    return d if isinstance(d, str) else f"?{v.name}:{axis}"


def bind_shape(v: Value, dims: Mapping[str, int], *, needs: str, scope: str) -> tuple[int, ...]:
    """``v``'s shape with symbols (and unnamed dims, by ``symbol_key``) replaced by their sizes in ``dims``.
    ``TargetError`` for an unknown rank (``needs`` says what needs static shapes) or a dim ``dims`` does not
    bind (``scope`` says where: "in this bucket")."""
    if v.shape is None:
        raise TargetError(f"input %{v.name} has unknown rank; {needs} needs static shapes")
    out = []
    for axis, d in enumerate(v.shape):
        if isinstance(d, int):
            out.append(d)
            continue
        key = symbol_key(v, axis, d)
        if key not in dims:
            raise TargetError(f"input %{v.name}: dimension {axis} ({d or 'unknown'}) has no size {scope}")
        out.append(int(dims[key]))
    return tuple(out)


def bind_symbols(
    graph: Graph, *, batch: int, batch_multiple: int = 1, dims: Mapping[str, int] | None = None, target: str = ""
) -> Binding:
    """Case 1 (the batch is rounded up to ``batch_multiple`` when it is symbolic)."""
    fixed = dict(dims or {})
    batch_keys: set[str] = set()
    seq_keys: set[str] = set()
    unbound: list[str] = []
    notes: list[str] = []
    for v in graph.inputs:
        if v.shape is None:
            raise TargetError(f"{target} target: input %{v.name} has unknown rank; the export needs static shapes")
        for axis, d in enumerate(v.shape):
            if isinstance(d, int):
                continue
            key = symbol_key(v, axis, d)
            if key in fixed:
                continue
            if axis == 0:
                batch_keys.add(key)
            elif axis == 1:
                seq_keys.add(key)
            else:
                unbound.append(f"%{v.name} axis {axis} ({d or '?'})")
    if unbound:
        raise TargetError(f"{target} target: give sizes (dims=...) for symbolic dimension(s): " + ", ".join(unbound))
    overlap = batch_keys & seq_keys
    if overlap:
        raise TargetError(f"{target} target: symbol(s) {sorted(overlap)} are used as both batch and sequence")
    export_batch, padded = batch, False
    if batch_keys:
        export_batch = -(-batch // batch_multiple) * batch_multiple
        padded = True
        if export_batch != batch:
            notes.append(f"batch {batch} padded to {export_batch} (multiple of {batch_multiple})")
    else:
        notes.append("graph inputs have a static batch; not padded to the batch multiple")
    masks = [
        v.name for v in graph.inputs if any(h in v.name.lower() for h in _MASK_HINTS) and v.shape and len(v.shape) >= 2
    ]
    return Binding(batch_keys, seq_keys, fixed, export_batch, padded, masks, notes)


def input_spec(v: Value, export_dtype: str, graph: Graph | None = None) -> dict[str, Any]:
    """Case 2: an input's metadata; with ``graph``, the size of the table an integer input indexes (``vocab``)."""
    keys = [None if isinstance(d, int) else symbol_key(v, axis, d) for axis, d in enumerate(v.shape or ())]
    spec: dict[str, Any] = {
        "name": v.name,
        "dtype": str(v.dtype),
        "export_dtype": export_dtype,
        "shape": list(v.shape or ()),
        "dim_keys": keys,
    }
    vocab = index_bound(graph, v) if graph is not None and v.dtype.is_int else None
    if vocab is not None:
        spec["vocab"] = vocab
    return spec


#: (op, index of the ids input) -> index of the table input it indexes
_TABLES = {("Gather", 1): 0, ("EmbedLayerNorm", 0): 2, ("EmbedLayerNorm", 1): 4, ("EmbedLayerNorm", 7): 3}


def index_bound(graph: Graph, v: Value) -> int | None:
    """Rows of the smallest constant table input ``v`` indexes directly (token ids: the vocabulary size)."""
    sizes = []
    for node, idx in v.uses:
        t = _TABLES.get((node.op, idx))
        table = graph.const_value(node.inputs[t]) if t is not None and t < len(node.inputs) else None
        if table is not None and table.ndim >= 1:
            sizes.append(int(table.shape[0]))
    return min(sizes) if sizes else None


def output_spec(
    v: Value, b: Binding, out_shape: Sequence[int], seq_len: int | None, export_dtype: str
) -> dict[str, Any]:
    """Case 2: an output's metadata; its batch / sequence axes by symbol, else by position and size."""
    roles: list[str | None] = []
    shape = v.shape if v.shape is not None else (None,) * len(out_shape)
    for axis, d in enumerate(shape):
        if isinstance(d, str) and d in b.batch_keys:
            roles.append("batch")
        elif isinstance(d, str) and d in b.seq_keys:
            roles.append("seq:" + d)
        elif d is None and axis == 0 and b.batch_padded and out_shape[0] == b.export_batch:
            roles.append("batch")
        elif d is None and axis == 1 and b.seq_keys and out_shape[1] == seq_len:
            roles.append("seq:" + sorted(b.seq_keys)[0])
        else:
            roles.append(None)
    return {
        "name": v.name,
        "dtype": str(v.dtype),
        "export_dtype": export_dtype,
        "shape": list(shape),
        "dim_roles": roles,
    }


def check_inputs(meta: Mapping[str, Any], inputs: Mapping[str, Any], source: str) -> None:
    """Every input the program takes is given (``TargetError`` names the missing ones and what is expected)."""
    specs = meta["inputs"]
    missing = [s for s in specs if s["name"] not in inputs]
    if missing:
        want = ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in missing)
        raise TargetError(f"{source}: missing input(s) {want}")


def choose_bucket(
    meta: Mapping[str, Any], arrays: Sequence[np.ndarray], source: str
) -> tuple[dict[str, Any], int, dict[str, int]]:
    """Case 3: the bucket for these inputs, the batch size and the bound symbol sizes."""
    specs = meta["inputs"]
    buckets = meta["buckets"]
    sizes: dict[str, int] = {}
    batch_keys = set(meta["batch"]["keys"])
    for s, a in zip(specs, arrays):
        if a.ndim != len(s["shape"]):
            raise TargetError(f"input {s['name']!r}: rank {a.ndim}, expected {len(s['shape'])} ({s['shape']})")
        for axis, key in enumerate(s["dim_keys"]):
            if key is None:
                if a.shape[axis] != s["shape"][axis]:
                    raise TargetError(
                        f"input {s['name']!r}: dimension {axis} is {a.shape[axis]}, expected {s['shape'][axis]}"
                    )
                continue
            if sizes.setdefault(key, a.shape[axis]) != a.shape[axis]:
                raise TargetError(f"input {s['name']!r}: dimension {axis} is {a.shape[axis]}, expected {sizes[key]}")
    batch = next((sizes[k] for k in batch_keys if k in sizes), int(meta["batch"]["export"]))
    rest = {k: v for k, v in sizes.items() if k not in batch_keys}
    exact = [b for b in buckets if all(b["dims"].get(k) == v for k, v in rest.items())]
    if exact:
        return exact[0], batch, sizes
    seq_keys = set(meta["seq"]["keys"])
    can_pad = bool(meta["seq"].get("mask_inputs"))
    fits = [
        b
        for b in buckets
        if all(b["dims"].get(k) == v for k, v in rest.items() if k not in seq_keys)
        and all(b["dims"].get(k, -1) >= v for k, v in rest.items() if k in seq_keys)
    ]
    have = ", ".join(b["name"] for b in buckets)
    if fits and can_pad:
        return min(fits, key=lambda b: b["seq_len"]), batch, sizes
    why = "no bucket is long enough" if not fits else "the graph has no attention-mask input to hide padding"
    raise TargetError(f"{source}: no compiled function for input sizes {rest} ({why}); buckets: {have}")


def fit(
    meta: Mapping[str, Any], spec: Mapping[str, Any], a: np.ndarray, bucket: Mapping[str, Any], start: int
) -> np.ndarray:
    """Case 4: the batch chunk at ``start`` of input ``a``, zero-padded to the bucket's batch and sequence sizes."""
    export_batch = int(bucket["batch"])
    batch_keys = set(meta["batch"]["keys"])
    index = []
    widths = []
    for axis, key in enumerate(spec["dim_keys"]):
        if key is not None and key in batch_keys:
            part = slice(start, start + export_batch)
            n = len(range(a.shape[axis])[part])
            index.append(part)
            widths.append((0, export_batch - n))
        elif key is not None:
            index.append(slice(None))
            widths.append((0, int(bucket["dims"][key]) - a.shape[axis]))
        else:
            index.append(slice(None))
            widths.append((0, 0))
    a = a[tuple(index)]
    if any(w[1] for w in widths):
        a = np.pad(a, widths)
    return a


def unfit(spec: Mapping[str, Any], parts: list[np.ndarray], batch: int, sizes: Mapping[str, int]) -> np.ndarray:
    """Case 4: an output's batch chunks joined, padding sliced off, cast to the IR's dtype."""
    roles = spec["dim_roles"]
    batch_axis = roles.index("batch") if "batch" in roles else None
    out = np.concatenate(parts, axis=batch_axis) if batch_axis is not None and len(parts) > 1 else parts[0]
    index = []
    for axis, role in enumerate(roles):
        if role == "batch":
            index.append(slice(0, batch))
        elif role is not None and role.startswith("seq:"):
            index.append(slice(0, sizes.get(role[4:], out.shape[axis])))
        else:
            index.append(slice(None))
    out = out[tuple(index)]
    want = np_dtype(spec["dtype"])
    return out.astype(want) if out.dtype != want else out


def sample_seq_len(graph: Graph, samples: Any, notes: list[str], default: int) -> tuple[int, ...]:
    """The bucket when none is given: axis 1 of the samples' arrays (a ``SampleSet``), else ``default``."""
    arrays = getattr(samples, "arrays", None) or {}
    for v in graph.inputs:
        a = arrays.get(v.name)
        if a is not None and getattr(a, "ndim", 0) >= 2 and v.shape is not None and not isinstance(v.shape[1], int):
            notes.append(f"sequence bucket {a.shape[1]} taken from the validation samples")
            return (int(a.shape[1]),)
    return (default,)


def int_tuple(v: Any, what: str) -> tuple[int, ...]:
    """``128``, ``"128,256"`` / ``"128+256"`` (the spec form) or a sequence, as a tuple of ints."""
    try:
        if isinstance(v, str):
            return tuple(int(x) for x in v.replace("+", ",").split(",") if x.strip())
        if isinstance(v, int):
            return (v,)
        return tuple(int(x) for x in v)
    except (TypeError, ValueError):
        raise TargetError(f"{what}: expected integers, got {v!r}") from None


def bound_seq_lens(target: str, option: tuple[int, ...], requested: Sequence[int]) -> tuple[int, ...] | None:
    """The sequence buckets ``--seq-len`` (``requested``) asks of a target whose spec gave ``option``, or None
    when the target stays as it is (one length: the bucket follows the validation samples; the same buckets).
    Buckets in the spec that disagree with ``requested`` are a ``TargetError``."""
    buckets = int_tuple(tuple(requested), "seq_lens")
    if len(set(buckets)) <= 1 or buckets == option:
        return None
    if option:
        raise TargetError(
            f"{target} target: seq_lens={'+'.join(map(str, option))} in the target spec and sequence "
            f"lengths {','.join(map(str, buckets))} disagree; give the buckets once"
        )
    return buckets


def convert_input(spec: Mapping[str, Any], value: Any) -> np.ndarray:
    """Case 5: the array in the program's dtype; integers must fit."""
    a = np.asarray(value)
    want = np_dtype(spec["export_dtype"])
    if a.dtype == want:
        return a
    if a.dtype.kind in "iub" and want.kind in "iu":
        info = np.iinfo(want)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise TargetError(f"input {spec['name']!r}: values outside the {want} range of the program")
        return a.astype(want)
    if a.dtype.kind in "fiub" and (want.kind == "f" or want == np_dtype("bfloat16")):
        return a.astype(want)
    if want.kind == "b":
        return a.astype(bool)
    raise TargetError(f"input {spec['name']!r}: got {a.dtype}, expected {spec['dtype']}")
