"""Knowledge distillation: logit KD (Hinton et al.), feature KD with learned adapters (FitNets), and progressive
distillation through teacher assistants when one stage would compress too much (Mirzadeh et al., TAKD).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from edgepack.compress.student import assistant_for, count_params, stage_count
from edgepack.data.dataset import ArrayDataset
from edgepack.errors import UsageError
from edgepack.records import DistillStage
from edgepack.training import evaluate, set_eval, train_classifier


class DistillSettings(Protocol):
    """What the algorithm reads from its config (the distill pass's DistillConfig), and nothing it must import."""

    @property
    def temperature(self) -> float: ...
    @property
    def alpha(self) -> float: ...  # weight of the KD term; 1 - alpha goes to cross-entropy on the labels
    @property
    def epochs(self) -> int: ...  # per stage
    @property
    def lr(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def feature_pairs(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def feature_weight(self) -> float: ...
    @property
    def max_stage_ratio(self) -> float | None: ...


@dataclass(frozen=True)
class Distilled:
    """The trained student (in eval mode), one row per stage, and top-1 on the eval data before and after."""

    student: nn.Module
    stages: tuple[DistillStage, ...]
    teacher_top1: float | None
    student_top1: float | None
    notes: tuple[str, ...] = ()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
            temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), averaged over the batch.

    T^2 keeps the soft-target gradients on the scale of the hard-target ones as T changes (Hinton et al. 2015).
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits.detach() / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return soft
    if labels is None:
        raise UsageError("distillation with alpha < 1 needs labels for its cross-entropy term")
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def distill(teacher: nn.Module, student: nn.Module, train: ArrayDataset, config: DistillSettings,
            eval: ArrayDataset | None = None, *, progress: Callable[[str], None] | None = None) -> Distilled:
    """Distill `teacher` into `student` (trained in place and returned in eval mode).

    When teacher params / student params exceeds `config.max_stage_ratio`, teacher assistants are derived from the
    teacher (torch-pruning, uniform width) and distilled in turn, each one teaching the next; each stage's row has
    params and ratio, teacher and student top-1 on `eval`, final loss, seconds, and `derived_width` (the assistant's
    width relative to that stage's teacher; None for the given student). `feature_pairs` apply to the last stage
    only, since assistants carry the teacher's layer names. Unlabelled `train` data works when alpha == 1: the
    teacher supplies every target. `progress` hears of every stage and epoch.
    """
    example = (torch.from_numpy(np.ascontiguousarray(train.inputs[:1], dtype=np.float32)),)
    num_classes = _check_pair(teacher, student, train)
    _check_labels(train, num_classes, config)
    if eval is not None:
        _check_labels(eval, num_classes, None)
    teacher_params, student_params = count_params(teacher), count_params(student)
    teacher_acc = evaluate(teacher, eval) if eval is not None else None
    stages = stage_count(teacher_params / student_params, config.max_stage_ratio)
    per_stage = (teacher_params / student_params) ** (1.0 / stages)
    rows: list[DistillStage] = []
    notes = []
    if stages > 1 and config.feature_pairs:
        # assistants are derived from the teacher, so they keep its layer names but not the student's
        notes.append("feature_pairs applied in the last stage only (assistant -> student); earlier stages use logits")
    current, current_acc = teacher, teacher_acc
    for k in range(1, stages + 1):
        width: float | None = None
        if k < stages:
            target = math.ceil(teacher_params / per_stage**k)
            _say(progress, f"distill stage {k}/{stages}: deriving a teacher assistant of about {target:,} params")
            stage_student, width = assistant_for(current, example, target)
        else:
            stage_student = student
        _say(progress, f"distill stage {k}/{stages}: {count_params(current):,} -> {count_params(stage_student):,} "
                       f"params")
        row = _distill_stage(current, stage_student, train, config, config.feature_pairs if k == stages else (),
                             eval, label=f"distill stage {k}/{stages}", progress=progress)
        row = replace(row, stage=k, teacher_top1=current_acc, derived_width=width)
        if row.ratio > (config.max_stage_ratio or math.inf) * 1.05:
            notes.append(f"stage {k} compresses {row.ratio:.2f}x, over max_stage_ratio {config.max_stage_ratio}: "
                         "channel counts are whole numbers")
        rows.append(row)
        current, current_acc = stage_student, row.student_top1
    return Distilled(student.eval(), tuple(rows), teacher_acc, current_acc, tuple(notes))


def _distill_stage(teacher: nn.Module, student: nn.Module, train: ArrayDataset, config: DistillSettings,
                   feature_pairs: tuple[tuple[str, str], ...], eval: ArrayDataset | None, *, label: str,
                   progress: Callable[[str], None] | None) -> DistillStage:
    started = time.perf_counter()
    set_eval(teacher)
    torch.manual_seed(config.seed)  # adapters are initialised before training seeds itself
    taps = _FeatureTaps(teacher, student, feature_pairs, train)
    wrapped = _StudentWithAdapters(student, taps.adapters)
    losses: list[float] = []
    labels = train.labels if train.labels is not None else np.zeros(len(train), dtype=np.int64)

    def loss_fn(student_out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_out = teacher(x)
        loss = kd_loss(student_out, teacher_out, y if train.labels is not None else None, config.temperature,
                       config.alpha)
        if taps.adapters:
            loss = loss + config.feature_weight * taps.loss()
        return loss

    def on_epoch(epoch: int, loss: float) -> None:
        losses.append(loss)
        _say(progress, f"{label} epoch {epoch}/{config.epochs}: loss {loss:.4f}")

    try:
        train_classifier(wrapped, replace(train, labels=labels), config.epochs, lr=config.lr,
                         batch_size=config.batch_size, seed=config.seed, weight_decay=config.weight_decay,
                         loss_fn=loss_fn, on_epoch=on_epoch)
    finally:
        taps.remove()
    student.eval()
    teacher_params, student_params = count_params(teacher), count_params(student)
    return DistillStage(stage=0, teacher_params=teacher_params, student_params=student_params,
                        ratio=teacher_params / student_params, epochs=config.epochs,
                        final_loss=losses[-1] if losses else None,
                        student_top1=evaluate(student, eval) if eval is not None else None,
                        seconds=round(time.perf_counter() - started, 3))


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)


class _StudentWithAdapters(nn.Module):
    """Puts the adapters' parameters beside the student's, so the shared training loop optimises both."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleList) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


class _Adapter(nn.Module):
    """Maps a student feature to the teacher feature's shape: 1x1 conv (+ resize) for maps, Linear for vectors."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, pair: tuple[str, str]) -> None:
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 3, 4):
            raise UsageError(f"feature pair {pair[0]}->{pair[1]}: teacher {tuple(teacher_shape)} and student "
                             f"{tuple(student_shape)} features must both be (N,C), (N,L,C) or (N,C,H,W)")
        if len(student_shape) == 3 and student_shape[1] != teacher_shape[1]:
            raise UsageError(f"feature pair {pair[0]}->{pair[1]}: token counts differ "
                             f"({teacher_shape[1]} vs {student_shape[1]})")
        self.spatial = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if self.spatial is not None:
            self.map: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
        else:
            self.map = nn.Linear(student_shape[-1], teacher_shape[-1], bias=False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        out = self.map(feature)
        if self.spatial is not None and tuple(out.shape[2:]) != self.spatial:
            out = F.interpolate(out, size=self.spatial, mode="bilinear", align_corners=False)
        return out


class _FeatureTaps:
    """Forward hooks that keep the latest output of each paired module, and the adapters between them.

    A hooked module followed by an in-place op (ReLU(inplace=True)) yields the post-op values; name the
    activation or block output if that matters.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, pairs: tuple[tuple[str, str], ...],
                 train: ArrayDataset) -> None:
        self.pairs = pairs
        self.teacher_out: dict[str, torch.Tensor] = {}
        self.student_out: dict[str, torch.Tensor] = {}
        self.hooks: list[RemovableHandle] = []
        self.adapters = nn.ModuleList()
        if not pairs:
            return
        for t_name, s_name in pairs:
            self._hook(_layer(teacher, t_name, "teacher"), self.teacher_out, t_name)
            self._hook(_layer(student, s_name, "student"), self.student_out, s_name)
        try:
            x = torch.from_numpy(np.ascontiguousarray(train.inputs[:2], dtype=np.float32))
            with torch.no_grad():
                set_eval(teacher)(x)
                set_eval(student)(x)
            for pair in pairs:
                t_feat, s_feat = self.teacher_out[pair[0]], self.student_out[pair[1]]
                self.adapters.append(_Adapter(s_feat.shape, t_feat.shape, pair))
        except Exception:
            self.remove()
            raise

    def _hook(self, module: nn.Module, store: dict[str, torch.Tensor], name: str) -> None:
        def keep(_m: nn.Module, _i: Any, out: Any) -> None:
            store[name] = out[0] if isinstance(out, (tuple, list)) else out

        self.hooks.append(module.register_forward_hook(keep))

    def loss(self) -> torch.Tensor:
        """Mean over pairs of MSE(adapter(student), teacher) / mean(teacher^2); call after both forwards."""
        terms = []
        for adapter, (t, s) in zip(self.adapters, self.pairs):
            target = self.teacher_out[t].detach()
            # relative to the teacher feature's energy, so feature_weight means the same for any layer's scale
            terms.append(F.mse_loss(adapter(self.student_out[s]), target) / (target.pow(2).mean() + 1e-8))
        return torch.stack(terms).mean()

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


def _layer(model: nn.Module, name: str, role: str) -> nn.Module:
    """The named layer, as the user names it in their own model; unknown names list the close ones."""
    from edgepack.compress import moduletree

    root = moduletree.user_root(model)
    moduletree.resolve(root, [name], f"distill feature_pairs ({role})")
    return root.get_submodule(name)


def _check_pair(teacher: nn.Module, student: nn.Module, train: ArrayDataset) -> int:
    """Both models run on the data and return logits of the same shape; returns the class count."""
    if len(train) == 0:
        raise UsageError(f"{train.name} is empty; distillation needs training inputs")
    x = torch.from_numpy(np.ascontiguousarray(train.inputs[:2], dtype=np.float32))
    outs = []
    for role, model in (("teacher", teacher), ("student", student)):
        try:
            with torch.no_grad():
                out = set_eval(model)(x)
        except Exception as exc:
            raise UsageError(f"the {role} cannot run on {train.name} inputs of shape {tuple(x.shape[1:])}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise UsageError(f"the {role} must return one (batch, classes) logits tensor, "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
        outs.append(out)
    if outs[0].shape != outs[1].shape:
        raise UsageError(f"teacher and student outputs differ: teacher {tuple(outs[0].shape[1:])}, "
                         f"student {tuple(outs[1].shape[1:])}; both must predict the same classes")
    return int(outs[0].shape[1])


def _check_labels(data: ArrayDataset, num_classes: int, config: DistillSettings | None) -> None:
    if data.labels is None:
        if config is None or config.alpha < 1.0:
            raise UsageError(f"{data.name} has no labels; evaluation and alpha < 1 need labelled data")
        return
    labels = np.asarray(data.labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{data.name} labels must be whole class indices, got dtype {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise UsageError(f"{data.name} has labels outside the model's {num_classes} classes (0..{num_classes - 1}): "
                         f"{sorted(set(bad.tolist()))[:5]}")
