"""TPU chip descriptors: the figures the policy and the roofline estimate read.

Peak rates and HBM bandwidth are Google's published per-chip figures
(Cloud TPU system-architecture pages, cloud.google.com/tpu/docs/<version>):

1. v4  — "Peak compute per chip (bf16 or int8): 275 TFLOPs"; HBM2 32 GiB at
   1200 GBps; 128x128 MXUs. int8 runs at the bf16 rate, so int8 is no faster.
   (cloud.google.com/tpu/docs/v4)
2. v5e — bf16 197 TFLOPs, int8 394 TOPs (the page lists 393-394); HBM2
   16 GB at 819 GBps; four 128x128 MXUs per TensorCore.
   (cloud.google.com/tpu/docs/v5e)
3. v5p — bf16 459 TFLOPs, int8 918 TOPs; HBM2e 95 GB at 2765 GBps; 128x128
   MXUs. (cloud.google.com/tpu/docs/v5p and the v5p launch announcement,
   cloud.google.com/blog, Dec 2023, for the int8 figure)
4. v6e (Trillium) — bf16 918 TFLOPs, int8 1836 TOPs; HBM 32 GB at 1640 GBps;
   256x256 MXUs ("expanded the size of matrix multiply units", Trillium
   announcement, cloud.google.com/blog, May 2024). (cloud.google.com/tpu/docs/v6e)

The descriptors are used for planning (tile padding, int8 choice) and for the
roofline estimate; nothing here is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelopt.errors import TargetError


@dataclass(frozen=True)
class Chip:
    """One TPU generation: peak rates, memory bandwidth and MXU tile."""

    name: str
    peak_bf16_tflops: float  # dense bf16 matmul peak per chip, TFLOP/s
    peak_int8_tops: float  # dense int8 matmul peak per chip, TOP/s
    hbm_gbps: float  # HBM bandwidth per chip, GB/s (1e9 bytes/s)
    hbm_gb: float  # HBM capacity per chip, GB
    mxu_tile: int  # MXU systolic array edge: matmul dims are padded to multiples of it
    source: str  # where the figures come from

    @property
    def int8_speedup(self) -> bool:
        """True when int8 matmuls run faster than bf16 on this chip."""
        return self.peak_int8_tops > self.peak_bf16_tflops * 1.05

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "peak_bf16_tflops": self.peak_bf16_tflops,
            "peak_int8_tops": self.peak_int8_tops,
            "hbm_gbps": self.hbm_gbps,
            "hbm_gb": self.hbm_gb,
            "mxu_tile": self.mxu_tile,
            "int8_speedup": self.int8_speedup,
            "source": self.source,
        }


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 275.0, 275.0, 1200.0, 32.0, 128, "cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("v5e", 197.0, 394.0, 819.0, 16.0, 128, "cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("v5p", 459.0, 918.0, 2765.0, 95.0, 128, "cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("v6e", 918.0, 1836.0, 1640.0, 32.0, 256, "cloud.google.com/tpu/docs/v6e"),
}

DEFAULT_CHIP = "v5e"


def get_chip(name: str | Chip) -> Chip:
    """The descriptor for ``name`` (``v4``, ``v5e``, ``v5p``, ``v6e``; a leading ``tpu-`` is accepted)."""
    if isinstance(name, Chip):
        return name
    key = name.lower().removeprefix("tpu-").removeprefix("tpu")
    try:
        return CHIPS[key]
    except KeyError:
        raise TargetError(f"unknown TPU chip {name!r}; known chips: {', '.join(CHIPS)}") from None
