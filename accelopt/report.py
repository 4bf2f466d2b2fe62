"""The pass-level report: what a run did to a model, pass by pass.

``Report`` holds a header (model, target, the pipeline string that
reproduces the run, versions, machine), validation settings with the
accuracy of the imported graph and of the final graph, and one
``PassRecord`` per pass run. Formats:

1. ``report.save("r.json")``: JSON following ``report_schema.json``
   (``SCHEMA_VERSION``); ``Report.load`` reads it back;
2. ``report.save("r.md")``: Markdown;
3. ``report.save("r.html")``: one self-contained HTML file (inline CSS and
   SVG charts of accuracy and op counts per pass, no script, no network);
4. ``report.render(console)``: rich tables on a console.

``diff_reports(a, b)`` compares two reports pass by pass (passes aligned by
their specs), for ``optimize diff A.json B.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import importlib.metadata
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelopt.records import AccuracyRecord, Localization, PassRecord

SCHEMA_NAME = "accelopt-report"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")

#: distributions whose versions the header lists (those installed)
VERSIONED_PACKAGES = (
    "accelopt",
    "numpy",
    "scipy",
    "onnx",
    "onnxruntime",
    "torch",
    "transformers",
    "apache-tvm",
    "jax",
    "jaxlib",
    "ml_dtypes",
    "networkx",
    "rich",
)

#: metrics in the order tables show them (label, metric)
METRIC_COLUMNS = (
    ("max abs", "max_abs"),
    ("mean abs", "mean_abs"),
    ("rel L2", "rel_l2"),
    ("worst cosine", "cosine_min"),
    ("mean cosine", "cosine_mean"),
    ("argmax agree", "argmax_agreement"),
    ("pooled cosine", "pooled_cosine_min"),
    ("sim. Spearman", "similarity_spearman"),
    ("sim. max abs", "similarity_max_abs"),
)


# ------------------------------------------------------------ environment
def collect_versions() -> dict[str, str]:
    """Python and the installed versions of ``VERSIONED_PACKAGES``."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED_PACKAGES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def collect_machine() -> dict[str, Any]:
    """CPU model, core counts, memory and OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 1024**2, 1)
                    break
    except (OSError, ValueError):
        pass
    cores = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = cores
    return {
        "cpu": cpu,
        "cores": cores,
        "usable_cores": usable,
        "memory_gb": mem,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


# ------------------------------------------------------------ JSON helpers
def _clean(obj: Any) -> Any:
    """JSON-able data: numpy scalars as Python numbers, non-finite floats as strings, tuples as lists."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _clean(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v) for v in obj]
    return str(obj)


def _real(x: Any) -> Any:
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    return x


def _reals(d: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _real(v) for k, v in (d or {}).items()}


def accuracy_from_dict(d: Mapping[str, Any] | None) -> AccuracyRecord | None:
    if d is None:
        return None
    return AccuracyRecord(
        vs_reference=_reals(d.get("vs_reference")),
        vs_previous=_reals(d.get("vs_previous")),
        per_output={k: _reals(v) for k, v in (d.get("per_output") or {}).items()},
        tolerance=dict(d.get("tolerance") or {}),
        ok=bool(d.get("ok", True)),
        failures=list(d.get("failures") or []),
        scope=str(d.get("scope", "model")),
    )


def pass_record_from_dict(d: Mapping[str, Any]) -> PassRecord:
    names = {f.name for f in dataclasses.fields(PassRecord)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["accuracy"] = accuracy_from_dict(d.get("accuracy"))
    loc = d.get("localization")
    kw["localization"] = None if loc is None else Localization(**{**loc, "error": _real(loc["error"])})
    return PassRecord(**kw)


# ------------------------------------------------------------------ Report
@dataclass
class Report:
    """Everything ``optimize`` reports; see the module docstring for the formats."""

    model: dict[str, Any]
    target: dict[str, Any]
    pipeline: str
    requested_pipeline: str = ""
    passes: list[PassRecord] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    baseline: AccuracyRecord | None = None
    final: AccuracyRecord | None = None
    artifact_check: AccuracyRecord | None = None
    status: str = "not-validated"
    result: dict[str, Any] = field(default_factory=lambda: {"nodes": 0, "ops": {}, "parameter_bytes": {}, "macs": None})
    artifact: dict[str, Any] | None = None
    command: str = ""
    seconds: float = 0.0
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=collect_versions)
    machine: dict[str, Any] = field(default_factory=collect_machine)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False only when the final graph did not meet the final tolerance."""
        return self.status != "tolerance-not-met"

    @property
    def rolled_back(self) -> list[PassRecord]:
        return [p for p in self.passes if p.rolled_back]

    @property
    def accuracy_checks(self) -> list[tuple[str, AccuracyRecord]]:
        """The graphs measured against the reference (imported, final, written artifact) that were measured."""
        checks = (("imported graph", self.baseline), ("final graph", self.final), ("written artifact", self.artifact_check))
        return [(name, acc) for name, acc in checks if acc is not None]

    # ------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        validation = dict(self.validation)
        if validation.get("enabled"):
            validation["baseline"] = self.baseline
            validation["final"] = self.final
            validation["artifact"] = self.artifact_check
        return _clean(
            {
                "schema": SCHEMA_NAME,
                "schema_version": SCHEMA_VERSION,
                "created": self.created,
                "seconds": self.seconds,
                "command": self.command,
                "model": self.model,
                "target": self.target,
                "pipeline": self.pipeline,
                "requested_pipeline": self.requested_pipeline or self.pipeline,
                "validation": validation,
                "status": self.status,
                "ok": self.ok,
                "result": self.result,
                "passes": self.passes,
                "artifact": self.artifact,
                "versions": self.versions,
                "machine": self.machine,
                "notes": self.notes,
            }
        )

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        """Rebuild a report from its JSON form; ``ValueError`` for another schema or a newer version."""
        if d.get("schema") != SCHEMA_NAME:
            raise ValueError(f"not an accelopt report (schema {d.get('schema')!r})")
        version = d.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"report schema version {version!r} is newer than this accelopt reads ({SCHEMA_VERSION})")
        validation = dict(d.get("validation") or {"enabled": False})
        baseline = accuracy_from_dict(validation.pop("baseline", None))
        final = accuracy_from_dict(validation.pop("final", None))
        art = accuracy_from_dict(validation.pop("artifact", None))
        return cls(
            model=dict(d["model"]),
            target=dict(d["target"]),
            pipeline=d["pipeline"],
            requested_pipeline=d.get("requested_pipeline", ""),
            passes=[pass_record_from_dict(p) for p in d.get("passes", [])],
            validation=validation,
            baseline=baseline,
            final=final,
            artifact_check=art,
            status=d.get("status", "not-validated"),
            result=dict(d.get("result") or {}),
            artifact=d.get("artifact"),
            command=d.get("command", ""),
            seconds=float(d.get("seconds", 0.0)),
            created=d.get("created", ""),
            versions=dict(d.get("versions") or {}),
            machine=dict(d.get("machine") or {}),
            notes=list(d.get("notes") or []),
        )

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a report saved as JSON. ``ValueError`` when the file is not one."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read report {str(p)!r}: {e}") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"report {str(p)!r} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"report {str(p)!r} is not a JSON object")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as e:
            raise ValueError(f"report {str(p)!r} lacks or mistypes field {e}") from e

    @staticmethod
    def schema() -> dict[str, Any]:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

    # ------------------------------------------------------------- save
    def save(self, path: str | Path) -> Path:
        """Write the report; the format follows the suffix: ``.json``, ``.md``, ``.html`` (``.htm``), ``.txt``."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".json":
            text = self.to_json()
        elif suffix in (".md", ".markdown"):
            text = self.to_markdown()
        elif suffix in (".html", ".htm"):
            from accelopt.report_html import render_html

            text = render_html(self)
        elif suffix == ".txt":
            text = self.to_text()
        else:
            raise ValueError(f"cannot tell the report format from {p.name!r}: use .json, .md, .html or .txt")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        return p

    # ---------------------------------------------------------- summaries
    def steps(self) -> list[dict[str, Any]]:
        """One row per pass for tables and charts: name, status, node counts, accuracy vs reference."""
        rows = []
        for i, p in enumerate(self.passes, 1):
            acc = p.accuracy
            rows.append(
                {
                    "index": i,
                    "spec": p.spec,
                    "family": p.family,
                    "status": pass_status(p),
                    "seconds": p.seconds,
                    "validate_seconds": p.validate_seconds,
                    "nodes_before": sum(p.ops_before.values()),
                    "nodes_after": sum(p.ops_after.values()),
                    "vs_reference": dict(acc.vs_reference) if acc else {},
                    "vs_previous": dict(acc.vs_previous) if acc else {},
                }
            )
        return rows

    # ------------------------------------------------------------ markdown
    def to_markdown(self) -> str:
        return render_markdown(self)

    def to_text(self) -> str:
        import io

        from rich.console import Console

        console = Console(width=140, record=True, file=io.StringIO(), color_system=None)
        self.render(console)
        return console.export_text()

    def render(self, console: Any, *, details: bool = True) -> None:
        """Draw the report on a rich ``Console``."""
        render_console(self, console, details=details)

    def diff(self, other: Report) -> ReportDiff:
        return diff_reports(self, other)


# ----------------------------------------------------------------- helpers
def pass_status(p: PassRecord) -> str:
    if p.pass_error:
        return "pass-error"
    if p.rolled_back:
        return "rolled back"
    if p.error:
        return "error"
    return "kept" if p.modified else "unchanged"


def fmt_metric(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e5:
        return f"{x:.2e}"
    if 0.99 <= x < 1.0:
        gap = 1.0 - x
        return f"1-{gap:.1e}" if gap < 1e-6 else f"{x:.7f}"
    return f"{x:.4g}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"  # pragma: no cover


def fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def fmt_seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def op_delta(before: Mapping[str, int], after: Mapping[str, int]) -> list[tuple[str, int, int, int]]:
    """(op, before, after, delta) for every op whose count changed, largest changes first."""
    rows = []
    for op in set(before) | set(after):
        b, a = before.get(op, 0), after.get(op, 0)
        if a != b:
            rows.append((op, b, a, a - b))
    rows.sort(key=lambda r: (-abs(r[3]), r[0]))
    return rows


def rule_rows(stats: Mapping[str, Any]) -> tuple[list[tuple[str, Any, Any, Any]], dict[str, Any], int]:
    """Split pass stats into rule rows (rule, matched, candidates, near misses), other figures, and the
    number of rules left out because they saw no candidate."""
    rules, other, idle = [], {}, 0
    for k, v in stats.items():
        if isinstance(v, Mapping) and "matched" in v:
            row = (k, v.get("matched"), v.get("candidates", "-"), v.get("near_misses", 0))
            if not row[1] and not row[2] and not row[3]:
                idle += 1
                continue
            rules.append(row)
        else:
            other[k] = v
    return rules, other, idle


def _short_list(names: Sequence[str], limit: int = 12) -> str:
    if not names:
        return "none"
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def _accuracy_rows(acc: AccuracyRecord) -> list[tuple[str, Any, Any, str]]:
    """(label, vs reference, vs previous, bound) for the metrics present."""
    from accelopt.validation import TOLERANCE_KEYS

    bound_of = {metric: (key, kind) for key, (metric, kind) in TOLERANCE_KEYS.items()}
    rows = []
    for label, metric in METRIC_COLUMNS:
        if metric not in acc.vs_reference and metric not in acc.vs_previous:
            continue
        bound = ""
        if metric in bound_of and bound_of[metric][0] in acc.tolerance:
            key, kind = bound_of[metric]
            bound = ("≤ " if kind == "max" else "≥ ") + f"{acc.tolerance[key]:g}"
        rows.append((label, acc.vs_reference.get(metric), acc.vs_previous.get(metric), bound))
    return rows


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------- markdown
def render_markdown(r: Report) -> str:
    """The report as GitHub-flavoured Markdown."""
    out: list[str] = []
    w = out.append
    status = {
        "ok": "✅ ok",
        "tolerance-not-met": "❌ final accuracy tolerance not met",
        "not-validated": "not validated",
    }
    w(f"# accelopt report: {r.model.get('source', '?')}\n")
    w("| | |\n|---|---|")
    w(f"| model | `{_md_escape(str(r.model.get('source')))}` ({r.model.get('kind')}, graph `{r.model.get('graph')}`) |")
    w(f"| target | `{r.target.get('spec')}` |")
    w(f"| pipeline | `{_md_escape(r.pipeline)}` |")
    if r.requested_pipeline and r.requested_pipeline != r.pipeline:
        w(f"| requested | `{_md_escape(r.requested_pipeline)}` |")
    w(f"| status | {status.get(r.status, r.status)} |")
    w(f"| command | `{_md_escape(r.command)}` |")
    w(f"| created | {r.created} ({fmt_seconds(r.seconds)}) |")
    ins = ", ".join(f"`{k}: {v}`" for k, v in r.model.get("inputs", {}).items())
    outs = ", ".join(f"`{k}: {v}`" for k, v in r.model.get("outputs", {}).items())
    w(f"| inputs | {ins} |\n| outputs | {outs} |")
    w(
        f"| nodes | {r.model.get('nodes')} → {r.result.get('nodes', '-')} |\n"
        f"| MACs | {fmt_count(r.model.get('macs'))} → {fmt_count(r.result.get('macs'))} |"
    )
    pb_in = sum((r.model.get("parameter_bytes") or {}).values())
    pb_out = sum((r.result.get("parameter_bytes") or {}).values())
    w(f"| parameters | {fmt_bytes(pb_in)} → {fmt_bytes(pb_out)} |")
    if r.artifact:
        w(f"| artifact | {', '.join(f'`{f}`' for f in r.artifact.get('files', []))} |")
    w("")

    v = r.validation
    w("## Validation\n")
    if not v.get("enabled"):
        w("Validation was off (`--no-validate`).\n")
    else:
        seq = f"sequence length {v.get('seq_len')}"
        if v.get("seq_lens"):
            seq += f"; buckets {', '.join(str(x) for x in v['seq_lens'])}"
        w(f"- reference: {v.get('reference_runtime')}; inputs: {v.get('inputs')} ({seq})")
        tol = v.get("tolerance") or {}
        w(f"- tolerance overrides: {', '.join(f'{k}={x:g}' for k, x in tol.items()) or 'none (family defaults)'}")
        ft = v.get("final_tolerance") or {}
        w(f"- final tolerance: {', '.join(f'{k}={x:g}' for k, x in ft.items()) or 'none'}")
        for note in v.get("notes", []):
            w(f"- {note}")
        w("")
        rows = r.accuracy_checks
        if rows:
            labels = [label for label, m in METRIC_COLUMNS if any(m in a.vs_reference for _, a in rows)]
            metrics = [m for label, m in METRIC_COLUMNS if label in labels]
            w("| vs reference | " + " | ".join(labels) + " | ok |")
            w("|---" * (len(labels) + 2) + "|")
            for name, a in rows:
                cells = " | ".join(fmt_metric(a.vs_reference.get(m)) for m in metrics)
                w(f"| {name} | {cells} | {'yes' if a.ok else 'no: ' + _md_escape('; '.join(a.failures))} |")
            w("")

    if r.artifact:
        lines, estimate = artifact_summary(r)
        w(f"## Artifact ({_md_escape(str(r.artifact.get('target', r.target.get('name'))))})\n")
        if estimate:
            w(f"*Estimate: {ESTIMATE_LABEL}.*\n")
        for line in lines:
            w(f"- {_md_escape(line)}")
        w("")

    w("## Passes\n")
    if not r.passes:
        w("No pass ran.\n")
    else:
        w(
            "| # | pass | family | status | time | validation | nodes | worst cosine vs ref | max abs vs ref | max abs vs prev |"
        )
        w("|---:|---|---|---|---:|---:|---|---:|---:|---:|")
        for s in r.steps():
            d = s["nodes_after"] - s["nodes_before"]
            w(
                f"| {s['index']} | `{_md_escape(s['spec'])}` | {s['family']} | {s['status']} | {fmt_seconds(s['seconds'])} | "
                f"{fmt_seconds(s['validate_seconds'])} | {s['nodes_before']} → {s['nodes_after']} ({d:+d}) | "
                f"{fmt_metric(s['vs_reference'].get('cosine_min'))} | {fmt_metric(s['vs_reference'].get('max_abs'))} | "
                f"{fmt_metric(s['vs_previous'].get('max_abs'))} |"
            )
        w("")
        for i, p in enumerate(r.passes, 1):
            out.extend(_markdown_pass(i, p))
    w("## Environment\n")
    w("| package | version |\n|---|---|")
    for k, ver in r.versions.items():
        w(f"| {k} | {ver} |")
    m = r.machine
    w(
        f"\nMachine: {m.get('cpu')}, {m.get('usable_cores', m.get('cores'))} usable of {m.get('cores')} cores, "
        f"{m.get('memory_gb')} GB, {m.get('platform')}\n"
    )
    for n in r.notes:
        w(f"- {n}")
    return "\n".join(out).rstrip() + "\n"


def _markdown_pass(i: int, p: PassRecord) -> list[str]:
    out: list[str] = []
    w = out.append
    w(f"### {i}. `{p.spec}` ({p.family}) — {pass_status(p)}\n")
    opts = ", ".join(f"{k}={v}" for k, v in p.options.items()) or "none"
    w(f"- options: {opts}")
    w(f"- time: {fmt_seconds(p.seconds)} (validation {fmt_seconds(p.validate_seconds)})")
    if p.pass_error:
        w(f"- **pass error** (the pass broke the graph or crashed; rolled back): {_md_escape(p.pass_error)}")
        if p.broken_nodes:
            w(f"  - broken nodes: {_short_list(p.broken_nodes)}")
    elif p.rolled_back:
        w(f"- **rolled back**: {_md_escape(p.rollback_reason)}")
        if p.localization is not None:
            loc = p.localization
            w(
                f"- **first diverging node**: `{loc.node}` ({loc.op}), value `%{loc.value}`: "
                f"{loc.metric} = {fmt_metric(loc.error)} — {_md_escape(loc.detail)}"
            )
    if p.error:
        w(f"- error: {_md_escape(p.error)}")
    nb, na = sum(p.ops_before.values()), sum(p.ops_after.values())
    w(f"- nodes: {nb} → {na} ({na - nb:+d}); added {len(p.nodes_added)}, removed {len(p.nodes_removed)}")
    if p.nodes_added:
        w(f"  - added: {_short_list(p.nodes_added)}")
    if p.nodes_removed:
        w(f"  - removed: {_short_list(p.nodes_removed)}")
    w(f"- MACs: {fmt_count(p.macs_before)} → {fmt_count(p.macs_after)}")
    dtypes = sorted(set(p.param_bytes_before) | set(p.param_bytes_after))
    pb = ", ".join(
        f"{dt} {fmt_bytes(p.param_bytes_before.get(dt, 0))} → {fmt_bytes(p.param_bytes_after.get(dt, 0))}"
        for dt in dtypes
    )
    w(f"- parameters: {pb or 'none'}")
    w("")
    delta = op_delta(p.ops_before, p.ops_after)
    if delta:
        w("| op | before | after | Δ |\n|---|---:|---:|---:|")
        for op, b, a, d in delta:
            w(f"| {op} | {b} | {a} | {d:+d} |")
        w("")
    if p.accuracy is not None and (p.modified or p.rolled_back):
        rows = _accuracy_rows(p.accuracy)
        if rows:
            w("| metric | vs reference | vs previous | tolerance |\n|---|---:|---:|---|")
            for label, a, b, bound in rows:
                w(f"| {label} | {fmt_metric(a)} | {fmt_metric(b)} | {bound} |")
            w("")
    rules, other, idle = rule_rows(p.stats)
    if rules:
        w("| rule | matched | candidates | near misses |\n|---|---:|---:|---:|")
        for name, m, c, nm in rules:
            w(f"| {name} | {m} | {c} | {nm} |")
        w("")
    if idle:
        w(f"- {idle} other rule(s) found no candidate")
    for k, v in other.items():
        w(f"- {k}: {_md_escape(json.dumps(_clean(v)))}")
    for nm in p.near_misses:
        w(f"- near miss: {_md_escape(nm)}")
    for n in p.notes:
        w(f"- note: {_md_escape(n)}")
    w("")
    return out


# ------------------------------------------------------------- artifact
def artifact_summary(r: Report) -> tuple[list[str], bool]:
    """Lines summarizing the artifact, and whether its figures are estimates.

    1. the artifact's own ``summary`` lines (``describe()["summary"]``: the TPU
       target gives its policy, weights, per-bucket roofline and notes);
    2. else its scalar metadata (``opsets: ai.onnx 17``, ``nodes: 149``);
    3. estimates: the target's capabilities say ``estimate_only``, or a line
       says "estimate" (the report then labels the section as estimates).
    """
    a = r.artifact or {}
    lines = [str(x) for x in a.get("summary") or []]
    if not lines:
        for k, v in a.items():
            if k in ("target", "files", "summary", "batch"):
                continue
            if isinstance(v, (str, int, float, bool)):
                lines.append(f"{k}: {v}")
            elif isinstance(v, Mapping) and v and all(isinstance(x, (str, int, float, bool)) for x in v.values()):
                lines.append(f"{k}: " + ", ".join(f"{kk} {vv}" for kk, vv in v.items()))
    batch = batch_line(a.get("batch"))
    if batch:
        lines.append(batch)
    estimate = bool((r.target.get("capabilities") or {}).get("estimate_only")) or any(
        "estimate" in x.lower() for x in lines
    )
    return lines, estimate


def batch_line(b: Any) -> str:
    """``--batch`` as the artifact took it: ``{"requested", "export", "padded"}`` in its metadata."""
    if not isinstance(b, Mapping) or "requested" not in b:
        return ""
    req, exp = b.get("requested"), b.get("export")
    if exp == "any":
        text = f"batch: --batch {req}; any batch runs (the batch dim stays symbolic)"
    elif b.get("padded") and exp != req:
        text = f"batch: --batch {req}, padded to {exp}"
    else:
        text = f"batch: --batch {req}, built for {exp}"
    return text + (f" ({b['note']})" if b.get("note") else "")


ESTIMATE_LABEL = "performance figures are estimates from an analytic model, not measurements"


# -------------------------------------------------------------- console
#: below this console width the pass table drops "max abs vs prev", merges node
#: count and delta, and abbreviates statuses, so pass names stay whole at 80 columns
NARROW_WIDTH = 110
#: below this width it also drops time and "max abs vs ref"
TINY_WIDTH = 72
_SHORT_STATUS = {"unchanged": "same", "rolled back": "ROLLBACK", "kept": "kept", "error": "error", "pass-error": "PASS ERR"}


def _pass_table(steps: list[dict[str, Any]], width: int) -> Any:
    """The pass table for a console ``width`` columns wide.

    1. ``width >= NARROW_WIDTH``: every column, boxed;
    2. narrower: no box edges, node count and delta in one column, short
       statuses, two-line metric headers, no "max abs vs prev";
    3. under ``TINY_WIDTH``: also no time and no "max abs vs ref".

    The pass name folds onto further lines, never truncated; a caption names
    the columns left out.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    narrow, tiny = width < NARROW_WIDTH, width < TINY_WIDTH
    longest = max(len(s["spec"]) for s in steps)
    t = Table(
        title="passes",
        box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD,
        pad_edge=not narrow,
        show_edge=not narrow,
    )
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("pass", overflow="fold", min_width=min(longest, 16 if narrow else 40))
    t.add_column("status", no_wrap=True)
    if not tiny:
        t.add_column("time", justify="right", no_wrap=True)
    metrics: list[tuple[str, str, str]] = [("cosine vs ref", "vs_reference", "cosine_min")]
    left_out = []
    if narrow:
        t.add_column("nodes (Δ)", justify="right", no_wrap=True)
        left_out.append("max abs vs previous pass")
        if tiny:
            left_out[:0] = ["time", "max abs vs reference"]
        else:
            metrics.append(("max abs vs ref", "vs_reference", "max_abs"))
        metrics = [(label.replace(" vs", "\nvs"), side, m) for label, side, m in metrics]
    else:
        t.add_column("nodes", justify="right", no_wrap=True)
        t.add_column("Δ", justify="right", no_wrap=True)
        metrics += [("max abs vs ref", "vs_reference", "max_abs"), ("max abs vs prev", "vs_previous", "max_abs")]
    for label, _, _ in metrics:
        t.add_column(label, justify="right", no_wrap=True)
    for s in steps:
        st = s["status"]
        st_style = {"rolled back": "red", "kept": "green", "error": "red", "pass-error": "bold red"}.get(st, "dim")
        d = s["nodes_after"] - s["nodes_before"]
        cells: list[Any] = [
            str(s["index"]),
            s["spec"],
            Text(_SHORT_STATUS.get(st, st) if narrow else st, style=st_style),
        ]
        if not tiny:
            cells.append(fmt_seconds(s["seconds"] + s["validate_seconds"]))
        cells += [f"{s['nodes_after']} ({d:+d})"] if narrow else [str(s["nodes_after"]), f"{d:+d}"]
        cells += [fmt_metric(s[side].get(m)) for _, side, m in metrics]
        t.add_row(*cells)
    if left_out:
        t.caption = f"narrow console: {', '.join(left_out)} left out (see report.md / report.html)"
    return t


def render_console(r: Report, console: Any, *, details: bool = True) -> None:
    """Draw the report: header, pass table, rollbacks and near misses, artifact summary, final accuracy (the
    final graph's, then the written artifact's when it was run).

    Readable at 80 columns (CI logs, pipes): pass names and header values fold
    onto further lines instead of being cut; under ``NARROW_WIDTH`` the table
    keeps its key columns (see ``NARROW_WIDTH``) and says what it left out.
    """
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("model", f"{r.model.get('source')} ({r.model.get('kind')})")
    head.add_row("target", str(r.target.get("spec")))
    head.add_row("pipeline", r.pipeline)
    if r.validation.get("enabled"):
        head.add_row("validation", f"{r.validation.get('inputs')} vs {r.validation.get('reference_runtime')}")
    head.add_row("nodes", f"{r.model.get('nodes')} → {r.result.get('nodes', '-')}")
    head.add_row("MACs", f"{fmt_count(r.model.get('macs'))} → {fmt_count(r.result.get('macs'))}")
    style = {"ok": "green", "tolerance-not-met": "red"}.get(r.status, "yellow")
    head.add_row("status", Text(r.status, style=style))
    console.print(head)

    if r.passes:
        console.print(_pass_table(r.steps(), console.width))
    if details:
        for i, p in enumerate(r.passes, 1):
            if p.pass_error:
                console.print(Text(f"{i}. PASS ERROR, rolled back: {p.pass_error}", style="bold red"))
            elif p.rolled_back:
                console.print(Text(f"{i}. {p.spec} rolled back: {p.rollback_reason}", style="red"))
                if p.localization is not None:
                    loc = p.localization
                    text = Text(
                        f"first diverging node: {loc.node} ({loc.op}) %{loc.value}: "
                        f"{loc.metric} = {fmt_metric(loc.error)}; {loc.detail}",
                        overflow="fold",
                    )
                    console.print(Padding(text, (0, 0, 0, 3)))
            for nm in p.near_misses:
                console.print(f"{i}. {p.spec} near miss: {nm}", markup=False, style="yellow")
    if r.artifact:
        lines, estimate = artifact_summary(r)
        console.print(Text(f"artifact ({r.artifact.get('target', r.target.get('name'))})", style="bold"))
        if estimate:
            console.print(Padding(Text(ESTIMATE_LABEL, style="yellow"), (0, 0, 0, 2)))
        for line in lines:
            console.print(Padding(Text(line, overflow="fold"), (0, 0, 0, 2)))
    if r.final is not None:
        line = ", ".join(f"{lab} {fmt_metric(r.final.vs_reference.get(m))}" for lab, m in METRIC_COLUMNS[:4])
        console.print(f"final vs reference: {line}", markup=False)
        for f in r.final.failures:
            console.print(Text(f"final tolerance not met: {f}", style="red"))
    if r.artifact_check is not None:
        a = r.artifact_check
        line = ", ".join(f"{lab} {fmt_metric(a.vs_reference.get(m))}" for lab, m in METRIC_COLUMNS[:4])
        console.print(f"written artifact vs reference: {line}", markup=False)
        for f in a.failures:
            console.print(Text(f"written artifact tolerance not met: {f}", style="red"))


# ----------------------------------------------------------------- diff
@dataclass
class DiffRow:
    """One aligned pair of passes (either side may be missing)."""

    a_index: int | None
    b_index: int | None
    spec: str
    a: PassRecord | None
    b: PassRecord | None

    @property
    def kind(self) -> str:
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        changes = []
        if pass_status(self.a) != pass_status(self.b):
            changes.append("status")
        if self.a.ops_after != self.b.ops_after:
            changes.append("ops")
        if self.a.spec != self.b.spec:
            changes.append("options")
        return ", ".join(changes) if changes else "same"


@dataclass
class ReportDiff:
    """Two reports compared: header fields that differ and passes aligned by spec."""

    a: Report
    b: Report
    header: list[tuple[str, str, str]]
    rows: list[DiffRow]

    @property
    def identical_passes(self) -> bool:
        return all(r.kind == "same" for r in self.rows)

    def render(self, console: Any) -> None:
        from rich.table import Table

        if self.header:
            h = Table(title="header differences")
            h.add_column("field")
            h.add_column("A")
            h.add_column("B")
            for k, x, y in self.header:
                h.add_row(k, x, y)
            console.print(h)
        t = Table(title="passes (A → B)")
        for col in ("A#", "B#", "pass", "status A → B", "nodes A → B", "time A → B", "cosine vs ref A → B", "change"):
            t.add_column(col)
        for row in self.rows:
            t.add_row(*self._cells(row))
        console.print(t)
        fa, fb = self.a.final, self.b.final
        if fa is not None or fb is not None:
            ca = fmt_metric(fa.vs_reference.get("cosine_min")) if fa else "-"
            cb = fmt_metric(fb.vs_reference.get("cosine_min")) if fb else "-"
            console.print(
                f"final worst cosine vs reference: A {ca}, B {cb}; status A {self.a.status}, B {self.b.status}"
            )

    @staticmethod
    def _cells(row: DiffRow) -> list[str]:
        a, b = row.a, row.b

        def pair(fa: Any, fb: Any) -> str:
            return f"{fa} → {fb}" if fa != fb else str(fa)

        return [
            "-" if row.a_index is None else str(row.a_index),
            "-" if row.b_index is None else str(row.b_index),
            row.spec,
            pair(pass_status(a) if a else "-", pass_status(b) if b else "-"),
            pair(sum(a.ops_after.values()) if a else "-", sum(b.ops_after.values()) if b else "-"),
            pair(fmt_seconds(a.seconds) if a else "-", fmt_seconds(b.seconds) if b else "-"),
            pair(
                fmt_metric(a.accuracy.vs_reference.get("cosine_min")) if a and a.accuracy else "-",
                fmt_metric(b.accuracy.vs_reference.get("cosine_min")) if b and b.accuracy else "-",
            ),
            row.kind,
        ]

    def to_markdown(self) -> str:
        lines = ["# accelopt report diff\n"]
        if self.header:
            lines.append("| field | A | B |\n|---|---|---|")
            lines.extend(f"| {k} | {_md_escape(x)} | {_md_escape(y)} |" for k, x, y in self.header)
            lines.append("")
        lines.append(
            "| A# | B# | pass | status | nodes | time | cosine vs ref | change |\n|---|---|---|---|---|---|---|---|"
        )
        for row in self.rows:
            lines.append("| " + " | ".join(_md_escape(c) for c in self._cells(row)) + " |")
        return "\n".join(lines) + "\n"


def diff_reports(a: Report, b: Report) -> ReportDiff:
    """Compare two reports: header fields (model, target, pipeline, status, versions) and passes aligned by spec."""
    header = []
    for label, fa, fb in (
        ("model", a.model.get("source"), b.model.get("source")),
        ("target", a.target.get("spec"), b.target.get("spec")),
        ("pipeline", a.pipeline, b.pipeline),
        ("status", a.status, b.status),
        ("nodes", a.result.get("nodes"), b.result.get("nodes")),
        ("machine", a.machine.get("cpu"), b.machine.get("cpu")),
    ):
        if fa != fb:
            header.append((label, str(fa), str(fb)))
    for package in sorted(set(a.versions) | set(b.versions)):
        if a.versions.get(package) != b.versions.get(package):
            header.append(
                (f"version {package}", str(a.versions.get(package, "-")), str(b.versions.get(package, "-")))
            )
    sa = [p.spec for p in a.passes]
    sb = [p.spec for p in b.passes]
    rows: list[DiffRow] = []
    sm = difflib.SequenceMatcher(a=[p.name for p in a.passes], b=[p.name for p in b.passes], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                pa, pb = a.passes[i1 + k], b.passes[j1 + k]
                spec = sa[i1 + k] if sa[i1 + k] == sb[j1 + k] else f"{sa[i1 + k]} / {sb[j1 + k]}"
                rows.append(DiffRow(i1 + k + 1, j1 + k + 1, spec, pa, pb))
            continue
        for k in range(i1, i2):
            rows.append(DiffRow(k + 1, None, sa[k], a.passes[k], None))
        for k in range(j1, j2):
            rows.append(DiffRow(None, k + 1, sb[k], None, b.passes[k]))
    return ReportDiff(a, b, header, rows)
