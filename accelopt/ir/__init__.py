"""The accelopt graph IR."""

from accelopt.ir.dtypes import DType
from accelopt.ir.graph import Graph, Node, Provenance, Value
from accelopt.ir.parser import parse
from accelopt.ir.printer import print_graph
from accelopt.ir.registry import AttrSpec, OpDef, all_ops, define_op, get_op, has_op
from accelopt.ir.types import TensorType

__all__ = [
    "AttrSpec",
    "DType",
    "Graph",
    "Node",
    "OpDef",
    "Provenance",
    "TensorType",
    "Value",
    "all_ops",
    "define_op",
    "get_op",
    "has_op",
    "parse",
    "print_graph",
]
