"""The ``gpu`` target: CUDA through TVM Relax, compiled here (nvcc, sm_90) and run with TVM's runtime alone.

``toolchain.py`` builds CUDA machine code on a machine without a GPU,
``machine_code.py`` reads it back (fatbin entries, SASS), ``runtime.py``
loads and runs an artifact with TVM's runtime only, and ``bundle.py`` packs
that runtime for a GPU machine that has no TVM.
"""

from accelopt.targets.gpu.artifact import GpuArtifact
from accelopt.targets.gpu.target import GpuOptions, GpuTarget

__all__ = ["GpuArtifact", "GpuOptions", "GpuTarget"]
