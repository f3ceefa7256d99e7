"""Rendering a report: report.json (every record), report.md (tables a person reads), and the rows the CLI prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgepack.fileio import atomic_write_text
from edgepack.gates import describe_failure, format_interval, format_value
from edgepack.records import TOO_CLOSE, Accuracy, Parity, Report, Rescue, Verdict


def write_json(report: Report, path: Path) -> None:
    atomic_write_text(path, report.to_json() + "\n")


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def artifact_rows(report: Report) -> list[dict[str, str]]:
    """One row per artifact with the figures the table and the CLI summary show."""
    rows = []
    for a in report.artifacts:
        m = next((m for m in report.measurements if m.artifact == a.name), None)
        p = next((p for p in report.parity if p.artifact == a.name), None)
        acc = next((x for x in report.accuracy if x.artifact == a.name), None)
        verdicts = [v for v in report.verdicts if v.artifact == a.name]
        budgets = "—" if not verdicts else ("pass" if all(v.passed for v in verdicts) else
                                             "FAIL: " + ", ".join(v.metric for v in verdicts if not v.passed))
        rows.append({
            "artifact": a.name + ("" if a.name in report.shipping else " (reference)"),
            "precision": a.precision,
            "size": format_value(a.size_bytes, "bytes"),
            "p50": "n/a" if m is None else format_value(m.p50_ms, "ms"),
            "p90": "n/a" if m is None else format_value(m.p90_ms, "ms"),
            "peak memory": "n/a" if m is None or m.memory_bytes is None
            else format_value(m.memory_bytes, "bytes"),
            "max abs diff": "n/a" if p is None else f"{p.max_abs_diff:.2e}",
            "parity": "n/a" if p is None else parity_figure(p),
            "accuracy": "n/a" if acc is None else accuracy_figure(acc),
            "budgets": budgets,
        })
    return rows


def accuracy_figure(acc: Accuracy) -> str:
    """The task's accuracy metric, short enough for a table cell."""
    if acc.metric == "top-1":
        return _pct(acc.top1)
    if acc.value is None:
        return "n/a"
    return f"{acc.metric} {acc.value:.4g}" if acc.metric == "mean abs error" else f"{acc.metric} {_pct(acc.value)}"


def parity_figure(p: Parity) -> str:
    """The figure the parity floor judges for the artifact's task, short enough for a table cell."""
    if p.task == "classification" and p.top1_agreement is not None:
        return f"{_pct(p.top1_agreement)} top-1"
    if p.task == "segmentation" and p.top1_agreement is not None:
        return f"{_pct(p.top1_agreement)} pixels"
    if p.task == "embedding" and p.cosine is not None:
        return f"cos {p.cosine:.4f}"
    return f"rel err {p.relative_error:.2e}"


def verdict_line(report: Report) -> str:
    """One line a person or a CI log reads first: PASS or FAIL, how many budgets, and the page to open (report.html;
    report.md and report.json sit beside it)."""
    failed = sum(1 for v in report.verdicts if not v.passed)
    where = f"report: {report.out_dir}/report.html"
    if not report.verdicts:
        return f"PASS: no budgets set · {where}"
    if failed:
        return f"FAIL: {failed} of {len(report.verdicts)} budget verdicts failed · {where}"
    return f"PASS: all {len(report.verdicts)} budget verdicts met · {where}"


def fastest_within_budgets(report: Report) -> Optional[str]:
    """The shipped artifact with the lowest measured p50 among those meeting every budget, as one line."""
    passing = [a for a in report.shipping
               if all(v.passed for v in report.verdicts if v.artifact == a)]
    timed = [(m.p50_ms, m) for m in report.measurements if m.artifact in passing]
    if not timed:
        return None
    p50, m = min(timed, key=lambda t: t[0])
    return f"fastest within budgets: {m.artifact} (p50 {format_value(p50, 'ms')}, {m.where}, {m.threads} thread(s))"


def markdown(report: Report) -> str:
    model = report.model
    lines = [f"# edgepack report: {model.model_name} → {report.target}", ""]
    status = "all budgets met" if report.passed else "BUDGET FAILED"
    lines += [f"**{status}** · {len(report.verdicts)} verdict(s) · created {report.created} · edgepack "
              f"{report.edgepack_version}", ""]
    lines += [f"- Model: `{model.source}` ({model.kind}), {model.params:,} parameters, "
              f"{f'{model.macs:,}' if model.macs >= 0 else 'unknown'} MACs, "
              f"input {' , '.join('x'.join(map(str, s)) for s in model.input_shapes)}, output taken: "
              f"`{model.output_taken}`"]
    lines.append(f"- Task: {model.task}" + (f" ({model.task_how})" if model.task_how else ""))
    if any(d.kind != "float" for d in model.inputs) or len(model.inputs) > 1:
        lines.append("- Inputs: " + "; ".join(d.describe() for d in model.inputs))
    where = {m.where + f", {m.threads} thread(s)" for m in report.measurements}
    if where:
        lines.append(f"- Measured on: {'; '.join(sorted(where))}")
    original = next((a for a in report.accuracy if a.artifact == "original"), None)
    if original:
        lines.append(f"- Original model (before compression) accuracy, the baseline of accuracy budgets: "
                     f"{accuracy_figure(original)} on {original.samples} samples of {original.dataset}"
                     + (f" — {original.how}" if original.how else ""))
    eager = next((a for a in report.accuracy if a.artifact == "eager"), None)
    if eager:
        lines.append(f"- Eager PyTorch accuracy: {accuracy_figure(eager)} on {eager.samples} samples of "
                     f"{eager.dataset}")
    fastest = fastest_within_budgets(report)
    if fastest:
        lines.append(f"- {fastest[0].upper()}{fastest[1:]}")
    lines.append("")
    rows = artifact_rows(report)
    if rows:
        headers = list(rows[0])
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines += ["| " + " | ".join(r[h] for h in headers) + " |" for r in rows]
        lines.append("")
    if report.verdicts:
        lines += ["## Budgets", "", "| budget | artifact | limit | observed | margin | result |",
                  "|---|---|---|---|---|---|"]
        for v in report.verdicts:
            lines.append(f"| {v.budget} | {v.artifact} | {format_value(v.limit, v.unit)} | "
                         f"{format_value(v.observed, v.unit)} | {format_value(v.margin, v.unit)} | "
                         f"{'pass' if v.passed else 'FAIL' + (' — ' + v.reason if v.reason else '')}"
                         f"{_interval_note(v)} |")
        lines.append("")
    if report.selection:
        lines += ["## Runtime selection (--runtime auto)", ""] + [f"- {line}" for line in report.selection] + [""]
    for rescue in report.rescues:
        lines += rescue_section(report, rescue)
    if report.parity:
        lines += parity_table(report)
    if model.passes:
        lines += ["## Compression", "", "| pass | params | MACs | accuracy | seconds |", "|---|---|---|---|---|"]
        for p in model.passes:
            acc = f"{_pct(p.accuracy_before)} → {_pct(p.accuracy_after)}" if p.accuracy_after is not None else "n/a"
            lines.append(f"| {p.name} | {p.params_before:,} → {p.params_after:,} | {p.macs_before:,} → "
                         f"{p.macs_after:,} | {acc} | {p.seconds:.1f} |")
        lines.append("")
    lines += ["## Artifacts", ""]
    for a in report.artifacts:
        share = "" if a.int8_weight_share is None else f"; {a.int8_weight_share:.0%} of weights in 8 bits"
        lines.append(f"- `{Path(a.path).name}`: {a.runtime} {a.precision}, {a.scheme}{share}; sha256 "
                     f"`{a.sha256[:16]}…`")
        for companion in a.companions:
            lines.append(f"  - needs `{companion.name}` beside it ({companion.size_bytes:,} bytes, counted in the "
                         f"size; sha256 `{companion.sha256[:16]}…`)")
        if a.session_options:
            lines.append("  - session settings it must run with: "
                         + ", ".join(f"{k}={v}" for k, v in a.session_options.items()))
        for note in a.notes:
            lines.append(f"  - {note}")
        d = a.delegation
        if d is not None:  # e.g. "41/43 nodes in XnnpackBackend; outside: aten.cumsum.default x1 (reason)"
            outside = "; ".join(f"{f.op} x{f.count} ({f.reason})" for f in d.fallback_ops)
            lines.append(f"  - delegation: {d.delegated_nodes}/{d.total_nodes} nodes in {d.backend}"
                         + (f"; outside: {outside}" if outside else ""))
    lines.append("")
    if report.measurements:
        lines += ["## Measurements", "", "| artifact | where | threads | runs | p50 | p90 | p99 | mean ± std | init | "
                  "first run | peak RSS over baseline |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in report.measurements:
            runs = f"{m.runs} in {len(m.process_runs)} processes" if len(m.process_runs) > 1 else f"{m.runs}"
            lines.append(f"| {m.artifact} | {m.where} | {m.threads} | {runs} | {m.p50_ms:.4f} ms | "
                         f"{m.p90_ms:.4f} ms | {m.p99_ms:.4f} ms | {m.mean_ms:.4f} ± {m.std_ms:.4f} ms | "
                         f"{'n/a' if m.init_ms is None else f'{m.init_ms:.1f} ms'} | "
                         f"{'n/a' if m.first_run_ms is None else f'{m.first_run_ms:.2f} ms'} | "
                         f"{format_value(m.memory_bytes, 'bytes')} |")
        lines.append("")
    if report.robustness:
        lines += robustness_table(report)
    if report.failures:
        lines += ["## Runtime failures", "", "These runtimes did not finish; the others went on.", ""]
        for f in report.failures:
            lines.append(f"- **{f.runtime}** failed at {f.stage} of `{f.artifact}`: {f.reason}")
            if f.evidence:
                lines += ["", "  ```", *[f"  {line}" for line in f.evidence.splitlines()], "  ```"]
        lines.append("")
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
    if report.timings:
        total = sum(t.seconds for t in report.timings)
        lines += ["## Where the time went", "", f"{total:.1f} s in all.", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {t.stage} | {t.seconds:.1f} |" for t in report.timings]
        lines.append("")
    return "\n".join(lines)


def _interval_note(v: Verdict) -> str:
    """A latency verdict's status, interval and what it rests on (processes, runs, re-measured), for report.md."""
    if not v.interval or v.confidence is None:
        return ""
    status = f"{v.status}; " if v.status == TOO_CLOSE and v.passed else ""  # a failed one's reason says so
    return f" ({status}{v.confidence:.0%} interval {format_interval(*v.interval, v.unit, v.limit)}; {v.method})"


def _figure(value: Optional[float], percent: bool, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{value * 100:+.2f} pp" if signed else f"{value * 100:.2f}%"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def rescue_cost(report: Report, rescue: Rescue) -> Optional[str]:
    """What keeping layers in float cost against plain int8: size and measured p50, both from this run."""
    if rescue.rescued is None:
        return None
    names = {a.name: a for a in report.artifacts}
    plain, mixed = names.get(rescue.artifact), names.get(rescue.rescued)
    if plain is None or mixed is None:
        return None
    parts = [f"size {format_value(plain.size_bytes, 'bytes')} → {format_value(mixed.size_bytes, 'bytes')} "
             f"({(mixed.size_bytes - plain.size_bytes) / plain.size_bytes:+.1%})"]
    times = {m.artifact: m for m in report.measurements}
    if rescue.artifact in times and rescue.rescued in times:
        a, b = times[rescue.artifact].p50_ms, times[rescue.rescued].p50_ms
        parts.append(f"p50 {format_value(a, 'ms')} → {format_value(b, 'ms')}" + (f" ({(b - a) / a:+.1%})" if a else "")
                     + f", {times[rescue.rescued].where}")
    return "; ".join(parts)


def rescue_lines(report: Report) -> list[str]:
    """What the terminal says of each sensitivity ranking and rescue: the outcome, the top layers, the cost."""
    lines = []
    for r in report.rescues:
        top = ", ".join(f"{layer.layer} {_figure(layer.effect, r.percent, signed=True)}" for layer in r.layers[:3])
        lines.append(f"{r.runtime} int8 sensitivity ({r.metric}; plain int8 {_figure(r.plain_score, r.percent)}): "
                     f"{top or 'no layer'}")
        lines.append(f"{r.runtime} rescue: {r.outcome}" if r.reason != "--sensitivity" else
                     f"{r.runtime}: ranking only (--sensitivity), artifact unchanged")
        cost = rescue_cost(report, r)
        if cost:
            lines.append(f"{r.runtime} rescue cost against plain int8: {cost}")
    return lines


def rescue_section(report: Report, r: Rescue) -> list[str]:
    """## Int8 sensitivity: why it ran, the ranking, the greedy steps, what shipped and what it cost."""
    title = "rescue" if r.reason != "--sensitivity" else "ranking"
    lines = [f"## Int8 sensitivity and {title}: {r.runtime}", "",
             f"Why: {r.reason}. Metric: {r.metric}; plain int8 (`{r.artifact}`) scores "
             f"{_figure(r.plain_score, r.percent)}. Each layer's effect is the metric with that layer alone kept in "
             f"float minus plain int8's, " + (
                 f"measured in {r.simulation or 'its int8 simulation'}" if r.simulated
                 else f"measured through {r.runtime}") + f" ({r.seconds:.1f} s in all).",
             ""]
    if r.layers:
        pre_ranked = any(layer.sqnr_db is not None for layer in r.layers)
        lines += ["| rank | layer | type | score with it in float | effect |" + (" output SQNR in int8 |" if
                                                                               pre_ranked else ""),
                  "|---|---|---|---|---|" + ("---|" if pre_ranked else "")]
        for i, layer in enumerate(r.layers, 1):
            effect = (layer.error or ("not measured: left out by the SQNR pre-rank" if layer.effect is None
                                      else _figure(layer.effect, r.percent, signed=True)))
            sqnr = "" if not pre_ranked else (" n/a |" if layer.sqnr_db is None else f" {layer.sqnr_db:.1f} dB |")
            lines.append(f"| {i} | `{layer.layer}` | {layer.type} | {_figure(layer.score, r.percent)} | {effect} |"
                         + sqnr)
        if pre_ranked:
            lines.append("")
            lines.append("More layers than the metric pass takes: the output SQNR of each layer in plain int8 "
                         "(computed by the runtime on calibration samples, error of earlier layers included) picked "
                         "the ones measured.")
        lines.append("")
    if r.attempts:
        lines += [f"Greedy rescue (at most {r.max_float_layers} layer(s) in float):", "",
                  "| layers in float | score | accuracy drop | meets the budget |", "|---|---|---|---|"]
        for a in r.attempts:
            drop = "n/a" if a.accuracy_drop is None else f"{a.accuracy_drop:.2f} pp"
            holds = "yes" if a.holds else "no" + (f" ({a.shortfall or a.error})" if a.shortfall or a.error else "")
            if a.simulated:
                holds = f"not in the simulation, so not built: {holds}"
            lines.append(f"| {', '.join(f'`{n}`' for n in a.float_layers)} | {_figure(a.score, r.percent)} | "
                         f"{drop} | {holds} |")
        lines.append("")
    lines.append(f"Outcome: {r.outcome}.")
    if r.rescued:
        lines.append(f"`{r.rescued}` ships instead of `{r.artifact}` (kept for comparison).")
    cost = rescue_cost(report, r)
    if cost:
        lines.append(f"Cost against plain int8: {cost}.")
    return lines + [""]


def parity_table(report: Report) -> list[str]:
    """Every parity figure per artifact; the floor judges the one that fits the task."""
    lines = ["## Parity against eager PyTorch", "",
             f"Parity floor: {report.parity_floor or 'not recorded'}.", "",
             "| artifact | task | samples | max abs diff | mean abs diff | relative error | cosine | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for p in report.parity:
        cosine = "n/a" if p.cosine is None else f"{p.cosine:.5f}"
        lines.append(f"| {p.artifact} | {p.task} | {p.samples} | {p.max_abs_diff:.3e} | {p.mean_abs_diff:.3e} | "
                     f"{p.relative_error:.3e} | {cosine} | {_pct(p.top1_agreement)} |")
    return lines + ["", f"Inputs: {report.parity[0].inputs_from}.", ""]


def robustness_table(report: Report) -> list[str]:
    """Top-1 per corruption and severity (rows) for eager and each artifact (columns)."""
    names = [r.artifact for r in report.robustness]
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for r in report.robustness:
        for row in r.rows:
            cells.setdefault((row.corruption, row.severity), {})[r.artifact] = row.top1
    lines = ["## Robustness (top-1 on corrupted eval data)", "",
             "| corruption | severity | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for (corruption, severity), values in cells.items():
        lines.append(f"| {corruption} | {severity} | " + " | ".join(_pct(values.get(n)) for n in names) + " |")
    return lines + [""]


def write_markdown(report: Report, path: Path) -> None:
    atomic_write_text(path, markdown(report))


def failures(report: Report) -> list[str]:
    return [describe_failure(v) for v in report.verdicts if not v.passed]
