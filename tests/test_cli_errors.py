"""Bad input: one line naming the problem and the fix, exit 2, and no artifact left that looks complete."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch

from edgepack.cli import cli


def _run_bad(runner, tmp_path, args, expected):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["build", *args, "--out", str(out), "--quiet", "--runs", "3"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("edgepack: error: "), lines
    assert "Traceback" not in result.output
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert not any(p.suffix in {".onnx", ".pte", ".tflite", ".json"} for p in out.rglob("*")) if out.exists() else True
    return lines[0]


def _import_models(path: Path, name: str):
    """Import the tiny models file as a named module, so pickled modules refer to an importable class."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_missing_model_file(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "nowhere/model.py:build"], ["nowhere/model.py does not exist"])


def test_callable_not_found_lists_what_the_module_defines(runner, tmp_path, models_file):
    line = _run_bad(runner, tmp_path, ["--model", f"{models_file}:buld"], ["defines no 'buld'", "build", "build_dict"])
    assert "Tiny" in line


def test_callable_returning_non_module(runner, tmp_path, models_file):
    _run_bad(runner, tmp_path, ["--model", f"{models_file}:not_a_module"], ["returned int, not a torch.nn.Module"])


def test_unknown_module_path(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "no_such_pkg.models:build"], ["cannot import module 'no_such_pkg.models'"])


def test_checkpoint_needing_unpickling(runner, tmp_path, models_file):
    mod = _import_models(models_file, "tiny_models_ckpt")
    ckpt = tmp_path / "whole.pt"
    torch.save(mod.Tiny(), ckpt)
    _run_bad(runner, tmp_path, ["--model", str(ckpt), "--input-shape", "1x1x8x8"], ["--trust-checkpoint"])


def test_state_dict_checkpoint_with_factory_and_trusted_checkpoint(runner, tmp_path, models_file):
    mod = _import_models(models_file, "tiny_models_sd")
    model, _ = mod.build()
    sd = tmp_path / "weights.pt"
    torch.save(model.state_dict(), sd)
    result = runner.invoke(cli, ["build", "--model", str(sd), "--factory", f"{models_file}:build", "--precision",
                                 "fp32", "--runs", "3", "--out", str(tmp_path / "sd"), "--quiet"])
    assert result.exit_code == 0, result.output
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)
    result = runner.invoke(cli, ["build", "--model", str(whole), "--trust-checkpoint", "--input-shape", "1x1x8x8",
                                 "--precision", "fp32", "--runs", "3", "--out", str(tmp_path / "whole"), "--quiet"])
    assert result.exit_code == 0, result.output
    # a state dict without --factory says what is missing
    _run_bad(runner, tmp_path, ["--model", str(sd)], ["needs --factory"])


def test_pt2_program(runner, tmp_path, models_file):
    mod = _import_models(models_file, "tiny_models_pt2")
    model, x = mod.build()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,)), str(path))
    result = runner.invoke(cli, ["build", "--model", str(path), "--precision", "fp32", "--runs", "3", "--out",
                                 str(tmp_path / "pt2"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pt2" / "tiny-fp32.onnx").exists()


def test_input_shape_the_model_rejects(runner, tmp_path, models_file):
    _run_bad(runner, tmp_path, ["--model", f"{models_file}:build", "--input-shape", "1x3x8x8"],
             ["the model rejected input shape 1x3x8x8", "RuntimeError", "--input-shape"])


def test_two_float_inputs_build_under_their_forward_names(runner, tmp_path, models_file):
    result = runner.invoke(cli, ["build", "--model", f"{models_file}:build_two_inputs", "--precision", "fp32",
                                 "--runs", "3", "--out", str(tmp_path / "two"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert [i["name"] for i in report["artifacts"][0]["inputs"]] == ["a", "b"]
    assert [(d["name"], d["kind"]) for d in report["model"]["inputs"]] == [("a", "float"), ("b", "float")]
    assert report["parity"][0]["max_abs_diff"] < 1e-5


def test_no_input_shape_known(runner, tmp_path, models_file):
    _run_bad(runner, tmp_path, ["--model", f"{models_file}:build_no_shape"], ["pass --input-shape"])


def test_malformed_input_shape(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--input-shape", "1xAx8"], ["write it like 1x3x224x224"])


def test_unknown_target_lists_known_ones(runner, tmp_path):
    line = _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--target", "x86-cpuu"],
                    ["unknown target 'x86-cpuu'", "x86-cpu", "android-arm64"])
    assert "did you mean" not in line  # never auto-corrected


def test_unknown_zoo_model(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "zoo:resnet"], ["unknown zoo model 'resnet'", "resnet18-cifar"])


@pytest.mark.parametrize("flag,value,fragment", [
    ("--budget", "100", "has no unit"),
    ("--budget", "10 parsecs", "unknown unit 'parsecs'"),
    ("--max-latency", "fast", "not a number with a unit"),
    ("--max-memory", "-5MB", "must be greater than zero"),  # refused as negative, no longer as unreadable
])
def test_malformed_budget_names_units(runner, tmp_path, flag, value, fragment):
    line = _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", flag, value], [fragment])
    assert "e.g." in line


def test_accuracy_budget_without_eval(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--max-accuracy-drop", "1pp"], ["needs --eval"])


def test_calibration_of_wrong_shape(runner, tmp_path):
    data = tmp_path / "cal.npz"
    np.savez(data, x=np.zeros((16, 3, 8, 8), np.float32))
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--calibration", str(data)],
             ["samples have shape (3, 8, 8)", "takes (1, 8, 8)"])


def test_calibration_sample_count_must_be_positive(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--calibration-samples", "0"], ["use 1 or more"])


def test_eval_labels_outside_model_classes(runner, tmp_path):
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 12]))
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--eval", str(data)], ["labels span 0..12", "10 classes"])


def test_eval_zoo_for_a_model_without_dataset(runner, tmp_path, models_file):
    _run_bad(runner, tmp_path, ["--model", f"{models_file}:build", "--eval", "zoo"], ["has no built-in dataset"])


def test_unwritable_out(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--out", str(blocker / "sub"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "not a writable directory" in result.output


def test_exporter_rejection_names_the_op_and_leaves_nothing(runner, tmp_path, models_file):
    out = tmp_path / "out"
    _run_bad(runner, tmp_path, ["--model", f"{models_file}:build_histc"], ["aten.histc", "cannot be exported"])
    leftovers = [p for p in out.parent.rglob("*") if p.suffix == ".onnx" or "partial" in p.name or "staging" in p.name]
    assert leftovers == []


def test_unknown_runtime_for_target(runner, tmp_path):
    _run_bad(runner, tmp_path, ["--model", "zoo:digits-cnn", "--runtime", "tensorrt"],
             ["cannot use runtime 'tensorrt'", "onnxruntime"])
