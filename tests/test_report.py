"""The report: JSON schema, round trip, Markdown, self-contained HTML (rendered in headless Chromium), diff."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accelopt.api import Result, optimize
from accelopt.records import AccuracyRecord, Localization, PassRecord
from accelopt.report import SCHEMA_VERSION, Report, diff_reports, fmt_metric

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def damaged(tiny_bert: Path) -> Result:
    """cleanup then a damaging pass (rolled back), on a tiny ONNX BERT."""
    return optimize(str(tiny_bert), target="onnx", passes="cleanup,damage{scale=2}", seq_len=16, num_samples=8)


@pytest.fixture(scope="module")
def plain(tiny_bert: Path) -> Result:
    return optimize(str(tiny_bert), target="onnx", passes="cleanup", seq_len=16, num_samples=8)


def validate_schema(data: dict) -> None:
    schema = Report.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


# ------------------------------------------------------------------- JSON
def test_json_validates_against_the_schema(damaged: Result, tmp_path: Path) -> None:
    path = damaged.report.save(tmp_path / "report.json")
    data = json.loads(path.read_text())
    validate_schema(data)
    assert data["schema"] == "accelopt-report" and data["schema_version"] == SCHEMA_VERSION
    assert data["pipeline"] == "cleanup,damage{scale=2.0}"
    assert {"python", "numpy", "onnx", "onnxruntime"} <= set(data["versions"])
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["validation"]["reference_runtime"] == "onnxruntime"
    assert data["validation"]["baseline"]["ok"] is True


def test_schema_rejects_a_broken_report(damaged: Result) -> None:
    data = damaged.report.to_dict()
    del data["passes"][0]["spec"]
    with pytest.raises(jsonschema.ValidationError):
        validate_schema(data)
    data = damaged.report.to_dict()
    data["status"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        validate_schema(data)


def test_json_round_trip(damaged: Result, tmp_path: Path) -> None:
    path = damaged.report.save(tmp_path / "r.json")
    back = Report.load(path)
    assert back.to_dict() == json.loads(path.read_text())
    rolled = [p for p in back.passes if p.rolled_back]
    assert len(rolled) == 1 and isinstance(rolled[0].localization, Localization)
    assert isinstance(rolled[0].accuracy, AccuracyRecord)


def test_non_finite_metrics_are_strings_in_json(tmp_path: Path) -> None:
    acc = AccuracyRecord(vs_reference={"max_abs": math.inf, "cosine_min": math.nan}, ok=False, failures=["x"])
    rec = PassRecord(
        name="p",
        spec="p",
        family="test",
        options={},
        rolled_back=True,
        accuracy=acc,
        localization=Localization("n", "MatMul", "v", "max_abs", math.nan, "d"),
    )
    r = _onnx_report("p", rec)
    path = r.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    validate_schema(data)
    assert data["passes"][0]["accuracy"]["vs_reference"] == {"max_abs": "inf", "cosine_min": "nan"}
    back = Report.load(path)
    assert back.passes[0].accuracy.vs_reference["max_abs"] == math.inf
    assert math.isnan(back.passes[0].localization.error)


def _model_info() -> dict:
    return {
        "source": "m.onnx",
        "kind": "onnx",
        "graph": "g",
        "inputs": {},
        "outputs": {},
        "nodes": 0,
        "ops": {},
        "parameter_bytes": {},
        "macs": None,
    }


def _onnx_report(pipeline: str, *passes: PassRecord, **model: Any) -> Report:
    """A hand-made report for the onnx target: ``passes`` on ``_model_info()`` with the fields ``model`` changes."""
    return Report(
        model=_model_info() | model,
        target={"name": "onnx", "spec": "onnx", "capabilities": None},
        pipeline=pipeline,
        passes=list(passes),
    )


def test_load_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not an accelopt report"):
        Report.load(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"schema": "accelopt-report", "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        Report.load(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        Report.load(tmp_path / "c.json")


def test_save_picks_the_format_from_the_suffix(damaged: Result, tmp_path: Path) -> None:
    r = damaged.report
    assert r.save(tmp_path / "r.md").read_text().startswith("# accelopt report")
    assert r.save(tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert "passes" in r.save(tmp_path / "r.txt").read_text()
    with pytest.raises(ValueError, match=r"use \.json, \.md, \.html"):
        r.save(tmp_path / "r.pdf")


# --------------------------------------------------------------- contents
def test_markdown_names_rollback_metric_and_node(damaged: Result) -> None:
    md = damaged.report.to_markdown()
    rec = next(p for p in damaged.report.passes if p.rolled_back)
    assert rec.name == "damage" and rec.localization is not None
    assert "`cleanup,damage{scale=2.0}`" in md
    assert "**rolled back**: max_abs" in md
    assert f"**first diverging node**: `{rec.localization.node}` (MatMul)" in md
    assert "| metric | vs reference | vs previous | tolerance |" in md
    assert "≤ 0.0001" in md  # the tight tolerance of the test family
    # op deltas of the first cleanup pass are listed
    first = damaged.report.passes[0]
    assert first.ops_before != first.ops_after and "| op | before | after | Δ |" in md


def test_steps_and_param_bytes(damaged: Result) -> None:
    steps = damaged.report.steps()
    assert [s["status"] for s in steps][-1] == "rolled back"
    assert steps[0]["nodes_before"] == damaged.report.model["nodes"]
    assert steps[-1]["nodes_after"] == damaged.report.result["nodes"]
    assert damaged.report.passes[0].param_bytes_before["float32"] > 0


def test_console_render(damaged: Result) -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, color_system=None)
    damaged.report.render(console)
    text = console.file.getvalue()
    assert "damage" in text and "rolled back" in text and "first diverging node" in text


def test_fmt_metric() -> None:
    assert fmt_metric(None) == "-"
    assert fmt_metric(0.0) == "0"
    assert fmt_metric(0.9999999999) == "1-1.0e-10"
    assert fmt_metric(0.995) == "0.9950000"
    assert fmt_metric(1.5e-5) == "1.50e-05"
    assert fmt_metric(math.inf) == "inf"


def test_diff_aligns_passes(plain: Result, damaged: Result) -> None:
    d = diff_reports(plain.report, damaged.report)
    assert ("pipeline", "cleanup", "cleanup,damage{scale=2.0}") in d.header
    kinds = [r.kind for r in d.rows]
    assert kinds[-1] == "only in B" and d.rows[-1].spec == "damage{scale=2.0}"
    assert all(k == "same" for k in kinds[:-1])
    assert not d.identical_passes
    assert diff_reports(plain.report, plain.report).identical_passes
    assert "only in B" in d.to_markdown()


# -------------------------------------------------------------------- HTML
def test_html_is_self_contained(damaged: Result) -> None:
    from accelopt.report_html import render_html

    page = render_html(damaged.report)
    assert page.count("<svg") == 2  # accuracy and op-count charts
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    # the only http string is the SVG namespace, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "× rejected (rolled back)" in page and "First diverging node" in page


def test_html_escapes_user_strings() -> None:
    from accelopt.report_html import render_html

    r = _onnx_report("a,b", source="<script>alert(1)</script>.onnx")
    page = render_html(r)
    assert "<script>" not in page and "&lt;script&gt;" in page


# --------------------------------------------------------- PNG + Chromium
def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA/gray PNG (all five row filters) to an array [h, w, c]."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    w, h, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0, header
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        if f in (0, 2):
            cur = (line + (prev if f == 2 else 0)) & 0xFF
        else:
            for x in range(stride):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(h, w, ch)


def write_png(img: np.ndarray) -> bytes:
    """Encode RGB with row filters 0..4 in turn (to test ``read_png``)."""
    h, w, ch = img.shape
    rows = []
    prev = np.zeros(w * ch, dtype=np.int32)
    for y in range(h):
        cur = img[y].reshape(-1).astype(np.int32)
        f = y % 5
        a = np.concatenate([np.zeros(ch, np.int32), cur[:-ch]])
        c = np.concatenate([np.zeros(ch, np.int32), prev[:-ch]])
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = a
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (a + prev) // 2
        else:
            p = a + prev - c
            pa, pb, pc = np.abs(p - a), np.abs(p - prev), np.abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, c))
        rows.append(bytes([f]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes())
        prev = cur

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_png_reader_round_trip() -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(11, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_png(write_png(img)), img)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed (Debian package: chromium)")
def test_html_renders_in_headless_chromium(damaged: Result, tmp_path: Path) -> None:
    page = damaged.report.save(tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1600",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), res.stderr[-2000:]
    img = read_png(shot.read_bytes())[..., :3].astype(np.int32)
    assert img.shape[0] >= 400 and img.shape[1] >= 400
    non_white = np.any(img < 245, axis=-1).mean()
    colors = len(np.unique(img.reshape(-1, 3), axis=0))
    assert non_white > 0.02, f"screenshot is blank ({non_white:.4f} non-white)"
    assert colors > 20, f"screenshot has only {colors} colors"
    # chart colours are on the page: the palette's first blue appears somewhere
    assert np.any(np.all(np.abs(img - np.array([0x4E, 0x79, 0xA7])) <= 8, axis=-1))


def test_rule_counts_and_near_misses_are_shown() -> None:
    from accelopt.report_html import render_html

    rec = PassRecord(
        name="fuse-attention",
        spec="fuse-attention",
        family="fusion",
        options={},
        modified=True,
        stats={
            "attention": {"candidates": 12, "matched": 10, "near_misses": 2},
            "sdpa": {"candidates": 0, "matched": 0},
            "rewrites": 10,
        },
        near_misses=[
            "attention: 10 of 12 matched; closest: node where_3, stopped at Where: mask input is not a graph input"
        ],
    )
    r = _onnx_report("x", rec)
    md = r.to_markdown()
    assert "| attention | 10 | 12 | 2 |" in md and "| sdpa |" not in md
    assert "- 1 other rule(s) found no candidate" in md and "- rewrites: 10" in md
    assert "- near miss: attention: 10 of 12 matched; closest: node where_3" in md
    page = render_html(r)
    assert "<td>attention</td>" in page and "stopped at Where: mask input is not a graph input" in page
    validate_schema(r.to_dict())


# ------------------------------------------------------- narrow consoles
LONG_SPEC = "quantize-int8{calibration=percentile,percentile=99.99}"


def _tpu_like_report() -> Report:
    """Passes with long names, a rollback, and an artifact whose summary carries a roofline estimate."""
    specs = ["constant-fold", "remove-noops", "fuse-embedlayernorm", "fuse-skiplayernorm", LONG_SPEC]
    passes = []
    for i, spec in enumerate(specs):
        acc = AccuracyRecord(
            vs_reference={"max_abs": 1.5e-6 * (i + 1), "cosine_min": 1 - 2e-12},
            vs_previous={"max_abs": 3.25e-7 * i},
            ok=True,
        )
        passes.append(
            PassRecord(
                name=spec.split("{")[0],
                spec=spec,
                family="cleanup",
                options={},
                seconds=0.012,
                modified=True,
                rolled_back=i == 4,
                rollback_reason="cosine 0.98 < 0.995" if i == 4 else "",
                ops_before={"MatMul": 100 - i},
                ops_after={"MatMul": 99 - i},
                accuracy=acc,
            )
        )
    artifact = {
        "target": "tpu",
        "files": ["metadata.json", "params.bin", "model.b8_s128.jaxexport"],
        "summary": [
            "TPU target: chip v5e, precision bf16 (requested auto), platforms tpu, cpu",
            "bucket b8_s128: export 0.31 s; TPU v5e estimate (roofline; not a measurement): 0.021 ms",
            "note: batch 1 padded to 8 (multiple of 8)",
        ],
    }
    return Report(
        model=_model_info(),
        target={"name": "tpu", "spec": "tpu", "capabilities": {"name": "tpu", "estimate_only": True}},
        pipeline=",".join(specs),
        passes=passes,
        artifact=artifact,
    )


def _render(report: Report, width: int) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    report.render(console)
    return console.file.getvalue()


def _folded_cell(lines: list[str], index: int, start: str) -> str:
    """The text of the pass cell in table row ``index`` that begins with ``start`` and folds down its column."""
    row = next(i for i, line in enumerate(lines) if re.match(rf"\s*{index}\s+{re.escape(start)}", line))
    col = lines[row].index(start)
    width = len(lines[row][col:].split("  ")[0])
    parts = [lines[row][col : col + width]]
    for line in lines[row + 1 :]:
        cell = line[col : col + width].strip()
        if not cell or line[:col].strip():
            break
        parts.append(cell)
    return "".join(p.strip() for p in parts)


@pytest.mark.parametrize("width", [60, 80])
def test_console_is_readable_when_narrow(width: int) -> None:
    text = _render(_tpu_like_report(), width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in text  # nothing truncated
    for spec in ("constant-fold", "remove-noops", "fuse-embedlayernorm", "fuse-skiplayernorm"):
        assert any(spec in line for line in lines), spec
    assert _folded_cell(lines, 5, "quantize-int8{") == LONG_SPEC
    flat = " ".join(text.split())  # captions and summary lines wrap at word boundaries
    assert "narrow console: " in flat and "max abs vs previous pass left out" in flat
    assert ("time, max abs vs reference" in flat) == (width < 72)
    # the artifact summary, labelled as an estimate
    assert "artifact (tpu)" in flat and "estimates from an analytic model, not measurements" in flat
    assert "note: batch 1 padded to 8 (multiple of 8)" in flat


def test_console_wide_has_every_column() -> None:
    text = _render(_tpu_like_report(), 160)
    assert "max abs vs prev" in text and "narrow console" not in text
    assert LONG_SPEC in text and "rolled back" in text
    assert "estimates from an analytic model" in text


def test_artifact_summary_in_markdown_and_html(plain: Result) -> None:
    from accelopt.report_html import render_html

    r = _tpu_like_report()
    md = r.to_markdown()
    assert "## Artifact (tpu)" in md and "*Estimate: performance figures are estimates" in md
    assert "- bucket b8_s128: export 0.31 s; TPU v5e estimate (roofline; not a measurement): 0.021 ms" in md
    page = render_html(r)
    assert '<p class="estimate"><strong>Estimate:</strong>' in page
    assert "<li>note: batch 1 padded to 8 (multiple of 8)</li>" in page
    validate_schema(r.to_dict())
    # an onnx artifact measures nothing: its metadata is listed, with no estimate label
    md = plain.report.to_markdown()
    assert "## Artifact (onnx)" in md and "- opsets: ai.onnx" in md and "Estimate" not in md
    assert "Estimate:" not in render_html(plain.report)
