"""`edgepack distill`: a teacher teaches a student (derived from it by width, or any model spec), through the same
distillation pass `build --distill` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgepack.cli.options import EXIT_CODE_HELP, model_request
from edgepack.errors import UsageError


@click.command("distill", epilog=EXIT_CODE_HELP)
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
def command(teacher_spec: str, student_text: str, input_shape: Optional[str], train: Optional[str],
            eval_data: Optional[str], epochs: int, temperature: float, alpha: float, lr: float,
            features: Optional[str], max_stage_ratio: str, out: Path, quiet: bool) -> None:
    """Distill a teacher into a smaller student (logit and feature KD, progressive stages)."""
    from edgepack.cli.output import Output
    from edgepack.compress import parse_options, parse_student
    from edgepack.plan import check_writable

    if out.suffix != ".pt2":
        raise UsageError(f"--out {out}: the student is written as a torch.export program; name it *.pt2")
    values = {**parse_student(student_text.strip()), "epochs": epochs, "temperature": temperature, "alpha": alpha,
              "lr": lr, "max_stage_ratio": max_stage_ratio}
    if features is not None:
        values["feature_pairs"] = features
    config = parse_options("distill", values, where="edgepack distill")
    request = model_request(teacher_spec, None, False, input_shape, option="--teacher")
    check_writable(out.parent, "--out")

    from edgepack.pipeline import compress_model

    output = Output(quiet)
    provenance = compress_model(request, [config], train, eval_data, out, output)
    record = provenance.passes[-1]
    for stage in record.stages:
        acc = "" if stage.student_top1 is None else f", student top-1 {stage.student_top1 * 100:.2f}%"
        output.result(f"stage {stage.stage}: {stage.teacher_params:,} -> {stage.student_params:,} params{acc}")
    output.result(f"distill: params {record.params_before:,} -> {record.params_after:,}; wrote {out} and "
                  f"{out.with_suffix('.json')}")
