"""The configuration of every compression pass: one frozen dataclass per pass, validated on construction.

The configs live together here, apart from the pass functions, so the CLI and the recipe parser can check user input
without importing torch. Each pass module (`prune.py`, `lowrank.py`, ...) holds the function that applies its config;
`apply.py` dispatches on the config's type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

from edgepack.errors import UsageError

IMPORTANCES = ("l1", "l2", "group", "taylor")
LOWRANK_TARGETS = ("linear", "conv", "all")


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass config. `kind` is the CLI/recipe name; `primary` is the field a bare value sets."""

    kind: ClassVar[str] = ""
    primary: ClassVar[Optional[str]] = None
    aliases: ClassVar[Mapping[str, str]] = {}  # user-facing key -> field name, where a field name can't be the key

    def needs_training_data(self) -> Optional[str]:
        """What in this config needs labelled training data (for the error message), or None."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists); `parse_recipe([{kind: d}])` reads it back."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


# ---- validation helpers: one-line messages saying what is wrong and what would be right ----

def _number(kind: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{kind} {key}={value!r} is not a finite number")
    return float(value)


def _fraction(kind: str, key: str, value: Any, hint: str, *, closed_top: bool = False) -> None:
    v = _number(kind, key, value)
    ok = 0.0 < v <= 1.0 if closed_top else 0.0 < v < 1.0
    if not ok:
        span = "(0, 1]" if closed_top else "(0, 1)"
        raise UsageError(f"{kind} {key}={value} is outside {span}; {hint}")


def _integer(kind: str, key: str, value: Any, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{kind} {key}={value!r} is not an integer{'; ' + hint if hint else ''}")
    if value < minimum:
        raise UsageError(f"{kind} {key}={value} is below {minimum}{'; ' + hint if hint else ''}")


def _positive(kind: str, key: str, value: Any, hint: str) -> None:
    if _number(kind, key, value) <= 0:
        raise UsageError(f"{kind} {key}={value} must be positive; {hint}")


def _choice(kind: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{kind} {key}={value!r} is not one of: {', '.join(choices)}")


def _flag(kind: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{kind} {key}={value!r} must be true or false")


def _names(kind: str, key: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{kind} {key} must be a list of layer names, e.g. {key}=fc,blocks.0")


def _training(kind: str, epochs: int, lr: float, seed: int) -> None:
    _integer(kind, "epochs", epochs, 0, "use 0 for no fine-tuning or a few epochs, e.g. epochs=3")
    _positive(kind, "lr", lr, "e.g. lr=0.001")
    _integer(kind, "seed", seed, 0)


# ---- the passes ----

@dataclass(frozen=True)
class PruneConfig(PassConfig):
    """Structured channel pruning through torch-pruning: removes whole channels, so params, MACs and latency drop.

    `ratio` is the fraction of channels (and transformer hidden dims) removed from each prunable layer, or from the
    whole model when `global_pruning`. With `steps` > 1 the model is pruned in steps, each removing
    1 - (1 - ratio)^(1/steps) of what is left, with `epochs` of fine-tuning after each step (needs training data).
    `heads`, for transformers, removes that fraction of whole attention heads instead of shrinking every head.
    """

    kind: ClassVar[str] = "prune"
    primary: ClassVar[Optional[str]] = "ratio"
    aliases: ClassVar[Mapping[str, str]] = {"global": "global_pruning"}

    ratio: float
    importance: str = "group"  # l1 | l2 (norm of the pruned layer) | group (all coupled layers) | taylor (gradients)
    global_pruning: bool = False
    round_to: int = 8  # keep channel counts multiples of this (vector units like multiples of 8); 1 = no rounding
    steps: int = 1
    heads: Optional[float] = None
    epochs: int = 0
    lr: float = 1e-3
    seed: int = 0
    keep_classifier: bool = True  # leave the last Linear's outputs (the classes) alone
    ignore: tuple[str, ...] = ()  # further layers (and everything inside them) to leave alone

    def __post_init__(self) -> None:
        k = "prune"
        _fraction(k, "ratio", self.ratio, "use e.g. ratio=0.5 to remove half the channels")
        _choice(k, "importance", self.importance, IMPORTANCES)
        _flag(k, "global", self.global_pruning)
        _integer(k, "round_to", self.round_to, 1, "use 1 for no rounding, or e.g. round_to=8")
        _integer(k, "steps", self.steps, 1, "e.g. steps=3 prunes in three steps")
        if self.heads is not None:
            _fraction(k, "heads", self.heads, "use e.g. heads=0.5 to remove half the attention heads")
        _training(k, self.epochs, self.lr, self.seed)
        _flag(k, "keep_classifier", self.keep_classifier)
        _names(k, "ignore", self.ignore)

    def needs_training_data(self) -> Optional[str]:
        if self.importance == "taylor":
            return "prune importance=taylor"
        return f"prune epochs={self.epochs}" if self.epochs else None


@dataclass(frozen=True)
class SparseConfig(PassConfig):
    """Unstructured magnitude pruning: zeroes the smallest `ratio` of each layer's weights (or of all, `global`).

    The zeros stay in the weight tensors: dense runtimes run exactly as many MACs as before, so this needs an
    explicit `allow_sparse=True` (`--allow-sparse`).
    """

    kind: ClassVar[str] = "sparse"
    primary: ClassVar[Optional[str]] = "ratio"
    aliases: ClassVar[Mapping[str, str]] = {"global": "global_pruning"}

    ratio: float
    allow_sparse: bool = False
    global_pruning: bool = False
    keep_classifier: bool = True
    layers: tuple[str, ...] = ()  # only these layers (and those inside them); empty = every Conv/Linear

    def __post_init__(self) -> None:
        k = "sparse"
        _fraction(k, "ratio", self.ratio, "use e.g. ratio=0.5 to zero half the weights")
        _flag(k, "allow_sparse", self.allow_sparse)
        if not self.allow_sparse:
            raise UsageError("sparse (unstructured) pruning only zeroes weights: dense runtimes get no smaller or "
                             "faster model; pass --allow-sparse (allow_sparse=true) to run it anyway, or use --prune")
        _flag(k, "global", self.global_pruning)
        _flag(k, "keep_classifier", self.keep_classifier)
        _names(k, "layers", self.layers)


@dataclass(frozen=True)
class LowRankConfig(PassConfig):
    """Truncated-SVD factorization of Linear (and, with `targets`, Conv2d) layers into two smaller layers.

    Give exactly one of: `ratio`, the fraction of each layer's full rank min(out, in) that is cut (ratio=0.8 keeps
    20 % of the singular values); `energy`, the fraction of the squared singular values kept; `rank`, the rank itself.
    A layer is skipped (and the record says why) when that rank would not reduce its parameters or it has fewer than
    `min_params` weights.
    """

    kind: ClassVar[str] = "lowrank"

    ratio: Optional[float] = None
    energy: Optional[float] = None
    rank: Optional[int] = None
    min_params: int = 1024
    targets: str = "linear"  # linear | conv | all: layer types considered when `layers` is empty
    layers: tuple[str, ...] = ()
    keep_classifier: bool = True  # naming the classifier in `layers` factorizes it anyway

    def __post_init__(self) -> None:
        k = "lowrank"
        given = [name for name in ("ratio", "energy", "rank") if getattr(self, name) is not None]
        if len(given) != 1:
            which = "none" if not given else " and ".join(given)
            raise UsageError(f"lowrank needs exactly one of ratio= (fraction of rank cut), energy= (fraction of "
                             f"squared singular values kept) or rank=; got {which}")
        if self.ratio is not None:
            _fraction(k, "ratio", self.ratio, "it is the fraction of the rank cut, e.g. ratio=0.5")
        if self.energy is not None:
            _fraction(k, "energy", self.energy, "e.g. energy=0.9 keeps 90 % of the spectrum's energy",
                      closed_top=True)
        if self.rank is not None:
            _integer(k, "rank", self.rank, 1, "e.g. rank=16")
        _integer(k, "min_params", self.min_params, 0, "e.g. min_params=1024")
        _choice(k, "targets", self.targets, LOWRANK_TARGETS)
        _names(k, "layers", self.layers)
        _flag(k, "keep_classifier", self.keep_classifier)


@dataclass(frozen=True)
class NdLinearConfig(PassConfig):
    """Replace Linear(m·n -> p·q) layers by a factorized NdLinear acting on the (m, n) grid, one weight per axis.

    Initialised from the original weight by its nearest Kronecker product, then fine-tuned for `epochs` when given
    (needs training data): the Kronecker fit alone usually loses accuracy.
    """

    kind: ClassVar[str] = "ndlinear"

    min_params: int = 1024
    layers: tuple[str, ...] = ()
    keep_classifier: bool = True
    epochs: int = 0
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        k = "ndlinear"
        _integer(k, "min_params", self.min_params, 0, "e.g. min_params=1024")
        _names(k, "layers", self.layers)
        _flag(k, "keep_classifier", self.keep_classifier)
        _training(k, self.epochs, self.lr, self.seed)

    def needs_training_data(self) -> Optional[str]:
        return f"ndlinear epochs={self.epochs}" if self.epochs else None


@dataclass(frozen=True)
class DropLayersConfig(PassConfig):
    """Remove whole transformer blocks: the listed `indices`, or `middle` blocks around the centre of the stack."""

    kind: ClassVar[str] = "drop-layers"
    primary: ClassVar[Optional[str]] = "indices"

    indices: tuple[int, ...] = ()
    middle: Optional[int] = None
    container: Optional[str] = None  # which ModuleList, when the model has several (e.g. encoder.layers)

    def __post_init__(self) -> None:
        k = "drop-layers"
        if bool(self.indices) == (self.middle is not None):
            raise UsageError("drop-layers needs either block indices (e.g. --drop-layers 1,2) or middle=N "
                             "(e.g. --drop-layers middle=2), not both and not neither")
        if not isinstance(self.indices, tuple):
            raise UsageError("drop-layers indices must be a list of block numbers, e.g. 1,2")
        for i in self.indices:
            _integer(k, "index", i, 0, "blocks are numbered from 0")
        if len(set(self.indices)) != len(self.indices):
            raise UsageError(f"drop-layers indices {list(self.indices)} repeat a block; list each block once")
        if self.middle is not None:
            _integer(k, "middle", self.middle, 1, "e.g. middle=2 drops the two central blocks")
        if self.container is not None and (not isinstance(self.container, str) or not self.container):
            raise UsageError("drop-layers container must be a module name, e.g. container=encoder.layers")


@dataclass(frozen=True)
class FinetuneConfig(PassConfig):
    """Supervised fine-tuning on the training data (recovery after the passes before it)."""

    kind: ClassVar[str] = "finetune"
    primary: ClassVar[Optional[str]] = "epochs"

    epochs: int
    lr: float = 1e-3
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        k = "finetune"
        _integer(k, "epochs", self.epochs, 1, "e.g. --finetune 3")
        _training(k, self.epochs, self.lr, self.seed)
        _integer(k, "batch_size", self.batch_size, 1, "e.g. batch_size=64")

    def needs_training_data(self) -> Optional[str]:
        return "finetune"


@dataclass(frozen=True)
class DistillPassConfig(PassConfig):
    """Knowledge distillation into a narrower copy of the model (`width` of every hidden layer), with logit KD
    (temperature, alpha, T^2 scaling) and progressive stages of at most `max_stage_ratio` x fewer parameters."""

    kind: ClassVar[str] = "distill"
    primary: ClassVar[Optional[str]] = "width"

    width: float
    epochs: int = 20
    temperature: float = 4.0
    alpha: float = 0.9
    lr: float = 3e-3
    seed: int = 0
    max_stage_ratio: float = 3.0

    def __post_init__(self) -> None:
        k = "distill"
        _fraction(k, "width", self.width, "e.g. --distill width=0.5 keeps half the channels of every hidden layer")
        _integer(k, "epochs", self.epochs, 1, "e.g. epochs=20")
        _positive(k, "temperature", self.temperature, "e.g. temperature=4")
        _fraction(k, "alpha", self.alpha, "the weight of the soft-target term, e.g. alpha=0.9", closed_top=True)
        _training(k, self.epochs, self.lr, self.seed)
        if _number(k, "max_stage_ratio", self.max_stage_ratio) <= 1.0:
            raise UsageError(f"distill max_stage_ratio={self.max_stage_ratio} must be above 1, e.g. 3")

    def needs_training_data(self) -> Optional[str]:
        return "distill"


PASS_KINDS: dict[str, type[PassConfig]] = {
    c.kind: c for c in (PruneConfig, SparseConfig, LowRankConfig, NdLinearConfig, DropLayersConfig, FinetuneConfig,
                        DistillPassConfig)
}
