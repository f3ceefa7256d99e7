"""`edgepack inspect`: the model's architecture family with its evidence, a per-layer table, and with --target what
each of the target's runtimes does with the model at int8 (read from a real export)."""

from __future__ import annotations

from typing import Any, Optional

import click

from edgepack.cli.options import model_options, model_request

LAYER_ROWS = 40  # the terminal shows the heaviest layers; --json has them all


@click.command("inspect")
@model_options
@click.option("--target", "target_name", metavar="NAME|FILE",
              help="Also export the model at int8 with each runtime of this target, and report what each does with "
                   "it: operators not delegated (with the partitioner's reason), operators left in float, the share "
                   "of weights in 8 bits, or why the export failed.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help="Only these runtimes of the target (repeatable or comma-separated). Default: all it lists.")
@click.option("--calibration", metavar="DATA",
              help="Calibration data for the int8 exports (as for build). Default: the zoo model's training split, "
                   "else synthetic inputs that respect each input's dtype and range.")
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout instead of tables.")
@click.option("--quiet", is_flag=True, help="No progress on stderr; results still print.")
def command(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str], task: str,
            target_name: Optional[str], runtimes: tuple[str, ...], calibration: Optional[str], as_json: bool,
            quiet: bool) -> None:
    """Diagnose a model: architecture family, per-layer parameters, MACs and weight rank, and what each runtime of
    a target does with it at int8."""
    from edgepack.cli.output import Output
    from edgepack.config import load_target
    from edgepack.errors import UsageError
    from edgepack.plan import resolve_runtimes

    output = Output(quiet=quiet or as_json)
    request = model_request(model_spec, factory, trust_checkpoint, input_shape, task=task)
    target = load_target(target_name) if target_name else None
    names: list[str] = []
    if target is not None:
        asked = [n.strip() for value in runtimes for n in value.split(",") if n.strip()]
        names = resolve_runtimes(target, asked or ["all"])
    elif runtimes:
        raise UsageError("--runtime needs --target: runtimes are chosen among a target's")

    from edgepack.inspection import inspect_model, inspect_runtimes
    from edgepack.loading import load_build_data, load_bundle
    from edgepack.plan import DataPlan

    with output.stage("loading model"):
        model = load_bundle(request)
    with output.stage("layers and architecture"):
        inspection = inspect_model(model)
    if target is not None:
        warnings: list[str] = []
        from edgepack.inspection import INSPECT_CALIBRATION_SAMPLES

        plan = DataPlan(calibration=calibration, calibration_samples=INSPECT_CALIBRATION_SAMPLES, eval=None,
                        train=None, needs_training=False)
        with output.stage("loading calibration data"):
            data = load_build_data(plan, model, True, warnings)
        for warning in warnings:
            output.warn(warning)
        with output.stage(f"exporting with {', '.join(names)}"):
            inspection = inspect_runtimes(inspection, model, target, names, data.calibration, output.say)
    if as_json:
        output.json(inspection.to_dict())
        return
    _print(inspection, output)


def _print(inspection: Any, output: Any) -> None:
    output.result(f"{inspection.model}: {inspection.params:,} parameters, {inspection.macs:,} MACs")
    output.result(f"family: {inspection.family}")
    for line in inspection.evidence:
        output.result(f"  - {line}")
    layers = sorted(inspection.layers, key=lambda layer: -layer.macs)[:LAYER_ROWS]
    order = {layer.name: i for i, layer in enumerate(inspection.layers)}
    rows = [{"layer": layer.name, "type": layer.kind, "params": f"{layer.params:,}",
             "share of params": f"{layer.param_share:.1%}", "MACs": f"{layer.macs:,}",
             "share of MACs": f"{layer.mac_share:.1%}",
             "rank (90 % / 99 % energy)": (f"{layer.rank} ({layer.rank_90} / {layer.rank_99})"
                                           if layer.rank is not None else "—")}
            for layer in sorted(layers, key=lambda layer: order[layer.name])]
    more = len(inspection.layers) - len(layers)
    title = f"layers (the {LAYER_ROWS} heaviest by MACs; --json lists all {len(inspection.layers)})" if more \
        else "layers"
    output.table(title, rows)
    for finding in inspection.runtimes:
        _print_runtime(finding, output)


def _print_runtime(finding: Any, output: Any) -> None:
    if finding.status != "built":
        output.result(f"{finding.runtime}: {finding.status}: {finding.reason}")
        return
    share = "" if finding.int8_weight_share is None else f", {finding.int8_weight_share:.0%} of weights in 8 bits"
    output.result(f"{finding.runtime}: int8 built ({finding.scheme}{share})")
    if finding.delegation:
        output.result(f"  delegated: {finding.delegation}")
    for op in finding.not_delegated:
        output.result(f"  not delegated: {op.op} x{op.count}: {op.reason}")
    if finding.float_ops:
        output.result("  left in float: " + ", ".join(f"{o.op} x{o.count}" for o in finding.float_ops))
    for note in finding.notes:
        output.result(f"  note: {note}")
