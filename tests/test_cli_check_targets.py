"""`edgepack check` re-judges saved reports; `edgepack targets` lists targets; the CLI starts without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from edgepack.cli import cli


def test_check_rejudges_without_rerunning(runner, digits_build, tmp_path):
    out, report, _ = digits_build
    size = next(a["size_bytes"] for a in report["artifacts"] if a["name"] == "onnxruntime-int8")
    result = runner.invoke(cli, ["check", str(out / "report.json")])
    assert result.exit_code == 0, result.output
    assert "pass  size [onnxruntime-int8]" in result.output
    result = runner.invoke(cli, ["check", str(out / "report.json"), "--budget", f"{size - 1}B"])
    assert result.exit_code == 3, result.output
    assert "over by 1 B" in result.output
    result = runner.invoke(cli, ["check", str(out / "report.json"), "--max-accuracy-drop", "1pp", "--json"])
    assert result.exit_code == 0, result.output
    verdicts = json.loads(result.stdout)
    drop = next(v for v in verdicts if v["metric"] == "accuracy_drop")
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert abs(drop["observed"] - (acc["eager"] - acc["onnxruntime-int8"]) * 100) < 1e-9


def test_check_latency_and_memory_budgets_use_measurements(runner, digits_build):
    out, report, _ = digits_build
    m = next(m for m in report["measurements"] if m["artifact"] == "onnxruntime-int8")
    result = runner.invoke(cli, ["check", str(out / "report.json"), "--max-latency", "1us", "--latency-stat", "p50"])
    assert result.exit_code == 3
    assert f"{m['p50_ms']:.3f} ms" in result.output
    result = runner.invoke(cli, ["check", str(out / "report.json"), "--max-memory", "10GB", "--max-latency", "10s"])
    assert result.exit_code == 0, result.output


def test_check_bad_inputs(runner, tmp_path):
    result = runner.invoke(cli, ["check", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "no such report" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{\"hello\": 1}")
    result = runner.invoke(cli, ["check", str(bad)])
    assert result.exit_code == 2 and "not an edgepack report" in result.output


def test_targets_lists_bundled_targets_and_runtime_state(runner):
    result = runner.invoke(cli, ["targets"])
    assert result.exit_code == 0, result.output
    assert "x86-cpu:" in result.output and "android-arm64:" in result.output
    assert "- onnxruntime: ready" in result.output


def test_user_target_file_drives_behaviour(runner, tmp_path):
    board = tmp_path / "board.yaml"
    board.write_text(textwrap.dedent("""
        name: my-board
        description: a user's board
        runtimes:
          onnxruntime: {scheme: static-qdq, activation_type: uint8, per_channel: true, calibration_samples: 32}
        precision: fp32
        threads: 1
        measure: {runs: 7, warmup: 2, latency_stat: p50}
        budgets: {size: 500KB}
    """))
    out = tmp_path / "out"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", str(board), "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "my-board"
    assert report["shipping"] == ["onnxruntime-fp32"]
    assert report["measurements"][0]["runs"] == 7
    assert report["verdicts"][0]["metric"] == "size" and report["verdicts"][0]["limit"] == 500_000


def test_bad_target_file(runner, tmp_path):
    board = tmp_path / "board.yaml"
    board.write_text("name: b\nruntimes: {tensorrt: {}}\n")
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", str(board), "--quiet"])
    assert result.exit_code == 2
    assert "unknown runtime 'tensorrt'" in result.output


def test_import_and_help_do_not_import_heavy_libraries():
    code = ("import sys, edgepack, edgepack.cli\n"
            "from click.testing import CliRunner\n"
            "r = CliRunner().invoke(edgepack.cli.cli, ['--help'])\n"
            "assert r.exit_code == 0 and 'Exit codes' in r.output\n"
            "r = CliRunner().invoke(edgepack.cli.cli, ['build', '--help'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(' '.join(m for m in ('torch', 'onnxruntime', 'executorch', 'litert_torch', 'onnx') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_help_documents_exit_codes_and_budget_metrics(runner):
    result = runner.invoke(cli, ["build", "--help"])
    text = " ".join(result.output.split())  # help text is wrapped
    assert "3 a budget failed" in text
    assert "default from the target: p90" in text and "peak RSS" in text and "percentage points" in text
