"""report.html's charts, drawn with matplotlib and inlined as SVG.

Each chart is rendered in memory by the Agg-free SVG backend with text as paths (`svg.fonttype: path`), so the page
references no font file; the XML prolog and doctype are stripped, and every id the SVG defines is prefixed with the
chart's own id, so several charts inline in one page never share an id. References inside a chart are same-document
fragments only (`#id`, `url(#id)`): the page still loads nothing. The hash salt is fixed, so the same report always
gives the same page.

matplotlib is imported here only, inside the functions: `edgepack --help` and the measuring child never load it.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, Optional, Sequence

from edgepack.gates import format_value
from edgepack.records import Budget, Measurement, PassRecord, Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHIPPED, REFERENCE, LIMIT, INK, MUTED, NOT_DELEGATED = "#2f6fb3", "#9aa7b4", "#c62828", "#1f2328", "#59636e", "#e0a040"
WIDTH_IN = 5.6  # inches: about 540 px wide, two charts side by side in a 1280 px window
OFF_SCALE = 3.0  # a limit more than this times the largest value is named, not drawn (it would squeeze the data)
MAX_LAYERS = 24  # per-layer charts show the layers a pass changed most; the rest are counted in the title


def _figure(height_in: float) -> "Figure":
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "edgepack", "font.size": 9,
                                "axes.edgecolor": "#d1d9e0", "axes.labelcolor": INK, "xtick.color": MUTED,
                                "ytick.color": MUTED, "axes.spines.top": False, "axes.spines.right": False})
    return Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def to_svg(fig: "Figure", chart_id: str, title: str, desc: Sequence[str] = ()) -> str:
    """The figure as an inline <svg> element with an id, its own ids, and a title and description (what it shows, in
    words: the chart's text is drawn as paths, so screen readers and searches read these)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and the doctype (which names a DTD on the web)
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", chart_id)
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'(xlink:href|href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    from html import escape

    head = svg.index(">")
    described = f"<desc>{escape('; '.join(desc))}</desc>" if desc else ""
    return (f'{svg[:head]} id="{escape(chart_id)}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>{described}{svg[head + 1:]}").strip()


def budget_lines(budgets: Sequence[Budget], metric: str, stat: str = "") -> list[tuple[float, str]]:
    return [(b.limit, f"{b.name} ≤ {b.text}") for b in budgets
            if b.metric == metric and (not stat or (b.stat or "p90") == stat)]


def _split_limits(values: Sequence[float], limits: Sequence[tuple[float, str]]
                  ) -> tuple[list[tuple[float, str]], list[str]]:
    largest = max(list(values) + [0.0])
    drawn = [(v, t) for v, t in limits if largest <= 0 or v <= OFF_SCALE * largest]
    return drawn, [t for v, t in limits if (v, t) not in drawn]


def _xlabel(ax: Any, label: str, off: Sequence[str] = ()) -> None:
    """The x axis label, with a line under it for each budget too far off the scale to draw."""
    lines = ([label] if label else []) + [f"{text}: off the scale" for text in off]
    ax.set_xlabel("\n".join(lines))


def _bytes_axis(ax: Any, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(5))
    target.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, "bytes") if v > 0 else "0"))


def _ms_axis(ax: Any, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(5))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g} ms"))


# ---- the charts -----------------------------------------------------------------------------------------------------
def scatter(report: Report, stat: str, labels: dict[str, str]) -> Optional[str]:
    """Every measured artifact at (size, latency statistic), labelled with its accuracy, budgets as dashed lines."""
    measured = {m.artifact: m for m in report.measurements}
    points = [(a.name, float(a.size_bytes), measured[a.name].latency_ms(stat), a.name in report.shipping)
              for a in report.artifacts if a.name in measured]
    if not points:
        return None
    fig = _figure(3.4)
    ax = fig.add_subplot()
    x_drawn, x_off = _split_limits([p[1] for p in points], budget_lines(report.budgets, "size"))
    y_drawn, y_off = _split_limits([p[2] for p in points], budget_lines(report.budgets, "latency", stat))
    for i, (name, x, y, shipped) in enumerate(points):
        ax.scatter([x], [y], s=60, color=SHIPPED if shipped else REFERENCE, edgecolors="white", zorder=3,
                   gid=f"point-{i}")
        ax.annotate(labels.get(name, name), (x, y), xytext=(7, 4), textcoords="offset points", fontsize=8,
                    color=INK)
    for v, text in x_drawn:
        _vline(ax, v, text)
    for v, text in y_drawn:
        ax.axhline(v, color=LIMIT, linestyle="--", linewidth=1.5, gid=f"limit-{len(ax.lines)}")
        ax.annotate(text, (1.0, v), xycoords=("axes fraction", "data"), xytext=(-4, 4),
                    textcoords="offset points", ha="right", color=LIMIT, fontsize=8)
    ax.set_xlim(0, max([p[1] for p in points] + [v for v, _ in x_drawn]) * 1.35)
    ax.set_ylim(0, max([p[2] for p in points] + [v for v, _ in y_drawn]) * 1.2)
    _xlabel(ax, "file size", [*x_off, *y_off])
    ax.set_ylabel(f"latency {stat}")
    _bytes_axis(ax, "x")
    _ms_axis(ax, "y")
    desc = [f"{labels.get(name, name)}: {format_value(x, 'bytes')}, {stat} {format_value(y, 'ms')}"
            for name, x, y, _ in points]
    desc += [f"budget {text}" for _, text in (*x_drawn, *y_drawn)] + [f"{text} (off the scale)" for text in
                                                                      (*x_off, *y_off)]
    return to_svg(fig, "scatter-chart", f"{stat} latency vs size, with accuracy", desc)


def distributions(report: Report) -> Optional[str]:
    """Each artifact's per-run latencies as a box plot (whiskers at the 1st and 99th percentile, the runs beyond them
    as dots); a report without per-run samples gets a box from its summary (p50 to p90, whiskers to min and p99).
    Latency budgets on the scale are drawn as dashed lines."""
    rows = [(m, m.artifact in report.shipping) for m in report.measurements]
    if not rows:
        return None
    stats = []
    for m, _ in rows:
        runs = f"{m.runs} runs" + (f", {len(m.process_runs)} processes" if len(m.process_runs) > 1 else "")
        stats.append(_box_stats(m, f"{m.artifact}\n({runs}" + (")" if len(m.samples_ms) >= 2 else ", summary)")))
    fig = _figure(max(2.4, 0.9 + 0.5 * len(rows)))
    ax = fig.add_subplot()
    boxes = ax.bxp(stats, orientation="horizontal", patch_artist=True, showfliers=True, widths=0.55,
                   medianprops={"color": INK, "linewidth": 1.5}, flierprops={"markersize": 2, "alpha": 0.5})
    for patch, (_, shipped) in zip(boxes["boxes"], rows):
        patch.set_facecolor(SHIPPED if shipped else REFERENCE)
        patch.set_alpha(0.55)
    top = max(s["whishi"] for s in stats)
    drawn, off = _split_limits([top], budget_lines(report.budgets, "latency"))
    for v, text in drawn:
        _vline(ax, v, text)
    ax.invert_yaxis()  # the first artifact on top, as in the tables
    # the axis ends a little past the 99th percentiles and the budgets: a few stalls far out would squeeze every box
    right = max([top] + [v for v, _ in drawn]) * 1.12
    beyond = sum(1 for s in stats for x in s["fliers"] if x > right)
    ax.set_xlim(min(s["whislo"] for s in stats) * 0.9, right)
    _xlabel(ax, "latency per run" + (f" ({beyond} slower runs beyond the axis)" if beyond else ""), off)
    _ms_axis(ax, "x")
    desc = [f"{m.artifact}: median {format_value(box['med'], 'ms')}, quartiles {format_value(box['q1'], 'ms')} to "
            f"{format_value(box['q3'], 'ms')} over {m.runs} runs" for (m, _), box in zip(rows, stats)]
    return to_svg(fig, "spread-chart", "latency distribution per artifact", desc)


def _box_stats(m: Measurement, label: str) -> dict[str, Any]:
    from edgepack.stats import percentile

    if len(m.samples_ms) >= 2:
        s = sorted(m.samples_ms)
        lo, hi = percentile(s, 1), percentile(s, 99)
        return {"label": label, "med": percentile(s, 50), "q1": percentile(s, 25), "q3": percentile(s, 75),
                "whislo": lo, "whishi": hi, "fliers": [x for x in s if x < lo or x > hi]}
    return {"label": label, "med": m.p50_ms, "q1": m.p50_ms, "q3": m.p90_ms, "whislo": m.min_ms,
            "whishi": m.p99_ms, "fliers": []}


def bars(chart_id: str, title: str, rows: Sequence[tuple[str, float, str, bool]], unit: str,
         limits: Sequence[tuple[float, str]] = ()) -> str:
    """Horizontal bars (label, value, value text, shipped), budgets as dashed lines."""
    fig = _figure(0.5 + 0.32 * len(rows))
    ax = fig.add_subplot()
    labels = [r[0] for r in rows]
    values = [r[1] for r in rows]
    bars_ = ax.barh(range(len(rows)), values, color=[SHIPPED if r[3] else REFERENCE for r in rows], height=0.65)
    for i, (bar, (_, value, text, _)) in enumerate(zip(bars_, rows)):
        bar.set_gid(f"bar-{i}")
        ax.annotate(text, (value, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=INK)
    drawn, off = _split_limits(values, limits)
    for v, text in drawn:
        _vline(ax, v, text)
    _xlabel(ax, "", off)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [v for v, _ in drawn] + [0.0]) * 1.3 or 1.0)
    if unit == "bytes":
        _bytes_axis(ax, "x")
    desc = [f"{label}: {text}" for label, _, text, _ in rows] + [f"budget {text}" for _, text in drawn]
    return to_svg(fig, chart_id, title, desc + [f"{text} (off the scale)" for text in off])


def delegation(report: Report) -> Optional[str]:
    """Per artifact with a delegation record: nodes inside the delegate and outside it, stacked."""
    rows = [(a.name, a.delegation) for a in report.artifacts if a.delegation is not None]
    if not rows:
        return None
    fig = _figure(0.7 + 0.35 * len(rows))
    ax = fig.add_subplot()
    inside = [d.delegated_nodes for _, d in rows]
    outside = [d.fallback_nodes for _, d in rows]
    ax.barh(range(len(rows)), inside, color=SHIPPED, height=0.6, label="in the delegate")
    ax.barh(range(len(rows)), outside, left=inside, color=NOT_DELEGATED, height=0.6, label="outside it")
    for i, (_, d) in enumerate(rows):
        ax.annotate(f"{d.delegated_nodes}/{d.total_nodes} in {d.backend}", (d.total_nodes, i), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color=INK)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(d.total_nodes for _, d in rows) * 1.5 or 1)
    ax.set_xlabel("graph nodes")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=8, frameon=False)
    return to_svg(fig, "delegation-chart", "delegation coverage per artifact",
                  [f"{name}: {d.delegated_nodes} of {d.total_nodes} nodes in {d.backend}" for name, d in rows])


def layer_params(index: int, p: PassRecord) -> Optional[str]:
    """One pass's per-layer parameters before and after (output channels or features for records without them),
    the layers it changed most first."""
    pairs = [(c, c.params, "parameters") if c.params is not None else (c, c.out_features, "output channels")
             for c in p.changes if c.params is not None or c.out_features is not None]
    changed = [(c, pair, what) for c, pair, what in pairs if pair is not None]
    if not changed:
        return None
    what = changed[0][2]
    changed = [x for x in changed if x[2] == what]
    changed.sort(key=lambda x: x[1][0] - x[1][1], reverse=True)
    shown = changed[:MAX_LAYERS]
    fig = _figure(0.8 + 0.28 * len(shown))
    ax = fig.add_subplot()
    ax.barh(range(len(shown)), [pair[0] for _, pair, _ in shown], color=REFERENCE, height=0.7, label="before")
    ax.barh(range(len(shown)), [pair[1] for _, pair, _ in shown], color=SHIPPED, height=0.45, label="after")
    ax.set_yticks(range(len(shown)), [f"{c.layer} ({c.type})" for c, _, _ in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(what)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=8, frameon=False)
    more = f", {len(changed) - len(shown)} more not shown" if len(changed) > len(shown) else ""
    return to_svg(fig, f"layers-chart-{index}", f"{p.name}: {what} per layer, before and after{more}",
                  [f"{c.layer}: {pair[0]:,} → {pair[1]:,} {what}" for c, pair, _ in shown])


def _vline(ax: Any, value: float, text: str) -> None:
    """A budget on the x axis: a dashed red line, named at its top."""
    ax.axvline(value, color=LIMIT, linestyle="--", linewidth=1.5, gid=f"limit-{len(ax.lines)}")
    ax.annotate(text, (value, 1.0), xycoords=("data", "axes fraction"), xytext=(-4, -10), textcoords="offset points",
                ha="right", color=LIMIT, fontsize=8)


def spectra(index: int, p: PassRecord) -> Optional[str]:
    """A low-rank pass's leading singular values per layer (over the largest), with the rank it kept marked."""
    layers = [c for c in p.changes if len(c.spectrum) >= 2][:MAX_LAYERS]
    if not layers:
        return None
    fig = _figure(3.0)
    ax = fig.add_subplot()
    for c in layers:
        values = [max(v, 1e-6) for v in c.spectrum]  # the leading singular values over the largest (log scale)
        line = ax.plot(range(1, len(values) + 1), values, linewidth=1.2, label=c.layer)[0]
        if c.rank is not None:
            ax.axvline(c.rank, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index (dotted: rank kept)")
    ax.set_ylabel("normalised singular value")
    if len(layers) <= 8:
        ax.legend(fontsize=7, frameon=False)
    return to_svg(fig, f"spectrum-chart-{index}", f"{p.name}: singular value spectrum per layer",
                  [f"{c.layer}: rank {c.rank} of {c.full_rank}" for c in layers])
