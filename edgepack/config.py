"""Parsing what users write: input shapes and target files (validated against each runtime's options)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from edgepack.errors import UsageError
from edgepack.records import Budget


def parse_input_shape(text: str) -> tuple[int, ...]:
    """"1x3x224x224" or "1,3,224,224" -> (1, 3, 224, 224)."""
    parts = re.split(r"[x,\s]+", text.strip().lower())
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        raise UsageError(f"--input-shape {text!r} is not a shape; write it like 1x3x224x224") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {text!r} must be positive integers, e.g. 1x3x224x224")
    return shape


@dataclass(frozen=True)
class RuntimeSettings:
    """A target's settings for one runtime (its section under `runtimes:` in the target file)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


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
    device: str  # "host" or "adb[:SERIAL]"
    runner: dict[str, str]
    budgets: dict[str, str]
    bundle: bool = False  # write the mobile-ready bundle/ and bundle.zip
    arch: str = ""  # the CPU architecture the target runs on; host measurements elsewhere are labelled as proxies

    def runtime(self, name: str) -> RuntimeSettings:
        for r in self.runtimes:
            if r.name == name:
                return r
        raise UsageError(f"target {self.name} has no runtime {name!r}; it has: "
                         f"{', '.join(r.name for r in self.runtimes)}")


def bundled_target_files() -> dict[str, Path]:
    """Targets shipped inside the package (so an installed wheel finds them, not only a checkout)."""
    root = resources.files("edgepack.targets")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_target(name_or_path: str) -> Target:
    files = bundled_target_files()
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"target file {name_or_path} does not exist")
    elif name_or_path in files:
        path = files[name_or_path]
    else:
        raise UsageError(f"unknown target {name_or_path!r}; known targets: {', '.join(sorted(files))} "
                         f"(or pass a path to a target .yaml file)")
    return parse_target(path)


def parse_target(path: Path) -> Target:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"target file {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"target file {path}: expected a mapping with name, runtimes, ...")
    required = ("name", "runtimes")
    missing = [k for k in required if k not in data]
    if missing:
        raise UsageError(f"target file {path}: missing key(s) {', '.join(missing)}")
    known = {"name", "description", "runtimes", "default_runtimes", "precision", "threads", "measure", "device",
             "runner", "budgets", "arch", "bundle"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"target file {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    raw_runtimes = data["runtimes"]
    if isinstance(raw_runtimes, list):
        raw_runtimes = {r: {} for r in raw_runtimes}
    if not isinstance(raw_runtimes, dict) or not raw_runtimes:
        raise UsageError(f"target file {path}: 'runtimes' must map runtime names to their settings")
    from edgepack.runtimes import REGISTRY

    for r in raw_runtimes:
        if r not in REGISTRY:
            raise UsageError(f"target file {path}: unknown runtime {r!r}; known: {', '.join(sorted(REGISTRY))}")
    from edgepack.runtimes import runtime_class

    try:
        runtimes = tuple(RuntimeSettings(r, runtime_class(r).options_type.from_mapping(opts or {}))
                         for r, opts in raw_runtimes.items())
    except (ValueError, TypeError) as exc:
        raise UsageError(f"target file {path}: runtimes: {exc}") from None
    measure = data.get("measure") or {}
    precision = str(data.get("precision", "int8"))
    if precision not in ("int8", "fp32"):
        raise UsageError(f"target file {path}: precision {precision!r} must be int8 or fp32")
    defaults = tuple(data.get("default_runtimes") or [runtimes[0].name])
    return Target(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        path=str(path),
        runtimes=runtimes,
        default_runtimes=defaults,
        precision=precision,
        threads=int(data.get("threads", 1)),
        runs=int(measure.get("runs", 50)),
        warmup=int(measure.get("warmup", 10)),
        latency_stat=str(measure.get("latency_stat", "p90")),
        device=str(data.get("device", "host")),
        runner=dict(data.get("runner") or {}),
        budgets={str(k): str(v) for k, v in (data.get("budgets") or {}).items()},
        bundle=bool(data.get("bundle", False)),
        arch=str(data.get("arch", "")),
    )


def target_budgets(target: Target) -> list[Budget]:
    """The target file's default budgets (keys: size, latency, memory, accuracy_drop)."""
    from edgepack.budgets import METRICS, parse_budget

    out = []
    for metric, text in target.budgets.items():
        if metric not in METRICS:
            raise UsageError(f"target {target.name}: unknown budget {metric!r}; known: {', '.join(METRICS)}")
        out.append(parse_budget(metric, text, target.latency_stat if metric == "latency" else ""))
    return out
