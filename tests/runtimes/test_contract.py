"""The contract every registered runtime keeps, checked the same way for each (a new runtime gets these for free).

Declared capabilities, options that validate themselves, true lineage, the missing-extra message and a light import
are checked in milliseconds; one slow test per runtime exports the trained digits CNN at fp32 and int8 with the real
libraries, loads both, compares them with eager PyTorch and times the int8 file in the measurement child.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import MissingDependency, ToolError, UsageError
from edgepack.fileio import sha256_file
from edgepack.records import Artifact
from edgepack.runtimes import REGISTRY, get_runtime, runtime_class
from edgepack.runtimes.base import (
    INT8_SOURCES,
    ExportRequest,
    QatRequest,
    RuntimeBase,
    RuntimeOptions,
    check_export_request,
)
from edgepack.schema import dataclass_schema

RUNTIMES = sorted(REGISTRY)
REPO = Path(__file__).resolve().parents[2]
# what importing a runtime module must not pull in: the planner reads capabilities before any heavy import
HEAVY_MODULES = ("torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "executorch", "torchao", "litert_torch",
                 "ai_edge_litert", "tensorflow", "jax")
INT8_PARITY = {"top1_agreement": 0.9, "max_abs_diff_of_scale": 0.2}  # loose: int8 moves logits, not the argmax
FP32_TOLERANCE = 1e-4  # max abs diff relative to the largest logit


def installed(name: str) -> bool:
    return not runtime_class(name)().missing()


def fake_artifact(runtime: str, precision: str, tmp_path: Path) -> Artifact:
    cls = runtime_class(runtime)
    return Artifact(name=f"{runtime}-{precision}", path=str(tmp_path / f"m-{precision}.{cls.file_format}"),
                    format=cls.file_format, runtime=runtime, precision=precision, size_bytes=1, sha256="0" * 64,
                    inputs=(), outputs=())


def bad_value(choices: tuple[object, ...]) -> object:
    """A value a target file might plausibly hold that is none of the choices."""
    return "yes" if isinstance(choices[0], bool) else "not-a-choice"


def target_sections(name: str) -> list[tuple[Path, dict[str, object]]]:
    """This runtime's section of every target file shipped (wherever the package keeps them)."""
    files = sorted({*REPO.glob("targets/*.yaml"), *REPO.glob("edgepack/targets/*.yaml")})
    assert files, "no target files found"
    sections = []
    for path in files:
        runtimes = yaml.safe_load(path.read_text()).get("runtimes") or {}
        if name in runtimes:
            sections.append((path, runtimes[name] or {}))
    return sections


# ---- declared capabilities ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RUNTIMES)
def test_capabilities_are_declared_with_valid_values(name):
    cls = runtime_class(name)
    assert issubclass(cls, RuntimeBase) and cls.name == name
    assert cls.file_format and cls.file_format.isalnum() and cls.file_format.islower()
    assert cls.extra and cls.modules and all(isinstance(m, str) for m in cls.modules)
    assert cls.int8_from in INT8_SOURCES, f"{name}.int8_from={cls.int8_from!r}; use one of {INT8_SOURCES}"
    assert isinstance(cls.supports_qat, bool)
    assert cls.phone_runner is None or (isinstance(cls.phone_runner, str) and cls.phone_runner)
    assert issubclass(cls.options_type, RuntimeOptions) and cls.options_type is not RuntimeOptions
    params = getattr(cls.options_type, "__dataclass_params__", None)
    assert params is not None and params.frozen, f"{cls.options_type.__name__} must be a frozen dataclass"


def test_file_formats_name_one_host_runtime():
    """`edgepack compare` finds a bare file's runtime by its suffix, among the runtimes that measure on the host."""
    formats = [runtime_class(name).file_format for name in RUNTIMES if runtime_class(name).measured_on == "host"]
    assert len(set(formats)) == len(formats), formats


@pytest.mark.parametrize("name", RUNTIMES)
def test_phone_runner_hooks_match_the_declaration(name):
    runtime = get_runtime(name)
    if runtime.phone_runner is None:
        with pytest.raises(UsageError, match="no phone runner"):
            runtime.phone_runner_argv("/d/runner", "/d/model", 1, 1, 1)
        return
    argv = runtime.phone_runner_argv("/d/runner", "/d/model", threads=4, warmup=3, runs=7)
    assert argv[0] == "/d/runner" and any("/d/model" in a for a in argv[1:]), argv
    assert any("4" in a for a in argv[1:]), f"{name}'s runner is not told the thread count: {argv}"
    overridden = type(runtime).parse_phone_runner_output is not RuntimeBase.parse_phone_runner_output
    assert overridden, f"{name} declares phone_runner {runtime.phone_runner!r} but does not parse its output"


# ---- options --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RUNTIMES)
def test_options_defaults_construct_and_are_frozen(name):
    options_type = runtime_class(name).options_type
    options = options_type()
    assert options.calibration_samples >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.calibration_samples = 2  # type: ignore[misc]
    schema = dataclass_schema(options_type)  # what target.schema.json holds for this runtime
    assert set(schema["properties"]) == set(options_type.option_names()) and not schema["additionalProperties"]


@pytest.mark.parametrize("name", RUNTIMES)
def test_bad_option_values_name_the_key_the_value_and_the_valid_ones(name):
    options_type = runtime_class(name).options_type
    with pytest.raises(ValueError, match=r"calibration_samples=0 must be a whole number >= 1"):
        options_type(calibration_samples=0)
    with pytest.raises(ValueError, match="calibration_samples='many'"):
        options_type(calibration_samples="many")  # type: ignore[arg-type]
    for f in dataclasses.fields(options_type):
        choices = f.metadata.get("choices")
        if choices is None:
            continue
        for good in choices:
            options_type(**{f.name: good})
        bad = bad_value(choices)
        with pytest.raises(ValueError) as info:
            options_type(**{f.name: bad})
        message = str(info.value)
        assert message.startswith(f"{f.name}={bad!r} is not one of: "), message
        assert all((str(c).lower() if isinstance(c, bool) else str(c)) in message for c in choices), message


@pytest.mark.parametrize("name", RUNTIMES)
def test_unknown_option_keys_are_refused_with_the_valid_ones(name):
    options_type = runtime_class(name).options_type
    with pytest.raises(ValueError, match=r"unknown key 'calibration_sample'; valid keys: calibration_samples"):
        options_type.from_mapping({"calibration_sample": 10})
    assert options_type.from_mapping({}) == options_type()


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_shipped_target_file_is_valid_for_the_runtime(name):
    for path, section in target_sections(name):
        try:
            runtime_class(name).options_type.from_mapping(section)
        except ValueError as exc:
            pytest.fail(f"{path.name}: runtimes.{name}: {exc}")


# ---- lineage, QAT and missing libraries (no export needed) -----------------------------------------------------------
@pytest.mark.parametrize("name", RUNTIMES)
def test_parent_must_be_what_the_artifact_really_derives_from(name, tmp_path):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    runtime = get_runtime(name)
    fp32 = fake_artifact(name, "fp32", tmp_path)
    with pytest.raises(ToolError, match="exported from the eager model"):
        runtime.check_request(ExportRequest("fp32", tmp_path, parent=fp32))
    if runtime.int8_from == "fp32":
        runtime.check_request(ExportRequest("int8", tmp_path, parent=fp32))
        with pytest.raises(ToolError, match="fp32 artifact; pass it as parent"):
            runtime.check_request(ExportRequest("int8", tmp_path))
        other = next((n for n in RUNTIMES if n != name), None)
        if other is not None:
            with pytest.raises(ToolError, match=f"given: {other}-fp32"):
                runtime.check_request(ExportRequest("int8", tmp_path, parent=fake_artifact(other, "fp32", tmp_path)))
    else:
        runtime.check_request(ExportRequest("int8", tmp_path))
        with pytest.raises(ToolError, match="exported from the eager model"):
            runtime.check_request(ExportRequest("int8", tmp_path, parent=fp32))


@pytest.mark.parametrize("name", RUNTIMES)
def test_qat_is_refused_where_the_runtime_declares_none(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    runtime = get_runtime(name)
    train = ArrayDataset("labelled", np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, np.int64))
    qat = QatRequest(train, epochs=1)
    with pytest.raises(UsageError, match="quantization-aware training builds int8, not fp32"):
        check_export_request(runtime, "fp32", qat)
    if runtime.supports_qat:
        check_export_request(runtime, "int8", qat)
    else:
        with pytest.raises(UsageError, match=f"{name} has no quantization-aware training path"):
            check_export_request(runtime, "int8", qat)


@pytest.mark.parametrize("name", RUNTIMES)
def test_missing_libraries_name_the_pip_extra(name, monkeypatch, tmp_path):
    runtime = get_runtime(name)
    monkeypatch.setattr(importlib.util, "find_spec", lambda module: None)
    reasons = runtime.missing()
    assert len(reasons) == len(runtime.modules)
    assert all(f"pip install 'edgepack[{runtime.extra}]'" in r for r in reasons), reasons
    with pytest.raises(MissingDependency, match=f"{name} runtime unavailable"):
        runtime.export(object(), ExportRequest("fp32", tmp_path))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", RUNTIMES)
def test_importing_the_runtime_imports_no_heavy_library(name):
    code = (f"import sys\nfrom edgepack.runtimes import runtime_class\ncls = runtime_class({name!r})\n"
            f"cls.options_type(); cls().missing()\n"
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing {name} imported {proc.stdout.strip()}"


# ---- the real thing: export, load, parity, measure ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", RUNTIMES)
def test_exports_fp32_and_int8_that_load_agree_with_eager_and_measure(name, digits_bundle, digits_split, eager,
                                                                      tmp_path):
    from edgepack.measure import MeasureSpec, measure_artifact

    if not installed(name):
        pytest.skip(f"{name} is not installed")
    runtime = get_runtime(name)
    train, test = digits_split
    fp32 = runtime.export(digits_bundle, ExportRequest("fp32", tmp_path))
    parent = fp32 if runtime.int8_from == "fp32" else None
    int8 = runtime.export(digits_bundle, ExportRequest("int8", tmp_path, calibration=train.take(32), parent=parent))

    # the records describe the files
    for artifact, precision in ((fp32, "fp32"), (int8, "int8")):
        path = Path(artifact.path)
        assert path.is_file() and path.parent == tmp_path and path.suffix == f".{runtime.file_format}"
        assert (artifact.name, artifact.runtime, artifact.precision) == (f"{name}-{precision}", name, precision)
        assert artifact.format == runtime.file_format
        # the size counts every file the artifact needs; each companion sits beside it with its own digest
        assert artifact.size_bytes == sum(f.stat().st_size for f in artifact.files())
        assert artifact.sha256 == sha256_file(path)
        for companion in artifact.companions:
            assert sha256_file(path.with_name(companion.name)) == companion.sha256
        assert artifact.inputs and artifact.outputs and artifact.scheme
        assert Artifact.from_dict(artifact.to_dict()) == artifact
    # nothing else is left in the output directory: no temporary files, no intermediate formats
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for a in (fp32, int8) for f in a.files())
    assert fp32.parent == "eager"
    assert int8.parent == ("eager" if runtime.int8_from == "eager" else fp32.name)
    assert int8.calibration is not None and 0 < int8.calibration.samples <= 32
    # the file holding the weights shrinks (an IR's .xml graph description is a fixed cost on a model this small)
    heaviest = {a.precision: max(f.stat().st_size for f in a.files()) for a in (fp32, int8)}
    assert heaviest["int8"] < heaviest["fp32"] / 2, heaviest
    # every conv and linear weight of the CNN is stored in 8 bits; fp32 artifacts carry no share
    assert int8.int8_weight_share is not None and int8.int8_weight_share > 0.95, int8.int8_weight_share
    assert fp32.int8_weight_share is None

    # both load and agree with eager PyTorch: fp32 tightly, int8 on the argmax
    x = test.inputs[:64]
    ref = eager(digits_bundle, x)
    scale = max(1.0, float(np.abs(ref).max()))
    out_fp32 = runtime.load(Path(fp32.path), 1)([x])[0]
    assert out_fp32.shape == ref.shape and out_fp32.dtype == np.float32
    assert np.abs(out_fp32 - ref).max() <= FP32_TOLERANCE * scale
    out_int8 = runtime.load(Path(int8.path), 1)([x])[0]
    assert out_int8.shape == ref.shape and out_int8.dtype == np.float32
    assert (out_int8.argmax(1) == ref.argmax(1)).mean() >= INT8_PARITY["top1_agreement"]
    assert np.abs(out_int8 - ref).max() <= INT8_PARITY["max_abs_diff_of_scale"] * scale

    snippet = runtime.bundle_snippet(int8, 4, runtime.versions())
    assert snippet is None or Path(int8.path).name in snippet

    # timed in the measurement child, with the runtime's own session
    spec = MeasureSpec(name, threads=1, runs=5, warmup=1)
    m = measure_artifact(int8.name, Path(int8.path), [t.numpy() for t in digits_bundle.example_inputs], spec)
    assert (m.artifact, m.runtime, m.threads, m.runs) == (int8.name, name, 1, 5)
    assert 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.max_ms
    assert m.init_ms is not None and m.init_ms > 0 and m.first_run_ms is not None and m.first_run_ms > 0
    assert m.peak_rss_bytes is not None and m.peak_rss_bytes > 0
