"""report.html: the report as one self-contained page a person opens in a browser.

Inline CSS and inline SVG only: no script, no font, no image or style sheet from anywhere (a Content-Security-Policy
meta tag forbids every load), so the page opens the same offline, attached to a CI run or mailed. Every string
from the report is escaped. Stdlib only; rendered from the `Report` record alone, so `edgepack check` can write it
again from a saved report.json.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional, Sequence

from edgepack.fileio import atomic_write_text
from edgepack.gates import REGRESSION_SUFFIX, format_interval, format_value, mark
from edgepack.records import TOO_CLOSE, Artifact, Budget, Measurement, Report, Verdict
from edgepack.report.render import accuracy_figure, parity_figure

# the page may load nothing: styles are inline, images are inline SVG
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --pass: #1a7f37; --fail: #c62828; --close: #b26a00; --ink: #1f2328; --muted: #59636e; --rule: #d1d9e0;
        --ship: #2f6fb3; --ref: #9aa7b4; --bg-pass: #e6f4ea; --bg-fail: #fdecea; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1400px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
.sub { color: var(--muted); margin: 0 0 16px; }
.verdict { font-size: 20px; font-weight: 700; padding: 14px 18px; border-radius: 8px; margin: 0 0 8px;
           border-left: 8px solid; }
.verdict.pass { background: var(--bg-pass); border-color: var(--pass); color: var(--pass); }
.verdict.fail { background: var(--bg-fail); border-color: var(--fail); color: var(--fail); }
.verdict .detail { display: block; font-size: 14px; font-weight: 400; color: var(--ink); margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 4px 0 8px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
         white-space: nowrap; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.close { background: var(--close); } .badge.ref { background: var(--ref); }
tr.failed td { background: var(--bg-fail); }
.muted { color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
.chart { border: 1px solid var(--rule); border-radius: 6px; padding: 8px 12px; }
.chart h3 { font-size: 14px; margin: 0 0 4px; }
pre { background: #f6f8fa; padding: 8px 10px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; }
ul { margin: 4px 0 8px; padding-left: 22px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 4px 0; }
dt { color: var(--muted); } dd { margin: 0; }
"""


def write_html(report: Report, path: Path) -> None:
    atomic_write_text(path, html_page(report))


def e(value: object) -> str:
    """Any value as escaped HTML text (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(value), quote=True)


def html_page(report: Report) -> str:
    m = report.model
    title = f"edgepack report: {m.model_name} → {report.target}"
    body = [f"<h1>{e(title)}</h1>",
            f'<p class="sub">created {e(report.created)} · edgepack {e(report.edgepack_version)} · '
            f"model <code>{e(m.source)}</code></p>",
            _verdict_banner(report)]
    body += _budgets(report)
    body += _artifacts(report)
    body += _charts(report)
    body += _failures(report)
    body += _warnings(report)
    body += _selection(report)
    body += _timings(report)
    body += _provenance(report)
    body += _environment(report)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


# ---- the verdict -----------------------------------------------------------------------------------------------------
def verdict_text(report: Report) -> str:
    """PASS or FAIL and how many budget verdicts, the line the page opens with."""
    failed = sum(1 for v in report.verdicts if not v.passed)
    if not report.verdicts:
        return "PASS: no budgets set"
    if failed:
        return f"FAIL: {failed} of {len(report.verdicts)} budget verdicts failed"
    return f"PASS: all {len(report.verdicts)} budget verdicts met"


def _verdict_banner(report: Report) -> str:
    text = verdict_text(report)
    cls = "fail" if text.startswith("FAIL") else "pass"
    details = []
    shipped = [a for a in report.artifacts if a.name in report.shipping]
    if shipped:
        details.append("ships " + ", ".join(f"{a.name} ({Path(a.path).name}, {format_value(a.size_bytes, 'bytes')})"
                                            for a in shipped))
    if report.failures:
        details.append(f"{len(report.failures)} runtime failure(s): "
                       + ", ".join(sorted({f.runtime for f in report.failures})))
    failed = [v for v in report.verdicts if not v.passed]
    if failed:
        details.append("failed: " + "; ".join(f"{v.budget} [{v.artifact}]" for v in failed))
    detail = "".join(f'<span class="detail">{e(d)}</span>' for d in details)
    return f'<div class="verdict {cls}" id="verdict">{e(text)}{detail}</div>'


def _badge(v: Verdict) -> str:
    cls = "close" if v.status == TOO_CLOSE and v.passed else ("pass" if v.passed else "fail")
    return f'<span class="badge {cls}">{e(mark(v))}</span>'


def _budgets(report: Report) -> list[str]:
    if not report.verdicts:
        return ["<h2>Budgets</h2>", '<p class="muted">No budgets were set: pass --budget, --max-latency, '
                                    "--max-memory or --max-accuracy-drop to gate the build.</p>"]
    rows = []
    for v in report.verdicts:
        interval = ""
        if v.interval and v.confidence:
            interval = f"{v.confidence:.0%} {format_interval(*v.interval, v.unit, v.limit)}"
            if v.method:
                interval += f" ({v.method})"
        baseline = "" if v.baseline is None else format_value(v.baseline, v.unit)
        if v.ratio is not None:
            baseline += f" (×{v.ratio:.3f})"
        if v.p_value is not None:
            baseline += f", p={v.p_value:.2g}"
        limit = format_value(v.limit, v.unit)
        if v.metric.endswith(REGRESSION_SUFFIX) and v.unit != "pp":
            limit += " (baseline + threshold)"
        rows.append(f'<tr class="{"" if v.passed else "failed"}"><td>{_badge(v)}</td><td>{e(v.budget)}</td>'
                    f"<td>{e(v.artifact)}</td><td class=num>{e(format_value(v.observed, v.unit))}</td>"
                    f"<td class=num>{e(limit)}</td><td class=num>{e(format_value(v.margin, v.unit))}</td>"
                    f"<td>{e(interval)}</td><td>{e(baseline)}</td><td>{e(_reason(v))}</td></tr>")
    return ["<h2>Budgets</h2>",
            '<div class="scroll"><table id="budgets"><tr><th>result</th><th>budget</th><th>artifact</th>'
            "<th>observed</th><th>limit</th><th>margin</th><th>interval</th><th>baseline</th><th>why</th></tr>",
            *rows, "</table></div>"]


def _reason(v: Verdict) -> str:
    if v.reason or v.passed or v.margin is None:
        return v.reason
    return f"over the limit by {format_value(-v.margin, v.unit)}"


# ---- artifacts ------------------------------------------------------------------------------------------------------
def _measurement(report: Report, name: str) -> Optional[Measurement]:
    return next((m for m in report.measurements if m.artifact == name), None)


def _artifacts(report: Report) -> list[str]:
    if not report.artifacts:
        return ["<h2>Artifacts</h2>", '<p class="muted">No artifact was produced.</p>']
    wheres = sorted({f"{m.where}, {m.threads} thread(s)" for m in report.measurements})
    per_row = len(wheres) > 1  # one place for all: said once under the table, keeping the table narrow
    headers = ("artifact", "file", "size", "precision", "runtime", "max abs diff", "parity", "accuracy", "p50", "p90",
               "peak memory", *(("measured on",) if per_row else ()), "budgets")
    rows = []
    for a in report.artifacts:
        m = _measurement(report, a.name)
        p = next((p for p in report.parity if p.artifact == a.name), None)
        acc = next((x for x in report.accuracy if x.artifact == a.name), None)
        verdicts = [v for v in report.verdicts if v.artifact == a.name]
        failed = [v for v in verdicts if not v.passed]
        budgets = ('<span class="muted">—</span>' if not verdicts else
                   '<span class="badge pass">pass</span>' if not failed else
                   '<span class="badge fail">FAIL</span> ' + e(", ".join(v.metric for v in failed)))
        role = "" if a.name in report.shipping else ' <span class="badge ref">reference</span>'
        cells = [
            f"{e(a.name)}{role}", f"<code>{e(Path(a.path).name)}</code>",
            _num(format_value(a.size_bytes, "bytes")), e(a.precision), e(a.runtime),
            _num("n/a" if p is None else f"{p.max_abs_diff:.2e}"), e("n/a" if p is None else parity_figure(p)),
            e("n/a" if acc is None else accuracy_figure(acc)),
            _num("n/a" if m is None else format_value(m.p50_ms, "ms")),
            _num("n/a" if m is None else format_value(m.p90_ms, "ms")),
            _num("n/a" if m is None else format_value(m.peak_over_baseline_bytes, "bytes")),
            *((e("not measured" if m is None else f"{m.where}, {m.threads} thread(s)"),) if per_row else ()), budgets,
        ]
        rows.append(f'<tr class="{"failed" if failed else ""}">' + "".join(f"<td>{c}</td>" if not c.startswith("<td")
                                                                       else c for c in cells) + "</tr>")
    lines = ["<h2>Artifacts</h2>", '<div class="scroll"><table id="artifacts"><tr>'
             + "".join(f"<th>{h}</th>" for h in headers) + "</tr>", *rows, "</table></div>"]
    if wheres and not per_row:
        lines.append(f'<p class="muted">Latency and memory measured on {e(wheres[0])}.</p>')
    if report.parity:
        lines.append(f'<p class="muted">Parity against eager PyTorch on {e(report.parity[0].inputs_from)}; floor: '
                     f"{e(report.parity_floor or 'not recorded')}.</p>")
    lines += _artifact_notes(report.artifacts)
    return lines


def _num(text: str) -> str:
    return f"<td class=num>{e(text)}</td>"


def _artifact_notes(artifacts: Sequence[Artifact]) -> list[str]:
    items = []
    for a in artifacts:
        facts = [f"{a.runtime} {a.precision}"]
        if a.scheme:
            facts.append(a.scheme)
        if a.parent:
            facts.append(f"parent {a.parent}")
        if a.int8_weight_share is not None:
            facts.append(f"{a.int8_weight_share:.0%} of weights in 8 bits")
        facts.append(f"sha256 {a.sha256[:16]}…")
        sub = [e(n) for n in a.notes]
        if a.session_options:
            sub.append("session settings it must run with: "
                       + e(", ".join(f"{k}={v}" for k, v in a.session_options.items())))
        d = a.delegation
        if d is not None:
            delegated = f"{d.delegated_nodes}/{d.total_nodes} nodes in {d.backend} ({d.subgraphs} subgraph(s))"
            sub.append("delegation: " + e(delegated))
            if d.fallback_ops:
                sub.append("<table><tr><th>outside the delegate</th><th>count</th><th>why</th></tr>"
                           + "".join(f"<tr><td><code>{e(f.op)}</code></td><td class=num>{f.count}</td>"
                                     f"<td>{e(f.reason)}</td></tr>" for f in d.fallback_ops) + "</table>")
        inner = "<ul>" + "".join(f"<li>{s}</li>" for s in sub) + "</ul>" if sub else ""
        items.append(f"<li><code>{e(Path(a.path).name)}</code>: {e('; '.join(facts))}{inner}</li>")
    return ["<details open><summary>Artifact details</summary><ul>", *items, "</ul></details>"]


# ---- charts ---------------------------------------------------------------------------------------------------------
CHART_WIDTH = 560
LABEL_WIDTH = 190
VALUE_WIDTH = 90  # the least room right of the bars for the value's text; more when a text is longer
BAR_HEIGHT = 20
BAR_GAP = 8
OFF_SCALE = 3.0


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, float, str, bool]],
              limits: Sequence[tuple[float, str]] = ()) -> str:
    """A horizontal bar chart as inline SVG: one bar per (label, value, value text, shipped) and a dashed line per
    (limit, label). Shipped artifacts are drawn in colour, reference ones in grey. A limit far above every bar (more
    than OFF_SCALE times the largest) is named under the chart instead of squeezing the bars into a corner."""
    value_width = max([VALUE_WIDTH] + [7 * len(text) + 12 for _, _, text, _ in bars])
    plot = CHART_WIDTH - LABEL_WIDTH - value_width
    largest = max([v for _, v, _, _ in bars] + [0.0])
    drawn = [(v, label) for v, label in limits if largest <= 0 or v <= OFF_SCALE * largest]
    off_scale = [label for v, label in limits if (v, label) not in drawn]
    top = max([largest] + [v for v, _ in drawn])
    scale = plot / top if top > 0 else 0.0
    bottom = len(bars) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    height = bottom + 16 * (bool(drawn) + len(off_scale))
    parts = [f'<svg id="{e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
             f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{e(title)}">',
             f"<title>{e(title)}</title>"]
    for i, (label, value, text, shipped) in enumerate(bars):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        width = max(1.0, value * scale) if value > 0 else 0.0
        colour = "#2f6fb3" if shipped else "#9aa7b4"
        parts += [f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT * 0.7:.1f}" text-anchor="end" font-size="12" '
                  f'fill="#1f2328">{e(label)}</text>',
                  f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" rx="3" fill="{colour}">'
                  f"<title>{e(label)}: {e(text)}</title></rect>",
                  f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + BAR_HEIGHT * 0.7:.1f}" font-size="12" '
                  f'fill="#1f2328">{e(text)}</text>']
    for value, label in drawn:
        x = LABEL_WIDTH + value * scale
        parts += [f'<line x1="{x:.1f}" y1="2" x2="{x:.1f}" y2="{bottom}" stroke="#c62828" stroke-width="2" '
                  f'stroke-dasharray="5,3"/>',
                  f'<text x="{min(x, CHART_WIDTH - 4):.1f}" y="{bottom + 12}" text-anchor="end" font-size="11" '
                  f'fill="#c62828">{e(label)}</text>']
    for i, label in enumerate(off_scale):
        y = bottom + 16 * (bool(drawn) + i) + 12
        parts.append(f'<text x="{CHART_WIDTH - 4}" y="{y}" text-anchor="end" font-size="11" fill="#c62828">'
                     f"{e(label)} (off the scale, to the right)</text>")
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(chart_id: str, title: str, points: Sequence[tuple[str, float, float, bool]], x_unit: str,
                  y_unit: str, x_limits: Sequence[tuple[float, str]] = (),
                  y_limits: Sequence[tuple[float, str]] = ()) -> str:
    """Artifacts as points (label, x, y, shipped) on two linear axes from zero, budgets as dashed lines (a limit more
    than OFF_SCALE times the largest value is named in a corner instead)."""
    width, height, left, right, top, bottom = 560, 330, 78, 36, 16, 52
    plot_w, plot_h = width - left - right, height - top - bottom

    def axis(values: Sequence[float], limits: Sequence[tuple[float, str]]) -> tuple[float, list, list]:
        largest = max(list(values) + [0.0])
        drawn = [(v, t) for v, t in limits if largest <= 0 or v <= OFF_SCALE * largest]
        off = [t for v, t in limits if (v, t) not in drawn]
        return max([largest] + [v for v, _ in drawn]) * 1.15 or 1.0, drawn, off

    x_top, x_drawn, x_off = axis([p[1] for p in points], x_limits)
    y_top, y_drawn, y_off = axis([p[2] for p in points], y_limits)

    def sx(v: float) -> float:
        return left + v / x_top * plot_w

    def sy(v: float) -> float:
        return top + plot_h - v / y_top * plot_h

    parts = [f'<svg id="{e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">', f"<title>{e(title)}</title>",
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#d1d9e0"/>']
    for i in range(5):
        xv, yv = x_top * i / 4, y_top * i / 4
        parts += [f'<text x="{sx(xv):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11" '
                  f'fill="#59636e">{e(format_value(xv, x_unit))}</text>',
                  f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11" fill="#59636e">'
                  f"{e(format_value(yv, y_unit))}</text>"]
    parts += [f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="12" '
              f'fill="#1f2328">size</text>',
              f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" font-size="12" fill="#1f2328" '
              f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{e(title.split(" vs ")[0])}</text>']
    for v, label in x_drawn:
        parts += [f'<line x1="{sx(v):.1f}" y1="{top}" x2="{sx(v):.1f}" y2="{top + plot_h}" stroke="#c62828" '
                  f'stroke-width="2" stroke-dasharray="5,3"/>',
                  f'<text x="{sx(v) - 4:.1f}" y="{top + 12}" text-anchor="end" font-size="11" fill="#c62828">'
                  f"{e(label)}</text>"]
    for v, label in y_drawn:
        parts += [f'<line x1="{left}" y1="{sy(v):.1f}" x2="{left + plot_w}" y2="{sy(v):.1f}" stroke="#c62828" '
                  f'stroke-width="2" stroke-dasharray="5,3"/>',
                  f'<text x="{left + plot_w - 4}" y="{sy(v) - 4:.1f}" text-anchor="end" font-size="11" '
                  f'fill="#c62828">{e(label)}</text>']
    for i, label in enumerate([*x_off, *y_off]):
        parts.append(f'<text x="{left + plot_w - 4}" y="{top + 14 + 14 * i}" text-anchor="end" font-size="11" '
                     f'fill="#c62828">{e(label)} (off the scale)</text>')
    for label, x, y, shipped in points:
        colour = "#2f6fb3" if shipped else "#9aa7b4"
        anchor = "end" if sx(x) > left + plot_w * 0.7 else "start"
        dx = -9 if anchor == "end" else 9
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{colour}" stroke="#fff" stroke-width="1.5">'
                  f"<title>{e(label)}</title></circle>",
                  f'<text x="{sx(x) + dx:.1f}" y="{sy(y) + 4:.1f}" text-anchor="{anchor}" font-size="11" '
                  f'fill="#1f2328">{e(label)}</text>']
    parts.append("</svg>")
    return "".join(parts)


def spread_chart(chart_id: str, title: str, rows: Sequence[tuple[str, Measurement, bool]]) -> str:
    """Each artifact's latency distribution on one axis (from just below the fastest run): a whisker from the fastest
    run to p99, a box from p50 to p90, a bar at p50 (max is left out: one outlier would squeeze every box)."""
    plot = CHART_WIDTH - LABEL_WIDTH - 40  # room for the last tick's label
    top = max([m.p99_ms for _, m, _ in rows] + [0.0]) * 1.05 or 1.0
    low = min([m.min_ms for _, m, _ in rows] + [top]) * 0.9
    height = len(rows) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP + 20

    def x(v: float) -> float:
        return LABEL_WIDTH + (v - low) / (top - low) * plot

    parts = [f'<svg id="{e(chart_id)}" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
             f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{e(title)}">', f"<title>{e(title)}</title>"]
    for i, (label, m, shipped) in enumerate(rows):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        mid = y + BAR_HEIGHT / 2
        colour = "#2f6fb3" if shipped else "#9aa7b4"
        tip = (f"{label}: min {format_value(m.min_ms, 'ms')}, p50 {format_value(m.p50_ms, 'ms')}, p90 "
               f"{format_value(m.p90_ms, 'ms')}, p99 {format_value(m.p99_ms, 'ms')} ({m.runs} runs)")
        parts += [f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT * 0.7:.1f}" text-anchor="end" font-size="12" '
                  f'fill="#1f2328">{e(label)}</text>',
                  f'<line x1="{x(m.min_ms):.1f}" y1="{mid:.1f}" x2="{x(m.p99_ms):.1f}" y2="{mid:.1f}" '
                  f'stroke="{colour}" stroke-width="2"/>',
                  f'<rect x="{x(m.p50_ms):.1f}" y="{y + 3}" width="{max(2.0, x(m.p90_ms) - x(m.p50_ms)):.1f}" '
                  f'height="{BAR_HEIGHT - 6}" fill="{colour}" fill-opacity="0.45" stroke="{colour}">'
                  f"<title>{e(tip)}</title></rect>",
                  f'<line x1="{x(m.p50_ms):.1f}" y1="{y}" x2="{x(m.p50_ms):.1f}" y2="{y + BAR_HEIGHT}" '
                  f'stroke="#1f2328" stroke-width="2"/>']
    bottom = len(rows) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    for i in range(5):
        v = low + (top - low) * i / 4
        parts.append(f'<text x="{x(v):.1f}" y="{bottom + 14}" text-anchor="middle" font-size="11" fill="#59636e">'
                     f"{e(_axis_ms(v))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _axis_ms(value: float) -> str:
    return f"{value:.3g} ms"


def _budget_limits(budgets: Sequence[Budget], metric: str, stat: str = "") -> list[tuple[float, str]]:
    return [(b.limit, f"{b.name} ≤ {b.text}") for b in budgets
            if b.metric == metric and (not stat or (b.stat or "p90") == stat)]


def _charts(report: Report) -> list[str]:
    if not report.artifacts:
        return []
    charts = []
    timed = [(a, _measurement(report, a.name)) for a in report.artifacts]
    latency = [(a.name, m.p50_ms, f"p50 {format_value(m.p50_ms, 'ms')} · p90 {format_value(m.p90_ms, 'ms')}",
                a.name in report.shipping) for a, m in timed if m is not None]
    if latency:
        stat_limits = [(b.limit, f"{b.name} ≤ {b.text}") for b in report.budgets
                       if b.metric == "latency" and (b.stat or "p90") == "p50"]
        where = sorted({f"{m.where}, {m.threads} thread(s)" for _, m in timed if m is not None})
        charts.append('<div class="chart"><h3>Latency p50 per artifact</h3>'
                      + bar_chart("latency-chart", "latency p50 per artifact", latency, stat_limits)
                      + f'<div class="muted">measured on {e("; ".join(where))}</div></div>')
    spread = [(a.name, m, a.name in report.shipping) for a, m in timed if m is not None]
    if spread:
        charts.append('<div class="chart"><h3>Latency spread per artifact</h3>'
                      + spread_chart("spread-chart", "latency spread per artifact", spread)
                      + '<div class="muted">whisker: fastest run to p99 · box: p50 to p90 · bar: p50</div></div>')
    sizes = [(a.name, float(a.size_bytes), format_value(a.size_bytes, "bytes"), a.name in report.shipping)
             for a in report.artifacts]
    charts.append('<div class="chart"><h3>Size per artifact</h3>'
                  + bar_chart("size-chart", "size per artifact", sizes, _budget_limits(report.budgets, "size"))
                  + "</div>")
    memory = [(a.name, float(m.peak_over_baseline_bytes), format_value(m.peak_over_baseline_bytes, "bytes"),
               a.name in report.shipping) for a, m in timed if m is not None and m.peak_over_baseline_bytes is not None]
    if memory:
        charts.append('<div class="chart"><h3>Peak memory over baseline per artifact</h3>'
                      + bar_chart("memory-chart", "peak memory per artifact", memory,
                                  _budget_limits(report.budgets, "memory")) + "</div>")
    latency_budget = next((b for b in report.budgets if b.metric == "latency"), None)
    stat = (latency_budget.stat or "p90") if latency_budget is not None else "p50"
    points = []
    for a, m in timed:
        if m is None:
            continue
        acc = next((x for x in report.accuracy if x.artifact == a.name), None)
        label = a.name + ("" if acc is None else f" ({accuracy_figure(acc)})")
        points.append((label, float(a.size_bytes), m.latency_ms(stat), a.name in report.shipping))
    if points:
        charts.insert(0, f'<div class="chart"><h3>Size, {stat} latency and accuracy</h3>'
                      + scatter_chart("scatter-chart", f"{stat} latency vs size", points, "bytes", "ms",
                                      _budget_limits(report.budgets, "size"),
                                      _budget_limits(report.budgets, "latency", stat)) + "</div>")
    return ["<h2>At a glance</h2>", '<div class="charts">', *charts, "</div>",
            '<p class="muted">Blue: shipped artifacts; grey: kept for comparison. Dashed lines: budgets.</p>']


# ---- failures, warnings, selection, timings -------------------------------------------------------------------------
def _failures(report: Report) -> list[str]:
    failed = [v for v in report.verdicts if not v.passed]
    if not failed and not report.failures:
        return []
    lines = ['<h2 id="failures">Failures</h2>']
    if failed:
        lines.append("<ul>" + "".join(f"<li><b>{e(v.budget)}</b> [{e(v.artifact)}]: {e(_why(v))}</li>"
                                      for v in failed) + "</ul>")
    for f in report.failures:
        lines.append(f"<p><b>{e(f.runtime)}</b> failed at {e(f.stage)} of <code>{e(f.artifact)}</code> "
                     f"(would exit {f.exit_code}): {e(f.reason)}</p>")
        if f.evidence:
            lines.append(f"<pre>{e(f.evidence)}</pre>")
    return lines


def _why(v: Verdict) -> str:
    if v.observed is None:
        return f"not checked — {v.reason}"
    text = (f"observed {format_value(v.observed, v.unit)}, limit {format_value(v.limit, v.unit)}, margin "
            f"{format_value(v.margin, v.unit)}")
    return text + (f" — {v.reason}" if v.reason else "")


def _warnings(report: Report) -> list[str]:
    if not report.warnings:
        return []
    return ["<h2>Warnings</h2>", "<ul>" + "".join(f"<li>{e(w)}</li>" for w in report.warnings) + "</ul>"]


def _selection(report: Report) -> list[str]:
    if not report.selection:
        return []
    return ["<h2>Runtime selection (--runtime auto)</h2>",
            "<ul>" + "".join(f"<li>{e(s)}</li>" for s in report.selection) + "</ul>"]


def _timings(report: Report) -> list[str]:
    if not report.timings:
        return []
    total = sum(t.seconds for t in report.timings)
    bars = [(t.stage, t.seconds, f"{t.seconds:.1f} s", True) for t in report.timings]
    return ["<h2>Where the time went</h2>", f"<p>{total:.1f} s in all.</p>",
            '<div class="chart">' + bar_chart("timings-chart", "seconds per stage", bars) + "</div>"]


# ---- provenance and environment --------------------------------------------------------------------------------------
def _provenance(report: Report) -> list[str]:
    m = report.model
    facts = [("source", f"{m.source} ({m.kind})"), ("model", m.model_name), ("parameters", f"{m.params:,}"),
             ("MACs", f"{m.macs:,}" if m.macs >= 0 else "unknown"),
             ("input shapes", ", ".join("x".join(map(str, s)) for s in m.input_shapes)),
             ("output taken", m.output_taken), ("task", m.task + (f" ({m.task_how})" if m.task_how else ""))]
    if m.inputs:
        facts.append(("inputs", "; ".join(d.describe() for d in m.inputs)))
    if m.original_source:
        facts.append(("original (before compression)", m.original_source))
    for acc in report.accuracy:
        if acc.artifact in ("original", "eager"):
            facts.append((f"{acc.artifact} accuracy", f"{accuracy_figure(acc)} on {acc.samples} samples of "
                                                      f"{acc.dataset}" + (f" — {acc.how}" if acc.how else "")))
    lines = ["<h2>Provenance</h2>", "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts) + "</dl>"]
    if m.passes:
        rows = []
        for p in m.passes:
            acc_text = ("n/a" if p.accuracy_after is None else
                        f"{_pct(p.accuracy_before)} → {_pct(p.accuracy_after)}")
            config = ", ".join(f"{k}={v}" for k, v in p.config.items())
            rows.append(f"<tr><td>{e(p.name)}</td><td><code>{e(config)}</code></td>"
                        f"<td class=num>{p.params_before:,} → {p.params_after:,}</td>"
                        f"<td class=num>{p.macs_before:,} → {p.macs_after:,}</td><td class=num>{e(acc_text)}</td>"
                        f"<td class=num>{p.seconds:.1f}</td></tr>")
        lines += ["<h3>Compression passes</h3>",
                  '<table id="passes"><tr><th>pass</th><th>config</th><th>params</th><th>MACs</th><th>accuracy</th>'
                  "<th>seconds</th></tr>", *rows, "</table>"]
    return lines


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _environment(report: Report) -> list[str]:
    lines = []
    if report.measurements:
        rows = "".join(f"<tr><td>{e(m.artifact)}</td><td>{e(m.where)}</td><td class=num>{m.threads}</td>"
                       f"<td class=num>{m.runs}</td><td class=num>{m.warmup}</td>"
                       f"<td class=num>{e(format_value(m.p99_ms, 'ms'))}</td>"
                       f"<td class=num>{e(f'{m.mean_ms:.4f} ± {m.std_ms:.4f} ms')}</td>"
                       f"<td class=num>{e(format_value(m.init_ms, 'ms'))}</td></tr>" for m in report.measurements)
        lines += ["<h2>Measurements</h2>",
                  '<table id="measurements"><tr><th>artifact</th><th>where</th><th>threads</th><th>runs</th>'
                  "<th>warm-up</th><th>p99</th><th>mean ± std</th><th>init</th></tr>", rows, "</table>"]
    if report.versions or report.host:
        items = [*(f"{k} {v}" for k, v in report.versions.items()), *(f"{k}: {v}" for k, v in report.host.items())]
        lines += ["<h2>Versions and host</h2>", '<p class="muted">' + e(" · ".join(items)) + "</p>"]
    return lines
