"""Distillation as a pass: the model so far teaches a student, derived from it by width or loaded from a model spec.

`edgepack distill` and `build --distill` both run this one config through apply_passes. The algorithm (logit and
feature KD, progressive stages through teacher assistants) is in distillation.py; students are derived in student.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.errors import UsageError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DistillConfig(PassConfig):
    """Knowledge distillation into a student: `width` derives it from the model (every hidden layer that many times
    as wide), `student` names a model spec to load instead; give exactly one.

    Logit KD with `temperature` and `alpha` (the weight of the soft-target term, scaled by T^2; 1 - alpha goes to
    cross-entropy on the labels), feature KD through learned adapters between `feature_pairs` (teacher layer,
    student layer) weighted by `feature_weight`, and progressive stages through teacher assistants of at most
    `max_stage_ratio` x fewer parameters each (None: one stage). Every stage trains for `epochs`.
    """

    kind: ClassVar[str] = "distill"
    primary: ClassVar[str | None] = "width"
    metavar: ClassVar[str] = "width=W|student=SPEC[,k=v]"
    help: ClassVar[str] = ("Distill the model into a copy with every hidden layer W times as wide (or into "
                           "student=SPEC): width=0.5,epochs=20,temperature=4,alpha=0.9,max_stage_ratio=3 "
                           "(progressive stages when the compression asks for more).")

    width: float | None = None
    student: str | None = None
    epochs: int = 20
    temperature: float = 4.0
    alpha: float = 0.9
    lr: float = 3e-3
    seed: int = 0
    batch_size: int = 64
    weight_decay: float = 1e-4
    feature_pairs: tuple[tuple[str, str], ...] = ()  # (teacher layer, student layer); text form t1:s1,t2:s2
    feature_weight: float = 1.0
    max_stage_ratio: float | None = 3.0

    def __post_init__(self) -> None:
        k = "distill"
        if (self.width is None) == (self.student is None):
            given = "both" if self.width is not None else "neither"
            raise UsageError(f"distill needs either width=W (derive the student from the model, e.g. width=0.5) or "
                             f"student=SPEC (a model to load, e.g. student=zoo:digits-cnn); got {given}")
        if self.width is not None:
            base.fraction(k, "width", self.width, "e.g. width=0.5 keeps half the channels of every hidden layer")
        if self.student is not None and (not isinstance(self.student, str) or not self.student.strip()):
            raise UsageError(f"distill student={self.student!r} must be a model spec, e.g. student=zoo:digits-cnn")
        base.integer(k, "epochs", self.epochs, 1, "e.g. epochs=20")
        base.positive(k, "temperature", self.temperature, "e.g. temperature=4")
        base.fraction(k, "alpha", self.alpha, "the weight of the soft-target term, e.g. alpha=0.9",
                      closed_bottom=True, closed_top=True)
        base.training(k, self.epochs, self.lr, self.seed)
        base.integer(k, "batch_size", self.batch_size, 1, "e.g. batch_size=64")
        base.non_negative(k, "weight_decay", self.weight_decay, "e.g. weight_decay=0.0001")
        object.__setattr__(self, "feature_pairs", _pairs(self.feature_pairs))
        base.non_negative(k, "feature_weight", self.feature_weight, "e.g. feature_weight=1")
        if self.max_stage_ratio is not None and base.number(k, "max_stage_ratio", self.max_stage_ratio) <= 1.0:
            raise UsageError(f"distill max_stage_ratio={self.max_stage_ratio} must be above 1 (e.g. 3), "
                             f"or none for one stage")

    def needs_training_data(self) -> str | None:
        return "distill"

    def needs_labels(self) -> bool:
        return self.alpha < 1.0  # at alpha=1 the teacher supplies every target

    def needs_model_loader(self) -> str | None:
        return f"distill student={self.student}" if self.student is not None else None


def parse_student(text: str) -> dict[str, str]:
    """What `--student` says, as DistillConfig fields (text, for parse_options): `width=0.5` -> {"width": "0.5"};
    anything else is a model spec -> {"student": text}."""
    text = text.strip()
    if not text:
        raise UsageError("--student is empty; give width=W (0 < W < 1) or a model spec such as zoo:digits-cnn")
    if text.startswith("width="):
        return {"width": text[len("width="):].strip()}
    return {"student": text}


@register(DistillConfig)
def distill_pass(module: nn.Module, config: DistillConfig, ctx: PassContext) -> PassResult:
    from edgepack.compress.distillation import distill
    from edgepack.training import require_training_data

    train = require_training_data(ctx.train, "distill", labels=config.needs_labels())
    if config.width is not None:
        from edgepack.compress.student import derive_student

        ctx.say(f"distill: deriving the student, every hidden layer at width {config.width}")
        student = derive_student(module, ctx.example_inputs, config.width)
        described = f"every hidden layer at width {config.width}"
    else:
        student = _load_student(str(config.student), ctx)
        described = str(config.student)
    result = distill(module, student, train, config, ctx.eval, progress=ctx.progress)
    notes = (f"teacher: the model before this pass; student: {described}", *result.notes)
    return PassResult(result.student, stages=result.stages, notes=notes)


def _load_student(spec: str, ctx: PassContext) -> nn.Module:
    from torch import nn

    if ctx.load_model is None:
        raise UsageError(f"distill student={spec} needs a model loader here; give width=W to derive the student "
                         f"from the model instead")
    ctx.say(f"distill: loading the student {spec}")
    student = ctx.load_model(spec)
    if not isinstance(student, nn.Module):
        raise UsageError(f"distill student={spec} loaded a {type(student).__name__}, not a torch nn.Module")
    return student


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """(teacher, student) layer-name pairs from a tuple/list of pairs or a {teacher: student} mapping."""
    items = list(value.items()) if isinstance(value, Mapping) else value
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise UsageError(f"distill feature_pairs={value!r} must be teacher:student layer pairs, e.g. "
                         f"feature_pairs=features.3:features.3")
    pairs = []
    for item in items:
        if (isinstance(item, str) or not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(n, str) and n.strip() for n in item)):
            raise UsageError(f"distill feature pair {item!r} must be (teacher layer name, student layer name), "
                             f"e.g. features.3:features.3")
        pairs.append((item[0].strip(), item[1].strip()))
    return tuple(pairs)
