"""The command line. One small function per command; heavy imports happen inside commands so `--help` is instant.

This is the only module that prints.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import click

from edgepack import __version__
from edgepack.errors import EXIT_CODES, EdgepackError, UsageError, one_line

EXIT_CODE_HELP = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."
BUDGET_HELP = {
    "size": "Size budget: bytes of each shipped artifact file, e.g. 100MB, 512KiB.",
    "latency": "Latency budget on the measured latency statistic (--latency-stat, default from the target: p90), "
               "e.g. 20ms, 800us.",
    "memory": "Memory budget: peak RSS of the measuring process over a baseline process that loads no model, "
              "e.g. 200MB.",
    "accuracy": "Accuracy budget: top-1 drop of each shipped artifact against the model as given, in eager PyTorch "
                "(before any compression pass), in percentage points, e.g. 1pp. Needs --eval.",
}


class EdgepackGroup(click.Group):
    """Turns edgepack's errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgepackError as exc:
            click.echo(f"edgepack: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("edgepack: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # an internal failure: one line, exit 1; the traceback on request
            if os.environ.get("EDGEPACK_DEBUG"):
                raise
            click.echo(f"edgepack: internal error: {type(exc).__name__}: {one_line(exc)} "
                       f"(set EDGEPACK_DEBUG=1 for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=EdgepackGroup, epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli() -> None:
    """edgepack: compress, export, quantize, verify, measure and budget-gate PyTorch models for edge targets."""


# ---- shared options -------------------------------------------------------------------------------------------------
def model_options(fn: Callable) -> Callable:
    options = [
        click.option("--model", "model_spec", required=True, metavar="SPEC",
                     help="zoo:NAME, path/to/file.py:callable, package.module:callable, a torch.export .pt2, "
                          "or a checkpoint .pt with --factory."),
        click.option("--factory", metavar="SPEC", help="file.py:callable building the architecture for a state-dict "
                                                      "checkpoint (loaded with weights_only=True)."),
        click.option("--trust-checkpoint", is_flag=True, help="Unpickle a whole Module from the checkpoint "
                                                              "(runs code from the file: only for files you trust)."),
        click.option("--input-shape", metavar="NxCxHxW", help="Example input shape, e.g. 1x3x224x224 (batch "
                                                              "included). Default: what the model or zoo declares."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def compression_options(fn: Callable) -> Callable:
    options = [
        click.option("--prune", metavar="RATIO|k=v,...", help="Structured channel pruning through torch-pruning, "
                     "e.g. 0.5 or ratio=0.5,importance=l2,round_to=8,steps=3."),
        click.option("--sparse", metavar="RATIO|k=v,...", help="Unstructured magnitude pruning (needs --allow-sparse;"
                     " dense runtimes get no speed-up from it)."),
        click.option("--allow-sparse", is_flag=True, help="Allow --sparse."),
        click.option("--lowrank", metavar="k=v,...", help="Low-rank SVD of Linear/Conv2d: energy=0.9, ratio=0.5 or "
                     "rank=16; layers=NAME,..."),
        click.option("--ndlinear", metavar="k=v,...", help="Replace Linear layers on multi-axis states with a "
                     "factorized NdLinear layer (Kronecker init)."),
        click.option("--drop-layers", metavar="INDICES|middle=N", help="Drop transformer blocks, e.g. 1,2 or middle=2."),
        click.option("--distill", metavar="width=W[,k=v]", help="Distill the model into a copy with every hidden "
                     "layer W times as wide: width=0.5,epochs=20,temperature=4,alpha=0.9,max_stage_ratio=3 "
                     "(progressive stages when the compression asks for more)."),
        click.option("--finetune", type=int, metavar="EPOCHS", help="Fine-tune after the passes (on --train data)."),
        click.option("--train", metavar="DATA", help="Labelled training data for fine-tuning and data-driven passes: "
                     ".npz, image folder, or zoo (default for zoo models: their training split)."),
        click.option("--recipe", type=click.Path(dir_okay=False), help="YAML file listing passes in order "
                     "(replaces the pass options above)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _model_request(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str]) -> Any:
    from edgepack.config import parse_input_shape
    from edgepack.models.loader import ModelRequest

    shape = parse_input_shape(input_shape) if input_shape else None
    return ModelRequest(model_spec, shape, factory, trust_checkpoint)


def _pass_configs(kw: dict[str, Any]) -> tuple[Any, ...]:
    """Compression options -> pass configs, in the fixed order prune, sparse, lowrank, ndlinear, drop, distill,
    finetune."""
    keys = ("prune", "sparse", "lowrank", "ndlinear", "drop_layers", "distill", "finetune")
    if not kw.get("recipe") and not any(kw.get(k) is not None for k in keys):
        return ()
    from edgepack.compress import parse_pass, parse_recipe

    if kw.get("recipe"):
        return tuple(parse_recipe(Path(kw["recipe"]), allow_sparse=kw.get("allow_sparse", False)))
    configs = []
    for key in keys:
        value = kw.get(key)
        if value is None:
            continue
        configs.append(parse_pass(key.replace("_", "-"), str(value), allow_sparse=kw.get("allow_sparse", False)))
    return tuple(configs)


class RichProgress:
    """Stage lines with elapsed time on stderr."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        t0 = time.perf_counter()
        with self.console.status(f"{text} …"):
            yield
        self.console.print(f"[green]✓[/] {text} [dim]({time.perf_counter() - t0:.1f} s, "
                           f"total {time.perf_counter() - self.start:.1f} s)[/]")

    def warn(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/] {text}")


# ---- build ----------------------------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODE_HELP)
@model_options
@click.option("--target", default="x86-cpu", show_default=True, metavar="NAME|FILE.yaml",
              help="A bundled target (see `edgepack targets`) or a path to your own target file.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help="Runtime(s) to build for: onnxruntime, executorch, litert, or all. Default: the target's.")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), help="Shipped precision (default: the target's, "
              "int8). The fp32 artifact is always kept for comparison.")
@click.option("--budget", "size_budget", metavar="SIZE", help=BUDGET_HELP["size"])
@click.option("--max-latency", metavar="TIME", help=BUDGET_HELP["latency"])
@click.option("--latency-stat", type=click.Choice(["p50", "p90", "p99", "mean"]), help="Statistic --max-latency "
              "checks (default: the target's, p90).")
@click.option("--max-memory", metavar="SIZE", help=BUDGET_HELP["memory"])
@click.option("--max-accuracy-drop", metavar="PP", help=BUDGET_HELP["accuracy"])
@click.option("--require-full-delegation", is_flag=True, help="Fail (exit 3) if any op of an ExecuTorch artifact "
              "stays outside the XNNPACK delegate.")
@click.option("--qat", "qat_epochs", type=int, metavar="EPOCHS", help="Quantization-aware training (PT2E) for the "
              "ONNX Runtime and ExecuTorch int8 artifacts, on --train data; the post-training int8 artifact is kept "
              "beside it for comparison.")
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
@click.option("--device", metavar="host|adb|adb:SERIAL", help="Where to measure: this host (default), or an "
              "Android phone over adb (needs --runner).")
@click.option("--runner", "runners", multiple=True, metavar="RUNTIME=PATH", help="arm64 runner binary for --device "
              "adb: executorch=path/to/executor_runner, litert=path/to/benchmark_model (or set in the target file).")
@click.option("--threads", type=int, help="Intra-op threads for every runtime (default: the target's, 1 on x86-cpu).")
@click.option("--runs", type=int, help="Timed runs per artifact after warm-up (default: the target's, >= 50).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory "
              "(default build/<model>/<target>).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json on stdout instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def build(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str], target: str,
          runtimes: tuple[str, ...], precision: Optional[str], size_budget: Optional[str], max_latency: Optional[str],
          latency_stat: Optional[str], max_memory: Optional[str], max_accuracy_drop: Optional[str],
          require_full_delegation: bool, qat_epochs: Optional[int], robustness: bool, bundle: Optional[bool],
          calibration: Optional[str], calibration_samples: Optional[int], eval_data: Optional[str],
          device: Optional[str], runners: tuple[str, ...], threads: Optional[int], runs: Optional[int],
          out: Optional[Path], as_json: bool, quiet: bool, **compression: Any) -> None:
    """Compress, export, quantize, verify, measure and budget-gate a model for a target."""
    from edgepack.config import load_target, optional_budget
    from edgepack.pipeline import BuildRequest, build as run_build

    stat = latency_stat or load_target(target).latency_stat
    budgets = (optional_budget("size", size_budget) + optional_budget("latency", max_latency, stat)
               + optional_budget("memory", max_memory) + optional_budget("accuracy_drop", max_accuracy_drop))
    runtime_list = tuple(r.strip() for item in runtimes for r in item.split(",") if r.strip()) or None
    request = BuildRequest(
        model=_model_request(model_spec, factory, trust_checkpoint, input_shape), target=target,
        runtimes=runtime_list, precision=precision, calibration=calibration,
        calibration_samples=calibration_samples, eval=eval_data,
        train=compression.get("train"), threads=threads, runs=runs, out=out, budgets=tuple(budgets),
        passes=_pass_configs(compression), require_full_delegation=require_full_delegation, bundle=bundle,
        device=device, runners=tuple(_runner_pairs(runners)), qat_epochs=qat_epochs,
        robustness=robustness,
    )
    report = run_build(request, RichProgress(quiet))
    _print_report(report, as_json, quiet)


def _runner_pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        runtime, sep, path = value.partition("=")
        if not sep or not runtime or not path:
            raise UsageError(f"--runner {value!r}: write RUNTIME=PATH, e.g. executorch=./executor_runner")
        pairs.append((runtime, path))
    return pairs


def _print_report(report: Any, as_json: bool, quiet: bool) -> None:
    from edgepack.report.render import artifact_rows, failures, fastest_within_budgets

    if as_json:
        click.echo(report.to_json())
    elif not quiet:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{report.model.model_name} → {report.target} ({report.out_dir})")
        rows = artifact_rows(report)
        for header in (rows[0] if rows else {}):
            table.add_column(header)
        for row in rows:
            table.add_row(*row.values())
        # piped output gets a fixed width so the table is not squeezed into 80 columns
        Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(table)
        fastest = fastest_within_budgets(report)
        if fastest and len(report.shipping) > 1:
            click.echo(fastest)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
    for line in failures(report):
        click.echo(f"budget failed: {line}", err=True)
    if not report.passed:
        raise click.exceptions.Exit(3)


# ---- compress -------------------------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODE_HELP)
@model_options
@compression_options
@click.option("--eval", "eval_data", metavar="DATA", help="Labelled data: eager accuracy before and after each pass.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the compressed model as a torch.export program (.pt2); its pass records go to "
                   "the same name with .json.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass records as JSON.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def compress(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str],
             eval_data: Optional[str], out: Path, as_json: bool, quiet: bool, **compression: Any) -> None:
    """Apply compression passes to a model and save it as a .pt2 (feed it to `edgepack build --model`)."""
    import json

    from edgepack.compress_command import compress_model

    if out.suffix != ".pt2":
        raise UsageError(f"--out {out}: the compressed model is written as a torch.export program; name it *.pt2")
    passes = _pass_configs(compression)
    if not passes:
        raise UsageError("no compression pass given; use --prune, --sparse, --lowrank, --ndlinear, --drop-layers, "
                         "--distill, --finetune or --recipe")
    progress = RichProgress(quiet)
    provenance = compress_model(_model_request(model_spec, factory, trust_checkpoint, input_shape), passes,
                                compression.get("train"), eval_data, out, progress)
    if as_json:
        click.echo(json.dumps(provenance.to_dict(), indent=2))
    else:
        for p in provenance.passes:
            acc = "" if p.accuracy_after is None else (f", accuracy {p.accuracy_before * 100:.2f}% -> "
                                                       f"{p.accuracy_after * 100:.2f}%")
            click.echo(f"{p.name}: params {p.params_before:,} -> {p.params_after:,}, MACs {p.macs_before:,} -> "
                       f"{p.macs_after:,}{acc} ({p.seconds:.1f} s)")
            for skipped in p.skipped:
                click.echo(f"  skipped {skipped.get('layer', '?')}: {skipped.get('reason', '')}")
        click.echo(f"wrote {out} and {out.with_suffix('.json')}")


# ---- distill --------------------------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODE_HELP)
@click.option("--teacher", "teacher_spec", required=True, metavar="SPEC", help="The trained model that teaches "
              "(same forms as --model).")
@click.option("--student", "student_text", required=True, metavar="width=W|SPEC", help="width=0.5 derives a student "
              "from the teacher with every hidden layer half as wide (torch-pruning); or a model spec.")
@click.option("--input-shape", metavar="NxCxHxW", help="Example input shape when the teacher does not say.")
@click.option("--train", metavar="DATA", help="Labelled training data (default for zoo teachers: their split).")
@click.option("--eval", "eval_data", metavar="DATA", help="Labelled data: teacher and student accuracy per stage.")
@click.option("--epochs", type=int, default=20, show_default=True, help="Epochs per stage.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softmax temperature T (the soft "
              "term is scaled by T^2).")
@click.option("--alpha", type=float, default=0.9, show_default=True, help="Weight of the soft-target term; 1-alpha "
              "goes to cross-entropy on the labels.")
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--features", metavar="T:S[,T:S]", help="Feature distillation between named layers (teacher:student), "
              "through a learned adapter.")
@click.option("--max-stage-ratio", default="3", show_default=True, help="Most parameters a stage may remove "
              "(teacher/student); more asks for progressive stages. 'none' for one stage.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The student as a .pt2 "
              "(its provenance with every stage goes to the same name with .json).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def distill(teacher_spec: str, student_text: str, input_shape: Optional[str], train: Optional[str],
            eval_data: Optional[str], epochs: int, temperature: float, alpha: float, lr: float,
            features: Optional[str], max_stage_ratio: str, out: Path, quiet: bool) -> None:
    """Distill a teacher into a smaller student (logit and feature KD, progressive stages)."""
    from edgepack.distill_command import distill_model

    if out.suffix != ".pt2":
        raise UsageError(f"--out {out}: the student is written as a torch.export program; name it *.pt2")
    options = {"epochs": str(epochs), "temperature": str(temperature), "alpha": str(alpha), "lr": str(lr),
               "max_stage_ratio": max_stage_ratio}
    if features:
        options["feature_pairs"] = features
    provenance = distill_model(_model_request(teacher_spec, None, False, input_shape), student_text, options, train,
                               eval_data, out, RichProgress(quiet))
    record = provenance.passes[-1]
    for stage in record.changes:
        acc = stage.get("student_top1")
        params = f"{stage.get('teacher_params', 0):,} -> {stage.get('student_params', 0):,} params"
        click.echo(f"stage {stage.get('stage')}: {params}" + ("" if acc is None else f", student top-1 {acc * 100:.2f}%"))
    click.echo(f"distill: params {record.params_before:,} -> {record.params_after:,}; wrote {out} and "
               f"{out.with_suffix('.json')}")


# ---- targets --------------------------------------------------------------------------------------------------------
@cli.command()
def targets() -> None:
    """List the bundled targets and whether each runtime can run on this machine."""
    from edgepack.config import bundled_target_files, parse_target
    from edgepack.runtimes import get_runtime

    for name, path in sorted(bundled_target_files().items()):
        target = parse_target(path)
        click.echo(f"{target.name}: {target.description}")
        click.echo(f"  precision {target.precision}, {target.threads} thread(s), default runtime(s): "
                   f"{', '.join(target.default_runtimes)}")
        for settings in target.runtimes:
            missing = get_runtime(settings.name).missing()
            state = "ready" if not missing else "unavailable: " + "; ".join(missing)
            click.echo(f"  - {settings.name}: {state}")
    click.echo("Use --target NAME, or --target path/to/board.yaml for your own target file.")


# ---- check ----------------------------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("report_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--budget", "size_budget", metavar="SIZE", help=BUDGET_HELP["size"])
@click.option("--max-latency", metavar="TIME", help=BUDGET_HELP["latency"])
@click.option("--latency-stat", type=click.Choice(["p50", "p90", "p99", "mean"]), default="p90", show_default=True)
@click.option("--max-memory", metavar="SIZE", help=BUDGET_HELP["memory"])
@click.option("--max-accuracy-drop", metavar="PP", help=BUDGET_HELP["accuracy"])
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
def check(report_file: Path, size_budget: Optional[str], max_latency: Optional[str], latency_stat: str,
          max_memory: Optional[str], max_accuracy_drop: Optional[str], as_json: bool) -> None:
    """Re-judge a saved report.json against budgets without re-running anything.

    Budgets given here replace the saved ones of the same kind; without any, the saved budgets are re-checked.
    """
    import json

    from edgepack.config import merge_budgets, optional_budget
    from edgepack.gates import describe_failure, format_value, judge
    from edgepack.records import Report

    if not report_file.is_file():
        raise UsageError(f"{report_file}: no such report; pass the report.json that `edgepack build` wrote")
    try:
        report = Report.from_json(report_file.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{report_file}: not an edgepack report.json ({one_line(exc)})") from None
    given = (optional_budget("size", size_budget) + optional_budget("latency", max_latency, latency_stat)
             + optional_budget("memory", max_memory) + optional_budget("accuracy_drop", max_accuracy_drop))
    budgets = merge_budgets(list(report.budgets), given)
    verdicts = judge(report, budgets)
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in verdicts], indent=2))
    else:
        for v in verdicts:
            mark = "pass" if v.passed else "FAIL"
            click.echo(f"{mark}  {v.budget} [{v.artifact}]: observed {format_value(v.observed, v.unit)}, "
                       f"limit {format_value(v.limit, v.unit)}")
        if not verdicts:
            click.echo("no budgets to check: pass --budget/--max-latency/--max-memory/--max-accuracy-drop")
    for v in verdicts:
        if not v.passed:
            click.echo(f"budget failed: {describe_failure(v)}", err=True)
    if not all(v.passed for v in verdicts):
        raise click.exceptions.Exit(3)


# ---- zoo ------------------------------------------------------------------------------------------------------------
@cli.command("zoo")
def zoo_list() -> None:
    """List the built-in models (use them as --model zoo:NAME)."""
    from edgepack.models import zoo

    for name in zoo.names():
        e = zoo.entry(name)
        shape = "x".join(map(str, e.input_shape))
        trained = f"trained on {e.dataset}" if e.weights else "random init"
        click.echo(f"zoo:{name:18s} input {shape:10s} {trained:18s} {e.description}")


def main() -> None:
    cli(prog_name="edgepack")


if __name__ == "__main__":
    main()
