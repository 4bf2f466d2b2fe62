"""Fixtures of the gpu target's tests: a small CUDA library built for sm_90 here, once per session.

Building needs nvcc (CUDA 12/13) and a C compiler; without them the tests
that build skip. No GPU is needed: running on one is the ``gpu`` marker's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

M, K, N = 128, 256, 512


def have_nvcc() -> bool:
    from accelopt.errors import TargetError
    from accelopt.targets.gpu.toolchain import find_toolkit

    try:
        find_toolkit()
    except TargetError:
        return False
    return True


needs_nvcc = pytest.mark.skipif(not have_nvcc(), reason="nvcc (the CUDA toolkit) is not installed")


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact folder: ``softmax(x @ w)`` (fp16 operands, fp32 result) built for sm_90 with dlight, weights outside."""
    if not have_nvcc():
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    import tvm
    from tvm import relax

    from accelopt.targets.gpu import toolchain
    from accelopt.targets.gpu.build import cuda_target

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, K), "float16"))
    w = relax.Var("w", relax.TensorType((K, N), "float16"))
    with bb.function("b1", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, w, out_dtype="float32"))
            out = bb.emit_output(relax.Tuple([bb.emit(relax.op.nn.softmax(y, axis=-1))]))
        bb.emit_func_output(out)
    out_dir = tmp_path_factory.mktemp("small-gpu-artifact")
    with toolchain.cuda_build_scope("sm_90", toolchain.find_toolkit()):
        ex = tvm.compile(bb.get(), target=cuda_target("sm_90"))
    ex.export_library(str(out_dir / "model.so"))
    np.savez(out_dir / "params.npz", w=np.random.default_rng(0).standard_normal((K, N)).astype(np.float16))
    meta = {
        "format": "accelopt-gpu-artifact",
        "arch": "sm_90",
        "library": "model.so",
        "params_file": "params.npz",
        "functions": [
            {
                "name": "b1",
                "batch": M,
                "inputs": [{"name": "x", "dtype": "float16", "shape": [M, K]}],
                "outputs": [{"name": "y", "dtype": "float32", "shape": [M, N]}],
                "params": ["w"],
            }
        ],
    }
    (out_dir / "metadata.json").write_text(json.dumps(meta))
    return out_dir


@pytest.fixture
def artifact_copy(small_artifact: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "artifact"
    shutil.copytree(small_artifact, dest)
    return dest
