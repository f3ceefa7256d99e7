"""`edgepack check`: re-judge a saved report.json against budgets without re-running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from edgepack.cli.ci_options import check_history_option, ci_options, ci_request
from edgepack.cli.options import EXIT_CODE_HELP, LATENCY_STAT_CHOICE, budget_options, budgets_given


@click.command("check", epilog=EXIT_CODE_HELP)
@click.argument("report_file", type=click.Path(dir_okay=False, path_type=Path))
@budget_options
@click.option("--latency-stat", type=LATENCY_STAT_CHOICE, default="p90", show_default=True)
@ci_options
@check_history_option
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Write the re-judged report as a self-contained report.html (the saved report with these "
                   "verdicts).")
def command(report_file: Path, latency_stat: str, latency_tolerance: Optional[str], as_json: bool,
            html_file: Optional[Path], **options: Any) -> None:
    """Re-judge a saved report.json against budgets without re-running anything.

    Budgets given here replace the saved ones of the same kind; without any, the saved budgets are re-checked.
    With --baseline, every shipped artifact is also compared with the baseline report's artifact of the same name.
    With --history, the re-judged report is recorded like a build.
    """
    from edgepack import ci
    from edgepack.budgets import merge_budgets, with_latency_tolerance
    from edgepack.cli.output import Output
    from edgepack.gates import describe_failure, describe_verdict, judge
    from edgepack.report.reading import read_report

    report = read_report(report_file)
    ci_plan = ci.prepare(ci_request(options))
    if html_file is not None:
        ci.check_writable_file(html_file, "--html")
    budgets = merge_budgets(list(report.budgets), budgets_given(options, latency_stat))
    budgets = with_latency_tolerance(budgets, latency_tolerance)
    verdicts = judge(report, budgets) + ci.regression_verdicts(report, ci_plan)
    output = Output()
    if as_json:
        output.json([v.to_dict() for v in verdicts])
    else:
        for v in verdicts:
            output.result(describe_verdict(v))
        if not verdicts:
            output.result("no budgets to check: pass --budget/--max-latency/--max-memory/--max-accuracy-drop, or "
                          "--baseline with --max-regression")
    ci.write_outputs(report, verdicts, ci_plan, "check", output.warn)
    if html_file is not None:
        from dataclasses import replace

        from edgepack.report.html import write_html

        write_html(replace(report, budgets=tuple(budgets), verdicts=tuple(verdicts)), html_file)
    for v in verdicts:
        if not v.passed:
            output.failure(f"budget failed: {describe_failure(v)}")
    if not all(v.passed for v in verdicts):
        raise click.exceptions.Exit(3)
