"""The ``fpga`` target: int8 layers compiled to VTA programs, simulated bit-exactly, timed by a cycle model.

Modules: ``config`` (VTAConfig, board presets), ``isa`` (instructions, encode/decode, micro-ops),
``modules`` (routing, token queues, disassembler), ``layout`` (data layouts, tiling), ``requant`` (integer
requantization and its reference), ``emit`` (program emission), ``program`` (programs, DRAM regions and
image), ``simulator`` (bit-exact functional simulator), ``counters`` (VTA's counters), ``cycles`` (cycle
model), ``offload`` (which layers run on VTA), ``host_cpu`` (host=cpu: the host part through the cpu
target), ``artifact``, ``details`` (report), ``target``.
"""

from accelopt.targets.fpga.artifact import FpgaArtifact
from accelopt.targets.fpga.config import PRESETS, VTAConfig, get_config, load_config
from accelopt.targets.fpga.target import LABEL, FpgaOptions, FpgaTarget

__all__ = ["LABEL", "PRESETS", "FpgaArtifact", "FpgaOptions", "FpgaTarget", "VTAConfig", "get_config", "load_config"]
