"""Structured pruning through torch-pruning: whole channels, hidden dims or attention heads are removed.

torch-pruning builds the dependency graph (which layers must lose the same channels), scores channels and cuts them;
this module chooses its options from the config, runs the steps, keeps transformer attention attributes consistent
and records what changed. torch is imported when the pass runs, so the config can be read without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.errors import ToolError, UsageError, one_line
from edgepack.records import LayerChange, SkippedLayer, TrainingEpoch

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

IMPORTANCES = ("l1", "l2", "group", "taylor")
TAYLOR_SAMPLES = 512  # enough batches for stable first-order scores, few enough to stay quick on a CPU


@dataclass(frozen=True)
class PruneConfig(PassConfig):
    """Structured channel pruning through torch-pruning: removes whole channels, so params, MACs and latency drop.

    `ratio` is the fraction of channels (and transformer hidden dims) removed from each prunable layer, or from the
    whole model when `global_pruning`. With `steps` > 1 the model is pruned in steps, each removing
    1 - (1 - ratio)^(1/steps) of what is left, with `epochs` of fine-tuning after each step (needs training data).
    `heads`, for transformers, removes that fraction of whole attention heads instead of shrinking every head.
    """

    kind: ClassVar[str] = "prune"
    primary: ClassVar[str | None] = "ratio"
    metavar: ClassVar[str] = "RATIO|k=v,..."
    help: ClassVar[str] = ("Structured channel pruning through torch-pruning, e.g. 0.5 or "
                           "ratio=0.5,importance=l2,round_to=8,steps=3.")
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {"importance": IMPORTANCES}
    aliases: ClassVar[Mapping[str, str]] = {"global": "global_pruning"}

    ratio: float
    importance: str = "group"  # l1 | l2 (norm of the pruned layer) | group (all coupled layers) | taylor (gradients)
    global_pruning: bool = False
    round_to: int = 8  # keep channel counts multiples of this (vector units like multiples of 8); 1 = no rounding
    steps: int = 1
    heads: float | None = None
    epochs: int = 0
    lr: float = 1e-3
    seed: int = 0
    keep_classifier: bool = True  # leave the last Linear's outputs (the classes) alone
    ignore: tuple[str, ...] = ()  # further layers (and everything inside them) to leave alone

    def __post_init__(self) -> None:
        k = "prune"
        base.fraction(k, "ratio", self.ratio, "use e.g. ratio=0.5 to remove half the channels")
        base.choice(k, "importance", self.importance, IMPORTANCES)
        base.flag(k, "global", self.global_pruning)
        base.integer(k, "round_to", self.round_to, 1, "use 1 for no rounding, or e.g. round_to=8")
        base.integer(k, "steps", self.steps, 1, "e.g. steps=3 prunes in three steps")
        if self.heads is not None:
            base.fraction(k, "heads", self.heads, "use e.g. heads=0.5 to remove half the attention heads")
        base.training(k, self.epochs, self.lr, self.seed)
        base.flag(k, "keep_classifier", self.keep_classifier)
        base.names(k, "ignore", self.ignore)

    def needs_training_data(self) -> str | None:
        if self.importance == "taylor":
            return "prune importance=taylor"
        return f"prune epochs={self.epochs}" if self.epochs else None


def schedule(target: float, steps: int) -> list[float]:
    """Cumulative fraction of the original channels removed after step 0..steps.

    Each step removes the same fraction 1 - (1 - target)^(1/steps) of the channels still there, so after `steps`
    steps exactly `target` of the original channels are gone (torch-pruning's own scheduler is linear instead).
    """
    return [1.0 - (1.0 - target) ** (k / steps) for k in range(steps + 1)]


def per_step_ratio(target: float, steps: int) -> float:
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def attention_modules(root: nn.Module) -> list[tuple[str, Any]]:
    """timm-style attention: a fused `qkv` projection and a `num_heads` attribute (duck-typed, hence Any)."""
    return [(name, m) for name, m in root.named_modules()
            if hasattr(m, "qkv") and isinstance(getattr(m, "num_heads", None), int)]


class _Shape(NamedTuple):
    type: str
    inputs: int
    outputs: int
    heads: int | None = None


@register(PruneConfig)
def prune(module: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
    import torch_pruning as tp
    from torch import nn

    from edgepack.compress import moduletree
    from edgepack.training import require_training_data, train_epochs

    root = moduletree.user_root(module)
    if config.importance == "taylor":
        require_training_data(ctx.train, "prune importance=taylor")
    if config.epochs:
        require_training_data(ctx.train, f"prune epochs={config.epochs}")
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
    heads_before = {name: (int(attn.num_heads), getattr(attn, "head_dim", None)) for name, attn in attention}

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

    training: list[TrainingEpoch] = []
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
            training += train_epochs(module, ctx.train, epochs=config.epochs, lr=config.lr,
                                     seed=config.seed + step - 1, what=f"prune step {step} fine-tune", step=step,
                                     progress=ctx.progress)
    module.eval()

    after = _shapes(root)
    notes = []
    if config.steps > 1:
        cumulative = ", ".join(f"{r:.3f}" for r in schedule(config.ratio, config.steps)[1:])
        notes.append(f"{config.steps} steps of {per_step_ratio(config.ratio, config.steps):.4f} of the remaining "
                     f"channels each (cumulative {cumulative})")
    if attention and config.heads is None:
        notes.append("attention head dims were pruned (heads kept); the attention scale keeps its original value")
    if classifier:
        notes.append(f"the classifier ({classifier}) keeps its {before[classifier].outputs} outputs (keep_classifier)")
    return PassResult(
        module,
        changes=_diff(before, after) + _head_changes(attention, heads_before),
        skipped=_unchanged(before, after, ignored_names=_ignored_names(root, ignored), config=config),
        training=tuple(training), notes=tuple(notes))


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
    import numpy as np
    import torch
    from torch import nn

    from edgepack.training import require_training_data

    data = require_training_data(ctx.train, "prune importance=taylor")
    labels = cast("np.ndarray", data.labels)  # require_training_data refused unlabelled data
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data))[:TAYLOR_SAMPLES]
    module.eval()
    module.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for start in range(0, len(idx), 64):
        batch = idx[start:start + 64]
        x = torch.from_numpy(np.ascontiguousarray(data.inputs[batch], dtype=np.float32))
        y = torch.from_numpy(labels[batch].astype(np.int64))
        (loss_fn(module(x), y) / len(idx)).backward()


def _sync_attention(attention: list[tuple[str, Any]], pruner: Any) -> None:
    """torch-pruning resizes qkv/proj but not the attributes forward() reshapes with: set them from the new sizes."""
    for _, attn in attention:
        attn.num_heads = int(pruner.num_heads[attn.qkv])
        if hasattr(attn, "head_dim"):
            attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)


def _shapes(root: nn.Module) -> dict[str, _Shape]:
    from torch import nn

    from edgepack.compress import moduletree

    shapes = {}
    for name, m in moduletree.layers_of(root, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        if isinstance(m, nn.Linear):
            shapes[name] = _Shape("Linear", m.in_features, m.out_features)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            shapes[name] = _Shape(type(m).__name__, m.in_channels, m.out_channels)
    for name, m in moduletree.layers_of(root, (nn.MultiheadAttention,)):
        if isinstance(m, nn.MultiheadAttention):
            shapes[name] = _Shape("MultiheadAttention", m.embed_dim, m.embed_dim, m.num_heads)
    return shapes


def _diff(before: dict[str, _Shape], after: dict[str, _Shape]) -> tuple[LayerChange, ...]:
    return tuple(LayerChange(layer=name, type=old.type, in_features=(old.inputs, new.inputs),
                             out_features=(old.outputs, new.outputs),
                             num_heads=None if old.heads is None or new.heads is None else (old.heads, new.heads))
                 for name, old in before.items() for new in [after.get(name)] if new is not None and new != old)


def _head_changes(attention: list[tuple[str, Any]],
                  before: dict[str, tuple[int, int | None]]) -> tuple[LayerChange, ...]:
    changes = []
    for name, attn in attention:
        heads, dim = before[name]
        new_dim = getattr(attn, "head_dim", None)
        if (attn.num_heads, new_dim) != (heads, dim):
            changes.append(LayerChange(layer=name, type="attention", num_heads=(heads, int(attn.num_heads)),
                                       head_dim=(dim, new_dim)))
    return tuple(changes)


def _ignored_names(root: nn.Module, ignored: list[nn.Module]) -> set[str]:
    ids = {id(m) for m in ignored}
    return {name for name, m in root.named_modules() if id(m) in ids}


def _unchanged(before: dict[str, _Shape], after: dict[str, _Shape], *, ignored_names: set[str],
               config: PruneConfig) -> tuple[SkippedLayer, ...]:
    """Layers whose outputs were not cut, with the reason as far as it can be told."""
    from edgepack.compress import moduletree

    skipped = []
    for name, old in before.items():
        new = after.get(name)
        if new is None or new.outputs != old.outputs:
            continue
        if moduletree.within(name, ignored_names):
            reason = "ignored (classifier or ignore=)"
        elif config.round_to > 1 and math.floor(old.outputs * (1 - config.ratio)) < config.round_to \
                and not config.global_pruning:
            reason = (f"keeping {old.outputs}x{1 - config.ratio:g} channels rounds below round_to={config.round_to}; "
                      f"left whole")
        else:
            reason = "no output channels removed (coupled to an ignored layer, the model output, or ranked too high)"
        skipped.append(SkippedLayer(layer=name, type=old.type, reason=reason))
    return tuple(skipped)
