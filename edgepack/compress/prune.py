"""Structured pruning through torch-pruning: whole channels, hidden dims or attention heads are removed.

torch-pruning builds the dependency graph (which layers must lose the same channels), scores channels and cuts them;
this module chooses its options from the config, runs the steps, keeps transformer attention attributes consistent
and records what changed.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgepack.compress import moduletree
from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import PruneConfig
from edgepack.compress.finetune import require_training_data, train_epochs
from edgepack.errors import ToolError, UsageError, one_line

TAYLOR_SAMPLES = 512  # enough batches for stable first-order scores, few enough to stay quick on a CPU


def schedule(target: float, steps: int) -> list[float]:
    """Cumulative fraction of the original channels removed after step 0..steps.

    Each step removes the same fraction 1 - (1 - target)^(1/steps) of the channels still there, so after `steps`
    steps exactly `target` of the original channels are gone (torch-pruning's own scheduler is linear instead).
    """
    return [1.0 - (1.0 - target) ** (k / steps) for k in range(steps + 1)]


def per_step_ratio(target: float, steps: int) -> float:
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def attention_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm-style attention: a fused `qkv` projection and a `num_heads` attribute."""
    return [(name, m) for name, m in root.named_modules()
            if hasattr(m, "qkv") and isinstance(getattr(m, "num_heads", None), int)]


def prune(module: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
    import torch_pruning as tp

    root = moduletree.user_root(module)
    if config.importance == "taylor":
        require_training_data(ctx, "prune importance=taylor")
    if config.epochs:
        require_training_data(ctx, f"prune epochs={config.epochs}")
    attention = attention_modules(root)
    if config.heads is not None and not attention:
        raise UsageError(f"prune heads={config.heads} needs attention modules with `qkv` and `num_heads`; found "
                         f"none in {type(root).__name__} (leave heads unset to prune channels)")
    for name, attn in attention:
        if not isinstance(attn.qkv, nn.Linear):
            raise UsageError(f"prune: {name}.qkv is a {type(attn.qkv).__name__}, not a Linear (a pass before "
                             f"replaced it); run prune before lowrank/ndlinear")

    ignored = [root.get_submodule(n) for n in moduletree.resolve(root, config.ignore, "prune ignore")]
    classifier = moduletree.classifier_name(root) if config.keep_classifier else None
    if classifier:
        ignored.append(root.get_submodule(classifier))
    before = _shapes(root)
    heads_before = {name: (attn.num_heads, getattr(attn, "head_dim", None)) for name, attn in attention}

    inputs = ctx.example_inputs[0] if len(ctx.example_inputs) == 1 else ctx.example_inputs
    try:
        pruner = tp.pruner.MetaPruner(
            module, inputs, importance=_importance(config.importance),
            global_pruning=config.global_pruning, pruning_ratio=config.ratio,
            iterative_steps=config.steps, iterative_pruning_ratio_scheduler=schedule,
            ignored_layers=ignored, round_to=config.round_to if config.round_to > 1 else None,
            num_heads={attn.qkv: attn.num_heads for _, attn in attention},
            prune_num_heads=config.heads is not None, prune_head_dims=config.heads is None,
            head_pruning_ratio=config.heads or 0.0,
        )
    except Exception as exc:  # the tracer's own errors, whatever their type
        raise ToolError(f"torch-pruning could not trace {type(root).__name__}: {type(exc).__name__}: "
                        f"{one_line(exc)}") from exc

    notes = []
    changes: list[dict[str, Any]] = []
    for step in range(1, config.steps + 1):
        ctx.say(f"prune step {step}/{config.steps}: {schedule(config.ratio, config.steps)[step]:.3f} of channels gone")
        if config.importance == "taylor":
            _accumulate_gradients(module, ctx)
        try:
            pruner.step()
        except Exception as exc:
            raise ToolError(f"torch-pruning failed on {type(root).__name__} at step {step}: {type(exc).__name__}: "
                            f"{one_line(exc)}") from exc
        finally:
            module.zero_grad(set_to_none=True)
        _sync_attention(attention, pruner)
        if config.epochs:
            losses = train_epochs(module, ctx, epochs=config.epochs, lr=config.lr, seed=config.seed + step - 1,
                                  what=f"prune step {step} fine-tune")
            changes.append({"step": step, "finetune": losses})
    module.eval()

    after = _shapes(root)
    changes = _diff(before, after) + _head_changes(attention, heads_before) + changes
    skipped = _unchanged(before, after, ignored_names=_ignored_names(root, ignored), config=config)
    if config.steps > 1:
        cumulative = ", ".join(f"{r:.3f}" for r in schedule(config.ratio, config.steps)[1:])
        notes.append(f"{config.steps} steps of {per_step_ratio(config.ratio, config.steps):.4f} of the remaining "
                     f"channels each (cumulative {cumulative})")
    if attention and config.heads is None:
        notes.append("attention head dims were pruned (heads kept); the attention scale keeps its original value")
    if classifier:
        notes.append(f"the classifier ({classifier}) keeps its {before[classifier]['out']} outputs (keep_classifier)")
    return PassResult(module, changes=changes, skipped=skipped, notes=notes)


def _importance(name: str) -> Any:
    import torch_pruning as tp

    imp = tp.importance
    table: dict[str, Callable[[], Any]] = {
        # l1/l2: the norm of the pruned layer's own filters (Li et al.); group: over every coupled layer (DepGraph)
        "l1": lambda: imp.MagnitudeImportance(p=1, group_reduction="first"),
        "l2": lambda: imp.MagnitudeImportance(p=2, group_reduction="first"),
        "group": lambda: imp.GroupMagnitudeImportance(p=2),
        "taylor": lambda: imp.GroupTaylorImportance(),
    }
    return table[name]()


def _accumulate_gradients(module: nn.Module, ctx: PassContext) -> None:
    """Gradients of the training loss for Taylor scores; eval mode so batch-norm statistics are not touched."""
    data = require_training_data(ctx, "prune importance=taylor")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data))[:TAYLOR_SAMPLES]
    module.eval()
    module.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for start in range(0, len(idx), 64):
        batch = idx[start:start + 64]
        x = torch.from_numpy(np.ascontiguousarray(data.inputs[batch], dtype=np.float32))
        y = torch.from_numpy(data.labels[batch].astype(np.int64))  # type: ignore[index]
        (loss_fn(module(x), y) / len(idx)).backward()


def _sync_attention(attention: list[tuple[str, nn.Module]], pruner: Any) -> None:
    """torch-pruning resizes qkv/proj but not the attributes forward() reshapes with: set them from the new sizes."""
    for _, attn in attention:
        attn.num_heads = int(pruner.num_heads[attn.qkv])
        if hasattr(attn, "head_dim"):
            attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)


def _shapes(root: nn.Module) -> dict[str, dict[str, Any]]:
    shapes = {}
    for name, m in moduletree.layers_of(root, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        if isinstance(m, nn.Linear):
            shapes[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
        else:
            shapes[name] = {"type": type(m).__name__, "in": m.in_channels, "out": m.out_channels}
    for name, m in moduletree.layers_of(root, (nn.MultiheadAttention,)):
        shapes[name] = {"type": "MultiheadAttention", "in": m.embed_dim, "out": m.embed_dim, "heads": m.num_heads}
    return shapes


def _diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    changes = []
    for name, old in before.items():
        new = after.get(name)
        if new is None or new == old:
            continue
        changes.append({"layer": name, "type": old["type"], "in": [old["in"], new["in"]],
                        "out": [old["out"], new["out"]]})
    return changes


def _head_changes(attention: list[tuple[str, nn.Module]], before: dict[str, tuple[int, Any]]) -> list[dict[str, Any]]:
    changes = []
    for name, attn in attention:
        heads, dim = before[name]
        if (attn.num_heads, getattr(attn, "head_dim", None)) != (heads, dim):
            changes.append({"layer": name, "type": "attention", "num_heads": [heads, attn.num_heads],
                            "head_dim": [dim, getattr(attn, "head_dim", None)]})
    return changes


def _ignored_names(root: nn.Module, ignored: list[nn.Module]) -> set[str]:
    ids = {id(m) for m in ignored}
    return {name for name, m in root.named_modules() if id(m) in ids}


def _unchanged(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], *, ignored_names: set[str],
               config: PruneConfig) -> list[dict[str, Any]]:
    """Layers whose outputs were not cut, with the reason as far as it can be told."""
    skipped = []
    for name, old in before.items():
        if after.get(name, {}).get("out") != old["out"]:
            continue
        if moduletree.within(name, ignored_names):
            reason = "ignored (classifier or ignore=)"
        elif config.round_to > 1 and math.floor(old["out"] * (1 - config.ratio)) < config.round_to \
                and not config.global_pruning:
            reason = (f"keeping {old['out']}x{1 - config.ratio:g} channels rounds below round_to={config.round_to}; "
                      f"left whole")
        else:
            reason = "no output channels removed (coupled to an ignored layer, the model output, or ranked too high)"
        skipped.append({"layer": name, "type": old["type"], "reason": reason})
    return skipped
