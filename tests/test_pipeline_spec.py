"""Pipeline spec strings: parsing, round trips, group expansion, and errors that list what is known."""

from __future__ import annotations

import numpy as np
import pytest

from accelopt.errors import PassError
from accelopt.ir import parse, print_graph
from accelopt.passes.base import (
    Pass,
    PassSpec,
    build_pipeline,
    format_pipeline,
    parse_pipeline,
    register_group,
    register_pass,
    registered_groups,
    registered_passes,
)
from accelopt.passmanager import PassManager


@pytest.mark.parametrize(
    "text",
    [
        "fuse,int8{calibration=percentile,percentile=99.99},gelu-tanh",
        "cleanup",
        "constant-fold{max_elements=10},dce",
        "",
    ],
)
def test_parse_format_round_trip(text: str) -> None:
    specs = parse_pipeline(text)
    assert format_pipeline(specs) == text


def test_parse_tolerates_spaces() -> None:
    specs = parse_pipeline(" a , b{ k = v , k2=v2 } ,c ")
    assert specs == [PassSpec("a"), PassSpec("b", {"k": "v", "k2": "v2"}), PassSpec("c")]


@pytest.mark.parametrize("bad", ["a,,b", "a{k}", "a{k=v", "{k=v}", "a b"])
def test_bad_syntax(bad: str) -> None:
    with pytest.raises(PassError):
        parse_pipeline(bad)


def test_build_and_format_keep_groups_and_options() -> None:
    passes = build_pipeline("cleanup,constant-fold{max_elements=10},damage{scale=0.5,seed=3}")
    assert [p.name for p in passes] == ["constant-fold", "remove-noops", "cse", "dce", "constant-fold", "damage"]
    assert passes[4].options.max_elements == 10
    assert passes[5].options.scale == 0.5 and passes[5].options.seed == 3
    assert format_pipeline(passes) == "cleanup,constant-fold{max_elements=10},damage{scale=0.5,seed=3}"
    # defaults are not printed
    assert format_pipeline(build_pipeline("constant-fold{max_elements=1048576}")) == "constant-fold"


def test_group_options_reach_the_members_that_have_them() -> None:
    passes = build_pipeline("cleanup{max_elements=7}")
    assert passes[0].options.max_elements == 7
    assert format_pipeline(passes) == "cleanup{max_elements=7}"
    with pytest.raises(PassError, match="group 'cleanup' has no option 'nope'"):
        build_pipeline("cleanup{nope=1}")


def test_unknown_pass_lists_known_names() -> None:
    with pytest.raises(PassError) as ei:
        build_pipeline("cleanup,fold-everything")
    msg = str(ei.value)
    assert "unknown pass 'fold-everything'" in msg
    for name in ("constant-fold", "cse", "dce", "remove-noops", "cleanup"):
        assert name in msg


def test_bad_option_name_and_value() -> None:
    with pytest.raises(PassError, match=r"pass 'constant-fold' has no option 'size'; its options: max_elements"):
        build_pipeline("constant-fold{size=3}")
    with pytest.raises(PassError, match=r"pass 'constant-fold': bad value 'many' for option 'max_elements' \(int\)"):
        build_pipeline("constant-fold{max_elements=many}")
    with pytest.raises(PassError, match=r"pass 'damage': bad value 'x' for option 'scale' \(float\)"):
        build_pipeline("damage{scale=x}")
    with pytest.raises(PassError, match="its options: none"):
        build_pipeline("dce{x=1}")


def test_registry_contents_and_duplicates() -> None:
    passes = registered_passes()
    assert {"constant-fold", "dce", "cse", "remove-noops", "damage"} <= set(passes)
    assert registered_groups()["cleanup"] == ["constant-fold", "remove-noops", "cse", "dce"]
    assert passes["damage"].family == "test"
    for cls in passes.values():
        assert cls.describe()

    class Dup(Pass):
        name = "dce"

    with pytest.raises(ValueError, match="already registered"):
        register_pass(Dup)
    with pytest.raises(ValueError, match="clashes with a pass"):
        register_group("dce", ["cse"])


def test_report_pipeline_string_reproduces_the_graph() -> None:
    rng = np.random.default_rng(0)
    text = """graph g(%x: float32[2,4]) {
  %w: float32[4,4] = const <sha:1>
  %s: int64[2] = Shape(%x) @shape
  %r: float32[2,4] = Reshape(%x, %s) @reshape
  %y: float32[2,4] = MatMul(%r, %w) @mm
  %y2: float32[2,4] = MatMul(%r, %w) @mm2
  %z: float32[2,4] = Add(%y, %y2) @add
  return %z
}
"""
    g = parse(text, {"w": rng.standard_normal((4, 4)).astype(np.float32)})
    passes = build_pipeline("cleanup,damage{scale=0.1}")
    out1, _ = PassManager(passes).run(g)
    line = format_pipeline(passes)
    assert line == "cleanup,damage{scale=0.1}"
    out2, _ = PassManager(build_pipeline(line)).run(g)
    assert print_graph(out1) == print_graph(out2)
    assert "Reshape" not in print_graph(out1) and print_graph(out1).count("MatMul") == 1


def test_layout_group_expands_in_order() -> None:
    from accelopt.passes.base import build_pipeline

    names = [p.name for p in build_pipeline("layout")]
    assert names == ["layout-transpose-weights", "layout-pad", "layout-pack-weights", "layout-cancel-transposes"]
