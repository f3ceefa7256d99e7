"""Parsing target files.

A target file is validated on load: every problem is a one-line UsageError (exit 2) naming the file, the key, what is
wrong and what would be right. Nothing is ignored and nothing is corrected. Each runtime's section is built into that
runtime's options dataclass (`runtime_class(name).options_type`), so `Target.runtime(name).options` is typed.
Torch-free: the planner loads targets before any heavy import.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, TypeVar

from edgepack.budgets import LATENCY_STATS, METRICS, OPTION_OF_METRIC, parse_budget
from edgepack.errors import ToolError, UsageError, did_you_mean
from edgepack.records import Budget
from edgepack.runtimes.base import RuntimeOptions
from edgepack.tasks import ParityFloor

# Every top-level key of a target file, with what it holds (the schema's descriptions come from here too).
TARGET_KEYS: dict[str, str] = {
    "name": "the target's name (names its output directory): letters, digits, '.', '_', '-'",
    "description": "one line saying what the target is",
    "arch": "the CPU architecture it runs on (x86_64, arm64); host measurements elsewhere are labelled a proxy",
    "runtimes": "runtime -> its options (or a list of runtime names, each with its defaults)",
    "default_runtimes": "the runtimes built when --runtime is not given (default: the first listed)",
    "precision": "the precision of the shipped artifact",
    "threads": "intra-op threads when measuring",
    "measure": "how latency is measured",
    "device": "where to measure: host, adb (the one attached phone), adb:SERIAL, gpu (NVIDIA GPU 0), gpu:N, or "
              "none (build and check numerics only)",
    "runner": "runtime -> path of the arm64 runner binary you built, for measuring on a phone",
    "budgets": "default budgets: size, latency, memory, accuracy_drop (the command line overrides each)",
    "bundle": "write the mobile-ready bundle/ and bundle.zip",
    "parity_floor": "the least agreement with eager PyTorch an artifact needs to ship, per task",
}
REQUIRED_TARGET_KEYS = ("name", "runtimes")
TARGET_PRECISIONS = ("int8", "fp16", "fp32")
DEFAULT_THREADS = 1
TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEVICE_PATTERN = r"^(host|adb|adb:\S+|gpu|gpu:\d+|none)$"

SectionT = TypeVar("SectionT")


@dataclass(frozen=True)
class RuntimeSettings:
    """A target's settings for one runtime: its section under `runtimes:`, built into the runtime's options_type."""

    name: str
    options: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass(frozen=True)
class MeasureSettings:
    """The `measure:` section of a target file."""

    runs: int = field(default=50, metadata={"minimum": 1, "doc": "timed runs per artifact"})
    warmup: int = field(default=10, metadata={"minimum": 0, "doc": "untimed runs before them"})
    latency_stat: str = field(default="p90", metadata={"choices": LATENCY_STATS,
                                                        "doc": "the statistic latency budgets are judged on"})

    def __post_init__(self) -> None:
        for name, minimum in (("runs", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")
        if self.latency_stat not in LATENCY_STATS:
            raise ValueError(f"latency_stat={self.latency_stat!r} is not one of: {', '.join(LATENCY_STATS)}")


@dataclass(frozen=True)
class Target:
    """A target file: where a model runs and with what. Users add a board by writing one of these."""

    name: str
    description: str
    path: str
    runtimes: tuple[RuntimeSettings, ...]
    default_runtimes: tuple[str, ...]
    precision: str
    threads: int
    runs: int
    warmup: int
    latency_stat: str
    device: str  # "host", "adb[:SERIAL]", "gpu[:N]" or "none"
    runner: dict[str, str]
    budgets: dict[str, str]  # metric -> limit as written, checked on load; target_budgets() parses them
    bundle: bool = False  # write the mobile-ready bundle/ and bundle.zip
    arch: str = ""  # the CPU architecture the target runs on; host measurements elsewhere are labelled as proxies
    parity_floor: ParityFloor = field(default_factory=ParityFloor)

    def runtime(self, name: str) -> RuntimeSettings:
        for r in self.runtimes:
            if r.name == name:
                return r
        raise UsageError(f"target {self.name} has no runtime {name!r}; it has: "
                         f"{', '.join(r.name for r in self.runtimes)}")


# ---- where the bundled targets are ----------------------------------------------------------------------------------

def bundled_targets_dir() -> Path:
    """The directory of the bundled target files: the data package edgepack.targets, which pyproject.toml maps from
    the repository's top-level targets/ (a wheel holds a copy, an editable install points at the checkout)."""
    try:
        return Path(str(resources.files("edgepack.targets")))
    except ModuleNotFoundError:  # a checkout imported without installing it: the files are beside the package
        checkout = Path(__file__).resolve().parent.parent / "targets"
        if checkout.is_dir():
            return checkout
        raise ToolError("the bundled target files are missing from this installation of edgepack; reinstall it "
                        "(or pass a path to a target .yaml file)") from None


def bundled_target_files() -> dict[str, Path]:
    """Targets shipped with the package, by name (so an installed wheel finds them, not only a checkout)."""
    root = bundled_targets_dir()
    return {p.stem: p for p in sorted(root.iterdir()) if p.suffix == ".yaml"}


def load_target(name_or_path: str) -> Target:
    """A bundled target by name, or a target file by path (ending .yaml or .yml)."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.exists():
            raise UsageError(f"target file {name_or_path} does not exist")
        return parse_target(path)
    files = bundled_target_files()
    if name_or_path in files:
        return parse_target(files[name_or_path])
    raise UsageError(f"unknown target {name_or_path!r}; known targets: "
                     f"{', '.join(sorted(files))} (or pass a path to a target .yaml file)")


def target_budgets(target: Target) -> list[Budget]:
    """The target file's default budgets (keys: size, latency, memory, accuracy_drop)."""
    out = []
    for metric, text in target.budgets.items():
        if metric not in METRICS:
            raise UsageError(f"target {target.name}: unknown budget {metric!r}; known: {', '.join(METRICS)}")
        out.append(parse_budget(metric, text, target.latency_stat if metric == "latency" else ""))
    return out


# ---- parsing a target file ------------------------------------------------------------------------------------------

def parse_target(path: Path) -> Target:
    """Read and validate a target file; raises a one-line UsageError naming the file and the key on any problem."""
    path = Path(path)
    where = f"target file {path}"
    data = _read_mapping(path, where)
    unknown = [key for key in data if key not in TARGET_KEYS]
    if unknown:
        key = str(unknown[0])
        raise UsageError(f"{where}: unknown key {key!r}{did_you_mean(key, TARGET_KEYS, n=2)}; valid keys: "
                         f"{', '.join(TARGET_KEYS)}")
    missing = [key for key in REQUIRED_TARGET_KEYS if key not in data]
    if missing:
        raise UsageError(f"{where}: missing key(s) {', '.join(missing)}; a target file needs at least "
                         f"{' and '.join(REQUIRED_TARGET_KEYS)}")
    name = _text(where, "name", data["name"])
    if not re.fullmatch(TARGET_NAME_PATTERN, name):
        raise UsageError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-', starting with a letter "
                         f"or digit (it names the output directory)")
    runtimes = _runtimes(where, data["runtimes"])
    names = [r.name for r in runtimes]
    measure = _section(MeasureSettings, data.get("measure"), f"{where}: measure")
    return Target(
        name=name,
        description=_text(where, "description", data.get("description", ""), empty_ok=True),
        path=str(path),
        runtimes=runtimes,
        default_runtimes=_default_runtimes(where, data.get("default_runtimes"), names),
        precision=_choice(where, "precision", data.get("precision", TARGET_PRECISIONS[0]), TARGET_PRECISIONS),
        threads=_whole(where, "threads", data.get("threads", DEFAULT_THREADS), minimum=1),
        runs=measure.runs,
        warmup=measure.warmup,
        latency_stat=measure.latency_stat,
        device=_device(where, data.get("device", "host")),
        runner=_runners(where, data.get("runner"), names),
        budgets=_budgets(where, data.get("budgets"), measure.latency_stat),
        bundle=_flag(where, "bundle", data.get("bundle", False)),
        arch=_text(where, "arch", data.get("arch", ""), empty_ok=True),
        parity_floor=_section(ParityFloor, data.get("parity_floor"), f"{where}: parity_floor"),
    )


def _read_mapping(path: Path, where: str) -> dict[Any, Any]:
    import yaml

    if path.is_dir():
        raise UsageError(f"{where} is a directory; give a target .yaml file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{where} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if b"\x00" in raw:
        raise UsageError(f"{where} is a binary file, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text; a target file is YAML") from None
    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        at = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise UsageError(f"{where}: invalid YAML{at}: {exc.problem or exc.context or 'unreadable'}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: invalid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None
    if data is None:
        raise UsageError(f"{where} is empty; a target file is a mapping with at least "
                         f"{' and '.join(REQUIRED_TARGET_KEYS)}")
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of keys ({', '.join(REQUIRED_TARGET_KEYS)}, ...), got "
                         f"{_kind(data)}")
    return data


@functools.cache
def _strict_loader() -> type:
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML would keep the last)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice; give it once", key_node.start_mark)
                if isinstance(key, Hashable):
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _runtimes(where: str, value: Any) -> tuple[RuntimeSettings, ...]:
    from edgepack.runtimes import REGISTRY, runtime_class

    known = ", ".join(REGISTRY)
    if isinstance(value, list):  # a list of names: each runtime with its defaults
        for item in value:
            _known_runtime(where, "runtimes", item, REGISTRY)
        if len(set(value)) != len(value):
            raise UsageError(f"{where}: runtimes lists a runtime twice ({', '.join(map(str, value))})")
        sections: dict[Any, Any] = {item: None for item in value}
    elif isinstance(value, dict):
        sections = value
    else:
        raise UsageError(f"{where}: runtimes must map runtime names to their options (or list names), got "
                         f"{_kind(value)}; known runtimes: {known}")
    if not sections:
        raise UsageError(f"{where}: runtimes is empty; name at least one of: {known}")
    settings = []
    for name, section in sections.items():
        _known_runtime(where, "runtimes", name, REGISTRY)
        options = _section(runtime_class(name).options_type, section, f"{where}: runtimes.{name}")
        settings.append(RuntimeSettings(name, options))
    return tuple(settings)


def _known_runtime(where: str, key: str, name: Any, registry: Mapping[str, str]) -> str:
    if not isinstance(name, str) or name not in registry:
        raise UsageError(f"{where}: {key}: unknown runtime {name!r}{did_you_mean(str(name), registry, n=2)}; known "
                         f"runtimes: {', '.join(registry)}")
    return name


def _default_runtimes(where: str, value: Any, names: list[str]) -> tuple[str, ...]:
    if value is None:
        return (names[0],)
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: default_runtimes must be a non-empty list of this target's runtimes "
                         f"({', '.join(names)}), e.g. [{names[0]}]; got {_shown(value)}")
    for item in value:
        if item not in names:
            raise UsageError(f"{where}: default_runtimes: {item!r} is not among this target's runtimes; choose "
                             f"from: {', '.join(names)}")
    if len(set(value)) != len(value):
        raise UsageError(f"{where}: default_runtimes lists a runtime twice ({', '.join(value)})")
    return tuple(value)


def _device(where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(DEVICE_PATTERN, value):
        raise UsageError(f"{where}: device {_shown(value)} must be host, adb (the one attached phone), adb:SERIAL, "
                         f"gpu, gpu:N or none")
    return value


def _runners(where: str, value: Any, names: list[str]) -> dict[str, str]:
    from edgepack.runtimes import runtime_class

    if value is None:  # `runner:` with only comments under it
        return {}
    with_runner = [n for n in names if runtime_class(n).phone_runner]
    if not isinstance(value, dict):
        raise UsageError(f"{where}: runner must map runtimes to runner binaries, e.g. "
                         f"{{{(with_runner or ['RUNTIME'])[0]}: path/to/runner}}; got {_kind(value)}")
    runners = {}
    for name, path in value.items():
        if name not in names:
            raise UsageError(f"{where}: runner: {name!r} is not among this target's runtimes; those with a phone "
                             f"runner: {', '.join(with_runner) or 'none'}")
        if name not in with_runner:
            raise UsageError(f"{where}: runner: {name} has no phone runner (it is measured on the host only); "
                             f"this target's runtimes with one: {', '.join(with_runner) or 'none'}")
        runners[name] = _text(where, f"runner.{name}", path)
    return runners


def _budgets(where: str, value: Any, latency_stat: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where}: budgets must map metrics to limits, e.g. {{size: 10MB, latency: 20ms}}; got "
                         f"{_kind(value)}; metrics: {', '.join(METRICS)}")
    budgets = {}
    for metric, limit in value.items():
        if metric not in METRICS:
            raise UsageError(f"{where}: budgets: unknown metric {metric!r}{did_you_mean(str(metric), METRICS, n=2)}; "
                             f"valid metrics: {', '.join(METRICS)}")
        how = METRICS[metric][2]
        if isinstance(limit, str) and not limit.strip():
            raise UsageError(f"{where}: budgets.{metric} is empty; write a number with a unit ({how}) or remove it")
        if isinstance(limit, bool) or not isinstance(limit, (str, int, float)):
            raise UsageError(f"{where}: budgets.{metric}: {_shown(limit)} is not a limit; write a number with a unit "
                             f"({how})")
        try:
            parse_budget(metric, str(limit), latency_stat if metric == "latency" else "")
        except UsageError as exc:  # its message names the command-line option; here the key is what was written
            message = str(exc).removeprefix(OPTION_OF_METRIC[metric]).lstrip()
            raise UsageError(f"{where}: budgets.{metric}: {message}") from None
        budgets[metric] = str(limit).strip()
    return budgets


def _section(cls: type[SectionT], value: Any, where: str) -> SectionT:
    """A frozen dataclass from a YAML mapping, checked key by key against its fields (names, types, choices,
    bounds); then its own `__post_init__` checks, whose ValueError becomes a UsageError too. None means defaults."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping of options ({', '.join(names)}), got {_kind(value)}")
    hints = field_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            raise UsageError(f"{where}: unknown key {key!r}{did_you_mean(str(key), names, n=2)}; valid keys: "
                             f"{', '.join(names)}")
        f = fields[key]
        choices = field_choices(cls, f)
        one_of = f"one of: {', '.join(_as_written(c) for c in choices)}" if choices is not None else ""
        ok, converted = conform(hints[key], item)
        if not ok:
            listed = one_of and hints[key] is not bool  # "true or false" already lists a flag's values
            raise UsageError(f"{where}: {key}={_shown(item)} is not {describe(hints[key])}"
                             + (f"; use {one_of}" if listed else ""))
        if choices is not None and not any(type(converted) is type(c) and converted == c for c in choices):
            raise UsageError(f"{where}: {key}={_shown(converted)} is not {one_of}")
        for bound, fails in (("minimum", lambda v, b: v < b), ("maximum", lambda v, b: v > b)):
            if bound in f.metadata and isinstance(converted, (int, float)) and fails(converted, f.metadata[bound]):
                raise UsageError(f"{where}: {key}={converted!r} is {'below' if bound == 'minimum' else 'above'} "
                                 f"the {bound} {f.metadata[bound]}")
        kwargs[key] = converted
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None


def _text(where: str, key: str, value: Any, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or not (value.strip() or empty_ok):
        raise UsageError(f"{where}: {key} must be {'text' if empty_ok else 'non-empty text'}, got {_shown(value)}")
    return value


def _whole(where: str, key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: {key} {_shown(value)} is not a whole number; use {minimum} or more")
    if value < minimum:
        raise UsageError(f"{where}: {key} {value} is below {minimum}; use {minimum} or more")
    return value


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} {_shown(value)} must be true or false")
    return value


def _choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise UsageError(f"{where}: {key} {_shown(value)} is not valid; choose one of: {', '.join(choices)}")
    return value


# ---- type hints: what a YAML value must be for a dataclass field (shared with edgepack.schema) -----------------------

def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint, for a dataclass (its annotations may be strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def field_choices(cls: type, f: dataclasses.Field[Any]) -> Optional[tuple[Any, ...]]:
    """The values a field allows, from its metadata ("choices", as runtimes.base.option() writes it) or from the
    class's `choices: ClassVar[Mapping[field name, tuple]]`; None: any value of its type."""
    if "choices" in f.metadata:
        return tuple(f.metadata["choices"])
    declared = getattr(cls, "choices", None)
    if isinstance(declared, Mapping) and f.name in declared:
        return tuple(declared[f.name])
    return None


def is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def describe(hint: Any) -> str:
    """A type hint as a target-file author reads it: "a whole number", "true or false", "a list of text"."""
    args = typing.get_args(hint)
    if is_union(hint):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURALS.get(describe(args[0]), describe(args[0]))}"
        return f"a list of {len(args)} items ({', '.join(describe(a) for a in args)})"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(_as_written(a) for a in args)
    return _NAMES.get(hint, str(hint))


def conform(hint: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value`, as YAML gives it, has the type `hint` asks for; the value as the dataclass stores it).

    Lists become tuples (frozen dataclasses stay hashable) and whole numbers become floats where a float is asked;
    nothing else is converted: "4" is not a whole number, 1 is not true.
    """
    if hint is Any:
        return True, value
    if is_union(hint):
        for arm in typing.get_args(hint):
            ok, converted = conform(arm, value)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if typing.get_origin(hint) is typing.Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(hint)), value
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False, value
        item_hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_hints) != len(value):
            return False, value
        items = [conform(h, v) for h, v in zip(item_hints, value)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    return True, value  # a type this checker does not know: the dataclass's own validation decides


_NAMES: dict[Any, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
_PLURALS = {"a whole number": "whole numbers", "a number": "numbers", "true or false": "true/false values"}


def _as_written(value: Any) -> str:
    """A value as YAML spells it: true/false, not True/False."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _shown(value: Any) -> str:
    """A value quoted as YAML writes it: 'text', true, 3, null."""
    if value is None:
        return "null"
    return _as_written(value) if isinstance(value, bool) else repr(value)


def _kind(value: Any) -> str:
    """What a YAML value is, in words: "a list", "the text 'fast'", "the number 3"."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return f"{_as_written(value)}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return repr(value)

