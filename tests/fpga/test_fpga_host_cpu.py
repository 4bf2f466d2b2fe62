"""``fpga{host=cpu}``: the host part compiled by the cpu target (TVM), the VTA layers called back from it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fpga_helpers import quantize_for_fpga
from test_fpga_target import encoder_block

from accelopt.interpreter import run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "passes"))
from quant_check import inputs_for  # noqa: E402

pytestmark = pytest.mark.slow  # a TVM build


def test_host_part_on_the_cpu_target(tmp_path: Path) -> None:
    from accelopt.targets.fpga import FpgaArtifact

    g = encoder_block()
    cal = [inputs_for(g, n=8, seed=2, seq=8)]
    q, art = quantize_for_fpga(g, cal, "fpga{seq_len=8,host=cpu}")
    assert art.host_artifact is not None and art.metadata["host"] == "cpu"
    feeds = inputs_for(g, n=2, seed=5, seq=8)  # batch 2 against programs compiled for batch 1
    feeds["mask"][0, 6:] = 0
    got = art.run(feeds)["y"]
    want = run(q, feeds)["y"]
    assert np.abs(got - want).max() <= 0.03 * np.abs(want).max()
    assert sorted(art.last_counters) == ["000_att_qkv", "001_ffn1", "002_ffn2"]  # every layer ran on VTA
    art.save(tmp_path / "a")
    assert (tmp_path / "a" / "host" / "model.so").is_file()
    loaded = FpgaArtifact.load(tmp_path / "a")
    np.testing.assert_array_equal(loaded.run(feeds)["y"], got)
