"""The decomposed GELU forms exporters write: inner erf/tanh parts and the five placements of the half
(for the fuse-gelu and gelu-approximation tests)."""

from __future__ import annotations

HEAD = "graph g(%x: float32[batch,8]) {\n"
CONSTS = """  %sqrt2: float32[] = const [1.4142135381698608]
  %one: float32[] = const [1.0]
  %half: float32[] = const [0.5]
  %two: float32[] = const [2.0]
"""

ERF_INNER = """  %s: float32[batch,8] = Div(%x, %sqrt2) @scale
  %e: float32[batch,8] = Erf(%s) @erf
"""
TANH_CONSTS = """  %three: float32[] = const [3.0]
  %c: float32[] = const [0.044714998453855515]
  %k: float32[] = const [0.7978845834732056]
"""
TANH_INNER = """  %x3: float32[batch,8] = Pow(%x, %three) @cube
  %cx3: float32[batch,8] = Mul(%c, %x3) @mul_c
  %in: float32[batch,8] = Add(%x, %cx3) @add_x
  %ki: float32[batch,8] = Mul(%in, %k) @mul_k
  %e: float32[batch,8] = Tanh(%ki) @tanh
"""
TANH_DISTRIBUTED = """  %xx: float32[batch,8] = Mul(%x, %x) @sq
  %x3: float32[batch,8] = Mul(%xx, %x) @cube
  %kx: float32[batch,8] = Mul(%x, %k) @mul_k
  %cx3: float32[batch,8] = Mul(%x3, %kc) @mul_kc
  %ki: float32[batch,8] = Add(%kx, %cx3) @add
  %e: float32[batch,8] = Tanh(%ki) @tanh
"""

PLACEMENTS = {
    # case 1: (x * t) * 0.5
    "x-t-half": """  %t: float32[batch,8] = Add(%e, %one) @plus1
  %xt: float32[batch,8] = Mul(%x, %t) @mul_x
  %y: float32[batch,8] = Mul(%xt, %half) @mul_half
""",
    # case 2: (0.5 * x) * t
    "x-half-t": """  %t: float32[batch,8] = Add(%one, %e) @plus1
  %hx: float32[batch,8] = Mul(%half, %x) @mul_half
  %y: float32[batch,8] = Mul(%hx, %t) @mul_x
""",
    # case 3: x * (t * 0.5)
    "t-half": """  %t: float32[batch,8] = Add(%e, %one) @plus1
  %ht: float32[batch,8] = Mul(%t, %half) @mul_half
  %y: float32[batch,8] = Mul(%x, %ht) @mul_x
""",
    # case 4: (x / 2) * t
    "xdiv2-t": """  %t: float32[batch,8] = Add(%e, %one) @plus1
  %hx: float32[batch,8] = Div(%x, %two) @div2
  %y: float32[batch,8] = Mul(%t, %hx) @mul_x
""",
    # case 5: x * (0.5 + 0.5 * e)
    "half-plus-half": """  %he: float32[batch,8] = Mul(%e, %half) @mul_half
  %t: float32[batch,8] = Add(%half, %he) @plus_half
  %y: float32[batch,8] = Mul(%x, %t) @mul_x
""",
}


def gelu_graph(inner: str, placement: str, consts: str = CONSTS) -> str:
    """``y = GELU(x)`` on ``x: float32[batch,8]``: ``consts``, then ``inner`` (which makes ``%e``), then the
    ``placement`` of the half, the ``+ 1`` and the product with ``x``."""
    return HEAD + consts + inner + PLACEMENTS[placement] + "  return %y\n}\n"
