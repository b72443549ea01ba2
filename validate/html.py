"""The self-contained HTML report: summary first, a filterable table of differences,
per-experiment sections and inline SVG charts of differing metric histories.

No external scripts, styles or fonts: the file opens offline and can be attached to a ticket.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from html import escape
from pathlib import Path

from mlflow_sync.validate.reports import write_atomically
from mlflow_sync.validate.results import SUMMARY_COLUMNS, Report, Status

MAX_CHARTS = 12
MAX_TABLE_ROWS = 20000

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;margin:12px 0}
.ok{background:#e3f6e8;color:#135e2b} .bad{background:#fde8e8;color:#8a1c1c}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7} td.num{text-align:right} td.hot{color:#b00020;font-weight:600}
td.path{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.status{font-family:ui-monospace,monospace;font-weight:700;text-align:center}
.s-missing{color:#b00020} .s-extra{color:#9a6700} .s-differ{color:#8250df} .s-error{color:#cf222e} .s-matched{color:#1a7f37}
.filters{display:flex;gap:8px;align-items:center;margin:8px 0;flex-wrap:wrap}
.filters input{padding:4px 8px;min-width:320px}
details{margin:6px 0} summary{cursor:pointer;font-weight:600}
.chart{display:inline-block;margin:8px 16px 8px 0;border:1px solid #ddd;padding:6px}
.chart figcaption{font-size:12px;font-family:ui-monospace,monospace;max-width:560px;word-break:break-all}
.legend-source{color:#0969da} .legend-target{color:#d1242f}
"""

SCRIPT = """
(function(){
  var text=document.getElementById('filter-text'), status=document.getElementById('filter-status'),
      kind=document.getElementById('filter-kind'), rows=document.querySelectorAll('#differences tbody tr'),
      shown=document.getElementById('shown');
  function apply(){
    var t=text.value.toLowerCase(), s=status.value, k=kind.value, n=0;
    rows.forEach(function(r){
      var ok=(!t||r.textContent.toLowerCase().indexOf(t)>=0)&&(!s||r.dataset.status===s)&&(!k||r.dataset.kind===k);
      r.style.display=ok?'':'none'; if(ok)n++;
    });
    shown.textContent=n;
  }
  [text,status,kind].forEach(function(e){e.addEventListener('input',apply);});
  apply();
})();
"""


def _status_class(status: Status) -> str:
    return "s-" + SUMMARY_COLUMNS[status]


def _finite_points(points) -> list[tuple[float, float]]:
    return [(float(step), float(value)) for step, value in points
            if isinstance(value, (int, float)) and math.isfinite(value)]


def svg_chart(series: dict, width: int = 560, height: int = 240) -> str:
    """Source vs target history of one metric as an inline SVG line chart."""
    source, target = _finite_points(series["source"]), _finite_points(series["target"])
    everything = source + target
    if not everything:
        return "<p>No finite values to draw.</p>"
    left, right, top, bottom = 56, 12, 12, 28
    xs = [x for x, _ in everything]
    ys = [y for _, y in everything]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y):
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    def line(points, color, dash):
        coordinates = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in points[:400])
        return (f'<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" '
                f'points="{coordinates}"/>{dots}')

    skipped = len(series["source"]) + len(series["target"]) - len(everything)
    note = f'<text x="{left}" y="{height - 4}" font-size="10" fill="#555">{skipped} NaN/inf point(s) not drawn</text>' \
        if skipped else ""
    axes = (
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>'
        f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">{y0:.4g}</text>'
        f'<text x="{left}" y="{height - bottom + 14}" font-size="10">step {x0:g}</text>'
        f'<text x="{width - right}" y="{height - bottom + 14}" font-size="10" text-anchor="end">step {x1:g}</text>'
    )
    return (
        f'<svg class="metric-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(series["key"])}: source vs target">'
        f'{axes}{line(source, "#0969da", "0")}{line(target, "#d1242f", "6 4")}{note}</svg>'
    )


def render_html(report: Report) -> str:
    summary = report.summary()
    totals = report.totals()
    differences = report.differences()
    verdict = ("ok", "OK: the target matches the source") if report.ok else \
        ("bad", f"MISMATCH: {len(report.failing())} object(s) do not match")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>mlflow-sync validate: {escape(report.source)} → {escape(report.target)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>mlflow-sync validation report</h1>",
        f"<div class='meta'>source <b>{escape(report.source)}</b> → target <b>{escape(report.target)}</b> · "
        f"{escape(report.started)} · {report.seconds:.1f} s · checks: {escape(', '.join(report.options.get('checks', [])))}"
        f"{' · one-way' if report.one_way else ''}</div>",
        f"<div class='verdict {verdict[0]}' id='verdict'>{escape(verdict[1])}</div>",
        "<h2 id='summary'>Summary</h2>",
        _summary_table(summary, totals, report.one_way),
    ]
    parts.append(_differences_table(differences, summary))
    charts = [result for result in differences if result.series][:MAX_CHARTS]
    if charts:
        parts.append("<h2 id='charts'>Differing metric histories</h2><div>")
        for result in charts:
            parts.append(
                f"<figure class='chart'>{svg_chart(result.series)}<figcaption>{escape(result.path)}<br>"
                f"<span class='legend-source'>━ source</span> <span class='legend-target'>╍ target</span></figcaption>"
                "</figure>")
        parts.append("</div>")
    parts.append(_experiment_sections(report))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "".join(parts)


def _summary_table(summary, totals, one_way: bool) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in SUMMARY_COLUMNS.values())
    rows = []
    for kind, row in [*summary.items(), ("total", totals)]:
        cells = []
        for column in SUMMARY_COLUMNS.values():
            hot = row[column] and (column in ("missing", "differ", "error") or (column == "extra" and not one_way))
            cells.append(f"<td class='num{' hot' if hot else ''}'>{row[column]}</td>")
        label = f"<b>{escape(kind)}</b>" if kind == "total" else escape(kind)
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    return f"<table id='summary-table'><thead><tr><th>kind</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _result_row(result) -> str:
    values = ""
    if result.source is not None or result.target is not None:
        values = f"<br><small>source: {escape(_text(result.source))} · target: {escape(_text(result.target))}</small>"
    return (f"<tr data-status='{SUMMARY_COLUMNS[result.status]}' data-kind='{escape(result.kind)}'>"
            f"<td class='status {_status_class(result.status)}'>{escape(result.status.value)}</td>"
            f"<td>{escape(result.kind)}</td><td class='path'>{escape(result.path)}</td>"
            f"<td>{escape(result.detail)}{values}</td></tr>")


def _text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def _differences_table(differences, summary) -> str:
    status_options = "".join(f"<option value='{column}'>{escape(status.value)} {column}</option>"
                             for status, column in SUMMARY_COLUMNS.items() if status is not Status.SAME)
    kind_options = "".join(f"<option value='{escape(kind)}'>{escape(kind)}</option>" for kind in summary)
    rows = "".join(_result_row(result) for result in differences[:MAX_TABLE_ROWS])
    more = f"<p>Showing the first {MAX_TABLE_ROWS} of {len(differences)}; the JSON report has all.</p>" \
        if len(differences) > MAX_TABLE_ROWS else ""
    empty = "<p>No differences.</p>" if not differences else ""
    return (
        "<h2 id='differences-heading'>Differences</h2>"
        "<div class='filters'><input id='filter-text' type='search' placeholder='filter by path or detail'>"
        f"<select id='filter-status'><option value=''>any status</option>{status_options}</select>"
        f"<select id='filter-kind'><option value=''>any kind</option>{kind_options}</select>"
        "<span><span id='shown'>?</span> shown</span></div>"
        "<table id='differences'><thead><tr><th>st</th><th>kind</th><th>object</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}{empty}"
    )


def _experiment_sections(report: Report) -> str:
    by_experiment = defaultdict(list)
    for result in report.results:
        by_experiment[result.experiment or "(server-wide: registry, prompts)"].append(result)
    parts = ["<h2 id='experiments'>Per experiment</h2>"]
    for name in sorted(by_experiment):
        results = by_experiment[name]
        counts = defaultdict(int)
        for result in results:
            counts[SUMMARY_COLUMNS[result.status]] += 1
        line = ", ".join(f"{counts[column]} {column}" for column in SUMMARY_COLUMNS.values() if counts[column])
        differing = [result for result in results if result.status is not Status.SAME]
        rows = "".join(_result_row(result) for result in differing[:2000])
        body = (f"<table><thead><tr><th>st</th><th>kind</th><th>object</th><th>detail</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>") if differing else "<p>Everything matches.</p>"
        parts.append(f"<details class='experiment'{' open' if differing else ''}><summary>{escape(name)} — {line}"
                     f"</summary>{body}</details>")
    return "".join(parts)


def write_html(report: Report, path: str | Path) -> Path:
    return write_atomically(path, render_html(report))
