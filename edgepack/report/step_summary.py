"""The Markdown a GitHub Actions job shows on its summary page: appended to the file $GITHUB_STEP_SUMMARY names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from edgepack.gates import REGRESSION_SUFFIX, format_interval, format_value, mark
from edgepack.records import Report, Verdict

ENV_VAR = "GITHUB_STEP_SUMMARY"


def summary_markdown(report: Report, verdicts: Sequence[Verdict], command: str) -> str:
    """A heading with the overall result, then one table row per verdict."""
    failed = sum(1 for v in verdicts if not v.passed)
    result = (f"FAIL: {failed} of {len(verdicts)} budget verdicts failed" if failed else
              f"PASS: all {len(verdicts)} budget verdicts met" if verdicts else "PASS: no budgets set")
    lines = [f"### edgepack {command}: {report.model.model_name} on {report.target} — {result}", ""]
    if verdicts:
        lines += ["| result | budget | artifact | observed | limit | details |", "|---|---|---|---|---|---|"]
        for v in verdicts:
            lines.append(f"| {'✅' if v.passed else '❌'} {mark(v)} | {_cell(v.budget)} | {_cell(v.artifact)} | "
                         f"{format_value(v.observed, v.unit)} | {format_value(v.limit, v.unit)} | "
                         f"{_cell(_details(v))} |")
    shipped = ", ".join(report.shipping) or "nothing"
    lines += ["", f"Shipped: {shipped} · edgepack {report.edgepack_version} · report: `{report.out_dir}/report.md`",
              ""]
    return "\n".join(lines) + "\n"


def _details(v: Verdict) -> str:
    if v.metric.endswith(REGRESSION_SUFFIX) or v.metric == "runtimes" or v.observed is None:
        return v.reason
    parts = []
    if v.interval and v.confidence:
        parts.append(f"{v.confidence:.0%} interval {format_interval(*v.interval, v.unit, v.limit)} ({v.method})")
    if v.reason:
        parts.append(v.reason)
    return "; ".join(parts)


def _cell(text: str) -> str:
    """Table cells cannot hold a pipe or a line break."""
    return " ".join(text.replace("|", "\\|").split())


def append_step_summary(text: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Append to the file $GITHUB_STEP_SUMMARY names; returns it, or None when the variable is not set."""
    target = (os.environ if environ is None else environ).get(ENV_VAR)
    if not target:
        return None
    path = Path(target)
    with open(path, "a", encoding="utf-8") as fh:  # appended: other steps of the job write there too
        fh.write(text)
    return path
