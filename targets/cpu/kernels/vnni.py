"""AVX-512 VNNI dot-product tensor intrinsics: 16 int32 lanes += 4 u8 x 4 s8 products each (``vpdpbusd``).

TVM ships ``dot_16x4_vnni`` in ``tvm.s_tir.tensor_intrin.x86``, but with LLVM 22
it fails the verifier (``llvm.x86.avx512.vpdpbusd.512`` now takes ``<64 x i8>``
operands, not ``<16 x i32>``) and declares its accumulator in global memory.
These are registered under accelopt's own names, with the operand types LLVM
22 wants and a ``local`` accumulator (it lives in a zmm register):

1. ``accelopt_vnni_u8s8``: ``C[i] += A[k] * B[i, k]`` for ``A`` uint8 [4],
   ``B`` int8 [16, 4], ``C`` int32 [16]: the 4 bytes of ``A`` are broadcast
   to all 16 lanes.
2. ``accelopt_vnni_s8s8``: the same for int8 ``A``, computed as
   ``(A[k] + 128) * B[i, k]``: flipping the sign bit of each byte
   (``xor 0x80808080``) turns int8 ``a`` into uint8 ``a + 128``. The caller
   subtracts ``128 * sum_k B`` (a column sum known at compile time).

``register()`` is idempotent; the names are imported by ``qdense``.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

VNNI_U8S8 = "accelopt_vnni_u8s8"
VNNI_S8S8 = "accelopt_vnni_s8s8"
#: the four bytes 0x80 as a signed int32
_SIGN_BITS = -2139062144


def _intrinsic(a_dtype: str) -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """``(description, implementation)`` for activations of ``a_dtype`` (case 1: uint8, case 2: int8)."""
    shift = 128 if a_dtype == "int8" else 0
    flip = _SIGN_BITS if a_dtype == "int8" else 0

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i, k in T.grid(16, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + (T.Cast("int32", A[vk]) + shift) * T.Cast("int32", B[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a = T.bitwise_xor(T.reinterpret(A.vload([0], a_dtype + "x4"), dtype="int32"), T.int32(flip))
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(a, 16), dtype="uint8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    return desc, impl


def register() -> None:
    """Register both intrinsics (once per process)."""
    for name, a_dtype in ((VNNI_U8S8, "uint8"), (VNNI_S8S8, "int8")):
        if TensorIntrin.get(name, allow_missing=True) is None:
            TensorIntrin.register(name, *_intrinsic(a_dtype))


register()
