"""`edgepack compress`: apply compression passes to a model and save it as a .pt2 with its pass history."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from edgepack.cli.options import EXIT_CODE_HELP, compression_options, model_options, model_request, pass_configs
from edgepack.errors import UsageError


@click.command("compress", epilog=EXIT_CODE_HELP)
@model_options
@compression_options
@click.option("--eval", "eval_data", metavar="DATA", help="Labelled data: eager accuracy before and after each pass.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the compressed model as a torch.export program (.pt2); its pass records go to "
                   "the same name with .json.")
@click.option("--json", "as_json", is_flag=True, help="Print the provenance with every pass record as JSON.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def command(model_spec: str, factory: Optional[str], trust_checkpoint: bool, input_shape: Optional[str], task: str,
            eval_data: Optional[str], out: Path, as_json: bool, quiet: bool, **options: Any) -> None:
    """Apply compression passes to a model and save it as a .pt2 (feed it to `edgepack build --model`)."""
    from edgepack.cli.output import Output
    from edgepack.plan import check_writable

    if out.suffix != ".pt2":
        raise UsageError(f"--out {out}: the compressed model is written as a torch.export program; name it *.pt2")
    passes = pass_configs(options)
    if not passes:
        from edgepack.compress import registered_passes

        kinds = ", ".join(f"--{cls.kind}" for cls in registered_passes())
        raise UsageError(f"no compression pass given; use {kinds} or --recipe")
    request = model_request(model_spec, factory, trust_checkpoint, input_shape, task=task)
    check_writable(out.parent, "--out")

    from edgepack.pipeline import compress_model

    output = Output(quiet)
    provenance = compress_model(request, passes, options.get("train"), eval_data, out, output)
    if as_json:
        output.json(provenance.to_dict())
        return
    for p in provenance.passes:
        acc = "" if p.accuracy_after is None else (f", accuracy {(p.accuracy_before or 0) * 100:.2f}% -> "
                                                   f"{p.accuracy_after * 100:.2f}%")
        output.result(f"{p.name}: params {p.params_before:,} -> {p.params_after:,}, MACs {p.macs_before:,} -> "
                      f"{p.macs_after:,}{acc} ({p.seconds:.1f} s)")
        for skipped in p.skipped:
            output.result(f"  skipped {skipped.layer}: {skipped.reason}")
    output.result(f"wrote {out} and {out.with_suffix('.json')}")
