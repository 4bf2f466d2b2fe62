"""The torch.export frontend: an ``nn.Module`` or ``ExportedProgram`` -> accelopt ``Graph``.

Two entry points:

* ``load_torch(module_or_ep, example_inputs, dynamic=True) -> Model`` exports an
  ``nn.Module`` (in eval mode) with ``torch.export.export``, decomposes it to core
  ATen, imports it, and keeps the original module as the reference runtime.
* ``import_exported_program(ep) -> Graph`` imports an ``ExportedProgram``.

What the import does, case by case:

1. Export: the module is put in eval mode and exported with a dynamic ``batch``
   dimension (dim 0 of every tensor input) and ``seq`` dimension (dim 1 of inputs
   of rank >= 2). An example dim of size 1 is tiled to 2 for the export only, so
   torch does not specialize it. When torch reports constraint violations its
   suggested fixes are applied once; if export still fails, ``seq`` is dropped,
   then ``batch`` (each fallback logged as a warning), ending with a static export.
1b. A model that returns a key/value cache (``past_key_values``: GPT-2 and other
   decoders) is exported with ``use_cache=False`` (logged as a warning): a cache
   is not a tensor output, and ``torch.export`` refuses it.
2. Decomposition: ``ep.run_decompositions`` with torch's default table minus
   ``aten.scaled_dot_product_attention``, which therefore stays one op and becomes
   ``ScaledDotProductAttention`` (accelopt domain). ``import_exported_program``
   decomposes only when the program holds an op this importer does not map.
3. Parameters, buffers and lifted constants become initializers named by their
   module path (``encoder.layer.0.attention.self.query.weight``), in the
   model's own dtype.
4. User inputs become graph inputs named as the placeholders (the forward
   argument names). Dims are ints, or symbols: the first symbol seen at dim 0 is
   ``batch``, at dim 1 ``seq``, elsewhere ``dim<k>``; a later distinct symbol at
   the same position gets a suffix (``seq_2``). Dims that are expressions of
   symbols (``batch*seq``) are left unknown in types.
5. Symbolic sizes used as values (view/expand shapes, slice bounds, arange ends)
   are rebuilt from the graph inputs: ``Shape(x){start=d,end=d+1}`` per symbol,
   combined with Add/Mul/Div/Max/Min following the sympy expression. A reshape
   with a single symbolic entry uses ``-1`` instead.
6. Outputs follow the user outputs of the program; their names come from the
   output pytree (``last_hidden_state``, ``pooler_output``, ``logits``,
   ``hidden_states_0``...; ``output`` / ``output_<i>`` for plain tensors/tuples).
7. Each value's type is the registry's inference refined by torch's own
   metadata (a dim inference leaves unknown is taken from torch); when torch's
   dtype differs from the mapped op's dtype a ``Cast`` is added.
8. Dropout (``dropout``, ``native_dropout``) in eval mode, and aliasing ops
   (``clone``, ``alias``, ``detach``, ``lift_fresh_copy``, ``contiguous``...)
   vanish; metadata assertions are dropped. Dropout in training mode, or SDPA
   with ``dropout_p > 0``, is a ``FrontendError``.
9. ``permute``/``t``/``transpose`` of a parameter is folded into a transposed
   initializer (``<name>_T``), so ``linear`` becomes ``MatMul(x, W^T) + b``.
10. ATen ops without a mapping: one ``FrontendError`` lists all of them, with
    counts and node names.

The driver is ``accelopt.frontends.torch_importer.Importer``; the per-op converters are in
``accelopt.frontends.torch_ops`` (one module per op family), registered in
``torch_ops.base.CONVERTERS`` (see ``supported_aten_ops()``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelopt.errors import FrontendError
from accelopt.frontends.torch_importer import Importer
from accelopt.frontends.torch_ops.base import (
    CONVERTERS,
    first_line,
    is_constant_input,
    to_numpy,
    torch_module,
    unsupported_ops,
)
from accelopt.ir.graph import Graph
from accelopt.model import Model

log = logging.getLogger(__name__)


# ============================================================== public API
def import_exported_program(ep: Any, *, source: str = "<torch>") -> Graph:
    """Import a ``torch.export.ExportedProgram`` into a verified ``Graph`` (cases 2-10)."""
    torch = torch_module()
    if not isinstance(ep, torch.export.ExportedProgram):
        raise FrontendError(f"{source}: expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    if unsupported_ops(ep):
        ep = _decompose(ep, source)
    return Importer(ep, source).run()


def load_torch(
    module_or_ep: Any,
    example_inputs: Any = None,
    *,
    dynamic: bool = True,
    source: str | None = None,
) -> Model:
    """Load an ``nn.Module`` (with example inputs) or an ``ExportedProgram`` as a ``Model``.

    ``example_inputs`` is a dict of keyword arguments, a tuple of positional
    arguments, or one tensor. ``dynamic`` exports with symbolic batch/sequence
    dims (case 1). ``Model.reference_fn`` runs the original module (or
    ``ep.module()``) under ``torch.no_grad()``.
    """
    torch = torch_module()
    if isinstance(module_or_ep, torch.export.ExportedProgram):
        ep = module_or_ep
        src = source or "<ExportedProgram>"
        graph = import_exported_program(ep, source=src)
        runner = ep.module()
        binder = _InputBinder.from_program(ep, src)
    elif isinstance(module_or_ep, torch.nn.Module):
        module = module_or_ep.eval()
        src = source or f"<{type(module).__name__}>"
        if example_inputs is None:
            raise FrontendError(f"{src}: example_inputs are needed to export an nn.Module")
        args, kwargs = _as_args_kwargs(example_inputs, src)
        kwargs = _without_cache(module, args, kwargs, src)
        with _torch_internal_warnings_off():
            ep = export_module(module, args, kwargs, dynamic=dynamic, source=src)
            graph = import_exported_program(_decompose(ep, src), source=src)
        runner = module
        binder = _InputBinder.from_program(ep, src)
    else:
        raise FrontendError(f"cannot load a {type(module_or_ep).__name__} with the torch frontend")
    out_names = [v.name for v in graph.outputs]
    out_leaves: list[int] = graph.metadata.get("output_leaves", list(range(len(out_names))))
    in_names = [v.name for v in graph.inputs]
    in_dtypes = {v.name: v.dtype.np for v in graph.inputs}

    def reference(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in in_names if n not in inputs]
        if missing:
            raise FrontendError(f"{src}: reference run is missing input(s) {', '.join(missing)}")
        tensors = {n: torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=in_dtypes[n])) for n in in_names}
        call_args, call_kwargs = binder.bind(tensors)
        with torch.no_grad():
            out = runner(*call_args, **call_kwargs)
        leaves = torch.utils._pytree.tree_leaves(out)
        return {name: to_numpy(leaves[i]) for name, i in zip(out_names, out_leaves)}

    model = Model(graph=graph, source=src, kind="torch", reference_fn=reference)
    model.metadata["exported_program"] = ep
    return model


def export_module(
    module: Any,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    dynamic: bool = True,
    source: str = "<torch>",
) -> Any:
    """``torch.export.export`` with dynamic batch/seq dims and the fallbacks of case 1."""
    torch_module()
    from torch.export import Dim

    kwargs = dict(kwargs or {})
    module = module.eval()
    attempts: list[tuple[str, bool, bool]] = [("batch+seq", True, True), ("batch", True, False)] if dynamic else []
    attempts.append(("static", False, False))
    last: Exception | None = None
    max_seq = _max_positions(module)
    for label, want_batch, want_seq in attempts:
        seq = Dim("seq", max=max_seq) if max_seq else Dim("seq")
        dims = {0: Dim("batch") if want_batch else None, 1: seq if want_seq else None}
        ex_args, ex_kwargs = _tile_for_export((args, kwargs), dims)
        spec = _dynamic_spec((ex_args, ex_kwargs), dims) if (want_batch or want_seq) else None
        try:
            return _export(module, ex_args, ex_kwargs, spec)
        except Exception as e:  # torch raises many types here; any failure moves to the next attempt
            last = e
            fixes = _suggested_fixes(str(e)) if spec is not None else None
            if fixes is not None and spec is not None:
                try:
                    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

                    refined = refine_dynamic_shapes_from_suggested_fixes(fixes, spec)
                    return _export(module, ex_args, ex_kwargs, refined)
                except Exception as e2:
                    last = e2
            if label != "static":
                log.warning("%s: export with dynamic %s dims failed (%s); retrying", source, label, first_line(last))
    raise FrontendError(f"{source}: torch.export failed: {type(last).__name__}: {first_line(last)}") from last


def supported_aten_ops() -> list[str]:
    """Names of the ATen/builtin targets this frontend maps."""
    return sorted(CONVERTERS)


# ======================================================= export helpers
def _without_cache(module: Any, args: tuple, kwargs: dict[str, Any], src: str) -> dict[str, Any]:
    """Case 1b: ``use_cache=False`` for a model that returns a key/value cache (GPT-2 and other decoders).

    The cache (``DynamicCache``) is not a tensor output, so ``torch.export``
    refuses it; an inference graph has no use for it. Encoders whose config
    says ``use_cache`` but that return no cache (BERT) are left alone: one
    forward pass on the example inputs tells.
    """
    config = getattr(module, "config", None)
    if not getattr(config, "use_cache", False) or "use_cache" in kwargs:
        return kwargs
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # a forward without a signature: leave it as it is
        return kwargs
    if "use_cache" not in params:
        return kwargs
    torch = torch_module()
    try:
        with torch.no_grad():
            out = module(*args, **kwargs)
    except Exception:  # the export reports whatever is wrong with the inputs
        return kwargs
    if getattr(out, "past_key_values", None) is None:
        return kwargs
    log.warning(
        "%s: exported with use_cache=False: its key/value cache (past_key_values) is not a tensor output "
        "and is dropped",
        src,
    )
    return {**kwargs, "use_cache": False}




def _export(module: Any, args: tuple, kwargs: dict, spec: Any) -> Any:
    torch = torch_module()
    with torch.no_grad():
        return torch.export.export(module, args, kwargs, dynamic_shapes=spec)


@contextlib.contextmanager
def _torch_internal_warnings_off() -> Iterator[None]:
    """torch 2.13's own pytree code trips its ``LeafSpec`` deprecation while exporting: nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        yield


def _max_positions(module: Any) -> int | None:
    """A Hugging Face model's ``max_position_embeddings``: the likely bound of ``seq`` (saves a re-export)."""
    n = getattr(getattr(module, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 2 else None


def _suggested_fixes(msg: str) -> str | None:
    """The "Suggested fixes:" block of a constraint violation, without torch's trailing advice."""
    if "Suggested fixes:" not in msg:
        return None
    lines = []
    for line in msg.split("Suggested fixes:", 1)[1].splitlines():
        if re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]* = \S", line):
            lines.append(line.strip())
        elif lines:
            break
    return "Suggested fixes:\n" + "\n".join(lines) if lines else None


def _as_args_kwargs(example_inputs: Any, src: str) -> tuple[tuple, dict]:
    torch = torch_module()
    if isinstance(example_inputs, Mapping):
        return (), {str(k): _as_torch(v) for k, v in example_inputs.items()}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(_as_torch(v) for v in example_inputs), {}
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        return (_as_torch(example_inputs),), {}
    raise FrontendError(
        f"{src}: example_inputs must be a dict, a tuple or a tensor, not {type(example_inputs).__name__}"
    )


def _as_torch(x: Any) -> Any:
    torch = torch_module()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _tile_for_export(inputs: tuple[tuple, dict], dims: Mapping[int, Any]) -> tuple[tuple, dict]:
    """Tile tensors whose dynamic dims have size 1 up to 2, so torch does not specialize them."""
    torch = torch_module()

    def tile(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        for d, dim in dims.items():
            if dim is not None and x.dim() > d and x.shape[d] == 1:
                reps = [1] * x.dim()
                reps[d] = 2
                x = x.repeat(*reps)
        return x

    args, kwargs = inputs
    return tuple(tile(a) for a in args), {k: tile(v) for k, v in kwargs.items()}


def _dynamic_spec(inputs: tuple[tuple, dict], dims: Mapping[int, Any]) -> Any:
    torch = torch_module()

    def spec(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return None
        out = {d: dim for d, dim in dims.items() if dim is not None and x.dim() > d}
        return out or None

    args, kwargs = inputs
    if kwargs and not args:
        return {k: spec(v) for k, v in kwargs.items()}
    if args and not kwargs:
        return tuple(spec(a) for a in args)
    return (tuple(spec(a) for a in args), {k: spec(v) for k, v in kwargs.items()})


def _decomposition_table() -> dict:
    torch = torch_module()
    table = torch.export.default_decompositions()
    for op in (torch.ops.aten.scaled_dot_product_attention.default,):
        table.pop(op, None)
    return table


def _decompose(ep: Any, source: str) -> Any:
    try:
        return ep.run_decompositions(_decomposition_table())
    except Exception as e:
        raise FrontendError(f"{source}: decomposition to core ATen failed: {type(e).__name__}: {first_line(e)}") from e


# ====================================================== input binding
@dataclass
class _InputBinder:
    """Rebuilds the module's ``(args, kwargs)`` from named tensors (the reference run)."""

    flat: list[Any]
    spec: Any
    positions: list[int]  # positions of the tensor leaves, in user-input order
    names: list[str]

    @classmethod
    def from_program(cls, ep: Any, src: str) -> _InputBinder:
        torch = torch_module()
        pytree = torch.utils._pytree
        names = [
            s.arg.name
            for s in ep.graph_signature.input_specs
            if s.kind.name == "USER_INPUT" and not is_constant_input(s)
        ]
        if ep.example_inputs is not None:
            flat, spec = pytree.tree_flatten(ep.example_inputs)
        else:
            spec = ep.call_spec.in_spec
            flat = [None] * spec.num_leaves
        positions = [i for i, x in enumerate(flat) if x is None or isinstance(x, torch.Tensor)]
        if len(positions) != len(names):
            raise FrontendError(f"{src}: {len(names)} user inputs but {len(positions)} tensor leaves in the input spec")
        return cls(list(flat), spec, positions, names)

    def bind(self, tensors: Mapping[str, Any]) -> tuple[tuple, dict]:
        flat = list(self.flat)
        for name, pos in zip(self.names, self.positions):
            flat[pos] = tensors[name]
        args, kwargs = torch_module().utils._pytree.tree_unflatten(flat, self.spec)
        return tuple(args), dict(kwargs)
