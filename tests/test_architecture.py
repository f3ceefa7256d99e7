"""The shape of the package: no import cycles, a runtime or a pass named only in its own module, light imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import edgepack
from edgepack.compress import registered_passes
from edgepack.runtimes import REGISTRY

PACKAGE = Path(edgepack.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Every edgepack module each module imports: at the top, inside functions, or under TYPE_CHECKING."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from pkg import sub` depends on the submodule; `from pkg import name` on the package
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    cycles = []
    for start in sorted(graph):
        seen, stack = {start}, [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join([*path, nxt]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "\n".join(cycles[:5])


def _mentions(name: str, outside: set[Path]) -> list[str]:
    pattern = re.compile(rf"""["']{re.escape(name)}["']""")
    return [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py") if p not in outside
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]


def test_a_runtime_is_named_only_in_its_module_and_the_registry():
    """Capabilities are declared on the runtime class, so nothing else in the package names a runtime."""
    own = {PACKAGE / "runtimes" / f"{module.rsplit('.', 1)[-1].split(':')[0]}.py" for module in REGISTRY.values()}
    own |= {PACKAGE / "runtimes" / "__init__.py", PACKAGE / "runtimes" / "qat.py"}
    for name in REGISTRY:
        assert not _mentions(name, own), f"{name} is named outside its runtime module: {_mentions(name, own)}"


def test_a_pass_is_named_only_in_its_module():
    """Pass options, recipe keys and dispatch all come from the registry."""
    for config in registered_passes():
        # besides its module: its line in the registry, and records.py reading reports of older versions
        own = {Path(sys.modules[config.__module__].__file__ or ""), PACKAGE / "compress" / "registry.py",
               PACKAGE / "records.py"}
        if config.kind == "distill":  # `edgepack distill` is a command of its own, built on this pass
            own.add(PACKAGE / "cli" / "distill.py")
        assert not _mentions(config.kind, own), f"{config.kind} is named elsewhere: {_mentions(config.kind, own)}"


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys; import edgepack.cli; heavy = ['torch', 'onnx', 'onnxruntime', 'executorch', 'litert_torch', "
            "'ai_edge_litert', 'numpy', 'matplotlib']; print([m for m in heavy if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
