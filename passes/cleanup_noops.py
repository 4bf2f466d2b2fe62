"""``remove-noops``: remove nodes that return their input unchanged (dropout included).

Cases (each is a rule; ``stats`` counts them under these names):

1. ``identity``: ``Identity(x)`` -> ``x``.
2. ``cast-same-type``: ``Cast(x, to=x.dtype)`` and ``CastLike(x, y)`` with
   ``y.dtype == x.dtype`` -> ``x``.
3. ``<op>-same-shape`` for ``Reshape``, ``Flatten``, ``Squeeze``, ``Expand``,
   ``Tile``: the output type equals the input type, with every dim known
   (ints, or the same symbols) -> ``x``. For ``Expand`` this is "broadcasts
   nothing"; for ``Tile`` "repeats are all 1".
4. ``transpose-identity``: ``Transpose`` whose ``perm`` is ``0, 1, ..., r-1``
   (or no ``perm`` on rank <= 1) -> ``x``.
5. ``transpose-pair``: ``Transpose(Transpose(x, p1), p2)``: when the composed
   permutation (``p1[p2[i]]``) is the identity -> ``x``; otherwise one
   ``Transpose(x, p1[p2])``. The inner transpose stays if something else uses it.
6. ``dropout``: ``Dropout(x, ratio, training_mode)`` in inference form
   (``training_mode`` absent or a constant false, or ``ratio`` a constant 0) and
   its mask output unused -> ``x``.
7. ``reshape-pair``: two pure reshapes in a row (``Reshape``, ``Flatten``,
   ``Squeeze``, ``Unsqueeze``; e.g. ``Squeeze(Unsqueeze(x, a), a)``) whose final
   type equals ``x``'s, every dim known -> ``x``. Pure reshapes keep the element
   order, so equal shapes mean equal tensors.
8. ``concat-single``: ``Concat`` of one input -> that input.

A no-op whose output is a graph output is removed only when its input can take
the output's name (not when the input is itself a graph input or output).
"""

from __future__ import annotations

from accelopt.ir.graph import Value
from accelopt.passes.base import NoOptions, register_pass
from accelopt.passes.patterns import Match, MatchResult, P, Rewriter, Rule, RulePass

PURE_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
#: a node that is not a no-op is not a near miss worth reporting
NO_NEAR_MISSES = 1 << 30


def _known_same_type(out: Value, src: Value) -> MatchResult:
    s_out, s_src = out.type.shape, src.type.shape
    if out.type.dtype != src.type.dtype:
        return MatchResult.fail(f"dtype changes from {src.type.dtype} to {out.type.dtype}")
    if s_out is None or s_src is None or any(d is None for d in s_out + s_src):
        return MatchResult.fail(f"shapes are not fully known ({src.type} -> {out.type})")
    if s_out != s_src:
        return MatchResult.fail(f"shape changes from {src.type} to {out.type}")
    return MatchResult()


def _return_x(rw: Rewriter, m: Match) -> Value:
    return m["x"]


# ------------------------------------------------------------------ case 2
def _check_cast(m: Match) -> MatchResult:
    to = m.attr("cast", "to")
    if to != m["x"].type.dtype:
        return MatchResult.fail(f"casts {m['x'].type.dtype} to {to}")
    return MatchResult()


def _check_cast_like(m: Match) -> MatchResult:
    if m["like"].type.dtype != m["x"].type.dtype:
        return MatchResult.fail(f"casts {m['x'].type.dtype} to {m['like'].type.dtype}")
    return MatchResult()


# ------------------------------------------------------------------ case 3
def _same_shape_rule(op: str, label: str) -> Rule:
    return Rule(
        f"{label}-same-shape",
        P.op(op, P.var("x"), name="n", extra_inputs=True),
        check=lambda m: _known_same_type(m.node("n").outputs[0], m["x"]),
        rewrite=_return_x,
    )


# ------------------------------------------------------------------ case 4/5
def _perm(m: Match, node_name: str, rank: int) -> list[int]:
    perm = m.attr(node_name, "perm")
    return list(reversed(range(rank))) if perm is None else [int(p) for p in perm]


def _check_transpose_identity(m: Match) -> MatchResult:
    rank = m["x"].type.rank
    if rank is None:
        return MatchResult.fail("rank of the input is unknown")
    perm = _perm(m, "t", rank)
    if perm != list(range(rank)):
        return MatchResult.fail(f"perm {perm} is not the identity")
    return MatchResult()


def _check_transpose_pair(m: Match) -> MatchResult:
    if m["x"].type.rank is None:
        return MatchResult.fail("rank of the input is unknown")
    return MatchResult()


def _rewrite_transpose_pair(rw: Rewriter, m: Match) -> Value:
    rank = m["x"].type.rank
    assert rank is not None  # checked
    p1, p2 = _perm(m, "t1", rank), _perm(m, "t2", rank)
    composed = [p1[i] for i in p2]
    if composed == list(range(rank)):
        return m["x"]
    return rw.op("Transpose", [m["x"]], {"perm": composed})


# ------------------------------------------------------------------ case 6
def _check_dropout(m: Match) -> MatchResult:
    node = m.node("d")
    g = m.graph
    ins = list(node.inputs) + [None] * (3 - len(node.inputs))
    ratio = g.const_value(ins[1]) if ins[1] is not None else None
    training = g.const_value(ins[2]) if ins[2] is not None else None
    ratio_zero = ratio is not None and float(ratio.reshape(-1)[0]) == 0.0
    if ins[2] is not None and not ratio_zero:
        if training is None:
            return MatchResult.fail("training_mode is not a constant")
        if bool(training.reshape(-1)[0]):
            return MatchResult.fail("training_mode is true")
    if len(node.outputs) > 1 and (node.outputs[1].uses or node.outputs[1] in g.outputs):
        return MatchResult.fail("the mask output is used")
    return MatchResult()


def _rules() -> list[Rule]:
    x = P.var("x")
    rules = [
        Rule("identity", P.op("Identity", x), rewrite=_return_x),  # case 1
        Rule("cast-same-type", P.op("Cast", x, name="cast"), check=_check_cast, rewrite=_return_x),  # case 2
        Rule("castlike-same-type", P.op("CastLike", x, P.var("like")), check=_check_cast_like, rewrite=_return_x),
    ]
    for op, label in (  # case 3
        ("Reshape", "reshape"),
        ("Flatten", "flatten"),
        ("Squeeze", "squeeze"),
        ("Expand", "expand"),
        ("Tile", "tile"),
    ):
        rules.append(_same_shape_rule(op, label))
    rules += [
        Rule(  # case 4
            "transpose-identity",
            P.op("Transpose", x, name="t"),
            check=_check_transpose_identity,
            rewrite=_return_x,
        ),
        Rule(  # case 5
            "transpose-pair",
            P.op("Transpose", P.op("Transpose", x, name="t1", shared=True), name="t2"),
            check=_check_transpose_pair,
            rewrite=_rewrite_transpose_pair,
        ),
        Rule(  # case 6
            "dropout",
            P.op("Dropout", x, name="d", extra_inputs=True),
            check=_check_dropout,
            rewrite=_return_x,
        ),
        Rule(  # case 7
            "reshape-pair",
            P.op(
                PURE_RESHAPES,
                P.op(PURE_RESHAPES, x, name="inner", extra_inputs=True, shared=True),
                name="outer",
                extra_inputs=True,
            ),
            check=lambda m: _known_same_type(m.node("outer").outputs[0], m["x"]),
            rewrite=_return_x,
        ),
        Rule("concat-single", P.op("Concat", x), rewrite=_return_x),  # case 8
    ]
    for r in rules:
        r.near_miss_min = NO_NEAR_MISSES
    return rules


@register_pass
class RemoveNoops(RulePass):
    """Remove Identity, same-type Cast, same-shape Reshape/Expand, cancelling Transposes, inference Dropout."""

    name = "remove-noops"
    family = "cleanup"
    Options = NoOptions

    def rules(self) -> list[Rule]:
        return _rules()
