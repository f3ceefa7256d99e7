"""Options `build` and `check` share for CI: the latency verdicts' tolerance, the regression gate, JUnit, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from edgepack.cli.options import apply_options

TOLERANCE_HELP = ("What a latency verdict too close to call (its 95% confidence interval, from the per-run samples, "
                  "straddles the limit) becomes: fail (default), pass, or a percentage N% (passes when the "
                  "interval's upper end is at most N% above the limit).")


def ci_options(fn: Callable) -> Callable:
    return apply_options(fn, [
        click.option("--latency-tolerance", metavar="fail|pass|N%", help=TOLERANCE_HELP),
        click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), metavar="BASE.json",
                     help="A report.json of the same model and target (e.g. the main branch's) to judge regressions "
                          "against, artifact by artifact (needs --max-regression)."),
        click.option("--max-regression", metavar="AMOUNT", help="How much worse than --baseline each shipped "
                     "artifact may get: 10% (latency, memory, size by 10%, accuracy by 10 pp), or per metric: "
                     "latency=10%,memory=10%,size=5%,accuracy=1pp. Latency regresses only when a one-sided "
                     "Mann-Whitney U test on both runs' samples is significant (p < 0.05) and the p50 ratio is above "
                     "the threshold."),
        click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.xml",
                     help="Write JUnit XML: one test case per budget and artifact, failures with observed vs limit."),
    ])


def history_option(fn: Callable) -> Callable:
    return click.option("--history", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.db",
                        help="Record this build (model, target, git commit and branch, metrics, verdicts) in an "
                             "SQLite history file, created if missing; `edgepack history FILE.db` reads it.")(fn)


def check_history_option(fn: Callable) -> Callable:
    return click.option("--history", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.db",
                        help="Record the re-judged report (its build's model, target and metrics, these verdicts, the "
                             "git commit and branch of this check) in an SQLite history file, created if missing; "
                             "`edgepack history FILE.db` reads it.")(fn)


def ci_request(options: dict[str, Any]) -> Any:
    """The CI options among a command's keyword arguments, as a ci.CiRequest."""
    from edgepack.ci import CiRequest

    return CiRequest(baseline=options.get("baseline"), max_regression=options.get("max_regression"),
                     junit=options.get("junit"), history=options.get("history"))
