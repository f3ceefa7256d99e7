"""The JSON schemas shipped beside the targets: equal to a fresh generation, generated from the dataclasses that
validate target files and recipes, satisfied by every bundled target, and refusing what edgepack refuses.

Validated with a small checker of the keywords the generator uses (below), so the suite needs no JSON-schema package;
the checker refuses any other keyword, so a schema can't pass by using one it skips.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgepack.compress import parse_recipe, registered_passes
from edgepack.config import MeasureSettings, bundled_target_files, field_choices, load_target
from edgepack.errors import UsageError
from edgepack.runtimes import REGISTRY, runtime_class
from edgepack.schema import RECIPE_SCHEMA_FILE, TARGET_SCHEMA_FILE, generated, recipe_schema, target_schema

REPO = Path(__file__).resolve().parent.parent

# ---- a checker for the subset of JSON Schema (2020-12) the generator writes --------------------------------------
_ANNOTATIONS = {"$schema", "title", "description", "default", "$defs"}
_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)
    or (isinstance(v, float) and math.isfinite(v) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def violations(value: Any, schema: Any, root: dict[str, Any], at: str = "$") -> list[str]:
    """Why `value` does not satisfy `schema` (empty when it does)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{at}: nothing is allowed here"]
    unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
    if unknown:
        raise AssertionError(f"the checker does not know keyword(s) {sorted(unknown)} (at {at})")
    errors: list[str] = []
    for keyword, argument in schema.items():
        if keyword in _KEYWORDS:
            errors += _KEYWORDS[keyword](value, argument, schema, root, at)
    return errors


def _ref(value, ref, schema, root, at):
    assert ref.startswith("#/"), ref
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return violations(value, target, root, at)


def _type(value, names, schema, root, at):
    names = [names] if isinstance(names, str) else names
    return [] if any(_TYPES[n](value) for n in names) else [f"{at}: {value!r} is not of type {'/'.join(names)}"]


def _enum(value, choices, schema, root, at):
    same = any(type(value) is type(c) and value == c for c in choices)
    return [] if same else [f"{at}: {value!r} is not one of {choices}"]


def _properties(value, properties, schema, root, at):
    if not isinstance(value, dict):
        return []
    errors = []
    for key, item in value.items():
        if key in properties:
            errors += violations(item, properties[key], root, f"{at}.{key}")
    return errors


def _additional(value, allowed, schema, root, at):
    if not isinstance(value, dict):
        return []
    extra = [k for k in value if k not in schema.get("properties", {})]
    if allowed is False:
        return [f"{at}: unexpected key(s) {extra}"] if extra else []
    return [e for k in extra for e in violations(value[k], allowed, root, f"{at}.{k}")]


def _required(value, keys, schema, root, at):
    missing = [k for k in keys if isinstance(value, dict) and k not in value]
    return [f"{at}: missing {missing}"] if missing else []


def _bound(compare, word):
    def check(value, bound, schema, root, at):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [f"{at}: {value!r} is {word} {bound}"] if numeric and compare(value, bound) else []
    return check


def _count(measure, compare, word):
    def check(value, bound, schema, root, at):
        n = measure(value)
        return [f"{at}: has {n}, {word} {bound}"] if n is not None and compare(n, bound) else []
    return check


def _pattern(value, pattern, schema, root, at):
    return [f"{at}: {value!r} does not match {pattern}"] if isinstance(value, str) and not re.search(pattern, value) \
        else []


def _items(value, item_schema, schema, root, at):
    if not isinstance(value, list):
        return []
    start = len(schema.get("prefixItems", []))
    return [e for i, v in enumerate(value[start:], start) for e in violations(v, item_schema, root, f"{at}[{i}]")]


def _prefix_items(value, schemas, schema, root, at):
    if not isinstance(value, list):
        return []
    return [e for i, (v, s) in enumerate(zip(value, schemas)) for e in violations(v, s, root, f"{at}[{i}]")]


def _unique(value, flag, schema, root, at):
    if not flag or not isinstance(value, list):
        return []
    seen = [json.dumps(v, sort_keys=True) for v in value]
    return [f"{at}: repeated items"] if len(set(seen)) != len(seen) else []


def _any_of(value, schemas, schema, root, at):
    arms = [violations(value, s, root, at) for s in schemas]
    if any(not errors for errors in arms):
        return []
    return [f"{at}: matches none of {len(schemas)} forms: " + " | ".join("; ".join(e) for e in arms)]


_KEYWORDS = {
    "$ref": _ref, "type": _type, "enum": _enum, "properties": _properties, "additionalProperties": _additional,
    "required": _required, "minimum": _bound(lambda v, b: v < b, "below"),
    "maximum": _bound(lambda v, b: v > b, "above"), "pattern": _pattern, "items": _items,
    "prefixItems": _prefix_items, "uniqueItems": _unique, "anyOf": _any_of,
    "minLength": _count(lambda v: len(v) if isinstance(v, str) else None, lambda n, b: n < b, "fewer than"),
    "minItems": _count(lambda v: len(v) if isinstance(v, list) else None, lambda n, b: n < b, "fewer than"),
    "maxItems": _count(lambda v: len(v) if isinstance(v, list) else None, lambda n, b: n > b, "more than"),
    "minProperties": _count(lambda v: len(v) if isinstance(v, dict) else None, lambda n, b: n < b, "fewer than"),
    "maxProperties": _count(lambda v: len(v) if isinstance(v, dict) else None, lambda n, b: n > b, "more than"),
}


def valid(value: Any, schema: dict[str, Any]) -> list[str]:
    return violations(value, schema, schema)


# ---- the shipped files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [TARGET_SCHEMA_FILE, RECIPE_SCHEMA_FILE])
def test_shipped_schemas_equal_a_fresh_generation(name):
    shipped = REPO / "targets" / name
    assert shipped.is_file(), f"{name} is not shipped; run `python -m edgepack.schema`"
    assert shipped.read_text(encoding="utf-8") == generated()[name], \
        f"targets/{name} is stale; run `python -m edgepack.schema`"


def test_the_module_writes_and_checks_the_schemas(tmp_path):
    run = [sys.executable, "-m", "edgepack.schema"]
    written = subprocess.run([*run, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == generated()
    (tmp_path / TARGET_SCHEMA_FILE).write_text("{}\n")
    stale = subprocess.run([*run, "--check", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and TARGET_SCHEMA_FILE in stale.stderr
    assert (tmp_path / TARGET_SCHEMA_FILE).read_text() == "{}\n", "--check must not write"
    assert subprocess.run([*run, "--check"], capture_output=True, timeout=120).returncode == 0


def test_the_checker_refuses_keywords_it_does_not_know():
    with pytest.raises(AssertionError, match="does not know"):
        valid(1, {"multipleOf": 2})


# ---- generated from the dataclasses --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_runtime_section_comes_from_its_options_type(name):
    options_type = runtime_class(name).options_type
    section = target_schema()["properties"]["runtimes"]["anyOf"][0]["properties"][name]["anyOf"][1]
    assert list(section["properties"]) == [f.name for f in dataclasses.fields(options_type)]
    assert section["additionalProperties"] is False
    defaults = options_type()
    for f in dataclasses.fields(options_type):
        prop = section["properties"][f.name]
        default = getattr(defaults, f.name)
        assert prop["default"] == (list(default) if isinstance(default, tuple) else default), f.name
        choices = field_choices(options_type, f)
        assert prop.get("enum") == (list(choices) if choices is not None else None), f.name


def test_measure_comes_from_its_dataclass():
    measure = target_schema()["properties"]["measure"]["anyOf"][1]
    assert list(measure["properties"]) == [f.name for f in dataclasses.fields(MeasureSettings)]
    assert measure["properties"]["runs"]["minimum"] == 1 and measure["properties"]["warmup"]["minimum"] == 0
    assert measure["properties"]["latency_stat"]["enum"] == ["p50", "p90", "p99", "mean"]


def test_each_pass_and_its_fields_are_in_the_recipe_schema():
    steps = recipe_schema()["$defs"]["step"]["properties"]
    for cls in registered_passes():
        body = steps[cls.kind]["anyOf"]
        mapping = next(form for form in body if form.get("type") == "object")
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(mapping["properties"])[: len(names)] == names
        assert set(mapping["properties"]) == set(names) | set(cls.aliases)
        for f in dataclasses.fields(cls):
            choices = field_choices(cls, f)
            if choices is not None:
                assert mapping["properties"][f.name]["enum"] == list(choices)


# ---- target files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(bundled_target_files()))
def test_every_bundled_target_satisfies_the_schema(name):
    data = yaml.safe_load(bundled_target_files()[name].read_text())
    assert valid(data, target_schema()) == []


GOOD_TARGET = """\
    name: my-board
    arch: arm64
    runtimes:
      executorch: {partitioner: xnnpack, calibration_samples: 64}
      litert:
    default_runtimes: [executorch]
    precision: fp32
    threads: 4
    measure: {runs: 7, warmup: 0, latency_stat: p99}
    device: adb:R58M123ABC
    runner: {executorch: bin/executor_runner}
    budgets: {size: 10MB, latency: 20 ms, memory: 200MiB, accuracy_drop: 0.5%}
    bundle: true
"""


def test_a_full_target_satisfies_the_schema_and_loads(tmp_path):
    data = yaml.safe_load(textwrap.dedent(GOOD_TARGET))
    assert valid(data, target_schema()) == []
    path = tmp_path / "b.yaml"
    path.write_text(textwrap.dedent(GOOD_TARGET))
    load_target(str(path))


# edits of a valid target that both the schema and the loader refuse
REFUSED_TARGETS = {
    "unknown key": {"threadz": 2},
    "measure text": {"measure": "fast"},
    "measure key": {"measure": {"runz": 3}},
    "runs zero": {"measure": {"runs": 0}},
    "latency stat": {"measure": {"latency_stat": "p75"}},
    "threads text": {"threads": "many"},
    "threads zero": {"threads": 0},
    "threads bool": {"threads": True},
    "precision": {"precision": "bf16"},
    "device": {"device": "phone"},
    "device no serial": {"device": "adb:"},
    "unknown runtime": {"runtimes": {"tensorrt": {}}},
    "unknown option": {"runtimes": {"executorch": {"partitionr": "xnnpack"}}},
    "bad choice": {"runtimes": {"executorch": {"partitioner": "vulkan"}}},
    "runtimes text": {"runtimes": "executorch"},
    "runner for host-only runtime": {"runtimes": ["executorch", "onnxruntime"], "runner": {"onnxruntime": "x"}},
    "budget metric": {"budgets": {"speed": "5ms"}},
    "budget unit": {"budgets": {"latency": "5MB"}},
    "budget number": {"budgets": {"size": 100}},
    "bundle": {"bundle": "yes"},
    "name": {"name": "../up"},
}


@pytest.mark.parametrize("case", list(REFUSED_TARGETS))
def test_the_schema_refuses_what_the_loader_refuses(tmp_path, case):
    data = {**yaml.safe_load(textwrap.dedent(GOOD_TARGET)), **REFUSED_TARGETS[case]}
    assert valid(data, target_schema()) != [], f"the schema accepts {case}"
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UsageError):
        load_target(str(path))


# ---- recipes ------------------------------------------------------------------------------------------------------
GOOD_RECIPES: list[Any] = [
    [{"prune": {"ratio": 0.5, "importance": "l2", "global": True, "ignore": ["fc"]}}, {"finetune": 3}],
    [{"prune": 0.5}, {"lowrank": "energy=0.9,layers=fc"}, {"drop_layers": [1, 2]}],
    [{"low-rank": {"rank": 8}}, {"sparse": {"ratio": 0.3, "allow_sparse": True}}, {"ndlinear": None}],
    [{"distill": {"width": 0.5, "epochs": 1, "feature_pairs": [["layer1", "layer1"]], "max_stage_ratio": None}}],
    {"passes": [{"fine_tune": {"epochs": 2, "lr": 0.01}}]},
]


@pytest.mark.parametrize("recipe", GOOD_RECIPES, ids=range(len(GOOD_RECIPES)))
def test_good_recipes_satisfy_the_schema_and_parse(recipe):
    assert valid(recipe, recipe_schema()) == []
    steps = recipe["passes"] if isinstance(recipe, dict) else recipe
    assert len(parse_recipe(steps, allow_sparse=True)) == len(steps)


BAD_RECIPES: dict[str, Any] = {
    "unknown pass": [{"quantize": {}}],
    "unknown option": [{"prune": {"ratio": 0.5, "ratoi": 0.5}}],
    "two passes in a step": [{"prune": 0.5, "finetune": 1}],
    "missing required": [{"prune": {"importance": "l1"}}],
    "wrong type": [{"finetune": {"epochs": "many"}}],
    "a mapping": {"prune": 0.5},
    "other top-level key": {"passes": [], "notes": "x"},
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_the_recipe_schema_refuses_what_the_parser_refuses(tmp_path, case):
    recipe = BAD_RECIPES[case]
    assert valid(recipe, recipe_schema()) != [], f"the schema accepts {case}"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(UsageError):
        parse_recipe(path)
