"""`edgepack check`: re-judge a saved report.json against budgets without re-running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgepack.cli.options import EXIT_CODE_HELP, LATENCY_STAT_CHOICE, budget_options, budgets_given
from edgepack.errors import UsageError, one_line


@click.command("check", epilog=EXIT_CODE_HELP)
@click.argument("report_file", type=click.Path(dir_okay=False, path_type=Path))
@budget_options
@click.option("--latency-stat", type=LATENCY_STAT_CHOICE, default="p90", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
def command(report_file: Path, latency_stat: str, as_json: bool, **budget_texts: Optional[str]) -> None:
    """Re-judge a saved report.json against budgets without re-running anything.

    Budgets given here replace the saved ones of the same kind; without any, the saved budgets are re-checked.
    """
    from edgepack.budgets import merge_budgets
    from edgepack.cli.output import Output
    from edgepack.gates import describe_failure, format_value, judge
    from edgepack.records import Report

    if not report_file.is_file():
        raise UsageError(f"{report_file}: no such report; pass the report.json that `edgepack build` wrote")
    try:
        report = Report.from_json(report_file.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{report_file}: not an edgepack report.json ({one_line(exc)})") from None
    budgets = merge_budgets(list(report.budgets), budgets_given(budget_texts, latency_stat))
    verdicts = judge(report, budgets)
    output = Output()
    if as_json:
        output.json([v.to_dict() for v in verdicts])
    else:
        for v in verdicts:
            mark = "pass" if v.passed else "FAIL"
            output.result(f"{mark}  {v.budget} [{v.artifact}]: observed {format_value(v.observed, v.unit)}, "
                          f"limit {format_value(v.limit, v.unit)}")
        if not verdicts:
            output.result("no budgets to check: pass --budget/--max-latency/--max-memory/--max-accuracy-drop")
    for v in verdicts:
        if not v.passed:
            output.failure(f"budget failed: {describe_failure(v)}")
    if not all(v.passed for v in verdicts):
        raise click.exceptions.Exit(3)
