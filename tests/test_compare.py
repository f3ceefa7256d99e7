"""`edgepack compare A B`: two real ONNX models measured interleaved in fresh child processes; a model doing four
times the work is caught as slower (exit 3 with --max-regression), two copies of one model are not, and bad input
exits 2 with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import cli
from edgepack.regression import rank_test
from edgepack.stats import median_ratio_interval

WIDTH = 256


def matmul_chain(path: Path, layers: int, width: int = WIDTH, seed: int = 0) -> Path:
    """A real ONNX model: `layers` MatMul+Relu of width x width on a (1, width) input; its run time grows with
    `layers`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, last = [], [], "input"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], ["output"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    light = matmul_chain(d / "light.onnx", 4)
    return {"light": light, "copy": Path(shutil.copy(light, d / "copy.onnx")),
            "heavy": matmul_chain(d / "heavy.onnx", 16), "narrow": matmul_chain(d / "narrow.onnx", 4, width=128)}


def run(runner, *args: str):
    return runner.invoke(cli, ["compare", *args, "--rounds", "4", "--runs", "25", "--warmup", "5", "--quiet"])


def test_a_model_doing_four_times_the_work_is_slower_and_fails_the_threshold(runner, models, tmp_path):
    out = tmp_path / "cmp.json"
    result = run(runner, str(models["light"]), str(models["heavy"]), "--max-regression", "10%", "--json", str(out))
    assert result.exit_code == 3, result.output
    data = json.loads(out.read_text())
    # every B round slower than every A round: 1 / C(8, 4) exactly, or scipy's normal approximation (about 0.015)
    # when two rounds of one side tie to the timer's resolution; either way the p the gate used is the rounds' own
    assert min(data["b"]["round_p50_ms"]) > max(data["a"]["round_p50_ms"])
    assert data["p_slower"] == pytest.approx(rank_test(data["b"]["round_p50_ms"], data["a"]["round_p50_ms"]))
    assert data["verdict"] == "B is slower" and data["p_slower"] < 0.02
    assert 2.0 < data["ratio"] and data["ratio_low"] <= data["ratio"] <= data["ratio_high"]
    assert data["order"] == "A B A B A B A B" and data["rounds"] == 4 and data["threads"] == 1
    for side in ("a", "b"):
        m = data[side]["measurement"]
        assert m["runs"] == 100 and len(m["samples_ms"]) == 100 and len(data[side]["round_p50_ms"]) == 4
        assert data[side]["p50_ms"] == pytest.approx(float(np.median(data[side]["round_p50_ms"])))
        assert m["peak_over_baseline_bytes"] is not None and m["where"].startswith("host ")
        assert data[side]["runtime"] == "onnxruntime"
    regression = data["regression"]
    assert regression["passed"] is False and regression["metric"] == "latency_regression"
    assert regression["ratio"] == pytest.approx(data["ratio"])
    assert regression["p_value"] == pytest.approx(data["p_slower"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("A: light.onnx") and lines[1].startswith("B: heavy.onnx")
    assert "thread(s): 4 rounds of 25 runs" in result.stdout and "interleaved A B A B A B A B" in result.stdout
    assert "B/A p50 ratio ×" in result.stdout and "95% interval [×" in result.stdout
    assert "Mann-Whitney U on the rounds' p50s (one-sided, 4 vs 4): B is slower" in result.stdout
    assert "(one-sided, 4 vs 4 rounds' p50s)" in result.stdout  # the gate's verdict says what it tested
    assert "peak memory" in result.stdout
    assert "FAIL  latency regression (≤ +10%) [heavy.onnx]" in result.stdout
    assert "budget failed: latency regression" in result.stderr


def test_the_faster_model_as_b_passes(runner, models):
    result = run(runner, str(models["heavy"]), str(models["light"]), "--max-regression", "10%")
    assert result.exit_code == 0, result.output
    assert "B is faster" in result.stdout and "pass  latency regression" in result.stdout


def test_two_copies_of_one_model_do_not_fail(runner, models, tmp_path):
    out = tmp_path / "same.json"
    result = run(runner, str(models["light"]), str(models["copy"]), "--max-regression", "25%", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    # the verdict is the point; the ratio itself moves with the machine's load (1.5 was seen beside a busy job)
    assert data["regression"]["passed"] and 0.5 < data["ratio"] < 2.0


def test_a_build_directory_compares_its_shipped_artifact(runner, digits_build, tmp_path):
    out_dir, report, build_result = digits_build
    assert build_result.exit_code == 0, build_result.output
    shipped = report["shipping"][0]
    path = out_dir / Path(next(a["path"] for a in report["artifacts"] if a["name"] == shipped)).name
    out = tmp_path / "dir.json"
    result = run(runner, str(out_dir), str(path), "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    # both sides resolved through the report: the artifact's name, runtime, and the report's model inputs
    assert data["a"]["name"] == data["b"]["name"] == shipped
    assert data["a"]["inputs_from"] == data["b"]["inputs_from"] == f"{out_dir}/report.json"
    assert data["regression"] is None


def test_the_ratio_interval_covers_a_known_slowdown_and_not_a_false_one():
    rng = np.random.default_rng(3)
    a = [list(np.exp(rng.normal(0, 0.15, 40))) for _ in range(5)]
    slower = [list(1.2 * np.exp(rng.normal(0, 0.15, 40))) for _ in range(5)]
    same = [list(np.exp(rng.normal(0, 0.15, 40))) for _ in range(5)]
    hit = median_ratio_interval(a, slower)
    assert hit.low < 1.2 < hit.high and hit.low > 1.05
    null = median_ratio_interval(a, same)
    assert null.low < 1.0 < null.high
    assert median_ratio_interval(a, slower) == hit  # seeded: the same runs give the same interval


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file or directory"),
    ("unknown-type", "unknown artifact type '.bin'"),
    ("different-inputs", "cannot be fed the same inputs"),
    ("corrupt", "not a readable onnxruntime artifact"),
    ("dir-without-report", "is a directory without report.json"),
    ("rounds", "--rounds 0"),
    ("too-few-rounds-to-judge", "--max-regression needs --rounds 4 or more"),
    ("other-metric", "compare judges latency only"),
    ("json-dir", "--json"),
])
def test_bad_input_exits_2_with_one_line(runner, models, tmp_path, case, expected):
    light = str(models["light"])
    (tmp_path / "x.bin").write_bytes(b"\0" * 16)
    (tmp_path / "corrupt.onnx").write_text("not a model")
    (tmp_path / "empty").mkdir()
    args = {
        "missing": [str(tmp_path / "nope.onnx"), light],
        "unknown-type": [str(tmp_path / "x.bin"), light],
        "different-inputs": [light, str(models["narrow"])],
        "corrupt": [light, str(tmp_path / "corrupt.onnx")],
        "dir-without-report": [str(tmp_path / "empty"), light],
        "rounds": [light, light, "--rounds", "0"],
        "too-few-rounds-to-judge": [light, light, "--rounds", "3", "--max-regression", "10%"],
        "other-metric": [light, light, "--max-regression", "size=5%"],
        "json-dir": [light, light, "--json", str(tmp_path)],
    }[case]
    result = runner.invoke(cli, ["compare", *args, "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and expected in result.output and "Traceback" not in result.output
    assert result.stdout == ""  # nothing measured, nothing printed as a result


def test_runtime_autos_tie_check_finds_the_heavier_model_slower(models):
    """`--runtime auto` asks this before a tie goes to the lighter candidate: two artifacts of a report, measured
    interleaved in fresh processes. (Two copies of one file are called slower in about 1 of 12 checks at 4 rounds on
    a loaded 2-core machine, the rank test's false-alarm rate: harmless there, the faster one then ships, but too
    often for a test to assert.)"""
    from contextlib import nullcontext
    from dataclasses import replace

    from edgepack.compare import slower_when_interleaved
    from edgepack.records import ModelInput

    from tests.ci_reports import report as make_report

    base = make_report()
    art = base.artifacts[0]
    spec = ModelInput(name="input", shape=(1, WIDTH), dtype="float32", kind="float")
    report = replace(base, model=replace(base.model, inputs=(spec,)), artifacts=tuple(
        replace(art, name=name, path=str(models[key]), runtime="onnxruntime")
        for name, key in (("light", "light"), ("heavy", "heavy"))))
    check = slower_when_interleaved(report, threads=1, runs=25, warmup=5, stage=lambda text: nullcontext())
    why = check("light", "heavy")
    assert why is not None and why.startswith("heavy is slower than light measured interleaved (4 rounds of 25 runs")
