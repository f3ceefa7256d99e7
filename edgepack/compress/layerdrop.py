"""Drop whole transformer blocks (the middle ones by default): residual blocks can go without reshaping anything.

Block stacks are found as nn.ModuleList attributes named `blocks`, `layers` or `layer`: timm ViTs (`blocks`),
nn.TransformerEncoder (`layers`), Hugging Face encoders (`encoder.layer`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.errors import UsageError
from edgepack.records import BlocksDropped

if TYPE_CHECKING:
    from torch import nn

BLOCK_LIST_NAMES = ("blocks", "layers", "layer")


@dataclass(frozen=True)
class DropLayersConfig(PassConfig):
    """Remove whole transformer blocks: the listed `indices`, or `middle` blocks around the centre of the stack."""

    kind: ClassVar[str] = "drop-layers"
    primary: ClassVar[str | None] = "indices"
    metavar: ClassVar[str] = "INDICES|middle=N"
    help: ClassVar[str] = "Drop transformer blocks, e.g. 1,2 or middle=2."

    indices: tuple[int, ...] = ()
    middle: int | None = None
    container: str | None = None  # which ModuleList, when the model has several (e.g. encoder.layers)

    def __post_init__(self) -> None:
        k = "drop-layers"
        if not isinstance(self.indices, tuple):
            raise UsageError("drop-layers indices must be a list of block numbers, e.g. 1,2")
        if bool(self.indices) == (self.middle is not None):
            raise UsageError("drop-layers needs either block indices (e.g. --drop-layers 1,2) or middle=N "
                             "(e.g. --drop-layers middle=2), not both and not neither")
        for i in self.indices:
            base.integer(k, "index", i, 0, "blocks are numbered from 0")
        if len(set(self.indices)) != len(self.indices):
            raise UsageError(f"drop-layers indices {list(self.indices)} repeat a block; list each block once")
        if self.middle is not None:
            base.integer(k, "middle", self.middle, 1, "e.g. middle=2 drops the two central blocks")
        if self.container is not None and (not isinstance(self.container, str) or not self.container):
            raise UsageError("drop-layers container must be a module name, e.g. container=encoder.layers")


def block_lists(root: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    from torch import nn

    return [(name, m) for name, m in root.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) > 0 and name.rpartition(".")[2] in BLOCK_LIST_NAMES]


def middle_indices(depth: int, count: int) -> list[int]:
    """`count` consecutive block indices centred in a stack of `depth` (the earlier one when it can't be exact)."""
    start = (depth - count) // 2
    return list(range(start, start + count))


@register(DropLayersConfig)
def drop_layers(module: nn.Module, config: DropLayersConfig, ctx: PassContext) -> PassResult:
    from torch import nn

    from edgepack.compress import moduletree

    root = moduletree.user_root(module)
    name, blocks = _choose(root, config)
    depth = len(blocks)
    if config.middle is not None:
        if config.middle >= depth:
            raise UsageError(f"drop-layers middle={config.middle} would drop every block of {name} "
                             f"({depth} blocks); use at most middle={depth - 1}")
        dropped = middle_indices(depth, config.middle)
    else:
        out_of_range = [i for i in config.indices if i >= depth]
        if out_of_range:
            raise UsageError(f"drop-layers index {out_of_range[0]} is out of range: {name} has blocks 0..{depth - 1}")
        if len(config.indices) >= depth:
            raise UsageError(f"drop-layers {','.join(map(str, config.indices))} would drop every block of {name}; "
                             f"keep at least one")
        dropped = sorted(config.indices)
    kept = [i for i in range(depth) if i not in dropped]
    moduletree.replace(root, name, nn.ModuleList(blocks[i] for i in kept))
    notes = _update_counts(root, name, len(kept))
    dropped_blocks = BlocksDropped(container=name, dropped=tuple(dropped), kept=tuple(kept), blocks=(depth, len(kept)))
    return PassResult(module, dropped=dropped_blocks, notes=tuple(notes))


def _choose(root: nn.Module, config: DropLayersConfig) -> tuple[str, nn.ModuleList]:
    found = block_lists(root)
    if config.container is not None:
        for name, blocks in found:
            if name == config.container:
                return name, blocks
        names = [n for n, _ in found]
        close = difflib.get_close_matches(config.container, names, n=3, cutoff=0.5)
        raise UsageError(f"drop-layers container={config.container!r} is not a block list of {type(root).__name__}"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}"
                         f" (block lists: {', '.join(names) or 'none'})")
    if not found:
        raise UsageError(f"layer dropping needs a transformer with a ModuleList of blocks (named "
                         f"{'/'.join(BLOCK_LIST_NAMES)}); found none in {type(root).__name__}")
    if len(found) > 1:
        raise UsageError(f"{type(root).__name__} has several block lists ({', '.join(n for n, _ in found)}); "
                         f"choose one with container=NAME")
    return found[0]


def _update_counts(root: nn.Module, name: str, depth: int) -> list[str]:
    """Keep the attributes that state the depth in step with it (nn.TransformerEncoder, Hugging Face configs)."""
    from torch import nn

    notes = []
    parent_name = name.rpartition(".")[0]
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, nn.TransformerEncoder):
        parent.num_layers = depth
        notes.append(f"{parent_name or type(root).__name__}.num_layers set to {depth}")
    config = getattr(root, "config", None)
    if config is not None and isinstance(getattr(config, "num_hidden_layers", None), int):
        config.num_hidden_layers = depth
        notes.append(f"config.num_hidden_layers set to {depth}")
    return notes
