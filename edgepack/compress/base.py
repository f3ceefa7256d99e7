"""What every compression pass shares: the config base class, the context and result of a run, the registration of a
config beside its function, and the checks configs validate themselves with.

Stdlib only: the CLI reads every config class (kind, metavar, help, fields) at `--help` time, before torch exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from edgepack.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgepack.data.dataset import ArrayDataset
    from edgepack.records import BlocksDropped, DistillStage, LayerChange, SkippedLayer, TrainingEpoch

SayFn = Callable[[str], None]  # where a pass reports progress: the build's Progress.say
ModelLoader = Callable[[str], "nn.Module"]


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass config; a subclass is a frozen dataclass that validates itself in `__post_init__`.

    The class variables are what the CLI and the recipe parser need: `kind` names the pass (`--<kind>`, the recipe
    key), `primary` is the field a bare value sets (`--prune 0.5`), `metavar` and `help` describe the `--<kind>`
    option in one line, `aliases` map user-facing keys to field names that can't be the key (`global`), and
    `kind_aliases` are other spellings of the kind a recipe may use.
    """

    kind: ClassVar[str] = ""
    primary: ClassVar[str | None] = None
    metavar: ClassVar[str] = "k=v,..."
    help: ClassVar[str] = ""
    aliases: ClassVar[Mapping[str, str]] = {}
    kind_aliases: ClassVar[tuple[str, ...]] = ()
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # field -> its valid values (validation and JSON schema)

    def needs_training_data(self) -> str | None:
        """What in this config needs training data (named in the error message when none is given), or None."""
        return None

    def needs_labels(self) -> bool:
        """Whether the training data this config needs must be labelled."""
        return True

    def needs_model_loader(self) -> str | None:
        """What in this config names a model to load (apply_passes' `load_model`), or None."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists); `parse_recipe([{kind: d}])` reads it back."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


@dataclass
class PassContext:
    """What a pass may use besides the model and its config."""

    example_inputs: tuple[torch.Tensor, ...]
    train: ArrayDataset | None = None
    eval: ArrayDataset | None = None
    progress: SayFn | None = None
    load_model: ModelLoader | None = None  # loads a model spec a config names (a distillation student)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class PassResult:
    """A pass's output: the (possibly new) module and what it did, as the typed rows of its PassRecord."""

    module: nn.Module
    changes: tuple[LayerChange, ...] = ()
    skipped: tuple[SkippedLayer, ...] = ()
    training: tuple[TrainingEpoch, ...] = ()
    stages: tuple[DistillStage, ...] = ()
    dropped: BlocksDropped | None = None
    notes: tuple[str, ...] = ()


C = TypeVar("C", bound=PassConfig)
PassFunction = Callable[["nn.Module", Any, PassContext], PassResult]
F = TypeVar("F", bound=Callable[..., PassResult])

_FUNCTIONS: dict[type[PassConfig], PassFunction] = {}


def register(config: type[PassConfig]) -> Callable[[F], F]:
    """Register the decorated function as the one that applies `config` (dispatch is on the config's type)."""
    if not (isinstance(config, type) and issubclass(config, PassConfig) and dataclasses.is_dataclass(config)):
        raise TypeError(f"register() takes a PassConfig dataclass, got {config!r}")
    for name in ("kind", "metavar", "help"):
        if not getattr(config, name):
            raise TypeError(f"{config.__name__} must declare the class variable {name!r}")

    def decorate(function: F) -> F:
        _FUNCTIONS[config] = function
        return function

    return decorate


def registered_functions() -> Mapping[type[PassConfig], PassFunction]:
    """Every registered config class and its function, as far as their modules have been imported."""
    return _FUNCTIONS


# ---- checks configs validate themselves with: one-line messages saying what is wrong and what would be right ----

def number(kind: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{kind} {key}={value!r} is not a finite number")
    return float(value)


def fraction(kind: str, key: str, value: Any, hint: str, *, closed_top: bool = False,
             closed_bottom: bool = False) -> None:
    v = number(kind, key, value)
    above = v >= 0.0 if closed_bottom else v > 0.0
    below = v <= 1.0 if closed_top else v < 1.0
    if not (above and below):
        span = f"{'[' if closed_bottom else '('}0, 1{']' if closed_top else ')'}"
        raise UsageError(f"{kind} {key}={value} is outside {span}; {hint}")


def integer(kind: str, key: str, value: Any, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{kind} {key}={value!r} is not an integer{'; ' + hint if hint else ''}")
    if value < minimum:
        raise UsageError(f"{kind} {key}={value} is below {minimum}{'; ' + hint if hint else ''}")


def positive(kind: str, key: str, value: Any, hint: str) -> None:
    if number(kind, key, value) <= 0:
        raise UsageError(f"{kind} {key}={value} must be positive; {hint}")


def non_negative(kind: str, key: str, value: Any, hint: str) -> None:
    if number(kind, key, value) < 0:
        raise UsageError(f"{kind} {key}={value} must be 0 or more; {hint}")


def choice(kind: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{kind} {key}={value!r} is not one of: {', '.join(choices)}")


def flag(kind: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{kind} {key}={value!r} must be true or false")


def names(kind: str, key: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{kind} {key} must be a list of layer names, e.g. {key}=fc,blocks.0")


def training(kind: str, epochs: Any, lr: Any, seed: Any) -> None:
    integer(kind, "epochs", epochs, 0, "use 0 for no fine-tuning or a few epochs, e.g. epochs=3")
    positive(kind, "lr", lr, "e.g. lr=0.001")
    integer(kind, "seed", seed, 0)
