"""report.html: rendered from a real report, every string escaped, nothing loaded from anywhere; and opened in a real
headless browser (Debian's chromium), whose screenshot must show the page."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgepack.budgets import parse_budget
from edgepack.cli import cli
from edgepack.gates import judge
from edgepack.records import Report, RuntimeFailure, StageTiming
from edgepack.report.html import html_page, verdict_text, write_html

FIRST_WAVE = Path(__file__).parent / "fixtures" / "report_first_wave.json"
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)"> & "quoted" \'single\''
CHROMIUM = "/usr/bin/chromium"


def real_report() -> Report:
    """The first release's report of a real three-runtime digits build, unchanged."""
    return Report.from_json(FIRST_WAVE.read_text())


def judged_report() -> Report:
    """The real report judged against budgets two of its shipped artifacts fail (14 KB), with a runtime failure,
    warnings, selection lines and timings, each carrying text that must be escaped."""
    report = real_report()
    budgets = (parse_budget("size", "14KB"), parse_budget("latency", "1ms", "p50"), parse_budget("memory", "50MB"))
    report = replace(report, budgets=budgets)
    return replace(
        report, verdicts=tuple(judge(report, budgets)),
        failures=(RuntimeFailure("litert", "measure", "litert-int8", f"interpreter crashed {HOSTILE}",
                                 evidence=f"native tail line 1\n{HOSTILE}"),),
        warnings=(f"warning with {HOSTILE}",), selection=(f"onnxruntime-int8 won: fastest {HOSTILE}",),
        timings=(StageTiming("load", 1.5), StageTiming("export onnxruntime", 4.25), StageTiming("measure", 9.0)))


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


NAMESPACES = ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")  # names, never loaded


def external_references(page: str) -> list[str]:
    """Whatever in the page could make a browser load something: script/link/iframe/object/img elements, src/href
    attributes, url() and @import in styles. The SVG and XLink namespace declarations load nothing, and neither do
    references to an element of the page itself (`href="#id"`, `url(#id)`: the charts' glyphs, markers and clip
    paths); everything else is reported."""
    import re

    found = []
    for tag, attrs in parse(page).tags:
        if tag in ("script", "link", "iframe", "object", "embed", "img", "audio", "video", "source", "base", "form"):
            found.append(f"<{tag}>")
        for name, value in attrs.items():
            if name in ("href", "xlink:href") and (value or "").startswith("#"):
                continue
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data") or name.startswith("on"):
                found.append(f"{tag} {name}={value}")
    lowered = page.lower()
    found += [f"url({m})" for m in re.findall(r"url\(\s*([^)]*)\)", lowered) if not m.startswith("#")]
    found += [token for token in ("@import", "https://") if token in lowered]
    found += ["http://" for _ in range(lowered.count("http://") - sum(lowered.count(n) for n in NAMESPACES))]
    return found


def chart(page: str, chart_id: str) -> str:
    """One inline chart's SVG element (its root carries the chart's id)."""
    start = page.rindex("<svg", 0, page.index(f'id="{chart_id}" role="img"'))
    return page[start:page.index("</svg>", start)]


def test_the_page_opens_with_the_verdict_then_budgets_artifacts_and_charts():
    report = judged_report()
    page = html_page(report)
    failed = [v for v in report.verdicts if not v.passed]
    assert 0 < len(failed) < len(report.verdicts)  # the fixture's 14.27 KB and 15.27 KB int8 files fail 14 KB
    head = f"FAIL: {len(failed)} of {len(report.verdicts)} budget verdicts failed"
    assert verdict_text(report) == head
    # the verdict comes before any section, in the failing colour
    assert page.index(head) < page.index("<h2>") and 'class="verdict fail"' in page
    for section in ("Budgets", "Artifacts", "At a glance", "Failures", "Warnings", "Runtime selection (--runtime auto)",
                    "Where the time went", "Provenance", "Measurements"):
        assert f">{section}</h2>" in page, section
    budgets = page[page.index('id="budgets"'):page.index('id="artifacts"')]
    assert "<td class=num>14.27 KB</td><td class=num>14.00 KB</td><td class=num>-274 B</td>" in budgets
    assert budgets.count('class="badge fail"') == len(failed)
    artifacts = page[page.index('id="artifacts"'):page.index("At a glance")]
    for a in report.artifacts:
        m = next(m for m in report.measurements if m.artifact == a.name)
        assert a.name in artifacts and Path(a.path).name in artifacts
        assert f"{m.p50_ms:.3f} ms" in artifacts and f"{m.p90_ms:.3f} ms" in artifacts
    assert artifacts.count("reference</span>") == len(report.artifacts) - len(report.shipping)
    assert "measured on host x86_64 (x86-64 CPU), 1 thread(s)" in page and "97.66% top-1" in artifacts
    for name in ("scatter-chart", "spread-chart", "size-chart", "memory-chart", "delegation-chart", "layers-chart-0",
                 "timings-chart"):
        svg = chart(page, name)  # drawn by matplotlib: its text as paths, no font referenced
        assert 'id="' + name + '"' in svg and "<title>" in svg and "font-family" not in svg and "@font-face" not in svg
    assert not page.count("<?xml") and "<!DOCTYPE svg" not in page  # inlined, not pasted as a file
    scatter = chart(page, "scatter-chart")
    # one point per measured artifact, labelled with its accuracy; the size budget drawn, the 1 ms one far off scale
    assert scatter.count('<g id="scatter-chart-point-') == len(report.measurements)
    assert "onnxruntime-int8 (83.61%): 14.27 KB, p50 0.028 ms" in scatter
    assert "budget size ≤ 14KB" in scatter and scatter.count('<g id="scatter-chart-limit-') == 1
    assert "latency (p50) ≤ 1ms (off the scale)" in scatter  # named under the axis, not drawn
    size_chart = chart(page, "size-chart")
    assert size_chart.count('<g id="size-chart-bar-') == len(report.artifacts) and "budget size ≤ 14KB" in size_chart
    spread = chart(page, "spread-chart")  # one box per measured artifact (this old report has summaries only)
    assert all(f"{m.artifact}: median" in spread for m in report.measurements)
    assert "executorch-int8: 30 of 30 nodes in XnnpackBackend" in chart(page, "delegation-chart")
    assert "features.0: 16 → 8 output channels" in chart(page, "layers-chart-0")  # the prune pass, per layer
    # ids are prefixed per chart, so no two elements of the page share one
    ids = [a["id"] for _, a in parse(page).tags if a.get("id")]
    assert len(ids) == len(set(ids))
    assert "14.8 s in all" in page and "prune" in page and "99.44% → 10.28%" in page  # timings and the passes


def test_every_string_from_the_report_is_escaped():
    report = judged_report()
    report = replace(report, model=replace(report.model, source=f"model {HOSTILE}", model_name="net<marquee>"))
    page = html_page(report)
    assert "<script" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "<marquee>" not in page
    tags = parse(page)
    assert not [t for t, _ in tags.tags if t in ("script", "img", "marquee")]
    text = "".join(tags.text)
    # parsed back, the text reads exactly as the report has it, in the failure, its evidence, warnings and selection
    assert text.count(HOSTILE) >= 5 and "net<marquee> → x86-cpu" in text
    assert external_references(page) == []


def test_a_report_without_budgets_passes_and_loads_nothing():
    page = html_page(real_report())
    assert 'class="verdict pass"' in page and ">PASS: no budgets set" in page
    assert "No budgets were set" in page and "<h2 id=\"failures\">" not in page
    assert external_references(page) == []
    # the check itself can fail: a page that would load something is caught
    assert external_references(page.replace("</body>", '<img src="https://example.org/x.png"></body>')) != []


def test_interval_too_close_to_call_and_regression_figures_are_shown():
    import numpy as np

    from edgepack.regression import compare, parse_max_regression
    from tests.ci_reports import latencies, report, scaled

    rng = np.random.default_rng(0)
    base = report(latencies(rng, 100))
    slower = scaled(report(latencies(rng, 100)), 1.3)
    budget = parse_budget("latency", f"{slower.measurements[0].p90_ms}ms")  # right at the edge: too close to call
    verdicts = judge(slower, [budget]) + compare(slower, base, parse_max_regression("latency=10%"), "main.json")
    page = html_page(replace(slower, budgets=(budget,), verdicts=tuple(verdicts)))
    budgets = page[page.index('id="budgets"'):page.index('id="artifacts"')]
    assert "FAIL (too close to call)" in budgets and "95% [" in budgets
    assert "1 process; order statistics, 100 runs" in budgets
    regression = next(v for v in verdicts if v.metric == "latency_regression")
    assert not regression.passed and regression.ratio is not None and regression.p_value is not None
    assert f"(×{regression.ratio:.3f}), p={regression.p_value:.2g}" in budgets and "(baseline + threshold)" in budgets


def test_check_writes_the_rejudged_report_html(runner, tmp_path):
    out = tmp_path / "sub" / "page.html"
    result = runner.invoke(cli, ["check", str(FIRST_WAVE), "--budget", "14KB", "--html", str(out)])
    assert result.exit_code == 3, result.output
    page = out.read_text()
    assert "FAIL: 2 of 3 budget verdicts failed" in page and "size ≤ 14KB" in page
    assert not [p for p in out.parent.iterdir() if p.name != "page.html"]  # written atomically, nothing else left
    bad = runner.invoke(cli, ["check", str(FIRST_WAVE), "--html", str(tmp_path)])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "--html" in bad.output


def test_write_html_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    write_html(real_report(), path)
    assert path.read_text().startswith("<!DOCTYPE html>") and [p.name for p in tmp_path.iterdir()] == ["report.html"]


# ---- in a real browser ----------------------------------------------------------------------------------------------
def chromium_or_skip() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        if os.environ.get("EDGEPACK_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed and EDGEPACK_REQUIRE_BROWSER is set (scripts/ensure-chromium "
                        "installs it)")
        pytest.skip("chromium is not installed (scripts/ensure-chromium installs it; CI sets EDGEPACK_REQUIRE_BROWSER)")
    return path


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1280, 3000)) -> str:
    """Open the page in headless chromium with networking off, save a screenshot; return what the browser logged
    (console messages appear as ':CONSOLE' lines: script errors and every load the page's policy blocked)."""
    cmd = [chromium_or_skip(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", f"--screenshot={png}",
           f"--window-size={size[0]},{size[1]}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return proc.stderr


def console_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


@pytest.mark.browser
def test_chromium_renders_the_report(tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    write_html(judged_report(), page)
    png = tmp_path / "report.png"
    log = screenshot(page, png, tmp_path / "profile")
    assert console_messages(log) == []  # no script error, no blocked load
    saved = os.environ.get("EDGEPACK_SCREENSHOT_DIR")  # CI keeps the screenshot as a test artifact
    if saved:
        Path(saved).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(saved) / "report.png")
    with Image.open(png) as image:
        assert image.size == (1280, 3000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # text, tables and charts, not a blank page
        # the FAIL banner's background (#fdecea) fills the top of the page, and the charts' blue bars (#2f6fb3) show
        banner = rgb.crop((40, 60, 1200, 160)).getcolors(maxcolors=1 << 20) or []
        assert max(banner)[1] == (0xFD, 0xEC, 0xEA)
        assert dict((c, n) for n, c in colours).get((0x2F, 0x6F, 0xB3), 0) > 2000


@pytest.mark.browser
def test_the_browser_check_catches_a_page_that_loads_something(tmp_path):
    page = tmp_path / "bad.html"
    text = html_page(real_report()).replace("</body>", '<img src="http://127.0.0.1:9/x.png"></body>')
    page.write_text(text)
    log = screenshot(page, tmp_path / "bad.png", tmp_path / "profile", (800, 600))
    assert any("127.0.0.1:9" in line for line in console_messages(log))


def test_without_chromium_the_browser_tests_skip_unless_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    monkeypatch.delenv("EDGEPACK_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        chromium_or_skip()
    monkeypatch.setenv("EDGEPACK_REQUIRE_BROWSER", "1")  # as .ci/run sets it: CI fails rather than skip
    with pytest.raises(pytest.fail.Exception, match="EDGEPACK_REQUIRE_BROWSER"):
        chromium_or_skip()


def test_a_low_rank_pass_gets_its_parameters_and_spectra_charted():
    from edgepack.records import LayerChange, PassRecord

    changes = (LayerChange("fc1", "Linear", params=(65_600, 12_480), rank=24, full_rank=64,
                           spectrum=(1.0, 0.6, 0.3, 0.1, 0.02, 0.0)),
               LayerChange("fc2", "Linear", params=(4_160, 1_040), rank=8, full_rank=64,
                           spectrum=(1.0, 0.2, 0.05, 0.01)))
    lowrank = PassRecord("lowrank", {"energy": 0.9}, 70_000, 13_000, 70_000, 13_000, 0.1, changes=changes)
    report = real_report()
    page = html_page(replace(report, model=replace(report.model, passes=(lowrank,))))
    layers = chart(page, "layers-chart-0")
    assert "fc1: 65,600 → 12,480 parameters" in layers and "fc2: 4,160 → 1,040 parameters" in layers
    spectra = chart(page, "spectrum-chart-0")
    assert "fc1: rank 24 of 64" in spectra and "fc2: rank 8 of 64" in spectra
    assert external_references(page) == []
    # a pass without per-layer records draws neither
    bare = replace(lowrank, changes=())
    assert "layers-chart-0" not in html_page(replace(report, model=replace(report.model, passes=(bare,))))
