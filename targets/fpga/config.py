"""``VTAConfig``: the parameters of a VTA accelerator, the buffer geometry and instruction field widths they imply.

The fields are VTA's own (``config/vta_config.json`` in apache/tvm-vta: log
widths of the input/weight/accumulator elements, BATCH, BLOCK_IN/BLOCK_OUT,
log buffer sizes in bytes) plus what a board adds: the clock, the AXI bus
width and, for the cycle model, a fixed latency per DMA transfer and the
ALU's initiation interval. Everything else is derived, never hard-coded:

- element bytes per memory type: UOP 4, INP ``BATCH*BLOCK_IN`` int8, WGT
  ``BLOCK_OUT*BLOCK_IN`` int8, ACC ``BATCH*BLOCK_OUT`` int32, OUT
  ``BATCH*BLOCK_OUT`` int8;
- buffer depths (buffer bytes / element bytes) and their log2, which are the
  widths of the micro-op fields and of the GEMM/ALU index factors (see
  ``isa.Layout``);
- the peak: ``BATCH*BLOCK_IN*BLOCK_OUT`` MACs per cycle at the clock.

Presets (``PRESETS``, ``--target fpga{board=...}``):

1. ``pynq`` (the default): ``1x16_i8w8a32_15_15_18_17`` at 100 MHz with a
   64-bit bus (Pynq-Z1 class): 256 MAC/cycle, 51.2 GOP/s peak;
2. ``de10nano``: the same design and rates;
3. ``ultra96`` and ``zcu104``: the same design at 333 MHz with a 128-bit bus;
4. ``zcu104-1x32``: a 1x32x32 GEMM core (``LOG_BLOCK=5``, same buffer bytes)
   at 333 MHz with a 128-bit bus: 1024 MAC/cycle.

Board clocks and bus widths are those of tvm-vta's ``pkg_config.py``. The DMA
latency (64 cycles per transfer) is this model's assumption, not a measured
figure. ``load_config(path)`` reads a JSON file with VTA's upper-case keys
(``LOG_BLOCK`` sets both block sizes) and/or this class's field names.

accelopt emits int8 x int8 -> int32 programs with BATCH 1: other element
widths or batch sizes are refused (``TargetError``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelopt.errors import TargetError

#: VTA's JSON keys -> field names
_VTA_KEYS = {
    "LOG_INP_WIDTH": "log_inp_width",
    "LOG_WGT_WIDTH": "log_wgt_width",
    "LOG_ACC_WIDTH": "log_acc_width",
    "LOG_BATCH": "log_batch",
    "LOG_BLOCK_IN": "log_block_in",
    "LOG_BLOCK_OUT": "log_block_out",
    "LOG_UOP_BUFF_SIZE": "log_uop_buff_size",
    "LOG_INP_BUFF_SIZE": "log_inp_buff_size",
    "LOG_WGT_BUFF_SIZE": "log_wgt_buff_size",
    "LOG_ACC_BUFF_SIZE": "log_acc_buff_size",
    "LOG_BUS_WIDTH": "log_bus_width",
}
#: keys of VTA's JSON that carry no parameter of the design
_IGNORED_KEYS = {"TARGET", "HW_VER"}
#: the micro-op is one 32-bit word in every VTA configuration (VTA_LOG_UOP_WIDTH = 5)
UOP_BYTES = 4
#: the instruction is 128 bits (VTA_LOG_INS_WIDTH = 7)
INSN_BYTES = 16


@dataclass(frozen=True)
class VTAConfig:
    """One VTA design on one board (frozen; compare and hash by value)."""

    name: str = "pynq"
    log_inp_width: int = 3
    log_wgt_width: int = 3
    log_acc_width: int = 5
    log_batch: int = 0
    log_block_in: int = 4
    log_block_out: int = 4
    log_uop_buff_size: int = 15
    log_inp_buff_size: int = 15
    log_wgt_buff_size: int = 18
    log_acc_buff_size: int = 17
    clock_mhz: float = 100.0
    log_bus_width: int = 6
    #: cycles every DMA transfer (one LOAD or STORE) costs on top of its bytes / bus bytes (an assumption)
    dma_latency_cycles: int = 64
    #: cycles per 16-lane ALU vector operation (VTA's ALU has an initiation interval of 2)
    alu_cycles_per_op: int = 2

    def __post_init__(self) -> None:
        if (self.log_inp_width, self.log_wgt_width, self.log_acc_width) != (3, 3, 5):
            raise TargetError(
                f"VTA config {self.name!r}: accelopt emits int8 x int8 -> int32 programs; got input/weight/"
                f"accumulator widths {self.inp_bits}/{self.wgt_bits}/{self.acc_bits} bits"
            )
        if self.log_batch != 0:
            raise TargetError(f"VTA config {self.name!r}: accelopt emits BATCH=1 programs; got BATCH={self.batch}")
        for f in ("log_block_in", "log_block_out"):
            if not 2 <= getattr(self, f) <= 6:
                raise TargetError(f"VTA config {self.name!r}: {f}={getattr(self, f)} is outside 2..6")
        for f in ("log_uop_buff_size", "log_inp_buff_size", "log_wgt_buff_size", "log_acc_buff_size"):
            if not 10 <= getattr(self, f) <= 24:
                raise TargetError(f"VTA config {self.name!r}: {f}={getattr(self, f)} is outside 10..24")
        if not 3 <= self.log_bus_width <= 10:
            raise TargetError(f"VTA config {self.name!r}: log_bus_width={self.log_bus_width} is outside 3..10")
        if self.clock_mhz <= 0 or self.dma_latency_cycles < 0 or self.alu_cycles_per_op < 1:
            raise TargetError(f"VTA config {self.name!r}: clock, DMA latency and ALU cycles must be positive")
        for what, depth in (("INP", self.inp_depth), ("WGT", self.wgt_depth), ("ACC", self.acc_depth)):
            if depth < 16:
                raise TargetError(f"VTA config {self.name!r}: the {what} buffer holds only {depth} elements")
        used = self.log_acc_depth + max(self.log_acc_depth, self.log_inp_depth) + self.log_wgt_depth
        if used > 32:
            raise TargetError(
                f"VTA config {self.name!r}: the micro-op fields need {used} bits, more than its 32 "
                "(buffers too deep for this block size)"
            )

    # ----------------------------------------------------------- geometry
    @property
    def inp_bits(self) -> int:
        return 1 << self.log_inp_width

    @property
    def wgt_bits(self) -> int:
        return 1 << self.log_wgt_width

    @property
    def acc_bits(self) -> int:
        return 1 << self.log_acc_width

    @property
    def batch(self) -> int:
        return 1 << self.log_batch

    @property
    def block_in(self) -> int:
        return 1 << self.log_block_in

    @property
    def block_out(self) -> int:
        return 1 << self.log_block_out

    @property
    def inp_elem_bytes(self) -> int:
        return self.batch * self.block_in * self.inp_bits // 8

    @property
    def wgt_elem_bytes(self) -> int:
        return self.block_out * self.block_in * self.wgt_bits // 8

    @property
    def acc_elem_bytes(self) -> int:
        return self.batch * self.block_out * self.acc_bits // 8

    @property
    def out_elem_bytes(self) -> int:
        return self.batch * self.block_out * self.inp_bits // 8

    @property
    def uop_depth(self) -> int:
        return (1 << self.log_uop_buff_size) // UOP_BYTES

    @property
    def inp_depth(self) -> int:
        return (1 << self.log_inp_buff_size) // self.inp_elem_bytes

    @property
    def wgt_depth(self) -> int:
        return (1 << self.log_wgt_buff_size) // self.wgt_elem_bytes

    @property
    def acc_depth(self) -> int:
        return (1 << self.log_acc_buff_size) // self.acc_elem_bytes

    @property
    def log_uop_depth(self) -> int:
        return self.uop_depth.bit_length() - 1

    @property
    def log_inp_depth(self) -> int:
        return self.inp_depth.bit_length() - 1

    @property
    def log_wgt_depth(self) -> int:
        return self.wgt_depth.bit_length() - 1

    @property
    def log_acc_depth(self) -> int:
        return self.acc_depth.bit_length() - 1

    @property
    def bus_bytes(self) -> int:
        return (1 << self.log_bus_width) // 8

    @property
    def macs_per_cycle(self) -> int:
        return self.batch * self.block_in * self.block_out

    @property
    def peak_gops(self) -> float:
        """Peak GEMM throughput in GOP/s (2 ops per MAC)."""
        return 2.0 * self.macs_per_cycle * self.clock_mhz / 1e3

    @property
    def design_name(self) -> str:
        """VTA's name for the design, e.g. ``1x16_i8w8a32_15_15_18_17``."""
        block = f"{self.block_in}" if self.block_in == self.block_out else f"{self.block_in}x{self.block_out}"
        return (
            f"{self.batch}x{block}_i{self.inp_bits}w{self.wgt_bits}a{self.acc_bits}_"
            f"{self.log_uop_buff_size}_{self.log_inp_buff_size}_{self.log_wgt_buff_size}_{self.log_acc_buff_size}"
        )

    def describe(self) -> str:
        return (
            f"VTA {self.design_name} ({self.name}) at {self.clock_mhz:g} MHz, {8 * self.bus_bytes}-bit bus: "
            f"{self.macs_per_cycle} MAC/cycle, {self.peak_gops:.1f} GOP/s peak"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> VTAConfig:
        """A config from field names and/or VTA's upper-case JSON keys (``LOG_BLOCK`` sets both blocks)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        base = PRESETS.get(str(d.get("preset", d.get("board", "pynq"))))
        if base is None:
            raise TargetError(f"{source}: unknown preset {d.get('preset', d.get('board'))!r}; presets: {_names()}")
        values: dict[str, Any] = {}
        for key, v in d.items():
            if key in ("preset", "board") or key in _IGNORED_KEYS:
                continue
            if key == "LOG_BLOCK":
                values["log_block_in"] = values["log_block_out"] = int(v)
            elif key in _VTA_KEYS:
                values[_VTA_KEYS[key]] = int(v)
            elif key in fields:
                values[key] = v
            else:
                raise TargetError(f"{source}: unknown VTA config key {key!r}; known: {', '.join(sorted(fields))}")
        if "TARGET" in d and "name" not in values:
            values["name"] = str(d["TARGET"])
        try:
            return dataclasses.replace(base, **values)
        except TypeError as e:
            raise TargetError(f"{source}: {e}") from None


def _names() -> str:
    return ", ".join(PRESETS)


PRESETS: dict[str, VTAConfig] = {
    "pynq": VTAConfig(),
    "de10nano": VTAConfig(name="de10nano"),
    "ultra96": VTAConfig(name="ultra96", clock_mhz=333.0, log_bus_width=7),
    "zcu104": VTAConfig(name="zcu104", clock_mhz=333.0, log_bus_width=7),
    "zcu104-1x32": VTAConfig(name="zcu104-1x32", log_block_in=5, log_block_out=5, clock_mhz=333.0, log_bus_width=7),
}
DEFAULT_BOARD = "pynq"


def get_config(board: str = DEFAULT_BOARD, config_file: str = "") -> VTAConfig:
    """The preset ``board``, or the JSON file ``config_file`` (which may name a preset to start from)."""
    if config_file:
        return load_config(config_file)
    if board not in PRESETS:
        raise TargetError(f"unknown VTA board {board!r}; presets: {_names()}")
    return PRESETS[board]


def load_config(path: str | Path) -> VTAConfig:
    """A ``VTAConfig`` from a JSON file (VTA's keys or this class's field names)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise TargetError(f"VTA config file {str(p)!r} does not exist") from None
    except (OSError, ValueError) as e:
        raise TargetError(f"VTA config file {str(p)!r} could not be read: {e}") from None
    if not isinstance(data, dict):
        raise TargetError(f"VTA config file {str(p)!r}: expected a JSON object")
    return VTAConfig.from_dict(data, source=str(p))


__all__ = ["DEFAULT_BOARD", "INSN_BYTES", "PRESETS", "UOP_BYTES", "VTAConfig", "get_config", "load_config"]
