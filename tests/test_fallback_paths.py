"""Second export paths, taken when a runtime's first path refuses the model, and recorded in the report: ONNX's
TorchScript exporter after the dynamo exporter. A second path can be wrong where the first refused: the parity floor
is what stops such an artifact. PT2E int8 of the Linear and Conv layers only, when the whole graph is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_build import GRU_CLASSIFIER, build, write_models

MODELS = '''
import torch
from torch import nn


class Guarded(nn.Module):
    """A branch on a value: dynamo cannot guard on data, TorchScript traces the branch the example takes."""

    def __init__(self, always):
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.always = always

    def forward(self, x):
        value = float(x.abs().sum()) if self.always else float(x.sum())
        if value >= 0:  # with always=True: true for every input, so the traced branch is the only one
            return self.fc(x)
        return self.fc(-x)


def guard_always():
    torch.manual_seed(0)
    return Guarded(True), torch.randn(1, 16)


def guard_on_sign():
    torch.manual_seed(0)
    return Guarded(False), torch.ones(1, 16)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("fallback"), "fallback_models", MODELS)


def test_onnx_falls_back_to_the_torchscript_exporter_and_says_why(models: Path, tmp_path: Path) -> None:
    code, output, report = build(["--model", f"{models}:guard_always", "--target", "x86-cpu"], tmp_path / "out")
    assert code == 0, output
    fp32 = next(a for a in report["artifacts"] if a["name"] == "onnxruntime-fp32")
    assert fp32["export_path"].startswith("torch.onnx TorchScript exporter")
    assert any("the dynamo exporter refused the model (GuardOnDataDependentSymNode" in n for n in fp32["notes"])
    assert fp32["dynamic_batch"] is True
    assert all(p["top1_agreement"] == 1.0 for p in report["parity"] if p["artifact"] == "onnxruntime-fp32")
    assert report["shipping"] == ["onnxruntime-int8"]


def test_a_fallback_that_computes_something_else_is_stopped_by_the_parity_floor(models: Path, tmp_path: Path) -> None:
    """TorchScript traces the positive branch of a sign test; half of all inputs take the other one in PyTorch."""
    code, output, report = build(["--model", f"{models}:guard_on_sign", "--target", "x86-cpu", "--precision", "fp32"],
                                  tmp_path / "out")
    assert code == 3, output
    assert "onnxruntime-fp32 agrees with eager PyTorch on" in output and "below the parity floor" in output
    assert report["shipping"] == [] and report["failures"][0]["stage"] == "parity"


@pytest.mark.slow
def test_int8_quantizes_only_linear_and_conv_layers_when_the_whole_graph_is_rejected(tmp_path: Path) -> None:
    """LiteRT's quantizer rejects a GRU called without an initial state ("list index out of range"); restricted to
    Linear and Conv layers it quantizes the classifier head, and the artifact says how little of it is int8."""
    model = write_models(tmp_path, "gru", GRU_CLASSIFIER)
    code, output, report = build(["--model", f"{model}:build", "--target", "android-arm64", "--runtime", "litert"],
                                  tmp_path / "out")
    assert code == 0, output
    int8 = next(a for a in report["artifacts"] if a["name"] == "litert-int8")
    assert int8["export_path"] == "PT2E static int8 on Linear and Conv layers only (whole-graph quantization failed)"
    assert any("whole-graph int8 quantization was rejected (list index out of range)" in n for n in int8["notes"])
    assert 0 < int8["int8_weight_share"] < 0.5  # the head is int8, the GRU's weights float
    assert any("of the weights are stored in 8 bits" in n for n in int8["notes"])
    assert report["shipping"] == ["litert-int8"]
