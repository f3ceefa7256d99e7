"""Budget and shape parsing; target files: validated on load (one-line exit-2 errors naming the file, the key and the
valid choices), typed runtime options, and the bundled targets found from the package wherever it is installed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgepack.budgets import merge_budgets, parse_budget
from edgepack.config import (
    RuntimeSettings,
    Target,
    bundled_target_files,
    load_target,
    parse_target,
    target_budgets,
)
from edgepack.errors import UsageError
from edgepack.runtimes import REGISTRY, runtime_class

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("metric,text,limit", [
    ("size", "100MB", 100e6), ("size", "1.5 KiB", 1536), ("size", "7b", 7), ("size", "2GiB", 2 * 1024**3),
    ("latency", "20ms", 20.0), ("latency", "800us", 0.8), ("latency", "1.5s", 1500.0),
    ("memory", "200MiB", 200 * 1024**2), ("accuracy_drop", "1pp", 1.0), ("accuracy_drop", "0.5%", 0.5),
])
def test_parse_budget_units(metric, text, limit):
    budget = parse_budget(metric, text)
    assert budget.limit == pytest.approx(limit)
    assert budget.text == text


def test_latency_budget_defaults_to_p90_and_checks_stat():
    assert parse_budget("latency", "5ms").stat == "p90"
    assert parse_budget("latency", "5ms", "p50").name == "latency (p50)"
    with pytest.raises(UsageError, match="p50, p90, p99, mean"):
        parse_budget("latency", "5ms", "p75")


@pytest.mark.parametrize("metric,text,fragment", [
    ("size", "100", "has no unit; use B, KB, MB"), ("size", "5 ms", "unknown unit 'ms'"),
    ("latency", "5MB", "unknown unit 'MB'; use us, ms or s"), ("size", "0MB", "greater than zero"),
    ("accuracy_drop", "one", "not a number"),
])
def test_parse_budget_errors(metric, text, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_budget(metric, text)


def test_parse_input_specs():
    from edgepack.models.request import InputSpec, input_specs_text, parse_input_specs

    assert parse_input_specs("1x3x224x224") == (InputSpec(None, (1, 3, 224, 224)),)
    assert parse_input_specs("1, 3, 8, 8") == (InputSpec(None, (1, 3, 8, 8)),)
    assert parse_input_specs("1x16:int64") == (InputSpec(None, (1, 16), "int64"),)
    text = "input_ids=2x16:int64,attention_mask=2x16:int64"
    specs = parse_input_specs(text)
    assert specs == (InputSpec("input_ids", (2, 16), "int64"), InputSpec("attention_mask", (2, 16), "int64"))
    assert input_specs_text(specs) == text
    bad = {"1x0x8": "every dimension", "abc": "not a shape", "": "empty", "1x8:float64": "dtype 'float64'",
           "a=1x8,1x8": "name every input or none", "a=1x8,a=1x8": "given twice", "1x8,,1x8": "empty part",
           "my-input=1x8": "not a parameter name"}
    for text, fragment in bad.items():
        with pytest.raises(UsageError, match=fragment):
            parse_input_specs(text)


# ---- bundled targets ------------------------------------------------------------------------------------------------
def test_bundled_targets_are_real_data():
    x86 = load_target("x86-cpu")
    assert x86.default_runtimes == ("onnxruntime",)
    assert {r.name for r in x86.runtimes} == {"onnxruntime", "executorch", "litert", "openvino"}
    ort = x86.runtime("onnxruntime").options
    assert ort.activation_type == "uint8" and ort.per_channel is True  # type: ignore[attr-defined]
    assert x86.threads == 1 and x86.precision == "int8" and x86.runs >= 50
    board = load_target("linux-arm64")
    assert board.arch == "arm64"
    assert {r.name for r in board.runtimes} == {"onnxruntime", "executorch", "litert", "openvino"}
    android = load_target("android-arm64")
    assert android.default_runtimes == ("executorch", "litert") and android.arch == "arm64"
    assert android.bundle is True and android.runner == {}


@pytest.mark.parametrize("name", sorted(bundled_target_files()))
def test_every_bundled_target_builds_each_runtimes_own_options_type(name):
    target = load_target(name)
    assert target.name == name and Path(target.path).name == f"{name}.yaml"
    for settings in target.runtimes:
        assert type(settings.options) is runtime_class(settings.name).options_type
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.threads = 2  # type: ignore[misc]


def test_targets_live_at_the_top_of_the_repository():
    assert sorted(p.name for p in (REPO / "targets").glob("*.yaml")) == \
        sorted(p.name for p in bundled_target_files().values())
    assert not (REPO / "edgepack" / "targets").exists(), "target files moved to the top-level targets/"


def test_the_package_list_names_every_package_and_maps_the_targets():
    """pyproject.toml lists packages by hand (the data package cannot be found by a search): keep the list whole."""
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_namespace_packages

    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {p for p in find_namespace_packages(str(REPO), include=["edgepack*"]) if "__pycache__" not in p}
    assert set(settings["packages"]) == on_disk | {"edgepack.targets"}
    assert settings["package-dir"] == {"edgepack.targets": "targets"}
    assert "*.yaml" in settings["package-data"]["edgepack.targets"]


def test_a_bundled_target_loads_from_another_directory_without_torch(tmp_path):
    code = textwrap.dedent("""
        import sys
        from edgepack.config import load_target
        target = load_target("android-arm64")
        print(target.name, type(target.runtime("executorch").options).__name__)
        assert "torch" not in sys.modules, "loading a target imported torch"
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["android-arm64", "ExecuTorchOptions"]


# ---- good target files ----------------------------------------------------------------------------------------------
def write(tmp_path: Path, content: str | bytes, name: str = "b.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content))
    return path


def test_target_budgets_merge_with_command_line(tmp_path):
    board = write(tmp_path, "name: b\nruntimes: [onnxruntime]\nbudgets: {size: 1MB, latency: 5ms}\n")
    target = load_target(str(board))
    defaults = target_budgets(target)
    merged = merge_budgets(defaults, [parse_budget("size", "2MB")])
    assert sorted((b.metric, b.limit) for b in merged) == [("latency", 5.0), ("size", 2e6)]


def test_a_minimal_target_gets_documented_defaults(tmp_path):
    target = load_target(str(write(tmp_path, "name: b\nruntimes: [litert, onnxruntime]\n")))
    assert isinstance(target, Target)
    assert target.default_runtimes == ("litert",) and target.precision == "int8" and target.threads == 1
    assert (target.runs, target.warmup, target.latency_stat) == (50, 10, "p90")
    assert target.device == "host" and target.runner == {} and target.budgets == {} and target.bundle is False
    assert target.runtime("onnxruntime") == RuntimeSettings("onnxruntime", runtime_class("onnxruntime").options_type())
    with pytest.raises(UsageError, match="has no runtime 'executorch'; it has: litert, onnxruntime"):
        target.runtime("executorch")


def test_a_full_target_is_read_with_its_types(tmp_path):
    target = load_target(str(write(tmp_path, """\
        name: my-board.v2
        description: a phone
        arch: arm64
        runtimes:
          executorch: {partitioner: xnnpack, calibration_samples: 64}
          litert:
          onnxruntime: {activation_type: int8, per_channel: false, scheme: dynamic}
        default_runtimes: [executorch, litert]
        precision: fp32
        threads: 4
        measure: {runs: 7, warmup: 0, latency_stat: p99}
        device: adb:R58M123ABC
        runner: {executorch: bin/executor_runner, litert: bin/benchmark_model}
        budgets: {size: 10MB, latency: 20 ms, memory: 200MiB, accuracy_drop: 1pp}
        bundle: true
        """)))
    assert target.name == "my-board.v2" and target.arch == "arm64" and target.precision == "fp32"
    assert target.threads == 4 and (target.runs, target.warmup, target.latency_stat) == (7, 0, "p99")
    assert target.device == "adb:R58M123ABC" and target.bundle is True
    assert target.runner == {"executorch": "bin/executor_runner", "litert": "bin/benchmark_model"}
    et = target.runtime("executorch").options
    assert type(et).__name__ == "ExecuTorchOptions" and et.calibration_samples == 64
    assert target.runtime("litert").options == runtime_class("litert").options_type()
    ort = target.runtime("onnxruntime").options
    assert (ort.activation_type, ort.per_channel, ort.scheme) == ("int8", False, "dynamic")  # type: ignore
    stats = {b.metric: b for b in target_budgets(target)}
    assert stats["latency"].stat == "p99" and stats["accuracy_drop"].limit == 1.0


# ---- bad target files: each a one-line UsageError (exit 2) naming the file and saying what would be right --------
RT = "runtimes: [onnxruntime]\n"
ORT = "name: b\nruntimes:\n  onnxruntime: "
ET = "name: b\nruntimes:\n  executorch: "

BAD_TARGETS: list[tuple[str, str | bytes, str]] = [
    # (case, file content, expected part of the message)
    ("missing runtimes", "name: b\n", "missing key(s) runtimes"),
    ("missing name", RT, "missing key(s) name"),
    ("unknown key", "name: b\n" + RT + "threadz: 2\n",
     "unknown key 'threadz' (did you mean 'threads'?); valid keys: name, description, arch, runtimes"),
    ("key twice", "name: b\n" + RT + "threads: 1\nthreads: 4\n", "line 4: key 'threads' is given twice"),
    ("invalid yaml", "[unclosed", "invalid YAML at line"),
    ("tab indent", "name: b\n\truntimes: x\n", "invalid YAML at line 2"),
    ("empty file", "", "is empty; a target file is a mapping with at least name and runtimes"),
    ("comments only", "# nothing\n", "is empty"),
    ("a list", "- a\n- b\n", "expected a mapping of keys (name, runtimes, ...), got a list"),
    ("a scalar", "just text\n", "got the text 'just text'"),
    ("binary bytes", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file, not YAML text"),
    ("not utf-8", b"name: b\xe9\xff\n", "is not UTF-8 text"),
    # name, description, arch
    ("name not text", "name: 5\n" + RT, "name must be non-empty text, got 5"),
    ("name a path", "name: ../up\n" + RT, "name '../up' must be letters, digits"),
    ("name with a newline", 'name: "b\\n"\n' + RT, "name 'b\\n' must be letters, digits"),
    ("description a list", "name: b\n" + RT + "description: [a]\n", "description must be text, got ['a']"),
    ("arch a number", "name: b\n" + RT + "arch: 64\n", "arch must be text, got 64"),
    # runtimes
    ("unknown runtime", "name: b\nruntimes: {tensorrt: {}}\n",
     "runtimes: unknown runtime 'tensorrt'; known runtimes: onnxruntime, executorch, litert"),
    ("misspelt runtime", "name: b\nruntimes: [onnxruntme]\n", "(did you mean 'onnxruntime'"),
    ("no runtimes", "name: b\nruntimes: []\n", "runtimes is empty; name at least one of"),
    ("runtimes text", "name: b\nruntimes: onnxruntime\n", "runtimes must map runtime names to their options"),
    ("runtime twice", "name: b\nruntimes: [litert, litert]\n", "runtimes lists a runtime twice"),
    ("section text", ET + "fast\n", "runtimes.executorch must be a mapping of options (calibration_samples, "
                                    "partitioner), got the text 'fast'"),
    ("unknown option", ORT + "{activaton_type: int8}\n",
     "runtimes.onnxruntime: unknown key 'activaton_type' (did you mean 'activation_type'?); valid keys: "
     "calibration_samples, scheme, activation_type"),
    ("bad choice", ORT + "{activation_type: int16}\n",
     "runtimes.onnxruntime: activation_type='int16' is not one of: uint8, int8"),
    ("text for a flag", ORT + "{per_channel: 'yes'}\n",
     "runtimes.onnxruntime: per_channel='yes' is not true or false"),
    ("number for a flag", ORT + "{simplify: 1}\n", "simplify=1 is not true or false"),
    ("zero samples", ORT + "{calibration_samples: 0}\n",
     "runtimes.onnxruntime: calibration_samples=0 must be a whole number >= 1"),
    ("text samples", ET + "{calibration_samples: many}\n",
     "runtimes.executorch: calibration_samples='many' is not a whole number"),
    ("float samples", ET + "{calibration_samples: 1.5}\n", "calibration_samples=1.5 is not a whole number"),
    ("bad partitioner", ET + "{partitioner: vulkan}\n", "partitioner='vulkan' is not one of: xnnpack"),
    # default_runtimes
    ("default not listed", "name: b\n" + RT + "default_runtimes: [litert]\n",
     "default_runtimes: 'litert' is not among this target's runtimes; choose from: onnxruntime"),
    ("default as text", "name: b\n" + RT + "default_runtimes: onnxruntime\n",
     "default_runtimes must be a non-empty list of this target's runtimes (onnxruntime), e.g. [onnxruntime]"),
    ("default empty", "name: b\n" + RT + "default_runtimes: []\n", "default_runtimes must be a non-empty list"),
    # precision, threads, bundle
    ("precision", "name: b\n" + RT + "precision: bf16\n",
     "precision 'bf16' is not valid; choose one of: int8, fp16, fp32"),
    ("threads text", "name: b\n" + RT + "threads: many\n", "threads 'many' is not a whole number; use 1 or more"),
    ("threads zero", "name: b\n" + RT + "threads: 0\n", "threads 0 is below 1; use 1 or more"),
    ("threads bool", "name: b\n" + RT + "threads: true\n", "threads true is not a whole number"),
    ("threads float", "name: b\n" + RT + "threads: 2.0\n", "threads 2.0 is not a whole number"),
    ("bundle", "name: b\n" + RT + "bundle: 1\n", "bundle 1 must be true or false"),
    # measure
    ("measure text", "name: b\n" + RT + "measure: fast\n",
     "measure must be a mapping of options (runs, warmup, latency_stat), got the text 'fast'"),
    ("measure unknown", "name: b\n" + RT + "measure: {runz: 3}\n",
     "measure: unknown key 'runz' (did you mean 'runs'?); valid keys: runs, warmup, latency_stat"),
    ("runs zero", "name: b\n" + RT + "measure: {runs: 0}\n", "measure: runs=0 is below the minimum 1"),
    ("runs text", "name: b\n" + RT + "measure: {runs: '10'}\n", "measure: runs='10' is not a whole number"),
    ("warmup negative", "name: b\n" + RT + "measure: {warmup: -1}\n", "measure: warmup=-1 is below the minimum 0"),
    ("latency stat", "name: b\n" + RT + "measure: {latency_stat: p75}\n",
     "measure: latency_stat='p75' is not one of: p50, p90, p99, mean"),
    # device and runner
    ("device", "name: b\n" + RT + "device: phone\n", "device 'phone' must be host, adb (the one attached phone), "
                                                     "adb:SERIAL, gpu, gpu:N or none"),
    ("device no serial", "name: b\n" + RT + "device: 'adb:'\n", "device 'adb:' must be host"),
    ("device number", "name: b\n" + RT + "device: 5\n", "device 5 must be host"),
    ("runner list", "name: b\nruntimes: [executorch]\nrunner: [a]\n", "runner must map runtimes to runner binaries"),
    ("runner for host-only runtime", "name: b\n" + RT + "runner: {onnxruntime: bin/x}\n",
     "runner: onnxruntime has no phone runner (it is measured on the host only)"),
    ("runner for unlisted runtime", "name: b\n" + RT + "runner: {executorch: bin/x}\n",
     "runner: 'executorch' is not among this target's runtimes"),
    ("runner path", "name: b\nruntimes: [executorch]\nrunner: {executorch: 5}\n",
     "runner.executorch must be non-empty text, got 5"),
    # budgets
    ("budgets text", "name: b\n" + RT + "budgets: fast\n", "budgets must map metrics to limits"),
    ("budget metric", "name: b\n" + RT + "budgets: {speed: 5ms}\n",
     "budgets: unknown metric 'speed'; valid metrics: size, latency, memory, accuracy_drop"),
    ("budget no unit", "name: b\n" + RT + "budgets: {size: 100}\n", "budgets.size: '100' has no unit; use B, KB"),
    ("budget wrong unit", "name: b\n" + RT + "budgets: {latency: 5MB}\n",
     "budgets.latency: '5MB': unknown unit 'MB'; use us, ms or s"),
    ("budget empty", "name: b\n" + RT + "budgets: {size: ''}\n", "budgets.size is empty; write a number with a unit"),
    ("budget null", "name: b\n" + RT + "budgets: {memory: }\n", "budgets.memory: null is not a limit"),
    ("budget infinite", "name: b\n" + RT + "budgets: {memory: 1e999GB}\n", "budgets.memory: '1e999GB' is too large"),
    ("accuracy above 100", "name: b\n" + RT + "budgets: {accuracy_drop: 200pp}\n",
     "cannot drop by more than 100 percentage points"),
]


@pytest.mark.parametrize("case,content,fragment", BAD_TARGETS, ids=[c[0] for c in BAD_TARGETS])
def test_bad_target_files_are_one_line_usage_errors(tmp_path, case, content, fragment):
    board = write(tmp_path, content)
    with pytest.raises(UsageError) as info:
        load_target(str(board))
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message, f"{case}: not one line: {message!r}"
    assert message.startswith(f"target file {board}"), f"{case}: the file is not named first: {message}"
    assert fragment in message, f"{case}: {message}"


def test_a_directory_missing_file_or_unreadable_file_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "board.yaml"
    folder.mkdir()
    with pytest.raises(UsageError, match=r"board.yaml is a directory; give a target .yaml file$"):
        load_target(str(folder))
    with pytest.raises(UsageError, match="nope.yaml does not exist"):
        load_target(str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match="nope.yml does not exist"):
        parse_target(tmp_path / "nope.yml")

    board = write(tmp_path, "name: b\n" + RT)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(UsageError, match=r"b.yaml: cannot read it \(Permission denied\)$"):
        load_target(str(board))


def test_unknown_target_names_list_the_bundled_ones():
    with pytest.raises(UsageError, match=r"unknown target 'x86_cpu'; known targets: android-arm64, cuda, linux-arm64, "
                                         r"x86-cpu \(or pass a path to a target .yaml file\)$"):
        load_target("x86_cpu")


def test_every_registered_runtime_is_accepted_with_its_defaults(tmp_path):
    target = load_target(str(write(tmp_path, f"name: b\nruntimes: [{', '.join(REGISTRY)}]\n")))
    assert [r.name for r in target.runtimes] == list(REGISTRY)
