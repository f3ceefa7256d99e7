"""`edgepack compare A B`: re-measure two artifacts interleaved on this host and judge B against A."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgepack.cli.options import EXIT_CODE_HELP
from edgepack.compare import DEFAULT_ROUNDS, DEFAULT_RUNS, DEFAULT_WARMUP  # a light module: records and stats only
from edgepack.errors import UsageError


@click.command("compare", epilog=EXIT_CODE_HELP)
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--rounds", type=int, default=DEFAULT_ROUNDS, show_default=True,
              help="Rounds of A then B, each artifact in a fresh measuring child process every round.")
@click.option("--runs", type=int, default=DEFAULT_RUNS, show_default=True, help="Timed runs per artifact per round.")
@click.option("--warmup", type=int, default=DEFAULT_WARMUP, show_default=True,
              help="Untimed runs before each round's timed ones.")
@click.option("--threads", type=int, default=1, show_default=True, help="Intra-op threads of both runtimes.")
@click.option("--max-regression", metavar="N%",
              help="Exit 3 when B is slower than A beyond N%, by the regression gate's rule: a significant one-sided "
                   "Mann-Whitney U test (p < 0.05, on the rounds' p50s; needs 4 rounds or more) and a p50 ratio "
                   "above 1 + N%.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the comparison (both measurements with every run, the ratio and its interval, the tests) "
                   "as JSON.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def command(a: Path, b: Path, rounds: int, runs: int, warmup: int, threads: int, max_regression: Optional[str],
            json_file: Optional[Path], quiet: bool) -> None:
    """Measure artifacts A and B interleaved (A B A B …) on this host and compare B with A.

    A and B are artifact files (.onnx, .pte, .tflite) or build directories (their report.json's shipped artifact).
    Both are fed the same inputs. Prints each p50 and peak memory, the p50 ratio B/A with its 95% interval, and the
    Mann-Whitney U verdict. Use this rather than `check --baseline` when both artifacts are on disk: runs taken
    side by side share the machine's load, runs from two CI jobs do not.
    """
    import json

    from edgepack import compare
    from edgepack.ci import check_writable_file
    from edgepack.cli.output import Output
    from edgepack.fileio import atomic_write_text

    if rounds < 1:
        raise UsageError(f"--rounds {rounds}: use 1 or more")
    if runs < 2:
        raise UsageError(f"--runs {runs}: use 2 or more (the rank test needs several runs)")
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: use 0 or more")
    if threads < 1:
        raise UsageError(f"--threads {threads}: use 1 or more")
    if max_regression is not None:
        compare.latency_threshold(max_regression)  # a bad amount exits 2 before anything is measured
        if rounds < compare.MIN_ROUNDS_TO_JUDGE:
            raise UsageError(f"--max-regression needs --rounds {compare.MIN_ROUNDS_TO_JUDGE} or more: the rank test "
                             f"compares the rounds' p50s, and {rounds} round(s) each can never be significant at "
                             f"p < 0.05")
    if json_file is not None:
        check_writable_file(json_file, "--json")
    side_a, side_b = compare.resolve(a, "A"), compare.resolve(b, "B")
    compare.check_runnable(side_a)
    compare.check_runnable(side_b)
    compare.check_same_inputs(side_a, side_b)
    output = Output(quiet)
    result = compare.compare(side_a, side_b, rounds, runs, warmup, threads, max_regression, stage=output.stage)
    for line in compare.summary_lines(result):
        output.result(line)
    if json_file is not None:
        atomic_write_text(json_file, json.dumps(result.to_dict(), indent=2) + "\n")
    if result.regression is not None and not result.regression.passed:
        from edgepack.gates import describe_failure

        output.failure(f"budget failed: {describe_failure(result.regression)}")
        raise click.exceptions.Exit(3)
