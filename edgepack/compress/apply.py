"""Run compression passes in order on a copy of a bundle's model and record what each one did.

Dispatch is on the config's type (like torchao's `quantize_(model, Config)`): each pass module registers its function
beside its config, and the module is imported (with torch) only when the registry is read.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgepack.compress.base import ModelLoader, PassConfig, PassContext, PassFunction, SayFn, registered_functions
from edgepack.compress.registry import registered_passes
from edgepack.errors import ToolError, UsageError, one_line
from edgepack.records import PassRecord

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle


def pass_function(config: PassConfig) -> PassFunction:
    """The function registered for the config's type."""
    known = registered_passes()
    function = registered_functions().get(type(config)) if isinstance(config, PassConfig) else None
    if function is None:
        raise UsageError(f"{type(config).__name__} is not a compression pass config; "
                         f"use one of {', '.join(c.__name__ for c in known)}")
    return function


def apply_passes(bundle: ModelBundle, configs: Sequence[PassConfig], *, train: ArrayDataset | None = None,
                 eval: ArrayDataset | None = None, progress: SayFn | None = None,
                 load_model: ModelLoader | None = None) -> ModelBundle:
    """A new bundle whose module went through `configs` in order; the input bundle is left untouched.

    Each pass adds a PassRecord (config, params and MACs before/after, seconds, per-layer changes, skipped layers
    with reasons, training epochs, distillation stages, eval accuracy before/after when `eval` has labels, notes) to
    provenance.passes. `progress` hears which pass runs and every step, epoch and stage inside it; `load_model`
    loads a model spec a config names (a distillation student).
    """
    _check_before_any_work(configs, train, load_model)
    module = copy.deepcopy(bundle.module).eval()
    ctx = PassContext(tuple(bundle.example_inputs), train, eval, progress, load_model)
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
        notes = (*result.notes, *sorted({_first_line(w.message) for w in caught if _worth_noting(w)}))
        records.append(PassRecord(
            name=config.kind, config=config.to_dict(),
            params_before=params, params_after=params_after, macs_before=macs, macs_after=macs_after,
            seconds=round(seconds, 3), changes=result.changes, skipped=result.skipped, training=result.training,
            stages=result.stages, dropped=result.dropped, accuracy_before=accuracy, accuracy_after=accuracy_after,
            notes=notes,
        ))
        params, macs, accuracy = params_after, macs_after, accuracy_after
    provenance = dataclasses.replace(bundle.provenance, passes=tuple(records), params=params, macs=macs)
    return bundle.replace(module=module, provenance=provenance)


def _check_before_any_work(configs: Sequence[PassConfig], train: ArrayDataset | None,
                           load_model: ModelLoader | None) -> None:
    """Refuse what cannot run before spending time on any pass."""
    for config in configs:
        pass_function(config)
    for config in configs:
        need = config.needs_training_data()
        if need:
            from edgepack.training import require_training_data

            require_training_data(train, need, labels=config.needs_labels())
        named = config.needs_model_loader()
        if named and load_model is None:
            raise UsageError(f"{named} names a model to load, and no model loader was given")


def _count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    from edgepack.models.loader import count_params_and_macs

    return count_params_and_macs(module, inputs)


def _accuracy(module: nn.Module, data: ArrayDataset | None) -> float | None:
    if data is None or data.labels is None or len(data) == 0:
        return None
    from edgepack.training import evaluate

    return evaluate(module, data)


def _check_runs(module: nn.Module, inputs: tuple[torch.Tensor, ...], config: PassConfig) -> None:
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
