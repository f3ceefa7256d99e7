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
