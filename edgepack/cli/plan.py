"""`edgepack plan`: measure the plain build against the budgets, then propose the compression the model's family
calls for, each decision with its reason, as a recipe `edgepack build --recipe` runs unchanged."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import click

from edgepack.cli.options import LATENCY_STAT_CHOICE, budget_options, budgets_given, model_options, model_request


@click.command("plan")
@model_options
@click.option("--target", default="x86-cpu", show_default=True, metavar="NAME|FILE.yaml",
              help="A bundled target (see `edgepack targets`) or your own target file.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help="Runtime(s) of the target to plan for (default: the target's).")
@budget_options
@click.option("--latency-stat", type=LATENCY_STAT_CHOICE, help="Statistic --max-latency checks (default: the "
              "target's, p90).")
@click.option("--eval", "eval_data", metavar="DATA", help="Labelled data: accuracy budgets are judged on it.")
@click.option("--train", metavar="DATA", help="Training data the recipe's fine-tuning will use (a zoo model has its "
              "own split); without any, no fine-tuning is proposed.")
@click.option("--calibration", metavar="DATA", help="INT8 calibration data for the plain build (as for build).")
@click.option("--threads", type=int, help="Intra-op threads for the plain build's measurements.")
@click.option("--runs", type=int, help="Timed runs per artifact in the plain build.")
@click.option("--device", metavar="host|gpu[:N]|none", help="Where the plain build measures (as for build; none: "
              "size and accuracy only, e.g. for the cuda target without a GPU).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the recipe here (YAML); "
              "default: print it.")
@click.option("--json", "as_json", is_flag=True, help="Print family, evidence, decisions and recipe as JSON.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def command(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str], task: str,
            target: str, runtimes: tuple[str, ...], latency_stat: Optional[str], eval_data: Optional[str],
            train: Optional[str], calibration: Optional[str], threads: Optional[int], runs: Optional[int],
            device: Optional[str], out: Optional[Path], as_json: bool, quiet: bool, **options: Any) -> None:
    """Propose a compression recipe for budgets: the plain build is measured first, then each decision (from the
    model's architecture family, the target's runtimes and the budgets it misses) is printed with its reason."""
    from edgepack.cli.output import Output
    from edgepack.config import load_target
    from edgepack.errors import UsageError
    from edgepack.plan import BuildRequest, check_writable, plan

    target_file = load_target(target)
    budgets = tuple(budgets_given(options, latency_stat or target_file.latency_stat))
    if not budgets and not target_file.budgets:
        raise UsageError("plan needs a budget to plan for: --budget SIZE, --max-latency, --max-memory or "
                         "--max-accuracy-drop (or budgets: in the target file)")
    if out is not None:
        check_writable(out.parent if str(out.parent) else Path("."), "--out")
    runtime_list = tuple(r.strip() for item in runtimes for r in item.split(",") if r.strip()) or None
    output = Output(quiet=quiet or as_json)
    with tempfile.TemporaryDirectory(prefix="edgepack-plan-") as scratch:
        request = BuildRequest(model=model_request(model_spec, factory, trust_checkpoint, input_shape, task=task),
                               target=target, runtimes=runtime_list, calibration=calibration, eval=eval_data,
                               train=train, threads=threads, runs=runs, out=Path(scratch) / "plain",
                               budgets=budgets, bundle=False, device=device)
        build_plan = plan(request, target_file)  # every model-free check first

        from edgepack.inspection import inspect_model
        from edgepack.loading import load_bundle
        from edgepack.pipeline import execute
        from edgepack.strategy import propose

        with output.stage("loading model"):
            model = load_bundle(build_plan.model)
        with output.stage("layers and architecture"):
            inspection = inspect_model(model)
        output.say("the plain build, measured against the budgets:")
        baseline = execute(build_plan, output)
    names = [rt.name for rt in build_plan.runtimes]
    has_training_data = train is not None or (model.zoo_entry is not None and model.zoo_entry.dataset is not None)
    strategy = propose(model, inspection, baseline, names, has_training_data)
    text = _recipe_yaml(strategy, inspection, target_file.name)
    if out is not None:
        from edgepack.fileio import atomic_write_text

        atomic_write_text(out, text)
    if as_json:
        output.json({"model": inspection.model, "target": target_file.name, "family": strategy.family,
                     "evidence": list(inspection.evidence), "decisions": [d.to_dict() for d in strategy.decisions],
                     "recipe": strategy.recipe(), "recipe_file": str(out) if out else None})
        return
    output.result(f"{inspection.model} on {target_file.name}: {strategy.family}")
    for line in inspection.evidence:
        output.result(f"  - {line}")
    for decision in strategy.decisions:
        output.result(f"{decision.topic}: {decision.choice} — {decision.reason}")
    if out is not None:
        output.result(f"recipe written to {out}; run it with: edgepack build --model {model_spec} --target "
                      f"{target} --recipe {out} (with the same budgets) to see whether it meets them")
    else:
        output.result(text.rstrip())


def _recipe_yaml(strategy: Any, inspection: Any, target: str) -> str:
    from edgepack.compress import recipe_yaml

    return recipe_yaml(strategy.passes, [
        f"edgepack plan for {inspection.model} on {target} ({strategy.family})",
        *(f"{d.topic}: {d.choice} — {d.reason}" for d in strategy.decisions),
        "a proposal: `edgepack build --recipe THIS_FILE` with the same budgets shows whether it holds"])
