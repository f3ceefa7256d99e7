"""Compression through the CLI: passes inside `build`, and `edgepack compress` feeding `build` a .pt2."""

from __future__ import annotations

import json

import pytest

from edgepack.cli import cli


def test_build_with_pruning_and_finetune_records_passes(runner, tmp_path):
    out = tmp_path / "pruned"
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", "--prune", "0.5", "--finetune", "3",
                                 "--eval", "zoo", "--runs", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    prune, finetune = report["model"]["passes"]
    assert prune["name"] == "prune" and finetune["name"] == "finetune"
    assert prune["params_after"] < prune["params_before"] / 3
    assert report["model"]["params"] == finetune["params_after"]
    # pruning without recovery loses accuracy; fine-tuning on the zoo's training split brings it back
    assert finetune["accuracy_after"] > 0.9 and finetune["accuracy_after"] > prune["accuracy_after"]
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert abs(acc["eager"] - finetune["accuracy_after"]) < 1e-9
    assert "## Compression" in (out / "report.md").read_text()


def test_compress_command_writes_pt2_that_build_accepts(runner, tmp_path):
    pt2 = tmp_path / "small.pt2"
    result = runner.invoke(cli, ["compress", "--model", "zoo:digits-cnn", "--lowrank", "rank=4,targets=all",
                                 "--eval", "zoo", "--out", str(pt2), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "lowrank: params 24,170 ->" in result.output
    history = json.loads(pt2.with_suffix(".json").read_text())
    assert history["passes"][0]["name"] == "lowrank"
    out = tmp_path / "built"
    result = runner.invoke(cli, ["build", "--model", str(pt2), "--eval", "zoo", "--precision", "fp32", "--runs", "5",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["kind"] == "pt2"
    assert report["model"]["passes"][0]["name"] == "lowrank"  # the history travels with the .pt2
    assert report["model"]["params"] == history["params"]
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    assert abs(acc["onnxruntime-fp32"] - history["passes"][0]["accuracy_after"]) < 1e-9


@pytest.mark.parametrize("args,fragment", [
    (["--prune", "1.5"], "ratio"),
    (["--drop-layers", "1"], "layer dropping"),
    (["--sparse", "0.5"], "--allow-sparse"),
    (["--lowrank", "energy=0.9,layer=fc"], "unknown"),
])
def test_bad_compression_options_exit_2(runner, tmp_path, args, fragment):
    result = runner.invoke(cli, ["build", "--model", "zoo:digits-cnn", *args, "--out", str(tmp_path / "o"),
                                 "--quiet"])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_compress_needs_a_pass(runner, tmp_path):
    result = runner.invoke(cli, ["compress", "--model", "zoo:digits-cnn", "--out", str(tmp_path / "x.pt2")])
    assert result.exit_code == 2 and "no compression pass given" in result.output


@pytest.mark.slow
def test_resnet18_pruned_half_has_3x_fewer_macs(runner, tmp_path):
    out = tmp_path / "r18"
    result = runner.invoke(cli, ["build", "--model", "zoo:resnet18-cifar", "--prune", "0.5", "--precision", "fp32",
                                 "--runs", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "report.json").read_text())["model"]["passes"][0]
    assert record["macs_before"] / record["macs_after"] >= 3.0


def test_accuracy_budget_judges_a_compressed_pt2_against_its_uncompressed_original(runner, tmp_path):
    """compress-then-build, as CI runs it: the 89-point loss of pruning without recovery must fail the budget."""
    pt2 = tmp_path / "pruned.pt2"
    result = runner.invoke(cli, ["compress", "--model", "zoo:digits-cnn", "--prune", "0.5", "--eval", "zoo",
                                 "--out", str(pt2), "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "built"
    result = runner.invoke(cli, ["build", "--model", str(pt2), "--eval", "zoo", "--precision", "fp32", "--runs", "3",
                                 "--max-accuracy-drop", "1pp", "--out", str(out), "--quiet"])
    assert result.exit_code == 3, result.output
    report = json.loads((out / "report.json").read_text())
    acc = {a["artifact"]: a for a in report["accuracy"]}
    assert acc["original"]["top1"] > 0.95  # the zoo model, re-loaded and evaluated on the same data
    assert "zoo:digits-cnn, re-loaded and evaluated" in acc["original"]["how"]
    assert acc["eager"]["top1"] < 0.5
    (verdict,) = [v for v in report["verdicts"] if v["metric"] == "accuracy_drop"]
    assert not verdict["passed"] and verdict["observed"] > 40
    assert report["model"]["original_source"] == "zoo:digits-cnn"
    assert "baseline of accuracy budgets" in (out / "report.md").read_text()


def test_accuracy_budget_fails_when_the_original_cannot_be_reloaded(runner, tmp_path):
    pt2 = tmp_path / "pruned.pt2"
    result = runner.invoke(cli, ["compress", "--model", "zoo:digits-cnn", "--prune", "0.25", "--out", str(pt2),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    sidecar = pt2.with_suffix(".json")
    history = json.loads(sidecar.read_text())
    history["source"] = str(tmp_path / "gone.py") + ":build"  # the original's file no longer exists
    history["preprocessing"], history["labels"] = {}, []
    sidecar.write_text(json.dumps(history))
    out = tmp_path / "built"
    result = runner.invoke(cli, ["build", "--model", str(pt2), "--eval", str(_digits_npz(tmp_path)), "--precision",
                                 "fp32", "--runs", "3", "--max-accuracy-drop", "50pp", "--out", str(out), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "uncompressed original's accuracy on this data is unknown" in result.output
    report = json.loads((out / "report.json").read_text())
    assert any("could not be re-loaded" in w for w in report["warnings"])


def _digits_npz(tmp_path):
    import numpy as np

    from edgepack.data.digits import load_split

    _, test = load_split()
    path = tmp_path / "digits_test.npz"
    np.savez(path, x=test.inputs, y=test.labels)
    return path


def test_robustness_runs_on_a_pt2_exported_at_batch_one(runner, tmp_path):
    """The eager reference of a .pt2 runs at the batch it was exported with, for robustness as for accuracy."""
    pt2 = tmp_path / "small.pt2"
    assert runner.invoke(cli, ["compress", "--model", "zoo:digits-cnn", "--lowrank", "rank=4", "--out", str(pt2),
                               "--quiet"]).exit_code == 0
    out = tmp_path / "robust"
    result = runner.invoke(cli, ["build", "--model", str(pt2), "--eval", "zoo", "--robustness", "--precision", "fp32",
                                 "--runs", "3", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {r["artifact"] for r in report["robustness"]} == {"eager", "onnxruntime-fp32"}
