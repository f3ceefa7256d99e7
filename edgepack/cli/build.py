"""`edgepack build`: compress, export, quantize, verify, measure and budget-gate a model for a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from edgepack.cli.ci_options import ci_options, ci_request, history_option
from edgepack.cli.options import (EXIT_CODE_HELP, LATENCY_STAT_CHOICE, budget_options, budgets_given,
                                  compression_options, model_options, model_request, pass_configs,
                                  rescue_options)
from edgepack.errors import UsageError
from edgepack.runtimes import REGISTRY


@click.command("build", epilog=EXIT_CODE_HELP)
@model_options
@click.option("--target", default="x86-cpu", show_default=True, metavar="NAME|FILE.yaml",
              help="A bundled target (see `edgepack targets`) or a path to your own target file.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help=f"Runtime(s) to build for: {', '.join(REGISTRY)}, or all (repeatable or comma-separated); auto "
                   "builds every installed runtime of the target and ships the fastest within budgets. Default: the "
                   "target's.")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), help="Shipped precision (default: the "
              "target's, int8). The fp32 artifact is always kept for comparison; fp16 is the cuda target's (built "
              "there at every precision).")
@budget_options
@click.option("--latency-stat", type=LATENCY_STAT_CHOICE, help="Statistic --max-latency checks (default: the "
              "target's, p90).")
@rescue_options
@ci_options
@history_option
@click.option("--require-full-delegation", is_flag=True, help="Fail (exit 3) if any op of an ExecuTorch artifact "
              "stays outside the XNNPACK delegate.")
@click.option("--parity-floor", metavar="VALUE|off", help="The least agreement with eager PyTorch an artifact "
              "needs to ship: class agreement (classification, per pixel for segmentation) or cosine (embedding) at "
              "least VALUE, relative error (regression) at most VALUE. Default: the target's (0.90, 0.98, 0.10).")
@click.option("--allow-partial", is_flag=True, help="When one runtime fails (export, parity or measurement), ship "
              "the others and exit 0 if they meet the budgets; without it the failure is reported and exits 3.")
@click.option("--qat", "qat_epochs", type=int, metavar="EPOCHS", help="Quantization-aware training (PT2E) for the "
              "runtimes that have it (ONNX Runtime, ExecuTorch), on --train data; the post-training int8 artifact "
              "is kept beside it for comparison.")
@click.option("--robustness", is_flag=True, help="Accuracy under Gaussian noise, blur and brightness shifts (3 "
              "severities, seeded) of the --eval data, for eager PyTorch and every artifact.")
@click.option("--bundle/--no-bundle", "bundle", default=None, help="Write the mobile-ready bundle/ and bundle.zip "
              "(default: the target's setting; on for android-arm64).")
@click.option("--calibration", metavar="DATA", help="INT8 calibration data: .npz (x[, y]), an image folder, or zoo. "
              "Default: the zoo model's training split, else synthetic inputs (with a warning).")
@click.option("--calibration-samples", type=int, metavar="N", help="How many calibration samples (a seeded, "
              "class-stratified subset; default: the target's, 256 for ONNX Runtime, 128 for the mobile runtimes).")
@click.option("--eval", "eval_data", metavar="DATA", help="Labelled data to measure accuracy through every artifact's "
              "runtime: .npz (x, y), an image folder, or zoo (held-out split).")
@compression_options
@click.option("--device", metavar="host|adb[:SERIAL]|gpu[:N]|none", help="Where to measure: this host (x86-cpu's "
              "default), an Android phone over adb (needs --runner), an NVIDIA GPU (cuda's default), or none: build "
              "and check numerics on the CPU without measuring.")
@click.option("--runner", "runners", multiple=True, metavar="RUNTIME=PATH", help="arm64 runner binary for --device "
              "adb: executorch=path/to/executor_runner, litert=path/to/benchmark_model (or set in the target file).")
@click.option("--threads", type=int, help="Intra-op threads for every runtime (default: the target's, 1 on x86-cpu).")
@click.option("--runs", type=int, help="Timed runs per artifact after warm-up (default: the target's, >= 50).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory "
              "(default build/<model>/<target>).")
@click.option("--auto", is_flag=True, help="Search the compression for the budgets: recipes chosen by the model's "
              "family, each built, verified and measured for real, walked from the measured shortfall until one "
              "meets every budget (exit 3 with the closest when none does); search.json and recipe.yaml in --out.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Where finished builds are "
              "cached by content hash (default: $EDGEPACK_CACHE, else ~/.cache/edgepack). --auto always uses the "
              "cache; a plain build uses it when this is given.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the build cache.")
@click.option("--executor", default="local", show_default=True, metavar="local|ray|ray:ADDRESS",
              help="Where --auto builds its candidates: in this process one after another, or as Ray tasks side by "
                   "side (ray: a local Ray instance; ray:ADDRESS: a running cluster). Measurements on one host "
                   "still run one at a time.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json on stdout instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress on stderr (results and warnings are still printed).")
def command(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str], task: str,
            target: str, parity_floor: Optional[str],
            runtimes: tuple[str, ...], precision: Optional[str], latency_stat: Optional[str],
            require_full_delegation: bool, allow_partial: bool, qat_epochs: Optional[int], robustness: bool,
            bundle: Optional[bool], calibration: Optional[str], calibration_samples: Optional[int],
            eval_data: Optional[str], device: Optional[str], runners: tuple[str, ...], threads: Optional[int],
            runs: Optional[int], out: Optional[Path], auto: bool, cache_dir: Optional[Path], no_cache: bool,
            executor: str, as_json: bool, quiet: bool, latency_tolerance: Optional[str], **options: Any) -> None:
    """Compress, export, quantize, verify, measure and budget-gate a model for a target."""
    from edgepack import ci
    from edgepack.cli.output import Output
    from edgepack.config import load_target
    from edgepack.plan import BuildRequest, plan

    target_file = load_target(target)
    runtime_list = tuple(r.strip() for item in runtimes for r in item.split(",") if r.strip()) or None
    if runtimes and runtime_list is None:
        raise UsageError("--runtime is empty; name a runtime (see `edgepack targets`) or all")
    request = BuildRequest(
        model=model_request(model_spec, factory, trust_checkpoint, input_shape, task=task), target=target,
        runtimes=runtime_list, precision=precision, calibration=calibration,
        calibration_samples=calibration_samples, eval=eval_data, train=options.get("train"), threads=threads,
        runs=runs, out=out, budgets=tuple(budgets_given(options, latency_stat or target_file.latency_stat)),
        passes=pass_configs(options), require_full_delegation=require_full_delegation, bundle=bundle,
        device=device, runners=runner_pairs(runners), qat_epochs=qat_epochs, robustness=robustness,
        allow_partial=allow_partial, parity_floor=parity_floor, latency_tolerance=latency_tolerance,
        sensitivity=options.get("sensitivity", False), rescue=options.get("rescue", True),
        rescue_time_limit_s=options.get("rescue_time_limit"),
    )
    build_plan = plan(request, target_file)  # every model-free check, before torch is imported
    ci_plan = ci.prepare(ci_request(options), target_file.name)
    if auto and request.passes:
        raise UsageError("--auto chooses the compression itself; drop the pass options or --recipe (or drop --auto)")
    if auto and ci_plan.baseline is not None:
        raise UsageError("--auto with --baseline: judge the regression afterwards with `edgepack check REPORT.json "
                         "--baseline BASE.json`")
    if no_cache and cache_dir is not None:
        raise UsageError("--no-cache and --cache-dir contradict each other; give one")
    if executor != "local" and not auto:
        raise UsageError(f"--executor {executor} runs the candidates of --auto; add --auto or drop it")
    from edgepack.cache import BuildCache

    cache = None if no_cache or not (auto or cache_dir) else BuildCache.open(cache_dir)

    output = Output(quiet)
    search = None
    if auto or cache is not None:
        from edgepack.search import Search

        from edgepack.executors import make_executor

        searcher = Search(request, target_file, cache, output, make_executor(executor))
        report, search = searcher.run(auto=auto)
    else:
        from edgepack.pipeline import execute

        report = execute(build_plan, output, more_verdicts=lambda built: ci.regression_verdicts(built, ci_plan))
    ci.write_outputs(report, report.verdicts, ci_plan, "build", output.warn)
    if search is not None and not as_json:
        from edgepack.search import summary_lines

        for line in summary_lines(search, auto):
            output.result(line)
    print_report(report, as_json, output)


def runner_pairs(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        runtime, sep, path = value.partition("=")
        if not sep or not runtime or not path:
            raise UsageError(f"--runner {value!r}: write RUNTIME=PATH, e.g. executorch=./executor_runner")
        pairs.append((runtime, path))
    return tuple(pairs)


def print_report(report: Any, as_json: bool, output: Any) -> None:
    from edgepack.gates import REGRESSION_SUFFIX, describe_verdict
    from edgepack.report.render import artifact_rows, failures, fastest_within_budgets, rescue_lines, verdict_line

    if as_json:
        output.json(report.to_json())
    else:
        output.table(f"{report.model.model_name} → {report.target} ({report.out_dir})", artifact_rows(report))
        # the figures behind latency and regression verdicts (interval, baseline, ratio, p-value), pass or fail
        for v in report.verdicts:
            if v.interval is not None or v.metric.endswith(REGRESSION_SUFFIX):
                output.result(describe_verdict(v))
        fastest = fastest_within_budgets(report)
        if fastest and len(report.shipping) > 1:
            output.result(fastest)
        if report.selection:
            output.result(report.selection[-1])
        for line in rescue_lines(report):
            output.result(line)
    for warning in report.warnings:
        output.failure(f"warning: {warning}")
    for line in failures(report):
        output.failure(f"budget failed: {line}")
    if not as_json:
        output.result(verdict_line(report))
    if not report.passed:
        raise click.exceptions.Exit(3)
