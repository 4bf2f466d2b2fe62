"""``FpgaArtifact``: VTA programs + their DRAM image + the host part, saved so any VTA runtime can replay them.

On disk (``save`` / ``load``)::

    metadata.json                       config, layers (program, node, scales, estimates, counters), MAC split
    dram.bin                            the initial DRAM image: bytes from address 0 (page 0 zero), every
                                        program's micro-ops, weight tiles and per-channel constants in place
    programs/<layer>/insns.bin          the instruction stream, n x 16 bytes little-endian
    programs/<layer>/program.json       each region's address, size, role (constant/input/output) and layout
    host.ir, host.npz                   the host part: the final graph's text form and its constants (the
                                        offloaded layers' int8 weights are read back from dram.bin)
    host/                               host=cpu: the cpu target's artifact of the host part (model.so...)

``run(inputs, dump_dir=None)`` runs the graph with the interpreter (or, with
``host=cpu``, the cpu target's compiled host part), except that each
offloaded ``QLinear`` runs its VTA program on the simulator
(``Simulator``, bit-exact): the host puts the int8 rows (and their row
shifts) into the program's input regions, the program runs, the host reads
the int8 result. A layer whose inputs have more rows than the program was
compiled for runs in chunks of its rows (the last one zero-padded).

``dump_dir`` (bring-up on a board): for every program call
``<dump_dir>/<layer>/call<i>/`` gets ``dram_in.bin`` (the program's DRAM
segment as it was just before the accelerator started, inputs filled in),
``output.bin`` (the output region as the simulator left it), ``insns.bin``
and ``call.json`` (the segment's and the output region's addresses), so the
same bytes can be replayed on VTA's simulator or hardware and compared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.errors import ParseError, TargetError
from accelopt.interpreter import Interpreter
from accelopt.ir.graph import Graph
from accelopt.ir.parser import parse
from accelopt.ir.printer import print_graph
from accelopt.targets.base import Artifact, register_artifact
from accelopt.targets.fpga.config import VTAConfig
from accelopt.targets.fpga.counters import Counters
from accelopt.targets.fpga.isa import Insn, decode_program, encode_program
from accelopt.targets.fpga.layout import TilePlan, pack_inputs, pack_row_shifts, unpack_outputs, unpack_weights
from accelopt.targets.fpga.program import DramImage, Program, Region
from accelopt.targets.fpga.requant import row_shifts
from accelopt.targets.fpga.simulator import Simulator

log = logging.getLogger(__name__)

FORMAT = "accelopt-fpga-artifact"
VERSION = 1
FILES = (
    "metadata.json",
    "dram.bin",
    "host.ir",
    "host.npz",
    "programs/<layer>/insns.bin",
    "programs/<layer>/program.json",
)
#: where ``host=cpu`` keeps the cpu target's artifact of the host part
HOST_DIR = "host"


@dataclass
class Layer:
    """One offloaded node at run time: its program and how the host feeds it."""

    name: str
    node: str
    program: Program
    base_scale: float
    row_shift: bool
    input_offset: int
    zero_point_columns: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    #: the simulator's loop plans for this program, kept between calls
    plans: dict = field(default_factory=dict, repr=False)

    @property
    def insns(self) -> list[Insn]:
        return self.program.insns

    def as_dict(self) -> dict[str, Any]:
        p = self.program
        return {
            "name": self.name,
            "node": self.node,
            "dir": f"programs/{self.name}",
            "rows": p.rows,
            "k": p.k,
            "n": p.n,
            "base_scale": self.base_scale,
            "row_shift": self.row_shift,
            "input_offset": self.input_offset,
            "zero_point_columns": self.zero_point_columns,
            "instructions": len(p.insns),
            "micro_ops": p.num_uops,
            "dram_bytes": p.dram_bytes,
            **self.info,
        }


class FpgaArtifact(Artifact):
    """VTA programs, their DRAM image and the host graph; ``run`` simulates the programs bit-exactly."""

    files = FILES

    def __init__(
        self,
        graph: Graph,
        config: VTAConfig,
        layers: Sequence[Layer],
        image: DramImage,
        metadata: Mapping[str, Any],
        *,
        source: str = "<memory>",
    ) -> None:
        super().__init__("fpga", graph, metadata=metadata)
        self.config = config
        self.layers = list(layers)
        self.image = image
        self.source = source
        self.last_counters: dict[str, Counters] = {}
        self._interp: Interpreter | None = None
        self._dump: Path | None = None
        self._calls: dict[str, int] = {}
        #: the host part compiled by the cpu target (``host=cpu``); None: the interpreter runs it
        self.host_artifact: Any = None

    # ------------------------------------------------------------------ run
    def run(self, inputs: Mapping[str, np.ndarray], dump_dir: str | Path | None = None) -> dict[str, np.ndarray]:
        """Run the model: host ops by the interpreter, offloaded layers on the simulated VTA (see the docstring)."""
        assert self.graph is not None
        if self._interp is None and self.host_artifact is None:
            self._interp = Interpreter(self.graph, {layer.node: self._kernel(layer) for layer in self.layers})
        self.last_counters = {}
        self._calls = {}
        self._dump = Path(dump_dir) if dump_dir is not None else None
        if self._dump is not None:
            self._dump.mkdir(parents=True, exist_ok=True)
        try:
            if self.host_artifact is not None:  # host=cpu: the compiled host part calls the layers back
                return dict(self.host_artifact.run(inputs))
            assert self._interp is not None
            return self._interp.run(inputs)
        finally:
            self._dump = None

    def _kernel(self, layer: Layer) -> Any:
        def kernel(ins: list, attrs: dict, n_out: int) -> list[np.ndarray]:
            return [self.run_layer(layer, ins[0], ins[1], ins[2] if len(ins) > 2 else None)]

        return kernel

    def run_layer(
        self, layer: Layer, x_q: np.ndarray, x_scale: np.ndarray | None = None, x_zp: np.ndarray | None = None
    ) -> np.ndarray:
        """One offloaded layer on int8 (or uint8) inputs ``[..., K]``; its int8 result ``[..., N]``."""
        p = layer.program
        k = p.k - layer.zero_point_columns
        x = np.asarray(x_q)
        lead = x.shape[:-1]
        m = int(np.prod(lead)) if lead else 1
        if x.shape[-1] != k:
            raise TargetError(f"layer {layer.node}: expected inputs [..., {k}], got {list(x.shape)}")
        x2 = x.reshape(m, k)
        if layer.input_offset:
            x2 = (x2.astype(np.int16) - layer.input_offset).astype(np.int8)
        elif x2.dtype != np.int8:
            raise TargetError(f"layer {layer.node}: expected int8 inputs, got {x2.dtype}")
        if layer.zero_point_columns:  # each row's zero point in the extra columns (requant case 4)
            if x_zp is None:
                raise TargetError(f"layer {layer.node}: its rows' zero points are needed")
            z = np.broadcast_to(np.asarray(x_zp, np.int8), lead + (1,)).reshape(m, 1)
            x2 = np.concatenate([x2, np.repeat(z, layer.zero_point_columns, axis=1)], axis=1)
        shifts = None
        if layer.row_shift:
            if x_scale is None:
                raise TargetError(f"layer {layer.node}: its rows' scales are needed")
            scales = np.broadcast_to(np.asarray(x_scale, np.float32), lead + (1,)).reshape(m)
            shifts = row_shifts(scales, layer.base_scale, layer.node)
        out = np.empty((m, p.n), np.int8)
        for start in range(0, m, p.rows):
            stop = min(m, start + p.rows)
            out[start:stop] = self._call(layer, x2[start:stop], None if shifts is None else shifts[start:stop])
        return out.reshape(lead + (p.n,))

    def _call(self, layer: Layer, rows: np.ndarray, shifts: np.ndarray | None) -> np.ndarray:
        p = layer.program
        img = self.image
        img.write(p.region("input"), pack_inputs(rows, self.config, p.rows))
        if shifts is not None:
            img.write(p.region("row_shift"), pack_row_shifts(shifts, self.config, p.rows))
        call = self._calls.get(layer.name, 0)
        self._calls[layer.name] = call + 1
        where = None
        if self._dump is not None:
            where = self._dump / layer.name / f"call{call}"
            where.mkdir(parents=True, exist_ok=True)
            img.segment(p).tofile(where / "dram_in.bin")
        counters = Simulator(self.config, img.data, layer.plans).run(p.insns)
        prev = self.last_counters.get(layer.name)
        if prev is None:
            self.last_counters[layer.name] = counters
        else:
            prev += counters
        out_r = p.region("output")
        if where is not None:
            img.data[out_r.address : out_r.end].tofile(where / "output.bin")
            (where / "insns.bin").write_bytes(encode_program(p.insns, self.config))
            lo, hi = p.segment
            (where / "call.json").write_text(
                json.dumps(
                    {
                        "layer": layer.name,
                        "node": layer.node,
                        "call": call,
                        "rows": int(rows.shape[0]),
                        "segment": {"address": lo, "nbytes": hi - lo, "file": "dram_in.bin"},
                        "output": {"address": out_r.address, "nbytes": out_r.nbytes, "file": "output.bin"},
                        "instructions": len(p.insns),
                        "counters": counters.as_dict(),
                    },
                    indent=2,
                )
            )
        return unpack_outputs(img.read(out_r), p.n, rows.shape[0])

    # ------------------------------------------------------------- save/load
    def initial_image(self) -> np.ndarray:
        """The DRAM image with every program's input and output regions zero (as before any run)."""
        data = self.image.data.copy()
        for layer in self.layers:
            for r in layer.program.regions.values():
                if r.role != "constant":
                    data[r.address : r.end] = 0
        return data

    def save(self, directory: str | Path) -> list[Path]:
        """Write the artifact (see the module docstring); returns the files and folders written at the top."""
        assert self.graph is not None
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        progs = d / "programs"
        for layer in self.layers:
            pd = progs / layer.name
            pd.mkdir(parents=True, exist_ok=True)
            (pd / "insns.bin").write_bytes(encode_program(layer.insns, self.config))
            (pd / "program.json").write_text(json.dumps(layer.program.describe(), indent=2))
        self.initial_image().tofile(d / "dram.bin")
        offloaded_weights = {_weight_name(self.graph, layer.node) for layer in self.layers}
        (d / "host.ir").write_text(print_graph(self.graph))
        consts: dict[str, np.ndarray] = {
            k: np.asarray(v.const) for k, v in self.graph.initializers.items() if k not in offloaded_weights
        }
        arrays: dict[str, Any] = {f"w{i}": a for i, a in enumerate(consts.values())}
        arrays["names"] = np.array(list(consts), dtype=str)
        with open(d / "host.npz", "wb") as f:
            np.savez(f, **arrays)
        meta = dict(self.metadata)
        meta.update(format=FORMAT, version=VERSION, target="fpga", config=self.config.as_dict())
        meta["layers"] = [layer.as_dict() for layer in self.layers]
        (d / "metadata.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        written += [d / "dram.bin", d / "host.ir", d / "host.npz", d / "metadata.json"]
        if self.layers:
            written.append(progs)
        if self.host_artifact is not None:
            self.host_artifact.save(d / HOST_DIR)
            written.append(d / HOST_DIR)
        return written

    @classmethod
    def load(cls, directory: str | Path) -> FpgaArtifact:
        d = Path(directory)
        try:
            meta = json.loads((d / "metadata.json").read_text())
        except (OSError, ValueError) as e:
            raise TargetError(f"{d}: not an fpga artifact (metadata.json: {e})") from None
        if meta.get("format") != FORMAT:
            raise TargetError(f"{d}: metadata.json is not an {FORMAT} (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) > VERSION:
            raise TargetError(f"{d}: artifact version {meta['version']} is newer than this accelopt reads ({VERSION})")
        config = VTAConfig.from_dict(meta["config"], source=str(d / "metadata.json"))
        try:
            data = np.fromfile(d / "dram.bin", dtype=np.uint8)
            text = (d / "host.ir").read_text()
            with np.load(d / "host.npz") as z:
                names = [str(n) for n in z["names"]]
                weights = {n: z[f"w{i}"] for i, n in enumerate(names)}
        except OSError as e:
            raise TargetError(f"{d}: a file of the fpga artifact is missing or unreadable: {e}") from None
        image = DramImage(data)
        layers = [_load_layer(d, entry, config) for entry in meta.get("layers", [])]
        # the offloaded layers' weights come back from the DRAM image (they are stored once)
        pre = parse(text, weights) if not layers else None
        if layers:
            try:
                probe = parse(text)
            except ParseError as e:
                raise TargetError(f"{d}/host.ir: {e}") from None
            for layer in layers:
                wname = _weight_name(probe, layer.node)
                tiles = image.read(layer.program.region("weight"))
                k = layer.program.k - layer.zero_point_columns
                weights[wname] = unpack_weights(tiles, layer.program.k, layer.program.n)[:k]
            pre = parse(text, weights)
        assert pre is not None
        art = cls(pre, config, layers, image, {k: v for k, v in meta.items() if k != "layers"}, source=str(d))
        if meta.get("host") == "cpu":  # the host part compiled by the cpu target; its calls come back here
            from accelopt.targets.cpu.artifact import CpuArtifact
            from accelopt.targets.fpga.host_cpu import register_layers

            art.host_artifact = CpuArtifact.load(d / HOST_DIR)
            register_layers(art, str(meta["host_token"]))
        return art

    # ---------------------------------------------------------------- report
    def describe(self) -> dict[str, Any]:
        from accelopt.targets.fpga.details import describe

        return describe(self)


def _weight_name(graph: Graph, node: str) -> str:
    n = graph.node(node)
    w = n.inputs[3] if len(n.inputs) > 3 else None
    if w is None:
        raise TargetError(f"offloaded node {node} has no weight input")
    return w.name


def _load_layer(d: Path, entry: Mapping[str, Any], config: VTAConfig) -> Layer:
    pd = d / str(entry["dir"])
    try:
        desc = json.loads((pd / "program.json").read_text())
        insns = decode_program((pd / "insns.bin").read_bytes(), config)
    except (OSError, ValueError) as e:
        raise TargetError(f"{pd}: program files missing or unreadable: {e}") from None
    t = desc["tiling"]
    blocks = desc["blocks"]
    plan = TilePlan(
        int(desc["rows"]),
        int(blocks["k"]),
        int(blocks["n"]),
        int(t["m_tile"]),
        int(t["n_tile"]),
        int(t["k_tile"]),
        bool(desc["row_shift"]),
    )
    regions = {name: Region.from_dict(name, r) for name, r in desc["regions"].items()}
    extra = {k: desc[k] for k in ("alu_ops_per_vector", "blocks") if k in desc}
    program = Program(
        str(desc["name"]),
        config,
        insns,
        regions,
        {},
        int(desc["rows"]),
        int(desc["k"]),
        int(desc["n"]),
        plan,
        int(desc["micro_ops"]),
        extra,
    )
    info = {k: v for k, v in entry.items() if k in ("estimate", "counters", "macs", "tiling")}
    return Layer(
        str(entry["name"]),
        str(entry["node"]),
        program,
        float(entry["base_scale"]),
        bool(entry["row_shift"]),
        int(entry["input_offset"]),
        int(entry.get("zero_point_columns", 0)),
        info,
    )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


__all__ = ["FORMAT", "VERSION", "FpgaArtifact", "Layer"]

register_artifact(FORMAT, FpgaArtifact)
