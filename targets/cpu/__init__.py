"""The ``cpu`` target: TVM Relax -> LLVM for the host CPU.

``target.py`` holds the flow and options, ``host.py`` the CPU detection,
``build.py`` the build pipeline, ``schedule_rules.py`` the schedule-rule
dispatcher (kernel rules by name, then ``generic_rules.py``), and
``artifact.py`` the saved, loadable, runnable result.
"""

from accelopt.targets.cpu.artifact import CpuArtifact
from accelopt.targets.cpu.schedule_rules import register_rule
from accelopt.targets.cpu.target import CpuOptions, CpuTarget

__all__ = ["CpuArtifact", "CpuOptions", "CpuTarget", "register_rule"]
