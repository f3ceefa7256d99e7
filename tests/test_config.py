"""Budget and shape parsing, target files."""

from __future__ import annotations

import pytest

from edgepack.budgets import merge_budgets, parse_budget
from edgepack.config import load_target, parse_input_shape, target_budgets
from edgepack.errors import UsageError


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


def test_parse_input_shape():
    assert parse_input_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_input_shape("1, 3, 8, 8") == (1, 3, 8, 8)
    for bad in ("1x0x8", "abc", ""):
        with pytest.raises(UsageError):
            parse_input_shape(bad)


def test_bundled_targets_are_real_data():
    x86 = load_target("x86-cpu")
    assert x86.default_runtimes == ("onnxruntime",)
    assert {r.name for r in x86.runtimes} == {"onnxruntime", "executorch", "litert"}
    ort = x86.runtime("onnxruntime").options
    assert ort["activation_type"] == "uint8" and ort["per_channel"] is True
    assert x86.threads == 1 and x86.precision == "int8" and x86.runs >= 50
    board = load_target("linux-arm64")
    assert board.arch == "arm64" and {r.name for r in board.runtimes} == {"onnxruntime", "executorch", "litert"}
    android = load_target("android-arm64")
    assert android.default_runtimes == ("executorch", "litert") and android.arch == "arm64"


def test_target_budgets_merge_with_command_line(tmp_path):
    board = tmp_path / "b.yaml"
    board.write_text("name: b\nruntimes: [onnxruntime]\nbudgets: {size: 1MB, latency: 5ms}\n")
    target = load_target(str(board))
    defaults = target_budgets(target)
    merged = merge_budgets(defaults, [parse_budget("size", "2MB")])
    assert sorted((b.metric, b.limit) for b in merged) == [("latency", 5.0), ("size", 2e6)]


@pytest.mark.parametrize("content,fragment", [
    ("name: b\n", "missing key(s) runtimes"),
    ("name: b\nruntimes: [onnxruntime]\nthreadz: 2\n", "unknown key(s) threadz"),
    ("name: b\nruntimes: [onnxruntime]\nprecision: fp16\n", "must be int8 or fp32"),
    ("[unclosed", "invalid YAML"),
])
def test_bad_target_files(tmp_path, content, fragment):
    board = tmp_path / "b.yaml"
    board.write_text(content)
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_target(str(board))
