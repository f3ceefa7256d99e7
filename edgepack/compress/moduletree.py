"""Finding, naming and replacing layers in a model, with the names a user sees in their own model."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn

from edgepack.errors import UsageError
from edgepack.records import SkippedLayer


def user_root(module: nn.Module) -> nn.Module:
    """The user's model: the loader may wrap it to pick one output, which would prefix every name with `model.`."""
    from edgepack.models.outputs import OutputSelector

    return module.model if isinstance(module, OutputSelector) else module


def layers_of(root: nn.Module, types: tuple[type[nn.Module], ...]) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in root.named_modules() if name and isinstance(m, types)]


def classifier_name(root: nn.Module) -> str | None:
    """The last nn.Linear registered: the class scores in the classifiers this tool targets."""
    linears = layers_of(root, (nn.Linear,))
    return linears[-1][0] if linears else None


def resolve(root: nn.Module, names: Iterable[str], option: str) -> list[str]:
    """Check that every name is a module of `root`; unknown names list the close ones and nothing is guessed."""
    known = [name for name, _ in root.named_modules() if name]
    known_set = set(known)
    for name in names:
        if name not in known_set:
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
            hint = (f"did you mean {', '.join(close)}?" if close
                    else f"its layers include {', '.join(n for n, _ in layers_of(root, (nn.Linear, nn.Conv2d))[:8])}")
            raise UsageError(f"{option}: {type(root).__name__} has no layer {name!r}; {hint}")
    return list(names)


def within(name: str, prefixes: Iterable[str]) -> bool:
    """True when `name` is one of the prefixes or lies inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def select(root: nn.Module, types: tuple[type, ...], *, layers: tuple[str, ...], keep_classifier: bool,
           option: str, ignore: tuple[str, ...] = ()) -> tuple[list[tuple[str, nn.Module]], list[SkippedLayer]]:
    """Layers of the given types a pass works on, and the ones it leaves out with the reason.

    All layers of those types, or those inside `layers`; minus the classifier (when `keep_classifier`) and `ignore`.
    A classifier named in `layers` is included: naming it is asking for it.
    """
    resolve(root, layers + ignore, option)
    classifier = classifier_name(root) if keep_classifier else None
    chosen: list[tuple[str, nn.Module]] = []
    left_out: list[SkippedLayer] = []
    for name, m in layers_of(root, types):
        if layers and not within(name, layers):
            continue
        if not layers and name == classifier:
            left_out.append(SkippedLayer(layer=name, type=type(m).__name__, reason="classifier (keep_classifier)"))
        elif within(name, ignore):
            left_out.append(SkippedLayer(layer=name, type=type(m).__name__, reason="ignored"))
        else:
            chosen.append((name, m))
    return chosen, left_out


def replacement_refused(root: nn.Module, name: str) -> str | None:
    """Why the layer `name` cannot be swapped for another module, if it can't.

    nn.MultiheadAttention hands its out_proj's weight to a functional kernel instead of calling it, and
    nn.TransformerEncoderLayer/DecoderLayer read their Linear weights to pick a fast path: a replacement would be
    ignored or break them.
    """
    parent_name = name.rpartition(".")[0]
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return f"{type(parent).__name__} reads this layer's weight directly; it cannot be replaced"
    return None


def replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
