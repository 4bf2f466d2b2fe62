"""The report as one self-contained HTML file: inline CSS and SVG charts, no script, no network.

Charts (drawn here as SVG, no plotting library):

1. accuracy against the reference after every pass (log scale): max abs
   error and 1 - worst cosine; a rolled-back pass is drawn as a red cross at
   the value of the result it rejected, while the line follows the kept graph;
2. node count after every pass, stacked by op type (the eight most common
   types, the rest as "other"); a rolled-back pass shows the graph that was kept.

A target's ``describe()["details"]`` sections are drawn collapsed under the artifact summary.

Everything user-supplied is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from accelopt.records import PassRecord
from accelopt.report import (
    ESTIMATE_LABEL,
    METRIC_COLUMNS,
    Report,
    _accuracy_rows,
    _clean,
    artifact_summary,
    fmt_bytes,
    fmt_count,
    fmt_metric,
    fmt_seconds,
    op_delta,
    pass_status,
    rule_rows,
)

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac")
FLOOR = 1e-15  # log-scale floor: exact zeros (and float64 noise below it) are drawn here

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#1f2328;background:#fff;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1.2em 0 .4em}code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em;
background:#f6f8fa;padding:1px 4px;border-radius:4px}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.muted{color:#656d76}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;font-weight:600}
.b-kept{background:#dafbe1;color:#1a7f37}.b-rolled{background:#ffebe9;color:#cf222e}.b-unchanged{background:#eaeef2;color:#57606a}
.b-error{background:#ffebe9;color:#cf222e}
.charts{display:flex;flex-wrap:wrap;gap:24px}.chart{border:1px solid #d0d7de;border-radius:6px;padding:8px}
details{border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;margin:8px 0}summary{cursor:pointer;font-weight:600}
.rollback{background:#fff8f8;border-left:4px solid #cf222e;padding:6px 10px;margin:6px 0}
.estimate{background:#fff8c5;border-left:4px solid #bf8700;padding:6px 10px;margin:6px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _badge(status: str) -> str:
    cls = {
        "kept": "b-kept",
        "rolled back": "b-rolled",
        "unchanged": "b-unchanged",
        "error": "b-error",
        "pass-error": "b-error",
    }.get(status, "")
    return f'<span class="badge {cls}">{_e(status)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>", "".join(f"<th>{_e(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def artifact_details(details: Sequence[Mapping[str, Any]]) -> list[str]:
    """Collapsible sections: ``{"title", "columns", "rows"}`` a table, ``{"title", "text"}`` preformatted lines."""
    out = []
    for d in details:
        title = f"<summary>{_e(d.get('title', ''))}</summary>"
        if d.get("columns"):
            rows = d.get("rows") or []
            numeric = [i for i in range(len(d["columns"])) if rows and all(isinstance(r[i], (int, float)) for r in rows)]
            table = _table([str(c) for c in d["columns"]], [[_e(c) for c in r] for r in rows], numeric)
            out.append(f"<details>{title}{table}</details>")
        elif d.get("text") is not None:
            out.append(f"<details>{title}<pre>{_e(chr(10).join(str(x) for x in d['text']))}</pre></details>")
    return out


# ------------------------------------------------------------------- charts
def _short(label: str, limit: int = 16) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 4, 5, 8 x 10^k at or above ``x`` (axis maxima that split into 4 ticks)."""
    if x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 4, 5, 8, 10):
        if m * base >= x:
            return m * base
    return 10 * base  # pragma: no cover


def _log_y(v: float, lo: float, hi: float, top: float, height: float) -> float:
    v = min(max(v, lo), hi)
    return top + height * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))


def accuracy_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    rejected: Mapping[str, Sequence[float | None]],
    *,
    width: int = 560,
    height: int = 300,
    title: str = "error vs reference (log scale)",
) -> str:
    """A log-scale line chart; ``rejected`` values (rolled-back results) are drawn as red crosses."""
    left, right, top, bottom = 64, 24, 28, 92
    pw, ph = width - left - right, height - top - bottom
    vals = [v for s in list(series.values()) + list(rejected.values()) for v in s if v is not None and math.isfinite(v)]
    pos = [max(v, FLOOR) for v in vals]
    lo = 10 ** math.floor(math.log10(min(pos))) if pos else 1e-8
    hi = 10 ** math.ceil(math.log10(max(pos))) if pos else 1.0
    if hi <= lo:
        hi = lo * 10
    n = max(len(labels), 1)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="18" font-size="13" font-weight="600" fill="#1f2328">{_e(title)}</text>',
    ]
    e = int(math.log10(lo))
    while 10**e <= hi * 1.0001:
        y = _log_y(10**e, lo, hi, top, ph)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#656d76">1e{e}</text>'
        )
        e += 1
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#8c959f"/>')
    for i, lab in enumerate(labels):
        short = _short(lab)
        parts.append(
            f'<text x="{x(i):.1f}" y="{top + ph + 12}" font-size="10" fill="#1f2328" text-anchor="end" '
            f'transform="rotate(-35 {x(i):.1f} {top + ph + 12})">{_e(short)}</text>'
        )
    for k, (name, vals_) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [
            (x(i), _log_y(max(v, FLOOR), lo, hi, top, ph))
            for i, v in enumerate(vals_)
            if v is not None and math.isfinite(v)
        ]
        if len(pts) > 1:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py in pts:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"/>')
        parts.append(f'<rect x="{left + 8 + k * 150}" y="{top + 4}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + 22 + k * 150}" y="{top + 13}" font-size="11" fill="#1f2328">{_e(name)}</text>')
    for vals_ in rejected.values():
        for i, v in enumerate(vals_):
            if v is None:
                continue
            vv = v if math.isfinite(v) else hi
            px, py = x(i), _log_y(max(vv, FLOOR), lo, hi, top, ph)
            parts.append(
                f'<path d="M{px - 5:.1f},{py - 5:.1f} L{px + 5:.1f},{py + 5:.1f} M{px - 5:.1f},{py + 5:.1f} '
                f'L{px + 5:.1f},{py - 5:.1f}" stroke="#cf222e" stroke-width="2.5"/>'
            )
    if any(v is not None for s in rejected.values() for v in s):
        parts.append(
            f'<text x="{width - right}" y="18" font-size="11" fill="#cf222e" text-anchor="end">× rejected (rolled back)</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar_chart(
    labels: Sequence[str],
    stacks: Sequence[Mapping[str, int]],
    *,
    width: int = 560,
    height: int = 300,
    title: str = "nodes by op type",
    flagged: Sequence[bool] = (),
    top_k: int = 8,
) -> str:
    """Bars of node counts per step stacked by op type (``top_k`` types, the rest as "other")."""
    left, right, top, bottom = 48, 130, 28, 92
    pw, ph = width - left - right, height - top - bottom
    totals: dict[str, int] = {}
    for s in stacks:
        for op, c in s.items():
            totals[op] = totals.get(op, 0) + c
    keep = [op for op, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    cats = keep + (["other"] if len(totals) > len(keep) else [])
    hi = _nice_ceiling(max([sum(s.values()) for s in stacks] + [1]) * 1.08)
    n = max(len(labels), 1)
    bw = pw / n * 0.7
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="18" font-size="13" font-weight="600" fill="#1f2328">{_e(title)}</text>',
    ]
    for t in range(5):
        val = hi * t / 4
        y = top + ph * (1 - t / 4)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#656d76">{val:g}</text>'
        )
    for i, (lab, s) in enumerate(zip(labels, stacks)):
        cx = left + pw * (i + 0.5) / n
        y = top + ph
        for k, cat in enumerate(cats):
            c = sum(v for op, v in s.items() if op not in keep) if cat == "other" else s.get(cat, 0)
            if not c:
                continue
            h = ph * c / hi
            y -= h
            parts.append(
                f'<rect x="{cx - bw / 2:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}">'
                f"<title>{_e(lab)}: {_e(cat)} {c}</title></rect>"
            )
        total = sum(s.values())
        flag = i < len(flagged) and flagged[i]
        parts.append(
            f'<text x="{cx:.1f}" y="{y - 4:.1f}" font-size="10" text-anchor="middle" fill="{"#cf222e" if flag else "#1f2328"}">'
            f"{total}{' ×' if flag else ''}</text>"
        )
        short = _short(lab)
        parts.append(
            f'<text x="{cx:.1f}" y="{top + ph + 12}" font-size="10" fill="#1f2328" text-anchor="end" '
            f'transform="rotate(-35 {cx:.1f} {top + ph + 12})">{_e(short)}</text>'
        )
    for k, cat in enumerate(cats):
        ly = top + 4 + k * 16
        parts.append(f'<rect x="{left + pw + 12}" y="{ly}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>')
        parts.append(f'<text x="{left + pw + 26}" y="{ly + 9}" font-size="11" fill="#1f2328">{_e(cat)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _charts(r: Report) -> str:
    labels = ["input"] + [f"{i}. {p.spec}" for i, p in enumerate(r.passes, 1)]
    base = r.baseline.vs_reference if r.baseline is not None else {}
    max_abs: list[float | None] = [base.get("max_abs")]
    one_minus: list[float | None] = [None if "cosine_min" not in base else 1 - base["cosine_min"]]
    rej_abs: list[float | None] = [None]
    cur_abs, cur_cos = max_abs[0], one_minus[0]
    stacks = [dict(r.passes[0].ops_before) if r.passes else dict(r.model.get("ops", {}))]
    flagged = [False]
    for p in r.passes:
        acc = p.accuracy
        if p.rolled_back:
            rej_abs.append(acc.vs_reference.get("max_abs") if acc else None)
        else:
            rej_abs.append(None)
            if acc is not None and acc.vs_reference:
                cur_abs = acc.vs_reference.get("max_abs", cur_abs)
                c = acc.vs_reference.get("cosine_min")
                cur_cos = None if c is None else 1 - c
        max_abs.append(cur_abs)
        one_minus.append(cur_cos)
        stacks.append(dict(p.ops_after))
        flagged.append(p.rolled_back)
    out = ['<div class="charts">']
    if r.validation.get("enabled") and any(v is not None for v in max_abs + one_minus):
        out.append(
            '<div class="chart">'
            + accuracy_chart(
                labels, {"max abs error": max_abs, "1 − worst cosine": one_minus}, {"max abs (rejected)": rej_abs}
            )
            + "</div>"
        )
    out.append('<div class="chart">' + stacked_bar_chart(labels, stacks, flagged=flagged) + "</div>")
    out.append("</div>")
    return "".join(out)


# --------------------------------------------------------------------- page
def _pass_section(i: int, p: PassRecord) -> str:
    status = pass_status(p)
    out = [
        f"<details{' open' if p.rolled_back else ''}><summary>{i}. <code>{_e(p.spec)}</code> ({_e(p.family)}) {_badge(status)}</summary>"
    ]
    if p.pass_error:
        nodes = f"<br><b>Broken nodes:</b> {_e(', '.join(p.broken_nodes))}" if p.broken_nodes else ""
        out.append(f'<div class="rollback"><b>Pass error, rolled back:</b> {_e(p.pass_error)}{nodes}</div>')
    elif p.rolled_back:
        out.append(f'<div class="rollback"><b>Rolled back:</b> {_e(p.rollback_reason)}')
        if p.localization is not None:
            loc = p.localization
            out.append(
                f"<br><b>First diverging node:</b> <code>{_e(loc.node)}</code> ({_e(loc.op)}), value "
                f"<code>%{_e(loc.value)}</code>: {_e(loc.metric)} = {_e(fmt_metric(loc.error))}<br>"
                f'<span class="muted">{_e(loc.detail)}</span>'
            )
        out.append("</div>")
    if p.error:
        out.append(f'<p class="bad">error: {_e(p.error)}</p>')
    opts = ", ".join(f"{k}={v}" for k, v in p.options.items()) or "none"
    nb, na = sum(p.ops_before.values()), sum(p.ops_after.values())
    dtypes = sorted(set(p.param_bytes_before) | set(p.param_bytes_after))
    pb = ", ".join(
        f"{dt} {fmt_bytes(p.param_bytes_before.get(dt, 0))} → {fmt_bytes(p.param_bytes_after.get(dt, 0))}"
        for dt in dtypes
    )
    out.append(
        "<ul>"
        f"<li>options: {_e(opts)}</li>"
        f"<li>time: {_e(fmt_seconds(p.seconds))} (validation {_e(fmt_seconds(p.validate_seconds))})</li>"
        f"<li>nodes: {nb} → {na} ({na - nb:+d}); added {len(p.nodes_added)}, removed {len(p.nodes_removed)}</li>"
        f"<li>MACs: {_e(fmt_count(p.macs_before))} → {_e(fmt_count(p.macs_after))}</li>"
        f"<li>parameters: {_e(pb or 'none')}</li>"
        "</ul>"
    )
    delta = op_delta(p.ops_before, p.ops_after)
    if delta:
        out.append(
            _table(["op", "before", "after", "Δ"], [(_e(o), b, a, f"{d:+d}") for o, b, a, d in delta], (1, 2, 3))
        )
    if p.accuracy is not None and (p.modified or p.rolled_back):
        rows = _accuracy_rows(p.accuracy)
        if rows:
            out.append(
                _table(
                    ["metric", "vs reference", "vs previous", "tolerance"],
                    [(_e(lab), _e(fmt_metric(a)), _e(fmt_metric(b)), _e(bound)) for lab, a, b, bound in rows],
                    (1, 2),
                )
            )
    rules, other, idle = rule_rows(p.stats)
    if rules:
        out.append(
            _table(
                ["rule", "matched", "candidates", "near misses"],
                [(_e(n), m, c, nm) for n, m, c, nm in rules],
                (1, 2, 3),
            )
        )
    items = [f"<li>{_e(k)}: <code>{_e(json.dumps(_clean(v)))}</code></li>" for k, v in other.items()]
    if idle:
        items.append(f"<li>{idle} other rule(s) found no candidate</li>")
    items += [f"<li>near miss: {_e(nm)}</li>" for nm in p.near_misses]
    items += [f"<li>note: {_e(n)}</li>" for n in p.notes]
    if p.nodes_added:
        items.append(f"<li>added: {_e(', '.join(p.nodes_added[:40]))}{' …' if len(p.nodes_added) > 40 else ''}</li>")
    if p.nodes_removed:
        items.append(
            f"<li>removed: {_e(', '.join(p.nodes_removed[:40]))}{' …' if len(p.nodes_removed) > 40 else ''}</li>"
        )
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    out.append("</details>")
    return "".join(out)


def render_html(r: Report) -> str:
    """The whole report as one HTML page."""
    status_cls = {"ok": "ok", "tolerance-not-met": "bad"}.get(r.status, "muted")
    head_rows = [
        (
            "model",
            f"<code>{_e(r.model.get('source'))}</code> ({_e(r.model.get('kind'))}, graph <code>{_e(r.model.get('graph'))}</code>)",
        ),
        ("target", f"<code>{_e(r.target.get('spec'))}</code>"),
        ("pipeline", f"<code>{_e(r.pipeline)}</code>"),
        ("status", f'<span class="{status_cls}">{_e(r.status)}</span>'),
        ("command", f"<code>{_e(r.command)}</code>"),
        ("created", f"{_e(r.created)} ({_e(fmt_seconds(r.seconds))})"),
        ("inputs", ", ".join(f"<code>{_e(k)}: {_e(v)}</code>" for k, v in r.model.get("inputs", {}).items())),
        ("outputs", ", ".join(f"<code>{_e(k)}: {_e(v)}</code>" for k, v in r.model.get("outputs", {}).items())),
        ("nodes", f"{_e(r.model.get('nodes'))} → {_e(r.result.get('nodes', '-'))}"),
        ("MACs", f"{_e(fmt_count(r.model.get('macs')))} → {_e(fmt_count(r.result.get('macs')))}"),
        (
            "parameters",
            f"{_e(fmt_bytes(sum((r.model.get('parameter_bytes') or {}).values())))} → "
            f"{_e(fmt_bytes(sum((r.result.get('parameter_bytes') or {}).values())))}",
        ),
    ]
    if r.requested_pipeline and r.requested_pipeline != r.pipeline:
        head_rows.insert(3, ("requested", f"<code>{_e(r.requested_pipeline)}</code>"))
    if r.artifact:
        head_rows.append(("artifact", ", ".join(f"<code>{_e(f)}</code>" for f in r.artifact.get("files", []))))
    body = [f'<h1>accelopt report</h1><p class="muted">{_e(r.model.get("source"))} → {_e(r.target.get("spec"))}</p>']
    body.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in head_rows) + "</table>")

    body.append("<h2>Charts</h2>" + _charts(r))

    body.append("<h2>Validation</h2>")
    v = r.validation
    if not v.get("enabled"):
        body.append("<p>Validation was off.</p>")
    else:
        tol = ", ".join(f"{k}={x:g}" for k, x in (v.get("tolerance") or {}).items()) or "none (family defaults)"
        ft = ", ".join(f"{k}={x:g}" for k, x in (v.get("final_tolerance") or {}).items()) or "none"
        notes = "".join(f"<li>{_e(n)}</li>" for n in v.get("notes", []))
        body.append(
            f"<ul><li>reference: {_e(v.get('reference_runtime'))}</li><li>inputs: {_e(v.get('inputs'))}, "
            f"sequence length {_e(v.get('seq_len'))}</li><li>tolerance overrides: {_e(tol)}</li>"
            f"<li>final tolerance: {_e(ft)}</li>{notes}</ul>"
        )
        accs = r.accuracy_checks
        if accs:
            cols = [(lab, m) for lab, m in METRIC_COLUMNS if any(m in a.vs_reference for _, a in accs)]
            rows = []
            for name, a in accs:
                ok = (
                    '<span class="ok">yes</span>'
                    if a.ok
                    else f'<span class="bad">no: {_e("; ".join(a.failures))}</span>'
                )
                rows.append([_e(name)] + [_e(fmt_metric(a.vs_reference.get(m))) for _, m in cols] + [ok])
            body.append(
                _table(["vs reference"] + [lab for lab, _ in cols] + ["ok"], rows, tuple(range(1, len(cols) + 1)))
            )

    if r.artifact:
        lines, estimate = artifact_summary(r)
        body.append(f"<h2>Artifact ({_e(r.artifact.get('target', r.target.get('name')))})</h2>")
        if estimate:
            body.append(f'<p class="estimate"><strong>Estimate:</strong> {_e(ESTIMATE_LABEL)}.</p>')
        if lines:
            body.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>")
        body.extend(artifact_details(r.artifact.get("details") or []))

    body.append("<h2>Passes</h2>")
    if r.passes:
        rows = []
        for s in r.steps():
            d = s["nodes_after"] - s["nodes_before"]
            rows.append(
                [
                    s["index"],
                    f"<code>{_e(s['spec'])}</code>",
                    _e(s["family"]),
                    _badge(s["status"]),
                    _e(fmt_seconds(s["seconds"])),
                    _e(fmt_seconds(s["validate_seconds"])),
                    f"{s['nodes_before']} → {s['nodes_after']} ({d:+d})",
                    _e(fmt_metric(s["vs_reference"].get("cosine_min"))),
                    _e(fmt_metric(s["vs_reference"].get("max_abs"))),
                    _e(fmt_metric(s["vs_previous"].get("max_abs"))),
                ]
            )
        body.append(
            _table(
                [
                    "#",
                    "pass",
                    "family",
                    "status",
                    "time",
                    "validation",
                    "nodes",
                    "worst cosine vs ref",
                    "max abs vs ref",
                    "max abs vs prev",
                ],
                rows,
                (0, 4, 5, 7, 8, 9),
            )
        )
        body.extend(_pass_section(i, p) for i, p in enumerate(r.passes, 1))
    else:
        body.append("<p>No pass ran.</p>")

    body.append("<h2>Environment</h2>")
    body.append(_table(["package", "version"], [(_e(k), _e(x)) for k, x in r.versions.items()]))
    m = r.machine
    body.append(
        f"<p>Machine: {_e(m.get('cpu'))}, {_e(m.get('usable_cores', m.get('cores')))} usable of {_e(m.get('cores'))} cores, "
        f"{_e(m.get('memory_gb'))} GB, {_e(m.get('platform'))}</p>"
    )
    if r.notes:
        body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in r.notes) + "</ul>")
    title = f"accelopt report: {r.model.get('source')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
