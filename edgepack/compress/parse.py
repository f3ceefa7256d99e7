"""Turn CLI option strings (`--prune ratio=0.5,steps=3`), option mappings and recipe lists into validated pass
configs, for any pass in the registry: the fields, their types and defaults come from the config dataclass.

Unknown pass kinds and keys are refused with the close matches; nothing is corrected silently.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgepack.compress.base import PassConfig
from edgepack.compress.registry import config_for_kind, registered_passes
from edgepack.errors import UsageError, did_you_mean

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def known_kinds() -> list[str]:
    return [c.kind for c in registered_passes()]


def config_class(kind: str, where: str = "") -> type[PassConfig]:
    """The config class of the pass named `kind` (recipes may write `drop_layers` for `drop-layers`)."""
    config = config_for_kind(kind)
    if config is None:
        kinds = known_kinds()
        raise UsageError(f"{where or 'compression pass'}: unknown pass {kind!r}{did_you_mean(kind, kinds)}; "
                         f"known passes: {', '.join(kinds)}")
    return config


def parse_pass(kind: str, text: str, *, allow_sparse: bool = False,
               extra: Mapping[str, Any] | None = None) -> PassConfig:
    """Parse the value of a CLI option such as `--prune 0.5` or `--lowrank energy=0.9,layers=fc,head`.

    A bare first value sets the pass's main field (prune/sparse: ratio, finetune: epochs, drop-layers: indices).
    Values without `=` after a list-valued key extend that list, so `layers=fc,head` lists two layers.
    `allow_sparse` (the CLI's --allow-sparse) is passed to sparse passes and ignored by the others; `extra` adds
    fields given by other options.
    """
    cls = config_class(kind, f"--{kind}")
    where = f"--{cls.kind}"
    values = _split(cls, str(text), where)
    for key, value in (extra or {}).items():
        values[_field_name(cls, key, where)] = value
    return _build(cls, _with_allow_sparse(cls, values, allow_sparse), where)


def parse_options(kind: str, values: Mapping[str, Any], *, allow_sparse: bool = False,
                  where: str | None = None) -> PassConfig:
    """A config from option values given one by one (text from a command line, or numbers), e.g. the distill
    command's `{student: zoo:digits-cnn, epochs: 5, feature_pairs: "a:b,c:d", max_stage_ratio: none}`. `where`
    prefixes error messages."""
    cls = config_class(kind, where or f"--{kind}")
    where = where or f"--{cls.kind}"
    fields = {_field_name(cls, str(key), where): value for key, value in values.items()}
    return _build(cls, _with_allow_sparse(cls, fields, allow_sparse), where)


RecipeSource = Iterable[Any] | os.PathLike[str]


def parse_recipe(steps: RecipeSource, *, allow_sparse: bool = False) -> list[PassConfig]:
    """Configs from a recipe: a list such as `[{prune: {ratio: 0.5}}, {finetune: 3}, {lowrank: energy=0.9}]` (YAML),
    or the path of a YAML file holding that list (at the top level or under `passes:`).

    `allow_sparse` (the CLI's --allow-sparse) is passed to sparse steps that do not set it themselves.
    """
    if isinstance(steps, os.PathLike):
        steps = _read_recipe(Path(steps))
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Iterable):
        raise UsageError("a compression recipe is a list of single-key mappings, e.g. [{prune: {ratio: 0.5}}]")
    configs = []
    for i, step in enumerate(steps, 1):
        if not isinstance(step, Mapping) or len(step) != 1:
            raise UsageError(f"recipe step {i}: expected one mapping like {{prune: {{ratio: 0.5}}}}, got {step!r}")
        (kind, body), = step.items()
        cls = config_class(str(kind), f"recipe step {i}")
        where = f"recipe step {i} ({cls.kind})"
        if body is None:
            values: dict[str, Any] = {}
        elif isinstance(body, Mapping):
            values = {_field_name(cls, str(k), where): v for k, v in body.items()}
        elif isinstance(body, str):
            values = _split(cls, body, where)
        elif cls.primary is not None and isinstance(body, (int, float, list, tuple)):
            values = {cls.primary: body}
        else:
            raise UsageError(f"{where}: expected a mapping of options, got {body!r}")
        configs.append(_build(cls, _with_allow_sparse(cls, values, allow_sparse), where))
    return configs


def options_help(kind: str) -> str:
    """One line listing a pass's options and defaults, for CLI help texts."""
    cls = config_class(kind)
    reverse = {field: key for key, field in cls.aliases.items()}
    parts = []
    for f in dataclasses.fields(cls):
        key = reverse.get(f.name, f.name)
        if f.default is dataclasses.MISSING:
            parts.append(f"{key}=<required>")
        else:
            default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            parts.append(f"{key}={str(default).lower() if isinstance(default, bool) else default}")
    return ", ".join(parts)


# ---- internals ----

def _read_recipe(path: Path) -> Any:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"recipe {path}: not a text file (not UTF-8); a recipe is YAML") from None
    except OSError as exc:
        raise UsageError(f"recipe {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"recipe {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, Mapping):
        if set(data) != {"passes"}:
            raise UsageError(f"recipe {path}: expected a list of passes, or a mapping with only `passes:`; "
                             f"found keys {', '.join(map(str, data))}")
        data = data["passes"]
    if not isinstance(data, list):
        raise UsageError(f"recipe {path}: expected a list of passes such as `- prune: {{ratio: 0.5}}`")
    return data


def _with_allow_sparse(cls: type[PassConfig], values: dict[str, Any], allow_sparse: bool) -> dict[str, Any]:
    if allow_sparse and "allow_sparse" in {f.name for f in dataclasses.fields(cls)}:
        values.setdefault("allow_sparse", True)
    return values


def _split(cls: type[PassConfig], text: str, where: str) -> dict[str, Any]:
    """`a=1,b=x,y` -> {"a": "1", "b": ["x", "y"]} for list-valued b; a leading bare value fills `primary`."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    current: str | None = None
    for i, raw in enumerate(text.split(",")):
        token = raw.strip()
        if not token:
            if text.strip():
                raise UsageError(f"{where} {text!r}: empty item between commas")
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            current = _field_name(cls, key.strip(), where)
            if current in values:
                raise UsageError(f"{where}: {key.strip()} is given twice")
            values[current] = [value.strip()] if _is_list(hints[current]) else value.strip()
        elif current is not None and _is_list(hints[current]):
            values[current].append(token)
        elif i == 0 and cls.primary is not None:
            current = cls.primary
            values[current] = [token] if _is_list(hints[current]) else token
        else:
            example = f"{cls.primary}={token}" if cls.primary and i > 0 else f"key={token}"
            raise UsageError(f"{where} {text!r}: {token!r} is not key=value (write e.g. {example}); "
                             f"options: {options_help(cls.kind)}")
    return values


def _field_name(cls: type[PassConfig], key: str, where: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    if key in cls.aliases:
        return cls.aliases[key]
    if key in names:
        return key
    known = list(cls.aliases) + [n for n in names if n not in cls.aliases.values()]
    raise UsageError(f"{where}: unknown option {key!r}{did_you_mean(key, known)}; options: {', '.join(known)}")


def _build(cls: type[PassConfig], values: dict[str, Any], where: str) -> PassConfig:
    hints = typing.get_type_hints(cls)
    reverse = {field: key for key, field in cls.aliases.items()}
    kwargs = {name: _coerce(hints[name], value, where, reverse.get(name, name)) for name, value in values.items()}
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise UsageError(f"{where}: {', '.join(missing)} is required; options: {options_help(cls.kind)}")
    return cls(**kwargs)


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _coerce(inner, value, where, key)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # a list: tuple[X, ...]
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif not isinstance(value, (list, tuple)):
                value = [value]
            return tuple(_coerce(args[0], v, where, key) for v in value)
        # a fixed-size item such as a (teacher, student) pair, written a:b on the command line
        parts = [v.strip() for v in value.split(":")] if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)) or len(parts) != len(args):
            raise UsageError(f"{where}: {key} item {value!r} must have {len(args)} parts, written "
                             f"{':'.join('x' * len(args))}")
        return tuple(_coerce(a, v, where, key) for a, v in zip(args, parts, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise UsageError(f"{where}: {key}={value!r} must be true or false")
    if hint in (int, float):
        # a YAML recipe gives numbers, the command line gives text; floats also accept whole numbers
        accepted = (int,) if hint is int else (int, float)
        if isinstance(value, accepted) and not isinstance(value, bool):
            return hint(value)
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        raise UsageError(f"{where}: {key}={value!r} is not a {'whole number' if hint is int else 'number'}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{where}: {key}={value!r} must be text")
    return value


def recipe_fields(config: PassConfig) -> dict[str, Any]:
    """The fields a recipe must state for `config`: those without a default or set to something else, as `to_dict`
    writes them (tuples as lists), so `parse_recipe` reads the step back to an equal config."""
    values = config.to_dict()
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out[f.name] = values[f.name]
            continue
        if values[f.name] != (list(default) if isinstance(default, tuple) else default):
            out[f.name] = values[f.name]
    return out


def recipe_steps(passes: Iterable[PassConfig]) -> list[dict[str, Any]]:
    """Passes as recipe steps, `[{kind: {field: value}}]`."""
    return [{p.kind: recipe_fields(p)} for p in passes]


def recipe_yaml(passes: Iterable[PassConfig], comments: Iterable[str] = ()) -> str:
    """A recipe file: `comments` as `#` lines on top, then the steps (`[]` for none)."""
    import yaml

    steps = recipe_steps(passes)
    head = "".join(f"# {line}\n" for line in comments)
    return head + (yaml.safe_dump(steps, sort_keys=False) if steps else "[]\n")
