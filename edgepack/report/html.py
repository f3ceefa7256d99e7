"""report.html: the report as one self-contained page a person opens in a browser.

Inline CSS and inline SVG only: no script, no font, no image or style sheet from anywhere (a Content-Security-Policy
meta tag forbids every load), so the page opens the same offline, attached to a CI run or mailed. Every string
from the report is escaped. The charts are drawn with matplotlib (report/charts.py) and inlined as SVG with their text
as paths. Rendered from the `Report` record alone, so `edgepack check` can write it again from a saved report.json.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional, Sequence

from edgepack.fileio import atomic_write_text
from edgepack.gates import REGRESSION_SUFFIX, format_interval, format_value, mark
from edgepack.records import TOO_CLOSE, Artifact, Measurement, Report, Verdict
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
.chart { border: 1px solid var(--rule); border-radius: 6px; padding: 8px 12px; max-width: 580px; }
.chart h3 { font-size: 14px; margin: 0 0 4px; }
.chart svg { display: block; max-width: 100%; height: auto; }
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
            _num("n/a" if m is None else format_value(m.memory_bytes, "bytes")),
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
def _chart(title: str, svg: Optional[str], note: str = "") -> list[str]:
    if svg is None:
        return []
    return [f'<div class="chart"><h3>{e(title)}</h3>{svg}' + (f'<div class="muted">{e(note)}</div>' if note else "")
            + "</div>"]


def _charts(report: Report) -> list[str]:
    """Drawn with matplotlib (report/charts.py, imported here only: it is the one module that loads it)."""
    from edgepack.report import charts

    if not report.artifacts:
        return []
    latency_budget = next((b for b in report.budgets if b.metric == "latency"), None)
    stat = (latency_budget.stat or "p90") if latency_budget is not None else "p50"
    labels = {}
    for a in report.artifacts:
        acc = next((x for x in report.accuracy if x.artifact == a.name), None)
        labels[a.name] = a.name + ("" if acc is None else f" ({accuracy_figure(acc)})")
    where = sorted({f"{m.where}, {m.threads} thread(s)" for m in report.measurements})
    out = _chart(f"Size, {stat} latency and accuracy", charts.scatter(report, stat, labels),
                 "each point an artifact, labelled with its accuracy where it was evaluated")
    out += _chart("Latency per run", charts.distributions(report),
                  f"box: quartiles, bar: median, whiskers: 1st to 99th percentile, dots: runs beyond; measured on "
                  f"{'; '.join(where)}")
    sizes = [(a.name, float(a.size_bytes), format_value(a.size_bytes, "bytes"), a.name in report.shipping)
             for a in report.artifacts]
    out += _chart("Size per artifact", charts.bars("size-chart", "size per artifact", sizes, "bytes",
                                                   charts.budget_lines(report.budgets, "size")))
    timed = {m.artifact: m for m in report.measurements}
    memory = [(a.name, float(m.memory_bytes), format_value(m.memory_bytes, "bytes"),
               a.name in report.shipping) for a in report.artifacts
              if (m := timed.get(a.name)) is not None and m.memory_bytes is not None]
    if memory:
        out += _chart("Peak memory over baseline per artifact",
                      charts.bars("memory-chart", "peak memory per artifact", memory, "bytes",
                                  charts.budget_lines(report.budgets, "memory")))
    out += _chart("Delegation coverage", charts.delegation(report),
                  "graph nodes inside the accelerated delegate and outside it (the reasons are under Artifact details)")
    for i, p in enumerate(report.model.passes):
        out += _chart(f"{p.name}: per layer, before and after", charts.layer_params(i, p))
        out += _chart(f"{p.name}: singular values per layer", charts.spectra(i, p))
    return ["<h2>At a glance</h2>", '<div class="charts">', *out, "</div>",
            '<p class="muted">Blue: shipped artifacts; grey: kept for comparison. Dashed red lines: budgets.</p>']


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
    from edgepack.report import charts

    bars = [(t.stage, t.seconds, f"{t.seconds:.1f} s", True) for t in report.timings]
    return ["<h2>Where the time went</h2>", f"<p>{total:.1f} s in all.</p>",
            '<div class="chart">' + charts.bars("timings-chart", "seconds per stage", bars, "s") + "</div>"]


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
