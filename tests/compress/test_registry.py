"""The pass registry: every pass module is listed, every config declares what the CLI needs, nothing imports torch
until a pass runs, and the compression package has no import cycles."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgepack
from edgepack.compress import PassConfig, PassResult, register, registered_passes
from edgepack.compress.registry import PASS_MODULES

PACKAGE = Path(edgepack.__file__).parent
COMPRESS = PACKAGE / "compress"


def test_registry_lists_every_pass_module():
    registering = {p.stem for p in COMPRESS.glob("*.py") if re.search(r"^@register\(", p.read_text(), re.MULTILINE)}
    assert registering == set(PASS_MODULES)
    assert [c.__module__ for c in registered_passes()] == [f"edgepack.compress.{m}" for m in PASS_MODULES]
    # the CLI's order
    assert [c.kind for c in registered_passes()] == ["prune", "sparse", "lowrank", "ndlinear", "drop-layers",
                                                     "distill", "finetune"]


@pytest.mark.parametrize("config", registered_passes(), ids=lambda c: c.kind)
def test_each_config_declares_what_the_cli_needs(config):
    assert issubclass(config, PassConfig) and dataclasses.is_dataclass(config)
    assert config.__dataclass_params__.frozen
    for name in ("kind", "metavar", "help"):
        value = vars(config).get(name)
        assert isinstance(value, str) and value, f"{config.__name__} declares no {name}"
    assert "\n" not in config.help and config.help.endswith(".")
    fields = {f.name for f in dataclasses.fields(config)}
    assert config.primary is None or config.primary in fields
    assert set(config.aliases.values()) <= fields


def test_register_refuses_a_config_without_cli_texts():
    @dataclasses.dataclass(frozen=True)
    class Nameless(PassConfig):
        size: int = 1

    with pytest.raises(TypeError, match="must declare the class variable 'kind'"):
        register(Nameless)
    with pytest.raises(TypeError, match="takes a PassConfig dataclass"):
        register(dict)  # type: ignore[arg-type]


def test_a_pass_registered_outside_the_registry_runs(bundle_of):
    from edgepack.compress import apply_passes
    from edgepack.models import zoo

    @dataclasses.dataclass(frozen=True)
    class Identity(PassConfig):
        kind = "identity"
        metavar = "-"
        help = "Does nothing."

    @register(Identity)
    def identity(module, config, ctx):
        ctx.say("identity ran")
        return PassResult(module, notes=("nothing changed",))

    messages: list[str] = []
    out = apply_passes(bundle_of(zoo.build("digits-cnn"), (1, 1, 8, 8)), [Identity()], progress=messages.append)
    assert messages == ["pass 1/1: identity", "identity ran"]
    assert out.provenance.passes[-1].notes == ("nothing changed",)


def test_import_and_parsing_do_not_load_torch():
    code = ("import sys, edgepack.compress as c; c.parse_pass('prune', '0.5'); "
            "c.parse_recipe([{'distill': {'student': 'zoo:digits-cnn', 'feature_pairs': 'a:b'}}]); "
            "print([p.kind for p in c.registered_passes()], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False"), result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    """Every edgepack module `path` imports, at the top, inside functions or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from edgepack.compress import moduletree` imports the submodule
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("edgepack")}


def test_no_import_cycles_through_compression_and_training():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    ours = {m for m in modules if m.startswith("edgepack.compress.") or m in ("edgepack.training",
                                                                               "edgepack.robustness")}

    def reaches(start: str, goal: str) -> list[str] | None:
        seen, stack = {start}, [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen and nxt != "edgepack.compress":  # the package __init__ only re-exports
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [cycle for m in sorted(ours) for cycle in [reaches(m, m)] if cycle]
    assert not cycles, " | ".join(" -> ".join(c) for c in cycles)
