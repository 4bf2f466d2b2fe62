"""A bit-exact functional simulator of VTA, vectorized with numpy per instruction.

``Simulator(config, dram).run(insns)`` executes an instruction stream the
way VTA's functional simulator (fsim) does, inside the portable subset of
``shared/VTA-ISA.md``:

1. **Modules and tokens.** Each instruction goes to the load, compute or
   store module (``isa.module_of``); each module runs its own instructions in
   program order; an instruction waits until every queue it pops holds a
   token, pops, executes, then pushes. The three modules are interleaved:
   each runs as far as its tokens let it, round after round.
2. **Completion.** The run ends when FINISH executes. Before it does, the
   other modules run as far as they can; an instruction that still has not
   run then, or one after FINISH on compute, is an error (fsim would drop or
   hang on it). No runnable module and no FINISH: deadlock (every blocked
   instruction and the queue it waits on are named); the stream running out
   without FINISH: an error too.
3. **Semantics** (per instruction, vectorized over its whole loop nest):
   LOAD with 2-D stride and zero padding (dense on chip; the stride applies
   to DRAM), GEMM ``acc[dst] += inp[src] . wgt[wgt]^T`` over int32 with
   wraparound (or zeroing with ``reset``), ALU MIN/MAX/ADD/SHR with an
   immediate or an ACC operand, STORE of each int32 lane's low 8 bits.
   A GEMM whose loop nest has the shape accelopt emits (weights not indexed
   by the inner loop, inputs not by the outer one, one destination per loop
   iteration) is one matrix product; others gather every product and
   scatter-add them. An ALU op whose destinations are distinct and whose
   sources are immediates, disjoint from the destinations, or the
   destinations themselves runs as one array operation; any other runs in
   loop order (16 lanes at a time), so results never depend on the
   vectorization.
4. **Errors** (``SimulatorError``, naming the instruction's index and its
   disassembly): an illegal flag for the module, a buffer or DRAM overrun
   (DRAM below 0x1000 is page 0, invalid), unknown memory types, and every
   non-portable form: ALU MUL, a shift outside -15..15 (immediate or tensor
   operand), padding on WGT/UOP loads, a UOP load of more than one row, an
   8-bit ACC load, a STORE with padding or from a vector last written by a
   LOAD or a reset GEMM, more than 8 tokens in one queue.
5. **Counters** with VTA's names (``Counters``): inp/wgt/acc/uop_load_nbytes,
   out_store_nbytes, gemm_counter, alu_counter (non-reset GEMMs and ALU ops:
   ``iter_out * iter_in * (uop_end - uop_bgn)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided
from threadpoolctl import threadpool_limits

from accelopt.errors import TargetError
from accelopt.targets.fpga.config import UOP_BYTES, VTAConfig
from accelopt.targets.fpga.counters import Counters
from accelopt.targets.fpga.isa import AluInsn, AluOp, FinishInsn, GemmInsn, Insn, MemInsn, MemType, Opcode, decode_uops
from accelopt.targets.fpga.modules import MODULES, disassemble_one, module_of, tokens

#: tokens a hardware dependency queue holds (fsim's are unbounded: more is not portable)
QUEUE_DEPTH = 8
#: DRAM page 0 is invalid in fsim
MIN_DRAM_ADDRESS = 0x1000
#: portable shift amounts
SHIFT_RANGE = (-15, 15)
_FLOAT32_EXACT = 2**24


class SimulatorError(TargetError):
    """A program the simulator refuses: names the instruction index and its disassembly."""


@dataclass(frozen=True)
class _LoopPlan:
    """A GEMM/ALU instruction's flattened destinations, its sources, and how it runs."""

    dst: np.ndarray
    src: np.ndarray | None
    wgt: np.ndarray | None
    vector: bool  # destinations distinct (and, for the ALU, sources safe to read first)
    mode: str = ""  # GEMM: matmul | sum | gather


def _distinct(a: np.ndarray) -> bool:
    if a.size < 2:
        return True
    s = np.sort(a)
    return bool((s[1:] != s[:-1]).all())


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    if a.max() < b.min() or b.max() < a.min():
        return True
    return not np.isin(a, b).any()


class Simulator:
    """The on-chip state of one VTA and the DRAM it sees (``dram``: a uint8 array indexed by byte address)."""

    def __init__(self, config: VTAConfig, dram: np.ndarray, plans: dict | None = None) -> None:
        if dram.dtype != np.uint8 or dram.ndim != 1:
            raise TargetError("the simulator's DRAM is a 1-D uint8 array indexed by byte address")
        self.config = c = config
        self.dram = dram
        self.inp = np.zeros((c.inp_depth, c.block_in), np.int8)
        self.wgt = np.zeros((c.wgt_depth, c.block_out, c.block_in), np.int8)
        self.acc = np.zeros((c.acc_depth, c.block_out), np.int32)
        self.uop = np.zeros((3, c.uop_depth), np.int64)  # decoded: dst, src, wgt
        #: per ACC vector: last written by a non-reset GEMM or an ALU op (a portable STORE source)
        self.storable = np.zeros(c.acc_depth, bool)
        self.counters = Counters()
        #: per-instruction loop plans, keyed by the instruction and its micro-ops; pass the same dict to
        #: simulators that run the same program again to skip rebuilding them
        self.plans: dict = plans if plans is not None else {}
        self._index = 0
        self._insn: Insn | None = None

    # ------------------------------------------------------------- driver
    def run(self, insns: Sequence[Insn]) -> Counters:
        """Run one instruction stream to its FINISH; returns this run's counters (also added to ``counters``)."""
        with threadpool_limits(limits=1, user_api="blas"):  # small products: BLAS threads only add overhead
            return self._run(insns)

    def _run(self, insns: Sequence[Insn]) -> Counters:
        before = dataclasses.replace(self.counters)
        lists: dict[str, list[int]] = {m: [] for m in MODULES}
        for i, insn in enumerate(insns):
            lists[module_of(insn)].append(i)
        pos = dict.fromkeys(MODULES, 0)
        queues = {"l2g": 0, "g2l": 0, "g2s": 0, "s2g": 0}
        finished = False

        def step(module: str, allow_finish: bool) -> bool:
            """Run ``module`` as far as its tokens allow; True if anything ran."""
            nonlocal finished
            ran = False
            seq = lists[module]
            while pos[module] < len(seq) and not finished:
                i = seq[pos[module]]
                insn = insns[i]
                if isinstance(insn, FinishInsn) and not allow_finish:
                    break
                pops, pushes, illegal = tokens(insn)
                if illegal:
                    raise self._error(i, insn, f"{', '.join(illegal)} is illegal on the {module} module")
                if any(queues[q] == 0 for q in pops):
                    break
                for q in pops:
                    queues[q] -= 1
                self._execute(i, insn)
                for q in pushes:
                    queues[q] += 1
                    if queues[q] > QUEUE_DEPTH:
                        raise self._error(
                            i, insn, f"queue {q} would hold {queues[q]} tokens; the hardware holds {QUEUE_DEPTH}"
                        )
                pos[module] += 1
                ran = True
                if isinstance(insn, FinishInsn):
                    finished = True
            return ran

        while not finished:
            progressed = False
            for m in MODULES:
                progressed |= step(m, allow_finish=False)
            if progressed:
                continue
            # nothing else runs: FINISH may now (case 2)
            if step("compute", allow_finish=True):
                continue
            self._stuck(insns, lists, pos, queues)
        left = [(m, lists[m][pos[m]]) for m in MODULES if pos[m] < len(lists[m])]
        if left:
            fin = lists["compute"][pos["compute"] - 1]
            m, i = left[0]
            what = "runs after FINISH" if m == "compute" else f"on the {m} module never ran before FINISH"
            raise self._error(
                i,
                insns[i],
                f"{what} (FINISH is instruction {fin}; {sum(len(lists[x]) - pos[x] for x in MODULES)} "
                "instruction(s) left): fsim drops or hangs on it",
            )
        delta = Counters(**{k: v - getattr(before, k) for k, v in self.counters.as_dict().items()})
        return delta

    def _stuck(self, insns: Sequence[Insn], lists: dict[str, list[int]], pos: dict[str, int], queues: dict) -> None:
        waiting = []
        for m in MODULES:
            if pos[m] < len(lists[m]):
                i = lists[m][pos[m]]
                pops, _, _ = tokens(insns[i])
                empty = [q for q in pops if queues[q] == 0]
                waiting.append(f"{m}: instruction {disassemble_one(insns[i], i).strip()} waits on {', '.join(empty)}")
        if not waiting:
            last = len(insns) - 1
            tail = disassemble_one(insns[last], last).strip() if insns else "(empty stream)"
            raise SimulatorError(f"the program ended without FINISH (last instruction: {tail})")
        raise SimulatorError("deadlock: no module can run; " + "; ".join(waiting))

    def _error(self, index: int, insn: Insn, what: str) -> SimulatorError:
        return SimulatorError(f"instruction {index} ({disassemble_one(insn).strip()}): {what}")

    def _execute(self, index: int, insn: Insn) -> None:
        self._index, self._insn = index, insn
        if isinstance(insn, MemInsn):
            if insn.opcode == Opcode.LOAD:
                self._load(insn)
            else:
                self._store(insn)
        elif isinstance(insn, GemmInsn):
            self._gemm(insn)
        elif isinstance(insn, AluInsn):
            self._alu(insn)

    def _fail(self, what: str) -> SimulatorError:
        assert self._insn is not None
        return self._error(self._index, self._insn, what)

    # ------------------------------------------------------------- memory
    def _dram_rows(self, insn: MemInsn, elem_bytes: int) -> np.ndarray:
        """A (y_size, x_size * elem_bytes) uint8 view of the DRAM rows ``insn`` touches (checked)."""
        start = insn.dram_base * elem_bytes
        row = insn.x_size * elem_bytes
        stride = insn.x_stride * elem_bytes
        end = start + (insn.y_size - 1) * stride + row
        if start < MIN_DRAM_ADDRESS or end > self.dram.size:
            raise self._fail(
                f"DRAM bytes [0x{start:x}, 0x{end:x}) are outside [0x{MIN_DRAM_ADDRESS:x}, 0x{self.dram.size:x})"
            )
        base = self.dram[start:]
        return as_strided(base, shape=(insn.y_size, row), strides=(stride, 1), writeable=False)

    def _load(self, insn: MemInsn) -> None:
        c = self.config
        mt = insn.memory_type
        if mt == MemType.ACC_8BIT:
            raise self._fail("8-bit ACC loads exist only in fsim (not portable)")
        if mt == MemType.OUT:
            raise self._fail("LOAD cannot read into the OUT buffer")
        pads = (insn.y_pad_0, insn.y_pad_1, insn.x_pad_0, insn.x_pad_1)
        if mt in (MemType.WGT, MemType.UOP) and any(pads):
            raise self._fail(f"padding on a {mt.name} load is ignored by the hardware (not portable)")
        if insn.x_size == 0:
            return
        if mt == MemType.UOP:
            if insn.y_size != 1:
                raise self._fail("UOP loads ignore y_size on the hardware: load micro-ops as one row (y_size 1)")
            self._load_uops(insn)
            return
        if insn.y_size == 0:
            return
        buffers: dict[MemType, tuple[int, int, np.ndarray]] = {
            MemType.INP: (c.inp_depth, c.inp_elem_bytes, self.inp),
            MemType.WGT: (c.wgt_depth, c.wgt_elem_bytes, self.wgt),
            MemType.ACC: (c.acc_depth, c.acc_elem_bytes, self.acc),
        }
        depth, eb, buf = buffers[mt]
        ytot = insn.y_pad_0 + insn.y_size + insn.y_pad_1
        xtot = insn.x_pad_0 + insn.x_size + insn.x_pad_1
        if insn.sram_base + ytot * xtot > depth:
            raise self._fail(
                f"{mt.name} buffer overrun: elements [{insn.sram_base}, {insn.sram_base + ytot * xtot}) of {depth}"
            )
        rows = self._dram_rows(insn, eb)
        data = rows.view(buf.dtype.newbyteorder("<")).reshape((insn.y_size, insn.x_size) + buf.shape[1:])
        if any(pads):
            full = np.zeros((ytot, xtot) + buf.shape[1:], buf.dtype)
            full[insn.y_pad_0 : insn.y_pad_0 + insn.y_size, insn.x_pad_0 : insn.x_pad_0 + insn.x_size] = data
            data = full
        buf[insn.sram_base : insn.sram_base + ytot * xtot] = data.reshape((-1,) + buf.shape[1:])
        n = insn.x_size * insn.y_size * eb
        if mt == MemType.INP:
            self.counters.inp_load_nbytes += n
        elif mt == MemType.WGT:
            self.counters.wgt_load_nbytes += n
        else:
            self.counters.acc_load_nbytes += n
            self.storable[insn.sram_base : insn.sram_base + ytot * xtot] = False

    def _load_uops(self, insn: MemInsn) -> None:
        c = self.config
        if insn.sram_base + insn.x_size > c.uop_depth:
            raise self._fail(f"UOP buffer overrun: [{insn.sram_base}, {insn.sram_base + insn.x_size}) of {c.uop_depth}")
        rows = self._dram_rows(insn, UOP_BYTES)
        words = rows.view("<u4").reshape(-1)
        dst, src, wgt = decode_uops(words, c)
        self.uop[0, insn.sram_base : insn.sram_base + insn.x_size] = dst
        self.uop[1, insn.sram_base : insn.sram_base + insn.x_size] = src
        self.uop[2, insn.sram_base : insn.sram_base + insn.x_size] = wgt
        self.counters.uop_load_nbytes += insn.x_size * UOP_BYTES

    def _store(self, insn: MemInsn) -> None:
        c = self.config
        if insn.x_size == 0:  # a no-op carrying tokens (VTA's runtime gives it memory type UOP)
            return
        if insn.memory_type != MemType.OUT:
            raise self._fail(f"STORE writes the OUT buffer only, not {insn.memory_type.name}")
        if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            raise self._fail("STORE takes no padding")
        if insn.y_size == 0:
            return
        n = insn.x_size * insn.y_size
        if insn.sram_base + n > c.acc_depth:
            raise self._fail(f"OUT buffer overrun: elements [{insn.sram_base}, {insn.sram_base + n}) of {c.acc_depth}")
        ok = self.storable[insn.sram_base : insn.sram_base + n]
        if not ok.all():
            bad = insn.sram_base + int(np.argmin(ok))
            raise self._fail(
                f"ACC vector {bad} was last written by a LOAD or a reset GEMM: the hardware's output buffer "
                "differs from fsim there (not portable)"
            )
        eb = c.out_elem_bytes
        rows = self._dram_rows(insn, eb)  # bounds check
        del rows
        low = self.acc[insn.sram_base : insn.sram_base + n].astype(np.uint8)  # low 8 bits of each lane
        start = insn.dram_base * eb
        if insn.x_stride >= insn.x_size:
            out = as_strided(self.dram[start:], shape=(insn.y_size, insn.x_size * eb), strides=(insn.x_stride * eb, 1))
            out[...] = low.reshape(insn.y_size, insn.x_size * eb)
        else:  # overlapping rows: in order, later rows win
            for y in range(insn.y_size):
                a = start + y * insn.x_stride * eb
                self.dram[a : a + insn.x_size * eb] = low[y * insn.x_size : (y + 1) * insn.x_size].reshape(-1)
        self.counters.out_store_nbytes += n * eb

    # --------------------------------------------------------------- loops
    def _indices(self, insn: GemmInsn | AluInsn, which: int, f_out: int, f_in: int) -> np.ndarray:
        """``uop[which][k] + o*f_out + i*f_in`` over (iter_out, iter_in, uops)."""
        u = self.uop[which, insn.uop_bgn : insn.uop_end]
        o = np.arange(insn.iter_out, dtype=np.int64)[:, None, None] * f_out
        i = np.arange(insn.iter_in, dtype=np.int64)[None, :, None] * f_in
        return u[None, None, :] + o + i

    def _check_loops(self, insn: GemmInsn | AluInsn) -> bool:
        """False when the loop nest is empty; raises on micro-op range errors."""
        if insn.uop_end > self.config.uop_depth:
            raise self._fail(f"uop_end {insn.uop_end} is past the UOP buffer ({self.config.uop_depth})")
        return insn.iter_out > 0 and insn.iter_in > 0 and insn.uop_end > insn.uop_bgn

    def _check_range(self, idx: np.ndarray, depth: int, what: str) -> None:
        hi = int(idx.max())
        if hi >= depth:
            raise self._fail(f"{what} index {hi} is past the buffer ({depth} elements)")

    def _plan(self, insn: GemmInsn | AluInsn) -> _LoopPlan:
        """The instruction's index arrays and how to run it, cached by instruction and micro-op contents."""
        key = (insn, self.uop[:, insn.uop_bgn : insn.uop_end].tobytes())
        plan = self.plans.get(key)
        if plan is None:
            plan = self._make_plan(insn)
            self.plans[key] = plan
        return plan

    def _make_plan(self, insn: GemmInsn | AluInsn) -> _LoopPlan:
        c = self.config
        dst = self._indices(insn, 0, insn.dst_factor_out, insn.dst_factor_in)
        if isinstance(insn, AluInsn):
            self._check_range(dst, c.acc_depth, "ACC destination")
            flat = dst.reshape(-1)
            src = None
            if not insn.use_imm:
                src = self._indices(insn, 1, insn.src_factor_out, insn.src_factor_in).reshape(-1)
                self._check_range(src, c.acc_depth, "ACC source")
            vector = _distinct(flat) and (src is None or bool((src == flat).all()) or _disjoint(src, flat))
            return _LoopPlan(flat, src, None, vector)
        self._check_range(dst, c.acc_depth, "ACC")
        if insn.reset:
            return _LoopPlan(dst.reshape(-1), None, None, True)
        src = self._indices(insn, 1, insn.src_factor_out, insn.src_factor_in)
        wgt = self._indices(insn, 2, insn.wgt_factor_out, insn.wgt_factor_in)
        self._check_range(src, c.inp_depth, "INP")
        self._check_range(wgt, c.wgt_depth, "WGT")
        one_dst = bool((dst[:, :, :1] == dst).all())
        if one_dst and insn.wgt_factor_in == 0 and insn.src_factor_out == 0:
            targets = dst[:, :, 0].reshape(-1)
            return _LoopPlan(targets, src[0], wgt[:, 0], _distinct(targets), "matmul")
        targets = (dst[:, :, 0] if one_dst else dst).reshape(-1)
        return _LoopPlan(targets, src, wgt, _distinct(targets), "sum" if one_dst else "gather")

    def _gemm(self, insn: GemmInsn) -> None:
        c = self.config
        if not self._check_loops(insn):
            return
        plan = self._plan(insn)
        if insn.reset:
            self.acc[plan.dst] = 0
            self.storable[plan.dst] = False
            return
        n_uops = insn.uop_end - insn.uop_bgn
        self.counters.gemm_counter += insn.iter_out * insn.iter_in * n_uops
        exact = n_uops * c.block_in * 128 * 128 < _FLOAT32_EXACT
        ft = np.float32 if exact else np.float64
        assert plan.src is not None and plan.wgt is not None
        if plan.mode == "matmul":
            # one matrix product: X (iter_in, U*BI) @ W (U*BI, iter_out*BO)
            x = self.inp[plan.src].astype(ft).reshape(insn.iter_in, -1)
            w = self.wgt[plan.wgt]  # (O, U, BO, BI)
            w = w.transpose(1, 3, 0, 2).astype(ft).reshape(n_uops * c.block_in, -1)
            res = (x @ w).reshape(insn.iter_in, insn.iter_out, c.block_out).transpose(1, 0, 2)
        else:
            x = self.inp[plan.src].astype(ft)  # (O, I, U, BI)
            w = self.wgt[plan.wgt].astype(ft)  # (O, I, U, BO, BI)
            prod = np.einsum("oiuk,oiujk->oiuj", x, w)
            res = prod.sum(axis=2) if plan.mode == "sum" else prod
        add = np.rint(res).astype(np.int64).astype(np.int32).reshape(-1, c.block_out)
        if plan.vector:
            self.acc[plan.dst] += add
        else:
            np.add.at(self.acc, plan.dst, add)
        self.storable[plan.dst] = True

    def _alu(self, insn: AluInsn) -> None:
        if insn.alu_op == AluOp.MUL:
            raise self._fail("ALU MUL exists only in fsim (not portable)")
        if insn.alu_op == AluOp.SHR and insn.use_imm and not SHIFT_RANGE[0] <= insn.imm <= SHIFT_RANGE[1]:
            raise self._fail(f"shift by {insn.imm}: portable shifts are {SHIFT_RANGE[0]}..{SHIFT_RANGE[1]}")
        if not self._check_loops(insn):
            return
        plan = self._plan(insn)
        dst, src = plan.dst, plan.src
        self.counters.alu_counter += dst.size
        if plan.vector:
            b = np.int64(insn.imm) if src is None else self.acc[src].astype(np.int64)
            self._check_shift(insn, b)
            self.acc[dst] = self._apply(insn.alu_op, self.acc[dst].astype(np.int64), b)
        else:  # loop order, 16 lanes at a time (case 3)
            for k in range(dst.size):
                d = dst[k]
                b = np.int64(insn.imm) if src is None else self.acc[src[k]].astype(np.int64)
                self._check_shift(insn, b)
                self.acc[d] = self._apply(insn.alu_op, self.acc[d].astype(np.int64), b)
        self.storable[dst] = True

    def _check_shift(self, insn: AluInsn, b: np.ndarray | np.int64) -> None:
        if insn.alu_op == AluOp.SHR and not insn.use_imm:
            lo, hi = int(np.min(b)), int(np.max(b))
            if lo < SHIFT_RANGE[0] or hi > SHIFT_RANGE[1]:
                bad = lo if lo < SHIFT_RANGE[0] else hi
                raise self._fail(
                    f"shift by {bad} from an ACC operand: portable shifts are {SHIFT_RANGE[0]}..{SHIFT_RANGE[1]}"
                )

    @staticmethod
    def _apply(op: AluOp, a: np.ndarray, b: np.ndarray | np.int64) -> np.ndarray:
        """One ALU op on int64 copies of int32 lanes, wrapped back to int32."""
        if op == AluOp.MIN:
            r = np.minimum(a, b)
        elif op == AluOp.MAX:
            r = np.maximum(a, b)
        elif op == AluOp.ADD:
            r = a + b
        else:  # SHR: arithmetic right by y >= 0, left by -y otherwise
            r = np.where(b >= 0, a >> np.maximum(b, 0), a << np.maximum(-b, 0))
        return np.asarray(r, np.int64).astype(np.int32)


__all__ = [
    "MIN_DRAM_ADDRESS",
    "QUEUE_DEPTH",
    "SHIFT_RANGE",
    "Simulator",
    "SimulatorError",
]
