"""ONNX Runtime: what the target file's options change in the int8 artifact, and what the records say about it."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgepack.errors import ToolError, UsageError
from edgepack.records import Artifact
from edgepack.runtimes import get_runtime
from edgepack.runtimes.base import ExportRequest
from edgepack.runtimes.executorch import ExecuTorchOptions
from edgepack.runtimes.onnxruntime import OnnxRuntimeOptions

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnx extra not installed")


@pytest.fixture(scope="module")
def runtime():
    return get_runtime("onnxruntime")


@pytest.fixture(scope="module")
def digits_fp32(runtime, digits_bundle, tmp_path_factory) -> Artifact:
    return runtime.export(digits_bundle, ExportRequest("fp32", tmp_path_factory.mktemp("onnx-digits")))


def ops_of(artifact: Artifact) -> dict[str, int]:
    return {o.op: o.count for o in artifact.ops}


@pytest.mark.slow
def test_fp32_records_batch_ops_and_simplification(digits_fp32):
    assert digits_fp32.dynamic_batch is True and digits_fp32.inputs[0].shape[0] == "batch"
    assert ops_of(digits_fp32).get("Conv") == 3
    simplification = digits_fp32.simplification
    assert simplification is not None and simplification.applied and simplification.tool == "onnxslim"
    assert simplification.max_abs_diff is not None and simplification.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_int8_inherits_the_parents_batch_and_records_its_calibration(runtime, digits_bundle, digits_fp32,
                                                                     calibration, tmp_path):
    int8 = runtime.export(digits_bundle, ExportRequest("int8", tmp_path, calibration=calibration,
                                                       parent=digits_fp32))
    assert int8.parent == "onnxruntime-fp32" and int8.dynamic_batch is True
    assert ops_of(int8).get("QuantizeLinear", 0) > 0 and ops_of(int8).get("DequantizeLinear", 0) > 0
    assert int8.calibration is not None and int8.calibration.samples == len(calibration)
    assert int8.calibration.source == calibration.name
    assert int8.scheme == "static QDQ: u8 activations, per-channel s8 weights"  # the x86 defaults
    fixed_parent = dataclasses.replace(digits_fp32, dynamic_batch=False)
    again = runtime.export(digits_bundle, ExportRequest("int8", tmp_path / "fixed", calibration=calibration,
                                                        parent=fixed_parent))
    assert again.dynamic_batch is False  # the record follows its parent's


@pytest.mark.slow
@pytest.mark.parametrize("options, scheme", [
    (OnnxRuntimeOptions(activation_type="int8", per_channel=False),
     "static QDQ: s8 activations, per-tensor s8 weights"),
    (OnnxRuntimeOptions(weight_type="uint8"), "static QDQ: u8 activations, per-channel u8 weights"),
])
def test_static_options_change_the_scheme(runtime, digits_bundle, digits_fp32, calibration, tmp_path, options,
                                          scheme):
    int8 = runtime.export(digits_bundle, ExportRequest("int8", tmp_path, calibration=calibration.take(16),
                                                       options=options, parent=digits_fp32))
    assert int8.scheme == scheme


@pytest.mark.slow
def test_dynamic_scheme_needs_no_calibration(runtime, digits_bundle, digits_fp32, tmp_path):
    int8 = runtime.export(digits_bundle, ExportRequest("int8", tmp_path, options=OnnxRuntimeOptions(scheme="dynamic"),
                                                       parent=digits_fp32))
    assert int8.scheme.startswith("dynamic INT8") and int8.calibration is None
    assert "MatMulInteger" in ops_of(int8) or "DynamicQuantizeLinear" in ops_of(int8)


@pytest.mark.slow
def test_transformer_graphs_take_the_transformer_scheme(runtime, transformer_bundle, token_data, tmp_path, eager):
    calib, evaluation = token_data
    fp32 = runtime.export(transformer_bundle, ExportRequest("fp32", tmp_path, options=OnnxRuntimeOptions(
        simplify=False)))
    assert fp32.simplification is None
    dynamic = runtime.export(transformer_bundle, ExportRequest("int8", tmp_path, calibration=calib, parent=fp32))
    assert dynamic.scheme.startswith("dynamic INT8") and any("transformer" in n for n in dynamic.notes)
    out = runtime.load(Path(dynamic.path), 1)([evaluation.inputs])[0]
    assert (out.argmax(1) == eager(transformer_bundle, evaluation.inputs).argmax(1)).mean() >= 0.9
    static = runtime.export(transformer_bundle, ExportRequest(
        "int8", tmp_path / "static", calibration=calib, parent=fp32,
        options=OnnxRuntimeOptions(transformer_scheme="static-qdq")))
    assert static.scheme.startswith("static QDQ") and not static.notes


@pytest.mark.slow
def test_static_int8_without_calibration_is_refused(runtime, digits_bundle, digits_fp32, tmp_path):
    with pytest.raises(UsageError, match="needs calibration data"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path, parent=digits_fp32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_calibration_smaller_than_a_fixed_batch_is_refused(runtime, digits_bundle, digits_fp32, calibration,
                                                           tmp_path):
    import onnx

    fixed = onnx.load(digits_fp32.path)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    path = tmp_path / "fixed-fp32.onnx"
    onnx.save(fixed, str(path))
    parent = dataclasses.replace(digits_fp32, path=str(path), dynamic_batch=False)
    with pytest.raises(UsageError, match="has 4 samples; the model is exported at batch 8"):
        runtime.export(digits_bundle, ExportRequest("int8", tmp_path / "out", calibration=calibration.take(4),
                                                    parent=parent))


def test_another_runtimes_options_are_a_caller_bug(runtime, digits_bundle, tmp_path):
    with pytest.raises(ToolError, match="expected OnnxRuntimeOptions, got ExecuTorchOptions"):
        runtime.export(digits_bundle, ExportRequest("fp32", tmp_path, options=ExecuTorchOptions()))
    assert list(tmp_path.iterdir()) == []


def test_options_defaults_are_the_x86_target_files():
    options = OnnxRuntimeOptions()
    assert (options.scheme, options.activation_type, options.weight_type, options.per_channel,
            options.transformer_scheme, options.simplify, options.calibration_samples) == \
        ("static-qdq", "uint8", "int8", True, "dynamic", True, 256)
    with pytest.raises(ValueError, match="activation_type='int16' is not one of: uint8, int8"):
        OnnxRuntimeOptions(activation_type="int16")


@pytest.mark.slow
def test_session_runs_any_batch_on_a_dynamic_graph(runtime, digits_fp32, digits_bundle, digits_split, eager):
    x = digits_split[1].inputs[:37]
    out = runtime.load(Path(digits_fp32.path), 1)([x])[0]
    assert out.shape == (37, 10) and np.abs(out - eager(digits_bundle, x)).max() < 1e-3


class PoolHead(torch.nn.Module):
    """EfficientNet's head in miniature: an average pool whose window (8) is larger than its 2x2 input, the case
    ONNX Runtime's fused QLinearAveragePool computes wrongly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.pool = torch.nn.AvgPool2d(8, ceil_mode=True)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_int8_ships_with_the_optimizer_setting_that_computes_what_the_file_says(runtime, tmp_path):
    from edgepack.data.dataset import ArrayDataset
    from tests.runtimes.conftest import _make_bundle

    torch.manual_seed(0)
    bundle = _make_bundle(PoolHead(), (1, 3, 8, 8), "pool-head")
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    fp32 = runtime.export(bundle, ExportRequest("fp32", tmp_path))
    int8 = runtime.export(bundle, ExportRequest("int8", tmp_path, ArrayDataset("random", x), parent=fp32))
    assert int8.session_options == {"disabled_optimizers": "QDQSelectorActionTransformer"}
    assert any("QDQSelectorActionTransformer" in n and "basic optimizations" in n for n in int8.notes)

    def classes(settings):
        return runtime.load(Path(int8.path), 1, settings)([x])[0].argmax(1)

    reference = classes({"graph_optimization_level": "basic"})
    assert np.mean(classes({}) == reference) < 0.8  # the fused kernel really is wrong on this graph
    assert np.array_equal(classes(int8.session_options), reference)
    with pytest.raises(ToolError, match="unknown session setting 'threads'"):
        runtime.load(Path(int8.path), 1, {"threads": "2"})
