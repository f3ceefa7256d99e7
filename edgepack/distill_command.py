"""`edgepack distill`: a teacher teaches a student (derived from it by width, or any model spec)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional

from edgepack.compress_command import save_pt2
from edgepack.errors import UsageError
from edgepack.quiet import captured
from edgepack.records import Provenance


def distill_model(teacher_request: Any, student_text: str, options: Mapping[str, str], train_spec: Optional[str],
                  eval_spec: Optional[str], out: Path, progress: Any) -> Provenance:
    from edgepack import stages
    from edgepack.models.loader import count_params_and_macs
    from edgepack.pipeline import check_writable
    from edgepack.compress.distillation import DistillConfig, distill
    from edgepack.compress.student import make_student, parse_student

    check_writable(out.parent)
    config = DistillConfig.from_options(options)
    choice = parse_student(student_text)
    with progress.stage("loading teacher"):
        teacher, zoo_entry = stages.load(teacher_request)
    with progress.stage("loading data"):
        train, evaluation = stages.load_training_data(stages.DataResolver(teacher, zoo_entry), train_spec,
                                                      eval_spec, needs_training=True)
    if train is None:
        raise UsageError("distillation needs labelled training data: --train DATA (zoo models use their own split)")

    def load_spec(spec: str) -> Any:
        student_bundle, _ = stages.load(replace(teacher_request, spec=spec, factory=None))
        return student_bundle.module

    with progress.stage("building the student"), captured():
        student = make_student(choice, teacher.module, teacher.example_inputs, load_spec)
    with progress.stage(f"distilling ({config.epochs} epoch(s) per stage)"), captured():
        student, record = distill(teacher.module, student, train, config, evaluation)
    params, macs = count_params_and_macs(student, teacher.example_inputs)
    provenance = replace(teacher.provenance, params=params, macs=macs,
                         passes=teacher.provenance.passes + (record,))
    save_pt2(teacher.replace(module=student, provenance=provenance), out, progress)
    return provenance
