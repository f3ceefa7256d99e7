"""Options several commands share: the model, budgets, and the compression passes (generated from the pass registry,
so a new pass gets its `--<kind>` option without an edit here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import click

from edgepack.errors import EXIT_CODES, UsageError

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
LATENCY_STAT_CHOICE = click.Choice(["p50", "p90", "p99", "mean"])


def apply_options(fn: Callable, options: list[Callable]) -> Callable:
    """Decorate `fn` with click options, listed in the order --help shows them."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_options(fn: Callable) -> Callable:
    return apply_options(fn, [
        click.option("--model", "model_spec", required=True, metavar="SPEC",
                     help="zoo:NAME, path/to/file.py:callable, package.module:callable, a torch.export .pt2, "
                          "or a checkpoint .pt with --factory."),
        click.option("--factory", metavar="SPEC", help="file.py:callable building the architecture for a state-dict "
                                                      "checkpoint (loaded with weights_only=True)."),
        click.option("--trust-checkpoint", is_flag=True, help="Unpickle a whole Module from the checkpoint "
                                                              "(runs code from the file: only for files you trust)."),
        click.option("--input-shape", metavar="SHAPES", help="Example input shape(s), batch included: 1x3x224x224; "
                                                             "a dtype: 1x128:int64; several inputs by forward "
                                                             "parameter: input_ids=1x128:int64,attention_mask=1x128:"
                                                             "int64. Default: what the model or zoo declares."),
        click.option("--task", type=click.Choice(["auto", "classification", "regression", "segmentation",
                                                  "embedding"]), default="auto", show_default=True,
                     help="What the output is; it picks the parity figure (class agreement, per-pixel agreement, "
                          "relative error, cosine) and the accuracy metric. auto: from the output's shape."),
    ])


def budget_options(fn: Callable) -> Callable:
    return apply_options(fn, [
        click.option("--budget", "size_budget", metavar="SIZE", help=BUDGET_HELP["size"]),
        click.option("--max-latency", metavar="TIME", help=BUDGET_HELP["latency"]),
        click.option("--max-memory", metavar="SIZE", help=BUDGET_HELP["memory"]),
        click.option("--max-accuracy-drop", metavar="PP", help=BUDGET_HELP["accuracy"]),
    ])


def rescue_options(fn: Callable) -> Callable:
    """Per-layer int8 sensitivity and the mixed-precision rescue (`edgepack build`)."""
    return apply_options(fn, [
        click.option("--sensitivity", is_flag=True, help="Rank the int8 artifact's Conv/Linear layers by what int8 "
                     "costs each (the metric with that layer alone kept in float, measured through the runtime) and "
                     "report it, even within budget."),
        click.option("--rescue/--no-rescue", "rescue", default=True, show_default=True, help="When the int8 "
                     "artifact misses --max-accuracy-drop or the parity floor, keep its most sensitive layers in "
                     "float, greedily (at most half of them), until it holds, and ship that artifact instead."),
        click.option("--rescue-time-limit", "rescue_time_limit", type=float, metavar="SECONDS", help="No new "
                     "sensitivity or rescue build starts after this many seconds (default 300): each one exports "
                     "and judges an artifact, a minute apiece for a mid-size model on ExecuTorch."),
    ])


def budgets_given(kw: dict[str, Any], latency_stat: str) -> list[Any]:
    from edgepack.budgets import optional_budget

    return (optional_budget("size", kw.get("size_budget")) + optional_budget("latency", kw.get("max_latency"),
                                                                            latency_stat)
            + optional_budget("memory", kw.get("max_memory"))
            + optional_budget("accuracy_drop", kw.get("max_accuracy_drop")))


def _pass_param(kind: str) -> str:
    return "pass_" + kind.replace("-", "_")


def compression_options(fn: Callable) -> Callable:
    from edgepack.compress import registered_passes

    options = [click.option(f"--{cls.kind}", _pass_param(cls.kind), metavar=cls.metavar, help=cls.help)
               for cls in registered_passes()]
    options += [
        click.option("--allow-sparse", is_flag=True, help="Allow --sparse."),
        click.option("--train", metavar="DATA", help="Labelled training data for fine-tuning and data-driven passes: "
                     ".npz, image folder, or zoo (default for zoo models: their training split)."),
        click.option("--recipe", type=click.Path(dir_okay=False), help="YAML file listing passes in order "
                     "(replaces the pass options above)."),
    ]
    return apply_options(fn, options)


def pass_configs(kw: dict[str, Any]) -> tuple[Any, ...]:
    """Compression options -> pass configs, in the registry's order (or the recipe's)."""
    from edgepack.compress import parse_pass, parse_recipe, registered_passes

    given = [(cls.kind, kw.get(_pass_param(cls.kind))) for cls in registered_passes()]
    given = [(kind, value) for kind, value in given if value is not None]
    allow_sparse = bool(kw.get("allow_sparse"))
    if kw.get("recipe"):
        if given:
            raise UsageError(f"--recipe replaces the pass options; drop --{given[0][0]} or put it in the recipe")
        return tuple(parse_recipe(Path(kw["recipe"]), allow_sparse=allow_sparse))
    return tuple(parse_pass(kind, str(value), allow_sparse=allow_sparse) for kind, value in given)


def model_request(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str],
                  option: str = "--model", task: str = "auto") -> Any:
    """The model options as a ModelRequest, checked as far as they can be without torch (files, forms, sizes)."""
    from edgepack.models.request import ModelRequest, check_model_request, parse_input_specs

    inputs = parse_input_specs(input_shape) if input_shape is not None else ()
    request = ModelRequest(model_spec, inputs, factory, trust_checkpoint, task)
    check_model_request(request, option)
    return request
