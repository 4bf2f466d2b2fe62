"""``Program``: one VTA instruction stream with the DRAM regions it reads and writes.

A program owns one contiguous segment of VTA's physical address space,
split into regions at byte addresses that are multiples of 256 (and of their
element size), never below 0x1000:

==============  ========  ===============================================================
region          role      holds
==============  ========  ===============================================================
``uop``         constant  the micro-ops (uint32 words, one LOAD UOP brings them all)
``weight``      constant  int8 weight tiles (Nb, Kb, BO, BI) [out][in]
``constants``   constant  int32 ACC vectors (Nb, 2, BO): bias (+ rounding), shift amounts
``input``       input     int8 activation vectors (M, Kb, BI): the host fills it
``row_shift``   input     int32 ACC vectors (M, BO): each row's shift (rows with own scales)
``output``      output    int8 result vectors (M, Nb, BO): the host reads it
==============  ========  ===============================================================

``Program.describe()`` is what ``program.json`` holds: for each region its
address, size, role, memory type and layout, so that any VTA runtime can
replay the program (write the constants and inputs at their addresses, run
``insns.bin``, read the output region). ``DramImage`` places programs'
constant regions into one image (``dram.bin``: bytes from address 0, page 0
left zero), which is also the simulator's memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import VTAConfig
from accelopt.targets.fpga.isa import Insn, MemInsn
from accelopt.targets.fpga.layout import TilePlan
from accelopt.targets.fpga.modules import disassemble
from accelopt.targets.fpga.simulator import MIN_DRAM_ADDRESS

ALIGN = 256
ROLES = ("constant", "input", "output")


@dataclass(frozen=True)
class Region:
    """One DRAM region of a program."""

    name: str
    address: int  # byte address
    nbytes: int
    role: str
    memory_type: str
    elem_bytes: int
    shape: tuple[int, ...]
    dtype: str
    holds: str

    @property
    def end(self) -> int:
        return self.address + self.nbytes

    @property
    def elem_address(self) -> int:
        """``dram_base`` of the region's first element (addresses count elements of the memory type)."""
        return self.address // self.elem_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "address_hex": f"0x{self.address:08x}",
            "nbytes": self.nbytes,
            "role": self.role,
            "memory_type": self.memory_type,
            "elem_bytes": self.elem_bytes,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "holds": self.holds,
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Region:
        return cls(
            name,
            int(d["address"]),
            int(d["nbytes"]),
            str(d["role"]),
            str(d["memory_type"]),
            int(d["elem_bytes"]),
            tuple(int(x) for x in d["shape"]),
            str(d["dtype"]),
            str(d["holds"]),
        )


class RegionAllocator:
    """Hands out aligned regions upwards from ``start``."""

    def __init__(self, start: int) -> None:
        self.next = max(_align(start, ALIGN), MIN_DRAM_ADDRESS)
        self.regions: dict[str, Region] = {}

    def add(
        self, name: str, role: str, memory_type: str, elem_bytes: int, shape: tuple[int, ...], dtype: str, holds: str
    ) -> Region:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address = _align(self.next, max(ALIGN, elem_bytes))
        r = Region(name, address, nbytes, role, memory_type, elem_bytes, shape, dtype, holds)
        self.regions[name] = r
        self.next = _align(address + max(nbytes, 1), ALIGN)
        return r


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass
class Program:
    """One compiled layer: instructions, regions, constant data, and what it computes."""

    name: str
    config: VTAConfig
    insns: list[Insn]
    regions: dict[str, Region]
    constants: dict[str, np.ndarray]
    rows: int
    k: int
    n: int
    plan: TilePlan
    num_uops: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def row_shift(self) -> bool:
        return "row_shift" in self.regions

    @property
    def segment(self) -> tuple[int, int]:
        return min(r.address for r in self.regions.values()), max(r.end for r in self.regions.values())

    @property
    def dram_bytes(self) -> int:
        lo, hi = self.segment
        return hi - lo

    @property
    def macs(self) -> int:
        return self.rows * self.k * self.n

    def region(self, name: str) -> Region:
        try:
            return self.regions[name]
        except KeyError:
            raise TargetError(f"program {self.name} has no region {name!r}") from None

    def disassembly(self, count: int | None = None) -> list[str]:
        return disassemble(self.insns, 0, count)

    def describe(self) -> dict[str, Any]:
        """``program.json``: everything a VTA runtime needs to replay the program."""
        lo, hi = self.segment
        return {
            "name": self.name,
            "config": self.config.as_dict(),
            "design": self.config.design_name,
            "instructions": len(self.insns),
            "micro_ops": self.num_uops,
            "rows": self.rows,
            "k": self.k,
            "n": self.n,
            "row_shift": self.row_shift,
            "segment": {"address": lo, "end": hi, "nbytes": hi - lo},
            "regions": {name: r.as_dict() for name, r in self.regions.items()},
            "tiling": {
                "m_tile": self.plan.m_tile,
                "n_tile": self.plan.n_tile,
                "k_tile": self.plan.k_tile,
                "tiles": self.plan.num_tiles,
                "chunks": self.plan.num_chunks,
                "summary": self.plan.describe(),
            },
            **self.info,
        }


class DramImage:
    """VTA's DRAM as one uint8 array indexed by byte address, with programs' constant regions written in."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    @classmethod
    def build(cls, programs: Iterable[Program]) -> DramImage:
        progs = list(programs)
        end = max((p.segment[1] for p in progs), default=MIN_DRAM_ADDRESS)
        data = np.zeros(_align(end, ALIGN), np.uint8)
        image = cls(data)
        for p in progs:
            for name, arr in p.constants.items():
                image.write(p.region(name), arr)
        return image

    def write(self, region: Region, arr: np.ndarray) -> None:
        raw = np.ascontiguousarray(arr, dtype=np.dtype(region.dtype).newbyteorder("<")).reshape(-1).view(np.uint8)
        if raw.size > region.nbytes:
            raise TargetError(f"{raw.size} bytes do not fit region {region.name} ({region.nbytes} bytes)")
        self.data[region.address : region.address + raw.size] = raw

    def read(self, region: Region) -> np.ndarray:
        raw = self.data[region.address : region.end]
        return raw.view(np.dtype(region.dtype).newbyteorder("<")).reshape(region.shape)

    def segment(self, program: Program) -> np.ndarray:
        lo, hi = program.segment
        return self.data[lo:hi]


def check_addresses(program: Program) -> None:
    """Every LOAD/STORE of ``program`` stays inside one of its regions (a compiler self-check)."""
    for i, insn in enumerate(program.insns):
        if not isinstance(insn, MemInsn) or insn.x_size == 0 or insn.y_size == 0:
            continue
        eb = {"UOP": 4, "WGT": program.config.wgt_elem_bytes, "INP": program.config.inp_elem_bytes}.get(
            insn.memory_type.name, program.config.acc_elem_bytes if insn.memory_type.name == "ACC" else 16
        )
        if insn.memory_type.name == "OUT":
            eb = program.config.out_elem_bytes
        lo = insn.dram_base * eb
        hi = lo + ((insn.y_size - 1) * insn.x_stride + insn.x_size) * eb
        if not any(r.address <= lo and hi <= r.end for r in program.regions.values()):
            raise TargetError(
                f"program {program.name}: instruction {i} touches DRAM [0x{lo:x}, 0x{hi:x}) outside its regions"
            )


__all__ = ["ALIGN", "DramImage", "Program", "Region", "RegionAllocator", "check_addresses"]
