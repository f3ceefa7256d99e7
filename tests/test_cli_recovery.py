"""Recovery through the CLI: distillation (pass and command), QAT beside PTQ, robustness."""

from __future__ import annotations

import json

import pytest

from edgepack.cli import cli


@pytest.mark.slow
def test_distilled_half_width_student_int8_within_a_point_of_teacher(runner, tmp_path):
    out = tmp_path / "student"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--distill", "width=0.5,epochs=10",
                                 "--runtime", "onnxruntime,executorch", "--eval", "zoo", "--max-accuracy-drop", "1pp",
                                 "--runs", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    record = report["model"]["passes"][0]
    assert record["name"] == "distill" and record["params_after"] < record["params_before"] / 3
    teacher_fp32 = record["accuracy_before"]
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert acc["original"] == teacher_fp32
    for name in ("onnxruntime-int8", "executorch-int8"):
        assert acc[name] >= teacher_fp32 - 0.01, (name, acc, teacher_fp32)
    drops = {v["artifact"]: v["observed"] for v in report["verdicts"] if v["metric"] == "accuracy_drop"}
    assert drops["onnxruntime-int8"] == pytest.approx((teacher_fp32 - acc["onnxruntime-int8"]) * 100)


def test_distill_command_writes_a_student_build_accepts(runner, tmp_path):
    pt2 = tmp_path / "student.pt2"
    result = runner.invoke(cli, ["distill", "--teacher", "zoo:digits-cnn", "--student", "width=0.5", "--epochs", "3",
                                 "--eval", "zoo", "--out", str(pt2), "--quiet"])
    assert result.exit_code == 0, result.output
    history = json.loads(pt2.with_suffix(".json").read_text())
    record = history["passes"][-1]
    assert record["params_after"] < record["params_before"] / 3
    # 3.8x fewer parameters is more than one stage may take (max 3x): a teacher assistant stands in between
    assert len(record["stages"]) == 2
    assert record["stages"][-1]["student_params"] == record["params_after"]
    assert record["stages"][-1]["student_top1"] > 0.9
    result = runner.invoke(cli, ["build", "--model", str(pt2), "--eval", "zoo", "--precision", "fp32", "--runs", "5",
                                 "--out", str(tmp_path / "b"), "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args,fragment", [
    (["--student", "width=1.5"], "width"),
    (["--student", "width=0.5", "--alpha", "2"], "alpha"),
    (["--student", "width=0.5", "--out-of-range"], "No such option"),
])
def test_distill_bad_input(runner, tmp_path, args, fragment):
    result = runner.invoke(cli, ["distill", "--teacher", "zoo:digits-cnn", *args, "--out", str(tmp_path / "s.pt2")])
    assert result.exit_code == 2, result.output
    assert fragment in result.output


@pytest.mark.slow
def test_qat_artifacts_ship_beside_ptq(runner, tmp_path):
    out = tmp_path / "qat"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--qat", "1", "--runtime",
                                 "onnxruntime,litert", "--eval", "zoo", "--runs", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    assert "onnxruntime-int8" in names and "onnxruntime-int8-qat" in names
    assert report["shipping"] == ["onnxruntime-int8-qat", "litert-int8"]
    assert any("litert has no quantization-aware training" in w for w in report["warnings"])
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert acc["onnxruntime-int8-qat"] >= acc["eager"] - 0.02, acc
    qat = next(a for a in report["artifacts"] if a["name"] == "onnxruntime-int8-qat")
    assert "quantization-aware training" in qat["scheme"]
    assert {o["op"]: o["count"] for o in qat["ops"]}.get("QuantizeLinear", 0) > 0


def test_qat_needs_int8(runner, tmp_path):
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--qat", "1", "--precision", "fp32",
                                 "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 2 and "drop --precision fp32" in result.output


def test_robustness_rows_for_eager_and_artifacts(runner, tmp_path):
    out = tmp_path / "rob"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--robustness", "--eval", "zoo",
                                 "--runs", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_name = {r["artifact"]: r["rows"] for r in report["robustness"]}
    assert set(by_name) == {"eager", "onnxruntime-fp32", "onnxruntime-int8"}
    eager = {(r["corruption"], r["severity"]): r["top1"] for r in by_name["eager"]}
    assert eager[("gaussian_noise", 3)] < eager[("gaussian_noise", 1)] <= eager[("clean", 0)]
    fp32 = {(r["corruption"], r["severity"]): r["top1"] for r in by_name["onnxruntime-fp32"]}
    assert fp32 == pytest.approx(eager, abs=0.01)  # same model, same corrupted inputs
    assert "## Robustness" in (out / "report.md").read_text()


def test_robustness_needs_eval(runner, tmp_path):
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--robustness", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--robustness needs --eval" in result.output
