"""`edgepack history`: the builds recorded with `--history FILE.db`, and the trend of one metric."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgepack.cli.options import EXIT_CODE_HELP
from edgepack.errors import UsageError


@click.command("history", epilog=EXIT_CODE_HELP)
@click.argument("history_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--metric", metavar="NAME", help="Show this metric's trend: size, latency_p50, latency_p90, latency_p99, "
              "latency_mean, memory, accuracy.")
@click.option("--artifact", metavar="NAME", help="The artifact whose trend --metric shows (default: every shipped "
              "artifact).")
@click.option("--model", metavar="NAME", help="Only runs of this model (its name in the report, e.g. digits-cnn).")
@click.option("--target", metavar="NAME", help="Only runs for this target.")
@click.option("--limit", type=int, default=20, show_default=True, help="How many of the latest entries to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def command(history_file: Path, metric: Optional[str], artifact: Optional[str], model: Optional[str],
            target: Optional[str], limit: int, as_json: bool) -> None:
    """List the builds recorded in FILE.db (`edgepack build --history FILE.db`), or one metric's trend."""
    from dataclasses import asdict

    from edgepack import history
    from edgepack.cli.output import Output

    if limit < 1:
        raise UsageError(f"--limit {limit}: use 1 or more")
    if artifact is not None and metric is None:
        raise UsageError("--artifact picks whose trend --metric shows; add --metric NAME")
    output = Output()
    if metric is None:
        runs = history.runs(history_file, model, target, limit)
        if as_json:
            output.json([asdict(r) for r in runs])
        elif not runs:
            output.result(f"no builds recorded in {history_file}" + (" for that model/target" if model or target
                                                                     else ""))
        else:
            output.table(f"builds recorded in {history_file}", [{
                "run": str(r.id), "created": r.created, "model": r.model, "target": r.target, "runtimes": r.runtimes,
                "branch": r.git_branch or "—", "commit": r.git_commit[:10] or "—",
                "verdicts": ("pass" if r.passed else f"FAIL {r.failed} of {r.verdicts}") if r.verdicts else "—",
            } for r in runs])
        return
    points = history.trend(history_file, metric, artifact, model, target, limit)
    if as_json:
        output.json([asdict(p) for p in points])
        return
    if not points:
        output.result(f"no {metric} recorded in {history_file}" + (f" for {artifact}" if artifact else ""))
        return
    first: dict[str, float] = {}
    rows = []
    for p in points:
        start = first.setdefault(p.artifact, p.value)
        change = "—" if p.value == start else ("n/a" if start == 0 else f"{(p.value / start - 1) * 100:+.1f}%")
        rows.append({"run": str(p.run), "created": p.created, "branch": p.git_branch or "—",
                     "commit": p.git_commit[:10] or "—", "artifact": p.artifact, metric: _value(p.value, p.unit),
                     "vs first shown": change})
    output.table(f"{metric} in {history_file}", rows)


def _value(value: float, unit: str) -> str:
    from edgepack.gates import format_value

    if unit == "ms":  # sub-millisecond trends need more than format_value's three decimals
        return f"{value:.4g} ms"
    return f"{value:.2f}%" if unit == "%" else format_value(value, unit)
