"""Refresh stored value types from the registry's inference after a rewrite.

Every value stores its type. A rewrite that replaces a value by one with a
more precise type (``[batch,sequence,64]`` where the old value said
``[LayerNormalizationlast_hidden_state_dim_0,...]``, a symbol the legacy ONNX
exporter invents for graph outputs) leaves the types of everything computed
from it stale: a ``Gather`` downstream still says ``[LayerNorm..._dim_0,64]``
while inference from its new input gives ``[batch,64]``, and the verifier
rejects the graph. ``refine_types`` walks the nodes in order and updates
each output's stored type where inference knows better.

Per dimension (stored ``s``, inferred ``i``):

1. ``i`` unknown: keep ``s``;
2. ``i`` a static size: take it (a different static ``s`` is a real
   inconsistency and is left for the verifier to report);
3. ``i`` a symbol: take it unless ``s`` is a static size.

A value whose dtype or rank disagrees with inference is left alone (the
verifier reports it), as is a node whose inference fails.
"""

from __future__ import annotations

import logging

from accelopt.ir.graph import Graph
from accelopt.ir.registry import get_op
from accelopt.ir.types import Dim, TensorType

log = logging.getLogger(__name__)


def _refined_dim(stored: Dim, inferred: Dim) -> Dim:
    if inferred is None:  # case 1
        return stored
    if isinstance(inferred, int):  # case 2
        return stored if isinstance(stored, int) and stored != inferred else inferred
    return stored if isinstance(stored, int) else inferred  # case 3


def refined_type(stored: TensorType, inferred: TensorType) -> TensorType:
    """``stored`` with the dims inference knows better (see the module docstring)."""
    if stored.dtype != inferred.dtype or inferred.shape is None:
        return stored
    if stored.shape is None:
        return inferred
    if len(stored.shape) != len(inferred.shape):
        return stored
    shape = tuple(_refined_dim(s, i) for s, i in zip(stored.shape, inferred.shape))
    return stored if shape == stored.shape else TensorType(stored.dtype, shape)


def refine_types(graph: Graph) -> int:
    """Update stale output types in node order; returns how many values changed."""
    changed = 0
    for node in graph.nodes:
        try:
            inferred = get_op(node.op).infer_types(list(node.inputs), node.attrs, len(node.outputs), node_name=node.name)
        except Exception as e:  # the verifier reports what inference cannot do
            log.debug("refine_types: node %s (%s): %s", node.name, node.op, e)
            continue
        for v, t in zip(node.outputs, inferred):
            new = refined_type(v.type, t)
            if new != v.type:
                log.debug("refine_types: %%%s %s -> %s", v.name, v.type, new)
                v.type = new
                changed += 1
    return changed
