"""`edgepack build` end to end on x86-cpu: real exports, real ONNX Runtime sessions, real files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from edgepack.records import Report


def test_demo_build_meets_budget_and_accuracy(digits_build):
    out, report, result = digits_build
    assert result.exit_code == 0, result.output
    names = {a["name"]: a for a in report["artifacts"]}
    assert set(names) == {"onnxruntime-fp32", "onnxruntime-int8"}
    assert report["shipping"] == ["onnxruntime-int8"]
    # true lineage: ONNX Runtime quantizes its own fp32 file; the fp32 file is exported from the eager model
    assert (names["onnxruntime-fp32"]["parent"], names["onnxruntime-int8"]["parent"]) == ("eager", "onnxruntime-fp32")
    assert {t["stage"] for t in report["timings"]} >= {"loading model", "onnxruntime: exporting int8"}
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert acc["eager"] > 0.97, acc
    # the INT8 artifact, run through its ONNX Runtime session, stays within 1 pp of FP32 on held-out digits
    assert acc["onnxruntime-int8"] >= acc["onnxruntime-fp32"] - 0.01, acc
    assert abs(acc["onnxruntime-fp32"] - acc["eager"]) < 1e-9
    assert names["onnxruntime-int8"]["size_bytes"] < names["onnxruntime-fp32"]["size_bytes"] / 2.5
    verdict = report["verdicts"][0]
    assert verdict["metric"] == "size" and verdict["passed"]
    assert verdict["observed"] == names["onnxruntime-int8"]["size_bytes"]


def test_int8_artifact_is_really_quantized(digits_build):
    out, report, _ = digits_build
    graph = onnx.load(str(out / "digits-cnn-int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights in the int8 artifact"
    scheme = report["artifacts"][1]["scheme"]
    assert "u8 activations" in scheme and "per-channel" in scheme


def test_outputs_manifest_and_report_files(digits_build):
    out, report, _ = digits_build
    assert sorted(p.name for p in out.iterdir()) == [
        "digits-cnn-fp32.onnx", "digits-cnn-int8.onnx", "manifest.json", "report.html", "report.json", "report.md"]
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["size_bytes"] == len(data)
        assert entry["inputs"][0]["name"] == "input" and entry["inputs"][0]["dtype"] == "float32"
    assert manifest["preprocessing"]["mean"] == [0.5]
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert {"torch", "onnx", "onnxruntime", "edgepack"} <= set(manifest["versions"])
    md = (out / "report.md").read_text()
    for column in ("artifact", "precision", "size", "p50", "p90", "peak memory", "accuracy", "budgets"):
        assert f"| {column} " in md or f" {column} |" in md
    assert "all budgets met" in md
    page = (out / "report.html").read_text()  # rendered from the same report: its verdict and every artifact
    assert f"PASS: all {len(report['verdicts'])} budget verdicts met" in page
    assert all(a["name"] in page for a in report["artifacts"])


def test_measurements_are_real_and_labelled(digits_build):
    _, report, _ = digits_build
    for m in report["measurements"]:
        assert m["runs"] == 30 and m["threads"] == 1
        assert 0 < m["min_ms"] <= m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["init_ms"] > 0 and m["first_run_ms"] > 0
        assert m["where"].startswith("host ")
        # a child that loads a model peaks above the baseline child, which is far below the parent's torch-laden RSS
        assert m["baseline_rss_bytes"] < 300 * 2**20
        assert m["peak_rss_bytes"] >= m["baseline_rss_bytes"]
        assert m["versions"]["onnxruntime"] != "not installed"


def test_calibration_subset_size_is_configurable(runner, tmp_path):
    out = tmp_path / "cal"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--calibration-samples", "20", "--runs", "3",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"] == {"source": "zoo:digits (train split) (20 stratified, seed 0)", "samples": 20,
                                       "synthetic": False}
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"][1]["calibration"]["samples"] == 20


def test_rebuild_into_same_out_removes_artifacts_it_no_longer_makes(runner, tmp_path):
    out = tmp_path / "again"
    first = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--runs", "3", "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    assert (out / "digits-cnn-int8.onnx").exists()
    (out / "notes.txt").write_text("mine")  # not edgepack's: must survive
    second = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--precision", "fp32", "--runs", "3",
                                 "--out", str(out), "--quiet"])
    assert second.exit_code == 0, second.output
    assert not (out / "digits-cnn-int8.onnx").exists()
    assert (out / "digits-cnn-fp32.onnx").exists() and (out / "notes.txt").read_text() == "mine"


def test_report_round_trips(digits_build):
    out, report, _ = digits_build
    loaded = Report.from_json((out / "report.json").read_text())
    assert loaded.to_dict() == report
    assert loaded.passed


def test_budget_failure_exits_3_and_still_writes_report(runner, tmp_path):
    out = tmp_path / "fail"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--budget", "10KB", "--runs", "10",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "budget failed: size [onnxruntime-int8]: observed" in result.output
    assert "limit 10.00 KB" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verdicts"][0]["passed"] is False and report["verdicts"][0]["margin"] < 0
    assert (out / "digits-cnn-int8.onnx").exists()


def test_json_flag_prints_report_on_stdout(runner, tmp_path, models_file):
    result = runner.invoke(cli, ["build", "--model", f"{models_file}:build", "--precision", "fp32", "--runs", "5",
                                 "--max-latency", "10s", "--out", str(tmp_path / "j"), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["shipping"] == ["onnxruntime-fp32"]
    assert report["verdicts"][0]["metric"] == "latency" and report["verdicts"][0]["passed"]
    assert not any("synthetic" in w for w in report["warnings"])  # fp32 needs no calibration


@pytest.mark.parametrize("factory,taken", [("build_tuple", "[0]"), ("build_dict", "['logits']"),
                                           ("build_hf", ".logits")])
def test_structured_outputs_select_logits(runner, tmp_path, models_file, factory, taken):
    out = tmp_path / factory
    result = runner.invoke(cli, ["build", "--model", f"{models_file}:{factory}", "--runs", "5", "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["output_taken"] == taken
    assert any("synthetic" in w for w in report["warnings"])  # int8 without --calibration is flagged
    parity = {p["artifact"]: p for p in report["parity"]}
    assert parity["onnxruntime-fp32"]["max_abs_diff"] < 1e-4
    assert parity["onnxruntime-fp32"]["top1_agreement"] == 1.0


def test_the_readmes_first_command_works_as_written(tmp_path):
    """README.md opens with this command; it must run from the repository root exactly as printed."""
    import re
    import shlex

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    line = next(ln.strip() for ln in readme.splitlines() if ln.strip().startswith("edgepack build --model examples/"))
    args = shlex.split(line)[1:]
    args = [str(root / a) if re.match(r"examples/.*\.py:", a) else a for a in args]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["shipping"] == ["onnxruntime-int8"] and all(v["passed"] for v in report["verdicts"])


def test_a_build_ends_with_one_verdict_line(digits_build, tmp_path):
    out, report, result = digits_build
    assert result.stdout.splitlines()[-1] == f"PASS: all 1 budget verdicts met · report: {out}/report.html"
    assert (out / "report.html").is_file() and (out / "report.md").is_file()  # the page it names, and report.md
    failing = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--budget", "1KB", "--runs", "3",
                                       "--out", str(tmp_path / "small"), "--quiet"])
    assert failing.exit_code == 3
    assert failing.stdout.splitlines()[-1] == (f"FAIL: 1 of 1 budget verdicts failed · report: "
                                               f"{tmp_path / 'small'}/report.html")


@pytest.mark.slow
def test_runtime_auto_ships_the_fastest_runtime_within_budgets(tmp_path):
    """Every runtime x86-cpu lists is built, verified and measured; one artifact ships, with the reasons."""
    out = tmp_path / "auto"
    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--runtime", "auto", "--budget", "1MB",
                                      "--runs", "20", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    candidates = ["onnxruntime-int8", "executorch-int8", "litert-int8", "openvino-int8"]
    (winner,) = report["shipping"]
    assert winner in candidates
    assert [line.split(":")[0] for line in report["selection"][:4]] == candidates
    assert report["selection"][-1].startswith(f"shipped: {winner} — ")
    p50 = {m["artifact"]: m for m in report["measurements"] if m["artifact"] in candidates}
    fastest = min(p50.values(), key=lambda m: m["p50_ms"])
    spread = max(m["p90_ms"] - m["p50_ms"] for m in (fastest, p50[winner]))
    assert p50[winner]["p50_ms"] - fastest["p50_ms"] <= spread  # the fastest, or tied with it within the noise
    assert {v["artifact"] for v in report["verdicts"]} == {winner}  # the budgets judge what ships
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["runtime"] + "-" + a["precision"] for a in manifest["artifacts"] if a["shipping"]] == [winner]
    assert f"shipped: {winner}" in result.output and "## Runtime selection" in (out / "report.md").read_text()
