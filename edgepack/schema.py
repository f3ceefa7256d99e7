"""JSON schemas of target files and compression recipes, generated from the dataclasses that validate them: each
runtime's options_type, the `measure:` settings and every registered pass config (fields, types, defaults, choices).

The schemas ship beside the bundled targets (`targets/target.schema.json`, `targets/recipe.schema.json`) for editors
and other tools; edgepack itself validates with the dataclasses. Regenerate them after changing an options or pass
config class:

    python -m edgepack.schema            # rewrite the shipped files
    python -m edgepack.schema --check    # exit 1 when they are stale

Field metadata read here (as `edgepack.runtimes.base.option()` writes it): "choices" (the allowed values, an enum),
"doc" (a description), "minimum"/"maximum". A pass config may also declare `choices: ClassVar[Mapping[str, tuple]]`
(field name -> allowed values) when its choices are checked in `__post_init__`. Torch-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from edgepack.config import field_choices, field_hints, is_union

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TARGET_SCHEMA_FILE = "target.schema.json"
RECIPE_SCHEMA_FILE = "recipe.schema.json"

_NONE = type(None)


# ---- dataclasses -> JSON schema ----------------------------------------------------------------------------------

def hint_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of one type hint."""
    args = typing.get_args(hint)
    if is_union(hint):
        return {"anyOf": [hint_schema(a) for a in args]}
    if hint is _NONE:
        return {"type": "null"}
    if typing.get_origin(hint) is typing.Literal:
        return {"enum": list(args)}
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": hint_schema(args[0])}
        return {"type": "array", "prefixItems": [hint_schema(a) for a in args], "items": False,
                "minItems": len(args)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple[hint]} if hint in simple else {}


def field_schema(cls: type, f: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    """A field's schema: its type, allowed values, bounds, description and default."""
    schema = hint_schema(hint)
    choices = field_choices(cls, f)
    if choices is not None:
        schema = {"enum": [_jsonable(c) for c in choices]}
    for bound in ("minimum", "maximum"):
        if bound in f.metadata:
            schema[bound] = f.metadata[bound]
    if f.metadata.get("doc"):
        schema["description"] = f.metadata["doc"]
    if f.default is not dataclasses.MISSING:
        schema["default"] = _jsonable(f.default)
    elif f.default_factory is not dataclasses.MISSING:
        schema["default"] = _jsonable(f.default_factory())
    return schema


def dataclass_schema(cls: type, aliases: Optional[Mapping[str, str]] = None, description: str = "") -> dict[str, Any]:
    """An object with one property per field (and per alias: another key for a field), no other keys."""
    hints = field_hints(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        properties[f.name] = field_schema(cls, f, hints[f.name])
    for alias, name in (aliases or {}).items():
        properties[alias] = {**properties[name], "description": f"same as {name}"}
    schema: dict[str, Any] = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    schema["additionalProperties"] = False
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        schema["required"] = required
    return schema


def _doc(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    text = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split())


# ---- the two schemas ------------------------------------------------------------------------------------------------

def target_schema() -> dict[str, Any]:
    """The schema of a target file: top-level keys from edgepack.config, each runtime's section from its options."""
    from edgepack import config
    from edgepack.budgets import METRICS
    from edgepack.runtimes import REGISTRY, runtime_class
    from edgepack.tasks import ParityFloor

    names = list(REGISTRY)
    sections = {name: {"anyOf": [{"type": "null"},
                                 dataclass_schema(runtime_class(name).options_type,
                                                  description=_doc(runtime_class(name).options_type))]}
                for name in names}
    phone_runtimes = [name for name in names if runtime_class(name).phone_runner]
    keys = config.TARGET_KEYS
    properties: dict[str, Any] = {
        "name": {"type": "string", "pattern": config.TARGET_NAME_PATTERN, "description": keys["name"]},
        "description": {"type": "string", "default": "", "description": keys["description"]},
        "arch": {"type": "string", "default": "", "description": keys["arch"]},
        "runtimes": {"description": keys["runtimes"], "anyOf": [
            {"type": "object", "properties": sections, "additionalProperties": False, "minProperties": 1},
            {"type": "array", "items": {"enum": names}, "minItems": 1, "uniqueItems": True},
        ]},
        "default_runtimes": {"type": "array", "items": {"enum": names}, "minItems": 1, "uniqueItems": True,
                             "description": keys["default_runtimes"]},
        "precision": {"enum": list(config.TARGET_PRECISIONS), "default": config.TARGET_PRECISIONS[0],
                      "description": keys["precision"]},
        "threads": {"type": "integer", "minimum": 1, "default": config.DEFAULT_THREADS,
                    "description": keys["threads"]},
        "measure": {"anyOf": [{"type": "null"},
                              dataclass_schema(config.MeasureSettings, description=keys["measure"])]},
        "device": {"type": "string", "pattern": config.DEVICE_PATTERN, "default": "host",
                   "description": keys["device"]},
        "runner": {"description": keys["runner"], "anyOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False,
            "properties": {name: {"type": "string", "minLength": 1} for name in phone_runtimes}}]},
        "budgets": {"description": keys["budgets"], "anyOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False,
            "properties": {metric: {"type": "string", "pattern": _budget_pattern(table), "description": how}
                           for metric, (_unit, table, how) in METRICS.items()}}]},
        "bundle": {"type": "boolean", "default": False, "description": keys["bundle"]},
        "parity_floor": {"anyOf": [{"type": "null"},
                                   dataclass_schema(ParityFloor, description=keys["parity_floor"])]},
    }
    if set(properties) != set(keys):
        raise TypeError(f"target_schema() describes {sorted(properties)}; config.TARGET_KEYS lists {sorted(keys)}")
    return {
        "$schema": DRAFT,
        "title": "edgepack target file",
        "description": "Where a model runs and with what: runtimes and their options, precision, threads, how to "
                       "measure, default budgets. Generated by `python -m edgepack.schema`; edgepack validates "
                       "target files itself on load (with the same rules and a few this schema cannot express, "
                       "such as default_runtimes being among runtimes).",
        "type": "object",
        "properties": properties,
        "required": list(config.REQUIRED_TARGET_KEYS),
        "additionalProperties": False,
    }


def recipe_schema() -> dict[str, Any]:
    """The schema of a compression recipe: a list of single-key steps `{<pass>: options}`, or `{passes: [...]}`."""
    from edgepack.compress.registry import registered_passes

    step_properties: dict[str, Any] = {}
    for cls in registered_passes():
        body_forms: list[dict[str, Any]] = [
            {"type": "null"},
            {"type": "string", "description": "the command-line form, e.g. " + _example(cls)},
            dataclass_schema(cls, aliases=cls.aliases),
        ]
        if cls.primary is not None:
            primary = next(f for f in dataclasses.fields(cls) if f.name == cls.primary)
            form = field_schema(cls, primary, field_hints(cls)[cls.primary])
            form.pop("default", None)
            body_forms.append({**form, "description": f"sets {cls.primary}"})
        body = {"description": _doc(cls), "anyOf": body_forms}
        spellings = dict.fromkeys((cls.kind, cls.kind.replace("-", "_"), *cls.kind_aliases))
        for spelling in spellings:
            step_properties[spelling] = body if spelling == cls.kind else {**body, "description": f"same as {cls.kind}"}
    step = {"type": "object", "properties": step_properties, "additionalProperties": False,
            "minProperties": 1, "maxProperties": 1}
    steps = {"type": "array", "items": {"$ref": "#/$defs/step"}}
    return {
        "$schema": DRAFT,
        "title": "edgepack compression recipe",
        "description": "Compression passes run in order: a list of steps such as `- prune: {ratio: 0.5}`, or a "
                       "mapping with only `passes:` holding that list. Option values are given with their types "
                       "here; edgepack also reads the command-line text form (`prune: ratio=0.5,steps=3`). "
                       "Generated by `python -m edgepack.schema`.",
        "anyOf": [
            steps,
            {"type": "object", "properties": {"passes": steps}, "required": ["passes"],
             "additionalProperties": False},
        ],
        "$defs": {"step": step},
    }


def render(schema: Mapping[str, Any]) -> str:
    """The text a schema file holds (stable: key order as generated, two-space indent, final newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """File name -> text of every schema file edgepack ships."""
    return {TARGET_SCHEMA_FILE: render(target_schema()), RECIPE_SCHEMA_FILE: render(recipe_schema())}


def shipped_dir() -> Path:
    """Where the bundled targets and schemas are (the repository's targets/ in a checkout or editable install)."""
    from edgepack.config import bundled_targets_dir

    return bundled_targets_dir()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgepack.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped schema differs from a fresh one")
    parser.add_argument("--out", type=Path, default=None, help="directory to write to (default: the bundled targets)")
    args = parser.parse_args(argv)
    out = args.out or shipped_dir()
    stale = []
    for name, text in generated().items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "schemas are up to date", file=sys.stderr)
    return 1 if args.check and stale else 0


# ---- helpers --------------------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _budget_pattern(units: Mapping[str, float]) -> str:
    """A number and one of the units (any letter case), as edgepack.budgets reads them."""
    def any_case(unit: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in unit)

    alternatives = "|".join(any_case(u) for u in sorted(units, key=len, reverse=True))
    return rf"^\s*\+?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*({alternatives})\s*$"


def _example(cls: type) -> str:
    return f"`{getattr(cls, 'kind', '')}: {getattr(cls, 'metavar', 'k=v,...')}`"


if __name__ == "__main__":
    sys.exit(main())
