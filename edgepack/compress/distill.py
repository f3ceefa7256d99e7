"""Distillation as a compression pass: the model so far teaches a narrower copy of itself (see recovery/distill.py)."""

from __future__ import annotations

from torch import nn

from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import DistillPassConfig
from edgepack.compress.finetune import require_training_data


def distill_pass(module: nn.Module, config: DistillPassConfig, ctx: PassContext) -> PassResult:
    from edgepack.compress.distillation import DistillConfig, distill
    from edgepack.compress.student import derive_student

    train = require_training_data(ctx, "distill")
    student = derive_student(module, ctx.example_inputs, config.width)
    settings = DistillConfig(temperature=config.temperature, alpha=config.alpha, epochs=config.epochs, lr=config.lr,
                             seed=config.seed, max_stage_ratio=config.max_stage_ratio)
    ctx.say(f"distill: width {config.width}, {config.epochs} epoch(s) per stage")
    student, record = distill(module, student, train, settings, ctx.eval)
    notes = [f"teacher: the model before this pass; student: every hidden layer at width {config.width}",
             *record.notes]
    return PassResult(student, changes=list(record.changes), notes=notes)
