"""Reader for the text form written by ``printer.py``: ``parse(print(g))`` prints the same text.

Tensors printed as ``<sha:...>`` have no data in the text; the parser fills
them from ``weights`` (a name -> array mapping) when given, else with zeros
that remember the digest so the text stays identical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from accelopt.errors import ParseError
from accelopt.ir.dtypes import DType
from accelopt.ir.graph import ElidedTensor, Graph, Provenance, Value
from accelopt.ir.registry import get_op
from accelopt.ir.types import Dim, TensorType

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<sha><sha:[0-9a-f]+>)
  | (?P<number>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>->|[%@(){}\[\],:=<>*?_-])
    """,
    re.VERBOSE,
)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        self.spans: list[tuple[int, int]] = []
        pos = 0
        line = 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            tok = m.group()
            if kind != "ws":
                self.tokens.append((kind, tok, line))
                self.spans.append(m.span())
            line += tok.count("\n")
            pos = m.end()
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("eof", "", -1)

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        kind, tok, line = self.next()
        if tok != text:
            raise ParseError(f"line {line}: expected {text!r}, found {tok!r}")

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def adjacent(self) -> bool:
        """True if the next token starts exactly where the previous one ended."""
        j = self.i
        return 0 < j < len(self.spans) and self.spans[j - 1][1] == self.spans[j][0]

    def error(self, msg: str) -> ParseError:
        return ParseError(f"line {self.peek()[2]}: {msg}")


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse the text form into a Graph (types as printed; not re-inferred)."""
    lx = _Lexer(text)
    p = _Parser(lx, weights or {})
    return p.graph()


class _Parser:
    def __init__(self, lx: _Lexer, weights: Mapping[str, np.ndarray]) -> None:
        self.lx = lx
        self.weights = weights
        self.g: Graph
        self.env: dict[str, Any] = {}

    def name(self) -> str:
        kind, tok, line = self.lx.next()
        if kind == "string":
            return json.loads(tok)
        if kind in ("ident", "number"):
            # plain names may also continue with more digits/idents split by the lexer
            while self.lx.peek()[0] in ("ident", "number") and self.lx.adjacent():
                tok += self.lx.next()[1]
            return tok
        raise ParseError(f"line {line}: expected a name, found {tok!r}")

    def type(self) -> TensorType:
        kind, tok, line = self.lx.next()
        try:
            dtype = DType.parse(tok)
        except TypeError as e:
            raise ParseError(f"line {line}: {e}") from None
        self.lx.expect("[")
        if self.lx.accept("*"):
            self.lx.expect("]")
            return TensorType(dtype, None)
        dims: list[Dim] = []
        while not self.lx.accept("]"):
            kind, tok, line = self.lx.next()
            if tok == "?":
                dims.append(None)
            elif kind == "number":
                dims.append(int(tok))
            elif kind == "ident":
                dims.append(tok)
            else:
                raise ParseError(f"line {line}: bad dimension {tok!r}")
            self.lx.accept(",")
        return TensorType(dtype, tuple(dims))

    def scalar(self) -> Any:
        kind, tok, line = self.lx.next()
        if kind == "number":
            return float(tok) if any(c in tok for c in ".eE") else int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok in ("inf", "nan"):
            return float(tok)
        if tok == "-" and self.lx.peek()[1] == "inf":
            self.lx.next()
            return float("-inf")
        if kind == "string":
            return json.loads(tok)
        raise ParseError(f"line {line}: expected a value, found {tok!r}")

    def tensor_data(self, t: TensorType, name: str) -> tuple[np.ndarray, str | None]:
        kind, tok, line = self.lx.peek()
        shape = tuple(int(d) for d in t.shape or ())  # type: ignore[arg-type]
        if kind == "sha":
            self.lx.next()
            digest = tok[5:-1]
            if name in self.weights:
                return np.asarray(self.weights[name], dtype=t.dtype.np).reshape(shape), None
            return np.zeros(shape, dtype=t.dtype.np), digest
        self.lx.expect("[")
        vals = []
        while not self.lx.accept("]"):
            vals.append(self.scalar())
            self.lx.accept(",")
        return np.array(vals, dtype=np.float64 if t.dtype.is_float else None).astype(t.dtype.np).reshape(shape), None

    def attr(self, kind: str) -> Any:
        if kind == "tensor":
            self.lx.expect("tensor")
            self.lx.expect("<")
            t = self.type()
            self.lx.expect(">")
            arr, digest = self.tensor_data(t, "")
            if digest is not None:
                elided = arr.view(ElidedTensor)
                elided.digest = digest
                return elided
            return arr
        if kind == "dtype":
            return DType.parse(self.lx.next()[1])
        if kind in ("ints", "floats", "strs"):
            self.lx.expect("[")
            vals = []
            while not self.lx.accept("]"):
                v = self.scalar()
                vals.append(float(v) if kind == "floats" else v)
                self.lx.accept(",")
            return tuple(vals)
        if self.lx.peek()[1] == "none":
            self.lx.next()
            return None
        v = self.scalar()
        return float(v) if kind == "float" else v

    def graph(self) -> Graph:
        self.lx.expect("graph")
        self.g = g = Graph(self.name())
        self.lx.expect("(")
        while not self.lx.accept(")"):
            self.lx.expect("%")
            name = self.name()
            self.lx.expect(":")
            self.env[name] = g.add_input(name, self.type())
            self.lx.accept(",")
        self.lx.expect("{")
        while True:
            if self.lx.accept("return"):
                outs = []
                while self.lx.peek()[1] == "%":
                    self.lx.next()
                    outs.append(self._lookup(self.name()))
                    self.lx.accept(",")
                g.set_outputs(outs)
                self.lx.expect("}")
                break
            self.statement()
        return g

    def _lookup(self, name: str) -> Any:
        if name not in self.env:
            raise self.lx.error(f"undefined value %{name}")
        return self.env[name]

    def statement(self) -> None:
        outs: list[tuple[str, TensorType]] = []
        while True:
            self.lx.expect("%")
            name = self.name()
            self.lx.expect(":")
            outs.append((name, self.type()))
            if not self.lx.accept(","):
                break
        self.lx.expect("=")
        if self.lx.accept("const"):
            (name, t), = outs
            arr, digest = self.tensor_data(t, name)
            v = self.g.add_initializer(name, arr)
            v.const_digest = digest
            self.env[name] = v
            return
        line = self.lx.peek()[2]
        op = self.name()
        try:
            opdef = get_op(op)
        except Exception as e:
            raise ParseError(f"line {line}: {e}") from None
        attrs: dict[str, Any] = {}
        if self.lx.accept("{"):
            while not self.lx.accept("}"):
                key = self.name()
                self.lx.expect("=")
                spec = opdef.attrs.get(key)
                if spec is None:
                    raise ParseError(f"line {line}: op {op} has no attribute {key!r}")
                attrs[key] = self.attr(spec.kind)
                self.lx.accept(",")
        self.lx.expect("(")
        ins: list[Value | None] = []
        while not self.lx.accept(")"):
            if self.lx.accept("_"):
                ins.append(None)
            else:
                self.lx.expect("%")
                ins.append(self._lookup(self.name()))
            self.lx.accept(",")
        self.lx.expect("@")
        node_name = self.name()
        node = self.g.add_node(
            op,
            ins,
            attrs,
            outputs=[n for n, _ in outs],
            types=[t for _, t in outs],
            name=node_name,
            provenance=Provenance(),
        )
        for v in node.outputs:
            self.env[v.name] = v
