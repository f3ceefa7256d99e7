"""The compression passes, in the order the CLI lists them and runs them when given as options.

A pass is one module of this package holding its config class and the function registered for it
(`@register(Config)`); adding a pass is that module, its name below, and its test file.
"""

from __future__ import annotations

import functools
import importlib

from edgepack.compress.base import PassConfig, registered_functions

PASS_MODULES: tuple[str, ...] = ("prune", "sparse", "lowrank", "ndlinear", "layerdrop", "distill", "finetune")


@functools.cache
def _passes() -> tuple[type[PassConfig], ...]:
    configs: list[type[PassConfig]] = []
    for name in PASS_MODULES:
        module = importlib.import_module(f"edgepack.compress.{name}")
        found = [c for c in registered_functions() if c.__module__ == module.__name__]
        if len(found) != 1:
            raise TypeError(f"pass module {module.__name__} must register exactly one config with @register, "
                            f"found {len(found)}")
        configs.append(found[0])
    kinds = [c.kind for c in configs]
    if len(set(kinds)) != len(kinds):
        raise TypeError(f"two passes share a kind: {kinds}")
    return tuple(configs)


def registered_passes() -> list[type[PassConfig]]:
    """Every pass's config class, in the CLI's order. Imports no torch: pass modules import it when they run."""
    return list(_passes())


def config_for_kind(kind: str) -> type[PassConfig] | None:
    """The config class whose kind (or one of its spellings) is `kind`; None when no pass has that name."""
    for config in _passes():
        if kind in (config.kind, config.kind.replace("-", "_"), *config.kind_aliases):
            return config
    return None
