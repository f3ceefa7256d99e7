"""`edgepack build --target android-arm64` end to end: both mobile runtimes, host-proxy measurements, the bundle."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
from click.testing import CliRunner

from edgepack.cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def android_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("android") / "out"
    result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--target", "android-arm64", "--budget",
                                      "1MB", "--eval", "zoo", "--runs", "10", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result


def test_both_int8_artifacts_ship_within_one_point_of_fp32(android_build):
    _, report, result = android_build
    assert report["shipping"] == ["executorch-int8", "litert-int8"]
    # both mobile runtimes quantize the eager model: their int8 files do not derive from their fp32 files
    assert {a["name"]: a["parent"] for a in report["artifacts"]} == {
        "executorch-fp32": "eager", "executorch-int8": "eager", "litert-fp32": "eager", "litert-int8": "eager"}
    acc = {a["artifact"]: a["top1"] for a in report["accuracy"]}
    for runtime in ("executorch", "litert"):
        assert acc[f"{runtime}-int8"] >= acc[f"{runtime}-fp32"] - 0.01, acc
    assert all(v["passed"] for v in report["verdicts"]) and len(report["verdicts"]) == 2
    assert "Fastest within budgets: " in (android_build[0] / "report.md").read_text()


def test_measured_on_host_labelled_as_proxy(android_build):
    _, report, _ = android_build
    runtimes = {m["runtime"] for m in report["measurements"]}
    assert runtimes == {"executorch", "litert"}
    for m in report["measurements"]:
        assert "proxy for arm64" in m["where"], m["where"]
        assert m["p50_ms"] > 0 and m["runs"] == 10


def test_bundle_manifest_matches_files(android_build):
    out, report, _ = android_build
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = sorted(a["file"] for a in manifest["artifacts"])
    assert files == ["digits-cnn-int8.pte", "digits-cnn-int8.tflite"]
    for entry in manifest["artifacts"]:
        assert hashlib.sha256((bundle / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    assert tflite["inputs"][0]["dtype"] == "int8" and tflite["inputs"][0]["scale"] > 0
    assert manifest["preprocessing"]["layout"] == "NCHW"
    assert (bundle / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    readme = (bundle / "README.md").read_text()
    assert "Module.load" in readme and "Interpreter(" in readme
    # the app sets the target's threads (android-arm64: 4), not the fewer this host measured with
    assert "setNumThreads(4)" in readme
    with zipfile.ZipFile(out / "bundle.zip") as archive:
        names = set(archive.namelist())
    assert {"bundle/manifest.json", "bundle/digits-cnn-int8.pte", "bundle/digits-cnn-int8.tflite"} <= names


def test_delegation_is_reported(android_build):
    _, report, _ = android_build
    pte = next(a for a in report["artifacts"] if a["name"] == "executorch-int8")
    delegation = pte["delegation"]
    assert delegation["delegated_nodes"] == delegation["total_nodes"] > 0, delegation
    assert delegation["fallback_ops"] == []


def test_require_full_delegation_fails_a_model_with_a_portable_op(tmp_path):
    models = tmp_path / "pool.py"
    models.write_text(
        "import torch\n"
        "from torch import nn\n\n\n"
        "class CeilPool(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 8, 3)\n"
        "        self.pool = nn.AvgPool2d(2, ceil_mode=True)  # XNNPACK refuses ceil_mode\n"
        "        self.fc = nn.Linear(8 * 3 * 3, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.pool(self.conv(x)).flatten(1))\n\n\n"
        "def build():\n"
        "    return CeilPool(), torch.randn(1, 1, 8, 8)\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", "--model", f"{models}:build", "--runtime", "executorch", "--precision",
                                      "fp32", "--require-full-delegation", "--runs", "3", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 3, result.output
    assert "budget failed: full delegation [executorch-fp32]" in result.output
    report = json.loads((out / "report.json").read_text())
    delegation = report["artifacts"][0]["delegation"]
    ops = {p["op"]: p for p in delegation["fallback_ops"]}
    assert any("avg_pool2d" in op for op in ops), ops
    assert any("ceil mode" in p["reason"] for p in ops.values()), ops
