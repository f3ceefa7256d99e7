"""Run compression passes in order on a copy of a bundle's model and record what each one did.

Dispatch is on the config's type (like torchao's `quantize_(model, Config)`): each config class maps to the function
in its pass module, imported only when a pass of that kind runs.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from edgepack.compress.configs import (DistillPassConfig, DropLayersConfig, FinetuneConfig, LowRankConfig,
                                       NdLinearConfig, PassConfig, PruneConfig, SparseConfig)
from edgepack.errors import ToolError, UsageError, one_line
from edgepack.records import PassRecord

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle

Progress = Callable[[str], None]

PASSES: dict[type[PassConfig], str] = {
    PruneConfig: "edgepack.compress.prune:prune",
    SparseConfig: "edgepack.compress.sparse:sparsify",
    LowRankConfig: "edgepack.compress.lowrank:lowrank",
    NdLinearConfig: "edgepack.compress.ndlinear:ndlinear",
    DropLayersConfig: "edgepack.compress.layerdrop:drop_layers",
    FinetuneConfig: "edgepack.compress.finetune:finetune",
    DistillPassConfig: "edgepack.compress.distill:distill_pass",
}


@dataclass
class PassContext:
    """What a pass may use besides the model and its config."""

    example_inputs: tuple["torch.Tensor", ...]
    train: Optional["ArrayDataset"] = None
    eval: Optional["ArrayDataset"] = None
    progress: Optional[Progress] = None

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)


@dataclass
class PassResult:
    """A pass's output: the (possibly new) module and what changed, per layer."""

    module: "nn.Module"
    changes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pass_function(config: PassConfig) -> Callable[["nn.Module", Any, PassContext], PassResult]:
    target = PASSES.get(type(config))
    if target is None:
        raise UsageError(f"{type(config).__name__} is not a compression pass config; "
                         f"use one of {', '.join(c.__name__ for c in PASSES)}")
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def apply_passes(bundle: "ModelBundle", configs: Sequence[PassConfig], *, train: Optional["ArrayDataset"] = None,
                 eval: Optional["ArrayDataset"] = None, progress: Optional[Progress] = None) -> "ModelBundle":
    """A new bundle whose module went through `configs` in order; the input bundle is left untouched.

    Each pass adds a PassRecord (config, params and MACs before/after, seconds, per-layer changes, skipped layers
    with reasons, eager accuracy before/after when `eval` has labels, notes) to provenance.passes.
    """
    for config in configs:  # refuse what cannot run before spending time on any pass
        pass_function(config)
        need = config.needs_training_data()
        if need and (train is None or train.labels is None or len(train) == 0):
            raise UsageError(f"{need} needs labelled training data (a zoo model's own dataset or --train DATA); "
                             f"none was given")
    module = copy.deepcopy(bundle.module).eval()
    ctx = PassContext(tuple(bundle.example_inputs), train, eval, progress)
    params, macs = _count(module, ctx.example_inputs)
    accuracy = _accuracy(module, eval)
    records = list(bundle.provenance.passes)
    for i, config in enumerate(configs, 1):
        ctx.say(f"pass {i}/{len(configs)}: {config.kind}")
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = pass_function(config)(module, config, ctx)
        seconds = time.perf_counter() - start
        module = result.module.eval()
        _check_runs(module, ctx.example_inputs, config)
        params_after, macs_after = _count(module, ctx.example_inputs)
        accuracy_after = _accuracy(module, eval)
        notes = result.notes + sorted({_first_line(w.message) for w in caught if _worth_noting(w)})
        records.append(PassRecord(
            name=config.kind, config=config.to_dict(),
            params_before=params, params_after=params_after, macs_before=macs, macs_after=macs_after,
            seconds=round(seconds, 3), changes=tuple(result.changes), skipped=tuple(result.skipped),
            accuracy_before=accuracy, accuracy_after=accuracy_after, notes=tuple(notes),
        ))
        params, macs, accuracy = params_after, macs_after, accuracy_after
    provenance = dataclasses.replace(bundle.provenance, passes=tuple(records), params=params, macs=macs)
    return bundle.replace(module=module, provenance=provenance)


def _count(module: "nn.Module", inputs: tuple["torch.Tensor", ...]) -> tuple[int, int]:
    from edgepack.models.loader import count_params_and_macs

    return count_params_and_macs(module, inputs)


def _accuracy(module: "nn.Module", data: Optional["ArrayDataset"]) -> Optional[float]:
    if data is None or data.labels is None or len(data) == 0:
        return None
    from edgepack.training import evaluate

    return evaluate(module, data)


def _check_runs(module: "nn.Module", inputs: tuple["torch.Tensor", ...], config: PassConfig) -> None:
    """A pass must leave a model that still runs: fail here, naming the pass, not later in an exporter."""
    import torch

    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as exc:  # whatever the model raises
        raise ToolError(f"after the {config.kind} pass the model no longer runs: "
                        f"{type(exc).__name__}: {one_line(exc)}") from exc


def _first_line(message: Any) -> str:
    return one_line(Exception(str(message)), 200)


def _worth_noting(w: warnings.WarningMessage) -> bool:
    # library deprecation chatter says nothing about this model
    return not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
